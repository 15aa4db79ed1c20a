"""One set of defaults: dsketch.fit, the command line and the estimators agree (auto
curvature with adaptive sizes), least squares is unpenalised by default, options without
effect are refused, and misspelt names are answered with the nearest valid ones."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import dsketch
import dsketch.estimators as est
from dsketch.cli import build_parser
from dsketch.errors import UnknownNameError, UnusedOptionError
from dsketch.models import LeastSquares, get_model
from dsketch.models.glm_families import glm, tweedie
from dsketch.sketch import make_sketch

ESTIMATORS = [est.LinearRegression, est.LogisticRegression, est.PoissonRegressor, est.GammaRegressor, est.TweedieRegressor,
              est.GeneralizedLinearRegressor, est.SoftmaxRegression]


def _fit_action(dest):
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return next(a for a in sub.choices["fit"]._actions if a.dest == dest)


def test_fit_cli_and_estimators_share_the_curvature_defaults():
    assert inspect.signature(dsketch.fit).parameters["curvature"].default == "auto"
    assert dsketch.Curvature() == dsketch.Curvature("auto", size=None, params=None, adaptive=None)
    assert _fit_action("sketch").default == "auto"
    assert _fit_action("adaptive_sketch").default is None
    assert _fit_action("sketch_size").default is None
    for cls in ESTIMATORS:
        p = inspect.signature(cls).parameters
        assert p["sketch"].default == "auto", cls
        assert p["sketch_size"].default is None, cls


def test_adaptive_default_rule():
    # auto (any size is the start) and a named sketch without a size adapt
    C = dsketch.Curvature
    assert C("auto").resolved_adaptive("newton")
    assert C("auto", size=500).resolved_adaptive("newton")
    assert C("leverage").resolved_adaptive("newton")
    # a named sketch with a size keeps it; exact and gradient descent have nothing to adapt
    assert not C("leverage", size=500).resolved_adaptive("newton")
    assert not C("exact").resolved_adaptive("newton")
    assert not C("auto").resolved_adaptive("gd")
    # explicit choices win
    assert C("leverage", size=500, adaptive=True).resolved_adaptive("newton")
    assert not C("auto", adaptive=False).resolved_adaptive("newton")


def test_least_squares_is_unpenalised_by_default():
    assert LeastSquares().l2 == 0.0
    assert get_model("least-squares").l2 == 0.0
    assert isinstance(glm("normal"), LeastSquares) and glm("normal").l2 == 0.0
    assert tweedie(power=0).l2 == 0.0
    assert glm("normal", l2=0.5).l2 == 0.5
    # the other GLMs keep their small ridge
    assert get_model("logistic").l2 == 1e-4
    assert get_model("poisson").l2 == 1e-4
    assert glm("poisson").l2 == 1e-4


def test_least_squares_default_fit_is_ordinary_least_squares():
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(0)
    A = rng.standard_normal((400, 6))
    b = A @ rng.standard_normal(6) + 0.3 * rng.standard_normal(400)
    ref = LinearRegression(fit_intercept=False).fit(A, b).coef_
    newton = dsketch.fit((A, b), "least-squares", solver="newton")
    assert newton.success
    np.testing.assert_allclose(newton.x, ref, rtol=0, atol=1e-9)
    # the default solver (L-BFGS here, a well-conditioned problem) stops at the relative
    # gradient 1e-8: the same coefficients to that accuracy (a default penalty of 1e-4
    # would move them by about 1e-4)
    res = dsketch.fit((A, b), "least-squares")
    assert res.success and res.info["solver"] == "auto" and res.info["newton_from"] is None
    np.testing.assert_allclose(res.x, ref, rtol=0, atol=1e-7)


@pytest.mark.parametrize("curvature, solver, names", [
    (dict(kind="exact", size=100), "newton", "size"),
    (dict(kind="exact", params={"scores": "approx"}), "newton", "params"),
    (dict(kind="exact", adaptive=True), "newton", "adaptive"),
    (dict(size=100), "gd", "size"),
    (dict(adaptive=True), "gd", "adaptive"),
    (dict(kind="leverage"), "gd", "curvature='leverage'"),
])
def test_options_without_effect_are_refused_before_the_data_are_read(tmp_path, curvature, solver, names):
    with pytest.raises(UnusedOptionError, match="no effect") as exc:
        dsketch.fit(str(tmp_path / "missing.zarr"), "logistic", curvature=dsketch.Curvature(**curvature),
                    solver=solver)
    assert names in str(exc.value) and "\n" not in str(exc.value)
    assert isinstance(exc.value, ValueError)


def test_meaningful_combinations_are_accepted():
    for kwargs in ({"kind": "exact", "adaptive": False}, {"kind": "auto", "size": 50},
                   {"kind": "auto", "adaptive": True}, {"kind": "leverage", "size": 50},
                   {"solver": "newton-cg", "kind": "leverage"}, {"solver": "gd"}):
        method = kwargs.pop("solver", "newton")
        dsketch.Curvature(**kwargs).check_for(dsketch.Solver(method).method)
    rng = np.random.default_rng(1)
    A = rng.standard_normal((200, 3))
    b = (rng.random(200) < 0.5).astype(float)
    # a small problem: auto picks exact, and its sketch size and adaptivity then do not apply
    res = dsketch.fit((A, b), "logistic", curvature=dsketch.Curvature("auto", size=50, adaptive=True),
                      solver="newton")
    assert res.success and res.info["sketch"] == "exact" and res.info["sketch_size"] is None
    exact = dsketch.fit((A, b), "logistic", curvature="exact", solver="newton")
    np.testing.assert_array_equal(res.x, exact.x)


def test_estimator_with_exact_curvature():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((300, 3))
    y = rng.poisson(np.exp(0.3 * X[:, 0]))
    a = est.PoissonRegressor(sketch="exact").fit(X, y)  # a named curvature: Newton
    b = est.PoissonRegressor(solver="newton").fit(X, y)
    np.testing.assert_allclose(a.coef_, b.coef_, rtol=0, atol=1e-8)


def test_did_you_mean():
    with pytest.raises(UnknownNameError, match=r"did you mean 'logistic'\?.*valid models: softmax"):
        get_model("logistc")
    with pytest.raises(UnknownNameError, match=r"did you mean 'leverage'\?.*valid sketches: exact"):
        make_sketch("levrage")
    with pytest.raises(UnknownNameError, match=r"did you mean 'auto'\?"):
        dsketch.fit("missing.zarr", "logistic", curvature="atuo")
    with pytest.raises(UnknownNameError, match=r"did you mean 'newton'"):
        dsketch.fit("missing.zarr", "logistic", solver="newtn")
    with pytest.raises(UnknownNameError) as exc:  # nothing close: the list alone
        get_model("zzzz")
    assert "did you mean" not in str(exc.value) and "valid models" in str(exc.value)
