"""The multinomial Newton step: exact along the softmax's shift directions, conjugate
gradients with a centred block preconditioner on the rest, and the auto solver's L-BFGS
start; checked against a dense Newton solve and scikit-learn's multinomial fit."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ortho_group
from sklearn.linear_model import LogisticRegression as SkLogistic

import dsketch
from dsketch.solvers.linalg import centre_rows, pcg, preconditioner, shift_split

from tests.test_multinomial import _dense_hessian


def _softmax(E):
    P = np.exp(E - E.max(1, keepdims=True))
    return P / P.sum(1, keepdims=True)


def _ill(n=4000, d=12, k=5, seed=0):
    """Features with covariance condition number 1e4 (as in the GLM benchmarks)."""
    rng = np.random.default_rng(seed)
    s = np.logspace(0, -2, d)
    U = ortho_group.rvs(d, random_state=seed)
    A = (rng.standard_normal((n, d)) * s) @ U.T
    X = U @ (rng.standard_normal((d, k)) / s[:, None]) / np.sqrt(d)
    P = _softmax(A @ X)
    y = (P.cumsum(1) > rng.random((n, 1))).argmax(1).astype(float)
    return A, y


@pytest.mark.parametrize("unpenalised_rows", [0, 1])
def test_split_step_is_the_dense_newton_step(unpenalised_rows):
    """Shift step plus centred CG (to a tight residual) equals -H^-1 g of the dense Hessian,
    with a penalised last row or an unpenalised one (an intercept)."""
    rng = np.random.default_rng(1)
    n, d, k, l2 = 80, 4, 3, 0.03
    A = rng.standard_normal((n, d))
    if unpenalised_rows:
        A[:, -1] = 1.0
    X = rng.standard_normal((d, k))
    y = rng.integers(0, k, n)
    P = _softmax(A @ X)
    Y = np.eye(k)[y]
    w = np.full(d, l2)
    w[d - unpenalised_rows:] = 0.0
    s = np.ones(n)
    H = _dense_hessian(A, X, s, 0.0) + np.diag(np.repeat(w, k))
    g = (A.T @ (P - Y) / n + w[:, None] * X).ravel()
    if unpenalised_rows:  # the loss gradient of an unpenalised row has no shift component
        assert abs(g.reshape(d, k)[-1].sum()) < 1e-12
    blocks = np.stack([(A * (P[:, c] * (1 - P[:, c]))[:, None]).T @ A / n + np.diag(w) for c in range(k)])
    gc, shift = shift_split(g, k, np.repeat(w, k))
    M = preconditioner(blocks)
    p, _n, reason = pcg(lambda v: H @ v, gc, lambda r: centre_rows(M(centre_rows(r, k)), k), rtol=1e-13,
                        maxiter=200)
    assert reason == "converged"
    exact = -np.linalg.lstsq(H, g, rcond=None)[0]  # minimum-norm: no shift on an unpenalised row
    np.testing.assert_allclose(p + shift, exact, atol=1e-9, rtol=0)


def test_newton_cg_on_ill_conditioned_features_takes_few_iterations():
    """With the block preconditioner projected, Newton-CG converges in a handful of
    iterations (it took over 100 when the preconditioner leaked into the shift directions,
    whose curvature is only the penalty) and matches scikit-learn."""
    A, y = _ill()
    C = 1e3
    res = dsketch.fit((A, y), "multinomial", model_params={"l2": 1.0 / (C * y.size)},
                      solver=dsketch.Solver("newton-cg", tol=1e-10, max_iter=100))
    assert res.success, res.message
    assert res.nit <= 12
    sk = SkLogistic(C=C, tol=1e-14, max_iter=1000, fit_intercept=False, solver="newton-cholesky").fit(A, y)
    np.testing.assert_allclose(res.x.reshape(-1, 5), sk.coef_.T, atol=1e-6 * np.abs(sk.coef_).max(), rtol=0)


@pytest.mark.parametrize("ill", [False, True])
def test_auto_solver_starts_with_lbfgs_and_hands_over_when_slow(ill):
    """``solver="auto"``: L-BFGS to the end on well-conditioned features, Newton-CG after
    the hand-over on ill-conditioned ones; the optimum of scikit-learn either way."""
    if ill:
        A, y = _ill(seed=2)
    else:
        rng = np.random.default_rng(2)
        A = rng.standard_normal((3000, 8))
        y = rng.integers(0, 4, 3000).astype(float)
    k = int(y.max()) + 1
    C = 10.0
    res = dsketch.fit((A, y), "multinomial", model_params={"l2": 1.0 / (C * y.size)}, fit_intercept=True,
                      solver=dsketch.Solver("auto", tol=1e-11, max_iter=500))
    assert res.success, res.message
    assert res.info["solver"] == "auto"
    assert (res.info["newton_from"] is not None) == ill
    sk = SkLogistic(C=C, tol=1e-14, max_iter=1000, solver="newton-cholesky").fit(A, y)
    X = res.x.reshape(-1, k)
    d = A.shape[1]
    scale = np.abs(sk.coef_).max()
    np.testing.assert_allclose(X[:d], sk.coef_.T, atol=1e-6 * scale, rtol=0)
    np.testing.assert_allclose(X[d] - X[d].mean(), sk.intercept_ - sk.intercept_.mean(), atol=1e-6 * scale, rtol=0)
