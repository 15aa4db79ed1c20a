"""The GLMs' per-row data: sample weights, offsets and the engine's intercept column.

Every fit is compared with an independent reference (scikit-learn, glum, statsmodels or a
dense NumPy computation); the refusals check that data a model cannot use is never ignored.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn import linear_model as sk

import dsketch
from dsketch import estimators as est
from dsketch.errors import ModelDomainError, StoreFormatError
from dsketch.models.base import loss_gradient_hessian
from dsketch.models.glm import LogisticRegression as LogisticModel
from dsketch.models.glm import PoissonRegression as PoissonModel
from dsketch.store import ProblemBuilder, read_block

glum = pytest.importorskip("glum")
sm = pytest.importorskip("statsmodels.api")


@pytest.fixture(scope="module", autouse=True)
def _close_shared_cluster():
    yield
    est._close_shared()


def _design(rng, n, d, sparse):
    X = rng.standard_normal((n, d))
    X[:, 0] *= 5.0
    if sparse:
        X = np.where(rng.random((n, d)) < 0.4, X, 0.0)
        return sp.csr_matrix(X), X
    return X, X


def _logistic(rng, n=3000, d=6, sparse=False):
    A, X = _design(rng, n, d, sparse)
    beta = rng.standard_normal(d) / np.r_[5.0, np.ones(d - 1)]
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-(X @ beta) + 0.4))).astype(float)
    return A, X, y


def _poisson(rng, n=3000, d=6, sparse=False):
    A, X = _design(rng, n, d, sparse)
    beta = 0.3 * rng.standard_normal(d) / np.r_[5.0, np.ones(d - 1)]
    exposure = rng.uniform(0.2, 5.0, n)
    y = rng.poisson(exposure * np.exp(X @ beta + 0.5)).astype(float)
    return A, X, y, exposure


# ------------------------------------------------------------------------ refusals
@pytest.mark.parametrize("model", ["logistic", "poisson", "least-squares"])
def test_glm_refuses_a_store_with_regularisation_weights(tmp_path, client, model):
    """The silent wrong answer of old: a store's ``w`` was ignored by the GLMs."""
    rng = np.random.default_rng(0)
    A, _, y = _logistic(rng, n=200)
    spec = dsketch.write_problem(tmp_path / "p.zarr", A, y, w=rng.uniform(0.5, 2.0, 200))
    with pytest.raises(StoreFormatError, match="row weights 'w'.*sample_weight"):
        dsketch.fit(spec, model, cluster=client)


@pytest.mark.parametrize("member", ["sample_weight", "offset"])
def test_softmax_refuses_sample_weights_and_offsets(tmp_path, client, member):
    rng = np.random.default_rng(1)
    A = rng.standard_normal((100, 3))
    y = rng.uniform(size=100)
    spec = dsketch.write_problem(tmp_path / "p.zarr", A, y / y.sum(), w=np.full(100, 0.1),
                                 **{member: rng.uniform(size=100)})
    with pytest.raises(StoreFormatError, match=member):
        dsketch.fit(spec, "softmax", cluster=client)


def test_negative_sample_weights_are_refused(tmp_path, client):
    rng = np.random.default_rng(2)
    A, _, y = _logistic(rng, n=50)
    sw = np.ones(50)
    sw[7] = -1.0
    with pytest.raises(StoreFormatError, match="row 7"):
        dsketch.write_problem(tmp_path / "p.zarr", A, y, sample_weight=sw)
    # a store written by hand (no check at write time) is refused when the fit reads it
    builder = ProblemBuilder.create(tmp_path / "q.zarr", n_samples=50, n_features=A.shape[1], sparse=False,
                                    extra={"sample_weight": ((), "float64")})
    builder.write_dense_rows(0, A)
    builder.write_vector("b", 0, y)
    builder.write_vector("sample_weight", 0, sw)
    spec = builder.commit()
    with pytest.raises(ModelDomainError, match="sample weights must be finite and >= 0"):
        dsketch.fit(spec, "logistic", cluster=client)


def test_all_zero_sample_weights_are_refused(tmp_path, client):
    rng = np.random.default_rng(3)
    A, _, y = _logistic(rng, n=40)
    spec = dsketch.write_problem(tmp_path / "p.zarr", A, y, sample_weight=np.zeros(40))
    with pytest.raises(ModelDomainError, match="sum to 0"):
        dsketch.fit(spec, "logistic", cluster=client)


# ------------------------------------------------------------------------ model maths
def test_weighted_offset_objective_against_a_dense_formula():
    """Loss, gradient and Hessian with sample weights and offsets, written out directly."""
    rng = np.random.default_rng(4)
    n, d = 60, 4
    A = rng.standard_normal((n, d))
    y = rng.poisson(2.0, n).astype(float)
    s, o = rng.uniform(0.0, 3.0, n), rng.standard_normal(n)
    x = 0.2 * rng.standard_normal(d)
    model = PoissonModel(l2=0.3)
    b = np.column_stack([y, s, o])
    loss, grad, hess = loss_gradient_hessian(model, A, b, x)
    eta = A @ x + o
    S = s.sum()
    mu = np.exp(eta)
    np.testing.assert_allclose(loss, np.sum(s * (mu - y * eta)) / S + 0.15 * x @ x, rtol=1e-13)
    np.testing.assert_allclose(grad, A.T @ (s * (mu - y)) / S + 0.3 * x, rtol=1e-12)
    np.testing.assert_allclose(hess, A.T @ ((s * mu / S)[:, None] * A) + 0.3 * np.eye(d), rtol=1e-12)


# ------------------------------------------------------------------------ fits on stores
@pytest.mark.parametrize("sparse", [False, True])
def test_weighted_logistic_fit_equals_sklearn_and_glum(tmp_path, client, sparse):
    rng = np.random.default_rng(5)
    A, X, y = _logistic(rng, sparse=sparse)
    sw = rng.integers(0, 4, y.size).astype(float)
    l2 = 1e-3
    spec = dsketch.write_problem(tmp_path / "p.zarr", A, y, sample_weight=sw, chunk_rows=512)
    res = dsketch.fit(spec, "logistic", model_params={"l2": l2}, fit_intercept=True,
                      solver=dsketch.Solver(tol=1e-12), cluster=client)
    assert res.success
    ref = sk.LogisticRegression(C=1.0 / (l2 * sw.sum()), tol=1e-12, max_iter=10_000,
                                solver="newton-cholesky").fit(X, y, sample_weight=sw)
    np.testing.assert_allclose(res.x[:-1], ref.coef_[0], rtol=1e-6, atol=1e-8)
    assert res.x[-1] == pytest.approx(ref.intercept_[0], rel=1e-6, abs=1e-8)
    # glum: (1/sum s) sum s l + alpha/2 ||beta||^2 with the intercept unpenalised
    g = glum.GeneralizedLinearRegressor(family="binomial", alpha=l2, gradient_tol=1e-12).fit(
        X, y, sample_weight=sw)
    np.testing.assert_allclose(res.x[:-1], g.coef_, rtol=1e-6, atol=1e-8)
    assert res.x[-1] == pytest.approx(g.intercept_, rel=1e-6, abs=1e-8)


def test_weight_two_equals_a_duplicated_row(tmp_path, client):
    rng = np.random.default_rng(6)
    A, _, y = _logistic(rng, n=800)
    sw = rng.integers(1, 3, y.size).astype(float)  # 1 or 2
    rep = np.repeat(np.arange(y.size), sw.astype(int))
    weighted = dsketch.write_problem(tmp_path / "w.zarr", A, y, sample_weight=sw)
    repeated = dsketch.write_problem(tmp_path / "r.zarr", A[rep], y[rep])
    kw = {"model_params": {"l2": 1e-2}, "fit_intercept": True, "solver": dsketch.Solver(tol=1e-12), "cluster": client}
    xw = dsketch.fit(weighted, "logistic", **kw).x
    xr = dsketch.fit(repeated, "logistic", **kw).x
    np.testing.assert_allclose(xw, xr, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("sparse", [False, True])
def test_poisson_exposure_offset_equals_glum_and_statsmodels(tmp_path, client, sparse):
    rng = np.random.default_rng(7)
    A, X, y, exposure = _poisson(rng, sparse=sparse)
    sw = rng.uniform(0.0, 2.0, y.size)
    spec = dsketch.write_problem(tmp_path / "p.zarr", A, y, sample_weight=sw, offset=np.log(exposure))
    res = dsketch.fit(spec, "poisson", model_params={"l2": 0.0}, fit_intercept=True,
                      solver=dsketch.Solver(tol=1e-12), cluster=client)
    assert res.success
    ref = sm.GLM(y, sm.add_constant(X, prepend=False), family=sm.families.Poisson(),
                 offset=np.log(exposure), var_weights=sw).fit(tol=1e-13)
    np.testing.assert_allclose(res.x, ref.params, rtol=1e-6, atol=1e-9)
    g = glum.GeneralizedLinearRegressor(family="poisson", alpha=0.0, gradient_tol=1e-12).fit(
        X, y, sample_weight=sw, offset=np.log(exposure))
    np.testing.assert_allclose(res.x[:-1], g.coef_, rtol=1e-6, atol=1e-9)
    assert res.x[-1] == pytest.approx(g.intercept_, rel=1e-6)


@pytest.mark.parametrize("solver,sketch", [("newton", "leverage"), ("newton", "uniform"), ("newton-cg", "exact")])
def test_sketched_and_cg_fits_reach_the_weighted_optimum(tmp_path, client, solver, sketch):
    rng = np.random.default_rng(8)
    A, X, y, exposure = _poisson(rng, n=6000)
    sw = rng.uniform(0.0, 3.0, y.size)
    spec = dsketch.write_problem(tmp_path / "p.zarr", A, y, sample_weight=sw, offset=np.log(exposure))
    res = dsketch.fit(spec, "poisson", model_params={"l2": 1e-3}, fit_intercept=True,
                      solver=dsketch.Solver(solver, tol=1e-10, max_iter=100),
                      curvature=dsketch.Curvature(sketch, size=None if sketch == "exact" else 400,
                                                  adaptive=sketch != "exact"),
                      cluster=client)
    assert res.success
    g = glum.GeneralizedLinearRegressor(family="poisson", alpha=1e-3, gradient_tol=1e-12).fit(
        X, y, sample_weight=sw, offset=np.log(exposure))
    np.testing.assert_allclose(res.x[:-1], g.coef_, rtol=1e-6, atol=1e-8)


def test_fit_intercept_does_not_copy_the_store(tmp_path, client):
    rng = np.random.default_rng(9)
    A, X, y = _logistic(rng, n=1000)
    spec = dsketch.write_problem(tmp_path / "p.zarr", A, y)
    before = sorted(os.listdir(tmp_path))
    res = dsketch.fit(spec, "least-squares", model_params={"l2": 0.0}, fit_intercept=True, cluster=client)
    assert sorted(os.listdir(tmp_path)) == before
    ref = sk.LinearRegression().fit(X, y)
    np.testing.assert_allclose(res.x[:-1], ref.coef_, rtol=1e-9, atol=1e-12)
    assert res.x[-1] == pytest.approx(ref.intercept_, rel=1e-9)
    assert res.info["fit_intercept"] is True
    with pytest.raises(ValueError, match="no intercept"):
        dsketch.fit(dsketch.write_problem(tmp_path / "s.zarr", A, np.full(1000, 1e-3), w=np.ones(1000)),
                    "softmax", fit_intercept=True, cluster=client)


@pytest.mark.parametrize("sparse", [False, True])
def test_intercept_block_is_the_matrix_with_a_column_of_ones(tmp_path, sparse):
    rng = np.random.default_rng(10)
    A, X, y = _logistic(rng, n=300, d=5, sparse=sparse)
    spec = dsketch.write_problem(tmp_path / "p.zarr", A, y, chunk_rows=64).with_intercept()
    assert spec.shape == (300, 6)
    blk = read_block(spec, 37, 250)
    got = blk.A.toarray() if sparse else blk.A
    np.testing.assert_array_equal(got, np.hstack([X[37:250], np.ones((213, 1))]))


def test_poisson_with_huge_counts_starts_at_their_scale(tmp_path, client):
    """Targets near 1e12: the intercept starts at the log of the weighted mean."""
    rng = np.random.default_rng(11)
    X = rng.standard_normal((2000, 3))
    y = rng.poisson(1e12 * np.exp(0.1 * X[:, 0])).astype(float)
    ours = est.PoissonRegressor(alpha=0.0, tol=1e-10).fit(X, y)
    ref = sk.PoissonRegressor(alpha=0.0, tol=1e-12, max_iter=1000, solver="newton-cholesky").fit(X, y)
    np.testing.assert_allclose(ours.coef_, ref.coef_, rtol=1e-5, atol=1e-9)
    assert ours.intercept_ == pytest.approx(ref.intercept_, rel=1e-8)


# ------------------------------------------------------------------------ estimators
@pytest.mark.parametrize("kind", ["dense", "sparse", "dask", "store"])
def test_estimators_take_sample_weights(tmp_path, kind):
    import dask.array as da

    rng = np.random.default_rng(12)
    A, X, y = _logistic(rng, n=2500, sparse=(kind == "sparse"))
    sw = rng.uniform(0.0, 4.0, y.size)
    ours = est.LogisticRegression(C=0.05, tol=1e-12)
    if kind == "dask":
        ours.fit(da.from_array(X, chunks=(700, X.shape[1])), da.from_array(y, chunks=700),
                 sample_weight=da.from_array(sw, chunks=700))
    elif kind == "store":
        spec = dsketch.write_problem(tmp_path / "p.zarr", A, y, sample_weight=sw)
        ours.fit(spec.path)
    else:
        ours.fit(A, y, sample_weight=sw)
    ref = sk.LogisticRegression(C=0.05, tol=1e-12, max_iter=10_000, solver="newton-cholesky").fit(
        X, y, sample_weight=sw)
    np.testing.assert_allclose(ours.coef_, ref.coef_, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(ours.intercept_, ref.intercept_, rtol=1e-6, atol=1e-8)
    assert ours.score(X, y, sample_weight=sw) == pytest.approx(ref.score(X, y, sample_weight=sw))


def test_regressors_take_sample_weights_and_offsets():
    rng = np.random.default_rng(13)
    A, X, y, exposure = _poisson(rng, n=2500, sparse=True)
    sw = rng.uniform(0.0, 2.0, y.size)
    off = np.log(exposure)
    pois = est.PoissonRegressor(alpha=0.01, tol=1e-12).fit(A, y, sample_weight=sw, offset=off)
    g = glum.GeneralizedLinearRegressor(family="poisson", alpha=0.01, gradient_tol=1e-12).fit(
        X, y, sample_weight=sw, offset=off)
    np.testing.assert_allclose(pois.coef_, g.coef_, rtol=1e-6, atol=1e-9)
    assert pois.intercept_ == pytest.approx(g.intercept_, rel=1e-6)
    np.testing.assert_allclose(pois.predict(X, offset=off), g.predict(X, offset=off), rtol=1e-6)
    # least squares: sample weights as in scikit-learn's LinearRegression
    yl = X @ rng.standard_normal(X.shape[1]) + 2.0 + rng.standard_normal(y.size)
    lin = est.LinearRegression(tol=1e-13).fit(A, yl, sample_weight=sw)
    lref = sk.LinearRegression().fit(X, yl, sample_weight=sw)
    np.testing.assert_allclose(lin.coef_, lref.coef_, rtol=1e-9)
    assert lin.intercept_ == pytest.approx(lref.intercept_, rel=1e-9)


def test_estimator_refuses_extra_rows_with_a_store(tmp_path):
    rng = np.random.default_rng(14)
    A, _, y = _logistic(rng, n=100)
    spec = dsketch.write_problem(tmp_path / "p.zarr", A, y)
    with pytest.raises(ValueError, match="from the store"):
        est.LogisticRegression().fit(spec.path, sample_weight=np.ones(100))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="offset must have 100 entries"):
            est.PoissonRegressor().fit(A, np.abs(y), offset=np.zeros(99))


def test_logistic_model_targets_checked_with_weights():
    model = LogisticModel()
    with pytest.raises(ValueError, match="targets in"):
        model.check_targets(np.column_stack([[0.0, 2.0], [1.0, 1.0], [0.0, 0.0]]))


@pytest.mark.parametrize("name", ["logistic", "poisson", "least-squares"])
def test_canonical_link_identities(name):
    """For a canonical link, l'(eta) = mu - y and l''(eta) = V(mu) (GLM theory), which ties
    ``mean`` and ``variance`` (used by inference and predictions) to the fitted loss."""
    model = dsketch.get_model(name)
    eta = np.linspace(-3.0, 3.0, 13)
    y = np.full(13, 0.0 if name == "logistic" else 2.0)
    h = 1e-6
    d1 = (model._loss(eta + h, y) - model._loss(eta - h, y)) / (2 * h)
    k = 1e-4  # a second difference needs a wider step against rounding
    d2 = (model._loss(eta + k, y) - 2 * model._loss(eta, y) + model._loss(eta - k, y)) / k**2
    mu = model.mean(eta)
    np.testing.assert_allclose(d1, mu - y, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(d2, model.variance(mu), rtol=1e-5, atol=1e-7)
