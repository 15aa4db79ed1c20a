"""Sketched full-data GGN-SCORE against dense references built from TwoLayerNet.residual_jacobian."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import dsketch
from dsketch.errors import ChunkLayoutError, ConvergenceWarning
from dsketch.models.twolayer_net import TwoLayerNet
from dsketch.solvers.ggn_score import GGNScoreConfig, OstrovskiiBach
from dsketch.solvers.ggn_sketched import (
    SketchedGGN,
    merge_histograms,
    sampled_gram,
    score_histogram,
    water_level,
)

N, N0, N1 = 1500, 5, 8


def _teacher_student(rng: np.random.Generator, n: int, n0: int, ny: int) -> tuple[np.ndarray, np.ndarray]:
    X = rng.standard_normal((n, n0))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    Z = X @ rng.standard_normal((5, n0)).T
    return X, (Z / (1 + np.exp(-Z))) @ rng.choice([-1.0, 1.0], size=(5, ny))


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """One-output store (target b) and two-output store (member Y), same inputs."""
    rng = np.random.default_rng(11)
    X, Y = _teacher_student(rng, N, N0, 2)
    d = tmp_path_factory.mktemp("ggn_sketched")
    one = dsketch.write_problem(str(d / "one.zarr"), X, Y[:, 0])
    two = dsketch.write_problem(str(d / "two.zarr"), X, np.zeros(N), extra={"Y": Y})
    return {"X": X, "Y": Y, "one": one, "two": two}


def _dense(net, theta, X, Y):
    r, J = net.residual_jacobian(theta, X, Y)
    return net.loss(theta, X, Y), J.T @ r, J.T @ J / J.shape[0]


@pytest.mark.parametrize("activation", ["silu", "relu"])
@pytest.mark.parametrize("n_outputs", [1, 3])
def test_jacobian_sq_norms_against_formed_jacobian(activation, n_outputs):
    rng = np.random.default_rng(1)
    net = TwoLayerNet(4, 6, n_outputs, activation)
    theta = net.init_params(rng)
    X = rng.standard_normal((17, 4))
    _, J = net.residual_jacobian(theta, X, np.zeros((17, n_outputs)))
    ref = np.sum(J * J, axis=1).reshape(n_outputs, 17).sum(axis=0)  # rows: output-major
    np.testing.assert_allclose(net.jacobian_sq_norms(theta, X), ref, rtol=1e-13)


@pytest.mark.parametrize(("member", "ny"), [("b", 1), ("Y", 2)])
@pytest.mark.parametrize("sketch_size", [None, N, 10 * N])
def test_every_row_kept_gives_the_dense_ggn(client, stores, member, ny, sketch_size):
    net = TwoLayerNet(N0, N1, ny, "silu")
    theta = net.init_params(np.random.default_rng(2))
    Y = stores["Y"][:, :ny]
    spec = stores["one" if ny == 1 else "two"]
    solver = SketchedGGN(net, GGNScoreConfig(mu=2.0), sketch_size=sketch_size, target=member, block_rows=400)
    est = solver.update_gradient_hessian(spec, client, theta)
    loss, grad, G = _dense(net, theta, stores["X"], Y)
    assert est.level == np.inf and est.sketch_rows == N and est.expected_rows == N
    assert est.loss == pytest.approx(loss, rel=1e-13)
    np.testing.assert_allclose(est.gradient, grad, rtol=1e-11, atol=1e-14 * np.abs(grad).max())
    np.testing.assert_allclose(est.gram, G, rtol=1e-11, atol=1e-13 * np.abs(G).max())
    loss2, grad2 = solver.loss_gradient(spec, client, theta)
    assert loss2 == est.loss
    np.testing.assert_array_equal(grad2, est.gradient)


def test_sample_does_not_depend_on_workers_or_blocks(client, client1, stores):
    net = TwoLayerNet(N0, N1, 2, "silu")
    theta = net.init_params(np.random.default_rng(3))
    s = 10 * net.n_params
    cfg = GGNScoreConfig(tau=1e-3, mu=2.0)
    layouts = {"one block": [(0, N)], "two blocks": [(0, 700), (700, N)],
               "irregular": [(0, 1), (1, 333), (333, 1000), (1000, 1499), (1499, N)]}
    ests = {}
    for name, bounds in layouts.items():
        solver = SketchedGGN(net, cfg, sketch_size=s, target="Y", bounds=bounds, seed=5)
        ests[name] = solver.update_gradient_hessian(stores["two"], client, theta, iteration=3)
        other = solver.update_gradient_hessian(stores["two"], client1, theta, iteration=3)
        # same layout, 1 or 2 workers: bitwise identical
        assert other.loss == ests[name].loss and other.sketch_rows == ests[name].sketch_rows
        np.testing.assert_array_equal(other.gram, ests[name].gram)
        np.testing.assert_array_equal(other.gradient, ests[name].gradient)
    # in-process reference: the level from the whole data's histogram, one sampled_gram call
    q = net.jacobian_sq_norms(theta, stores["X"])
    level = water_level(score_histogram(q), s)
    ref = sampled_gram(net, theta, stores["X"], stores["Y"], 0, level=level, seed=5, iteration=3)
    for est in ests.values():  # other layouts: the same kept rows, sums equal up to rounding
        assert est.sketch_rows == int(ref["rows"])
        assert est.level == pytest.approx(level, rel=1e-12)
        np.testing.assert_allclose(est.gram, ref["gram"] / (2 * N), rtol=1e-10, atol=1e-14)
    assert 0.8 * s < ests["one block"].sketch_rows < 1.2 * s  # sqrt(s) ~ 22 rows of spread
    # a different iteration draws a different sample
    solver = SketchedGGN(net, cfg, sketch_size=s, target="Y", seed=5)
    assert not np.array_equal(solver.update_gradient_hessian(stores["two"], client, theta, iteration=4).gram,
                              ests["one block"].gram)
    # whole fits: bitwise the same theta on 1 and 2 workers
    fits = [SketchedGGN(net, cfg, sketch_size=s, target="Y", block_rows=500, persist=True).fit_store(
        stores["two"], c, theta0=theta, iters=2) for c in (client, client1)]
    np.testing.assert_array_equal(fits[0].x, fits[1].x)


def test_spectral_error_with_ten_p_rows(client, stores):
    """``||G~ - G|| / ||G|| <= 0.3`` at ``s = 10 p``.

    With ``p_i = min(1, c q_i)`` and ``c >= s / sum q``, ``E ||G~ - G||_F^2 <= (tr G)^2 / s``,
    so the RMS relative spectral error is at most ``srank(G) / sqrt(s)`` (``srank = tr G /
    ||G||``), here 0.21 (checked below). Over 200 seeds of this problem the error had mean
    0.10 and maximum 0.20; a sampler without the ``1/p_i`` reweighting errs by far more.
    """
    net = TwoLayerNet(N0, N1, 1, "silu")
    theta = net.init_params(np.random.default_rng(8))
    _, _, G = _dense(net, theta, stores["X"], stores["Y"][:, :1])
    s = 10 * net.n_params
    srank = np.trace(G) / np.linalg.norm(G, 2)
    assert srank / np.sqrt(s) < 0.25
    est = SketchedGGN(net, GGNScoreConfig(mu=2.0), sketch_size=s, block_rows=512).update_gradient_hessian(
        stores["one"], client, theta)
    assert est.expected_rows == pytest.approx(s, rel=1e-9)
    err = np.linalg.norm(est.gram - G, 2) / np.linalg.norm(G, 2)
    assert err < 0.3


def test_sampled_gram_is_unbiased():
    """Mean of 300 independent samples (iterations) against the dense ``J^T Q J``.

    One sample errs by about 0.1 (relative, spectral); the mean of 300 by about
    0.1 / sqrt(300) = 0.006, so 0.03 leaves a wide margin, while a bias of the size of the
    ``1/p_i`` weights would not be averaged away.
    """
    rng = np.random.default_rng(9)
    X, Y = _teacher_student(rng, 800, 4, 1)
    net = TwoLayerNet(4, 6, 1, "silu")
    theta = net.init_params(rng)
    _, J = net.residual_jacobian(theta, X, Y)
    G = J.T @ J
    level = water_level(score_histogram(net.jacobian_sq_norms(theta, X)), 3 * net.n_params)
    mean = sum(sampled_gram(net, theta, X, Y, 0, level=level, seed=1, iteration=it)["gram"] for it in range(300)) / 300
    assert np.linalg.norm(mean - G, 2) / np.linalg.norm(G, 2) < 0.03


def test_water_level_against_bisection():
    rng = np.random.default_rng(4)
    q = np.exp(2.0 * rng.standard_normal(5000))
    parts = [score_histogram(q[:1234]), score_histogram(q[1234:])]
    hist = merge_histograms(*parts)
    np.testing.assert_array_equal(hist["counts"], score_histogram(q)["counts"])
    for s in (10.0, 200.0, 2500.0, 4999.0):
        c = water_level(hist, s)
        size = np.minimum(1.0, c * q).sum()
        lo, hi = 0.0, 1e12  # exact water level by bisection on sum min(1, c q) = s
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if np.minimum(1.0, mid * q).sum() < s else (lo, mid)
        assert size <= s * (1 + 1e-9)
        assert size >= 0.99 * s
        assert c <= hi * (1 + 1e-9)
    assert water_level(hist, 5000) == np.inf
    assert water_level(score_histogram(np.zeros(4)), 2) == 0.0
    # no row saturates: c = s / sum q
    assert water_level(score_histogram(np.ones(10)), 3) == pytest.approx(0.3, rel=1e-12)


@pytest.mark.parametrize("smoother", ["pseudo-huber", "ostrovskii-bach"])
def test_fit_decreases_objective_and_reports_true_loss(client, stores, smoother):
    """A teacher-student store: the objective falls at every step, as fast as with the exact GGN."""
    net = TwoLayerNet(N0, 16, 1, "silu")
    theta0 = net.init_params(np.random.default_rng(6))
    cfg = GGNScoreConfig(tau=1e-4, mu=4.0, alpha=0.95, smoother=smoother)
    res = SketchedGGN(net, cfg, sketch_size=5 * net.n_params, block_rows=400, persist=True).fit_store(
        stores["one"], client, theta0=theta0, iters=4)
    h = res.history
    X, y = stores["X"], stores["Y"][:, 0]
    assert len(h["loss"]) == 5 and res.n_passes == 1 + 2 * 4 + 1
    assert h["data_loss"][0] == pytest.approx(net.loss(theta0, X, y), rel=1e-13)
    assert h["data_loss"][-1] == pytest.approx(net.loss(res.x, X, y), rel=1e-13)
    sm = cfg.make_smoother()
    # the history's loss is the objective (data loss plus the smoothed l1 term)
    assert h["loss"][-1] == pytest.approx(net.loss(res.x, X, y) + 1e-4 * sm.value(res.x).sum(), rel=1e-13)
    assert res.fun == h["loss"][-1]
    assert np.all(np.diff(h["loss"]) < 0)
    assert h["loss"][-1] < 0.5 * h["loss"][0]
    # the exact GGN (every row) takes nearly the same path: damping by diag(h'') dominates
    exact = SketchedGGN(net, cfg, sketch_size=None, block_rows=400).fit_store(
        stores["one"], client, theta0=theta0, iters=4)
    assert h["loss"][-1] == pytest.approx(exact.history["loss"][-1], rel=0.02)
    assert exact.history["sketch_rows"][0] == N
    assert all(0 < a <= 0.95 for a in h["step_size"][:-1])
    if smoother == "ostrovskii-bach":
        assert isinstance(sm, OstrovskiiBach)


def test_fit_network_sketched_mode(client, stores):
    from dsketch.api import fit_network

    res = fit_network(stores["one"], hidden=8, activation="silu", epochs=3, sketch_size=200,
                      cluster=dsketch.Cluster(client, block_rows=600), smoother="ostrovskii-bach")
    assert res.info["solver"] == "ggn-score-sketched" and res.info["sketch_size"] == 200
    assert res.history["loss"].shape == (4,) and np.all(np.diff(res.history["loss"]) < 0)
    assert res.n_passes == 7
    net = TwoLayerNet(N0, 8, 1, "silu")
    assert res.info["data_loss"] == pytest.approx(net.loss(res.x, stores["X"], stores["Y"][:, 0]), rel=1e-13)
    # a tiny sketch with backtracking: the objective never rises
    bt = fit_network(stores["one"], hidden=8, activation="silu", epochs=4, sketch_size=20,
                     cluster=dsketch.Cluster(client, block_rows=600), backtracking=True, scale_hessian_by_tau=True)
    assert np.all(np.diff(bt.history["loss"]) <= 0)


def test_bad_input(client, stores):
    net2 = TwoLayerNet(N0, N1, 2)
    cfg = GGNScoreConfig(mu=2.0)
    with pytest.raises(ValueError, match="n_outputs=2"):
        SketchedGGN(net2, cfg, sketch_size=10).update_gradient_hessian(stores["one"], client, net2.init_params(
            np.random.default_rng(0)))
    with pytest.raises(ValueError, match="sketch_size"):
        SketchedGGN(net2, cfg, sketch_size=0)
    net = TwoLayerNet(N0, N1, 1)
    with pytest.raises(ChunkLayoutError, match="contiguous"):
        SketchedGGN(net, cfg, sketch_size=10, bounds=[(0, 10), (11, N)]).update_gradient_hessian(
            stores["one"], client, net.init_params(np.random.default_rng(0)))
    with pytest.raises(ValueError, match="n_inputs"):
        SketchedGGN(TwoLayerNet(3, 4), cfg, sketch_size=10).loss_gradient(stores["one"], client, np.zeros(16))


def test_backtracking_keeps_small_sketches_monotone(client, stores):
    """tau-scaled H is tiny: a sketch of p rows overshoots without a line search."""
    net = TwoLayerNet(N0, 16, 1, "silu")
    theta0 = net.init_params(np.random.default_rng(6))
    cfg = GGNScoreConfig(tau=1e-4, mu=4.0, alpha=0.95, scale_hessian_by_tau=True)
    kw = {"sketch_size": net.n_params, "block_rows": 500, "seed": 3}
    with warnings.catch_warnings():  # the overshooting run may meet a numerically singular system
        warnings.simplefilter("ignore", ConvergenceWarning)
        plain = SketchedGGN(net, cfg, **kw).fit_store(stores["one"], client, theta0=theta0, iters=6)
    assert np.any(np.diff(plain.history["loss"]) > 0)
    safe = SketchedGGN(net, cfg, backtracking=True, **kw).fit_store(stores["one"], client, theta0=theta0, iters=6)
    obj = np.asarray(safe.history["loss"])
    assert np.all(np.diff(obj) <= 0) and obj[-1] < 0.5 * obj[0]
    steps = np.asarray(safe.history["step_size"][:-1])
    a_full = np.asarray(plain.history["step_size"][:1])
    halvings = np.round(np.log2(a_full[0] / steps)).astype(int)  # alpha_k stays ~0.95 at this tau
    assert safe.n_passes == 1 + 2 * 6 + int(halvings.sum())
    assert halvings.max() >= 1


def test_make_data_teacher_student_has_a_zero_loss_optimum(client, tmp_path):
    """`make-data --model ggn-score`: the recorded teacher fits the written targets exactly."""
    from dsketch.engine.datagen import make_problem
    from dsketch.store import read_block

    spec = make_problem(str(tmp_path / "ts.zarr"), model="ggn-score", n_samples=5000, n_features=6,
                        client=client, block_rows=2048, seed=3, noise=0.0)
    meta = spec.metadata["dsketch"]
    U, v = np.array(meta["teacher_U"]), np.array(meta["teacher_v"])
    blk = read_block(spec, 0, spec.n_samples)
    np.testing.assert_allclose(np.linalg.norm(blk.A, axis=1), 1.0, rtol=1e-12)
    Z = blk.A @ U.T
    np.testing.assert_allclose(blk.b, (Z / (1 + np.exp(-Z))) @ v, rtol=1e-12, atol=1e-14)
    # a student with the teacher's width, parameters set to the teacher (V absorbs 1/sqrt(n1)):
    net = TwoLayerNet(6, 5, 1, "silu")
    theta = net.pack(U, (v * np.sqrt(5))[None, :])
    assert net.loss(theta, blk.A, blk.b) < 1e-28
