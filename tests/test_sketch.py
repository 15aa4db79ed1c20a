"""Tests of dsketch.sketch: counter-based randomness, the six sketches and the reference loop.

Order: references first (exact Gram, explicit S), then invariants (block
split, dot test), then probabilistic properties with tolerances justified in comments.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from dsketch.errors import ChunkLayoutError, DTypeError, NonFiniteError
from dsketch.sketch import (
    SKETCHES,
    CountSketch,
    GaussianSketch,
    LeverageSampler,
    SketchContext,
    block_bounds,
    leverage_size,
    make_sketch,
    prepare_context,
    sketch_gram,
)
from dsketch.sketch import random as crng
from dsketch.sketch.embed import osnap_matrix

KINDS = list(SKETCHES)
RANDOM_KINDS = [k for k in KINDS if k != "exact"]
SAMPLERS = ["uniform", "rownorm", "leverage"]


def dense_gram(A, D):
    A = A.toarray() if sp.issparse(A) else np.asarray(A, dtype=np.float64)
    return A.T @ (np.asarray(D)[:, None] * A)


def spectral_error(G, M):
    """``||M^{-1/2} (G - M) M^{-1/2}||_2`` on the range of ``M`` (pseudo-inverse)."""
    w, V = np.linalg.eigh(M)
    keep = w > w.max() * 1e-12
    W = V[:, keep] / np.sqrt(w[keep])
    E = W.T @ (G - M) @ W
    return float(np.abs(np.linalg.eigvalsh(0.5 * (E + E.T))).max())


def small_problem(rng, n=300, d=4, sparse=False, negative=True):
    A = rng.standard_normal((n, d))
    A[rng.choice(n, 3, replace=False)] *= 20.0  # some coherence
    if sparse:
        A = sp.csr_matrix(A * (rng.random((n, d)) < 0.5))
    D = rng.uniform(0.2, 2.0, n)
    if negative:
        D[rng.random(n) < 0.3] *= -1.0
    D[rng.random(n) < 0.05] = 0.0
    return A, D


# ------------------------------------------------------------------ counter-based randomness
def test_uniform_is_uniform_and_open():
    u = crng.uniform(7, 3, 1, np.arange(50_000))
    assert u.dtype == np.float64 and u.min() > 0.0 and u.max() < 1.0
    # KS with n = 5e4: a correct generator gives p < 1e-3 with probability 1e-3 (fixed keys)
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    for stream in (0, 2, 9):
        assert stats.kstest(crng.uniform(11, 0, stream, np.arange(10**9, 10**9 + 20_000)), "uniform").pvalue > 1e-3


def test_streams_and_neighbours_are_independent():
    n = 40_000
    rows = np.arange(n)
    base = crng.uniform(1, 0, 1, rows)
    others = [
        crng.uniform(1, 0, 1, rows + 1),  # neighbouring rows
        crng.uniform(1, 1, 1, rows),  # next iteration
        crng.uniform(1, 0, 2, rows),  # another stream
        crng.uniform(2, 0, 1, rows),  # another seed
    ]
    for other in others:
        # correlation of independent uniforms has sd 1/sqrt(n) = 0.005; 5 sd bound
        assert abs(np.corrcoef(base, other)[0, 1]) < 5 / math.sqrt(n)
        # and pairs fill a 10 x 10 grid evenly (chi-square, 99 dof)
        h, _, _ = np.histogram2d(base, other, bins=10, range=[[0, 1], [0, 1]])
        assert stats.chisquare(h.ravel()).pvalue > 1e-3


def test_standard_normal_moments_and_columns():
    z = crng.standard_normal(3, 1, 4, np.arange(2_000), 50)
    assert z.shape == (2_000, 50)
    x = z.ravel()  # 1e5 draws: sd of mean 0.0032, of variance 0.0045, of skew 0.0077, of kurtosis 0.015
    assert abs(x.mean()) < 0.016 and abs(x.var() - 1) < 0.025
    assert abs(stats.skew(x)) < 0.04 and abs(stats.kurtosis(x)) < 0.08
    assert stats.kstest(x, "norm").pvalue > 1e-3
    assert abs(np.corrcoef(z[:, 0], z[:, 1])[0, 1]) < 5 / math.sqrt(2_000)


def test_integers_and_signs():
    k = crng.integers(5, 0, 3, np.arange(60_000), 7)
    assert k.min() == 0 and k.max() == 6
    assert stats.chisquare(np.bincount(k, minlength=7)).pvalue > 1e-3
    s = crng.signs(5, 0, 3, np.arange(60_000))
    assert set(np.unique(s)) == {-1.0, 1.0} and abs(s.mean()) < 5 / math.sqrt(60_000)


def test_values_do_not_depend_on_the_split():
    rows = np.arange(1_000, 3_000)
    whole = crng.standard_normal(42, 2, 4, rows, 9)
    parts = np.vstack([crng.standard_normal(42, 2, 4, rows[a:b], 9) for a, b in [(0, 1), (1, 700), (700, 2000)]])
    np.testing.assert_array_equal(whole, parts)
    perm = np.random.default_rng(0).permutation(rows.size)
    np.testing.assert_array_equal(crng.standard_normal(42, 2, 4, rows[perm], 9), whole[perm])
    # keyed by (row, column): a wider draw extends a narrower one
    np.testing.assert_array_equal(crng.standard_normal(42, 2, 4, rows, 20)[:, :9], whole)
    np.testing.assert_array_equal(crng.uniform(42, 2, 4, rows), crng.uniform_cols(42, 2, 4, rows, 3)[:, 0])
    u = crng.uniform(42, 2, 4, rows)
    np.testing.assert_array_equal(u[5:17], crng.uniform(42, 2, 4, rows[5:17]))


def test_randomness_raises_no_warning_and_checks_input():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = crng.uniform(-(2**70) + 3, 2**40, 2**33, np.array([0, 2**62, 2**63 - 1]))
        b = crng.uniform(-(2**70) + 3, 2**40, 2**33, np.array([0, 2**62, 2**63 - 1], dtype=np.uint64))
    np.testing.assert_array_equal(a, b)
    bad = [((0, 0, 0, np.array([-1, 2])), ValueError, "non-negative"), ((0, 0, 0, [0.5]), TypeError, "indices"),
           ((1.5, 0, 0, [1]), TypeError, "seed"), ((0, -1, 0, [1]), ValueError, "iteration")]
    for args, error, match in bad:
        with pytest.raises(error, match=match):
            crng.uniform(*args)
    with pytest.raises(ValueError, match="high"):
        crng.integers(0, 0, 0, np.arange(3), 0)


# ------------------------------------------------------------------ references
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_exact_equals_dense_gram(sparse, dtype):
    A, D = small_problem(np.random.default_rng(0), sparse=sparse)
    A = A.astype(dtype)
    res = sketch_gram("exact", A, D, seed=0, sketch_size=1, bounds=[0, 17, 150, 300])
    M = dense_gram(A.astype(np.float64), D)
    rtol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(res.gram, M, rtol=rtol, atol=rtol * np.abs(M).max())
    assert res.gram.dtype == np.float64 and res.n_rows == 300 and res.kind == "exact"
    np.testing.assert_array_equal(res.gram, res.gram.T)


@pytest.mark.parametrize("kind", ["countsketch", "gaussian"])
@pytest.mark.parametrize("sparse", [False, True])
def test_embedding_matrix_free_equals_materialised(kind, sparse):
    A, D = small_problem(np.random.default_rng(1), n=120, d=3, sparse=sparse)
    sk = make_sketch(kind)
    ctx = SketchContext(seed=9, iteration=2, n_samples=120, n_features=3, sketch_size=16)
    # S built here straight from the counter-based generator, independently of the sketch
    rows = np.arange(120)
    if kind == "countsketch":
        S = np.zeros((16, 120))
        S[crng.integers(9, 2, 2, rows, 16), rows] = crng.signs(9, 2, 3, rows)
    else:
        S = crng.standard_normal(9, 2, 4, rows, 16).T / 4.0
    np.testing.assert_array_equal(sk.matrix(ctx), S)
    Ad = A.toarray() if sparse else A
    Yp, Yn = np.sqrt(np.maximum(D, 0))[:, None] * Ad, np.sqrt(np.maximum(-D, 0))[:, None] * Ad
    Y = sp.csr_matrix(Yp) if sparse else Yp
    applied = sum(sk.apply(Y[a:b], a, ctx) for a, b in [(0, 1), (1, 50), (50, 120)])
    np.testing.assert_allclose(applied, S @ Yp, rtol=1e-12, atol=1e-12)
    res = sketch_gram(sk, A, D, seed=9, iteration=2, sketch_size=16, bounds=[0, 1, 50, 120])
    ref = (S @ Yp).T @ (S @ Yp) - (S @ Yn).T @ (S @ Yn)
    np.testing.assert_allclose(res.gram, ref, rtol=1e-10, atol=1e-10 * np.abs(ref).max())
    assert res.n_rows == 16 and res.diagnostics["has_negative"]


@pytest.mark.parametrize("kind", ["countsketch", "gaussian"])
def test_embedding_dot_test(kind):
    """<S_b u, v> = <u, S_b^T v> for a block that does not start at row 0 (pylops dottest)."""
    rng = np.random.default_rng(2)
    sk = make_sketch(kind, **({"max_chunk_bytes": 2048} if kind == "gaussian" else {}))
    ctx = SketchContext(seed=3, iteration=0, n_samples=1000, n_features=2, sketch_size=12)
    u, v = rng.standard_normal((37, 2)), rng.standard_normal((12, 2))
    assert np.sum(sk.apply(u, 400, ctx) * v) == pytest.approx(np.sum(u * sk.adjoint(v, 400, 37, ctx)), rel=1e-12)
    np.testing.assert_allclose(sk.adjoint(v, 400, 37, ctx), sk.matrix(ctx, 400, 37).T @ v, rtol=1e-12)


def test_gaussian_chunking_does_not_change_the_result():
    A, D = small_problem(np.random.default_rng(3), n=200, d=3)
    big = sketch_gram(GaussianSketch(), A, D, seed=1, sketch_size=10)
    tiny = sketch_gram(GaussianSketch(max_chunk_bytes=1024), A, D, seed=1, sketch_size=10)  # 3 rows a chunk
    np.testing.assert_allclose(tiny.gram, big.gram, rtol=1e-12, atol=1e-12 * np.abs(big.gram).max())


def test_osnap_matrix_structure():
    nz = osnap_matrix(500, 1000, 24, 4, seed=1, iteration=0).toarray() != 0
    assert all((nz[6 * g : 6 * g + 6].sum(axis=0) == 1).all() for g in range(4))  # one entry per group
    np.testing.assert_allclose(np.abs(osnap_matrix(5, 0, 24, 4, seed=1, iteration=0).data), 0.5)


# ------------------------------------------------------------------ invariants
# one block, uneven blocks, single-row blocks, many blocks
SPLITS = [None, [0, 1, 7, 93, 94, 250, 300], list(range(301)), [*range(0, 300, 13), 300]]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sparse", [False, True])
def test_block_split_invariance(kind, sparse):
    A, D = small_problem(np.random.default_rng(4), sparse=sparse)
    sk = make_sketch(kind, **({"scores": "approx"} if kind == "leverage" else {}))
    results, kept = [], []
    for bounds in SPLITS:
        results.append(sketch_gram(sk, A, D, seed=5, iteration=1, sketch_size=40, bounds=bounds))
        if kind in SAMPLERS:
            ctx = prepare_context(sk, A, D, seed=5, iteration=1, sketch_size=40, bounds=bounds)
            pairs = block_bounds(bounds, 300)
            kept.append(np.concatenate([sk.sample(A[a:b], D[a:b], a, ctx).rows for a, b in pairs]))
    ref = results[0]
    for res in results[1:]:
        np.testing.assert_allclose(res.gram, ref.gram, rtol=1e-11, atol=1e-11 * np.abs(ref.gram).max())
        assert res.n_rows == ref.n_rows
    for rows in kept[1:]:
        np.testing.assert_array_equal(rows, kept[0])
    if kind in SAMPLERS:
        assert 0 < kept[0].size < 300 and np.all(D[kept[0]] != 0)


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(1, 79), max_size=12, unique=True), kind=st.sampled_from(RANDOM_KINDS))
def test_block_split_invariance_property(cuts, kind):
    A, D = small_problem(np.random.default_rng(14), n=80, d=3, sparse=True)
    ref = sketch_gram(kind, A, D, seed=2, sketch_size=12)
    res = sketch_gram(kind, A, D, seed=2, sketch_size=12, bounds=[0, *sorted(cuts), 80])
    np.testing.assert_allclose(res.gram, ref.gram, rtol=1e-11, atol=1e-11 * np.abs(ref.gram).max())
    assert res.n_rows == ref.n_rows


@pytest.mark.parametrize("kind", RANDOM_KINDS)
def test_seed_and_iteration_change_the_draw(kind):
    A, D = small_problem(np.random.default_rng(5))
    a = sketch_gram(kind, A, D, seed=1, sketch_size=30).gram
    np.testing.assert_array_equal(a, sketch_gram(kind, A, D, seed=1, sketch_size=30).gram)
    assert not np.allclose(a, sketch_gram(kind, A, D, seed=2, sketch_size=30).gram)
    assert not np.allclose(a, sketch_gram(kind, A, D, seed=1, iteration=1, sketch_size=30).gram)


@pytest.mark.parametrize("kind", KINDS)
def test_zero_weights_and_no_sqrt_of_negatives(kind):
    A, D = small_problem(np.random.default_rng(6))
    with np.errstate(all="raise"):  # a sqrt of a negative weight would raise here
        res = sketch_gram(kind, A, -np.abs(D), seed=0, sketch_size=50)
        zero = sketch_gram(kind, A, np.zeros(300), seed=0, sketch_size=50)
    assert np.isfinite(res.gram).all() and np.linalg.eigvalsh(res.gram).max() <= 1e-9 * np.abs(res.gram).max()
    np.testing.assert_array_equal(zero.gram, 0.0)
    if kind in SAMPLERS:
        assert zero.n_rows == 0
        ctx = prepare_context(kind, A, D, seed=0, sketch_size=299)
        assert np.all(D[make_sketch(kind).sample(A, D, 0, ctx).rows] != 0)


@pytest.mark.parametrize("kind", RANDOM_KINDS)
def test_float32_stays_close_to_float64(kind):
    A, D = small_problem(np.random.default_rng(7), negative=False)
    r64 = sketch_gram(kind, A, D, seed=3, sketch_size=60)
    r32 = sketch_gram(kind, A.astype(np.float32), D, seed=3, sketch_size=60)
    assert r32.gram.dtype == np.float64
    # same rows are drawn (p differs by ~1e-7 relative, far from any u_i here); float32 rounding
    np.testing.assert_allclose(r32.gram, r64.gram, rtol=1e-4, atol=1e-4 * np.abs(r64.gram).max())


# ------------------------------------------------------------------ unbiasedness
@pytest.mark.parametrize("kind", RANDOM_KINDS + ["leverage-approx"])
def test_unbiased_with_negative_weights(kind):
    A, D = small_problem(np.random.default_rng(8), n=200, d=3, negative=True)
    sk = make_sketch("leverage", scores="approx") if kind == "leverage-approx" else make_sketch(kind)
    K = 300
    G = np.array([sketch_gram(sk, A, D, seed=k, sketch_size=25, bounds=[0, 77, 200]).gram for k in range(K)])
    M = dense_gram(A, D)
    # Tolerance: the K draws are independent, so each entry of their mean is close to normal
    # with standard error se = sd / sqrt(K) (sd estimated from the same draws). A 5 se bound
    # fails by chance with probability ~6e-7 per entry, ~1e-5 over the suite; the floor
    # 1e-9 * ||M|| covers entries whose every draw is exact (p = 1 rows only).
    se = G.std(axis=0, ddof=1) / math.sqrt(K)
    assert np.all(np.abs(G.mean(axis=0) - M) <= 5 * se + 1e-9 * np.abs(M).max())
    # and the draws do vary, so the check has power
    assert np.all(se[np.abs(M) > 0] > 0)


# ------------------------------------------------------------------ spectral guarantee
def _coherent(sparse):
    """n = 20000, d = 10, Gaussian rows (sparse: 30% kept) and 5 rows of norm x 1e3."""
    rng = np.random.default_rng(123)
    n, d = 20_000, 10
    A = rng.standard_normal((n, d))
    if sparse:
        A *= rng.random((n, d)) < 0.3
    heavy = rng.choice(n, 5, replace=False)
    A[heavy] = rng.standard_normal((5, d)) * 1e3
    D = rng.uniform(0.5, 2.0, n)
    return (sp.csr_matrix(A) if sparse else A), D


@pytest.fixture(scope="module", params=[False, True], ids=["dense", "sparse"])
def coherent(request):
    A, D = _coherent(request.param)
    return A, D, dense_gram(A, D)


CASES = [
    ("leverage", {"scores": "exact"}, 0.5),
    ("leverage", {"scores": "exact"}, 0.25),
    ("leverage", {"scores": "approx"}, 0.5),
    ("leverage", {"scores": "approx"}, 0.25),
    ("leverage", {"scores": "approx", "jl_dim": 6}, 0.5),  # JL step active (r = 10 > 6)
    ("rownorm", {}, 0.5),
    ("rownorm", {}, 0.25),
    ("countsketch", {}, 0.5),
    ("gaussian", {}, 0.5),
]


@pytest.mark.parametrize(("kind", "params", "eps"), CASES, ids=[f"{k}-{p}-{e}" for k, p, e in CASES])
def test_spectral_guarantee_on_coherent_matrix(coherent, kind, params, eps):
    A, D, M = coherent
    delta = 0.1
    sk = make_sketch(kind, **params)
    s = sk.size_for(eps, delta, 10)
    for seed in range(3):
        res = sketch_gram(sk, A, D, seed=seed, sketch_size=s, bounds=[0, 4_999, 12_000, 20_000])
        assert spectral_error(res.gram, M) <= eps, (kind, seed)
        rows = res.diagnostics.get("expected_rows", res.n_rows)
        # uniform sampling with the same expected number of rows misses or over-weights the
        # heavy rows (error ~1 or >> 1)
        uni = sketch_gram("uniform", A, D, seed=seed, sketch_size=max(1, round(rows)))
        assert spectral_error(uni.gram, M) > eps, (kind, seed)


def test_documented_sizes():
    assert leverage_size(0.5, 0.1, 10) == math.ceil(30 * math.log(200) / 0.25) == 636
    assert make_sketch("leverage", scores="exact").size_for(0.25, 0.1, 10) == 2544
    assert make_sketch("leverage", scores="approx").size_for(0.5, 0.1, 10) == 4 * 636
    assert make_sketch("leverage").size_for(0.5, 0.1, 64) == leverage_size(0.5, 0.1, 64)
    assert make_sketch("leverage").size_for(0.5, 0.1, 65) == 4 * leverage_size(0.5, 0.1, 65)
    assert make_sketch("countsketch").size_for(0.5, 0.1, 10) == 4400
    g = ((math.sqrt(10) + math.sqrt(2 * math.log(20))) / (math.sqrt(1.5) - 1)) ** 2
    assert make_sketch("gaussian").size_for(0.5, 0.1, 10) == math.ceil(g) == 624
    assert make_sketch("uniform").size_for(0.5, 0.1, 10, coherence=2.0) == 1272
    assert make_sketch("rownorm").size_for(0.5, 0.1, 10, condition=3.0) == 1908
    assert make_sketch("exact").size_for(0.5, 0.1, 10) == 0
    for kind in RANDOM_KINDS:  # smaller eps or delta never asks for fewer rows
        sk = make_sketch(kind)
        assert sk.size_for(0.25, 0.1, 10) > sk.size_for(0.5, 0.1, 10) >= sk.size_for(0.5, 0.2, 10)


def test_uniform_and_plain_rownorm_at_their_data_dependent_sizes():
    """Uniform at ``coherence = n max tau / d`` and row-norm without water-filling at
    ``condition = ||A||_F^2 / (d lambda_min)`` meet their documented guarantee."""
    rng = np.random.default_rng(9)
    n, d = 20_000, 10
    A = rng.standard_normal((n, d))
    D = rng.uniform(0.5, 2.0, n)
    M = dense_gram(A, D)
    Q, _ = np.linalg.qr(np.sqrt(D)[:, None] * A)
    mu = n * (Q * Q).sum(axis=1).max() / d
    kappa = float((D * (A * A).sum(axis=1)).sum() / (d * np.linalg.eigvalsh(M)[0]))
    plain = make_sketch("rownorm", waterfill=False)
    s_uni = make_sketch("uniform").size_for(0.5, 0.1, d, coherence=mu)
    for seed in range(3):
        uni = sketch_gram("uniform", A, D, seed=seed, sketch_size=s_uni)
        assert spectral_error(uni.gram, M) <= 0.5
        rn = sketch_gram(plain, A, D, seed=seed, sketch_size=plain.size_for(0.5, 0.1, d, condition=kappa))
        assert spectral_error(rn.gram, M) <= 0.5


def test_rownorm_waterfilling_spends_the_budget():
    A, D = _coherent(False)
    s = 636
    ctx = prepare_context("rownorm", A, D, seed=0, sketch_size=s)
    q = D * (A * A).sum(axis=1)
    p = np.minimum(1.0, ctx.info["c"] * q)
    assert ctx.info["c"] >= s / q.sum()
    assert s * 0.97 <= p.sum() <= s * (1 + 1e-9)  # the grid leaves at most a few percent unused
    res = sketch_gram("rownorm", A, D, seed=0, sketch_size=s)
    assert res.diagnostics["expected_rows"] == pytest.approx(p.sum(), rel=1e-9)
    all_rows = sketch_gram("rownorm", A, D, seed=0, sketch_size=20_000)  # s >= n: every row kept
    assert all_rows.n_rows == 20_000
    np.testing.assert_allclose(all_rows.gram, dense_gram(A, D), rtol=1e-10)


def test_leverage_scores_exact_and_approximate():
    rng = np.random.default_rng(10)
    n, d = 20_000, 80
    A = rng.standard_normal((n, d))
    A[rng.choice(n, 20, replace=False)] *= 300.0
    D = rng.uniform(0.5, 2.0, n)
    Q, _ = np.linalg.qr(np.sqrt(D)[:, None] * A)
    tau = (Q * Q).sum(axis=1)
    ex, ap = LeverageSampler(scores="exact"), LeverageSampler(scores="approx")
    for seed in range(2):
        c_ex = prepare_context(ex, A, D, seed=seed, sketch_size=100, bounds=[0, 9_000, n])
        c_ap = prepare_context(ap, A, D, seed=seed, sketch_size=100, bounds=[0, 9_000, n])
        np.testing.assert_allclose(ex.leverage_scores(A, D, c_ex), tau, rtol=1e-8, atol=1e-12)
        ratio = ap.leverage_scores(A, D, c_ap) / tau
        # APPROX_INFLATION = 4 assumes tau~ >= tau / 4; measured minimum ~0.3 at jl_dim = 32
        assert ratio.min() >= 1 / LeverageSampler.APPROX_INFLATION and c_ap.info["rank"] == d
        assert 0.8 < np.median(ratio) < 1.25


@pytest.mark.parametrize("scores", ["exact", "approx"])
def test_leverage_rank_deficient(scores):
    rng = np.random.default_rng(11)
    n = 5_000
    A = rng.standard_normal((n, 5))
    A = np.hstack([A, A[:, :1] + A[:, 1:2]])  # rank 5 of 6 columns
    D = rng.uniform(0.5, 2.0, n)
    sk = LeverageSampler(scores=scores)
    s = sk.size_for(0.5, 0.1, 6)
    res = sketch_gram(sk, A, D, seed=0, sketch_size=s)
    assert res.diagnostics["rank"] == 5 and np.isfinite(res.gram).all()
    assert spectral_error(res.gram, dense_gram(A, D)) <= 0.5


# ------------------------------------------------------------------ bad input
BAD_PARAMS = [
    ("srht", {}, ValueError, "valid sketches: exact, uniform, rownorm"),
    ("uniform", {"scores": "exact"}, TypeError, "no parameter"),
    ("leverage", {"jl": 3}, TypeError, "no parameter"),
    ("leverage", {"scores": "fast"}, ValueError, "scores"),
    ("leverage", {"jl_dim": 0}, ValueError, "jl_dim"),
    ("gaussian", {"max_chunk_bytes": 10}, ValueError, "max_chunk_bytes"),
    ("rownorm", {"waterfill": "yes"}, TypeError, "waterfill"),
]


@pytest.mark.parametrize(("kind", "params", "error", "match"), BAD_PARAMS)
def test_bad_parameters(kind, params, error, match):
    with pytest.raises(error, match=match):
        make_sketch(kind, **params)


@pytest.mark.parametrize("kind", KINDS)
def test_bad_size_arguments(kind):
    for eps, delta, d, match in [(0.0, 0.1, 10, "eps"), (1.0, 0.1, 10, "eps"), (-0.5, 0.1, 10, "eps"),
                                 (1.5, 0.1, 10, "eps"), (0.5, 1.0, 10, "delta"), (0.5, 0.1, 0, "n_features")]:
        with pytest.raises(ValueError, match=match):
            make_sketch(kind).size_for(eps, delta, d)
    extra = {"uniform": "coherence", "rownorm": "condition"}.get(kind)
    if extra:
        with pytest.raises(ValueError, match=extra):
            make_sketch(kind).size_for(0.5, 0.1, 10, **{extra: 0.5})


def test_bad_sizes_and_data():
    A, D = small_problem(np.random.default_rng(12), n=50, d=3)
    nan_D = np.where(np.arange(50) == 7, np.nan, D)
    ctx = SketchContext(0, 0, 50, 3, 5)
    cases = [
        (lambda: sketch_gram("uniform", A, D, seed=0, sketch_size=-5), ValueError, "sketch_size"),
        (lambda: sketch_gram("uniform", A, D, seed=0, sketch_size=0), ValueError, "sketch_size"),
        (lambda: sketch_gram("uniform", A, D, seed=0, sketch_size=2.5), TypeError, "sketch_size"),
        (lambda: SketchContext(0, -1, 5, 2, 3), ValueError, "iteration"),
        (lambda: sketch_gram("countsketch", A, nan_D, seed=0, sketch_size=4), NonFiniteError, "row 7"),
        (lambda: sketch_gram("exact", A, D[:-1], seed=0, sketch_size=1), ValueError, "shape"),
        (lambda: sketch_gram("exact", A.astype(complex), D, seed=0, sketch_size=1), DTypeError, "real"),
        (lambda: make_sketch("uniform").pre_block(0, A, D, np.ones(50), 0, ctx), ValueError, "no preliminary"),
        (lambda: make_sketch("leverage").pre_block(0, None, D, np.ones(50), 0, ctx), ValueError, "reads A"),
    ] + [
        (lambda b=b: sketch_gram("exact", A, D, seed=0, sketch_size=1, bounds=b), ChunkLayoutError, "block")
        for b in ([0, 10, 10, 50], [0, 20], [5, 50], [(0, 10), (11, 50)])
    ]
    for call, error, match in cases:
        with pytest.raises(error, match=match):
            call()


def test_registry_and_partials_contract():
    A, D = small_problem(np.random.default_rng(13), n=60, d=3)
    D = np.abs(D)  # no negative weights: embeddings send the float 0.0 for "neg"
    assert set(SKETCHES) == {"exact", "uniform", "rownorm", "leverage", "countsketch", "gaussian"}
    for kind in KINDS:
        sk = make_sketch(kind)
        assert sk.kind == kind and len(sk.pre_stage_reads_A) == sk.n_pre_stages
        assert make_sketch(sk) is sk and repr(sk).startswith(type(sk).__name__)
        ctx = prepare_context(sk, A, D, seed=0, sketch_size=10)
        parts = [sk.block(A[a:b], D[a:b], a, ctx) for a, b in [(0, 30), (30, 60)]]
        assert set(parts[0]) == set(parts[1])
        for val in parts[0].values():
            assert isinstance(val, float) or (isinstance(val, np.ndarray) and val.dtype == np.float64)
    assert isinstance(make_sketch("countsketch"), CountSketch)
    assert make_sketch("countsketch").block(A, D, 0, SketchContext(0, 0, 60, 3, 10))["neg"] == 0.0
    assert make_sketch("rownorm", waterfill=False).n_pre_stages == 1
    assert LeverageSampler().pre_stage_reads_A == (True,)
    assert make_sketch("rownorm").pre_stage_reads_A == (False, False)


def test_leverage_context_from_gram_gives_the_scores_of_that_gram():
    """Scores rebuilt from a Gram (no pass over A) against QR leverage scores of sqrt|D| A."""
    from dsketch.sketch import LeverageSampler, SketchContext

    rng = np.random.default_rng(21)
    n, d = 3000, 6
    A = rng.standard_normal((n, d)) * np.array([1, 1, 1, 30, 0.1, 5.0])
    A[:5] *= 40.0  # a few high-leverage rows
    D = rng.uniform(0.05, 0.25, n)
    M = A.T @ (D[:, None] * A)

    def ridge_scores(lam):
        """Ridge leverage scores D_i a_i^T (M + lam I)^{-1} a_i by QR of [sqrt(D) A; sqrt(lam) I]."""
        Q, _ = np.linalg.qr(np.vstack([np.sqrt(D)[:, None] * A, np.sqrt(lam) * np.eye(d)]))
        return np.einsum("ij,ij->i", Q[:n], Q[:n])

    tau = ridge_scores(1e-6 * np.trace(M) / d)  # the documented floor of the ridge
    sk = LeverageSampler(jl_dim=64)  # jl_dim >= d: no JL step, exact transform
    ctx = SketchContext(seed=0, iteration=3, n_samples=n, n_features=d, sketch_size=500)
    exact = sk.context_from_gram(M, ctx)
    assert exact.info["scores"] == "sketch" and exact.info["rank"] == d
    np.testing.assert_allclose(sk.leverage_scores(A, D, exact), tau, rtol=1e-9, atol=1e-14)
    # an explicit ridge (the Hessian's penalty) gives its ridge scores
    np.testing.assert_allclose(sk.leverage_scores(A, D, sk.context_from_gram(M, ctx, ridge=5.0)), ridge_scores(5.0),
                               rtol=1e-9, atol=1e-14)
    # a row whose direction the sampled Gram lacks gets a large score (kept), not a small one
    e = np.zeros(d)
    e[4] = 1.0
    P = np.eye(d) - np.outer(e, e)
    lacking = sk.context_from_gram(P @ M @ P, ctx)
    full = sk.leverage_scores(e[None, :], np.ones(1), exact)[0]
    assert sk.leverage_scores(e[None, :], np.ones(1), lacking)[0] > 10 * full  # a pseudo-inverse gives 0
    # from a (1 +- eps) approximation M~ of the Gram the scores are within 1/(1 +- eps)
    E = rng.standard_normal((d, d))
    M = A.T @ (D[:, None] * A)
    L = np.linalg.cholesky(M)
    eps = 0.2
    S = E @ E.T
    S *= eps / np.abs(np.linalg.eigvalsh(S)).max()  # ||S|| = eps: (1 - eps) M <= M~ <= (1 + eps) M
    approx = sk.context_from_gram(L @ (np.eye(d) + S) @ L.T, ctx)
    ratio = sk.leverage_scores(A, D, approx) / tau
    assert ratio.min() >= 1 / (1 + eps) - 1e-12 and ratio.max() <= 1 / (1 - eps) + 1e-12


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("signs", ["positive", "mixed", "zeros"])
@pytest.mark.parametrize("fmt", ["dense", "csr"])
def test_weighted_gram_equals_dense_product(dtype, signs, fmt):
    """``A^T diag(w) A`` (a symmetric rank-k update per sign when dense) against NumPy."""
    from dsketch.sketch.base import weighted_gram

    rng = np.random.default_rng(3)
    A = rng.standard_normal((300, 17))
    w = rng.random(300)
    if signs == "mixed":
        w -= 0.5
    elif signs == "zeros":
        w[::3] = 0.0
    ref = A.T @ (w[:, None] * A)
    Ab = A.astype(dtype)
    if fmt == "csr":
        Ab = sp.csr_matrix(Ab)
    G = weighted_gram(Ab, w)
    assert G.dtype == np.float64 and np.array_equal(G, G.T)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(G, ref, rtol=tol, atol=tol * np.abs(ref).max())


@pytest.mark.parametrize("layout", ["canonical", "unsorted", "duplicates", "int64-indices"])
def test_csr_weighted_gram_kernel_on_irregular_blocks(layout):
    """The CSR kernel against a dense product on a sparse block with empty rows, a dense
    column, d not a multiple of the mirror's tile, and non-canonical layouts (unsorted
    indices, duplicate entries that must add up)."""
    from dsketch.sketch.base import weighted_gram

    rng = np.random.default_rng(11)
    n, d = 500, 150
    A = sp.random(n, d, density=0.03, format="csr", random_state=rng)
    A = sp.lil_matrix(A)
    A[:, 7] = rng.standard_normal((n, 1))  # one column in every row
    A[40:60, :] = 0.0  # empty rows
    A = sp.csr_matrix(A)
    dense = A.toarray()
    w = rng.standard_normal(n)
    before_nnz = A.nnz
    if layout == "unsorted":
        for r in range(n):  # reverse each row's entries
            a, b = A.indptr[r], A.indptr[r + 1]
            A.indices[a:b] = A.indices[a:b][::-1].copy()
            A.data[a:b] = A.data[a:b][::-1].copy()
        A.has_sorted_indices = False
        assert not A.has_canonical_format
    elif layout == "duplicates":  # every entry split into two halves stored side by side
        counts = np.diff(A.indptr)
        A = sp.csr_matrix((np.repeat(A.data, 2) * np.tile([0.25, 0.75], A.nnz), np.repeat(A.indices, 2),
                           np.r_[0, np.cumsum(2 * counts)]), shape=A.shape)
        assert A.nnz == 2 * before_nnz and not A.has_canonical_format
    elif layout == "int64-indices":
        A.indices = A.indices.astype(np.int64)
        A.indptr = A.indptr.astype(np.int64)
    before = A.copy()
    G = weighted_gram(A, w)
    ref = dense.T @ (w[:, None] * dense)
    assert np.array_equal(G, G.T)
    np.testing.assert_allclose(G, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())
    assert (A != before).nnz == 0 and np.array_equal(A.indices, before.indices)  # the caller's block is untouched


def test_row_transform_norms_cache_returns_the_product_and_skips_it_on_a_hit(monkeypatch):
    """``||a_i^T T||^2`` cached by (block, T): a hit returns the product's values without
    computing it; another T or another block's data at the same rows computes afresh."""
    import dsketch.sketch.leverage as lev

    rng = np.random.default_rng(5)
    A = rng.standard_normal((200, 9))
    T = rng.standard_normal((9, 4))
    calls = []
    real = lev.matmul_dense
    monkeypatch.setattr(lev, "matmul_dense", lambda *a: calls.append(1) or real(*a))
    ref = np.sum((A @ T) ** 2, axis=1)
    q1 = lev.row_transform_norms(A, T, r0=1000)
    np.testing.assert_allclose(q1, ref, rtol=1e-13)
    q2 = lev.row_transform_norms(A, T, r0=1000)
    assert np.array_equal(q1, q2) and len(calls) == 1  # a hit: no product
    T2 = T.copy()
    T2[0, 0] += 1e-3
    np.testing.assert_allclose(lev.row_transform_norms(A, T2, r0=1000), np.sum((A @ T2) ** 2, axis=1), rtol=1e-13)
    B = A.copy()
    B[-1] *= 2.0  # another problem's block at the same rows
    np.testing.assert_allclose(lev.row_transform_norms(B, T, r0=1000), np.sum((B @ T) ** 2, axis=1), rtol=1e-13)
    assert len(calls) == 3
    lev.row_transform_norms(A, T)  # without r0: never cached
    lev.row_transform_norms(A, T)
    assert len(calls) == 5
    S = sp.csr_matrix(np.where(np.abs(A) > 1.0, A, 0.0))
    np.testing.assert_allclose(lev.row_transform_norms(S, T, r0=0), np.sum((S.toarray() @ T) ** 2, axis=1),
                               rtol=1e-12)
