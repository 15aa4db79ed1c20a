"""GGN-SCORE pieces against independent references (finite differences, dense solves, grids)."""

from __future__ import annotations

import numpy as np
import pytest

from dsketch.models.twolayer_net import TwoLayerNet
from dsketch.solvers.ggn_score import (
    SMOOTHERS,
    GGNScore,
    GGNScoreConfig,
    OstrovskiiBach,
    PseudoHuber,
    ggn_score_direction,
    make_smoother,
    pseudo_huber_constant,
    score_constant,
)


@pytest.mark.parametrize("activation", ["silu", "relu"])
@pytest.mark.parametrize("n_outputs", [1, 3])
def test_jacobian_and_gradient_against_finite_differences(activation, n_outputs):
    rng = np.random.default_rng(1)
    net = TwoLayerNet(4, 6, n_outputs, activation)
    theta = net.init_params(rng)
    X = rng.standard_normal((9, 4))
    Y = rng.standard_normal((9, n_outputs))
    r, J = net.residual_jacobian(theta, X, Y)
    h = 1e-6
    eye = np.eye(net.n_params)

    def vec(t):
        return net.predict(t, X).ravel(order="F")

    Jfd = np.column_stack([(vec(theta + h * e) - vec(theta - h * e)) / (2 * h) for e in eye])
    np.testing.assert_allclose(J, Jfd, atol=1e-7 * np.abs(Jfd).max())
    gfd = np.array([(net.loss(theta + h * e, X, Y) - net.loss(theta - h * e, X, Y)) / (2 * h) for e in eye])
    np.testing.assert_allclose(J.T @ r, gfd, atol=1e-7 * np.abs(gfd).max())
    loss, grad = net.loss_gradient(theta, X, Y)
    assert loss == pytest.approx(net.loss(theta, X, Y), rel=1e-12)
    np.testing.assert_allclose(grad, gfd, atol=1e-7 * np.abs(gfd).max())


def test_unpack_is_column_major():
    net = TwoLayerNet(2, 3, 2)
    U = np.arange(6.0).reshape(3, 2)
    V = 10 + np.arange(6.0).reshape(2, 3)
    theta = net.pack(U, V)
    assert theta[1] == U[1, 0] and theta[3] == U[0, 1]  # column-major
    U2, V2 = net.unpack(theta)
    np.testing.assert_array_equal(U2, U)
    np.testing.assert_array_equal(V2, V)


def test_push_through_equals_dense_solve():
    rng = np.random.default_rng(2)
    k, p = 7, 30
    J = rng.standard_normal((k, p))
    r = rng.standard_normal(k)
    g = rng.standard_normal(p)
    h = rng.uniform(0.1, 2.0, p)
    dense = -np.linalg.solve(J.T @ J / k + np.diag(h), J.T @ r + g)
    np.testing.assert_allclose(ggn_score_direction(J, r, g, h), dense, rtol=1e-10)


@pytest.mark.parametrize("nu", [2.0, 2.4, 2.6, 8.0 / 3.0])
def test_pseudo_huber_constant_is_the_smallest_valid(nu):
    s = np.concatenate([np.linspace(-50, 50, 200_001), np.geomspace(50, 1e6, 2000)])
    d2 = (1 + s * s) ** -1.5
    d3 = -3 * s * (1 + s * s) ** -2.5
    sup = np.max(np.abs(d3) / d2 ** (nu / 2))
    M = pseudo_huber_constant(nu)
    assert sup <= M * (1 + 1e-9)
    assert sup >= M * (1 - 1e-3)  # tight: a smaller M fails somewhere on the grid


def test_literature_pseudo_huber_pair_is_invalid_and_ours_holds():
    # (M, nu) = (2, 2.6) fails: the ratio exceeds 2 at s^2 = 10
    s = np.sqrt(10.0)
    ratio = 3 * s * (1 + s * s) ** (0.75 * 2.6 - 2.5)
    assert ratio > 2.5
    assert pseudo_huber_constant(2.6) == pytest.approx(ratio)
    with pytest.raises(ValueError, match="8/3"):
        pseudo_huber_constant(2.9)


def test_pseudo_huber_derivatives():
    ph = PseudoHuber(mu=0.7)
    t = np.linspace(-3, 3, 13)
    h = 1e-5
    np.testing.assert_allclose(ph.d1(t), (ph.value(t + h) - ph.value(t - h)) / (2 * h), atol=1e-9)
    np.testing.assert_allclose(ph.d2(t), (ph.d1(t + h) - ph.d1(t - h)) / (2 * h), atol=1e-8)


def test_teacher_student_training_loss_decreases():
    """Synthetic teacher-student (docs/theory.md#the-ggn-score-experiments (the synthetic one)), scaled down: the loss falls steadily."""
    rng = np.random.default_rng(3)
    n0, m = 5, 200
    X = rng.standard_normal((m, n0))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    teacher_U = rng.standard_normal((5, n0))
    teacher_U /= np.linalg.norm(teacher_U, axis=1, keepdims=True)
    Z = X @ teacher_U.T
    Y = (Z / (1 + np.exp(-Z))) @ rng.choice([-1.0, 1.0], size=5)
    net = TwoLayerNet(n0, 50, 1, "silu")
    solver = GGNScore(net, GGNScoreConfig(tau=1e-4, mu=np.sqrt(50), alpha=0.95))
    res = solver.fit(X, Y, theta0=net.init_params(rng), epochs=15)
    loss = np.asarray(res.history["loss"])
    assert loss[-1] < 0.05 * loss[0]
    assert np.all(np.diff(loss) < 0)
    assert all(0 < a <= 0.95 for a in res.info["step_sizes"])


def test_bad_settings():
    with pytest.raises(ValueError, match="activation"):
        TwoLayerNet(2, 3, 1, "tanh")
    with pytest.raises(ValueError, match="alpha"):
        GGNScoreConfig(alpha=0.0)
    with pytest.raises(ValueError, match="mu"):
        PseudoHuber(mu=-1.0)


def test_streaming_from_store_matches_in_memory_steps(tmp_path):
    """One window, one full batch per epoch: the streamed fit equals the in-memory one."""
    import dsketch
    from dsketch.solvers.ggn_score import fit_store

    rng = np.random.default_rng(4)
    m, n0, ny = 48, 3, 2
    X = rng.standard_normal((m, n0))
    Y = rng.standard_normal((m, ny))
    path = str(tmp_path / "xy.zarr")
    spec = dsketch.write_problem(path, X, np.zeros(m), extra={"Y": Y})
    net = TwoLayerNet(n0, 8, ny, "relu")
    solver = GGNScore(net, GGNScoreConfig(tau=1e-3, mu=2.0))
    theta0 = net.init_params(rng)
    streamed = fit_store(solver, spec, theta0=theta0, target="Y", epochs=3, batch_size=m)
    in_memory = solver.fit(X, Y, theta0=theta0, epochs=3)
    np.testing.assert_allclose(streamed.x, in_memory.x, rtol=1e-12, atol=1e-14)
    # mini-batches over several windows: the training loss still falls
    big = 2000
    Xb = rng.standard_normal((big, n0))
    Yb = np.tanh(Xb @ rng.standard_normal((n0, ny)))
    spec = dsketch.write_problem(str(tmp_path / "big.zarr"), Xb, np.zeros(big), extra={"Y": Yb})
    res = fit_store(solver, spec, theta0=theta0, target="Y", epochs=3, batch_size=32, seed=1)
    assert res.history["loss"][-1] < 0.5 * net.loss(theta0, Xb, Yb)


# --------------------------------------------------------------------------- Ostrovskii-Bach smoother


def _osba_package_form(t, mu):
    """The package's two-logarithm form (docs/theory.md#smoothers-and-their-constants), scaled: mu * phi(t / mu), t != 0."""
    u = t / mu
    s = np.sqrt(1 + 4 * u * u)
    phi = (s / 2 - 0.5 + 0.5 * np.log((2 * u - s + 1) / u) - np.log(2.0)
           + 0.5 * np.log((s - 1 + 2 * u) / u))
    return mu * phi


def _fd(f, t, h):
    """Five-point central difference."""
    return (-f(t + 2 * h) + 8 * f(t + h) - 8 * f(t - h) + f(t - 2 * h)) / (12 * h)


@pytest.mark.parametrize("mu", [0.05, 1.0, 30.0])
def test_ostrovskii_bach_value_and_derivatives(mu):
    ob = OstrovskiiBach(mu=mu)
    t = mu * np.concatenate([np.linspace(-4, 4, 41), [-0.013, 0.27, 7.5, -25.0]])
    t = t[t != 0]
    np.testing.assert_allclose(ob.value(t), _osba_package_form(t, mu), rtol=1e-9, atol=1e-12 * mu)
    h = 1e-3 * mu
    np.testing.assert_allclose(ob.d1(t), _fd(ob.value, t, h), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ob.d2(t), _fd(ob.d1, t, h), rtol=1e-7, atol=1e-9 / mu)
    np.testing.assert_allclose(ob.d3(t), _fd(ob.d2, t, h), rtol=1e-6, atol=1e-9 / mu**2)
    assert ob.value(np.array([0.0]))[0] == 0.0 and ob.d1(np.array([0.0]))[0] == 0.0
    assert ob.d2(np.array([0.0]))[0] == pytest.approx(1.0 / mu, rel=1e-15)  # phi''(0) = 1


def test_smoother_derivatives_are_stable_at_extreme_arguments():
    tiny, huge = np.array([1e-300, -1e-170, 1e-20]), np.array([1e150, -1e200, 1e300])
    for sm in (OstrovskiiBach(mu=2.0), PseudoHuber(mu=2.0)):
        # near 0: h ~ t^2 / (2 mu), h' ~ t / mu, h'' ~ 1 / mu (both smoothers)
        np.testing.assert_allclose(sm.value(tiny), tiny**2 / 4.0, rtol=1e-12)
        np.testing.assert_allclose(sm.d1(tiny), tiny / 2.0, rtol=1e-12)
        np.testing.assert_allclose(sm.d2(tiny), 0.5, rtol=1e-12)
        for f in (sm.value, sm.d1, sm.d2, sm.d3):
            assert np.all(np.isfinite(f(huge)))
        np.testing.assert_allclose(sm.d1(huge), np.sign(huge), rtol=1e-12)
        assert np.all(sm.value(huge) > 0) and np.all(sm.d2(huge) >= 0)
    ob = OstrovskiiBach(mu=2.0)
    # |t| -> inf: h(t) = |t| - (mu/2) log(|t|/mu) - mu/2 + o(1)
    np.testing.assert_allclose(ob.value(huge), np.abs(huge) - np.log(np.abs(huge) / 2.0) - 1.0, rtol=1e-14)
    # PseudoHuber's value is the same function as sqrt(mu^2 + t^2) - mu where that is accurate
    t = np.linspace(-5, 5, 11)
    np.testing.assert_allclose(PseudoHuber(mu=2.0).value(t), np.sqrt(4 + t * t) - 2, atol=1e-15)


@pytest.mark.parametrize("mu", [1.0, 0.1, 25.0])
def test_ostrovskii_bach_is_generalised_self_concordant_with_tight_constant(mu):
    """|h'''| <= M_mu h''^{3/2} with M_mu = 2 sqrt 2 mu^{-1/2}, and 2.7 mu^{-1/2} fails."""
    ob = OstrovskiiBach(mu=mu)
    t = mu * np.concatenate([np.linspace(-50, 50, 100_001), np.geomspace(50, 1e8, 4000)])
    d2 = ob.d2(t)
    d3 = ob.d3(t)
    # the closed-form third derivative agrees with finite differences of h'' on a sub-grid
    sub = t[::997]
    np.testing.assert_allclose(d3[::997], _fd(ob.d2, sub, 1e-4 * mu * np.maximum(1, np.abs(sub) / mu)),
                               rtol=1e-5, atol=1e-12 / mu**2)
    ratio = np.abs(d3) / d2**1.5
    M_mu = ob.M * mu ** (3 / 2 - 2)
    assert ob.M == pytest.approx(2 * np.sqrt(2), rel=1e-15)
    assert ratio.max() <= M_mu * (1 + 1e-9)
    assert np.any(ratio > 2.7 / np.sqrt(mu))  # a smaller constant is violated: the check can fail
    assert ratio.max() >= M_mu * (1 - 1e-6)  # sup = 2 sqrt 2 (approached as |t| -> inf)


def test_step_size_constant_for_nu_3_does_not_depend_on_p():
    mu = 7.0
    for hidden in (4, 40):
        net = TwoLayerNet(5, hidden, 2)
        solver = GGNScore(net, GGNScoreConfig(mu=mu, smoother="ostrovskii-bach"))
        assert solver.config.nu == 3.0
        assert solver.M_g == pytest.approx(2 * np.sqrt(2) / np.sqrt(mu), rel=1e-15)
    # pseudo-Huber keeps the p^{(3 - nu)/2} factor
    net = TwoLayerNet(5, 40, 2)
    ph = GGNScore(net, GGNScoreConfig(mu=mu))
    assert ph.M_g == pytest.approx(pseudo_huber_constant(2.6) * net.n_params ** 0.2 * mu ** (1.3 - 2), rel=1e-14)
    assert score_constant(OstrovskiiBach(mu=4.0), 10**6) == pytest.approx(np.sqrt(2), rel=1e-15)


def test_ostrovskii_bach_step_matches_hand_computation():
    rng = np.random.default_rng(5)
    net = TwoLayerNet(3, 5, 1, "silu")
    X, Y = rng.standard_normal((12, 3)), rng.standard_normal(12)
    theta = net.init_params(rng)
    tau, mu, alpha = 1e-2, 0.5, 0.9
    solver = GGNScore(net, GGNScoreConfig(tau=tau, mu=mu, alpha=alpha, smoother="ostrovskii-bach"))
    new, a_k = solver.step(theta, X, Y)
    # independent reference: h' and h'' of mu * phi(t / mu) by the unsimplified formulas
    u = theta / mu
    s = np.sqrt(1 + 4 * u * u)
    g = tau * 2 * u / (1 + s)
    h = 2 / (s * (1 + s)) / mu
    r, J = net.residual_jacobian(theta, X, Y)
    d = -np.linalg.solve(J.T @ J / J.shape[0] + np.diag(h), J.T @ r + g)
    eta = np.sqrt(np.sum(g * g / h))
    expected_a = min(1.0, alpha / (1 + 2 * np.sqrt(2) / np.sqrt(mu) * eta))
    assert a_k == pytest.approx(expected_a, rel=1e-12)
    np.testing.assert_allclose(new, theta + expected_a * d, rtol=1e-10, atol=1e-13)


def test_smoother_registry_and_errors():
    assert set(SMOOTHERS) == {"pseudo-huber", "ostrovskii-bach"}
    assert isinstance(make_smoother("ostrovskii-bach", mu=2.0), OstrovskiiBach)
    assert make_smoother("pseudo-huber", mu=2.0).nu == 2.6
    with pytest.raises(ValueError, match="valid smoothers: pseudo-huber, ostrovskii-bach"):
        GGNScoreConfig(smoother="huber")
    with pytest.raises(ValueError, match="nu = 3"):
        GGNScoreConfig(smoother="ostrovskii-bach", nu=2.6)
    with pytest.raises(ValueError, match="mu"):
        OstrovskiiBach(mu=0.0)
    assert GGNScoreConfig().nu == 2.6


def test_teacher_student_with_ostrovskii_bach_and_fit_network(tmp_path):
    import dsketch
    from dsketch.api import fit_network
    from dsketch.cli import main

    rng = np.random.default_rng(6)
    m, n0 = 300, 4
    X = rng.standard_normal((m, n0))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    Z = X @ rng.standard_normal((3, n0)).T
    y = (Z / (1 + np.exp(-Z))) @ np.array([1.0, -1.0, 1.0])
    net = TwoLayerNet(n0, 30, 1, "silu")
    theta0 = net.init_params(rng)
    res = GGNScore(net, GGNScoreConfig(tau=1e-4, mu=np.sqrt(30), alpha=0.95, smoother="ostrovskii-bach")).fit(
        X, y, theta0=theta0, epochs=10)
    loss = np.asarray(res.history["loss"])
    assert loss[-1] < 0.05 * loss[0] and np.all(np.diff(loss) < 0)
    path = str(tmp_path / "ts.zarr")
    spec = dsketch.write_problem(path, X, y)
    out = fit_network(spec, hidden=16, activation="silu", epochs=3, batch_size=300, smoother="ostrovskii-bach")
    assert out.info["smoother"] == "ostrovskii-bach" and out.info["nu"] == 3.0
    assert out.history["loss"][-1] < out.history["loss"][0]
    rc = main(["--quiet", "fit", "--model", "ggn-score", "--data", path, "--out", str(tmp_path / "r"), "--param",
               "smoother=ostrovskii-bach", "--param", "hidden=8", "--param", "epochs=2"])
    assert rc == 0
    assert dsketch.load_result(str(tmp_path / "r")).info["smoother"] == "ostrovskii-bach"
