"""Row-sampling sketches: exact (no sampling), uniform and row-norm sampling.

A sampler computes an inclusion probability ``p_i`` for every row and keeps row ``i``
independently when ``u_i < p_i``, with ``u_i = uniform(seed, iteration, SAMPLE_STREAM, i)``
keyed by the global row ``i``; so the same rows are kept for any block split. A kept row
gets the signed weight ``D_i / p_i``:

    G~ = sum_{i kept} (D_i / p_i) a_i a_i^T,     E[G~] = sum_i p_i (D_i / p_i) a_i a_i^T = A^T D A,

unbiased for a signed ``D`` too. Probabilities are built from ``|D_i|``, so rows with
``D_i = 0`` have ``p_i = 0`` and are never kept (``u_i > 0`` always).

Final partial (keys of ``block``): ``"gram"`` (``d x d`` float64, the block's
``sum (D_i/p_i) a_i a_i^T``), ``"rows"`` (float, rows kept) and ``"expected_rows"``
(float, ``sum p_i``).

The (1 +- eps) guarantee (Tropp 2012, matrix Chernoff). For ``D >= 0`` let ``tau_i`` be the
leverage scores of ``sqrt(D) A`` (they sum to ``r = rank <= d``) and
``beta = 3 ln(2d/delta) / eps^2``. If ``p_i >= min(1, beta tau_i)`` for every row, then with
probability ``>= 1 - delta``, ``(1 - eps) A^T D A <= G~ <= (1 + eps) A^T D A``: in the
whitened basis the kept rows are independent PSD terms of norm at most ``1/beta`` whose
sum has mean ``I``, and the Chernoff tails ``d exp(-eps^2 beta / 3) + d exp(-eps^2 beta / 2)``
are at most ``delta``. The expected number of rows is at most ``beta r <= beta d``
(:func:`leverage_size`). For signed ``D`` the same holds relative to ``A^T |D| A``.

References
----------
P. Drineas, M. W. Mahoney, S. Muthukrishnan. Sampling algorithms for l2 regression and
applications. SODA 2006.
J. A. Tropp. User-friendly tail bounds for sums of random matrices. Found. Comput. Math.
12, 2012.
D. P. Woodruff. Sketching as a tool for numerical linear algebra. FnT-TCS 10(1-2), 2014.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from dsketch.sketch import random as crng
from dsketch.sketch.base import (
    Block,
    Partial,
    Sketch,
    SketchContext,
    SketchResult,
    as_block,
    check_eps_delta,
    check_n_features,
    check_param_int,
    check_weights,
    row_norms2,
    sym,
    weighted_gram,
)
from dsketch.errors import DSketchTypeError, InvalidParameterError

SAMPLE_STREAM = 1


def leverage_size(eps: float, delta: float, n_features: int) -> int:
    """``ceil(3 d ln(2d/delta) / eps^2)``: expected rows for leverage-score sampling.

    The matrix Chernoff size of the module docstring (docs/theory.md#leverage-score-sampling).
    """
    check_eps_delta(eps, delta)
    d = check_n_features(n_features)
    return int(math.ceil(3.0 * d * math.log(2.0 * d / delta) / eps**2))


@dataclass(frozen=True)
class SampledRows:
    """Rows kept by a sampler in one block.

    Attributes
    ----------
    rows : ndarray of int64
        Global indices of the kept rows (increasing).
    weights : ndarray of float64
        Their weights ``D_i / p_i``.
    expected : float
        ``sum p_i`` over the block.
    """

    rows: np.ndarray
    weights: np.ndarray
    expected: float


class Sampler(Sketch):
    """Independent row sampling with probabilities from :meth:`probabilities`."""

    @abstractmethod
    def probabilities(self, A_b: Block, D_b: np.ndarray, r0: int, ctx: SketchContext) -> np.ndarray:
        """Inclusion probabilities ``p_i`` (in [0, 1]; 0 where ``D_i = 0``) of the block's rows."""

    def sample(self, A_b: Block, D_b: np.ndarray, r0: int, ctx: SketchContext) -> SampledRows:
        """The rows of ``[r0, r0 + n_b)`` that this sketch keeps, with their weights."""
        A_b = as_block(A_b)
        D_b = check_weights(D_b, A_b.shape[0], r0)
        return self._sample(A_b, D_b, r0, ctx)

    def _sample(self, A_b: Block, D_b: np.ndarray, r0: int, ctx: SketchContext) -> SampledRows:
        p = np.where(D_b != 0.0, self.probabilities(A_b, D_b, r0, ctx), 0.0)
        rows = np.arange(r0, r0 + D_b.size, dtype=np.int64)
        u = crng.uniform(ctx.seed, ctx.iteration, SAMPLE_STREAM, rows)
        idx = np.flatnonzero(u < p)
        return SampledRows(rows=rows[idx], weights=D_b[idx] / p[idx], expected=float(p.sum()))

    def block(self, A_b: Block, D_b: np.ndarray, r0: int, ctx: SketchContext) -> Partial:
        A_b = as_block(A_b)
        D_b = check_weights(D_b, A_b.shape[0], r0)
        kept = self._sample(A_b, D_b, r0, ctx)
        gram = weighted_gram(A_b[kept.rows - r0], kept.weights) if kept.rows.size else 0.0
        return {"gram": gram, "rows": float(kept.rows.size), "expected_rows": kept.expected}

    def finish(self, total: Partial, ctx: SketchContext) -> SketchResult:
        return SketchResult(
            gram=sym(total["gram"], ctx.n_features),
            n_rows=int(round(float(total["rows"]))),
            kind=self.kind,
            diagnostics={"expected_rows": float(total["expected_rows"]), **self._diagnostics(ctx)},
        )

    def _diagnostics(self, ctx: SketchContext) -> dict[str, Any]:
        return {}


class ExactGram(Sketch):
    """No sketch: the exact ``A^T diag(D) A``, summed over blocks.

    Final partial: ``"gram"`` (``d x d`` float64). ``ctx.sketch_size`` is ignored.

    Notes
    -----
    ``O(nnz(A) d)`` flops per pass (dense: ``O(n d^2)``); one ``d x d`` partial per block.
    Products run in float32 when ``A`` is float32; partials are float64.

    References
    ----------
    D. P. Woodruff. Sketching as a tool for numerical linear algebra. FnT-TCS 10, 2014.
    """

    kind: ClassVar[str] = "exact"

    def block(self, A_b: Block, D_b: np.ndarray, r0: int, ctx: SketchContext) -> Partial:
        A_b = as_block(A_b)
        D_b = check_weights(D_b, A_b.shape[0], r0)
        return {"gram": weighted_gram(A_b, D_b)}

    def finish(self, total: Partial, ctx: SketchContext) -> SketchResult:
        return SketchResult(gram=sym(total["gram"], ctx.n_features), n_rows=ctx.n_samples, kind=self.kind)

    def size_for(self, eps: float, delta: float, n_features: int) -> int:
        """0: the exact Gram needs no sketch (any ``sketch_size`` is ignored)."""
        check_eps_delta(eps, delta)
        check_n_features(n_features)
        return 0


class UniformSampler(Sampler):
    """Keep each row with ``D_i != 0`` independently with probability ``p = min(1, s / n)``.

    With a row mask, ``n`` is the number of rows the mask keeps (``ctx.n_kept``): the
    held-out rows have ``D_i = 0`` and are never drawn, so the expected number of sampled
    rows stays ``s`` (not ``s`` times the training share). Rows whose stored sample weight
    is 0 still count in ``n``: they lower the expected count below ``s``, which
    ``expected_rows`` reports.

    No preliminary stage; ``ctx.info`` is not used.

    Notes
    -----
    Blind to coherence. With ``mu = n max_i tau_i / d`` (the coherence of ``sqrt|D| A``,
    between 1 and ``n / d``), ``p >= beta tau_i`` for every row iff ``s >= mu beta d``, so the
    documented size is ``size_for(eps, delta, d, coherence=mu) = ceil(mu * leverage_size)``.
    ``mu`` is unknown in advance; the default ``coherence=1`` is right only for incoherent
    matrices, and a few rows of large leverage are then missed with probability
    ``1 - s/n`` each (errors >> 1 on coherent data).

    Cost: ``O(n_b)`` to draw, ``O(s d^2 / n_blocks)`` per block for the kept rows' Gram;
    one ``d x d`` partial per block.

    References
    ----------
    P. Drineas, M. W. Mahoney. RandNLA: randomized numerical linear algebra. CACM 59(6), 2016.
    D. P. Woodruff. Sketching as a tool for numerical linear algebra. FnT-TCS 10, 2014.
    """

    kind: ClassVar[str] = "uniform"

    def probabilities(self, A_b: Block, D_b: np.ndarray, r0: int, ctx: SketchContext) -> np.ndarray:
        return np.where(D_b != 0.0, min(1.0, ctx.sketch_size / max(ctx.rows_kept, 1)), 0.0)

    def size_for(self, eps: float, delta: float, n_features: int, *, coherence: float = 1.0) -> int:
        """``ceil(coherence * 3 d ln(2d/delta) / eps^2)`` (see Notes)."""
        if not float(coherence) >= 1.0:
            raise InvalidParameterError(f"coherence must be >= 1 (it is n max_i tau_i / d); got {coherence!r}")
        return int(math.ceil(float(coherence) * leverage_size(eps, delta, n_features) - 1e-9))


class RowNormSampler(Sampler):
    """Sample by the squared row norms of ``sqrt|D| A``: ``p_i = min(1, c q_i)``,
    ``q_i = |D_i| ||a_i||^2``.

    With ``waterfill=False``, ``c = s / Z`` with ``Z = sum_j q_j`` (one preliminary stage).
    With ``waterfill=True`` (default), ``c >= s / Z`` is the largest value with
    ``sum_i min(1, c q_i) <= s``: rows whose probability would exceed one are kept surely
    and their unused budget goes to the other rows. Neither stage reads ``A``: they use
    ``D_b`` and the cached squared row norms only.

    Parameters
    ----------
    waterfill : bool, default True
    n_grid : int, default 129
        Grid points of the water-filling search.

    Notes
    -----
    Stage 0 partial: ``"Z"`` (float, ``sum q_i``) and ``"n_pos"`` (float, rows with
    ``q_i > 0``); ``pre_finish`` sets ``ctx.info["Z"]``, ``ctx.info["c"]`` (``s / Z``) and,
    when water-filling, ``ctx.info["c_grid"]`` (``c_j = (s/Z) g^j``, geometric up to
    ``(s/Z) 1e6 n_pos / s``). Stage 1 partial: ``"n_sat"`` and ``"q_unsat"`` (arrays over the
    grid: rows with ``c_j q_i >= 1``, and the sum of ``q_i`` over the others). The driver
    takes the last ``j`` with ``S(c_j) = n_sat_j + c_j q_unsat_j <= s`` and sets
    ``c = (s - n_sat_j) / q_unsat_j`` (>= ``c_j``); rows saturated at ``c_j`` stay saturated,
    so ``sum_i min(1, c q_i) <= s`` exactly, with equality unless a row saturates in between.
    With water-filling and ``s >= n_pos`` every row with ``q_i > 0`` is kept (``c = inf``).

    Guarantee: ``tau_i <= q_i / lambda`` with ``lambda = lambda_min(A^T |D| A)``, so
    ``p_i >= min(1, beta tau_i)`` holds when ``c >= beta / lambda``. Since ``c >= s / Z``,
    ``size_for(eps, delta, d, condition=kappa) = ceil(kappa * leverage_size)`` with
    ``kappa = ||sqrt|D| A||_F^2 / (d lambda) >= 1`` suffices (with or without
    water-filling). Water-filling makes the unsaturated rows alone matter: it suffices
    that ``s >= n_sat + beta sum_unsat q_i / lambda``, which is close to ``beta d`` when the
    heavy rows are the saturated ones (the coherent case where uniform sampling fails).

    Cost: no pass over ``A`` beyond the final one (the stages touch ``n_b`` numbers per
    block; stage 1 sorts them, ``O(n_b log n_b)``); ``2 n_grid`` floats of communication
    per block; final pass as for every sampler.

    References
    ----------
    A. Frieze, R. Kannan, S. Vempala. Fast Monte-Carlo algorithms for finding low-rank
    approximations. J. ACM 51(6), 2004.
    P. Drineas, M. W. Mahoney, S. Muthukrishnan. Sampling algorithms for l2 regression and
    applications. SODA 2006.
    J. A. Tropp. User-friendly tail bounds for sums of random matrices. FoCM 12, 2012.
    """

    kind: ClassVar[str] = "rownorm"

    def __init__(self, *, waterfill: bool = True, n_grid: int = 129) -> None:
        if not isinstance(waterfill, (bool, np.bool_)):
            raise DSketchTypeError(f"waterfill must be a bool; got {waterfill!r}")
        self.waterfill = bool(waterfill)
        self.n_grid = check_param_int("n_grid", n_grid, 2)
        self.n_pre_stages = 2 if self.waterfill else 1
        self.pre_stage_reads_A = (False, False) if self.waterfill else (False,)

    def describe(self) -> dict[str, Any]:
        return {"sketch": self.kind, "waterfill": self.waterfill, "n_grid": self.n_grid}

    def pre_block(
        self, stage: int, A_b: Block | None, D_b: np.ndarray, rownorm2_b: np.ndarray, r0: int, ctx: SketchContext
    ) -> Partial:
        if stage not in range(self.n_pre_stages):
            return super().pre_block(stage, A_b, D_b, rownorm2_b, r0, ctx)
        q = np.abs(check_weights(D_b, np.size(D_b), r0)) * np.asarray(rownorm2_b, dtype=np.float64)
        if stage == 0:
            return {"Z": float(q.sum()), "n_pos": float(np.count_nonzero(q))}
        c = np.asarray(ctx.info["c_grid"], dtype=np.float64)
        qs = np.sort(q)
        prefix = np.concatenate([[0.0], np.cumsum(qs)])
        first_sat = np.searchsorted(qs, 1.0 / c, side="left")  # c q >= 1  <=>  q >= 1/c
        return {"n_sat": (qs.size - first_sat).astype(np.float64), "q_unsat": prefix[first_sat]}

    def pre_finish(self, stage: int, total: Partial, ctx: SketchContext) -> SketchContext:
        if stage not in range(self.n_pre_stages):
            return super().pre_finish(stage, total, ctx)
        s = float(ctx.sketch_size)
        if stage == 0:
            Z, n_pos = float(total["Z"]), float(total["n_pos"])
            if Z <= 0.0:
                return ctx.with_info(Z=0.0, c=0.0, c_grid=np.ones(1))
            if not self.waterfill:
                return ctx.with_info(Z=Z, c=s / Z)
            if s >= n_pos:
                return ctx.with_info(Z=Z, c=math.inf, c_grid=np.full(1, math.inf))
            top = max(2.0, 1e6 * n_pos / s)
            return ctx.with_info(Z=Z, c=s / Z, c_grid=(s / Z) * np.geomspace(1.0, top, self.n_grid))
        grid = np.asarray(ctx.info["c_grid"])
        if not np.isfinite(grid[0]) or ctx.info["Z"] <= 0.0:
            return ctx
        n_sat, q_unsat = np.asarray(total["n_sat"]), np.asarray(total["q_unsat"])
        ok = np.flatnonzero(n_sat + grid * q_unsat <= s * (1.0 + 1e-12))
        j = int(ok[-1]) if ok.size else 0
        c = (s - n_sat[j]) / q_unsat[j] if q_unsat[j] > 0.0 else float(grid[j])
        return ctx.with_info(c=float(max(c, grid[j])))

    def probabilities(self, A_b: Block, D_b: np.ndarray, r0: int, ctx: SketchContext) -> np.ndarray:
        c = float(ctx.info["c"])
        q = np.abs(D_b) * row_norms2(A_b)
        with np.errstate(invalid="ignore"):  # c = inf and q = 0: masked below
            return np.where(q > 0.0, np.minimum(1.0, c * q), 0.0)

    def _diagnostics(self, ctx: SketchContext) -> dict[str, Any]:
        return {"c": float(ctx.info["c"]), "Z": float(ctx.info["Z"])}

    def size_for(self, eps: float, delta: float, n_features: int, *, condition: float = 1.0) -> int:
        """``ceil(condition * 3 d ln(2d/delta) / eps^2)`` (see Notes)."""
        if not float(condition) >= 1.0:
            raise InvalidParameterError(
                f"condition must be >= 1 (it is ||sqrt|D|A||_F^2 / (d lambda_min)); got {condition!r}"
            )
        return int(math.ceil(float(condition) * leverage_size(eps, delta, n_features) - 1e-9))
