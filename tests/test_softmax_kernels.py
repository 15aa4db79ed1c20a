"""The compiled multinomial row kernels against NumPy / SciPy formulas written out here."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logsumexp, softmax

from dsketch.models._softmax import softmax_hessvec, softmax_loss, softmax_terms
from dsketch.models.multinomial import MultinomialRegression


def _data(weights: bool, n: int = 300, k: int = 7, seed: int = 0):
    rng = np.random.default_rng(seed)
    E = 3.0 * rng.standard_normal((n, k))
    E[0] += 800.0  # overflows exp() without the max shift
    y = rng.integers(0, k, n).astype(np.float64)
    s = None
    if weights:
        s = rng.uniform(0.0, 2.0, n)
        s[::5] = 0.0
    return E, y, s


def _reference(E, y, s, scale):
    c = np.full(y.size, scale) if s is None else np.where(s > 0, s, 0.0) * scale
    P = softmax(E, axis=1)
    Y = np.eye(E.shape[1])[y.astype(int)]
    loss = float(np.sum(c * (logsumexp(E, axis=1) - E[np.arange(y.size), y.astype(int)])))
    return loss, c[:, None] * (P - Y), c[:, None] * P * (1 - P), c, P


@pytest.mark.parametrize("weights", [False, True])
def test_loss_gradient_and_curvature_weights_match_scipy(weights):
    E, y, s = _data(weights)
    loss, R, D, _, _ = _reference(E, y, s, 1.0 / 123.0)
    assert softmax_loss(E, y, s, 1.0 / 123.0) == pytest.approx(loss, rel=1e-13)
    got_loss, got_R, got_D = softmax_terms(E, y, s, 1.0 / 123.0, diag=True)
    assert got_loss == pytest.approx(loss, rel=1e-13)
    np.testing.assert_allclose(got_R, R, rtol=1e-12, atol=1e-16)
    np.testing.assert_allclose(got_D, D, rtol=1e-12, atol=1e-16)
    assert softmax_terms(E, y, s, 1.0 / 123.0, diag=False)[2] is None


@pytest.mark.parametrize("weights", [False, True])
def test_hessian_vector_rows_match_the_dense_per_row_hessian(weights):
    E, y, s = _data(weights, n=50, k=4)
    AV = np.random.default_rng(1).standard_normal(E.shape)
    _, _, _, c, P = _reference(E, y, s, 0.5)
    want = np.stack([c[i] * (np.diag(P[i]) - np.outer(P[i], P[i])) @ AV[i] for i in range(E.shape[0])])
    np.testing.assert_allclose(softmax_hessvec(E, s, 0.5, AV), want, rtol=1e-12, atol=1e-16)


def test_non_contiguous_inputs_and_a_non_finite_row():
    E, y, s = _data(True)
    Ef = np.asfortranarray(E)
    b = np.column_stack([y, s])  # labels and weights as the model's row data: strided columns
    loss, R, _, _, _ = _reference(E, y, s, 1.0)
    got, got_R, _ = softmax_terms(Ef, b[:, 0], b[:, 1], 1.0, diag=False)
    assert got == pytest.approx(loss, rel=1e-13)
    np.testing.assert_allclose(got_R, R, rtol=1e-12, atol=1e-16)
    E[3, 1] = np.inf
    s[3] = 1.0
    assert not np.isfinite(softmax_loss(E, y, s, 1.0))
    assert not np.all(np.isfinite(softmax_terms(E, y, s, 1.0, diag=True)[1]))


def test_model_skips_the_curvature_weights_only_when_asked():
    E, y, _ = _data(False, k=5)
    m = MultinomialRegression(l2=1e-3, n_classes=5, preconditioner="block")
    sc = {"n": float(y.size)}
    loss, terms = m.loss_row_terms(E, y, None, sc, curvature=False)
    assert terms.diag is None
    ref_loss, R, D, _, _ = _reference(E, y, None, 1.0 / y.size)
    assert loss == pytest.approx(ref_loss, rel=1e-13)
    np.testing.assert_allclose(m.row_terms(E, y, None, sc).diag, D, rtol=1e-12, atol=1e-16)
    full = MultinomialRegression(l2=1e-3, n_classes=5, preconditioner="full").row_terms(E, y, None, sc)
    k, l = np.triu_indices(5)
    P = softmax(E, axis=1)
    np.testing.assert_allclose(full.diag, (P[:, k] * ((k == l) - P[:, l])) / y.size, rtol=1e-12, atol=1e-18)
    np.testing.assert_allclose(full.grad_weight, R, rtol=1e-12, atol=1e-16)


def test_a_row_without_weight_gives_no_terms_even_where_it_overflows():
    E, y, s = _data(True)
    E[5, 2] = np.inf
    s[5] = 0.0
    loss, R, D = softmax_terms(E, y, s, 1.0, diag=True)
    assert np.isfinite(loss) and np.all(R[5] == 0.0) and np.all(D[5] == 0.0)
    assert np.all(softmax_hessvec(E, s, 1.0, np.ones_like(E))[5] == 0.0)
    assert softmax_loss(E, y, s, 1.0) == pytest.approx(loss, rel=1e-13)
