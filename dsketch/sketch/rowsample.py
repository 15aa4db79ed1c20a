"""Row-sampling sketches: exact, uniform, row-norm and leverage-score sampling.

Every sampler keeps row ``i`` independently when ``uniform(seed, iteration, 1, i) < p_i``
and weights a kept row by ``D_i / p_i``, so ``E[G~] = A^T diag(D) A`` exactly, for signed
``D`` too (probabilities use ``|D_i|``; rows with ``D_i = 0`` are never kept).

References
----------
P. Drineas, M. W. Mahoney. RandNLA: randomized numerical linear algebra. CACM 59(6), 2016.
D. P. Woodruff. Sketching as a tool for numerical linear algebra. FnT-TCS 10, 2014.
J. A. Tropp. An introduction to matrix concentration inequalities. FnT-ML 8, 2015.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from dsketch.sketch import random as crng
from dsketch.sketch.base import (
    Partial,
    Sketch,
    SketchContext,
    SketchResult,
    check_eps_delta,
    row_norms2,
    scale_rows,
    weighted_gram,
)

SAMPLE_STREAM = 1
EMBED_BUCKET_STREAM = 5
EMBED_SIGN_STREAM = 6
JL_STREAM = 7


def chernoff_rows(eps: float, delta: float, n_features: int) -> int:
    """``ceil(3 d ln(2d/delta) / eps^2)``: rows for leverage sampling (matrix Chernoff)."""
    check_eps_delta(eps, delta)
    d = max(1, int(n_features))
    return int(math.ceil(3.0 * d * math.log(2.0 * d / delta) / eps**2))


def _sampled_gram(A: Any, D: np.ndarray, p: np.ndarray, r0: int, ctx: SketchContext) -> Partial:
    rows = np.arange(r0, r0 + D.size, dtype=np.int64)
    keep = (p > 0) & (crng.uniform(ctx.seed, ctx.iteration, SAMPLE_STREAM, rows) < p)
    idx = np.flatnonzero(keep)
    d = ctx.n_features
    if idx.size == 0:
        return {"gram": np.zeros((d, d)), "rows": 0.0}
    return {"gram": weighted_gram(A[idx], D[idx] / p[idx]), "rows": float(idx.size)}


class _Sampler(Sketch):
    def finish(self, total: Partial, ctx: SketchContext) -> SketchResult:
        g = np.asarray(total["gram"], dtype=np.float64)
        return SketchResult(gram=0.5 * (g + g.T), n_rows=int(round(float(total["rows"]))))


class ExactGram(Sketch):
    """No sketch: the exact ``A^T diag(D) A``.

    Notes
    -----
    O(nnz(A) d) work per pass (dense: O(n d^2)); one ``d x d`` partial per block.
    """

    kind: ClassVar[str] = "exact"

    def block(self, A_b: Any, D_b: np.ndarray, r0: int, ctx: SketchContext) -> Partial:
        return {"gram": weighted_gram(A_b, D_b), "rows": float(D_b.size)}

    def finish(self, total: Partial, ctx: SketchContext) -> SketchResult:
        g = np.asarray(total["gram"], dtype=np.float64)
        return SketchResult(gram=0.5 * (g + g.T), n_rows=ctx.n_samples)

    def size_for(self, eps: float, delta: float, n_features: int) -> int:
        check_eps_delta(eps, delta)
        return 0


class UniformSampler(_Sampler):
    """Keep each row with probability ``p = min(1, s / n)``.

    Notes
    -----
    Cheap (no preliminary pass) but blind to coherence: a few rows of large leverage are
    missed with probability ``1 - s/n`` each. The documented size is the leverage size
    times the coherence ``n max_i tau_i / d``, which is unknown in advance; ``size_for``
    returns the size for an incoherent matrix (coherence 1).
    Cost O(s d^2) per pass after selection; one ``d x d`` partial per block.
    """

    kind: ClassVar[str] = "uniform"

    def block(self, A_b: Any, D_b: np.ndarray, r0: int, ctx: SketchContext) -> Partial:
        p = np.full(D_b.size, min(1.0, ctx.sketch_size / ctx.n_samples))
        p[D_b == 0] = 0.0
        return _sampled_gram(A_b, D_b, p, r0, ctx)

    def size_for(self, eps: float, delta: float, n_features: int) -> int:
        return chernoff_rows(eps, delta, n_features)


class RowNormSampler(_Sampler):
    """Sample by row norms of ``sqrt|D| A``: ``p_i = min(1, c |D_i| ||a_i||^2)``.

    ``c`` is set by water-filling so that ``sum_i p_i = s``: rows whose probability would
    exceed one are kept surely and the rest of the budget is shared by the others. Two
    preliminary reductions over the cached row norms and ``D`` find ``c`` (neither reads
    ``A``).

    Notes
    -----
    Guarantee: with ``q_i = |D_i| ||a_i||^2`` and ``lambda = lambda_min(A^T |D| A)``,
    ``tau_i <= q_i / lambda``, so ``p_i >= min(1, 3 tau_i ln(2d/delta) / eps^2)`` holds when
    ``c >= 3 ln(2d/delta) / (eps^2 lambda)``. The size needed is therefore the leverage size
    times ``||sqrt|D| A||_F^2 / (d lambda)`` at worst; ``size_for`` returns the leverage size
    (exact when the rows that are not kept surely are well conditioned).
    """

    kind: ClassVar[str] = "rownorm"
    n_pre_stages: ClassVar[int] = 2
    pre_stage_reads_A: ClassVar[tuple[bool, ...]] = (False, False)
    n_grid: ClassVar[int] = 257

    def pre_block(self, stage: int, A_b: Any, D_b: np.ndarray, rownorm2_b: np.ndarray, r0: int, ctx: SketchContext) -> Partial:
        q = np.abs(D_b) * rownorm2_b
        if stage == 0:
            return {"Z": float(q.sum())}
        if stage == 1:
            # sum_i min(1, c q_i) for every c of the grid, via sorted q and prefix sums
            c = np.asarray(ctx.info["c_grid"])
            qs = np.sort(q)
            prefix = np.concatenate([[0.0], np.cumsum(qs)])
            with np.errstate(divide="ignore"):
                split = np.searchsorted(qs, np.where(c > 0, 1.0 / c, np.inf), side="left")
            return {"S": (qs.size - split) + c * prefix[split]}
        return super().pre_block(stage, A_b, D_b, rownorm2_b, r0, ctx)

    def pre_finish(self, stage: int, total: Partial, ctx: SketchContext) -> SketchContext:
        s = float(min(ctx.sketch_size, ctx.n_samples))
        if stage == 0:
            Z = float(total["Z"])
            if Z <= 0.0:
                return ctx.with_info(Z=0.0, c_grid=np.zeros(1))
            # c = s/Z gives sum p <= s; water-filling raises c by at most a factor n/s.
            hi = max(ctx.n_samples / s, 1.0) * 4.0
            return ctx.with_info(Z=Z, c_grid=(s / Z) * np.geomspace(1.0, hi, self.n_grid))
        if stage == 1:
            grid = ctx.info["c_grid"]
            S = np.asarray(total["S"])
            ok = np.flatnonzero(S <= s * (1.0 + 1e-12))
            c = float(grid[ok[-1]]) if ok.size else float(grid[0])
            return ctx.with_info(c=c)
        return super().pre_finish(stage, total, ctx)

    def block(self, A_b: Any, D_b: np.ndarray, r0: int, ctx: SketchContext) -> Partial:
        p = np.minimum(1.0, ctx.info.get("c", 0.0) * np.abs(D_b) * row_norms2(A_b))
        return _sampled_gram(A_b, D_b, p, r0, ctx)

    def size_for(self, eps: float, delta: float, n_features: int) -> int:
        return chernoff_rows(eps, delta, n_features)


class LeverageSampler(_Sampler):
    """Leverage-score sampling of ``sqrt|D| A`` (the SubSample of MODELS.md section 1.4).

    ``p_i = min(1, s tau_i / r)`` with ``tau_i`` the leverage scores of ``sqrt|D| A`` and
    ``r`` its rank, so ``E[rows] <= s``.

    Parameters
    ----------
    scores : {"auto", "exact", "approx"}
        ``"exact"``: a preliminary pass forms ``A^T |D| A`` exactly; then
        ``tau_i = |D_i| a_i^T (A^T |D| A)^+ a_i``. ``"approx"``: a preliminary pass embeds
        ``sqrt|D| A`` with a sparse sign (OSNAP) embedding of ``embed_factor * d`` rows and
        ``osnap_nnz`` non-zeros per column; ``R`` from its SVD and a ``d x jl_dim`` Gaussian
        ``G`` give ``tau~_i = ||sqrt|D_i| a_i^T R^+ G||^2`` (Drineas et al. 2012).
        ``"auto"``: exact when ``d <= 64``.
    jl_dim, embed_factor, osnap_nnz : int

    Notes
    -----
    Documented size: ``s = ceil(3 d ln(2d/delta) / eps^2)`` with exact scores (matrix
    Chernoff: ``p_i >= min(1, 3 tau_i ln(2d/delta)/eps^2)``), doubled with approximate
    scores, which are within a constant factor of the exact ones.
    Cost: one extra pass (``O(nnz d)`` exact, ``O(nnz (osnap_nnz + jl_dim))`` approximate),
    then ``O(nnz jl_dim + s d^2)``; a ``d x d`` (or ``embed_factor d x d``) partial per block.
    """

    kind: ClassVar[str] = "leverage"
    n_pre_stages: ClassVar[int] = 1
    pre_stage_reads_A: ClassVar[tuple[bool, ...]] = (True,)

    def __init__(self, scores: str = "auto", jl_dim: int = 48, embed_factor: int = 4, osnap_nnz: int = 4) -> None:
        if scores not in ("auto", "exact", "approx"):
            raise ValueError(f"scores must be 'auto', 'exact' or 'approx'; got {scores!r}")
        for name, val in (("jl_dim", jl_dim), ("embed_factor", embed_factor), ("osnap_nnz", osnap_nnz)):
            if int(val) != val or val < 1:
                raise ValueError(f"{name} must be a positive integer; got {val!r}")
        self.scores = scores
        self.jl_dim = int(jl_dim)
        self.embed_factor = int(embed_factor)
        self.osnap_nnz = int(osnap_nnz)

    def _mode(self, d: int) -> str:
        if self.scores == "auto":
            return "exact" if d <= 64 else "approx"
        return self.scores

    def describe(self) -> dict[str, Any]:
        return {"sketch": self.kind, "scores": self.scores, "jl_dim": self.jl_dim}

    def pre_block(self, stage: int, A_b: Any, D_b: np.ndarray, rownorm2_b: np.ndarray, r0: int, ctx: SketchContext) -> Partial:
        if stage != 0:
            return super().pre_block(stage, A_b, D_b, rownorm2_b, r0, ctx)
        absD = np.abs(D_b)
        if self._mode(ctx.n_features) == "exact":
            return {"M": weighted_gram(A_b, absD)}
        m = self.embed_factor * ctx.n_features
        k = self.osnap_nnz
        rows = np.arange(r0, r0 + D_b.size, dtype=np.int64)
        counters = (rows[:, None] * k + np.arange(k)[None, :]).ravel()
        buckets = crng.integers(ctx.seed, ctx.iteration, EMBED_BUCKET_STREAM, counters, m)
        signs = crng.signs(ctx.seed, ctx.iteration, EMBED_SIGN_STREAM, counters) / math.sqrt(k)
        cols = np.repeat(np.arange(D_b.size), k)
        S = sp.csr_matrix((signs, (buckets, cols)), shape=(m, D_b.size))
        Y = S @ scale_rows(A_b, np.sqrt(absD))
        return {"Y": Y.toarray() if sp.issparse(Y) else np.asarray(Y)}

    def pre_finish(self, stage: int, total: Partial, ctx: SketchContext) -> SketchContext:
        if stage != 0:
            return super().pre_finish(stage, total, ctx)
        d = ctx.n_features
        if "M" in total:
            M = np.asarray(total["M"])
            lam, V = np.linalg.eigh(0.5 * (M + M.T))
            keep = lam > max(float(lam.max()), 0.0) * d * np.finfo(float).eps
            T = V[:, keep] / np.sqrt(lam[keep])
            return ctx.with_info(T=T, rank=int(keep.sum()))
        _, sv, Vt = np.linalg.svd(np.asarray(total["Y"]), full_matrices=False)
        keep = sv > max(float(sv.max()) if sv.size else 0.0, 0.0) * d * np.finfo(float).eps
        R_pinv = Vt[keep].T / sv[keep]
        G = crng.standard_normal(ctx.seed, ctx.iteration, JL_STREAM, np.arange(int(keep.sum())), self.jl_dim)
        return ctx.with_info(T=R_pinv @ G / math.sqrt(self.jl_dim), rank=int(keep.sum()))

    def block(self, A_b: Any, D_b: np.ndarray, r0: int, ctx: SketchContext) -> Partial:
        rank = int(ctx.info.get("rank", 0))
        if rank == 0:
            return {"gram": np.zeros((ctx.n_features, ctx.n_features)), "rows": 0.0}
        AT = np.asarray(A_b @ ctx.info["T"])
        tau = np.abs(D_b) * np.einsum("ij,ij->i", AT, AT)
        p = np.minimum(1.0, ctx.sketch_size * tau / rank)
        return _sampled_gram(A_b, D_b, p, r0, ctx)

    def size_for(self, eps: float, delta: float, n_features: int) -> int:
        base = chernoff_rows(eps, delta, n_features)
        return base if self._mode(n_features) == "exact" else 2 * base
