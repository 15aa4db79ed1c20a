"""Leverage-score sampling of ``sqrt|D| A`` (the SubSample of docs/theory.md#leverage-score-sampling).

References
----------
P. Drineas, M. W. Mahoney, S. Muthukrishnan. Sampling algorithms for l2 regression and
applications. SODA 2006.
P. Drineas, M. Magdon-Ismail, M. W. Mahoney, D. P. Woodruff. Fast approximation of matrix
coherence and statistical leverage. JMLR 13, 2012.
J. Nelson, H. L. Nguyen. OSNAP: faster numerical linear algebra algorithms via sparser
subspace embeddings. FOCS 2013.
J. A. Tropp. User-friendly tail bounds for sums of random matrices. Found. Comput. Math.
12, 2012.
D. P. Woodruff. Sketching as a tool for numerical linear algebra. FnT-TCS 10(1-2), 2014.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from typing import Any, ClassVar

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from dsketch.sketch import random as crng
from dsketch.sketch.base import (
    Block,
    Partial,
    SketchContext,
    as_block,
    check_n_features,
    check_param_int,
    check_weights,
    matmul_dense,
    sym,
    weighted_gram,
)
from dsketch.sketch._sparse_gram import diagonal_block
from dsketch.sketch.embed import osnap_matrix
from dsketch.sketch.rowsample import Sampler, leverage_size
from dsketch.errors import InvalidParameterError

JL_STREAM = 7
SCORE_MODES = ("auto", "exact", "approx")

#: Rows of ``||a_i^T T||^2`` a worker process keeps (:func:`row_transform_norms`).
SCORE_CACHE_ROWS = 20_000_000
_score_cache: OrderedDict[tuple[int, int, bytes], np.ndarray] = OrderedDict()
_score_cache_lock = threading.Lock()


def _fingerprint(A_b: Block, T: np.ndarray) -> bytes:
    """A digest of ``T`` and of a few stored values of the block (which problem it is)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(np.ascontiguousarray(T, dtype=np.float64).tobytes())
    h.update(repr((A_b.shape, str(A_b.dtype))).encode())
    if sp.issparse(A_b):
        A_b = A_b.tocsr()
        h.update(np.ascontiguousarray(A_b.data[:64]).tobytes())
        h.update(np.ascontiguousarray(A_b.indices[:64]).tobytes())
        h.update(np.ascontiguousarray(A_b.indptr[-1:]).tobytes())
    elif A_b.shape[0]:
        h.update(np.ascontiguousarray(A_b[0]).tobytes())
        h.update(np.ascontiguousarray(A_b[-1]).tobytes())
    return h.digest()


def row_transform_norms(A_b: Block, T: np.ndarray, r0: int | None = None) -> np.ndarray:
    """``q_i = ||a_i^T T||^2`` for the block's rows; with ``r0``, cached in this process.

    The transform ``T`` is kept for a few iterations (:class:`~dsketch.solvers.newton.
    NewtonConfig` ``score_reuse``) while ``D`` changes every iteration; the scores
    ``|D_i| q_i`` then cost no product with ``A`` where the block's ``q`` is cached under
    ``(r0, rows, digest of T and the block)``. A hit returns the values the product gave,
    so results do not depend on which worker computed them. Least recently used entries go
    beyond :data:`SCORE_CACHE_ROWS` rows.
    """
    key = None
    if r0 is not None:
        key = (int(r0), int(A_b.shape[0]), _fingerprint(A_b, T))
        with _score_cache_lock:
            hit = _score_cache.get(key)
            if hit is not None:
                _score_cache.move_to_end(key)
                return hit
    AT = matmul_dense(A_b, np.asarray(T))
    q = np.einsum("ij,ij->i", AT, AT, dtype=np.float64)
    if key is not None:
        with _score_cache_lock:
            _score_cache[key] = q
            total = sum(v.size for v in _score_cache.values())
            while total > SCORE_CACHE_ROWS and len(_score_cache) > 1:
                total -= _score_cache.popitem(last=False)[1].size
    return q


def _cholesky(M: np.ndarray, tol: float) -> np.ndarray | None:
    """The lower Cholesky factor of ``M``, or None where it fails or a pivot is ``<= tol``."""
    try:
        L = np.linalg.cholesky(M)
    except np.linalg.LinAlgError:
        return None
    return L if np.all(np.diag(L) > tol) else None


def inverse_factor_times(M: np.ndarray, G: np.ndarray, tol: float) -> np.ndarray | None:
    """``L^{-T} G`` for a factor ``M = L L^T`` (so that ``||a^T L^{-T}||^2 = a^T M^{-1} a``);
    None where ``M`` is not numerically positive definite (a pivot ``<= tol``).

    Where :func:`~dsketch.sketch._sparse_gram.diagonal_block` finds columns ``S`` with a
    diagonal ``M[S, S] = diag(m_S)`` (the levels of one-hot categoricals), the factor is
    taken with ``S`` first, ``L = [[m_S^{1/2}, 0], [B^T m_S^{-1/2}, L_C]]``, ``B = M[S, C]``
    and ``L_C`` the Cholesky factor of the Schur complement ``M[C, C] - B^T diag(m_S)^{-1} B``:
    ``O(|C|^3 + |S| |C| (|C| + k))`` flops instead of ``d^3 / 3`` (3,295 flights columns
    leave 213). Otherwise a plain Cholesky factor."""
    S = diagonal_block(M)
    if S is None:
        L = _cholesky(M, tol)
        return None if L is None else scipy.linalg.solve_triangular(L, G, lower=True, trans="T")
    C = np.setdiff1d(np.arange(M.shape[0]), S)
    root = np.sqrt(M[S, S])
    if not np.all(root > tol):
        return None
    B = M[np.ix_(S, C)]
    X = np.empty((M.shape[0], G.shape[1]))
    X[C] = 0.0
    if C.size:
        Lc = _cholesky(M[np.ix_(C, C)] - B.T @ (B / np.square(root)[:, None]), tol)
        if Lc is None:
            return None
        X[C] = scipy.linalg.solve_triangular(Lc, G[C], lower=True, trans="T")
    X[S] = (G[S] - (B @ X[C]) / root[:, None]) / root[:, None]
    return X


class LeverageSampler(Sampler):
    """Leverage-score sampling: ``p_i = min(1, s tau_i / r)``.

    ``tau_i = |D_i| a_i^T (A^T |D| A)^+ a_i`` are the leverage scores of ``sqrt|D| A`` (the
    squared row norms of an orthonormal basis of its range; they sum to its rank ``r``),
    so ``E[rows] = sum_i p_i <= s``. A kept row gets the weight ``D_i / p_i`` (unbiased for
    signed ``D``); rows with ``D_i = 0`` have ``tau_i = 0`` and are never kept. With
    ``s = size_for(eps, delta, d)`` every ``p_i >= min(1, 3 tau_i ln(2d/delta) / eps^2)``,
    the matrix Chernoff condition of :mod:`dsketch.sketch.rowsample`.

    Parameters
    ----------
    scores : {"auto", "exact", "approx"}, default "auto"
        How the scores are computed in the single preliminary pass (which reads ``A``):

        * ``"exact"``: the partial ``"M" = A_b^T |D_b| A_b`` (``d x d``) is summed; the
          driver takes ``M = V diag(lam) V^T`` (``eigh``), keeps the ``r`` eigenvalues above
          ``lam_max d eps_mach`` (rank-safe pseudo-inverse) and broadcasts
          ``T = V_r diag(lam_r)^{-1/2}`` (``d x r``); then ``tau_i = |D_i| ||a_i^T T||^2``.
        * ``"approx"`` (Drineas et al. 2012): the partial ``"Y" = Pi_b sqrt|D_b| A_b`` is
          an OSNAP sparse sign embedding (``m = embed_factor d`` rows rounded up to a
          multiple of ``osnap_nnz``, ``osnap_nnz`` non-zeros ``+-1/sqrt(osnap_nnz)`` per
          column) summed over blocks; the driver's SVD ``Y = U Sigma W^T`` gives
          ``R^+ = W_r Sigma_r^{-1}`` (same rank rule, with ``max(m, d)``), and
          ``T = R^+ G`` with ``G`` a ``r x jl_dim`` Gaussian ``/ sqrt(jl_dim)`` (skipped when
          ``jl_dim >= r``: ``T = R^+``). ``tau~_i = |D_i| ||a_i^T T||^2``. Sparse (CSR)
          blocks send the exact ``"M" = A_b^T |D_b| A_b`` instead (``sum_i nnz_i^2`` flops
          a block, tens per row on one-hot data, against an ``O(m d^2)`` SVD of a dense
          embedding); the driver factors ``M + lambda I = L L^T`` (``lambda`` at least
          ``1e-6`` of the mean eigenvalue, as in :meth:`context_from_gram`; the rank-safe
          eigendecomposition if the factor is unusable) and ``T = L^{-T} G / sqrt(jl_dim)``.
          Only the JL step (and the small ridge) then separates ``tau~`` from ``tau``;
          ``"rank"`` is reported as ``d`` on the factored route.
        * ``"auto"``: ``"exact"`` when ``d <= AUTO_EXACT_MAX_FEATURES`` (64), else
          ``"approx"``. Below that, the exact pass costs at most about twice the
          approximate one (``d`` against ``osnap_nnz + jl_dim`` flops per non-zero) and its
          scores need no inflation.
    jl_dim : int, default 32
        Columns ``k`` of the Johnson-Lindenstrauss projection (approx only).
    embed_factor : int, default 8
        OSNAP rows per feature (approx only).
    osnap_nnz : int, default 4
        Non-zeros per column of the OSNAP embedding (approx only).

    Notes
    -----
    ``ctx.info`` after the preliminary stage: ``"T"`` (``d x k`` float64), ``"rank"``
    (``r``, int) and ``"scores"`` (``"exact"`` or ``"approx"``). Final partial as for every
    sampler (``"gram"``, ``"rows"``, ``"expected_rows"``).

    Documented size: ``size_for(eps, delta, d) = ceil(3 d ln(2d/delta) / eps^2)`` with exact
    scores; with approximate scores it is multiplied by ``APPROX_INFLATION = 4``: if the
    OSNAP map distorts norms on ``range(sqrt|D| A)`` by at most ``1 +- eta`` and the JL step
    shrinks no row by more than ``1 - t``, then ``tau~_i >= tau_i (1 - t) / (1 + eta)^2``;
    ``eta <= 0.4`` and ``t <= 0.5`` give a factor ``<= 1/4``. (``eta ~ sqrt(d / m)`` for
    ``m = 8d``; the JL shrinkage exceeds one half for a ``chi^2_k / k`` fraction of rows,
    about ``4e-3`` at ``k = 32``, so the bound holds for all but a few rows, whose
    probabilities are still within a small factor of the Chernoff condition.) The test
    suite measures the score ratios (``tests/test_sketch.py``).

    Cost: exact: one extra pass of ``O(nnz(A) d)`` flops sending a ``d x d`` partial per
    block, an ``O(d^3)`` driver step, then ``O(nnz(A) r)`` for the scores in the final pass.
    Approx: one extra pass of ``O(nnz(A) osnap_nnz)`` flops sending an ``m x d`` partial, an
    ``O(m d^2)`` SVD, then ``O(nnz(A) min(r, k))``; on sparse blocks the pass costs
    ``O(sum_i nnz_i^2)`` sending a ``d x d`` partial and the driver a ``d^3 / 3`` Cholesky
    (on the flights one-hot design, 327,346 x 3,295, the scores went from about three
    minutes to under a second). Both: ``O(s d^2)`` for the kept rows.

    References
    ----------
    P. Drineas, M. W. Mahoney, S. Muthukrishnan. Sampling algorithms for l2 regression and
    applications. SODA 2006.
    P. Drineas, M. Magdon-Ismail, M. W. Mahoney, D. P. Woodruff. Fast approximation of matrix
    coherence and statistical leverage. JMLR 13, 2012.
    D. P. Woodruff. Sketching as a tool for numerical linear algebra. FnT-TCS 10, 2014.
    """

    kind: ClassVar[str] = "leverage"
    refreshes_from_gram: ClassVar[bool] = True
    AUTO_EXACT_MAX_FEATURES: ClassVar[int] = 64
    APPROX_INFLATION: ClassVar[float] = 4.0

    def __init__(self, *, scores: str = "auto", jl_dim: int = 32, embed_factor: int = 8, osnap_nnz: int = 4) -> None:
        if scores not in SCORE_MODES:
            raise InvalidParameterError(f"scores must be one of {', '.join(map(repr, SCORE_MODES))}; got {scores!r}")
        self.scores = scores
        self.jl_dim = check_param_int("jl_dim", jl_dim)
        self.embed_factor = check_param_int("embed_factor", embed_factor)
        self.osnap_nnz = check_param_int("osnap_nnz", osnap_nnz)
        self.n_pre_stages = 1
        self.pre_stage_reads_A = (True,)

    def describe(self) -> dict[str, Any]:
        return {
            "sketch": self.kind,
            "scores": self.scores,
            "jl_dim": self.jl_dim,
            "embed_factor": self.embed_factor,
            "osnap_nnz": self.osnap_nnz,
        }

    def mode(self, n_features: int) -> str:
        """``"exact"`` or ``"approx"``: how scores are computed for ``n_features`` columns."""
        if self.scores == "auto":
            return "exact" if n_features <= self.AUTO_EXACT_MAX_FEATURES else "approx"
        return self.scores

    def _osnap_rows(self, d: int) -> int:
        k = self.osnap_nnz
        return k * max(1, math.ceil(self.embed_factor * d / k))

    def pre_block(
        self, stage: int, A_b: Block | None, D_b: np.ndarray, rownorm2_b: np.ndarray, r0: int, ctx: SketchContext
    ) -> Partial:
        if stage != 0:
            return super().pre_block(stage, A_b, D_b, rownorm2_b, r0, ctx)
        if A_b is None:
            # internal: the engine reads A for a stage that declares it
            raise ValueError("the leverage pre-stage reads A (pre_stage_reads_A[0] is True); A_b must not be None")
        A_b = as_block(A_b)
        absD = np.abs(check_weights(D_b, A_b.shape[0], r0))
        lowp = float(A_b.shape[0]) if A_b.dtype == np.float32 else 0.0
        if self.mode(ctx.n_features) == "exact" or sp.issparse(A_b):
            # sparse rows: the exact Gram costs sum_i nnz_i^2 flops, far below the SVD of a
            # dense m x d embedding on one-hot or text-like data (pre_finish factors it)
            return {"M": weighted_gram(A_b, absD), "lowp_rows": lowp}
        Pi = osnap_matrix(A_b.shape[0], r0, self._osnap_rows(ctx.n_features), self.osnap_nnz, ctx.seed, ctx.iteration)
        Y = (Pi @ sp.diags(np.sqrt(absD))).astype(A_b.dtype) @ A_b  # Pi sqrt|D| A without a copy of A
        Y = Y.toarray() if hasattr(Y, "toarray") else Y
        return {"Y": np.asarray(Y, dtype=np.float64), "lowp_rows": lowp}

    def pre_finish(self, stage: int, total: Partial, ctx: SketchContext) -> SketchContext:
        if stage != 0:
            return super().pre_finish(stage, total, ctx)
        d = ctx.n_features
        eps_mach = float(np.finfo(np.float32 if float(total["lowp_rows"]) > 0 else np.float64).eps)
        if "M" in total and self.mode(d) == "approx":
            return self._factor_transform(sym(total["M"], d), ctx, 0.0, "approx")
        if "M" in total:
            M = sym(total["M"], d)
            lam, V = np.linalg.eigh(M)
            keep = lam > max(float(lam[-1]), 0.0) * d * eps_mach
            if float(lam[-1]) <= 0.0:
                keep[:] = False
            T = V[:, keep] / np.sqrt(lam[keep])
            return ctx.with_info(T=T, rank=int(keep.sum()), scores="exact")
        Y = np.asarray(total["Y"], dtype=np.float64)
        _, sv, Wt = np.linalg.svd(Y, full_matrices=False)
        keep = sv > float(sv[0]) * max(Y.shape) * eps_mach if sv.size and sv[0] > 0 else np.zeros(sv.size, bool)
        r = int(keep.sum())
        T = Wt[keep].T / sv[keep]
        if 0 < self.jl_dim < r:
            G = crng.standard_normal(ctx.seed, ctx.iteration, JL_STREAM, np.arange(r), self.jl_dim)
            T = T @ G / math.sqrt(self.jl_dim)
        return ctx.with_info(T=T, rank=r, scores="approx")

    def _transform(self, lam: np.ndarray, V: np.ndarray, d: int, ctx: SketchContext, scores: str) -> SketchContext:
        """``T = V_r diag(lam_r)^{-1/2}`` (rank-safe), JL-projected to ``jl_dim`` columns if wider."""
        keep = lam > max(float(lam[-1]), 0.0) * d * float(np.finfo(np.float64).eps)
        if float(lam[-1]) <= 0.0:
            keep[:] = False
        T = V[:, keep] / np.sqrt(lam[keep])
        r = int(keep.sum())
        if 0 < self.jl_dim < r:
            G = crng.standard_normal(ctx.seed, ctx.iteration, JL_STREAM, np.arange(r), self.jl_dim)
            T = T @ G / math.sqrt(self.jl_dim)
        return ctx.with_info(T=T, rank=r, scores=scores)

    def context_from_gram(self, gram: np.ndarray, ctx: SketchContext, ridge: np.ndarray | float = 0.0) -> SketchContext:
        """Scores from a sketched ``A^T |D| A`` (the previous iteration's): no pass over A.

        With the Cholesky factor ``M~ = L L^T``, ``T = L^{-T} G`` for a ``d x jl_dim`` Gaussian
        ``G / sqrt(jl_dim)`` (``G = I`` when ``jl_dim >= d``), so ``tau~_i = |D_i| ||a_i^T T||^2``;
        when ``M~`` is singular (fewer kept rows than columns) the rank-safe
        ``T = V_r diag(lam_r)^{-1/2}`` of ``eigh`` instead, JL-projected the same way.
        The scores are ridge leverage scores of ``M~ + lambda I``, ``lambda`` the ``ridge``
        (the Hessian's own L2 penalty) but at least ``1e-6`` of ``M~``'s mean eigenvalue: a
        sampled Gram lacks the directions of rows that were not kept, and a pseudo-inverse
        would give those rows low scores, so that they would never be kept; with the ridge
        they get large ones (``p = 1``). If ``(1 - eps) M <= M~ <= (1 + eps) M`` then
        ``tau~_i >= tau_i / (1 + eps)`` for the ridge scores of ``M`` (before the JL step): a sketch good enough to take Newton steps with also gives scores good
        enough to sample the next one, and the samples improve as the iteration goes on.
        ``ctx.info["scores"]`` is ``"sketch"``.
        """
        return self._factor_transform(sym(gram, ctx.n_features), ctx, ridge, "sketch")

    def _factor_transform(self, M: np.ndarray, ctx: SketchContext, ridge: np.ndarray | float,
                          scores: str) -> SketchContext:
        """``T = L^{-T} G`` from ``M + lambda I = L L^T`` (:meth:`context_from_gram`; ``M``
        is overwritten), the rank-safe eigendecomposition where the factor is unusable."""
        d = ctx.n_features
        # ridge: a row whose direction the sample missed gets a large score (p = 1) instead
        # of being dropped with the null space; at least 1e-6 of the mean eigenvalue
        floor = 1e-6 * max(float(np.trace(M)) / d, 0.0)
        M[np.diag_indices(d)] += np.maximum(np.asarray(ridge, dtype=np.float64), floor)
        k = self.jl_dim if 0 < self.jl_dim < d else d
        G = (crng.standard_normal(ctx.seed, ctx.iteration, JL_STREAM, np.arange(d), k) / math.sqrt(k)
             if k < d else np.eye(d))
        # a pivot at or below this is no usable factor (rank-deficient M beyond the ridge)
        tol = np.sqrt(d * np.finfo(np.float64).eps) * np.sqrt(max(float(M.max()), -float(M.min())))
        T = inverse_factor_times(M, G, tol)
        if T is not None:
            return ctx.with_info(T=T, rank=d, scores=scores)
        lam, V = np.linalg.eigh(M)  # singular (fewer sampled rows than columns): rank-safe route
        return self._transform(lam, V, d, ctx, scores)

    def leverage_scores(self, A_b: Block, D_b: np.ndarray, ctx: SketchContext, r0: int | None = None) -> np.ndarray:
        """``tau_i = |D_i| ||a_i^T T||^2`` for the block's rows (exact or approximate).

        With ``r0`` (the block's first row) the row norms are cached for the next
        iterations that use the same ``T`` (:func:`row_transform_norms`)."""
        A_b = as_block(A_b)
        D_b = np.asarray(D_b, dtype=np.float64)
        if int(ctx.info["rank"]) == 0:
            return np.zeros(A_b.shape[0])
        return np.abs(D_b) * row_transform_norms(A_b, np.asarray(ctx.info["T"]), r0)

    def probabilities(self, A_b: Block, D_b: np.ndarray, r0: int, ctx: SketchContext) -> np.ndarray:
        rank = int(ctx.info["rank"])
        if rank == 0:
            return np.zeros(np.size(D_b))
        return np.minimum(1.0, ctx.sketch_size * self.leverage_scores(A_b, D_b, ctx, r0) / rank)

    def _diagnostics(self, ctx: SketchContext) -> dict[str, Any]:
        return {"rank": int(ctx.info["rank"]), "scores": ctx.info["scores"]}

    def size_for(self, eps: float, delta: float, n_features: int) -> int:
        """``ceil(3 d ln(2d/delta) / eps^2)``, times ``APPROX_INFLATION`` for approximate scores."""
        base = leverage_size(eps, delta, n_features)
        if self.mode(check_n_features(n_features)) == "exact":
            return base
        return int(math.ceil(self.APPROX_INFLATION * base))
