"""Approximate leverage scores of sparse (CSR) blocks: the exact sparse Gram, factored.

References: the leverage scores computed densely with NumPy (QR or SVD of ``sqrt|D| A``),
and for the fits scikit-learn's ``LogisticRegression`` (lbfgs, tight tolerance) on the
same objective.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression

import dsketch
from dsketch.sketch import LeverageSampler, prepare_context


def one_hot(n, levels, seed, intercept=False, drop_first=True):
    """CSR one-hot design of ``len(levels)`` categoricals with skewed level frequencies
    (rare levels make coherent rows); the first level of each dropped when ``drop_first``."""
    rng = np.random.default_rng(seed)
    cols, offset = [], 0
    for k in levels:
        p = 1.0 / np.arange(1, k + 1) ** 1.2
        codes = rng.choice(k, size=n, p=p / p.sum())
        if drop_first:
            keep = codes > 0
            cols.append((np.flatnonzero(keep), offset + codes[keep] - 1))
            offset += k - 1
        else:
            cols.append((np.arange(n), offset + codes))
            offset += k
    if intercept:
        cols.append((np.arange(n), np.full(n, offset)))
        offset += 1
    rows = np.concatenate([r for r, _ in cols])
    idx = np.concatenate([c for _, c in cols])
    A = sp.csr_matrix((np.ones(rows.size), (rows, idx)), shape=(n, offset))
    A.sum_duplicates()
    A.sort_indices()
    return A


def exact_scores(A, D):
    """Leverage scores of ``sqrt|D| A``: squared row norms of an orthonormal basis of its
    range (SVD with the rank cut of ``numpy.linalg.matrix_rank``)."""
    S = np.sqrt(np.abs(D))[:, None] * A.toarray()
    U, sv, _ = np.linalg.svd(S, full_matrices=False)
    r = int((sv > sv[0] * max(S.shape) * np.finfo(float).eps).sum())
    return (U[:, :r] ** 2).sum(axis=1), r


@pytest.mark.parametrize("rank_deficient", [False, True], ids=["full-rank", "collinear"])
def test_sparse_approx_scores_within_documented_factor(rank_deficient):
    n = 12_000
    # collinear: every level kept and a column of ones (each categorical's levels sum to it)
    A = one_hot(n, [40, 30, 25, 12], seed=1, intercept=rank_deficient, drop_first=not rank_deficient)
    d = A.shape[1]
    assert d > LeverageSampler.AUTO_EXACT_MAX_FEATURES  # "auto" picks the approximate scores
    rng = np.random.default_rng(2)
    D = rng.uniform(0.05, 0.25, n) * np.where(rng.random(n) < 0.3, -1.0, 1.0)
    D[rng.random(n) < 0.05] = 0.0
    tau, r = exact_scores(A, D)
    assert (r < d) == rank_deficient
    sk = LeverageSampler()
    for seed in range(3):
        ctx = prepare_context(sk, A, D, seed=seed, sketch_size=100, bounds=[0, 5_000, 9_000, n])
        assert ctx.info["scores"] == "approx"
        est = sk.leverage_scores(A, D, ctx)
        empty = (D == 0.0) | (np.diff(A.indptr) == 0)  # tau = 0 exactly (up to rounding)
        assert np.all(est[empty] == 0.0) and np.all(tau[empty] < 1e-20) and np.all(tau[~empty] > 1e-8)
        ratio = est[~empty] / tau[~empty]
        # from the exact Gram only the JL step (k = 32 columns) distorts a row's score:
        # ratio ~ chi2_32 / 32, below 1/4 with probability 5e-6 and above 2.5 with 5e-6
        # a row; the ridge (1e-6 of the mean eigenvalue) moves it by far less
        assert ratio.min() >= 1 / LeverageSampler.APPROX_INFLATION and ratio.max() <= 2.5
        assert 0.9 < np.median(ratio) < 1.1


def test_sparse_approx_scores_do_not_depend_on_the_split_beyond_rounding():
    n = 6_000
    A = one_hot(n, [50, 30, 10], seed=3)
    D = np.random.default_rng(4).uniform(0.1, 0.3, n)
    sk = LeverageSampler(scores="approx")
    c1 = prepare_context(sk, A, D, seed=5, sketch_size=50, bounds=[0, 2_000, n])
    c1b = prepare_context(sk, A, D, seed=5, sketch_size=50, bounds=[0, 2_000, n])
    c2 = prepare_context(sk, A, D, seed=5, sketch_size=50, bounds=[0, 1_000, 3_500, n])
    assert np.array_equal(c1.info["T"], c1b.info["T"])  # same blocks: the same bits
    np.testing.assert_allclose(sk.leverage_scores(A, D, c2), sk.leverage_scores(A, D, c1), rtol=1e-9)


def test_dense_blocks_keep_the_embedding():
    """A dense block still sends the OSNAP embedding (``"Y"``), a sparse one the Gram."""
    A = one_hot(3_000, [50, 30], seed=6)
    D = np.full(A.shape[0], 0.2)
    sk = LeverageSampler(scores="approx")
    ctx = prepare_context(sk, A, D, seed=0, sketch_size=50)
    part_sparse = sk.pre_block(0, A, D, np.ones(A.shape[0]), 0, ctx)
    part_dense = sk.pre_block(0, A.toarray(), D, np.ones(A.shape[0]), 0, ctx)
    assert set(part_sparse) == {"M", "lowp_rows"} and set(part_dense) == {"Y", "lowp_rows"}
    np.testing.assert_allclose(part_sparse["M"], A.T @ (D[:, None] * A.toarray()), rtol=1e-12)


def _objective(A, y, x, l2):
    z = A @ x
    return float(np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * x @ x)


@pytest.mark.parametrize("method", ["newton", "newton-cg"])
def test_leverage_fit_on_wide_one_hot_matches_sklearn(method):
    n, l2 = 20_000, 1e-4
    A = one_hot(n, [60, 40, 20, 8], seed=7)
    rng = np.random.default_rng(8)
    x_true = rng.standard_normal(A.shape[1]) * 0.5
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-(A @ x_true)))).astype(float)
    res = dsketch.fit((A, y), "logistic", model_params={"l2": l2}, curvature="leverage",
                      solver=dsketch.Solver(method, tol=1e-10, max_iter=200), seed=3)
    ref = LogisticRegression(C=1.0 / (l2 * n), fit_intercept=False, solver="lbfgs", tol=1e-12,
                             max_iter=20_000).fit(A, y)
    x_ref = ref.coef_.ravel()
    assert res.success
    np.testing.assert_allclose(res.x, x_ref, rtol=0, atol=1e-5 * max(1.0, np.abs(x_ref).max()))
    f, f_ref = _objective(A, y, res.x, l2), _objective(A, y, x_ref, l2)
    assert f <= f_ref + 1e-12 * abs(f_ref)


@pytest.mark.parametrize("intercept", [False, True])
def test_inverse_factor_with_eliminated_block_against_numpy_inverse(intercept):
    """``X = L^{-T}`` (``G = I``) of a one-hot Gram, its largest categorical eliminated
    first, satisfies ``X X^T = M^{-1}`` (NumPy's inverse); a singular Gram gives None."""
    from dsketch.sketch._sparse_gram import diagonal_block
    from dsketch.sketch.leverage import inverse_factor_times

    A = one_hot(8_000, [300, 20, 6], seed=9, drop_first=not intercept, intercept=intercept)
    A = A[:, A.getnnz(axis=0) > 0]  # rare levels that no row drew
    w = np.random.default_rng(10).uniform(0.1, 0.3, A.shape[0])
    M = (A.T @ (w[:, None] * A.toarray()))
    d = M.shape[0]
    assert diagonal_block(M) is not None  # the elimination is exercised
    tol = np.sqrt(d * np.finfo(float).eps) * np.sqrt(np.abs(M).max())
    if intercept:  # the levels of each categorical sum to the column of ones
        assert inverse_factor_times(M, np.eye(d), tol) is None
        M = M + 1e-3 * np.eye(d)
    X = inverse_factor_times(M, np.eye(d), tol)
    np.testing.assert_allclose(X @ X.T, np.linalg.inv(M), rtol=1e-7, atol=1e-9 * np.abs(np.linalg.inv(M)).max())
