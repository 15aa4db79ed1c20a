"""Per-block model maths: references first (finite differences, hand-written formulas,
scikit-learn's optima), then invariants (merging, Gram assembly), then stability and
validation. Every random draw comes from an explicit ``np.random.default_rng(seed)``."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from model_helpers import design, fd, scalars_of, strict_fp
from scipy.special import expit, softmax

import dsketch.models as models_pkg
from dsketch.errors import ModelDomainError
from dsketch.models import (
    MODELS,
    ExpRegression,
    LeastSquares,
    LogisticRegression,
    PoissonRegression,
    SoftmaxRegression,
    get_model,
    loss_gradient_hessian,
)

# the normalised-map family (resnet-softmax, softmax-relu) has its own file
# the normalised and the paired models have their own test modules
#: The log-link GLM families (and the generic "glm") are tested in tests/test_glm_families.py.
GLM_FAMILIES = ("gamma", "inverse-gaussian", "tweedie", "negative-binomial", "glm")
#: multinomial (n x K predictor) is tested in tests/test_multinomial.py.
ALL = [m for m in MODELS if m not in ("resnet-softmax", "softmax-relu", "two-layer", "multinomial", *GLM_FAMILIES)]
GLMS = ["logistic", "poisson", "least-squares"]
EXPS = ["exp", "cosh", "sinh"]
SHAPES = [(7, 3), (60, 6)]
L2 = 1e-3


def _problem(name: str, n: int, d: int, sparse: bool, seed: int):
    """A, dense A, b, w, x for ``name``: targets drawn from a planted x, x moved away from it."""
    rng = np.random.default_rng(seed)
    A, Ad = design(rng, n, d, sparse)
    model = get_model(name, l2=L2) if name in GLMS else get_model(name)
    xp = rng.standard_normal(d)
    eta = Ad @ xp
    sc = model.scalars(model.stats(eta, np.zeros(n), None))
    b = model.sample_targets(eta, sc, rng, noise=0.2)
    if name == "softmax":
        w = 0.3 / n * (1.0 + rng.random(n))  # weak regime: data and regulariser comparable
    elif name in EXPS:
        w = rng.uniform(0.0, 0.5, n)
    else:
        w = None
    x = xp + 0.5 * rng.standard_normal(d)
    return model, A, Ad, b, w, x


# --------------------------------------------------------------------------------------
# (a) derivatives against finite differences
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize(("n", "d"), SHAPES)
@pytest.mark.parametrize("name", ALL)
def test_gradient_and_hessian_match_finite_differences(name, n, d, sparse):
    model, A, _, b, w, x = _problem(name, n, d, sparse, seed=n + d + 100 * sparse)
    loss, grad, hess = loss_gradient_hessian(model, A, b, x, w)

    def f(z):
        return loss_gradient_hessian(model, A, b, z, w)[0]

    def g(z):
        return loss_gradient_hessian(model, A, b, z, w)[1]

    h = 1e-3
    g_fd = fd(f, x, h).ravel()
    h_fd = fd(g, x, h)
    # scales: the softmax gradient is O(1/n) (docs/theory.md#regimes-of-the-row-weights), so compare relative
    # to the size of the quantity itself; five-point differences are accurate to ~1e-11 here.
    assert np.max(np.abs(g_fd - grad)) <= 1e-8 * np.max(np.abs(grad))
    assert np.max(np.abs(h_fd - hess)) <= 1e-8 * np.max(np.abs(hess))
    np.testing.assert_allclose(hess, hess.T, rtol=0, atol=1e-13 * np.max(np.abs(hess)))
    # curvature is not dominated by the regulariser (the data term matters)
    H_reg = np.diag(model.penalty(x)[2]) + (0 if w is None else (A.T @ sp.diags(w * w) @ A))
    assert np.linalg.norm(hess - H_reg) > 0.1 * np.linalg.norm(hess)


# --------------------------------------------------------------------------------------
# references: hand-written objectives, gradients and dense Hessians
# --------------------------------------------------------------------------------------
def _softmax_reference(Ad, b, w, x):
    """Loss, gradient and Hessian from the softmax Jacobian and its second derivative tensor."""
    v = Ad @ x
    f = softmax(v)
    c = f - b
    loss = 0.5 * c @ c + 0.5 * np.sum((w * v) ** 2)
    J = np.diag(f) - np.outer(f, f)  # df_k / dv_j
    I = np.eye(v.size)
    # d2 f_k / dv_j dv_l = f_k (I_kl - f_l)(I_kj - f_j) - f_k f_j (I_jl - f_l)
    T = (np.einsum("k,kl,kj->kjl", f, I - f[None, :], I - f[None, :])
         - np.einsum("k,j,jl->kjl", f, f, I - f[None, :]))
    B = J.T @ J + np.einsum("k,kjl->jl", c, T)
    grad = Ad.T @ (J.T @ c + w * w * v)
    return loss, grad, Ad.T @ (B + np.diag(w * w)) @ Ad


def _exp_reference(phi, Ad, b, w, x):
    v = Ad @ x
    u, du = {"exp": (np.exp(v), np.exp(v)), "cosh": (np.cosh(v), np.sinh(v)),
             "sinh": (np.sinh(v), np.cosh(v))}[phi]
    D = {"exp": 2 * np.exp(2 * v) - b * np.exp(v), "cosh": np.cosh(2 * v) - b * np.cosh(v),
         "sinh": np.cosh(2 * v) - b * np.sinh(v)}[phi]  # docs/theory.md#exp-cosh-and-sinh-regression, double angles
    loss = 0.5 * np.sum((u - b) ** 2) + 0.5 * np.sum((w * v) ** 2)
    return loss, Ad.T @ (du * (u - b) + w * w * v), Ad.T @ ((D + w * w)[:, None] * Ad)


def _glm_reference(name, Ad, b, x, l2):
    n, v = b.size, Ad @ x
    if name == "logistic":
        p = 1.0 / (1.0 + np.exp(-v))
        ell, d1, d2 = np.log1p(np.exp(v)) - b * v, p - b, p * (1 - p)
    elif name == "poisson":
        ell, d1, d2 = np.exp(v) - b * v, np.exp(v) - b, np.exp(v)
    else:
        ell, d1, d2 = 0.5 * (v - b) ** 2, v - b, np.ones_like(v)
    loss = ell.sum() / n + 0.5 * l2 * x @ x
    grad = Ad.T @ d1 / n + l2 * x
    hess = Ad.T @ (d2[:, None] * Ad) / n + l2 * np.eye(x.size)
    return loss, grad, hess


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize(("n", "d"), SHAPES)
@pytest.mark.parametrize("name", ALL)
def test_gram_assembly_equals_independent_dense_reference(name, n, d, sparse):
    model, A, Ad, b, w, x = _problem(name, n, d, sparse, seed=7 * n + d + sparse)
    loss, grad, hess = loss_gradient_hessian(model, A, b, x, w)
    if name == "softmax":
        ref = _softmax_reference(Ad, b, w, x)
    elif name in EXPS:
        ref = _exp_reference(name, Ad, b, w, x)
    else:
        ref = _glm_reference(name, Ad, b, x, L2)
    np.testing.assert_allclose(loss, ref[0], rtol=1e-12)
    np.testing.assert_allclose(grad, ref[1], rtol=0, atol=1e-12 * np.max(np.abs(ref[1])))
    np.testing.assert_allclose(hess, ref[2], rtol=0, atol=1e-12 * np.max(np.abs(ref[2])))


@pytest.mark.parametrize("name", ALL)
def test_row_terms_shapes_and_core(name):
    model, _, Ad, b, w, x = _problem(name, 11, 3, False, seed=5)
    eta = Ad @ x
    sc = scalars_of(model, eta, b, w)
    t = model.row_terms(eta, b, w, sc)
    assert t.grad_weight.shape == t.diag.shape == (11,)
    C = model.core(sc)
    assert C.shape == (model.rank, model.rank)
    np.testing.assert_array_equal(C, C.T)
    if model.rank:
        assert t.lowrank is not None and t.lowrank.shape == (11, model.rank)
    else:
        assert t.lowrank is None
    assert model.name == name and model.describe()["model"] == name


@pytest.mark.parametrize("name", ["softmax", *EXPS])
def test_missing_w_means_zero_w(name):
    model, A, _, b, _, x = _problem(name, 20, 4, False, seed=9)
    out_none = loss_gradient_hessian(model, A, b, x, None)
    out_zero = loss_gradient_hessian(model, A, b, x, np.zeros(20))
    for a, z in zip(out_none, out_zero, strict=True):
        np.testing.assert_array_equal(a, z)


# --------------------------------------------------------------------------------------
# GLMs against scikit-learn's optima (same objective scaling, see dsketch.models.glm)
# --------------------------------------------------------------------------------------
def _newton(model, A, b, d):
    x = np.zeros(d)
    for _ in range(50):
        _, g, H = loss_gradient_hessian(model, A, b, x)
        step = np.linalg.solve(H, g)
        x -= step
        if np.max(np.abs(step)) < 1e-14:
            break
    return x


@pytest.mark.parametrize("name", GLMS)
def test_glm_optimum_matches_scikit_learn(name):
    from sklearn.linear_model import LogisticRegression as SkLogistic
    from sklearn.linear_model import PoissonRegressor, Ridge

    n, d, l2 = 300, 5, 0.01
    model, A, _, b, _, _ = _problem(name, n, d, False, seed=21)
    model = get_model(name, l2=l2)
    if name == "logistic":
        sk = SkLogistic(C=1.0 / (l2 * n), fit_intercept=False, tol=1e-12, max_iter=1000)
    elif name == "poisson":
        sk = PoissonRegressor(alpha=l2, fit_intercept=False, tol=1e-12, max_iter=1000)
    else:
        sk = Ridge(alpha=l2 * n, fit_intercept=False)
    ref = np.ravel(sk.fit(A, b).coef_)
    x = _newton(model, A, b, d)
    assert np.max(np.abs(loss_gradient_hessian(model, A, b, x)[1])) < 1e-12
    np.testing.assert_allclose(x, ref, rtol=1e-5, atol=1e-5 * np.max(np.abs(ref)))


# --------------------------------------------------------------------------------------
# statistics: merging in any blocking and any order
# --------------------------------------------------------------------------------------
def _block_stats(model, eta, b, w, cuts):
    edges = [0, *cuts, eta.size]
    return [
        model.stats(eta[a:z], b[a:z], None if w is None else w[a:z])
        for a, z in zip(edges[:-1], edges[1:], strict=True)
    ]


def _orders(model, parts):
    merge = model.merge_stats
    left = functools.reduce(merge, parts)
    right = functools.reduce(lambda acc, s: merge(s, acc), parts[::-1])

    def tree(ps):
        return ps[0] if len(ps) == 1 else merge(tree(ps[: len(ps) // 2]), tree(ps[len(ps) // 2 :]))

    perm = np.random.default_rng(len(parts)).permutation(len(parts))
    return [left, right, tree(parts), functools.reduce(merge, [parts[i] for i in perm])]


def _assert_scalars_close(got, ref, rtol=2e-14):
    assert set(got) == set(ref)
    scale = abs(ref.get("ff", 0.0)) + abs(ref.get("fb", 0.0))
    for key, val in ref.items():
        if key in ("fc", "s"):  # differences of ff and fb: absolute error ~ eps (ff + |fb|)
            assert abs(got[key] - val) <= 1e-14 * scale, key
        else:
            np.testing.assert_allclose(got[key], val, rtol=rtol, err_msg=key)


@pytest.mark.parametrize("name", ALL)
def test_merged_stats_equal_single_block(name):
    model, _, Ad, b, w, x = _problem(name, 60, 4, False, seed=3)
    eta = Ad @ x
    ref = scalars_of(model, eta, b, w)
    rng = np.random.default_rng(4)
    blockings = [
        list(range(1, 60)),  # single-row blocks
        [1, 2, 30, 59],  # single rows at both ends
        sorted(rng.choice(np.arange(1, 60), size=7, replace=False).tolist()),
        [],
    ]
    for cuts in blockings:
        for merged in _orders(model, _block_stats(model, eta, b, w, cuts)):
            _assert_scalars_close(model.scalars(merged), ref)


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(["softmax", "exp", "sinh"]),
    cuts=st.lists(st.integers(0, 40), max_size=8).map(lambda c: sorted(set(c))),
    seed=st.integers(0, 2**16),
)
def test_merge_property_any_blocking(name, cuts, seed):
    rng = np.random.default_rng(seed)
    model = get_model(name)
    eta = rng.normal(0.0, 3.0, 40) + rng.uniform(-600, 600)
    b = rng.random(40)
    ref = scalars_of(model, eta, b)
    (merged, *_) = _orders(model, _block_stats(model, eta, b, None, cuts))
    _assert_scalars_close(model.scalars(merged), ref, rtol=1e-13)


def test_empty_block_is_neutral_and_no_rows_is_an_error():
    for name in ALL:
        model = get_model(name)
        eta, b = np.array([0.3, -1.2]), np.array([0.5, 0.1])
        s = model.stats(eta, b, None)
        empty = model.stats(np.empty(0), np.empty(0), None)
        _assert_scalars_close(model.scalars(model.merge_stats(empty, s)), model.scalars(s))
        _assert_scalars_close(model.scalars(model.merge_stats(s, empty)), model.scalars(s))
        with pytest.raises(ModelDomainError, match="at least one row"):
            model.scalars(model.merge_stats(empty, empty))


# --------------------------------------------------------------------------------------
# stability: |eta| ~ 700, 10^8 rows, no floating-point warnings
# --------------------------------------------------------------------------------------
def test_softmax_scalars_are_shift_invariant_at_700():
    rng = np.random.default_rng(11)
    model = SoftmaxRegression()
    eta = rng.normal(0.0, 2.0, 500)
    b = rng.random(500) / 500
    ref = scalars_of(model, eta, b)
    for shift in (700.0, -700.0):
        with strict_fp():
            parts = _block_stats(model, eta + shift, b, None, [1, 100, 250, 499])
            got = model.scalars(functools.reduce(model.merge_stats, parts))
        for key in ("ff", "fb", "S0"):
            np.testing.assert_allclose(got[key], ref[key], rtol=1e-11, err_msg=key)
        assert abs(got["fc"] - ref["fc"]) <= 1e-11 * (ref["ff"] + ref["fb"])
        np.testing.assert_allclose(got["log_alpha"], ref["log_alpha"] + shift, rtol=1e-14)


def test_softmax_blocks_at_plus_and_minus_700():
    """Rows 1400 below the max carry f = 0 exactly; the merged result is the top block's."""
    rng = np.random.default_rng(12)
    model = SoftmaxRegression()
    hi, lo = 700.0 + rng.normal(0, 1, 50), -700.0 + rng.normal(0, 1, 50)
    bh, bl = rng.random(50), rng.random(50)
    w = np.full(50, 0.01)
    with strict_fp():
        for order in ((hi, bh, lo, bl), (lo, bl, hi, bh)):
            first, second = model.stats(order[0], order[1], w), model.stats(order[2], order[3], w)
            merged = model.merge_stats(first, second)
            sc = model.scalars(merged)
            loss_lo = model.loss_terms(lo, bl, w, sc)
            t = model.row_terms(lo, bl, w, sc)
            _assert_scalars_close({k: v for k, v in sc.items() if k != "n"},
                                  {k: v for k, v in scalars_of(model, hi, bh).items() if k != "n"})
            assert sc["n"] == 100
    np.testing.assert_allclose(loss_lo, 0.5 * bl @ bl + 0.5 * np.sum((w * lo) ** 2), rtol=1e-14)
    assert np.all(np.isfinite(t.grad_weight)) and np.all(np.isfinite(t.diag))
    np.testing.assert_array_equal(t.lowrank, 0.0)


def test_softmax_hundred_million_rows():
    """1000 rows near 700 replicated 2^17 times (1.3e8 rows), plus a block near -700.

    Replicating every row k times gives exactly: f -> f / k, so ||f||^2 -> ||f||^2 / k,
    <f, b> unchanged, log alpha -> log alpha + log k.
    """
    rng = np.random.default_rng(13)
    model = SoftmaxRegression()
    eta = 700.0 - np.abs(rng.normal(0.0, 3.0, 1000))
    b = rng.random(1000) * 1e-3
    base = model.stats(eta, b, None)
    ref = model.scalars(base)
    with strict_fp():
        merged, k = base, 1
        while 1000 * k < 10**8:
            merged, k = model.merge_stats(merged, merged), 2 * k
        merged = model.merge_stats(model.stats(-eta, b, None), merged)
        sc = model.scalars(merged)
    assert sc["n"] == 1000 * k + 1000 and k == 2**17
    np.testing.assert_allclose(sc["ff"], ref["ff"] / k, rtol=1e-14)
    np.testing.assert_allclose(sc["fb"], ref["fb"], rtol=1e-14)
    np.testing.assert_allclose(sc["log_alpha"], ref["log_alpha"] + np.log(k), rtol=1e-15)
    assert all(np.isfinite(v) for v in sc.values())


def test_softmax_many_distinct_blocks_match_exact_sums():
    """2 * 10^6 rows in 200 blocks whose maxima spread over [-700, 700], against fsum."""
    import math

    rng = np.random.default_rng(14)
    model = SoftmaxRegression()
    offsets = np.linspace(-700.0, 700.0, 200)
    offsets[-1] = offsets[-2] + 0.5  # two blocks that both matter
    blocks = [(o + rng.normal(0.0, 1.0, 10_000), rng.random(10_000)) for o in offsets]
    with strict_fp():
        merged = functools.reduce(model.merge_stats, [model.stats(e, bb, None) for e, bb in blocks])
        sc = model.scalars(merged)
        m = max(float(e.max()) for e, _ in blocks)
        with np.errstate(under="ignore"):
            ex = [np.exp(e - m) for e, _ in blocks]
    S0 = math.fsum(np.concatenate(ex))
    S1 = math.fsum(np.concatenate([x * x for x in ex]))
    S2 = math.fsum(np.concatenate([x * bb for x, (_, bb) in zip(ex, blocks, strict=True)]))
    np.testing.assert_allclose(sc["S0"], S0, rtol=1e-14)
    np.testing.assert_allclose(sc["ff"], S1 / S0**2, rtol=1e-14)
    np.testing.assert_allclose(sc["fb"], S2 / S0, rtol=1e-14)


@pytest.mark.parametrize("name", ALL)
def test_extreme_eta_gives_no_warnings_and_no_nan(name):
    model = get_model(name)
    eta = np.array([-800.0, -700.0, -350.0, 0.0, 350.0, 700.0])
    b = np.array([0.0, 1.0, 0.0, 1.0, 1.0, 0.0])
    w = np.full(6, 0.5) if model.uses_w else None
    losses = []
    for k in (slice(0, 6), slice(2, 5), slice(0, 3)):  # all; |eta| <= 350; only negative
        wk = None if w is None else w[k]
        with strict_fp():
            sc = scalars_of(model, eta[k], b[k], wk)
            losses.append(model.loss_terms(eta[k], b[k], wk, sc))
            t = model.row_terms(eta[k], b[k], wk, sc)
        assert not np.isnan(losses[-1])
        assert not np.any(np.isnan(t.grad_weight)) and not np.any(np.isnan(t.diag))
        assert not any(np.isnan(v) for v in sc.values())
    # the loss is +inf exactly where the float64 range is left: phi(700)^2 and e^800
    if name in EXPS:
        with strict_fp():  # even an infinite predictor merges quietly: phi_rms = +inf
            s_inf = model.stats(np.array([np.inf, 0.0]), np.zeros(2), None)
            merged = model.merge_stats(model.stats(eta, b, None), s_inf)
            assert model.scalars(model.merge_stats(merged, s_inf))["phi_rms"] == np.inf
        assert losses[0] == np.inf and np.isfinite(losses[1])
        assert np.isfinite(losses[2]) == (name == "exp")  # cosh(-800), sinh(-800) overflow
    elif name == "poisson":
        assert np.isfinite(losses[0]) and losses[0] > 1e300
    else:
        assert all(np.isfinite(losses))


def test_softmax_rejects_non_finite_eta():
    with pytest.raises(ModelDomainError, match="finite"):
        SoftmaxRegression().stats(np.array([0.0, np.nan]), np.zeros(2), None)
    with pytest.raises(ModelDomainError, match="finite"):
        SoftmaxRegression().stats(np.array([0.0, np.inf]), np.zeros(2), None)


# --------------------------------------------------------------------------------------
# data simulation hooks
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["softmax", *EXPS])
def test_sample_targets_do_not_depend_on_blocking(name):
    model = get_model(name)
    eta = np.random.default_rng(30).normal(0.0, 1.0, 101)
    cuts = [10, 11, 64]
    parts = _block_stats(model, eta, np.zeros(101), None, cuts)
    sc = model.scalars(functools.reduce(model.merge_stats, parts))
    whole = model.sample_targets(eta, sc, np.random.default_rng(0), noise=0.0)
    edges = [0, *cuts, 101]
    parts = [model.sample_targets(eta[a:z], sc, np.random.default_rng(0), noise=0.0)
             for a, z in zip(edges[:-1], edges[1:], strict=True)]
    np.testing.assert_allclose(np.concatenate(parts), whole, rtol=1e-15)
    if name == "softmax":
        np.testing.assert_allclose(whole, softmax(eta), rtol=1e-14)
    else:
        np.testing.assert_allclose(whole, getattr(np, name)(eta), rtol=1e-15)


@pytest.mark.parametrize("name", ALL)
def test_sample_targets_distribution(name):
    n, noise = 20_000, 0.1
    model = get_model(name)
    eta = np.random.default_rng(31).normal(0.0, 1.0, n)
    sc = scalars_of(model, eta, np.zeros(n))
    b = model.sample_targets(eta, sc, np.random.default_rng(32), noise=noise)
    again = model.sample_targets(eta, sc, np.random.default_rng(32), noise=noise)
    np.testing.assert_array_equal(b, again)
    assert b.shape == (n,) and b.dtype == np.float64
    model.check_targets(b)
    if name == "softmax":
        rel = b / softmax(eta) - 1.0
        assert abs(rel.std() / noise - 1.0) < 0.03 and abs(rel.mean()) < 4 * noise / np.sqrt(n)
    elif name in EXPS:
        z = (b - getattr(np, name)(eta)) / (noise * np.sqrt(np.mean(getattr(np, name)(eta) ** 2)))
        assert abs(z.std() - 1.0) < 0.03 and abs(z.mean()) < 4 / np.sqrt(n)
    elif name == "least-squares":
        z = (b - eta) / noise
        assert abs(z.std() - 1.0) < 0.03 and abs(z.mean()) < 4 / np.sqrt(n)
    else:
        p = expit(eta)
        mean, var = (p, p * (1 - p)) if name == "logistic" else (np.exp(eta), np.exp(eta))
        assert abs(b.sum() - mean.sum()) < 4.5 * np.sqrt(var.sum())  # CLT, ~7e-6 false alarm
        assert np.all(b == np.round(b)) and b.min() >= 0


def test_default_w_weak_regime():
    for name in ["softmax", *EXPS]:
        assert get_model(name).default_w(1000, "weak") == pytest.approx(0.3 / 1000)
        with pytest.raises(ValueError, match="regime"):
            get_model(name).default_w(1000, "medium")


def test_softmax_strong_regime_gives_positive_definite_hessian():
    """w^2 = 13 and ||b||_inf <= 1: hess L >= sigma_min(A)^2 I at every x (docs/theory.md#softmax-regression)."""
    rng = np.random.default_rng(40)
    w0 = SoftmaxRegression.default_w(30, "strong")
    assert w0**2 == pytest.approx(13.0)
    A = rng.standard_normal((30, 4))
    smin2 = np.linalg.svd(A, compute_uv=False)[-1] ** 2
    for scale in (0.1, 1.0, 5.0):
        b = rng.uniform(-1.0, 1.0, 30)
        x = scale * rng.standard_normal(4)
        H = loss_gradient_hessian(SoftmaxRegression(), A, b, x, np.full(30, w0))[2]
        assert np.linalg.eigvalsh(H)[0] >= smin2 * (1 - 1e-10)


@pytest.mark.parametrize("name", EXPS)
def test_exp_strong_regime_bound_is_the_grid_minimum(name):
    """default_w's w^2 - 1 equals -min over v and |b| <= 3 of the non-w part of D (grid)."""
    model = get_model(name)
    w2 = model.default_w(100, "strong") ** 2
    v = np.linspace(-6.0, 6.0, 200_001)
    t = model.row_terms
    grid_min = min(float(t(v, np.full(v.size, bb), None, {}).diag.min()) for bb in (-3.0, 3.0))
    assert w2 - 1.0 == pytest.approx(max(0.0, -grid_min), abs=1e-6)
    rng = np.random.default_rng(41)
    A = rng.standard_normal((40, 3)) / np.sqrt(3)
    smin2 = np.linalg.svd(A, compute_uv=False)[-1] ** 2
    for _ in range(5):
        b, x = rng.uniform(-3, 3, 40), rng.standard_normal(3)
        H = loss_gradient_hessian(model, A, b, x, np.full(40, np.sqrt(w2)))[2]
        assert np.linalg.eigvalsh(H)[0] >= smin2 * (1 - 1e-10)


# --------------------------------------------------------------------------------------
# validation, registry
# --------------------------------------------------------------------------------------
def test_check_targets():
    with pytest.raises(ValueError, match=r"\{0, 1\}; 2 of 5 targets \(first at row 1: 0\.5\)"):
        LogisticRegression().check_targets(np.array([0.0, 0.5, 1.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match=r"Poisson.*1 of 3 targets \(first at row 2: -1\.0\)"):
        PoissonRegression().check_targets(np.array([0.0, 3.0, -1.0]))
    with pytest.raises(ValueError, match="Poisson"):
        PoissonRegression().check_targets(np.array([np.nan, 1.0]))
    LogisticRegression().check_targets(np.array([0.0, 1.0, 1.0]))
    PoissonRegression().check_targets(np.array([0.0, 2.5]))
    for name in ["softmax", "least-squares", *EXPS]:
        get_model(name).check_targets(np.array([-3.0, 0.2, 7.0]))


@pytest.mark.parametrize("cls", [LogisticRegression, PoissonRegression, LeastSquares])
def test_glm_parameters(cls):
    for bad in (-1.0, np.nan, np.inf, "abc", None):
        with pytest.raises(ValueError, match="l2 must be"):
            cls(l2=bad)
    m = cls(l2=0.5)
    assert m.describe() == {"model": m.name, "l2": 0.5}
    assert cls().l2 == (0.0 if cls is LeastSquares else 1e-4)  # least squares unpenalised, as scikit-learn
    val, g, h = m.penalty(np.array([1.0, -2.0]))
    assert val == pytest.approx(1.25)
    np.testing.assert_array_equal(g, [0.5, -1.0])
    np.testing.assert_array_equal(h, [0.5, 0.5])


def test_registry():
    assert set(MODELS) == {"softmax", "exp", "cosh", "sinh", "logistic", "poisson", "least-squares",
                           "multinomial", "resnet-softmax", "softmax-relu", "two-layer", *GLM_FAMILIES}
    assert isinstance(get_model("cosh"), ExpRegression) and get_model("cosh").phi == "cosh"
    assert get_model("logistic", l2=0.1).l2 == 0.1
    with pytest.raises(ValueError, match="valid models: softmax, exp"):
        get_model("ridge")
    with pytest.raises(TypeError, match="foo"):
        get_model("logistic", foo=1)
    with pytest.raises(TypeError, match="phi"):
        get_model("exp", phi="cosh")
    with pytest.raises(TypeError, match="l2"):
        get_model("softmax", l2=1.0)
    with pytest.raises(ValueError, match="phi must be one of"):
        ExpRegression(phi="tanh")
    with pytest.raises(ValueError, match="l2 must be"):
        get_model("poisson", l2=-2)


def test_models_package_does_not_import_dask():
    for path in Path(models_pkg.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(nm.split(".")[0] in ("dask", "distributed") for nm in names), path.name
