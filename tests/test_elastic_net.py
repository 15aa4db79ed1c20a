"""L1 / elastic-net GLMs by proximal Newton, against scikit-learn and glum on the same
objective, with the KKT conditions checked on a dense gradient computed here."""

import warnings

import glum
import numpy as np
import pytest
from scipy.special import expit
from sklearn.linear_model import ElasticNet
from sklearn.linear_model import LogisticRegression as SkLogistic

import dsketch
from dsketch.errors import InvalidOptionError, InvalidParameterError
from dsketch.path import ALPHA_MAX_FLOOR

def _logistic_data(rng, n=1500, d=25, k=5):
    A = rng.standard_normal((n, d))
    beta = np.zeros(d)
    beta[:k] = rng.choice([-1.0, 1.0], k) * rng.uniform(0.5, 1.5, k)
    y = (rng.random(n) < expit(A @ beta + 0.3)).astype(float)
    return A, y

def _poisson_data(rng, n=1500, d=20, k=4):
    A = rng.standard_normal((n, d)) * 0.5
    beta = np.zeros(d)
    beta[:k] = rng.uniform(-0.6, 0.6, k)
    exposure = rng.uniform(0.5, 2.0, n)
    y = rng.poisson(exposure * np.exp(A @ beta + 0.2)).astype(float)
    return A, y, np.log(exposure)

def _smooth(family, A, y, coef, intercept, l2, sw, offset):
    """The smooth part (weighted mean loss + l2/2 ||coef||^2) and its gradient in coef and
    intercept, written out densely."""
    eta = A @ coef + intercept + offset
    if family == "logistic":
        loss = np.logaddexp(0.0, eta) - y * eta
        d1 = expit(eta) - y
    elif family == "poisson":
        loss = np.exp(eta) - y * eta
        d1 = np.exp(eta) - y
    else:
        loss = 0.5 * (eta - y) ** 2
        d1 = eta - y
    S = sw.sum()
    value = float(sw @ loss) / S + 0.5 * l2 * float(coef @ coef)
    grad = A.T @ (sw * d1) / S + l2 * coef
    return value, grad, float(sw @ d1) / S

def _check(family, A, y, res, ref_coef, ref_intercept, l1, l2, sw=None, offset=None):
    """Relative objective within 1e-6 of the reference, identical active sets, and the KKT
    conditions at dsketch's solution."""
    sw = np.ones(y.size) if sw is None else sw
    offset = np.zeros(y.size) if offset is None else offset
    coef, icpt = res.x[:-1], res.x[-1]
    f, g, g0 = _smooth(family, A, y, coef, icpt, l2, sw, offset)
    f_ref = _smooth(family, A, y, ref_coef, ref_intercept, l2, sw, offset)[0]
    F, F_ref = f + l1 * np.abs(coef).sum(), f_ref + l1 * np.abs(ref_coef).sum()
    assert res.success
    assert F <= F_ref + 1e-6 * abs(F_ref)
    assert abs(F - F_ref) <= 1e-6 * abs(F_ref)
    active = np.flatnonzero(coef)
    np.testing.assert_array_equal(active, np.flatnonzero(np.abs(ref_coef) > 1e-10))
    assert 0 < active.size < coef.size  # the test means something: some in, some out
    zero = coef == 0.0
    assert np.all(np.abs(g[zero]) <= l1 * (1 + 1e-6))
    np.testing.assert_allclose(g[~zero], -l1 * np.sign(coef[~zero]), atol=1e-6 * l1)
    assert abs(g0) <= 1e-7
    np.testing.assert_allclose(coef, ref_coef, atol=1e-5)

TIGHT = dsketch.Solver(tol=1e-10)

@pytest.mark.parametrize("l1_ratio", [1.0, 0.5])
def test_logistic_elastic_net_equals_sklearn_saga(l1_ratio):
    rng = np.random.default_rng(0)
    A, y = _logistic_data(rng)
    alpha = 0.03
    l1, l2 = alpha * l1_ratio, alpha * (1 - l1_ratio)
    res = dsketch.fit((A, y), "logistic", model_params={"l2": l2, "l1": l1}, fit_intercept=True, solver=TIGHT)
    assert res.info["solver"] == "prox-newton"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # scikit-learn >= 1.8 deprecates penalty=
        ref = SkLogistic(penalty="elasticnet", solver="saga", l1_ratio=l1_ratio, C=1.0 / (y.size * alpha),
                         tol=1e-13, max_iter=100_000).fit(A, y)
    _check("logistic", A, y, res, ref.coef_[0], ref.intercept_[0], l1, l2)

def test_least_squares_elastic_net_equals_sklearn_coordinate_descent():
    rng = np.random.default_rng(1)
    A = rng.standard_normal((1200, 30))
    beta = np.zeros(30)
    beta[:6] = rng.uniform(-2, 2, 6)
    y = A @ beta + 0.5 * rng.standard_normal(1200) + 1.0
    alpha, ratio = 0.1, 0.7
    res = dsketch.fit((A, y), "least-squares", model_params={"l2": alpha * (1 - ratio), "l1": alpha * ratio},
                      fit_intercept=True, solver=TIGHT)
    ref = ElasticNet(alpha=alpha, l1_ratio=ratio, tol=1e-14, max_iter=100_000).fit(A, y)
    _check("least-squares", A, y, res, ref.coef_, ref.intercept_, alpha * ratio, alpha * (1 - ratio))

def test_weighted_poisson_with_offset_equals_glum():
    rng = np.random.default_rng(2)
    A, y, offset = _poisson_data(rng)
    sw = rng.uniform(0.0, 2.0, y.size)
    alpha, ratio = 0.02, 0.8
    prob = dsketch.in_memory(A, y, sample_weight=sw, offset=offset)
    res = dsketch.fit(prob, "poisson", model_params={"l2": alpha * (1 - ratio), "l1": alpha * ratio},
                      fit_intercept=True, solver=TIGHT)
    ref = glum.GeneralizedLinearRegressor(family="poisson", alpha=alpha, l1_ratio=ratio, gradient_tol=1e-12,
                                          max_iter=1000).fit(A, y, sample_weight=sw, offset=offset)
    _check("poisson", A, y, res, ref.coef_, ref.intercept_, alpha * ratio, alpha * (1 - ratio), sw, offset)

def test_store_fit_with_weights_and_offsets_equals_glum(tmp_path, client):
    rng = np.random.default_rng(3)
    A, y, offset = _poisson_data(rng, n=1000)
    sw = rng.integers(1, 3, y.size).astype(float)
    spec = dsketch.write_problem(tmp_path / "p.zarr", A, y, sample_weight=sw, offset=offset, chunk_rows=250)
    l1 = 0.015
    res = dsketch.fit(spec, "poisson", model_params={"l2": 0.0, "l1": l1}, fit_intercept=True, solver=TIGHT,
                      cluster=client)
    ref = glum.GeneralizedLinearRegressor(family="poisson", alpha=l1, l1_ratio=1.0, gradient_tol=1e-12,
                                          max_iter=1000).fit(A, y, sample_weight=sw, offset=offset)
    _check("poisson", A, y, res, ref.coef_, ref.intercept_, l1, 0.0, sw, offset)

@pytest.mark.parametrize("curvature", [dsketch.Curvature("leverage", size=200), dsketch.Curvature("uniform", size=150)])
def test_sketched_curvature_reaches_the_exact_optimum(curvature):
    rng = np.random.default_rng(4)
    A, y = _logistic_data(rng, n=3000, d=30, k=6)
    alpha, ratio = 0.02, 0.9
    res = dsketch.fit((A, y), "logistic", model_params={"l2": alpha * (1 - ratio), "l1": alpha * ratio},
                      fit_intercept=True, curvature=curvature, solver=dsketch.Solver(tol=1e-10, max_iter=200))
    assert res.info["sketch"] == curvature.kind
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        ref = SkLogistic(penalty="elasticnet", solver="saga", l1_ratio=ratio, C=1.0 / (y.size * alpha),
                         tol=1e-13, max_iter=100_000).fit(A, y)
    _check("logistic", A, y, res, ref.coef_[0], ref.intercept_[0], alpha * ratio, alpha * (1 - ratio))

def test_a_large_l1_gives_the_intercept_only_model():
    rng = np.random.default_rng(5)
    A, y = _logistic_data(rng, n=500, d=8, k=3)
    res = dsketch.fit((A, y), "logistic", model_params={"l2": 0.0, "l1": 10.0}, fit_intercept=True, solver=TIGHT)
    assert res.success
    assert np.all(res.x[:-1] == 0.0)
    assert res.x[-1] == pytest.approx(np.log(y.mean() / (1 - y.mean())), rel=1e-8)

@pytest.mark.parametrize("method", ["lbfgs", "newton-cg", "newton", "gd"])
def test_methods_that_cannot_handle_l1_are_refused(method):
    rng = np.random.default_rng(6)
    A, y = _logistic_data(rng, n=100, d=4, k=2)
    with pytest.raises(InvalidOptionError, match="L1"):
        dsketch.fit((A, y), "logistic", model_params={"l1": 0.1}, solver=method)

@pytest.mark.parametrize("value", [-1.0, float("nan"), "a"])
def test_a_bad_l1_is_refused(value):
    with pytest.raises(InvalidParameterError, match="l1"):
        dsketch.get_model("logistic", l1=value)

def test_jac_is_the_smooth_gradient_and_grad_norm_the_kkt_measure():
    rng = np.random.default_rng(7)
    A, y = _logistic_data(rng, n=600, d=10, k=3)
    l1 = 0.05
    res = dsketch.fit((A, y), "logistic", model_params={"l2": 0.0, "l1": l1}, fit_intercept=True, solver=TIGHT)
    _f, g, g0 = _smooth("logistic", A, y, res.x[:-1], res.x[-1], 0.0, np.ones(y.size), np.zeros(y.size))
    np.testing.assert_allclose(res.jac, np.r_[g, g0], atol=1e-12)
    assert np.linalg.norm(res.jac) > 10 * res.grad_norm  # the subgradient vanishes, the gradient does not
    assert res.grad_norm <= 1e-10 * res.history["grad_norm"][0]



# ------------------------------------------------------------------------ paths
@pytest.mark.filterwarnings("ignore:alphas is deprecated:DeprecationWarning")  # this glum needs alphas=
def test_path_equals_glums_path_with_weights_and_offsets():
    rng = np.random.default_rng(8)
    A, y, offset = _poisson_data(rng, n=1500, d=30, k=5)
    sw = rng.uniform(0.5, 2.0, y.size)
    path = dsketch.fit_path(dsketch.in_memory(A, y, sample_weight=sw, offset=offset), "poisson", l1_ratio=0.5,
                            n_alphas=20, eps=1e-2, fit_intercept=True, solver=TIGHT)
    assert path.success and path.coef.shape == (20, 31)
    np.testing.assert_allclose(path.alphas, path.alpha_max * np.logspace(0, -2, 20), rtol=1e-12)
    assert path.n_screened.min() < 30  # the strong rule left coordinates out
    ref = glum.GeneralizedLinearRegressor(family="poisson", l1_ratio=0.5, alpha_search=True, alphas=path.alphas,
                                          gradient_tol=1e-12).fit(A, y, sample_weight=sw, offset=offset)
    np.testing.assert_allclose(path.coef[:, :-1], np.asarray(ref.coef_path_), atol=1e-8)
    np.testing.assert_allclose(path.coef[:, -1], np.asarray(ref.intercept_path_), atol=1e-8)
    np.testing.assert_array_equal(path.n_active, (np.abs(np.asarray(ref.coef_path_)) > 1e-10).sum(axis=1))


def test_alpha_max_is_where_the_first_coefficient_enters():
    """At alpha_max every coefficient is 0 (KKT on a dense gradient at the intercept-only
    fit); just below it one is not (glum's fit there)."""
    rng = np.random.default_rng(9)
    A, y = _logistic_data(rng, n=800, d=12, k=3)
    path = dsketch.fit_path((A, y), "logistic", l1_ratio=0.7, alphas=None, n_alphas=2, eps=0.98,
                            fit_intercept=True, solver=TIGHT)
    assert np.all(path.coef[0, :-1] == 0.0) and path.n_active[1] >= 1
    icpt = np.log(y.mean() / (1 - y.mean()))
    g = A.T @ (expit(np.full(y.size, icpt)) - y) / y.size
    assert path.alpha_max == pytest.approx(np.abs(g).max() / 0.7, rel=1e-8)
    ref = glum.GeneralizedLinearRegressor(family="binomial", alpha=path.alphas[1], l1_ratio=0.7,
                                          gradient_tol=1e-12).fit(A, y)
    np.testing.assert_allclose(path.coef[1, :-1], ref.coef_, atol=1e-8)


def test_path_without_intercept_on_least_squares_equals_sklearn_enet_path():
    from sklearn.linear_model import enet_path

    rng = np.random.default_rng(10)
    A = rng.standard_normal((600, 15))
    y = A[:, :4] @ np.array([1.0, -2.0, 0.5, 1.5]) + rng.standard_normal(600)
    path = dsketch.fit_path((A, y), "least-squares", l1_ratio=0.9, n_alphas=8, eps=1e-2, solver=TIGHT)
    alphas, coefs, _ = enet_path(A, y, l1_ratio=0.9, alphas=path.alphas, tol=1e-14, max_iter=100_000)
    np.testing.assert_allclose(alphas, path.alphas)
    np.testing.assert_allclose(path.coef, coefs.T, atol=1e-7)


@pytest.mark.parametrize("kwargs,error", [
    ({"model_params": {"l1": 0.1}}, InvalidOptionError),
    ({"l1_ratio": 0.0}, InvalidParameterError),
    ({"alphas": [0.1, -1.0]}, InvalidParameterError),
    ({"solver": "lbfgs"}, InvalidOptionError),
    ({"n_alphas": 0}, InvalidOptionError),
])
def test_path_refuses_bad_settings(kwargs, error):
    rng = np.random.default_rng(11)
    A, y = _logistic_data(rng, n=50, d=3, k=1)
    with pytest.raises(error):
        dsketch.fit_path((A, y), "logistic", **kwargs)


def _null_model_optimal_data():
    """Logistic data whose zero model has an exactly zero gradient: every row twice, once
    with label 0 and once with label 1 (small integers: the sums are exact)."""
    rng = np.random.default_rng(12)
    half = rng.integers(-2, 3, size=(40, 4)).astype(float)
    A = np.vstack([half, half])
    y = np.concatenate([np.zeros(40), np.ones(40)])
    assert not np.any(A.T @ (expit(np.zeros(80)) - y))  # 0 is the optimum for every alpha
    return A, y


def test_path_refuses_a_default_grid_when_alpha_max_is_zero():
    A, y = _null_model_optimal_data()
    with pytest.raises(InvalidParameterError, match=r"alpha_max is 0 .*alphas="):
        dsketch.fit_path((A, y), "logistic", n_alphas=4)


def test_path_with_given_alphas_when_alpha_max_is_zero_is_the_zero_model():
    A, y = _null_model_optimal_data()
    path = dsketch.fit_path((A, y), "logistic", alphas=[1.0, 0.1])
    assert path.success and path.alpha_max <= ALPHA_MAX_FLOOR
    np.testing.assert_array_equal(path.coef, np.zeros((2, 4)))


# ------------------------------------------------------------------------ estimators
@pytest.mark.parametrize("penalty,l1_ratio", [("l1", None), ("elasticnet", 0.4)])
def test_logistic_estimator_equals_sklearn_with_its_penalty(penalty, l1_ratio):
    from dsketch.estimators import LogisticRegression

    rng = np.random.default_rng(12)
    A, y = _logistic_data(rng, n=1000, d=15, k=4)
    sw = rng.uniform(0.5, 2.0, y.size)
    est = LogisticRegression(C=0.05, penalty=penalty, l1_ratio=l1_ratio, tol=1e-10).fit(A, y, sample_weight=sw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        ref = SkLogistic(C=0.05, penalty="elasticnet", l1_ratio=1.0 if l1_ratio is None else l1_ratio, solver="saga",
                         tol=1e-13, max_iter=100_000).fit(A, y, sample_weight=sw)
    np.testing.assert_allclose(est.coef_, ref.coef_, atol=1e-6)
    np.testing.assert_allclose(est.intercept_, ref.intercept_, atol=1e-6)
    np.testing.assert_array_equal(est.coef_ != 0, np.abs(ref.coef_) > 1e-10)
    assert 0 < np.count_nonzero(est.coef_) < 15


def test_glm_regressor_takes_glums_alpha_and_l1_ratio():
    from dsketch.estimators import GeneralizedLinearRegressor

    rng = np.random.default_rng(13)
    A, y, _ = _poisson_data(rng, n=1000, d=15, k=3)
    est = GeneralizedLinearRegressor("poisson", alpha=0.05, l1_ratio=0.6, tol=1e-10).fit(A, y)
    ref = glum.GeneralizedLinearRegressor(family="poisson", alpha=0.05, l1_ratio=0.6, gradient_tol=1e-12).fit(A, y)
    np.testing.assert_allclose(est.coef_, ref.coef_, atol=1e-6)
    assert est.intercept_ == pytest.approx(ref.intercept_, abs=1e-6)
    np.testing.assert_array_equal(est.coef_ != 0, np.abs(ref.coef_) > 1e-10)


@pytest.mark.parametrize("kwargs,error", [
    ({"penalty": "l2", "l1_ratio": 0.5}, "UnusedOptionError"),
    ({"penalty": "elasticnet"}, "InvalidParameterError"),
    ({"penalty": "l0"}, "InvalidParameterError"),
    ({"penalty": "l1", "solver": "lbfgs"}, "InvalidOptionError"),
])
def test_logistic_estimator_refuses_penalty_settings_that_make_no_sense(kwargs, error):
    from dsketch import errors
    from dsketch.estimators import LogisticRegression

    rng = np.random.default_rng(14)
    A, y = _logistic_data(rng, n=60, d=3, k=1)
    with pytest.raises(getattr(errors, error)):
        LogisticRegression(**kwargs).fit(A, y)


# ------------------------------------------------------------------------ command line
def test_cli_fit_with_l1_equals_sklearn(tmp_path, client):
    from dsketch.cli import main

    rng = np.random.default_rng(15)
    A, y = _logistic_data(rng, n=800, d=10, k=3)
    store, out = str(tmp_path / "p.zarr"), str(tmp_path / "r.zarr")
    dsketch.write_problem(store, A, y)
    l1 = 0.03
    assert main(["fit", "--model", "logistic", "--data", store, "--out", out, "--param", "l2=0", "--l1", str(l1),
                 "--fit-intercept", "--tol", "1e-10", "--scheduler", client.scheduler.address]) == 0
    res = dsketch.load_result(out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        ref = SkLogistic(penalty="elasticnet", l1_ratio=1.0, solver="saga", C=1.0 / (y.size * l1), tol=1e-13,
                         max_iter=100_000).fit(A, y)
    _check("logistic", A, y, res, ref.coef_[0], ref.intercept_[0], l1, 0.0)


def test_cli_refuses_l1_given_twice(tmp_path, capsys):
    from dsketch.cli import main

    assert main(["fit", "--model", "logistic", "--data", str(tmp_path / "p.zarr"), "--out", str(tmp_path / "r.zarr"),
                 "--l1", "0.1", "--param", "l1=0.2"]) == 2
    assert "--l1" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:alphas is deprecated:DeprecationWarning")
def test_store_path_on_its_own_embedded_cluster_equals_glum(tmp_path):
    """A store's path starts one embedded cluster for all its fits (about 8 s)."""
    rng = np.random.default_rng(16)
    A, y = _logistic_data(rng, n=1000, d=12, k=3)
    store = str(tmp_path / "p.zarr")
    dsketch.write_problem(store, A, y)
    path = dsketch.fit_path(store, "logistic", l1_ratio=1.0, n_alphas=5, eps=1e-2, fit_intercept=True, solver=TIGHT)
    ref = glum.GeneralizedLinearRegressor(family="binomial", l1_ratio=1.0, alpha_search=True, alphas=path.alphas,
                                          gradient_tol=1e-12).fit(A, y)
    assert path.success
    np.testing.assert_allclose(path.coef[:, :-1], np.asarray(ref.coef_path_), atol=1e-8)
    np.testing.assert_allclose(path.coef[:, -1], np.asarray(ref.intercept_path_), atol=1e-8)


def test_cli_path_writes_sklearns_enet_path(tmp_path, client):
    """``dsketch path`` on a store: the .npz it writes holds scikit-learn's enet_path at the
    given alphas; an existing file is refused without --overwrite."""
    from sklearn.linear_model import enet_path

    from dsketch.cli import main

    rng = np.random.default_rng(12)
    A = rng.standard_normal((600, 10))
    y = A[:, :3] @ np.array([1.0, -2.0, 0.5]) + rng.standard_normal(600)
    store = str(tmp_path / "p.zarr")
    dsketch.write_problem(store, A, y)
    out = str(tmp_path / "path.npz")
    alphas = [0.5, 0.1, 0.02]
    argv = ["--quiet", "path", "--model", "least-squares", "--data", store, "--out", out, "--l1-ratio", "0.7",
            "--alphas", ",".join(map(str, alphas)), "--tol", "1e-12", "--scheduler", client.scheduler.address]
    assert main(argv) == 0
    saved = np.load(out)
    _, coefs, _ = enet_path(A, y, l1_ratio=0.7, alphas=alphas, tol=1e-14, max_iter=100_000)
    np.testing.assert_allclose(saved["alphas"], alphas)
    np.testing.assert_allclose(saved["coef"], coefs.T, atol=1e-7)
    assert list(saved["n_active"]) == [int(np.count_nonzero(c)) for c in coefs.T]
    assert main(argv) == 2  # exists: refused in one line before any fit
    assert main([*argv[:7], str(tmp_path / "path.txt"), *argv[8:]]) == 2


def test_zero_curvature_column_of_a_sample_never_reports_success_away_from_the_optimum():
    """A rare feature that the sampled rows miss has a zero row in the sampled curvature;
    the fit must move that coordinate anyway or report failure, never success elsewhere."""
    rng = np.random.default_rng(0)
    n, d = 4000, 6
    A = rng.normal(size=(n, d))
    A[:, 5] = 0.0
    A[rng.choice(n, 3, replace=False), 5] = 5.0
    b = A @ np.r_[1.0, -1.0, 0.5, 0.0, 0.0, 2.0] + rng.normal(size=n)
    ref = dsketch.fit((A, b), "least-squares", model_params={"l1": 1e-3}, curvature="exact")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = dsketch.fit((A, b), "least-squares", model_params={"l1": 1e-3},
                        curvature=dsketch.Curvature("uniform", size=40))
    assert ref.success
    assert not r.success or np.abs(r.x - ref.x).max() < 1e-6 * np.abs(ref.x).max()


def test_covariance_refuses_an_l1_fit(tmp_path):
    from dsketch.errors import InferenceError

    rng = np.random.default_rng(13)
    A, y = _logistic_data(rng, n=400, d=4, k=2)
    store = str(tmp_path / "p.zarr")
    dsketch.write_problem(store, A, y)
    res = dsketch.fit(store, "logistic", model_params={"l1": 0.01, "l2": 0.0}, fit_intercept=True)
    assert res.success
    with pytest.raises(InferenceError, match="L1 penalty"):
        dsketch.covariance(res, store)


# ------------------------------------------------------------------------ every GLM estimator
def _tweedie_objective(A, y, coef, icpt, sw, power, alpha, ratio):
    """glum's objective under the log link, written out: the weighted mean half unit
    deviance of Tweedie ``power`` plus the elastic net; and the smooth gradient in coef."""
    mu = np.exp(A @ coef + icpt)
    if power == 1:
        dev = 2 * (np.where(y > 0, y * np.log(np.where(y > 0, y, 1) / mu), 0) - y + mu)
    elif power == 2:
        dev = 2 * (np.log(mu / y) + y / mu - 1)
    else:
        dev = 2 * (np.maximum(y, 0) ** (2 - power) / ((1 - power) * (2 - power))
                   - y * mu ** (1 - power) / (1 - power) + mu ** (2 - power) / (2 - power))
    S = sw.sum()
    d1 = (mu - y) * mu ** (1 - power)  # d(dev/2)/d(eta)
    value = float(sw @ dev) / (2 * S) + alpha * (ratio * np.abs(coef).sum() + (1 - ratio) / 2 * coef @ coef)
    grad = A.T @ (sw * d1) / S + alpha * (1 - ratio) * coef
    return value, grad, float(sw @ d1) / S


def _family_data(rng, power, n=1500, d=15, k=4):
    A = rng.standard_normal((n, d)) * 0.5
    beta = np.zeros(d)
    beta[:k] = rng.uniform(-0.8, 0.8, k)
    mu = np.exp(A @ beta + 0.3)
    if power == 1:
        return A, rng.poisson(mu).astype(float)
    if power == 2:
        return A, mu * rng.gamma(2.0, 0.5, n)
    return A, mu * rng.gamma(2.0, 0.5, n) * (rng.random(n) < 0.7) / 0.7  # zeros and positive values


@pytest.mark.parametrize("name,power,family", [("PoissonRegressor", 1, "poisson"), ("GammaRegressor", 2, "gamma"),
                                               ("TweedieRegressor", 1.5, "tweedie")])
@pytest.mark.parametrize("ratio", [1.0, 0.5])
def test_every_glm_estimator_takes_l1_ratio_and_equals_glum(name, power, family, ratio):
    """The scikit-learn named estimators with glum's l1_ratio: glum's objective to 1e-6
    relative, the same active set, and the KKT conditions on a dense gradient."""
    from dsketch import estimators

    rng = np.random.default_rng(20 + int(2 * power))
    A, y = _family_data(rng, power)
    sw = rng.uniform(0.5, 2.0, y.size)
    alpha = 0.03
    kw = {"power": power, "link": "log"} if family == "tweedie" else {}
    est = getattr(estimators, name)(alpha=alpha, l1_ratio=ratio, tol=1e-10, **kw).fit(A, y, sample_weight=sw)
    assert est.fit_result_.success and est.fit_result_.info["solver"] == "prox-newton"
    ref = glum.GeneralizedLinearRegressor(family=family if family != "tweedie" else glum.TweedieDistribution(power),
                                          link="log", alpha=alpha, l1_ratio=ratio, gradient_tol=1e-12,
                                          max_iter=1000).fit(A, y, sample_weight=sw)
    F, g, g0 = _tweedie_objective(A, y, est.coef_, est.intercept_, sw, power, alpha, ratio)
    F_ref = _tweedie_objective(A, y, ref.coef_, ref.intercept_, sw, power, alpha, ratio)[0]
    assert F <= F_ref + 1e-6 * abs(F_ref) and abs(F - F_ref) <= 1e-6 * abs(F_ref)
    active = np.flatnonzero(est.coef_)
    np.testing.assert_array_equal(active, np.flatnonzero(np.abs(ref.coef_) > 1e-10))
    assert 0 < active.size < A.shape[1]
    l1, zero = alpha * ratio, est.coef_ == 0.0
    assert np.all(np.abs(g[zero]) <= l1 * (1 + 1e-6))
    np.testing.assert_allclose(g[~zero], -l1 * np.sign(est.coef_[~zero]), atol=1e-6 * l1)
    assert abs(g0) <= 1e-7


@pytest.mark.parametrize("name", ["PoissonRegressor", "GammaRegressor", "TweedieRegressor"])
@pytest.mark.parametrize("bad", [-0.1, 1.5, "a", True])
def test_a_bad_l1_ratio_is_refused_by_every_glm_estimator(name, bad):
    from dsketch import estimators

    A, y = _family_data(np.random.default_rng(30), 2, n=40, d=3, k=1)
    with pytest.raises(InvalidParameterError, match="l1_ratio"):
        getattr(estimators, name)(l1_ratio=bad).fit(A, y)
