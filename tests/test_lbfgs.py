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
