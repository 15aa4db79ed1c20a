"""The solver contract: pluggable inner solvers against dense references, the stages'
explicit state, one immutable result type with the gradient for every solver, the grouped
settings of ``fit`` and their errors."""

from __future__ import annotations

import dataclasses
import pickle
import warnings

import numpy as np
import pytest
from scipy.special import expit

import dsketch
from dsketch.config import MOVED
from dsketch.engine.core import Engine
from dsketch.engine.threads import ThreadClient
from dsketch.errors import ConvergenceWarning, InvalidOptionError, RemovedOptionError, UnknownNameError, UnusedOptionError
from dsketch.models import get_model
from dsketch.sketch import make_sketch
from dsketch.solvers.inner import CholeskySolve, ConjugateGradient, Direction, GradientStep, InnerSolver
from dsketch.solvers.newton import IterationState, NewtonConfig, NewtonSolver
from dsketch.solvers.result import HISTORY_COLUMNS

L2 = 1e-3


@pytest.fixture(scope="module")
def problem():
    """An ill-conditioned logistic problem small enough for dense references."""
    rng = np.random.default_rng(11)
    n, d = 3000, 7
    A = rng.standard_normal((n, d)) / np.sqrt(d)
    A[:, 0] *= 15.0
    y = (rng.random(n) < expit(A @ rng.standard_normal(d))).astype(float)
    return A, y


def _objective(A, y, x):
    """The L2 logistic objective of dsketch's ``logistic`` model, written out: the mean log
    loss plus ``l2 / 2 ||x||^2``."""
    z = A @ x
    return float(np.mean(np.logaddexp(0.0, z) - y * z)) + 0.5 * L2 * float(x @ x)


def _gradient(A, y, x):
    return A.T @ (expit(A @ x) - y) / A.shape[0] + L2 * x


def _hessian(A, y, x):
    s = expit(A @ x)
    return (A * (s * (1 - s))[:, None]).T @ A / A.shape[0] + L2 * np.eye(A.shape[1])


def _fd_gradient(f, x, h=1e-6):
    """Central differences of ``f`` at ``x``."""
    e = np.eye(x.size)
    return np.array([(f(x + h * e[j]) - f(x - h * e[j])) / (2 * h) for j in range(x.size)])


def _state(problem, sketch="exact", size=100, inner=None, x=None):
    """A NewtonSolver on threads and the state of its first iterate with loss, gradient and
    curvature computed; the caller closes the engine."""
    A, y = problem
    spec = dsketch.in_memory(A, y)
    mdl = get_model("logistic", l2=L2).bind(spec)
    engine = Engine(spec, ThreadClient(1), block_rows=700, members=mdl.row_members)
    solver = NewtonSolver(engine, mdl, make_sketch(sketch), sketch_size=size, config=NewtonConfig(), inner=inner)
    x = np.linspace(-0.3, 0.4, A.shape[1]) if x is None else x
    engine.init(x, mdl)
    state = IterationState(x=x, scalars=engine.trial_scalars(mdl)[0], sketch_size=size)
    return solver, solver.update_gradient_hessian(state), engine


# --------------------------------------------------------------------------- inner solvers


def test_cholesky_direction_solves_the_dense_newton_system(problem):
    A, y = problem
    solver, state, engine = _state(problem)
    try:
        x = state.x
        np.testing.assert_allclose(state.grad, _gradient(A, y, x), rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(state.hess, _hessian(A, y, x), rtol=1e-10, atol=1e-14)
        direction = CholeskySolve().solve(state, solver)
        ref = np.linalg.solve(_hessian(A, y, x), -_gradient(A, y, x))
        np.testing.assert_allclose(direction.p, ref, rtol=1e-9)
        assert direction.gp == pytest.approx(float(_gradient(A, y, x) @ ref), rel=1e-9)
        assert direction.decrement == pytest.approx(np.sqrt(-direction.gp), rel=1e-12)
        # the stage is the inner solver's direction; the state is not changed by it
        assert np.array_equal(solver.inner_solve(state).p, direction.p)
    finally:
        engine.close()


def test_conjugate_gradient_direction_meets_its_residual_rule(problem):
    """Preconditioned by a rough 60-row uniform sketch, CG on exact products stops at the
    relative residual min(0.1, sqrt(||g|| / ||g_0||)) = 0.1 at the first iterate."""
    A, y = problem
    cg = ConjugateGradient(max_iter=50)
    solver, state, engine = _state(problem, sketch="uniform", size=60, inner=cg)
    try:
        H, g = _hessian(A, y, state.x), _gradient(A, y, state.x)
        assert not np.allclose(state.hess, H, rtol=0.05)  # the preconditioner is only rough
        passes = engine.n_passes
        direction = solver.inner_solve(state)
        assert engine.n_passes > passes  # every product is a pass over A
        ref = np.linalg.solve(H, -g)
        assert np.linalg.norm(H @ direction.p + g) <= 0.1 * np.linalg.norm(g) * (1 + 1e-9)
        # ||p - p*|| <= ||H^-1|| ||H p + g||
        assert np.linalg.norm(direction.p - ref) <= 0.1 * np.linalg.norm(g) / np.linalg.eigvalsh(H)[0]
        assert direction.gp < 0
        # one product only: the preconditioned step itself
        one = ConjugateGradient(max_iter=1).solve(state, solver)
        assert np.linalg.norm(H @ one.p + g) > np.linalg.norm(H @ direction.p + g)
    finally:
        engine.close()


def test_gradient_step_is_minus_tau_g_and_asks_for_no_curvature(problem):
    A, y = problem
    solver, state, engine = _state(problem, inner=GradientStep())
    try:
        assert solver.sketch is None and state.hess is None  # no curvature was computed
        g = _gradient(A, y, state.x)
        np.testing.assert_allclose(state.grad, g, rtol=1e-10, atol=1e-14)
        first = solver.inner_solve(state)
        tau = 1.0 / np.linalg.norm(state.grad)
        np.testing.assert_array_equal(first.p, -tau * state.grad)
        assert first.tau == tau and np.isnan(first.decrement)
        later = solver.inner_solve(dataclasses.replace(state, tau=0.25))
        np.testing.assert_array_equal(later.p, -0.25 * state.grad)
        assert later.gp == pytest.approx(-0.25 * float(state.grad @ state.grad), rel=1e-14)
    finally:
        engine.close()


def test_gradient_descent_never_computes_a_curvature(problem, monkeypatch):
    """With solver="gd" every pass over A is asked for loss and gradient only."""
    import dsketch.engine.tasks as tasks

    seen = []
    for name in ("curvature", "fused_step"):
        original = getattr(tasks, name)

        def spy(model, sketch, *args, _original=original, **kw):
            seen.append(sketch)
            return _original(model, sketch, *args, **kw)

        monkeypatch.setattr(tasks, name, spy)
    with pytest.warns(ConvergenceWarning, match="max_iter"):
        res = dsketch.fit(problem, "logistic", model_params={"l2": L2}, solver=dsketch.Solver("gd", max_iter=5))
    assert res.nit == 5 and seen and all(s is None for s in seen)


class DenseSolve:
    """A user's inner solver: numpy's dense solve of the reduced system."""

    needs_curvature = True
    second_order = True
    adapts_sketch = False

    def __init__(self):
        self.calls = 0

    def solve(self, state, problem):
        self.calls += 1
        p = np.linalg.solve(state.hess, -state.grad)
        gp = float(state.grad @ p)
        return Direction(p=p, gp=gp, decrement=float(np.sqrt(max(-gp, 0.0))))


def test_a_custom_inner_solver_plugs_in(problem):
    A, y = problem
    inner = DenseSolve()
    assert isinstance(inner, InnerSolver)
    res = dsketch.fit(problem, "logistic", model_params={"l2": L2}, curvature="exact",
                      solver=dsketch.Solver(tol=1e-12, inner=inner), x0="zeros")
    assert res.success and inner.calls == res.nit + 1  # one direction an iteration, and the last test
    x_star = res.x
    np.testing.assert_allclose(_gradient(A, y, x_star), 0.0, atol=1e-10)
    ref = dsketch.fit(problem, "logistic", model_params={"l2": L2}, curvature="exact",
                      solver=dsketch.Solver(tol=1e-12), x0="zeros")
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-10)
    with pytest.raises(InvalidOptionError, match="InnerSolver"):
        dsketch.Solver(inner=object())


# --------------------------------------------------------------------------- the result


@pytest.mark.parametrize("method", ["newton", "newton-cg", "gd"])
def test_result_is_immutable_and_jac_is_the_gradient_at_x(problem, method):
    A, y = problem
    solver = dsketch.Solver(method, tol=1e-10, max_iter=200 if method == "gd" else 50)
    curvature = "auto" if method == "gd" else dsketch.Curvature("uniform", size=300)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # gd may stop at max_iter
        res = dsketch.fit(problem, "logistic", model_params={"l2": L2}, curvature=curvature, solver=solver)
    assert isinstance(res, dsketch.FitResult)
    fd = _fd_gradient(lambda x: _objective(A, y, x), res.x)
    np.testing.assert_allclose(res.jac, fd, rtol=0, atol=1e-8)
    np.testing.assert_allclose(res.jac, _gradient(A, y, res.x), rtol=1e-9, atol=1e-14)
    assert res.grad_norm == pytest.approx(np.linalg.norm(res.jac), rel=1e-12)
    assert res.loss == res.fun == pytest.approx(_objective(A, y, res.x), rel=1e-12)
    assert res.n_iter == res.nit
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.x = np.zeros(3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.success = False
    for arr in (res.x, res.jac, res.history["loss"]):
        with pytest.raises(ValueError, match="read-only"):
            arr[0] = 1.0
    with pytest.raises(TypeError, match="immutable"):
        res.info["solver"] = "other"
    with pytest.raises(TypeError, match="immutable"):
        res.history["loss"] = np.zeros(1)
    back = pickle.loads(pickle.dumps(res))
    assert np.array_equal(back.x, res.x) and dict(back.info) == dict(res.info)
    changed = dataclasses.replace(res, info={**res.info, "note": 1})
    assert changed.info["note"] == 1 and "note" not in res.info


def test_saved_result_keeps_jac_and_old_results_still_load(problem, tmp_path):
    res = dsketch.fit(problem, "logistic", model_params={"l2": L2})
    path = str(tmp_path / "r.zarr")
    dsketch.save_result(res, path)
    back = dsketch.load_result(path)
    np.testing.assert_array_equal(back.jac, res.jac)
    assert isinstance(back, dsketch.FitResult) and back.info["solver"] == res.info["solver"] == "auto"
    # a result written before jac was recorded: no 'jac' array in the group
    import zarr

    group = zarr.open_group(path, mode="r+")
    del group["jac"]
    old = dsketch.load_result(path)
    assert old.jac is None and np.array_equal(old.x, res.x)


def test_every_solver_returns_a_fit_result(client, tmp_path):
    from dsketch.models.twolayer_net import TwoLayerNet
    from dsketch.solvers.ggn_score import GGNScore, GGNScoreConfig, fit_store
    from dsketch.solvers.ggn_sketched import SketchedGGN

    rng = np.random.default_rng(3)
    m, n0 = 400, 3
    X = rng.standard_normal((m, n0))
    yv = np.tanh(X @ rng.standard_normal(n0))
    spec = dsketch.write_problem(str(tmp_path / "net.zarr"), X, yv)
    net = TwoLayerNet(n0, 6, 1, "silu")
    cfg = GGNScoreConfig(tau=1e-4, mu=2.0)
    theta0 = net.init_params(rng)
    results = {
        "GGNScore.fit": GGNScore(net, cfg).fit(X, yv, theta0=theta0, epochs=2),
        "ggn_score.fit_store": fit_store(GGNScore(net, cfg), spec, theta0=theta0, target="b", epochs=2),
        "SketchedGGN.fit_store": SketchedGGN(net, cfg, sketch_size=100, block_rows=150).fit_store(
            spec, client, theta0=theta0, iters=2),
        "fit_network": dsketch.fit_network(spec, hidden=6, activation="silu", epochs=2, batch_size=100),
        "fit_network sketched": dsketch.fit_network(spec, hidden=6, activation="silu", epochs=2, sketch_size=100,
                                                    cluster=dsketch.Cluster(client, block_rows=150)),
    }
    for name, res in results.items():
        assert isinstance(res, dsketch.FitResult), name
        assert set(HISTORY_COLUMNS) <= set(res.history), name
        table = res.history_table()  # the last row of a GGN history has no sampled rows: "nan"
        assert len(table.splitlines()) == len(res.history["iteration"]) + 1, name
        with pytest.raises(dataclasses.FrozenInstanceError):
            res.x = None
    sk = results["SketchedGGN.fit_store"]
    smoother = cfg.make_smoother()

    def objective(theta):
        return net.loss(theta, X, yv) + cfg.tau * float(np.sum(smoother.value(theta)))

    np.testing.assert_allclose(sk.jac, _fd_gradient(objective, sk.x), rtol=1e-5, atol=1e-8)
    assert sk.fun == pytest.approx(objective(sk.x), rel=1e-12)


# --------------------------------------------------------------------------- settings


def test_the_documented_example_runs(tmp_path, problem):
    A, y = problem
    path = str(tmp_path / "problem.zarr")
    dsketch.write_problem(path, A, y)
    result = dsketch.fit(path, "logistic", model_params={"l2": 1e-4},
                         curvature=dsketch.Curvature("leverage", size=400),
                         solver=dsketch.Solver("newton", tol=1e-8, max_iter=50),
                         cluster=dsketch.Cluster(n_workers=1, block_rows=1000), seed=0)
    assert result.success and result.info["sketch"] == "leverage" and result.info["sketch_size"] == 400


@pytest.mark.parametrize("build, error, match", [
    (lambda: dsketch.Solver("newtn"), UnknownNameError, "did you mean 'newton'"),
    (lambda: dsketch.Solver(tol=-1.0), InvalidOptionError, "tol"),
    (lambda: dsketch.Solver(tol=float("nan")), InvalidOptionError, "tol"),
    (lambda: dsketch.Solver(max_iter=2.5), InvalidOptionError, "max_iter"),
    (lambda: dsketch.Solver(ftol=1.0), InvalidOptionError, "ftol"),
    (lambda: dsketch.Solver(armijo=0.5), InvalidOptionError, "armijo"),
    (lambda: dsketch.Solver(max_halvings=61), InvalidOptionError, "max_halvings"),
    (lambda: dsketch.Solver(cg_max_iter=0), InvalidOptionError, "cg_max_iter"),
    (lambda: dsketch.Solver(score_reuse=0), InvalidOptionError, "score_reuse"),
    (lambda: dsketch.Curvature("levrage"), UnknownNameError, "did you mean 'leverage'"),
    (lambda: dsketch.Curvature("leverage", size=0), InvalidOptionError, "size"),
    (lambda: dsketch.Curvature("leverage", params=[1]), InvalidOptionError, "params"),
    (lambda: dsketch.Curvature("leverage", adaptive="yes"), InvalidOptionError, "adaptive"),
    (lambda: dsketch.Curvature("exact", size=10), UnusedOptionError, "size"),
    (lambda: dsketch.Cluster(n_workers=0), InvalidOptionError, "n_workers"),
    (lambda: dsketch.Cluster(block_rows=0), InvalidOptionError, "block_rows"),
    (lambda: dsketch.Cluster(persist="yes"), InvalidOptionError, "persist"),
    (lambda: dsketch.Cluster(scheduler=8786), InvalidOptionError, "scheduler"),
    (lambda: dsketch.Cluster(block_rows=10, bounds=[(0, 10)]), UnusedOptionError, "block_rows"),
    (lambda: dsketch.fit("missing.zarr", "logistic", curvature=5), InvalidOptionError, "curvature"),
    (lambda: dsketch.fit("missing.zarr", "logistic", solver=None), InvalidOptionError, "solver"),
])
def test_settings_are_checked_when_built(build, error, match):
    with pytest.raises(error, match=match) as exc:
        build()
    assert isinstance(exc.value, ValueError) and "\n" not in str(exc.value)


def test_settings_are_frozen_and_defaults_documented():
    s = dsketch.Solver()
    assert (s.method, s.tol, s.max_iter, s.ftol, s.armijo, s.cg_max_iter, s.score_reuse) == (
        "auto", 1e-8, 50, None, 1e-4, 20, 3)
    assert s.halvings == 30 and dsketch.Solver("gd").halvings == 60
    c = dsketch.Cluster()
    assert (c.scheduler, c.n_workers, c.block_rows, c.fused, c.persist, c.memory_check) == (
        None, None, None, True, None, True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.tol = 1.0
    params = {"scores": "approx"}
    cur = dsketch.Curvature("leverage", params=params)
    params["scores"] = "exact"  # the settings keep their own copy
    assert cur.params == {"scores": "approx"}


@pytest.mark.parametrize("name", sorted(MOVED))
def test_old_flat_keywords_name_their_new_place(name):
    value = {"sketch": "exact", "sketch_size": 10, "sketch_params": {}, "adaptive_sketch": True, "tol": 1e-6,
             "max_iter": 3, "ftol": 1e-9, "client": None, "scheduler": "tcp://127.0.0.1:1", "n_workers": 1,
             "block_rows": 10, "bounds": [(0, 1)], "persist": True, "fused": False, "memory_check": False}[name]
    with pytest.raises(RemovedOptionError) as exc:
        dsketch.fit("missing.zarr", "logistic", **{name: value})
    msg = str(exc.value)
    assert isinstance(exc.value, TypeError) and f"{name}=" in msg
    group = "curvature" if name.startswith(("sketch", "adaptive")) else (
        "Solver" if name in ("tol", "max_iter", "ftol") else "luster")
    assert group in msg.replace("Curvature", "curvature"), msg
    with pytest.raises(RemovedOptionError):
        dsketch.initial_point("missing.zarr", "logistic", **{name: value})
