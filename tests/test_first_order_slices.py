"""The first-order fused pass on a dense block, taken a slice of rows at a time
(dsketch.engine.tasks._first_order_step): loss, trial losses, gradient and ``A p`` against
a dense computation with SciPy on the whole block."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit, logsumexp

from dsketch.engine import tasks
from dsketch.models import get_model
from dsketch.store import Block

N, D = 3001, 150  # several slices and a short last one (rows per slice: tasks._slice_rows(D))


def _block_rows(b, eta):
    return tasks.RowState(r0=0, eta=eta, b=b, w=None, rownorm2=None)


def _case(name, rng):
    A = rng.standard_normal((N, D))
    if name == "multinomial":
        k = 4
        model = get_model("multinomial", n_classes=k, l2=0.0)
        y = rng.integers(0, k, N).astype(np.float64)
        eta = 0.3 * rng.standard_normal((N, k))
        p = 0.2 * rng.standard_normal(D * k)

        def reference(e):
            loss = np.sum(logsumexp(e, axis=1) - e[np.arange(N), y.astype(int)]) / N
            P = np.exp(e - logsumexp(e, axis=1, keepdims=True))
            P[np.arange(N), y.astype(int)] -= 1.0
            return loss, (A.T @ P / N).ravel()
        return A, model, y, eta, p, reference
    model = get_model("logistic", l2=0.0)
    y = (rng.random(N) < 0.4).astype(np.float64)
    eta = 0.5 * rng.standard_normal(N)
    p = 0.3 * rng.standard_normal(D)

    def reference(e):
        loss = np.sum(np.logaddexp(0.0, e) - y * e) / N
        return loss, A.T @ (expit(e) - y) / N
    return A, model, y, eta, p, reference


@pytest.mark.parametrize("name", ["logistic", "multinomial"])
def test_sliced_first_order_step_matches_a_dense_computation(name):
    rng = np.random.default_rng(11)
    A, model, y, eta, p, reference = _case(name, rng)
    assert N > 2 * tasks._slice_rows(D)  # the sliced branch runs
    k = int(getattr(model, "n_outputs", 1))
    ap, out = tasks.fused_step(model, None, Block(A=A, b=y, w=None, extra={}), _block_rows(y, eta), p,
                               (1.0, 0.5, 0.25), {"n": float(N)}, None)
    AP = A @ (p.reshape(D, k) if k > 1 else p)
    np.testing.assert_allclose(ap, AP, rtol=1e-12, atol=1e-12)
    loss, grad = reference(eta + AP)
    assert out["curvature_bad"] == 0.0
    np.testing.assert_allclose(out["loss"], loss, rtol=1e-13)
    np.testing.assert_allclose(out["grad"], grad, rtol=1e-10, atol=1e-13)
    for j, t in enumerate((1.0, 0.5, 0.25)):
        np.testing.assert_allclose(out["trial_losses"][j], reference(eta + t * AP)[0], rtol=1e-13)


def test_sliced_step_reports_an_overflow_as_unusable():
    rng = np.random.default_rng(12)
    A, model, y, eta, p, _ = _case("logistic", rng)
    model = get_model("poisson", l2=0.0)  # exp overflows at a huge predictor
    y = rng.poisson(1.0, N).astype(np.float64)
    eta = eta.copy()
    eta[N - 5] = 1e6  # in the last slice
    _, out = tasks.fused_step(model, None, Block(A=A, b=y, w=None, extra={}), _block_rows(y, eta), p, (1.0,),
                              {"n": float(N)}, None)
    assert out["curvature_bad"] == 1.0 and out["loss"] == 0.0
    assert not np.isfinite(out["trial_losses"][0])
    assert np.array_equal(out["grad"], np.zeros(D))
