"""L-BFGS directions against the dense BFGS inverse-Hessian update, and the probe rule."""

import numpy as np
import pytest
from scipy.optimize import minimize

from dsketch.errors import InvalidParameterError
from dsketch.solvers.lbfgs import LBFGSMemory, QuasiNewtonProbe


def dense_bfgs_inverse(pairs, d):
    """``H`` from ``H_0 = gamma I`` by the textbook BFGS inverse update, pair by pair."""
    s, y = pairs[-1]
    H = np.eye(d) * (s @ y) / (y @ y)
    for s, y in pairs:
        rho = 1.0 / (s @ y)
        V = np.eye(d) - rho * np.outer(y, s)
        H = V.T @ H @ V + rho * np.outer(s, s)
    return H


@pytest.mark.parametrize("m", [1, 3, 8])
def test_two_loop_equals_dense_bfgs_update(m):
    rng = np.random.default_rng(m)
    d = 6
    M = rng.standard_normal((d, d))
    Q = M @ M.T + d * np.eye(d)  # a convex quadratic's Hessian: s^T y > 0 always
    mem = LBFGSMemory(m=m)
    pairs = []
    for _ in range(12):
        s = rng.standard_normal(d)
        y = Q @ s
        assert mem.update(s, y)
        pairs.append((s, y))
    g = rng.standard_normal(d)
    H = dense_bfgs_inverse(pairs[-m:], d)
    np.testing.assert_allclose(mem.direction(g), -H @ g, rtol=1e-10, atol=1e-12)


def test_pairs_without_positive_curvature_are_skipped():
    mem = LBFGSMemory(m=5)
    assert not mem.update(np.array([1.0, 0.0]), np.array([-1.0, 0.0]))
    assert not mem.update(np.array([1.0, 0.0]), np.array([0.0, 0.0]))
    assert len(mem.pairs) == 0
    g = np.array([3.0, 4.0])
    np.testing.assert_allclose(mem.direction(g), -g / 5.0)


def test_memory_reaches_scipy_optimum_on_a_quadratic():
    """Iterating x <- x + p with exact line searches on a quadratic: the optimum scipy finds."""
    rng = np.random.default_rng(0)
    d = 20
    M = rng.standard_normal((d, d))
    Q, c = M @ M.T + np.eye(d), rng.standard_normal(d)
    mem, x = LBFGSMemory(m=5), np.zeros(d)
    g = Q @ x - c
    for _ in range(200):
        p = mem.direction(g)
        t = -(g @ p) / (p @ Q @ p)  # exact minimiser along p
        x_new = x + t * p
        g_new = Q @ x_new - c
        mem.update(x_new - x, g_new - g)
        x, g = x_new, g_new
        if np.linalg.norm(g) < 1e-12:
            break
    ref = minimize(lambda z: 0.5 * z @ Q @ z - c @ z, np.zeros(d), jac=lambda z: Q @ z - c,
                   method="L-BFGS-B", options={"gtol": 1e-12, "ftol": 0}).x
    np.testing.assert_allclose(x, ref, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(x, np.linalg.solve(Q, c), rtol=1e-9)


def test_probe_switches_on_slow_contraction_only():
    fast = QuasiNewtonProbe(probe=3, rate=0.4)
    for gn in [1.0, 0.3, 0.08, 0.02, 0.005]:
        fast.observe(gn)
        assert not fast.use_newton()
    slow = QuasiNewtonProbe(probe=3, rate=0.4)
    decisions = []
    for gn in [1.0, 0.9, 0.85, 0.8, 0.78]:
        slow.observe(gn)
        decisions.append(slow.use_newton())
    assert decisions == [False, False, False, True, True]
    slow.observe(1e-9)  # the switch is final
    assert slow.use_newton()
    assert slow.observed_rate() == pytest.approx((1e-9 / 0.8) ** 0.5)


@pytest.mark.parametrize("kw", [{"probe": 1}, {"probe": 2.5}, {"rate": 0.0}, {"rate": 1.0}])
def test_probe_settings_are_checked(kw):
    with pytest.raises(InvalidParameterError):
        QuasiNewtonProbe(**kw)


def test_memory_size_is_checked():
    with pytest.raises(InvalidParameterError, match="memory"):
        LBFGSMemory(m=0)


# ---------------------------------------------------------------- fits with L-BFGS and "auto"
import dsketch  # noqa: E402
from dsketch import Status  # noqa: E402
from dsketch.errors import ConvergenceWarning, UnusedOptionError  # noqa: E402


def _logistic(n, d, cond, seed=0):
    """Dense logistic data whose feature covariance has condition number ``cond``."""
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((d, d)))
    s = np.logspace(0, -0.5 * np.log10(cond), d)
    A = (rng.standard_normal((n, d)) * s) @ U.T
    x = U @ (rng.standard_normal(d) / s) / np.sqrt(d)
    b = (rng.random(n) < 1 / (1 + np.exp(-(A @ x)))).astype(float)
    return A, b


def _reference(A, b, l2):
    """The optimum of mean log-loss + l2/2 |x|^2 by scipy's trust-region Newton (exact Hessian)."""
    n = len(b)

    def fun(x):
        eta = A @ x
        return np.mean(np.logaddexp(0, eta) - b * eta) + 0.5 * l2 * x @ x

    def jac(x):
        return A.T @ (1 / (1 + np.exp(-(A @ x))) - b) / n + l2 * x

    def hess(x):
        mu = 1 / (1 + np.exp(-(A @ x)))
        return (A * (mu * (1 - mu))[:, None]).T @ A / n + l2 * np.eye(A.shape[1])

    res = minimize(fun, np.zeros(A.shape[1]), jac=jac, hess=hess, method="trust-exact", options={"gtol": 1e-13})
    return res.x, res.fun


def test_lbfgs_reaches_the_optimum_without_curvature():
    A, b = _logistic(4000, 12, cond=10.0)
    ref, fref = _reference(A, b, 1e-3)
    res = dsketch.fit((A, b), "logistic", model_params={"l2": 1e-3}, solver=dsketch.Solver("lbfgs", tol=1e-10))
    assert res.success and res.info["solver"] == "lbfgs" and res.info["sketch"] == "none"
    assert np.all(res.history["sketch_rows"] == 0)  # no curvature was formed
    np.testing.assert_allclose(res.x, ref, rtol=1e-6, atol=1e-8)
    assert abs(res.fun - fref) <= 1e-12 * abs(fref)


def test_auto_stays_quasi_newton_when_well_conditioned():
    A, b = _logistic(4000, 12, cond=3.0)
    ref, _ = _reference(A, b, 1e-2)
    res = dsketch.fit((A, b), "logistic", model_params={"l2": 1e-2}, solver=dsketch.Solver(tol=1e-10))
    assert res.success and res.info["solver"] == "auto" and res.info["newton_from"] is None
    assert np.all(res.history["sketch_rows"] == 0)
    np.testing.assert_allclose(res.x, ref, rtol=1e-6, atol=1e-8)


def test_auto_hands_over_to_newton_when_ill_conditioned():
    A, b = _logistic(6000, 15, cond=1e6)
    ref, fref = _reference(A, b, 1e-8)
    res = dsketch.fit((A, b), "logistic", model_params={"l2": 1e-8}, solver=dsketch.Solver(tol=1e-10))
    assert res.success and res.info["newton_from"] is not None and res.info["newton_from"] >= 3
    rows = res.history["sketch_rows"]
    assert np.all(rows[: res.info["newton_from"]] == 0) and np.all(rows[res.info["newton_from"]:] > 0)
    np.testing.assert_allclose(res.x, ref, rtol=1e-5, atol=1e-6)
    assert abs(res.fun - fref) <= 1e-10 * abs(fref)
    # L-BFGS alone is far slower on it: the hand-over is what makes "auto" fast
    with pytest.warns(ConvergenceWarning):
        slow = dsketch.fit((A, b), "logistic", model_params={"l2": 1e-8},
                           solver=dsketch.Solver("lbfgs", tol=1e-10, max_iter=res.nit))
    assert slow.status is Status.MAX_ITER


def test_auto_is_newton_where_quasi_newton_does_not_pay():
    A, b = _logistic(2000, 6, cond=3.0)
    named = dsketch.fit((A, b), "logistic", model_params={"l2": 1e-2}, curvature="exact")
    assert named.info["solver"] == "newton" and np.all(named.history["sketch_rows"][:-1] > 0)
    rng = np.random.default_rng(0)
    A2 = np.abs(rng.standard_normal((300, 5)))
    b2 = rng.random(300)
    w = 0.3 / 300 * (1.0 + rng.random(300))
    soft = dsketch.fit(dsketch.in_memory(A2, b2 / b2.sum(), w=w), "softmax")
    assert soft.info["solver"] == "newton"


def test_first_order_methods_refuse_a_named_curvature():
    A, b = _logistic(500, 4, cond=3.0)
    with pytest.raises(UnusedOptionError, match="lbfgs"):
        dsketch.fit((A, b), "logistic", curvature="leverage", solver="lbfgs")


def test_lbfgs_reports_separable_classes_as_diverging():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((500, 3))
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(float)
    with pytest.warns(ConvergenceWarning):
        res = dsketch.fit((X, y), "logistic", model_params={"l2": 0.0}, solver=dsketch.Solver("lbfgs", max_iter=500))
    assert not res.success and res.status in (Status.DIVERGED, Status.MAX_ITER, Status.LINE_SEARCH_FAILED)


def test_auto_resumes_bit_identically(tmp_path):
    """The L-BFGS pairs and the probe's norms travel with the checkpoint: the resumed fit
    takes the uninterrupted fit's steps (to rounding: the resumed fit recomputes ``A x``
    where the uninterrupted one kept updating it), where restarting L-BFGS from an empty
    memory would take others."""
    A, b = _logistic(6000, 15, cond=1e6, seed=2)
    path = str(tmp_path / "p.zarr")
    dsketch.write_problem(path, A, b)
    kw = dict(model_params={"l2": 1e-8}, solver=dsketch.Solver(tol=1e-10), cluster=dsketch.Cluster(n_workers=1))
    whole = dsketch.fit(path, "logistic", **kw)
    assert whole.info["newton_from"] is not None
    ckpt = str(tmp_path / "run.checkpoint")

    class Stop(Exception):
        pass

    for at in (2, whole.info["newton_from"] + 1):  # inside the L-BFGS phase, and after the switch
        def die(state, at=at):
            if state.iteration == at:
                raise Stop

        with pytest.raises(Stop):
            dsketch.fit(path, "logistic", checkpoint=ckpt, callback=die, **kw)
        resumed = dsketch.fit(path, "logistic", checkpoint=ckpt, resume=True, **kw)
        assert resumed.nit == whole.nit and resumed.info["newton_from"] == whole.info["newton_from"]
        np.testing.assert_allclose(resumed.history["grad_norm"], whole.history["grad_norm"], rtol=1e-6,
                                   atol=1e-12 * whole.history["grad_norm"][0])
        np.testing.assert_allclose(resumed.x, whole.x, rtol=1e-10)


def test_a_single_rise_of_the_gradient_does_not_hand_over_to_a_dear_newton_phase():
    """L-BFGS gradient norms are not monotone; the price of finishing by L-BFGS is read over
    five contractions, so one rise (here 2.6e-4 to 4.4e-4, seen on sparse multinomial data)
    does not make the L-BFGS finish look endless. A stall that lasts still hands over."""
    norms = [2.8e-2, 2.75e-2, 6.7e-3, 3.75e-3, 2.2e-3, 1.95e-3, 6.6e-4, 4.2e-4, 2.6e-4, 4.4e-4]
    probe = QuasiNewtonProbe(tol=1e-10, newton_cost=1300.0, extrapolate=True)
    for gn in norms:
        probe.observe(gn)
        assert not probe.use_newton()
    rate = (4.4e-4 / 2.2e-3) ** (1 / 5)
    assert probe.remaining() == pytest.approx(np.log(1e-10 * 2.8e-2 / 4.4e-4) / np.log(rate))
    for gn in [4.3e-4, 4.3e-4, 4.2e-4, 4.2e-4, 4.1e-4]:  # a stall: the rate over five nears 1
        probe.observe(gn)
    assert probe.use_newton()


def test_probe_prices_newton_against_the_quasi_newton_iterations_still_needed():
    """Where the curvature is dear (wide one-hot data), a slow rate alone does not switch when
    Newton's iterations cost more than the L-BFGS iterations still needed, nor when they would
    not fit in max_iter; where it is cheap, the first slow rate switches whatever the estimate."""
    from dsketch.solvers.lbfgs import NEWTON_ITERATIONS, REUSE_CURVATURE_PASSES, newton_cost

    norms = [1.0, 0.5, 0.3, 0.2, 0.14]  # contracting at about 0.68: past the 0.4 floor
    need = np.log(1e-8 / 0.14) / np.log(0.14 ** 0.25)  # iterations still needed, at the 4 contractions' rate
    dear = 10 * REUSE_CURVATURE_PASSES
    lbfgs_pays = QuasiNewtonProbe(tol=1e-8, newton_cost=2 * need, curvature_passes=dear)
    newton_pays = QuasiNewtonProbe(tol=1e-8, newton_cost=0.5 * need, curvature_passes=dear)
    short = QuasiNewtonProbe(tol=1e-8, newton_cost=2 * need, max_iter=int(need), curvature_passes=dear)
    cheap = QuasiNewtonProbe(tol=1e-8, newton_cost=2 * need, curvature_passes=0.9 * REUSE_CURVATURE_PASSES)
    unpriced = QuasiNewtonProbe(tol=1e-8, newton_cost=2 * need)  # curvature cost unknown
    probes = (lbfgs_pays, newton_pays, short, cheap, unpriced)
    decisions = []
    for gn in norms:
        for p in probes:
            p.observe(gn)
        decisions.append([p.use_newton() for p in probes])
    assert lbfgs_pays.remaining() == pytest.approx(need)
    assert decisions[-1] == [False, True, True, True, True]
    assert [row[3] for row in decisions] == [False, False, False, True, True]  # at the probe's end
    # the cost model: flops of a Newton iteration over those of one pass; independent
    # arithmetic for a sparse and a dense shape. Cheap curvature: formed every iteration;
    # dear curvature (over 10 passes): formed once, then 4 products and a pass a step
    n, d, nnz = 327_346, 3295, 1_988_662
    gram, chol = n * (nnz / n) ** 2 / 2, d**3 / 3 / 8
    once = 1 + (gram + chol) / (4 * nnz)
    assert once > 10 and newton_cost(n, d, nnz, True) == pytest.approx(once + (NEWTON_ITERATIONS - 1) * 5)
    assert newton_cost(10**6, 100, 0, False) == pytest.approx(
        NEWTON_ITERATIONS * (1 + (1e6 * 1e4 / 2 / 8 + 1e6 / 3 / 8) / (4e8)))


def _dear_curvature_solver(tol):
    """``Solver("auto")`` whose cost model prices fresh curvature at 100 passes."""
    from dsketch.solvers.inner import QuasiNewtonThenNewton

    probe = QuasiNewtonProbe(tol=tol, newton_cost=0.0, curvature_passes=100.0)  # hand over at once
    return dsketch.Solver(tol=tol, inner=QuasiNewtonThenNewton(probe=probe))


def test_dear_curvature_is_formed_once_and_then_preconditions_exact_products():
    A, b = _logistic(6000, 15, cond=1e4, seed=3)
    ref, fref = _reference(A, b, 1e-6)
    res = dsketch.fit((A, b), "logistic", model_params={"l2": 1e-6}, solver=_dear_curvature_solver(1e-10))
    assert res.success and res.info["newton_from"] is not None
    rows = res.history["sketch_rows"][res.info["newton_from"]:-1]
    assert rows[0] > 0 and np.count_nonzero(rows) < rows.size - 1  # some steps reused it
    assert res.n_passes > res.nit + 2  # the reused steps paid for their products in passes
    np.testing.assert_allclose(res.x, ref, rtol=1e-6, atol=1e-8)
    assert abs(res.fun - fref) <= 1e-12 * abs(fref)


def test_kept_curvature_is_refreshed_after_a_step_that_needed_many_products(monkeypatch):
    import dsketch.solvers.inner as inner

    monkeypatch.setattr(inner, "REFRESH_PRODUCTS", 0)  # every reused step asks for fresh curvature
    A, b = _logistic(6000, 15, cond=1e4, seed=3)
    ref, _ = _reference(A, b, 1e-6)
    res = dsketch.fit((A, b), "logistic", model_params={"l2": 1e-6}, solver=_dear_curvature_solver(1e-10))
    rows = res.history["sketch_rows"][res.info["newton_from"]:-1]
    assert res.success and rows.size >= 3
    assert np.all((rows[::2] > 0)) and np.all(rows[1::2] == 0)  # fresh, reused, fresh, ...
    np.testing.assert_allclose(res.x, ref, rtol=1e-6, atol=1e-8)


def test_kept_curvature_travels_with_the_checkpoint(tmp_path):
    A, b = _logistic(6000, 15, cond=1e4, seed=3)
    kw = dict(model_params={"l2": 1e-6})
    whole = dsketch.fit((A, b), "logistic", solver=_dear_curvature_solver(1e-10), **kw)
    at = whole.info["newton_from"] + 1  # a step that reuses the curvature
    assert whole.history["sketch_rows"][at] == 0
    ckpt = str(tmp_path / "run.checkpoint")

    class Stop(Exception):
        pass

    def die(state):
        if state.iteration == at:
            raise Stop

    with pytest.raises(Stop):
        dsketch.fit((A, b), "logistic", solver=_dear_curvature_solver(1e-10), checkpoint=ckpt, callback=die, **kw)
    resumed = dsketch.fit((A, b), "logistic", solver=_dear_curvature_solver(1e-10), checkpoint=ckpt, resume=True,
                          **kw)
    assert resumed.nit == whole.nit
    np.testing.assert_array_equal(resumed.history["sketch_rows"], whole.history["sketch_rows"])
    np.testing.assert_allclose(resumed.x, whole.x, rtol=1e-10)


def _priced_solver(tol, curvature_passes):
    """``Solver("auto")`` whose cost model always finds the L-BFGS finish cheaper than a Newton
    one, with a Newton iteration priced at ``curvature_passes`` passes."""
    from dsketch.solvers.inner import QuasiNewtonThenNewton

    probe = QuasiNewtonProbe(tol=tol, newton_cost=1e6, curvature_passes=curvature_passes)
    return dsketch.Solver(tol=tol, max_iter=200, inner=QuasiNewtonThenNewton(probe=probe))


def test_cheap_curvature_hands_over_at_the_end_of_the_probe():
    """Ill-conditioned data: with cheap curvature the fit takes Newton steps from the end of
    the probe (3 L-BFGS iterations) even where the extrapolated L-BFGS finish looks cheaper,
    and reaches scipy's optimum; with dear curvature the same estimate keeps L-BFGS going."""
    from dsketch.solvers.lbfgs import REUSE_CURVATURE_PASSES

    A, b = _logistic(6000, 15, cond=1e4, seed=3)
    ref, fref = _reference(A, b, 1e-6)
    kw = dict(model_params={"l2": 1e-6})
    cheap = dsketch.fit((A, b), "logistic", solver=_priced_solver(1e-10, 0.9 * REUSE_CURVATURE_PASSES), **kw)
    assert cheap.success and cheap.info["newton_from"] == 3
    assert np.all(cheap.history["sketch_rows"][:3] == 0) and cheap.history["sketch_rows"][3] > 0
    np.testing.assert_allclose(cheap.x, ref, rtol=1e-6, atol=1e-8)
    assert abs(cheap.fun - fref) <= 1e-12 * abs(fref)
    dear = dsketch.fit((A, b), "logistic", solver=_priced_solver(1e-10, 10 * REUSE_CURVATURE_PASSES), **kw)
    assert dear.info["newton_from"] is None or dear.info["newton_from"] > 3
