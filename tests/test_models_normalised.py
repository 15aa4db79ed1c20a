"""ResNet+softmax and softmax-ReLU (dsketch.models.normalised): finite differences, an
independent dense v-space Hessian, merge invariance, extreme predictors and the validity
contract of the normaliser. Every random draw comes from ``np.random.default_rng(seed)``."""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
import scipy.sparse as sp
from model_helpers import design, fd, scalars_of, strict_fp
from scipy.optimize import brentq
from scipy.special import softmax

from dsketch.errors import ModelDomainError
from dsketch.models import (
    MODELS,
    ResNetSoftmaxRegression,
    SoftmaxRegression,
    SoftmaxReluRegression,
    get_model,
    loss_gradient_hessian,
)

KINDS = ["resnet", "reluA", "reluB"]
SHAPES = [(7, 3), (60, 6)]
H = 2e-4  # finite-difference step in x


def _model(kind: str):
    return {
        "resnet": lambda: get_model("resnet-softmax"),
        "reluA": lambda: get_model("softmax-relu"),
        "reluB": lambda: get_model("softmax-relu", reading="B"),
    }[kind]()


def _phi(kind: str, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """phi, phi', phi'' written directly (no shift), for the independent references."""
    pos = (v >= 0).astype(float)  # the models' convention at the kink
    if kind == "resnet":
        return np.exp(v) + v, np.exp(v) + 1.0, np.exp(v)
    if kind == "reluA":
        e = np.exp(np.maximum(v, 0.0))
        return e, e * pos, e * pos
    return np.maximum(v, 0.0), pos, np.zeros_like(v)


def _problem(kind: str, n: int, d: int, sparse: bool, seed: int):
    """Model, A, dense A, b, w, x: targets from a planted x, x moved away from it.

    For the ReLU readings x is redrawn until no (A x)_i lies within the reach of the
    finite-difference stencil (and at least 1e-3) of the kink at 0 (rows of A that are
    all zero stay at v = 0 and do not enter A^T anything), and at
    least three are positive (with one, reading B's f is locally constant).
    """
    rng = np.random.default_rng(seed)
    A, Ad = design(rng, n, d, sparse)
    model = _model(kind)
    xp = rng.standard_normal(d)
    eta = Ad @ xp
    b = model.sample_targets(eta, model.scalars(model.stats(eta, np.zeros(n), None)), rng,
                             noise=0.2)
    w = 0.3 / n * (1.0 + rng.random(n))  # weak regime: data and regulariser comparable
    margin = max(1e-3, 2.5 * H * np.max(np.abs(Ad)))
    live = np.any(Ad != 0, axis=1)  # an all-zero row has (A x)_i = 0 for every x
    for _ in range(1000):
        x = xp + 0.5 * rng.standard_normal(d)
        v = (Ad @ x)[live]
        if kind == "resnet" or (np.min(np.abs(v)) > margin and np.sum(v > 0) >= 3):
            break
    else:  # pragma: no cover
        raise AssertionError("no x away from the kinks")
    return model, A, Ad, b, w, x


# --------------------------------------------------------------------------------------
# derivatives
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize(("n", "d"), SHAPES)
@pytest.mark.parametrize("kind", KINDS)
def test_gradient_and_hessian_match_finite_differences(kind, n, d, sparse):
    model, A, Ad, b, w, x = _problem(kind, n, d, sparse, seed=n + d + 100 * sparse)
    _loss, grad, hess = loss_gradient_hessian(model, A, b, x, w)

    def f(z):
        return loss_gradient_hessian(model, A, b, z, w)[0]

    def g(z):
        return loss_gradient_hessian(model, A, b, z, w)[1]

    g_fd = fd(f, x, H).ravel()
    h_fd = fd(g, x, H)
    assert np.max(np.abs(g_fd - grad)) <= 1e-7 * np.max(np.abs(grad))
    assert np.max(np.abs(h_fd - hess)) <= 1e-7 * np.max(np.abs(hess))
    np.testing.assert_allclose(hess, hess.T, rtol=0, atol=1e-13 * np.max(np.abs(hess)))
    H_reg = Ad.T @ ((w * w)[:, None] * Ad)
    assert np.linalg.norm(hess - H_reg) > 0.1 * np.linalg.norm(hess)


def _dense_reference(kind, Ad, b, w, x):
    """Loss, gradient, Hessian from J and the second-derivative tensor of f = phi / alpha."""
    v = Ad @ x
    u, du, d2u = _phi(kind, v)
    alpha = u.sum()
    f = u / alpha
    c = f - b
    loss = 0.5 * c @ c + 0.5 * np.sum((w * v) ** 2)
    I = np.eye(v.size)
    J = I * (du / alpha)[None, :] - np.outer(f, du) / alpha  # df_k / dv_j
    # d2 f_k / dv_j dv_l
    T = (np.einsum("kj,jl,k->kjl", I, I, d2u) / alpha
         - (np.einsum("kj,k,l->kjl", I, du, du) + np.einsum("kl,k,j->kjl", I, du, du)) / alpha**2
         - np.einsum("k,jl,j->kjl", u, I, d2u) / alpha**2
         + 2 * np.einsum("k,j,l->kjl", u, du, du) / alpha**3)
    B = J.T @ J + np.einsum("k,kjl->jl", c, T)
    grad = Ad.T @ (J.T @ c + w * w * v)
    return loss, grad, Ad.T @ (B + np.diag(w * w)) @ Ad


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize(("n", "d"), SHAPES)
@pytest.mark.parametrize("kind", KINDS)
def test_gram_assembly_equals_independent_dense_reference(kind, n, d, sparse):
    model, A, Ad, b, w, x = _problem(kind, n, d, sparse, seed=7 * n + d + sparse)
    loss, grad, hess = loss_gradient_hessian(model, A, b, x, w)
    ref = _dense_reference(kind, Ad, b, w, x)
    np.testing.assert_allclose(loss, ref[0], rtol=1e-12)
    np.testing.assert_allclose(grad, ref[1], rtol=0, atol=1e-12 * np.max(np.abs(ref[1])))
    np.testing.assert_allclose(hess, ref[2], rtol=0, atol=1e-12 * np.max(np.abs(ref[2])))


def test_reading_a_with_positive_predictor_is_softmax():
    rng = np.random.default_rng(1)
    A = rng.random((30, 4)) + 0.1
    x, b, w = rng.random(4) + 0.1, rng.random(30) / 30, np.full(30, 0.01)
    for got, ref in zip(loss_gradient_hessian(SoftmaxReluRegression(), A, b, x, w),
                        loss_gradient_hessian(SoftmaxRegression(), A, b, x, w), strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-13, atol=1e-16)
    # at the default start x = 0 every v_i sits on the kink: the right-derivative convention
    # gives softmax's (non-zero) gradient and Hessian there, not a spurious stationary point
    zero = np.zeros(4)
    got = loss_gradient_hessian(SoftmaxReluRegression(), A, b, zero, w)
    ref = loss_gradient_hessian(SoftmaxRegression(), A, b, zero, w)
    assert np.max(np.abs(ref[1])) > 0
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-13, atol=1e-16)


@pytest.mark.parametrize("kind", KINDS)
def test_row_terms_shapes_core_and_missing_w(kind):
    model, A, Ad, b, w, x = _problem(kind, 11, 3, False, seed=5)
    eta = Ad @ x
    sc = scalars_of(model, eta, b, w)
    t = model.row_terms(eta, b, w, sc)
    assert t.grad_weight.shape == t.diag.shape == (11,) and t.lowrank.shape == (11, 2)
    C = model.core(sc)
    assert C.shape == (2, 2) and model.rank == 2 and model.uses_w
    np.testing.assert_array_equal(C, C.T)
    for a, z in zip(loss_gradient_hessian(model, A, b, x, None),
                    loss_gradient_hessian(model, A, b, x, np.zeros(11)), strict=True):
        np.testing.assert_array_equal(a, z)


# --------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------
def _block_stats(model, eta, b, cuts):
    edges = [0, *cuts, eta.size]
    return [model.stats(eta[a:z], b[a:z], None) for a, z in itertools.pairwise(edges)]


def _orders(model, parts):
    merge = model.merge_stats
    left = functools.reduce(merge, parts)
    right = functools.reduce(lambda acc, s: merge(s, acc), parts[::-1])
    mid = len(parts) // 2
    tree = merge(functools.reduce(merge, parts[:mid]), functools.reduce(merge, parts[mid:])) \
        if mid else left
    return [left, right, tree]


def _assert_scalars_close(got, ref, rtol=1e-13):
    assert got.keys() == ref.keys()
    for key in ref:
        if key == "fc":  # difference of two scalars: absolute accuracy relative to them
            assert abs(got[key] - ref[key]) <= rtol * (abs(ref["ff"]) + abs(ref["fb"]) + 1e-300)
        else:
            np.testing.assert_allclose(got[key], ref[key], rtol=rtol, err_msg=key)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("offset", [0.0, 300.0, -300.0, 690.0])
def test_merged_stats_equal_single_block(kind, offset):
    rng = np.random.default_rng(3)
    model = _model(kind)
    eta = rng.normal(0.0, 2.0, 60)
    eta[::3] += offset  # a third of the rows far from the rest
    if kind == "resnet" and offset < 0:
        eta[1::3] += 400.0  # keep alpha > 0
    b = rng.random(60) / 60
    ref = scalars_of(model, eta, b)
    assert ref["valid"] == 1.0
    blockings = [list(range(1, 60)), [1, 2, 30, 59],
                 sorted(rng.choice(np.arange(1, 60), size=7, replace=False).tolist()), []]
    for cuts in blockings:
        with strict_fp():
            merged = _orders(model, _block_stats(model, eta, b, cuts))
        for m in merged:
            _assert_scalars_close(model.scalars(m), ref)


@pytest.mark.parametrize("kind", KINDS)
def test_scalars_match_direct_sums(kind):
    rng = np.random.default_rng(8)
    model = _model(kind)
    eta, b = rng.normal(0.5, 1.5, 200), rng.random(200) / 200
    sc = scalars_of(model, eta, b)
    u = _phi(kind, eta)[0]
    f = u / u.sum()
    np.testing.assert_allclose(sc["ff"], f @ f, rtol=1e-13)
    np.testing.assert_allclose(sc["fb"], f @ b, rtol=1e-13)
    np.testing.assert_allclose(sc["log_alpha"], np.log(u.sum()), rtol=1e-14)


def test_empty_block_is_neutral_and_no_rows_is_an_error():
    for kind in KINDS:
        model = _model(kind)
        eta, b = np.array([0.3, -1.2, 0.8]), np.array([0.5, 0.1, 0.2])
        s = model.stats(eta, b, None)
        empty = model.stats(np.empty(0), np.empty(0), None)
        _assert_scalars_close(model.scalars(model.merge_stats(empty, s)), model.scalars(s))
        _assert_scalars_close(model.scalars(model.merge_stats(s, empty)), model.scalars(s))
        with pytest.raises(ModelDomainError, match="at least one row"):
            model.scalars(model.merge_stats(empty, empty))


# --------------------------------------------------------------------------------------
# stability: |eta| up to 700 and beyond
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_extreme_eta_gives_no_warnings_and_no_nan(kind):
    model = _model(kind)
    eta = np.array([-800.0, -700.0, -350.0, 0.0, 350.0, 700.0])
    b = np.array([0.0, 1.0, 0.0, 1.0, 1.0, 0.0])
    w = np.full(6, 0.5)
    for k in (slice(0, 6), slice(2, 5), slice(3, 6), slice(0, 3)):
        with strict_fp():
            parts = _block_stats(model, eta[k], b[k], [1])
            sc = model.scalars(functools.reduce(model.merge_stats, parts))
            loss = model.loss_terms(eta[k], b[k], w[k], sc)
        if k == slice(0, 3) and kind != "reluA":  # alpha <= 0: unavoidable
            assert sc["valid"] == 0.0 and loss == np.inf
            with pytest.raises(ModelDomainError, match="alpha"):
                model.row_terms(eta[k], b[k], w[k], sc)
            continue
        assert sc["valid"] == 1.0 and np.isfinite(loss)
        assert all(np.isfinite(v) for v in sc.values())
        with strict_fp():
            t = model.row_terms(eta[k], b[k], w[k], sc)
        for arr in (t.grad_weight, t.diag, t.lowrank):
            assert np.all(np.isfinite(arr))


@pytest.mark.parametrize("kind", ["resnet", "reluA"])
def test_blocks_at_plus_and_minus_700_match_softmax(kind):
    """Near v = 700, e^v + v = e^v (1 + 1e-301): ResNet and reading A are softmax there;
    a block near -700 adds at most ~1e-301 relative."""
    rng = np.random.default_rng(12)
    model, soft = _model(kind), SoftmaxRegression()
    hi, lo = 700.0 + rng.normal(0, 1, 50), -700.0 + rng.normal(0, 1, 50)
    bh, bl = rng.random(50) / 50, rng.random(50) / 50
    ref = scalars_of(soft, hi, bh)
    with strict_fp():
        for first, second in (((hi, bh), (lo, bl)), ((lo, bl), (hi, bh))):
            sc = model.scalars(model.merge_stats(model.stats(*first, None),
                                                 model.stats(*second, None)))
            for key in ("ff", "fb", "fc", "s", "log_alpha", "m", "S0"):
                np.testing.assert_allclose(sc[key], ref[key], rtol=1e-13, err_msg=key)
            t = model.row_terms(lo, bl, None, sc)
            assert np.all(np.isfinite(t.diag)) and np.all(np.isfinite(t.lowrank))
            assert np.max(np.abs(t.lowrank)) < 1e-290


def test_merge_over_a_million_rows_spread_over_700():
    """200 blocks whose maxima spread over [-700, 700] (ResNet), against the one-block result."""
    rng = np.random.default_rng(14)
    model = ResNetSoftmaxRegression()
    offsets = np.linspace(-700.0, 700.0, 200)
    blocks = [(o + rng.normal(0.0, 1.0, 5000), rng.random(5000)) for o in offsets]
    with strict_fp():
        merged = functools.reduce(model.merge_stats, [model.stats(e, bb, None) for e, bb in blocks])
        sc = model.scalars(merged)
    ref = scalars_of(model, np.concatenate([e for e, _ in blocks]),
                   np.concatenate([bb for _, bb in blocks]))
    _assert_scalars_close(sc, ref, rtol=1e-12)
    assert sc["n"] == 10**6 and sc["valid"] == 1.0


@pytest.mark.parametrize("kind", KINDS)
def test_non_finite_predictor_is_invalid_not_a_crash(kind):
    model = _model(kind)
    good = model.stats(np.array([0.5, 1.0]), np.zeros(2), None)
    for bad_val in (np.nan, np.inf, -np.inf):
        with strict_fp():
            bad = model.stats(np.array([0.3, bad_val, 1.0]), np.zeros(3), None)
            sc = model.scalars(model.merge_stats(good, bad))
            assert sc["valid"] == 0.0 and sc["bad"] == 1.0 and sc["n"] == 5
            assert model.loss_terms(np.array([0.5, 1.0]), np.zeros(2), None, sc) == np.inf
        with pytest.raises(ModelDomainError, match="1 of 5 entries are NaN or infinite"):
            model.row_terms(np.array([0.5, 1.0]), np.zeros(2), None, sc)


# --------------------------------------------------------------------------------------
# the normaliser's validity contract
# --------------------------------------------------------------------------------------
def test_resnet_nonpositive_alpha():
    model = ResNetSoftmaxRegression()
    eta, b = np.full(4, -1.0), np.zeros(4)  # e^-1 - 1 < 0
    with strict_fp():
        sc = scalars_of(model, eta, b)
    assert sc["valid"] == 0.0 and np.isnan(sc["ff"])
    assert model.loss_terms(eta, b, None, sc) == np.inf
    msg = (r"alpha\(x\) = sum\(exp\(Ax\) \+ Ax\) = -2\.52848 <= 0; the ResNet-softmax model "
           r"needs alpha > 0: start closer to the data \(x0\) or rescale A")
    with pytest.raises(ModelDomainError, match=msg):
        model.row_terms(eta, b, None, sc)
    with pytest.raises(ModelDomainError, match=msg):
        model.sample_targets(eta, sc, np.random.default_rng(0), noise=0.1)
    with pytest.raises(ModelDomainError, match=msg):
        loss_gradient_hessian(model, np.eye(4), b, eta)
    # alpha = 0 up to rounding: rejected as "too close to 0"
    v2 = brentq(lambda t: np.exp(t) + t + np.exp(1.0) + 1.0, -10.0, 0.0, xtol=1e-15)
    eta = np.array([1.0, v2 + 1e-11])  # alpha ~ 1e-11 > 0, its terms ~ 3.7
    sc = scalars_of(model, eta, np.zeros(2))
    assert 0 < sc["S0"] < 1e-8 * sc["Sa"]
    assert sc["valid"] == 0.0 and model.loss_terms(eta, np.zeros(2), None, sc) == np.inf
    with pytest.raises(ModelDomainError, match="too close to 0 relative to its terms"):
        model.row_terms(eta, np.zeros(2), None, sc)
    # a line search sees +inf at a bad trial point and a finite loss at a good one
    A = np.array([[0.1], [-1.0], [-1.0]])  # alpha(0) = 3, alpha(3) = -4.25
    for x, ok in ((0.0, True), (3.0, False)):
        eta = A @ np.array([x])
        sc = scalars_of(model, eta, np.zeros(3))
        assert np.isfinite(model.loss_terms(eta, np.zeros(3), None, sc)) == ok


def test_reading_b_needs_a_positive_predictor():
    model = SoftmaxReluRegression(reading="B")
    eta = np.array([-1.0, 0.0, -2.0])
    with strict_fp():
        sc = scalars_of(model, eta, np.zeros(3))
    assert sc["valid"] == 0.0 and model.loss_terms(eta, np.zeros(3), None, sc) == np.inf
    with pytest.raises(ModelDomainError, match=r"sum\(ReLU\(Ax\)\) = 0 <= 0; the normalised"):
        model.row_terms(eta, np.zeros(3), None, sc)
    # reading A is always valid, even with no positive entry: f is uniform
    scA = scalars_of(SoftmaxReluRegression(), eta, np.zeros(3))
    assert scA["valid"] == 1.0 and scA["ff"] == pytest.approx(1 / 3)


def test_reading_b_is_scale_invariant_and_warm_start_recovers_f():
    rng = np.random.default_rng(20)
    model = SoftmaxReluRegression(reading="B")
    n, d = 400, 5
    A = sp.random(n, d, density=0.7, format="csr", random_state=rng, data_rvs=rng.standard_normal)
    xp = rng.standard_normal(d)
    eta = A @ xp
    b = model.sample_targets(eta, scalars_of(model, eta, np.zeros(n)), rng, noise=0.0)
    assert np.isclose(loss_gradient_hessian(model, A, b, 3.0 * xp)[0], 0.0, atol=1e-30)
    parts = [model.init_terms(A[a:a + 100], b[a:a + 100], None) for a in range(0, n, 100)]
    total = {k: sum(p[k] for p in parts) for k in parts[0]}
    x0 = model.init_coef(total, d)
    np.testing.assert_allclose(x0, xp / np.maximum(eta, 0).sum(), rtol=1e-8)
    assert loss_gradient_hessian(model, A, b, x0)[0] < 1e-12 * (b @ b)
    # reading A and ResNet: no warm start
    assert SoftmaxReluRegression().init_terms(A, b, None) == {}
    np.testing.assert_array_equal(SoftmaxReluRegression().init_coef({}, d), np.zeros(d))
    assert not SoftmaxReluRegression().has_warm_start and model.has_warm_start


# --------------------------------------------------------------------------------------
# a few Newton steps reach the minimiser (weak regime)
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["resnet", "reluA"])
def test_damped_newton_converges(kind):
    rng = np.random.default_rng(50)
    n, d = 300, 4
    model = _model(kind)
    A = rng.standard_normal((n, d)) / np.sqrt(d)
    xp = rng.standard_normal(d)
    b = model.sample_targets(A @ xp, scalars_of(model, A @ xp, np.zeros(n)), rng, noise=0.05)
    w = np.full(n, model.default_w(n, "weak"))
    x = xp + 0.1 * rng.standard_normal(d)
    g0 = np.linalg.norm(loss_gradient_hessian(model, A, b, x, w)[1])
    for _ in range(30):
        loss, g, Hs = loss_gradient_hessian(model, A, b, x, w)
        p = -np.linalg.solve(Hs, g)
        t = 1.0
        while loss_gradient_hessian(model, A, b, x + t * p, w)[0] > loss + 1e-4 * t * g @ p:
            t /= 2
        x = x + t * p
    assert np.linalg.norm(loss_gradient_hessian(model, A, b, x, w)[1]) < 1e-9 * g0
    assert np.linalg.norm(x - xp) < 0.5 * np.linalg.norm(xp)


# --------------------------------------------------------------------------------------
# simulation hooks, regimes, registry
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_sample_targets(kind):
    model = _model(kind)
    eta = np.random.default_rng(30).normal(0.5, 1.0, 2001)
    cuts = [10, 11, 640]
    sc = model.scalars(functools.reduce(model.merge_stats, _block_stats(model, eta, 0 * eta, cuts)))
    whole = model.sample_targets(eta, sc, np.random.default_rng(0), noise=0.0)
    edges = [0, *cuts, eta.size]
    parts = [model.sample_targets(eta[a:z], sc, np.random.default_rng(0), noise=0.0)
             for a, z in itertools.pairwise(edges)]
    np.testing.assert_allclose(np.concatenate(parts), whole, rtol=1e-15)
    u = _phi(kind, eta)[0]
    np.testing.assert_allclose(whole, u / u.sum(), rtol=1e-13, atol=1e-15 * np.abs(whole).max())
    if kind == "reluA":
        np.testing.assert_allclose(whole, softmax(np.maximum(eta, 0)), rtol=1e-13)
    noisy = model.sample_targets(eta, sc, np.random.default_rng(1), noise=0.1)
    rel = noisy[whole != 0] / whole[whole != 0] - 1.0
    assert abs(rel.std() / 0.1 - 1.0) < 0.1
    model.check_targets(noisy)


def test_default_w():
    for model in (ResNetSoftmaxRegression(), SoftmaxReluRegression(), SoftmaxReluRegression("B")):
        assert model.default_w(1000, "weak") == pytest.approx(0.3 / 1000)
        assert model.default_w(1000, "strong") ** 2 == pytest.approx(13.0)
        with pytest.raises(ValueError, match="regime"):
            model.default_w(1000, "medium")


def test_reading_a_strong_regime_gives_positive_definite_hessian():
    """w^2 = 13, ||b||_inf <= 1: hess L >= sigma_min(A)^2 I (class docstring bound)."""
    rng = np.random.default_rng(40)
    model = SoftmaxReluRegression()
    w0 = model.default_w(30, "strong")
    A = rng.standard_normal((30, 4))
    smin2 = np.linalg.svd(A, compute_uv=False)[-1] ** 2
    for scale in (0.1, 1.0, 5.0):
        for _ in range(3):
            b, x = rng.uniform(-1.0, 1.0, 30), scale * rng.standard_normal(4)
            Hs = loss_gradient_hessian(model, A, b, x, np.full(30, w0))[2]
            assert np.linalg.eigvalsh(Hs)[0] >= smin2 * (1 - 1e-10)


def test_registry_and_parameters():
    assert {"resnet-softmax", "softmax-relu"} <= set(MODELS)
    assert isinstance(get_model("resnet-softmax"), ResNetSoftmaxRegression)
    m = get_model("softmax-relu", reading="B")
    assert isinstance(m, SoftmaxReluRegression) and m.reading == "B"
    assert m.describe() == {"model": "softmax-relu", "reading": "B"}
    assert get_model("softmax-relu").describe() == {"model": "softmax-relu", "reading": "A"}
    assert get_model("resnet-softmax").describe() == {"model": "resnet-softmax"}
    assert repr(m) == "SoftmaxReluRegression(reading='B')"
    assert repr(get_model("resnet-softmax")) == "ResNetSoftmaxRegression()"
    with pytest.raises(ValueError, match=r"reading must be one of \('A', 'B', 'C'\); got 'D'"):
        get_model("softmax-relu", reading="D")
    assert get_model("softmax-relu", reading="C").describe() == {"model": "softmax-relu", "reading": "C"}
    with pytest.raises(TypeError, match="reading"):
        get_model("resnet-softmax", reading="A")
