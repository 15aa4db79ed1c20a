"""Standard errors of the GLMs, each compared with statsmodels (the independent reference).

Stores are written with small chunks and read in several small streamed blocks, so cluster
ids span block boundaries and the inference pass never holds ``A`` whole. The intercept is
the last coefficient in dsketch, so the statsmodels design gets its constant last too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

import dsketch
from dsketch.engine import tasks
from dsketch.engine.core import Engine
from dsketch.errors import DSketchError, InferenceError

sm = pytest.importorskip("statsmodels.api")
sw = pytest.importorskip("statsmodels.stats.sandwich_covariance")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RTOL = 1e-6
N, D, BLOCK, CHUNK = 3000, 4, 384, 128
#: Largest relative difference from statsmodels seen per test (printed with -s).
SEEN: dict[str, float] = {}


def _close(name: str, ours, ref, rtol: float = RTOL) -> None:
    ours, ref = np.asarray(ours), np.asarray(ref)
    diff = float(np.max(np.abs(ours - ref) / np.maximum(np.abs(ref), 1e-300)))
    SEEN[name] = max(SEEN.get(name, 0.0), diff)
    np.testing.assert_allclose(ours, ref, rtol=rtol, err_msg=name)


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    for name, diff in sorted(SEEN.items()):
        print(f"largest relative difference from statsmodels: {name}: {diff:.2e}")


def _design(rng, sparse: bool):
    X = rng.standard_normal((N, D))
    X[:, 0] *= 2.0
    if sparse:
        X = np.where(rng.random((N, D)) < 0.5, X, 0.0)
    return (sp.csr_matrix(X) if sparse else X), X


def _groups(rng):
    """43 clusters in random order: every cluster has rows in many blocks."""
    return rng.integers(0, 43, N)


def _with_const(X):
    return np.column_stack([X, np.ones(X.shape[0])])


def _fit(spec, model, client, **kw):
    res = dsketch.fit(spec, model, model_params={"l2": 0.0}, fit_intercept=True,
                      solver=dsketch.Solver(tol=1e-12, max_iter=100), cluster=dsketch.Cluster(client, block_rows=BLOCK),
                      **kw)
    assert res.success, res.message
    return res


def _sm_glm(y, Xc, family, cov_type="nonrobust", groups=None, **weights):
    kw = {"cov_kwds": {"groups": groups}} if groups is not None else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels: "cov_type not fully supported with var_weights"
        return sm.GLM(y, Xc, family=family, **weights).fit(cov_type=cov_type, tol=1e-13, **kw)


# ------------------------------------------------------------------------------ Poisson
@pytest.fixture(scope="module", params=[False, True], ids=["dense", "sparse"])
def poisson(request, client, tmp_path_factory):
    rng = np.random.default_rng(11 + request.param)
    A, X = _design(rng, request.param)
    y = rng.poisson(np.exp(X @ np.array([0.2, -0.3, 0.1, 0.05]) + 0.3)).astype(float)
    g = _groups(rng)
    spec = dsketch.write_problem(tmp_path_factory.mktemp("pois") / "p.zarr", A, y, extra={"cluster": g},
                                 chunk_rows=CHUNK)
    return spec, _fit(spec, "poisson", client), _with_const(X), y, g, "sparse" if request.param else "dense"


@pytest.mark.parametrize("cov_type", ["nonrobust", "HC0", "HC1", "cluster"])
def test_poisson_covariances_equal_statsmodels(poisson, client, cov_type):
    spec, res, Xc, y, g, kind = poisson
    groups = "cluster" if cov_type == "cluster" else None
    inf = dsketch.covariance(res, spec, cov_type=cov_type, groups=groups, cluster=dsketch.Cluster(client, block_rows=BLOCK))
    if cov_type == "HC1":
        # statsmodels' GLM returns its HC0 for cov_type="HC1" (statsmodels issues #2828, #7798);
        # its own sandwich with the n / (n - p) correction is the HC1 reference
        ref = _sm_glm(y, Xc, sm.families.Poisson())
        ref_cov = sw.cov_white_simple(ref, use_correction=True)
    else:
        ref = _sm_glm(y, Xc, sm.families.Poisson(), cov_type, g if groups else None)
        ref_cov = ref.cov_params()
    name = f"poisson {kind} {cov_type}"
    _close(name + " params", res.x, ref.params)
    _close(name + " cov_params", inf.cov_params, ref_cov)
    _close(name + " bse", inf.bse, np.sqrt(np.diag(ref_cov)))
    assert inf.cov_type == cov_type and inf.nobs == N
    if cov_type == "cluster":
        assert inf.n_groups == np.unique(g).size
    if cov_type != "HC1":
        _close(name + " pvalues", inf.pvalues, ref.pvalues, rtol=1e-5)
        _close(name + " conf_int", inf.conf_int(), ref.conf_int(), rtol=1e-6)
        _close(name + " conf_int 0.1", inf.conf_int(0.1), ref.conf_int(alpha=0.1), rtol=1e-6)
        _close(name + " z", inf.zvalues, ref.tvalues)


def test_the_pass_streams_small_blocks(poisson, client, monkeypatch):
    """One pass over many streamed blocks (no persisted copy of A), and every row in the summary."""
    spec, res, Xc, y, g, kind = poisson
    seen = {}
    original = Engine.inference_sums

    def spy(self, model, x, groups=None):
        seen["blocks"] = self.n_blocks
        seen["streamed"] = not self.persist and all(isinstance(s, tasks.Source) for s in self._sources)
        seen["largest"] = max(b - a for a, b in self.bounds)
        out = original(self, model, x, groups)
        seen["passes"] = self.n_passes
        return out

    monkeypatch.setattr(Engine, "inference_sums", spy)
    inf = dsketch.covariance(res, spec, cov_type="HC0", cluster=dsketch.Cluster(client, block_rows=BLOCK),
                             feature_names=["age", "dose", "x2", "x3"])
    assert seen == {"blocks": -(-N // BLOCK), "streamed": True, "largest": BLOCK, "passes": 1}
    assert res.inference is inf
    ref = _sm_glm(y, Xc, sm.families.Poisson(), "HC0")
    _close(f"poisson {kind} HC0 (spy)", inf.bse, ref.bse)
    text = res.summary()
    lines = text.splitlines()
    assert any("std err" in ln and "P>|z|" in ln and "[0.025" in ln and "0.975]" in ln for ln in lines)
    for name, coef, se in zip(["age", "dose", "x2", "x3", "intercept"], inf.params, inf.bse, strict=True):
        row = [ln for ln in lines if ln.split()[:1] == [name]]
        assert len(row) == 1, text
        vals = [float(v) for v in row[0].split()[1:]]
        assert vals[0] == pytest.approx(coef, rel=1e-4) and vals[1] == pytest.approx(se, rel=1e-4)


def test_inference_is_saved_and_loaded(poisson, client, tmp_path):
    spec, res, Xc, y, g, _ = poisson
    inf = dsketch.covariance(res, spec, cov_type="cluster", groups="cluster", cluster=dsketch.Cluster(client, block_rows=BLOCK))
    dsketch.save_result(res, str(tmp_path / "r.zarr"))
    back = dsketch.load_result(str(tmp_path / "r.zarr"))
    assert back.inference.cov_type == "cluster" and back.inference.names == inf.names
    np.testing.assert_array_equal(back.inference.cov_params, inf.cov_params)
    assert back.summary() == res.summary()


# ------------------------------------------------------------------------------ logistic, least squares
@pytest.mark.parametrize("cov_type", ["nonrobust", "HC1"])
def test_logistic_equals_statsmodels(client, tmp_path, cov_type):
    rng = np.random.default_rng(21)
    A, X = _design(rng, sparse=False)
    y = (rng.random(N) < 1 / (1 + np.exp(-(X @ np.array([0.5, -0.4, 0.3, 0.0]) - 0.2)))).astype(float)
    spec = dsketch.write_problem(tmp_path / "p.zarr", A, y, chunk_rows=CHUNK)
    res = _fit(spec, "logistic", client)
    inf = dsketch.covariance(res, spec, cov_type=cov_type, cluster=dsketch.Cluster(client, block_rows=BLOCK))
    ref = _sm_glm(y, _with_const(X), sm.families.Binomial())
    ref_cov = ref.cov_params() if cov_type == "nonrobust" else sw.cov_white_simple(ref, use_correction=True)
    _close(f"logistic {cov_type} cov_params", inf.cov_params, ref_cov)
    _close(f"logistic {cov_type} bse", inf.bse, np.sqrt(np.diag(ref_cov)))
    if cov_type == "nonrobust":
        _close("logistic nonrobust pvalues", inf.pvalues, ref.pvalues, rtol=1e-5)
        assert inf.scale == 1.0


@pytest.mark.parametrize("cov_type", ["nonrobust", "HC1"])
def test_least_squares_equals_statsmodels(client, tmp_path, cov_type):
    """Estimated dispersion: Pearson's chi2 / (n - p), statsmodels' Gaussian scale; HC1 against
    statsmodels' OLS (whose HC1 has the n / (n - p) correction)."""
    rng = np.random.default_rng(31)
    A, X = _design(rng, sparse=True)
    y = X @ np.array([1.0, -2.0, 0.5, 0.0]) + 3.0 + rng.standard_normal(N) * (1.0 + np.abs(X[:, 0]))
    spec = dsketch.write_problem(tmp_path / "p.zarr", A, y, chunk_rows=CHUNK)
    res = _fit(spec, "least-squares", client)
    inf = dsketch.covariance(res, spec, cov_type=cov_type, cluster=dsketch.Cluster(client, block_rows=BLOCK))
    Xc = _with_const(X)
    if cov_type == "nonrobust":
        ref = _sm_glm(y, Xc, sm.families.Gaussian())
        _close("least-squares scale", inf.scale, ref.scale)
    else:
        ref = sm.OLS(y, Xc).fit(cov_type="HC1")
    _close(f"least-squares {cov_type} cov_params", inf.cov_params, ref.cov_params())
    _close(f"least-squares {cov_type} bse", inf.bse, ref.bse)


# ------------------------------------------------------------------------------ sample weights
@pytest.mark.parametrize("cov_type", ["nonrobust", "HC0", "HC1", "cluster"])
def test_weighted_least_squares_equals_var_weights(client, tmp_path, cov_type):
    """dsketch's sample weights in the covariance are statsmodels' var_weights: the weight scales
    each row's score and log-likelihood, the residual df is n - p with n the rows."""
    rng = np.random.default_rng(41)
    A, X = _design(rng, sparse=False)
    s = rng.uniform(0.2, 3.0, N)
    y = X @ np.array([1.0, 0.5, -0.5, 0.2]) - 1.0 + rng.standard_normal(N) / np.sqrt(s) * (1 + 0.5 * np.abs(X[:, 1]))
    g = _groups(rng)
    spec = dsketch.write_problem(tmp_path / "p.zarr", A, y, sample_weight=s, extra={"cl": g}, chunk_rows=CHUNK)
    res = _fit(spec, "least-squares", client)
    groups = "cl" if cov_type == "cluster" else None
    inf = dsketch.covariance(res, spec, cov_type=cov_type, groups=groups, cluster=dsketch.Cluster(client, block_rows=BLOCK))
    Xc = _with_const(X)
    if cov_type == "HC1":
        ref_cov = sw.cov_white_simple(_sm_glm(y, Xc, sm.families.Gaussian(), var_weights=s), use_correction=True)
    else:
        ref = _sm_glm(y, Xc, sm.families.Gaussian(), cov_type, g if groups else None, var_weights=s)
        ref_cov = ref.cov_params()
        _close(f"weighted least-squares {cov_type} params", res.x, ref.params)
    _close(f"weighted least-squares {cov_type} cov_params", inf.cov_params, ref_cov)


def test_weighted_poisson_with_offset_equals_statsmodels(client, tmp_path):
    """With a fixed dispersion the nonrobust covariance is the same for freq_weights and
    var_weights (the weighted Fisher information); both are checked, and HC0 against
    var_weights. The store's offsets are statsmodels' offset."""
    rng = np.random.default_rng(51)
    A, X = _design(rng, sparse=True)
    s = rng.integers(1, 4, N).astype(float)
    off = np.log(rng.uniform(0.5, 3.0, N))
    y = rng.poisson(np.exp(X @ np.array([0.1, 0.2, -0.1, 0.3]) + off)).astype(float)
    spec = dsketch.write_problem(tmp_path / "p.zarr", A, y, sample_weight=s, offset=off, chunk_rows=CHUNK)
    res = _fit(spec, "poisson", client)
    inf = dsketch.covariance(res, spec, cluster=dsketch.Cluster(client, block_rows=BLOCK))
    for kind in ("var_weights", "freq_weights"):
        ref = _sm_glm(y, _with_const(X), sm.families.Poisson(), offset=off, **{kind: s})
        _close(f"weighted poisson nonrobust ({kind}) bse", inf.bse, ref.bse)
    hc0 = dsketch.covariance(res, spec, cov_type="HC0", cluster=dsketch.Cluster(client, block_rows=BLOCK))
    ref = _sm_glm(y, _with_const(X), sm.families.Poisson(), "HC0", offset=off, var_weights=s)
    _close("weighted poisson HC0 (var_weights) cov_params", hc0.cov_params, ref.cov_params())


def test_collinear_columns_are_refused_but_scales_are_not(client, tmp_path):
    rng = np.random.default_rng(81)
    X = rng.standard_normal((800, 3))
    y = rng.poisson(np.exp(0.2 * X[:, 0])).astype(float)
    wide = X * np.array([1e-4, 1.0, 1e5])  # very different scales, not collinear
    spec = dsketch.write_problem(tmp_path / "w.zarr", wide, y)
    res = _fit(spec, "poisson", client)
    ref = _sm_glm(y, _with_const(wide), sm.families.Poisson())
    _close("poisson wide-scale columns bse", dsketch.covariance(res, spec, cluster=client).bse, ref.bse, rtol=1e-5)
    # a repeated column: H is singular at any coefficients (those of a fit to X are used)
    res = _fit(dsketch.write_problem(tmp_path / "x.zarr", X, y), "poisson", client)
    spec = dsketch.write_problem(tmp_path / "d.zarr", np.column_stack([X[:, :2], X[:, 0]]), y)
    with pytest.raises(InferenceError, match="singular"):
        dsketch.covariance(res, spec, cluster=client)


# ------------------------------------------------------------------------------ errors
def test_user_errors_are_dsketch_errors(poisson, client, tmp_path):
    spec, res, *_ = poisson
    cases = [
        ({"cov_type": "HC3"}, "unknown cov_type"),
        ({"cov_type": "cluster"}, "needs groups"),
        ({"cov_type": "cluster", "groups": "nope"}, "not in store"),
        ({"cov_type": "HC0", "groups": "cluster"}, "only used with"),
    ]
    for kwargs, match in cases:
        with pytest.raises(InferenceError, match=match):
            dsketch.covariance(res, spec, cluster=client, **kwargs)
    # the cluster is one grouped setting, as in fit; options of the iteration have no effect
    from dsketch.errors import RemovedOptionError, UnusedOptionError

    with pytest.raises(RemovedOptionError, match=r"client= is now cluster"):
        dsketch.covariance(res, spec, client=client)
    with pytest.raises(RemovedOptionError, match=r"block_rows= is now dsketch.Cluster\(block_rows"):
        dsketch.covariance(res, spec, block_rows=100)
    with pytest.raises(UnusedOptionError, match="persist has no effect"):
        dsketch.covariance(res, spec, cluster=dsketch.Cluster(client, persist=True))
    rng = np.random.default_rng(0)
    fspec = dsketch.write_problem(tmp_path / "f.zarr", rng.standard_normal((50, 2)), rng.poisson(1.0, 50),
                                  extra={"g": rng.uniform(size=50)})
    fres = dsketch.fit(fspec, "poisson", fit_intercept=True, cluster=client)
    with pytest.raises(InferenceError, match="integer"):
        dsketch.covariance(fres, fspec, cov_type="cluster", groups="g", cluster=client)
    with pytest.warns(dsketch.errors.ConvergenceWarning):
        failed = dsketch.fit(fspec, "poisson", solver=dsketch.Solver(max_iter=1, tol=1e-15), cluster=client)
    assert not failed.success
    with pytest.raises(InferenceError, match="did not succeed"):
        dsketch.covariance(failed, fspec, cluster=client)
    with pytest.raises(InferenceError, match="no standard errors were computed"):
        failed.summary()
    other = dsketch.FitResult(x=np.zeros(2), fun=0.0, success=True, status=dsketch.Status.CONVERGED_GRADIENT,
                              message="", nit=1, n_passes=1, wall_time=0.0, grad_norm=0.0,
                              info={"model": "softmax"})
    with pytest.raises(InferenceError, match="GLMs"):
        dsketch.covariance(other, fspec, cluster=client)
    assert issubclass(InferenceError, DSketchError)


# ------------------------------------------------------------------------------ CLI
def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)}
    return subprocess.run([sys.executable, "-m", "dsketch.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_cli_fit_cov_type_and_summary(client, tmp_path):
    rng = np.random.default_rng(61)
    n = 600
    X = rng.standard_normal((n, 3))
    y = rng.poisson(np.exp(X @ np.array([0.3, -0.2, 0.1]) + 0.5)).astype(float)
    g = rng.integers(0, 17, n)
    store, out = str(tmp_path / "p.zarr"), str(tmp_path / "r.zarr")
    dsketch.write_problem(store, X, y, extra={"grp": g}, chunk_rows=100)
    addr = client.scheduler.address
    proc = _cli("fit", "--model", "poisson", "--fit-intercept", "--param", "l2=0", "--tol", "1e-12",
                "--cov-type", "HC1", "--data", store, "--out", out, "--block-rows", "200", "--scheduler", addr)
    assert proc.returncode == 0, proc.stderr
    assert "std err" in proc.stdout and "intercept" in proc.stdout and "HC1" in proc.stdout
    res = dsketch.load_result(out)
    ref = _sm_glm(y, _with_const(X), sm.families.Poisson())
    _close("cli HC1 bse", res.inference.bse, np.sqrt(np.diag(sw.cov_white_simple(ref, use_correction=True))))
    # an existing result: the stored table, then a cluster table computed and saved
    proc = _cli("summary", "--result", out)
    assert proc.returncode == 0 and "HC1" in proc.stdout, proc.stderr
    proc = _cli("summary", "--result", out, "--cov-type", "cluster", "--groups", "grp", "--save",
                "--scheduler", addr)
    assert proc.returncode == 0, proc.stderr
    back = dsketch.load_result(out)
    assert back.inference.cov_type == "cluster"
    _close("cli cluster bse", back.inference.bse,
           _sm_glm(y, _with_const(X), sm.families.Poisson(), "cluster", g).bse)
    # errors: one line, exit 2, before any fit
    for args, needle in [(("--cov-type", "HC9"), "unknown cov_type"),
                         (("--cov-type", "cluster", "--groups", "missing"), "missing")]:
        proc = _cli("fit", "--model", "poisson", "--data", store, "--out", str(tmp_path / "x.zarr"), *args,
                    "--scheduler", addr)
        err = proc.stderr.strip()
        assert proc.returncode == 2 and len(err.splitlines()) == 1 and needle in err, (proc.returncode, err)
        assert not os.path.exists(tmp_path / "x.zarr")
    proc = _cli("fit", "--model", "softmax", "--data", store, "--out", str(tmp_path / "x.zarr"),
                "--cov-type", "HC0", "--scheduler", addr)
    assert proc.returncode == 2 and "GLMs" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_estimator_fit_result_gives_the_same_table(client, tmp_path):
    """The documented route for the estimators: fit_result_ and the store it was fitted to."""
    from dsketch.estimators import PoissonRegressor

    rng = np.random.default_rng(71)
    X = rng.standard_normal((1500, 3))
    y = rng.poisson(np.exp(X @ np.array([0.2, 0.1, -0.3]) + 0.1)).astype(float)
    store = str(tmp_path / "counts.zarr")
    dsketch.write_problem(store, X, y, chunk_rows=256)
    est = PoissonRegressor(alpha=0.0, tol=1e-12, sketch="exact", client=client).fit(store)
    inf = dsketch.covariance(est.fit_result_, store, cov_type="HC0", cluster=client)
    ref = _sm_glm(y, _with_const(X), sm.families.Poisson(), "HC0")
    _close("estimator poisson HC0 bse", inf.bse, ref.bse)
    assert "intercept" in est.fit_result_.summary()


@pytest.mark.parametrize("cov_type", ["nonrobust", "HC0"])
@pytest.mark.parametrize(("name", "params"), [("gamma", {}), ("tweedie", {"power": 1.5}),
                                              ("negative-binomial", {"theta": 2.0})])
def test_log_link_families_equal_statsmodels(tmp_path, client, name, params, cov_type):
    """Non-canonical links: the model-based covariance is the inverse of the expected (Fisher)
    information, as in statsmodels; the sandwich's bread is the curvature the fit uses."""
    import warnings

    import statsmodels.api as sm

    rng = np.random.default_rng(7)
    n = 3000
    X = rng.standard_normal((n, 3))
    mu = np.exp(0.3 * X[:, 0] - 0.2 * X[:, 1] + 0.5)
    # negative binomial: glum's theta is the alpha of V(mu) = mu + alpha mu^2 (statsmodels' alpha)
    y = rng.gamma(2.0, mu / 2.0) if name != "negative-binomial" else rng.negative_binomial(0.5, 0.5 / (0.5 + mu))
    y = np.asarray(y, dtype=float)
    fam = {"gamma": sm.families.Gamma(sm.families.links.Log()),
           "tweedie": sm.families.Tweedie(var_power=1.5, link=sm.families.links.Log()),
           "negative-binomial": sm.families.NegativeBinomial(sm.families.links.Log(), alpha=2.0)}[name]
    spec = dsketch.write_problem(tmp_path / "p.zarr", X, y, chunk_rows=512)
    res = dsketch.fit(spec, name, model_params={"l2": 0.0, **params}, fit_intercept=True, curvature="exact",
                      solver=dsketch.Solver(tol=1e-12), cluster=client)
    inf = dsketch.covariance(res, spec, cov_type=cov_type, cluster=dsketch.Cluster(client, block_rows=700))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = sm.GLM(y, sm.add_constant(X, prepend=False), family=fam).fit(tol=1e-13, cov_type=cov_type)
    np.testing.assert_allclose(res.x, ref.params, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(inf.bse, ref.bse, rtol=1e-6)
