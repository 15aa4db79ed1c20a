"""Success means the optimum: the stopping rule from a far start, separable classes without a
penalty, and a start where the model overflows."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.optimize import minimize

import dsketch
from dsketch.errors import ConvergenceWarning, NumericalWarning
from dsketch.solvers.result import Status


def _exp_problem(tmp_path, rng, n=2000, d=5):
    A = 0.5 * rng.standard_normal((n, d))
    xp = 0.3 * rng.standard_normal(d)
    b = np.exp(A @ xp) + 0.01 * rng.standard_normal(n)
    w = np.full(n, 1e-4)
    spec = dsketch.write_problem(tmp_path / "p.zarr", A, b, w)
    return spec, A, b, w, xp


def _exp_optimum(A, b, w, x0):
    """The exp-regression objective of the model's docstring, minimised by scipy."""
    def f(x):
        v = A @ x
        return 0.5 * np.sum((np.exp(v) - b) ** 2) + 0.5 * np.sum((w * v) ** 2)

    def g(x):
        v = A @ x
        return A.T @ (np.exp(v) * (np.exp(v) - b) + w * w * v)

    res = minimize(f, x0, jac=g, method="BFGS", options={"gtol": 1e-10, "maxiter": 10_000})
    return res.fun


@pytest.mark.parametrize("distance", [10.0, 30.0, 60.0])
def test_far_start_reports_success_only_at_the_optimum(tmp_path, distance):
    """From a start where ||g_0|| is 1e15 to 1e91, ||g|| <= tol ||g_0|| held at losses of
    5e6 to 1e82 (the optimum is 0.1), and those fits reported success."""
    rng = np.random.default_rng(0)
    spec, A, b, w, xp = _exp_problem(tmp_path, rng)
    best = _exp_optimum(A, b, w, xp)
    x0 = xp + distance * np.ones(A.shape[1]) / np.sqrt(A.shape[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", NumericalWarning)  # indefinite Hessians far from the optimum
        # in memory (threads): the stopping rule is the subject, not the cluster
        res = dsketch.fit(dsketch.in_memory(A, b, w), "exp", solver=dsketch.Solver(tol=1e-8, max_iter=200), x0=x0)
    if res.success:
        assert res.fun == pytest.approx(best, rel=1e-6)
    else:
        assert res.status is Status.MAX_ITER
        assert res.fun > best


def test_separable_classes_without_penalty_are_reported_as_diverging(tmp_path, client):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((500, 3))
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(float)
    spec = dsketch.write_problem(tmp_path / "s.zarr", X, y)
    with pytest.warns(ConvergenceWarning, match="separable"):
        res = dsketch.fit(spec, "logistic", model_params={"l2": 0.0}, cluster=client)
    assert not res.success and res.status is Status.DIVERGED
    # the same data with a penalty has an optimum, which scikit-learn agrees with
    from sklearn.linear_model import LogisticRegression

    pen = dsketch.fit(spec, "logistic", model_params={"l2": 1e-3}, solver=dsketch.Solver(tol=1e-12), cluster=client)
    ref = LogisticRegression(C=1.0 / (1e-3 * 500), fit_intercept=False, tol=1e-12, max_iter=10_000,
                             solver="newton-cholesky").fit(X, y)
    assert pen.success
    np.testing.assert_allclose(pen.x, ref.coef_[0], rtol=1e-6)
    # labels that overlap: an ordinary optimum at l2 = 0, no divergence reported
    y2 = (rng.random(500) < 1.0 / (1.0 + np.exp(-X[:, 0]))).astype(float)
    ok = dsketch.fit(dsketch.write_problem(tmp_path / "t.zarr", X, y2), "logistic",
                     model_params={"l2": 0.0}, cluster=client)
    assert ok.success and ok.status is Status.CONVERGED_GRADIENT


@pytest.mark.parametrize("model", ["exp", "cosh", "sinh"])
@pytest.mark.parametrize("sketch", ["exact", "leverage"])
def test_start_with_an_infinite_loss_stops_with_a_numerical_error(tmp_path, client, model, sketch):
    """exp(A x0) overflows on rows of both signs (and A has explicit zeros): the fit stops with
    NUMERICAL_ERROR, without an exception and without NumPy warnings."""
    rng = np.random.default_rng(2)
    A = rng.standard_normal((400, 4))
    A[::7, 1] = 0.0  # explicit zeros in dense A: 0 * inf must not appear
    spec = dsketch.write_problem(tmp_path / "p.zarr", A, rng.uniform(0.5, 2.0, 400), np.full(400, 1e-3))
    x0 = np.array([800.0, 800.0, -800.0, 0.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = dsketch.fit(spec, model, x0=x0,
                          curvature=dsketch.Curvature(sketch, size=None if sketch == "exact" else 200), cluster=client)
    assert res.status is Status.NUMERICAL_ERROR and not res.success
    assert res.nit == 0 and np.isinf(res.fun)


def test_history_seconds_are_when_each_iterate_was_known():
    """The history's ``seconds`` of an iterate is the time its loss and gradient were known,
    before the callback sees it and before the step from it: a callback that sleeps 1 s at
    iterate 2 delays the row of iterate 3, not that of iterate 2. The losses are scipy's
    objective at the history's iterates (sum of logistic losses plus the penalty)."""
    import time

    rng = np.random.default_rng(3)
    A = rng.standard_normal((400, 5))
    y = (rng.random(400) < 1 / (1 + np.exp(-A @ np.ones(5)))).astype(float)
    coefs = []

    def callback(state):
        coefs.append(state.coef)
        if state.iteration == 2:
            time.sleep(1.0)

    res = dsketch.fit((A, y), "logistic", model_params={"l2": 1e-2}, curvature="exact",
                      solver=dsketch.Solver("newton", tol=1e-12), callback=callback)
    s = np.asarray(res.history["seconds"])
    assert res.nit >= 4 and s[2] - s[1] < 1.0 <= s[3] - s[2]
    f = [np.mean(np.logaddexp(0, A @ x) - y * (A @ x)) + 0.5e-2 * x @ x for x in coefs]
    np.testing.assert_allclose(res.history["loss"][1:len(f) + 1], f, rtol=1e-12)
