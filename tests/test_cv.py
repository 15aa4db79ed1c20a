"""Cross-validated elastic-net paths: held-out deviances against NumPy, the chosen penalty
and refit against glum's GeneralizedLinearRegressorCV on the same folds and alphas."""

import warnings

import glum
import numpy as np
import pytest
from model_helpers import poisson_offset_data
from scipy.special import expit, xlogy

import dsketch
from dsketch.errors import InvalidOptionError, InvalidParameterError, UnusedOptionError
from dsketch.store.folds import RowMask

TIGHT = dsketch.Solver(tol=1e-12, max_iter=300)


def _logistic(rng, n=1200, d=15, k=4):
    A = rng.standard_normal((n, d))
    beta = np.zeros(d)
    beta[:k] = rng.uniform(0.4, 1.2, k) * rng.choice([-1.0, 1.0], k)
    return A, (rng.random(n) < expit(A @ beta + 0.3)).astype(float)


@pytest.mark.parametrize("name,params,power", [
    ("poisson", {}, 1), ("gamma", {}, 2), ("inverse-gaussian", {}, 3), ("least-squares", {}, 0),
    ("tweedie", {"power": 1.5}, 1.5), ("tweedie", {"power": 2.5}, 2.5), ("tweedie", {"power": 0.0, "link": "log"}, 0),
])
def test_unit_deviance_equals_sklearns_tweedie_deviance(name, params, power):
    from sklearn.metrics import mean_tweedie_deviance

    rng = np.random.default_rng(11)
    model = dsketch.get_model(name, **params)
    eta = rng.normal(scale=0.5, size=40)
    y = rng.normal(size=40) if power == 0 else rng.gamma(2.0, 1.0, 40) * (rng.random(40) < (0.7 if power < 2 else 2))
    mu = model.mean(eta)
    ref = [mean_tweedie_deviance([a], [m], power=power) for a, m in zip(y, mu, strict=True)]
    np.testing.assert_allclose(model.unit_deviance(eta, y), ref, rtol=1e-10, atol=1e-13)


def test_unit_deviance_of_binomial_and_negative_binomial_equals_the_textbook():
    rng = np.random.default_rng(12)
    eta = rng.normal(size=40)
    y01 = (rng.random(40) < 0.5).astype(float)
    p = expit(eta)
    ref = -2 * (y01 * np.log(p) + (1 - y01) * np.log1p(-p))
    np.testing.assert_allclose(dsketch.get_model("logistic").unit_deviance(eta, y01), ref, rtol=1e-12)
    t, y = 0.7, rng.poisson(2.0, 40).astype(float)
    mu = np.exp(eta)
    ref = 2 * (xlogy(y, y / mu) - (y + 1 / t) * np.log((1 + t * y) / (1 + t * mu)))
    got = dsketch.get_model("negative-binomial", theta=t).unit_deviance(eta, y)
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-13)


def test_heldout_deviance_equals_numpy(tmp_path):
    """The weighted mean Poisson deviance of the held-out rows (offsets included), for
    several coefficient vectors in one pass."""
    from dsketch.cv import heldout_deviance

    rng = np.random.default_rng(2)
    A, y, offset = poisson_offset_data(rng, n=900, d=5)
    sw = rng.uniform(0.0, 2.0, y.size)
    spec = dsketch.write_problem(tmp_path / "p.zarr", A, y, sample_weight=sw, offset=offset, chunk_rows=200)
    coefs = rng.normal(scale=0.3, size=(3, 6))
    dev, weight = heldout_deviance(spec.with_row_mask(RowMask(4, 0, seed=9, held_out=True)), "poisson", coefs,
                                   fit_intercept=True)
    test = dsketch.fold_ids(y.size, 4, seed=9) == 0
    mu = np.exp(A[test] @ coefs[:, :-1].T + coefs[:, -1] + offset[test][:, None])
    yt, st = y[test][:, None], sw[test][:, None]
    unit = 2 * (xlogy(yt, yt / mu) - yt + mu)
    np.testing.assert_allclose(dev, (st * unit).sum(axis=0) / sw[test].sum(), rtol=1e-12)
    assert weight == pytest.approx(sw[test].sum(), rel=1e-12)


def _glum_cv(family, A, y, f, k, sample_weight, offset=None, **kw):
    """glum's cross-validation on the folds ``f`` (``k`` of them, or ``k`` the splits when
    ``f`` is None; its OpenMP kernels on one thread: on shared cores more threads made these
    small fits 50 times slower)."""
    from threadpoolctl import threadpool_limits

    splits = k if f is None else [(np.flatnonzero(f != j), np.flatnonzero(f == j)) for j in range(k)]
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="openmp"):
        warnings.simplefilter("ignore")
        return glum.GeneralizedLinearRegressorCV(family=family, cv=splits, gradient_tol=1e-12, **kw).fit(
            A, y, sample_weight=sample_weight, offset=offset)


def test_cv_path_picks_glums_penalty_on_the_same_folds():
    """glum's GeneralizedLinearRegressorCV with dsketch's folds and alphas: the same held-out
    deviances (to 1e-8), the same (l1_ratio, alpha), the same refit; the 1-SE alpha from
    glum's deviances."""
    rng = np.random.default_rng(3)
    A, y = _logistic(rng, n=600, d=8, k=3)
    sw = rng.uniform(0.5, 2.0, y.size)
    alphas = np.geomspace(0.1, 0.002, 8)
    cv = dsketch.cv_path(dsketch.in_memory(A, y, sample_weight=sw), "logistic", l1_ratio=[0.5, 1.0], alphas=alphas,
                         n_folds=3, seed=5, fit_intercept=True, solver=TIGHT)
    assert cv.success and cv.deviance.shape == (3, 2, 8)
    f = dsketch.fold_ids(y.size, 3, seed=5)
    ref = _glum_cv("binomial", A, y, f, 3, sw, l1_ratio=[0.5, 1.0], alphas=alphas)
    np.testing.assert_allclose(cv.deviance, ref.deviance_path_, rtol=1e-8)
    assert (cv.l1_ratio, cv.alpha) == (ref.l1_ratio_, ref.alpha_)
    np.testing.assert_allclose(cv.coef, np.r_[ref.coef_, ref.intercept_], atol=1e-7)
    np.testing.assert_allclose(cv.fold_weights, [sw[f == j].sum() for j in range(3)], rtol=1e-12)
    i = int(np.flatnonzero(cv.l1_ratios == ref.l1_ratio_)[0])
    dev = ref.deviance_path_[:, i]
    mean, se = dev.mean(axis=0), dev.std(axis=0, ddof=1) / np.sqrt(3)
    best = int(np.argmin(mean))
    assert cv.alpha_1se == alphas[mean <= mean[best] + se[best]].max()


def test_estimator_equals_glums_cv_estimator_with_the_same_splitter():
    """GeneralizedLinearRegressorCV (Poisson, weights, offsets) and glum's, both given one
    scikit-learn splitter: deviance_path_, alpha_, l1_ratio_, coef_, predictions."""
    from sklearn.model_selection import KFold

    from dsketch.estimators import GeneralizedLinearRegressorCV

    rng = np.random.default_rng(4)
    A, y, offset = poisson_offset_data(rng, n=600, d=8, k=3)
    sw = rng.uniform(0.5, 2.0, y.size)
    alphas = np.geomspace(0.2, 0.002, 8)
    cv = KFold(3, shuffle=True, random_state=0)
    est = GeneralizedLinearRegressorCV("poisson", alphas=alphas, l1_ratio=0.5, cv=cv, tol=1e-12).fit(
        A, y, sample_weight=sw, offset=offset)
    ref = _glum_cv("poisson", A, y, None, list(cv.split(A)), sw, offset, alphas=alphas, l1_ratio=0.5)
    np.testing.assert_allclose(est.deviance_path_, ref.deviance_path_, rtol=1e-8)
    assert (est.alpha_, est.l1_ratio_) == (ref.alpha_, ref.l1_ratio_)
    np.testing.assert_allclose(est.alphas_, ref.alphas_)
    np.testing.assert_allclose(est.coef_, ref.coef_, atol=1e-7)
    assert est.intercept_ == pytest.approx(ref.intercept_, abs=1e-7)
    np.testing.assert_allclose(est.predict(A[:5], offset=offset[:5]), ref.predict(A[:5], offset=offset[:5]),
                               rtol=1e-6)


def test_given_splits_equal_the_hashed_folds_they_list():
    """splits= built from fold_ids is the hashed cross-validation, to the last bits."""
    rng = np.random.default_rng(9)
    A, y = _logistic(rng, n=400, d=5, k=2)
    f = dsketch.fold_ids(y.size, 3, seed=4)
    kw = {"l1_ratio": 0.9, "n_alphas": 3, "eps": 0.05, "seed": 4, "fit_intercept": True}
    hashed = dsketch.cv_path((A, y), "logistic", n_folds=3, **kw)
    given = dsketch.cv_path((A, y), "logistic", splits=[(np.flatnonzero(f != j), np.flatnonzero(f == j))
                                                         for j in range(3)], **kw)
    np.testing.assert_array_equal(given.deviance, hashed.deviance)
    np.testing.assert_array_equal(given.coef, hashed.coef)


@pytest.mark.parametrize("kwargs,error", [
    ({"model": "multinomial"}, InvalidOptionError),
    ({"n_folds": 1}, InvalidParameterError),
    ({"l1_ratio": [0.5, 0.0]}, InvalidParameterError),
    ({"l1_ratio": []}, InvalidParameterError),
    ({"model_params": {"l1": 0.1}}, InvalidOptionError),
    ({"splits": [([0, 1], [2])]}, InvalidParameterError),
    ({"splits": [([0, 1], [2]), ([2], [60])]}, InvalidParameterError),
    ({"splits": [([0, 1], [2]), ([2], [0.5])]}, InvalidParameterError),
    ({"splits": [([0, 1], [2]), ([2], [1])], "n_folds": 2}, UnusedOptionError),
])
def test_cv_path_refuses_bad_settings(kwargs, error):
    rng = np.random.default_rng(5)
    A, y = _logistic(rng, n=60, d=3, k=1)
    with pytest.raises(error):
        dsketch.cv_path((A, y), **{"model": "logistic", **kwargs})


@pytest.mark.slow
def test_cv_path_of_a_store_on_a_cluster_equals_the_in_memory_one(tmp_path, client):
    """The masks travel to the workers with the store's spec: the same deviances and refit
    as the in-memory problem on threads (folds keyed by the row, not by chunks or workers).
    About 15 s on shared cores: nine small fits, each paying the process cluster's round trips."""
    rng = np.random.default_rng(8)
    A, y = _logistic(rng, n=500, d=6, k=2)
    store = dsketch.write_problem(tmp_path / "p.zarr", A, y, chunk_rows=128)
    kw = {"l1_ratio": 0.8, "n_alphas": 2, "eps": 0.1, "n_folds": 2, "seed": 2, "fit_intercept": True,
          "solver": TIGHT}
    on_cluster = dsketch.cv_path(store, "logistic", cluster=dsketch.Cluster(client, block_rows=100), **kw)
    in_memory = dsketch.cv_path((A, y), "logistic", **kw)
    np.testing.assert_allclose(on_cluster.deviance, in_memory.deviance, rtol=1e-10)
    np.testing.assert_allclose(on_cluster.coef, in_memory.coef, atol=1e-9)
    assert on_cluster.alpha == pytest.approx(in_memory.alpha, rel=1e-12)  # alpha_max: sums in other blocks
