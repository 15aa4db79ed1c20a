"""L1 / elastic-net multinomial regression by proximal Newton: scikit-learn's saga on the same
objective, and the KKT conditions checked on a multinomial gradient written out here."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.special import logsumexp, softmax
from sklearn.linear_model import LogisticRegression as SkLogistic

import dsketch
from dsketch.engine.threads import ThreadClient
from dsketch.errors import ConvergenceWarning, InvalidOptionError
from dsketch.models import MultinomialRegression
from dsketch.models import multinomial as multinomial_module

TIGHT = dsketch.Solver(tol=1e-10, max_iter=100)


def _data(n=400, d=6, k=3, seed=0, sparse=False):
    """Labels from a softmax model in which only the first three features matter."""
    rng = np.random.default_rng(seed)
    A = sp.random(n, d, density=0.6, format="csr", random_state=rng, data_rvs=rng.standard_normal) if sparse \
        else rng.standard_normal((n, d))
    W = np.zeros((d, k))
    W[:3] = 1.5 * rng.standard_normal((3, k))
    P = softmax(np.asarray(A @ W), axis=1)
    y = (np.cumsum(P, axis=1) < rng.random(n)[:, None]).sum(axis=1)
    return A, np.minimum(y, k - 1).astype(np.float64)


def _smooth(A, y, W, c, l2, sw):
    """The weighted mean multinomial loss plus ``l2/2 ||W||^2`` and its gradient in ``W`` and
    in the intercepts ``c``, densely."""
    E = np.asarray(A @ W) + c
    Y = np.eye(W.shape[1])[y.astype(int)]
    S = sw.sum()
    value = float(sw @ (logsumexp(E, axis=1) - (E * Y).sum(axis=1))) / S + 0.5 * l2 * float((W * W).sum())
    R = sw[:, None] * (softmax(E, axis=1) - Y) / S
    return value, np.asarray(A.T @ R) + l2 * W, R.sum(axis=0)


def _saga(A, y, C, ratio, sw=None):
    """scikit-learn's multinomial elastic net (``l1_ratio`` with saga), run to a tight tol."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return SkLogistic(C=C, l1_ratio=ratio, solver="saga", tol=1e-12, max_iter=200_000).fit(A, y, sample_weight=sw)


def _check(A, y, x, ref, l1, l2, sw=None, unique=True):
    """Objective within 1e-6 relative of scikit-learn's, the KKT conditions at dsketch's
    solution (``|g| <= l1`` where a coefficient is 0, ``g = -l1 sign`` elsewhere, a zero
    intercept gradient), and, where the minimiser is unique, scikit-learn's active set."""
    sw = np.ones(y.size) if sw is None else sw
    d, k = A.shape[1], ref.coef_.shape[0]
    X = x.reshape(d + 1, k)
    W, c = X[:d], X[d]
    f, g, gc = _smooth(A, y, W, c, l2, sw)
    f_ref = _smooth(A, y, ref.coef_.T, ref.intercept_, l2, sw)[0]
    F, F_ref = f + l1 * np.abs(W).sum(), f_ref + l1 * np.abs(ref.coef_).sum()
    assert F <= F_ref + 1e-6 * abs(F_ref)
    assert abs(F - F_ref) <= 1e-6 * abs(F_ref)
    zero = W == 0.0
    assert 0 < zero.sum() < W.size  # the test means something: some in, some out
    assert np.all(np.abs(g[zero]) <= l1 * (1 + 1e-6))
    np.testing.assert_allclose(g[~zero], -l1 * np.sign(W[~zero]), atol=1e-6 * l1)
    assert np.abs(gc).max() <= 1e-7
    if unique:
        np.testing.assert_array_equal(W != 0.0, np.abs(ref.coef_.T) > 1e-10)
        np.testing.assert_allclose(W, ref.coef_.T, atol=1e-5)


@pytest.mark.parametrize("k,sparse", [(3, False), (4, True)])
def test_elastic_net_equals_saga(k, sparse):
    A, y = _data(k=k, sparse=sparse, seed=k)
    alpha, ratio = 0.02, 0.5
    res = dsketch.fit((A, y), "multinomial", model_params={"l1": alpha * ratio, "l2": alpha * (1 - ratio)},
                      fit_intercept=True, solver=TIGHT)
    assert res.success, res.message
    assert res.info["solver"] == "prox-newton" and res.info["preconditioner"] == "full"
    _check(A, y, res.x, _saga(A, y, 1.0 / (alpha * y.size), ratio), alpha * ratio, alpha * (1 - ratio))


def test_lasso_reaches_sagas_objective():
    """Pure L1: the penalised coefficients of a feature are unique only up to a shift within
    the median interval of its classes, so only the objective and the KKT conditions are
    compared."""
    A, y = _data(seed=7)
    l1 = 0.01
    res = dsketch.fit((A, y), "multinomial", model_params={"l1": l1, "l2": 0.0}, fit_intercept=True, solver=TIGHT)
    assert res.success, res.message
    _check(A, y, res.x, _saga(A, y, 1.0 / (l1 * y.size), 1.0), l1, 0.0, unique=False)


def test_store_with_sample_weights_equals_saga(tmp_path):
    A, y = _data(k=4, seed=11, sparse=True)
    sw = np.random.default_rng(12).uniform(0.5, 2.0, y.size)
    store = str(tmp_path / "p.zarr")
    dsketch.write_problem(store, A, y, sample_weight=sw, chunk_rows=100)
    alpha, ratio = 0.02, 0.7
    with ThreadClient(2) as c:
        res = dsketch.fit(store, "multinomial", model_params={"l1": alpha * ratio, "l2": alpha * (1 - ratio)},
                          fit_intercept=True, solver=TIGHT, cluster=dsketch.Cluster(scheduler=c, block_rows=128))
    assert res.success, res.message
    ref = _saga(A, y, 1.0 / (alpha * sw.sum()), ratio, sw)
    _check(A, y, res.x, ref, alpha * ratio, alpha * (1 - ratio), sw)


@pytest.mark.parametrize("how", ["option", "threshold"])
def test_block_curvature_reaches_the_optimum(how, monkeypatch):
    """The K diagonal blocks as the proximal model (dK above the threshold, or asked for):
    slower, but to the same optimum, judged on the exact subgradient."""
    A, y = _data(seed=3)
    alpha, ratio = 0.02, 0.5
    params = {"l1": alpha * ratio, "l2": alpha * (1 - ratio)}
    if how == "option":
        params["preconditioner"] = "block"
    else:
        monkeypatch.setattr(multinomial_module, "FULL_CURVATURE_MAX", 20)  # dK = 7 x 3 = 21
    res = dsketch.fit((A, y), "multinomial", model_params=params, fit_intercept=True,
                      solver=dsketch.Solver(tol=1e-10, max_iter=400))
    assert res.success, res.message
    assert res.info["preconditioner"] == "block"
    assert res.grad_norm <= 1e-10 * res.history["grad_norm"][0]  # the KKT measure itself, not the loss
    _check(A, y, res.x, _saga(A, y, 1.0 / (alpha * y.size), ratio), alpha * ratio, alpha * (1 - ratio))


def test_block_curvature_short_of_its_iterations_reports_failure():
    A, y = _data(seed=3)
    with pytest.warns(ConvergenceWarning):
        res = dsketch.fit((A, y), "multinomial", model_params={"l1": 0.01, "l2": 0.01, "preconditioner": "block"},
                          fit_intercept=True, solver=dsketch.Solver(tol=1e-10, max_iter=15))
    assert not res.success


def test_sampled_full_curvature_reaches_the_exact_optimum():
    A, y = _data(n=800, seed=5)
    alpha, ratio = 0.02, 0.5
    res = dsketch.fit((A, y), "multinomial", model_params={"l1": alpha * ratio, "l2": alpha * (1 - ratio)},
                      fit_intercept=True, curvature=dsketch.Curvature("uniform", size=200),
                      solver=dsketch.Solver(tol=1e-10, max_iter=200))
    assert res.success, res.message
    assert res.info["sketch"] == "uniform"
    _check(A, y, res.x, _saga(A, y, 1.0 / (alpha * y.size), ratio), alpha * ratio, alpha * (1 - ratio))


def test_l1_weights_follow_the_flattened_layout():
    """Row-major d x K: every class's coefficient of a feature penalised, the K intercepts
    (the last row) not; the L1 value is l1 times the penalised entries' absolute sum."""
    model = MultinomialRegression(l1=0.3, n_classes=3).with_intercept()
    np.testing.assert_array_equal(model.l1_weights(12), [0.3] * 9 + [0.0] * 3)
    x = np.arange(12.0) - 6.0
    assert model.nonsmooth(x) == pytest.approx(0.3 * np.abs(x[:9]).sum())


def test_methods_that_cannot_handle_l1_are_refused():
    A, y = _data(n=60)
    for method in ("newton-cg", "lbfgs", "newton"):
        with pytest.raises(InvalidOptionError, match="L1"):
            dsketch.fit((A, y), "multinomial", model_params={"l1": 0.1}, solver=method)


# ------------------------------------------------------------------------ estimator, path, CLI
@pytest.mark.parametrize("penalty,l1_ratio", [("elasticnet", 0.4), ("l1", None)])
def test_estimator_equals_sklearn_multinomial(penalty, l1_ratio):
    from dsketch.estimators import LogisticRegression

    A, y = _data(k=4, seed=21)
    labels = np.array(["a", "b", "c", "d"])[y.astype(int)]
    est = LogisticRegression(C=0.1, penalty=penalty, l1_ratio=l1_ratio, tol=1e-10).fit(A, labels)
    ratio = 1.0 if l1_ratio is None else l1_ratio
    ref = _saga(A, labels, 0.1, ratio)
    assert est.fit_result_.success and est.coef_.shape == (4, 6)
    x = np.vstack([est.coef_.T, est.intercept_]).ravel()
    scale = 1.0 / (0.1 * y.size)
    _check(A, y, x, ref, scale * ratio, scale * (1 - ratio), unique=penalty == "elasticnet")
    if penalty == "elasticnet":
        np.testing.assert_allclose(est.intercept_, ref.intercept_ - ref.intercept_.mean(), atol=1e-5)
        np.testing.assert_array_equal(est.predict(A), ref.predict(A))


def test_path_equals_saga_at_each_alpha():
    """alpha_max from the gradient at the intercept-only fit (the log class frequencies),
    every penalised coefficient 0 there, and saga's fit at every alpha of the grid."""
    A, y = _data(seed=31)
    ratio = 0.5
    path = dsketch.fit_path((A, y), "multinomial", l1_ratio=ratio, n_alphas=4, eps=0.05, fit_intercept=True,
                            solver=TIGHT)
    assert path.success and path.coef.shape == (4, 7 * 3)
    freq = np.bincount(y.astype(int)) / y.size
    g = A.T @ (freq - np.eye(3)[y.astype(int)]) / y.size
    assert path.alpha_max == pytest.approx(np.abs(g).max() / ratio, rel=1e-7)
    assert np.all(path.coef[0, :18] == 0.0)
    for alpha, x, active in zip(path.alphas[1:], path.coef[1:], path.n_active[1:], strict=True):
        ref = _saga(A, y, 1.0 / (alpha * y.size), ratio)
        _check(A, y, x, ref, alpha * ratio, alpha * (1 - ratio))
        assert active == np.count_nonzero(np.abs(ref.coef_) > 1e-10)


def test_cli_fit_and_path_on_a_store(tmp_path, client):
    from dsketch.cli import main

    A, y = _data(seed=41)
    store = str(tmp_path / "p.zarr")
    dsketch.write_problem(store, A, y, chunk_rows=100)
    alpha, ratio = 0.05, 0.5
    ref = _saga(A, y, 1.0 / (alpha * y.size), ratio)
    address = ["--scheduler", client.scheduler.address]
    out = str(tmp_path / "r.zarr")
    assert main(["--quiet", "fit", "--model", "multinomial", "--data", store, "--out", out, "--param",
                 f"l2={alpha * (1 - ratio)}", "--l1", str(alpha * ratio), "--fit-intercept", "--tol", "1e-10",
                 *address]) == 0
    _check(A, y, dsketch.load_result(out).x, ref, alpha * ratio, alpha * (1 - ratio))
    npz = str(tmp_path / "path.npz")
    assert main(["--quiet", "path", "--model", "multinomial", "--data", store, "--out", npz, "--l1-ratio",
                 str(ratio), "--alphas", f"{2 * alpha},{alpha}", "--fit-intercept", "--tol", "1e-10", *address]) == 0
    saved = np.load(npz)
    assert saved["coef"].shape == (2, 21)
    _check(A, y, saved["coef"][1], ref, alpha * ratio, alpha * (1 - ratio))


def test_penalty_shifts_minimise_each_rows_penalty():
    """The common shift of a row that minimises its elastic-net penalty, against scipy's
    bounded scalar minimiser; where the penalty is flat (l2 = 0, an even number of classes),
    the minimiser closest to 0 (checked on a grid); unpenalised rows are not shifted."""
    from scipy.optimize import minimize_scalar

    from dsketch.solvers.proximal import penalty_shifts

    rng = np.random.default_rng(51)
    for k in (2, 3, 4, 5):
        Z = rng.standard_normal((40, k)) * (rng.random((40, k)) < 0.7)
        l1, l2 = rng.choice([0.0, 0.3, 2.0], 40), rng.choice([0.0, 0.01, 0.5], 40)
        c = penalty_shifts(Z, l1, l2)
        grid = np.linspace(-6.0, 6.0, 24001)
        for z, a, b, cj in zip(Z, l1, l2, c, strict=True):
            def pen(t, z=z, a=a, b=b):
                return 0.5 * b * np.sum((z + t) ** 2) + a * np.sum(np.abs(z + t))
            assert pen(cj) <= minimize_scalar(pen, bounds=(-6, 6), method="bounded",
                                              options={"xatol": 1e-12}).fun + 1e-12
            shifted = z[None, :] + grid[:, None]
            on_grid = 0.5 * b * np.sum(shifted**2, axis=1) + a * np.sum(np.abs(shifted), axis=1)
            best = grid[on_grid <= on_grid.min() + 1e-12]
            assert abs(cj) <= np.abs(best).min() + 1e-3
            if a == 0.0 and b == 0.0:
                assert cj == 0.0
