"""Solver accuracy against scipy, determinism, stopping behaviour and pass counts."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.optimize as so
import scipy.sparse as sp
from scipy.special import expit

import dsketch
from dsketch.errors import ConvergenceWarning
from dsketch.solvers.result import Status
from dsketch.store import write_problem


def _design(rng, n, d, sparse):
    if sparse:
        A = sp.random(n, d, density=0.3, random_state=rng, format="csr")
        A.data = rng.standard_normal(A.nnz)
        return A
    return rng.standard_normal((n, d)) / np.sqrt(d)


# ---------------------------------------------------------------- independent references
def _logistic_reference(A, y, l2):
    """scipy trust-ncg on a hand-written L2 logistic objective (mean form)."""
    A = A.toarray() if sp.issparse(A) else A
    n = A.shape[0]

    def fun(x):
        z = A @ x
        return np.mean(np.logaddexp(0, z) - y * z) + 0.5 * l2 * x @ x

    def jac(x):
        return A.T @ (expit(A @ x) - y) / n + l2 * x

    def hess(x):
        s = expit(A @ x)
        return (A.T * (s * (1 - s))) @ A / n + l2 * np.eye(A.shape[1])

    res = so.minimize(fun, np.zeros(A.shape[1]), jac=jac, hess=hess, method="trust-exact",
                      options={"gtol": 1e-15, "maxiter": 500})
    return res.x


def _softmax_reference(A, b, w):
    """scipy trust-ncg on a hand-written regularised softmax objective."""
    A = A.toarray() if sp.issparse(A) else A
    scale = float(A.shape[0]) ** 2  # the data term is O(1/n): rescale for scipy's absolute gtol

    def parts(x):
        v = A @ x
        e = np.exp(v - v.max())
        f = e / e.sum()
        return v, f

    def fun(x):
        v, f = parts(x)
        return scale * (0.5 * np.sum((f - b) ** 2) + 0.5 * np.sum((w * v) ** 2))

    def jac(x):
        v, f = parts(x)
        c = f - b
        # d/dv of 0.5||f - b||^2 with J_f = diag(f) - f f^T
        return scale * (A.T @ (f * c - f * (f @ c) + w**2 * v))

    def hessp(x, p):
        h = 1e-6 * max(1.0, np.linalg.norm(x)) / max(np.linalg.norm(p), 1e-300)
        return (jac(x + h * p) - jac(x - h * p)) / (2 * h)

    x = so.minimize(fun, np.zeros(A.shape[1]), jac=jac, method="BFGS", options={"gtol": 1e-12}).x
    res = so.minimize(fun, x, jac=jac, hessp=hessp, method="trust-ncg",
                      options={"gtol": 1e-13, "maxiter": 200})
    return res.x


@pytest.fixture(scope="module", params=["dense", "sparse"])
def logistic_store(request, tmp_path_factory):
    rng = np.random.default_rng(11)
    n, d = 3000, 8
    A = _design(rng, n, d, request.param == "sparse")
    xt = rng.standard_normal(d)
    y = (rng.random(n) < expit(np.asarray(A @ xt).ravel())).astype(float)
    path = str(tmp_path_factory.mktemp("logit") / "p.zarr")
    write_problem(path, A, y, chunk_rows=256)
    return path, A, y


@pytest.fixture(scope="module", params=["dense", "sparse"])
def softmax_store(request, tmp_path_factory):
    rng = np.random.default_rng(12)
    n, d = 2000, 6
    A = _design(rng, n, d, request.param == "sparse")
    xt = rng.standard_normal(d)
    v = np.asarray(A @ xt).ravel()
    f = np.exp(v - v.max()) / np.exp(v - v.max()).sum()
    b = f * (1 + 0.05 * rng.standard_normal(n))
    w = np.full(n, 0.3 / n)
    path = str(tmp_path_factory.mktemp("softmax") / "p.zarr")
    write_problem(path, A, b, w, chunk_rows=256)
    return path, A, b, w


def _rel(x, ref):
    return np.linalg.norm(x - ref) / np.linalg.norm(ref)


def test_logistic_exact_newton_matches_scipy(client, logistic_store):
    path, A, y = logistic_store
    res = dsketch.fit(path, "logistic", model_params={"l2": 1e-3}, solver=dsketch.Solver("newton", tol=1e-13),
                      cluster=dsketch.Cluster(client, block_rows=512))
    ref = _logistic_reference(A, y, 1e-3)
    assert res.success, res.message
    assert _rel(res.x, ref) < 1e-8
    # exact Newton with fused passes: the init pass and the first curvature pass, then one
    # pass per iteration (A p, trial losses and the next curvature together), all steps full
    assert np.all(res.history["step_size"][:-1] == 1.0)
    assert res.n_passes == res.nit + 2
    assert res.nit <= 12
    two = dsketch.fit(path, "logistic", model_params={"l2": 1e-3}, solver=dsketch.Solver("newton", tol=1e-13),
                      cluster=dsketch.Cluster(client, block_rows=512, fused=False))
    # the two-pass iteration: init, then A p and the curvature pass per iteration, then the last
    assert two.n_passes == 2 * two.nit + 2
    assert _rel(two.x, ref) < 1e-8 and two.nit == res.nit


@pytest.mark.parametrize(("sketch", "solver"), [("leverage", "newton"), ("leverage", "newton-cg"),
                                                pytest.param("rownorm", "newton", marks=pytest.mark.slow)])
def test_fused_passes_reach_the_same_optimum_in_fewer_passes(client, logistic_store, sketch, solver):
    """Fused iterations (leverage scores one step old) against the two-pass iteration."""
    path, A, y = logistic_store
    ref = _logistic_reference(A, y, 1e-3)
    runs = {f: dsketch.fit(path, "logistic", model_params={"l2": 1e-3},
                           solver=dsketch.Solver(solver, tol=1e-12),
                           cluster=dsketch.Cluster(client, block_rows=512, fused=f),
                           curvature=dsketch.Curvature(sketch, size=400))
            for f in (True, False)}
    for res in runs.values():
        assert res.success, res.message
        assert _rel(res.x, ref) < 1e-8
    fused, two = runs[True], runs[False]
    assert fused.n_passes < two.n_passes
    if sketch == "leverage" and solver == "newton":
        # two-pass: init + (leverage pass, curvature, A p) per iteration + the last two;
        # fused: init + leverage + curvature, then one pass per iteration with a full step
        assert two.n_passes == 3 * two.nit + 3
        full = int(np.sum(fused.history["step_size"][:-1] == 1.0))
        assert fused.n_passes <= 3 + fused.nit + 3 * (fused.nit - full)


@pytest.mark.parametrize("sketch", ["leverage", "uniform", "countsketch"])
def test_logistic_sketched_newton_matches_scipy(client, logistic_store, sketch):
    path, A, y = logistic_store
    res = dsketch.fit(path, "logistic", model_params={"l2": 1e-3},
                      curvature=dsketch.Curvature(sketch, size=1000), solver=dsketch.Solver(tol=1e-12, max_iter=100),
                      cluster=dsketch.Cluster(client, block_rows=512))
    ref = _logistic_reference(A, y, 1e-3)
    assert res.success, res.message
    assert _rel(res.x, ref) < 1e-8


@pytest.mark.parametrize("sketch", ["exact", "leverage"])
def test_softmax_matches_scipy(client, softmax_store, sketch):
    path, A, b, w = softmax_store
    res = dsketch.fit(path, "softmax",
                      curvature=dsketch.Curvature(sketch, size=None if sketch == "exact" else 800),
                      solver=dsketch.Solver(tol=1e-12, max_iter=100), cluster=dsketch.Cluster(client, block_rows=300))
    ref = _softmax_reference(A, b, w)
    assert res.success, res.message
    assert _rel(res.x, ref) < 1e-8


def test_seeded_fit_identical_across_chunkings_and_workers(client, client1, tmp_path):
    rng = np.random.default_rng(5)
    n, d = 4000, 7
    A = _design(rng, n, d, True)
    y = (rng.random(n) < expit(np.asarray(A @ rng.standard_normal(d)).ravel())).astype(float)
    paths = []
    for chunk in (128, 1024):
        p = str(tmp_path / f"c{chunk}.zarr")
        write_problem(p, A, y, chunk_rows=chunk)
        paths.append(p)
    kw = dict(model_params={"l2": 1e-3}, curvature=dsketch.Curvature("leverage", size=300), seed=42,
              solver=dsketch.Solver(max_iter=6, tol=0.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        r1 = dsketch.fit(paths[0], "logistic", cluster=dsketch.Cluster(client, block_rows=1000), **kw)
        r2 = dsketch.fit(paths[1], "logistic", cluster=dsketch.Cluster(client1, block_rows=1000), **kw)
        r3 = dsketch.fit(paths[1], "logistic", cluster=dsketch.Cluster(client, block_rows=1000, persist=True), **kw)
        # a different row blocking: the same rows are sampled, sums differ only by rounding
        r4 = dsketch.fit(paths[0], "logistic", cluster=dsketch.Cluster(client, block_rows=333), **kw)
        # another seed gives a different sketch
        r5 = dsketch.fit(paths[0], "logistic", cluster=dsketch.Cluster(client, block_rows=1000), **{**kw, "seed": 43})
    np.testing.assert_array_equal(r1.x, r2.x)
    np.testing.assert_array_equal(r1.x, r3.x)
    np.testing.assert_array_equal(r1.history["sketch_rows"], r4.history["sketch_rows"])
    np.testing.assert_allclose(r1.x, r4.x, rtol=1e-9)
    assert not np.array_equal(r1.history["sketch_rows"], r5.history["sketch_rows"])


def test_max_iter_warns_and_fails(client, logistic_store):
    path = logistic_store[0]
    with pytest.warns(ConvergenceWarning, match="max_iter"):
        res = dsketch.fit(path, "logistic", solver=dsketch.Solver(max_iter=1, tol=1e-14), cluster=client)
    assert not res.success
    assert res.status is Status.MAX_ITER
    assert res.nit == 1


def test_callback_stop_iteration(client, logistic_store):
    path = logistic_store[0]
    seen = []

    def cb(state):
        seen.append(state.iteration)
        assert np.isfinite(state.grad_norm) and state.n_passes > 0
        if state.iteration == 2:
            raise StopIteration

    res = dsketch.fit(path, "logistic", solver=dsketch.Solver(tol=1e-14), cluster=client, callback=cb)
    assert res.status is Status.CALLBACK_STOP
    assert seen == [1, 2]
    assert res.nit == 2


def test_result_roundtrip(client, logistic_store, tmp_path):
    res = dsketch.fit(logistic_store[0], "logistic", cluster=client)
    out = str(tmp_path / "r.zarr")
    dsketch.save_result(res, out)
    back = dsketch.load_result(out)
    np.testing.assert_array_equal(back.x, res.x)
    assert back.status is res.status and back.nit == res.nit and back.fun == res.fun
    for k, v in res.history.items():
        np.testing.assert_array_equal(back.history[k], v)
    assert back.info["model"] == "logistic"


def test_bad_arguments(client, logistic_store):
    path = logistic_store[0]
    with pytest.raises(ValueError, match="unknown solver"):
        dsketch.fit(path, "logistic", solver="sgd", cluster=client)
    with pytest.raises(ValueError, match="x0 must have shape"):
        dsketch.fit(path, "logistic", x0=np.zeros(3), cluster=client)
    with pytest.raises(ValueError, match="tol"):
        dsketch.fit(path, "logistic", solver=dsketch.Solver(tol=-1.0), cluster=client)
    with pytest.raises(ValueError):
        dsketch.fit(path, "no-such-model", cluster=client)
    with pytest.raises(ValueError):
        dsketch.fit(path, "logistic", curvature="no-such-sketch", cluster=client)


def test_targets_outside_domain(client, tmp_path):
    rng = np.random.default_rng(0)
    A = rng.standard_normal((50, 3))
    path = str(tmp_path / "bad.zarr")
    write_problem(path, A, rng.standard_normal(50))
    with pytest.raises(ValueError, match="rows"):
        dsketch.fit(path, "logistic", cluster=client)


def test_gradient_descent_baseline(client, logistic_store):
    path, A, y = logistic_store
    ref = _logistic_reference(A, y, 1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = dsketch.fit(path, "logistic", model_params={"l2": 1e-3},
                          solver=dsketch.Solver("gd", max_iter=60, tol=1e-12), cluster=client)
    loss = res.history["loss"]
    # Armijo: monotone decrease, up to the documented rounding slack of 16 eps |L|
    assert np.all(np.diff(loss) <= 16 * np.finfo(float).eps * np.abs(loss[:-1]))
    assert np.isnan(res.history["newton_decrement"]).all()
    assert res.info["sketch"] == "none"
    # first-order: far slower than Newton, but heading to the same optimum
    assert _rel(res.x, ref) < 0.05
    newton = dsketch.fit(path, "logistic", model_params={"l2": 1e-3}, solver=dsketch.Solver(max_iter=60),
                         cluster=client)
    assert newton.nit < res.nit


def test_softmax_initial_point_recovers_noise_free_plant(client, tmp_path):
    """With b = f(A x_p) exactly, log b = A x_p - log(alpha): the log-linear start is x_p."""
    rng = np.random.default_rng(9)
    n, d = 5000, 6
    A = _design(rng, n, d, True)
    xp = rng.standard_normal(d)
    v = np.asarray(A @ xp).ravel()
    b = np.exp(v - v.max()) / np.exp(v - v.max()).sum()
    path = str(tmp_path / "p.zarr")
    write_problem(path, A, b, np.full(n, 0.3 / n))
    x0 = dsketch.initial_point(path, "softmax", cluster=dsketch.Cluster(client, block_rows=777))
    np.testing.assert_allclose(x0, xp, rtol=1e-8, atol=1e-8)
    # a GLM without an intercept has no initialiser (and refuses the softmax store's w)
    plain = str(tmp_path / "q.zarr")
    write_problem(plain, A, (b > np.median(b)).astype(float))
    np.testing.assert_array_equal(dsketch.initial_point(plain, "logistic", cluster=client), np.zeros(d))


@pytest.mark.parametrize(("model", "phi"), [
    ("resnet-softmax", lambda v: np.exp(v) + v),
    ("softmax-relu", lambda v: np.exp(np.maximum(v, 0.0))),
])
def test_normalised_family_fits_match_scipy(client, tmp_path, model, phi):
    """Engine fits of the other normalised-map models reach a hand-written scipy optimum."""
    rng = np.random.default_rng(21)
    n, d = 3000, 5
    A = rng.standard_normal((n, d)) / np.sqrt(d)
    xt = rng.standard_normal(d)
    u = phi(A @ xt)
    b = u / u.sum() * (1 + 0.05 * rng.standard_normal(n))
    w = np.full(n, 0.3 / n)
    path = str(tmp_path / "p.zarr")
    write_problem(path, A, b, w)
    scale = float(n) ** 2

    def fun(x):
        v = A @ x
        uu = phi(v)
        return scale * (0.5 * np.sum((uu / uu.sum() - b) ** 2) + 0.5 * np.sum((w * v) ** 2))

    ref = so.minimize(fun, xt, method="BFGS", options={"gtol": 1e-12, "maxiter": 2000}).x
    res = dsketch.fit(path, model, x0=xt, solver=dsketch.Solver(tol=1e-12, max_iter=100),
                      cluster=dsketch.Cluster(client, block_rows=700))
    assert res.success, res.message
    assert _rel(res.x, ref) < 1e-5  # limited by BFGS with finite-difference gradients


def test_loss_value_convergence(client, logistic_store):
    """ftol stops at the first step whose decrease is <= ftol * loss, reported as success."""
    path = logistic_store[0]
    res = dsketch.fit(path, "logistic", model_params={"l2": 1e-3},
                      solver=dsketch.Solver(tol=1e-14, ftol=1e-6), cluster=client)
    assert res.status.name == "CONVERGED_LOSS" and res.success
    loss = res.history["loss"]
    drops = loss[:-1] - loss[1:]
    assert drops[-1] <= 1e-6 * abs(loss[-1])
    assert (drops[:-1] > 1e-6 * np.abs(loss[1:-1])).all()
    full = dsketch.fit(path, "logistic", model_params={"l2": 1e-3}, solver=dsketch.Solver(tol=1e-14), cluster=client)
    assert full.nit > res.nit and full.status.name != "CONVERGED_LOSS"  # off by default for smooth models
    with pytest.raises(ValueError, match="ftol"):
        dsketch.fit(path, "logistic", solver=dsketch.Solver(ftol=-1.0), cluster=client)


@pytest.mark.parametrize("model", ["logistic", "softmax", "two-layer"])
def test_exact_hessian_vector_products_match_dense_hessian(client, tmp_path, model):
    """Newton-CG's products H v (one pass for A^T D A v, plus the exact low-rank part and
    the penalty) against the dense Hessian of the whole problem as one block."""
    from dsketch.engine.core import Engine
    from dsketch.models import get_model, loss_gradient_hessian
    from dsketch.sketch import make_sketch
    from dsketch.solvers.newton import IterationState, NewtonConfig, NewtonSolver

    rng = np.random.default_rng(5)
    n, d, m = 1500, 6, 3
    A = sp.random(n, d, density=0.5, format="csr", random_state=rng, data_rvs=rng.standard_normal)
    w = np.full(n, 0.01)
    if model == "two-layer":
        P = rng.standard_normal((n, m)) * np.sqrt(n)
        b = rng.standard_normal(m) * 0.2
        spec = write_problem(str(tmp_path / "p.zarr"), A, None, w, extra={"A2T": P}, global_arrays={"b": b},
                             chunk_rows=256)
        mdl, rowdata = get_model(model).bind(spec), P
    else:
        y = rng.random(n) < 0.5 if model == "logistic" else rng.dirichlet(np.ones(n))
        spec = write_problem(str(tmp_path / "p.zarr"), A, y.astype(float), w, chunk_rows=256)
        mdl, rowdata = get_model(model, **({"l2": 1e-3} if model == "logistic" else {})), y.astype(float)
    x = rng.standard_normal(d) * 0.5
    engine = Engine(spec, client, block_rows=400, members=mdl.row_members)
    solver = NewtonSolver(engine, mdl, make_sketch("uniform"), sketch_size=50, config=NewtonConfig())
    engine.init(x, mdl)
    it = solver.update_gradient_hessian(IterationState(x=x, scalars=engine.trial_scalars(mdl)[0], sketch_size=50))
    _, g_ref, H_ref = loss_gradient_hessian(mdl, A, rowdata, x, w if mdl.uses_w else None)
    np.testing.assert_allclose(it.grad, g_ref, rtol=1e-10, atol=1e-14 * np.abs(g_ref).max())
    for _ in range(3):
        v = rng.standard_normal(d)
        np.testing.assert_allclose(solver.hessvec(it, v), H_ref @ v, rtol=1e-9, atol=1e-12 * np.abs(H_ref).max())
    passes = engine.n_passes
    solver.hessvec(it, v)
    assert engine.n_passes == passes + 1
    engine.close()


def _ill_logistic(tmp_path, seed):
    """Logistic data with three columns 30x larger than the rest (condition number ~1e3)."""
    rng = np.random.default_rng(seed)
    n, d = 20000, 12
    A = rng.standard_normal((n, d))
    A[:, :3] *= 30.0
    y = (rng.random(n) < expit(A @ (rng.standard_normal(d) / 10))).astype(float)
    path = str(tmp_path / "p.zarr")
    write_problem(path, A, y)
    return path, A, y


def test_newton_cg_reaches_full_accuracy_where_the_sketch_alone_stalls(client, tmp_path):
    """Ill-conditioned logistic regression: a 200-row uniform sketch gives slow linear
    convergence, Newton-CG preconditioned by the same sketch reaches 1e-12."""
    path, A, y = _ill_logistic(tmp_path, 8)
    n, d = A.shape
    kw = dict(model_params={"l2": 1e-6}, curvature=dsketch.Curvature("uniform", size=200),
              cluster=dsketch.Cluster(client, block_rows=4096))
    with pytest.warns(ConvergenceWarning):
        plain = dsketch.fit(path, "logistic", solver=dsketch.Solver(tol=1e-12, max_iter=15), **kw)
    cg = dsketch.fit(path, "logistic", solver=dsketch.Solver("newton-cg", tol=1e-12, max_iter=30), **kw)
    ref = _logistic_reference(A, y, 1e-6)
    assert not plain.success
    assert cg.success and cg.grad_norm <= 1e-12 * cg.history["grad_norm"][0]
    def grad(x):  # independent closed form of the objective's gradient
        return A.T @ (expit(A @ x) - y) / n + 1e-6 * x

    g0 = np.linalg.norm(grad(np.zeros(d)))
    assert np.linalg.norm(grad(cg.x)) <= 1e-11 * g0
    assert np.linalg.norm(grad(plain.x)) > 1e3 * np.linalg.norm(grad(cg.x))
    assert _rel(cg.x, ref) < 1e-7


def test_auto_curvature_follows_the_cost_model(tmp_path):
    """Exact Gram for few non-zeros per row, leverage sampling for wide dense rows."""
    from dsketch.api import choose_curvature
    from dsketch.store import ProblemSpec

    def spec(n, d, nnz):
        return ProblemSpec(path="p", n_samples=n, n_features=d, sparse=nnz < n * d, nnz=nnz, dtype="float64",
                           has_w=False)

    assert choose_curvature(spec(2_000_000, 200, 4_000_000)) == "exact"  # the demo: 2 per row
    assert choose_curvature(spec(2_000_000, 500, 1_000_000_000)) == "leverage"  # dense, d = 500
    assert choose_curvature(spec(5_000, 500, 2_500_000)) == "exact"  # few rows: the sample is most of them
    # dense d = 500 with the adaptive start of 50,000 rows: exact below about 7 s = 357,000 rows
    assert choose_curvature(spec(100_000, 500, 50_000_000)) == "exact"
    assert choose_curvature(spec(500_000, 500, 250_000_000)) == "leverage"
    assert choose_curvature(spec(500_000, 500, 250_000_000), sketch_size=200_000) == "exact"
    assert choose_curvature(spec(5_000_000, 2000, 50_000_000)) == "exact"  # sparse: 10 entries a row
    assert choose_curvature(spec(2_000_000, 100, 200_000_000)) == "exact"  # narrow dense rows


def test_adaptive_sketch_grows_a_too_small_sketch_and_resumes_with_its_size(client, tmp_path):
    path, A, y = _ill_logistic(tmp_path, 9)
    kw = dict(model_params={"l2": 1e-6}, solver=dsketch.Solver(tol=1e-10, max_iter=25),
              cluster=dsketch.Cluster(client, block_rows=4096))
    grow = dsketch.Curvature("uniform", size=30, adaptive=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fixed = dsketch.fit(path, "logistic", curvature=dsketch.Curvature("uniform", size=30), **kw)
    adaptive = dsketch.fit(path, "logistic", curvature=grow, **kw)
    rows = adaptive.history["sketch_rows"]
    assert adaptive.success and not fixed.success
    assert rows.max() > 4 * rows[0]  # it grew
    # a resumed adaptive fit continues with the size it had reached
    ckpt = str(tmp_path / "run.ckpt")

    def stop(state):
        if state.iteration == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        dsketch.fit(path, "logistic", curvature=grow, checkpoint=ckpt, callback=stop, **kw)
    resumed = dsketch.fit(path, "logistic", curvature=grow, checkpoint=ckpt, resume=True, **kw)
    np.testing.assert_array_equal(resumed.history["sketch_rows"], rows)
    np.testing.assert_allclose(resumed.x, adaptive.x, rtol=1e-12)


def test_fused_leverage_fit_resumes_on_the_same_path(client, tmp_path):
    """A resumed fused fit redraws its sketch with the saved (one step old) leverage transform."""
    path, A, y = _ill_logistic(tmp_path, 11)
    kw = dict(model_params={"l2": 1e-6}, solver=dsketch.Solver(tol=1e-10, max_iter=30),
              curvature=dsketch.Curvature("leverage", size=300, params={"scores": "approx", "jl_dim": 4}),
              cluster=dsketch.Cluster(client, block_rows=4096))
    whole = dsketch.fit(path, "logistic", **kw)
    ckpt = str(tmp_path / "lev.ckpt")

    def stop(state):
        if state.iteration == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        dsketch.fit(path, "logistic", checkpoint=ckpt, callback=stop, **kw)
    from dsketch.solvers.checkpoint import load_checkpoint

    saved = load_checkpoint(ckpt)
    assert saved.drawn_info is not None and saved.drawn_info["T"].shape[1] == 4  # the JL width
    resumed = dsketch.fit(path, "logistic", checkpoint=ckpt, resume=True, **kw)
    np.testing.assert_array_equal(resumed.history["sketch_rows"], whole.history["sketch_rows"])
    np.testing.assert_allclose(resumed.x, whole.x, rtol=1e-12)
    assert resumed.nit == whole.nit


@pytest.mark.parametrize("reuse", [1, 3, 50])
def test_leverage_score_reuse_reaches_the_optimum(client, logistic_store, reuse):
    """Leverage transforms kept for ``score_reuse`` iterations (scores cached on the workers):
    same optimum as scipy, whether rebuilt every iteration, every third, or never."""
    from dsketch.engine.core import Engine
    from dsketch.models import get_model
    from dsketch.sketch import make_sketch
    from dsketch.solvers.newton import NewtonConfig, NewtonSolver
    from dsketch.store import open_problem

    path, A, y = logistic_store
    spec = open_problem(path)
    mdl = get_model("logistic", l2=1e-3).bind(spec)
    engine = Engine(spec, client, block_rows=512, members=mdl.row_members)
    try:
        res = NewtonSolver(engine, mdl, make_sketch("leverage"), sketch_size=400,
                           config=NewtonConfig(tol=1e-12, max_iter=60, score_reuse=reuse)).run(np.zeros(A.shape[1]))
    finally:
        engine.close()
    assert res.success, res.message
    assert _rel(res.x, _logistic_reference(A, y, 1e-3)) < 1e-8


def test_score_reuse_must_be_a_positive_integer():
    from dsketch.solvers.newton import NewtonConfig

    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="score_reuse"):
            NewtonConfig(score_reuse=bad)
