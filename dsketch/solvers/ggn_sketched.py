"""Full-data GGN-SCORE for large ``n`` and few parameters: the GGN matrix by row sampling.

docs/theory.md#ggn-score (arXiv 2404.14875): "for large n with few parameters, the same GGN matrix
``J^T Q J`` sketched by row sampling through the engine". With ``p = n1 n0 + ny n1``
parameters small (hundreds to a few thousand) the ``p x p`` system is cheap and the cost
is the pass over ``n`` samples. Every iteration maps two tasks over the row blocks of a
problem store through :class:`dsketch.engine.core.Engine` and reduces their partial results over a
fixed tree of block indices:

1. **Exact loss and gradient** (one pass). For samples ``x_i`` with outputs ``y_i`` and
   ``k = n ny``: ``R = (1/2k) sum ||Phi(x_i) - y_i||^2``, ``grad R = J^T r`` (back-propagation,
   no Jacobian formed). The same pass returns a histogram of the sampling scores
   ``q_i = ||J_i||_F^2`` (the squared norms of sample ``i``'s ``ny`` Jacobian rows,
   :meth:`TwoLayerNet.jacobian_sq_norms`) on a fixed logarithmic grid.
2. **Water level** (driver). ``c`` is the largest level with ``sum_i min(1, c q_i) <= s``
   evaluated at the histogram's bin edges, then refined inside the last bin (see
   :func:`water_level`); rows whose probability would exceed one are kept surely and their
   unused budget goes to the others. ``s >= #{q_i > 0}`` keeps every row (``c = inf``),
   which gives the exact ``J^T Q J``.
3. **Sampled GGN matrix** (one pass). Sample ``i`` is kept independently when
   ``u_i < p_i = min(1, c q_i)``, with ``u_i`` from the project's counter-based generator
   keyed by ``(seed, iteration, SAMPLE_STREAM, global row i)``; the kept samples' Jacobian
   rows form ``G~ = (1/k) sum_{i kept} J_i^T J_i / p_i``, unbiased for ``J^T Q J``.
4. **GGN-SCORE step** (driver, ``p x p`` Cholesky)::

       g = tau h_mu'(theta),  H = diag(h_mu'')  (times tau with scale_hessian_by_tau)
       d = -(G~ + H)^{-1} (J^T r + g),   alpha_k = min(1, alpha / (1 + M_g eta)),
       eta = sqrt(g^T H^{-1} g),         theta <- theta + alpha_k d.

Determinism: the kept rows are a function of ``(seed, iteration, global row)`` only, so a
retried task, another worker count or another row-block layout keeps the same rows; the
reduction tree is fixed, so for one block layout the result is bitwise the same for any
number of workers (other layouts change only the rounding of the sums).

Cost per iteration: two passes over the data (``persist=True`` loads the blocks into
worker memory once); ``O(n (n1 n0 + ny n1))`` work for pass 1, ``O(n n1 n0)`` plus
``O(s ny p^2)`` for pass 2; communication ``O(p^2 + n_bins)`` floats per block; driver
``O(p^3)``. Pass 1 at the new iterate also serves the next step, so a fit of ``T``
steps reads the data ``2 T + 1`` times. Without a line search small sketches can
overshoot where ``H`` is small; ``backtracking=True`` halves such steps (see
:class:`SketchedGGN`).

References
----------
E. Adeoye, P. Petersen, A. Bemporad. Regularized Gauss-Newton for optimizing
overparameterized neural networks. arXiv 2404.14875.
P. Drineas, R. Kannan, M. W. Mahoney. Fast Monte Carlo algorithms for matrices I:
approximating matrix multiplication. SIAM J. Comput. 36(1), 2006.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
from distributed import Client
from scipy.linalg import blas

from dsketch.engine.core import Engine
from dsketch.errors import ChunkLayoutError, ConvergenceWarning, InvalidParameterError, StoreFormatError
from dsketch.models.twolayer_net import TwoLayerNet
from dsketch.sketch import random as crng
from dsketch.solvers.ggn_score import (
    GGNScoreConfig,
    regulariser_terms,
    score_constant,
    score_step_size,
)
from dsketch.solvers.result import HISTORY_COLUMNS, STATUS_MESSAGES, FitResult, Status
from dsketch.store import Block, ProblemSpec

logger = logging.getLogger("dsketch")

SAMPLE_STREAM = 11
"""Counter-RNG stream of this sampler (streams 1-7 belong to the engine's sketches)."""

BINS_PER_OCTAVE = 16
"""Resolution of the score histogram: bin ``b`` holds ``2^{b/16} <= q < 2^{(b+1)/16}``."""

DEFAULT_BLOCK_ROWS = 2**16


# --------------------------------------------------------------------------- per-block maths
def score_histogram(q: np.ndarray) -> dict[str, np.ndarray]:
    """Histogram of the positive scores on the fixed grid ``2^{b / BINS_PER_OCTAVE}``.

    Returns ``{"bins": int64 (B,) increasing, "counts": float64 (B,), "sums": float64 (B,)}``
    over the non-empty bins only (so the size does not depend on the range of ``q``).
    """
    q = np.asarray(q, dtype=np.float64)
    q = q[q > 0.0]
    b = np.floor(np.log2(q) * BINS_PER_OCTAVE).astype(np.int64)
    bins, inv = np.unique(b, return_inverse=True)
    return {
        "bins": bins,
        "counts": np.bincount(inv, minlength=bins.size).astype(np.float64),
        "sums": np.bincount(inv, weights=q, minlength=bins.size),
    }


def merge_histograms(*hists: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Sum histograms of :func:`score_histogram` bin by bin (in argument order)."""
    bins = np.concatenate([h["bins"] for h in hists])
    out, inv = np.unique(bins, return_inverse=True)
    return {
        "bins": out,
        "counts": np.bincount(inv, weights=np.concatenate([h["counts"] for h in hists]), minlength=out.size),
        "sums": np.bincount(inv, weights=np.concatenate([h["sums"] for h in hists]), minlength=out.size),
    }


def water_level(hist: dict[str, np.ndarray], sketch_size: float) -> float:
    """The level ``c`` of the inclusion probabilities ``p_i = min(1, c q_i)``.

    Candidate thresholds are the histogram's bin edges ``t``: at ``c = 1/t`` the rows of the
    bins at or above ``t`` are saturated and the others are not, so
    ``S(1/t) = N_{>= t} + Q_{< t} / t`` is exact. The smallest edge with ``S <= s`` is taken
    and ``c = (s - N_{>= t}) / Q_{< t} >= 1/t``; rows saturated at ``1/t`` stay saturated,
    so ``sum_i min(1, c q_i) <= s`` (equality unless a row of the next bin down saturates).
    When even the top edge gives ``S > s`` no row saturates and ``c = s / sum_i q_i``.
    Returns ``inf`` when ``s`` is at least the number of positive scores (every such row is
    kept) and ``0`` when there is none.
    """
    counts, sums = np.asarray(hist["counts"]), np.asarray(hist["sums"])
    n_pos = float(counts.sum())
    s = float(sketch_size)
    if n_pos == 0.0:
        return 0.0
    if s >= n_pos:
        return math.inf
    bins = np.asarray(hist["bins"], dtype=np.float64)
    edges = np.exp2(np.concatenate([bins, [bins[-1] + 1.0]]) / BINS_PER_OCTAVE)
    n_ge = np.concatenate([np.cumsum(counts[::-1])[::-1], [0.0]])
    q_lt = np.concatenate([[0.0], np.cumsum(sums)])
    S = n_ge + q_lt / edges
    ok = np.flatnonzero(S <= s * (1.0 + 1e-12))
    if ok.size == 0:  # even above the largest score S(c) = c sum q > s: nothing saturates
        return s / float(q_lt[-1])
    j = int(ok[0])
    return float(max((s - n_ge[j]) / q_lt[j], 1.0 / edges[j]))


def loss_gradient_scores(
    net: TwoLayerNet, theta: np.ndarray, X: np.ndarray, Y: np.ndarray
) -> dict[str, Any]:
    """Pass-1 partial of one block: ``sum_i ||e_i||^2 / 2``, ``J^T e`` and the score histogram.

    ``e_i = Phi(x_i) - y_i``; dividing the first two by ``k = n ny`` gives the loss and the
    gradient ``J^T r``. Keys: ``"sse"`` (float), ``"grad"`` (p,), ``"hist"``.
    """
    kb = X.shape[0] * net.n_outputs
    loss, grad = net.loss_gradient(theta, X, Y)
    return {"sse": loss * kb, "grad": grad * kb, "hist": score_histogram(net.jacobian_sq_norms(theta, X))}


def sampled_gram(
    net: TwoLayerNet,
    theta: np.ndarray,
    X: np.ndarray,
    Y: np.ndarray,
    r0: int,
    *,
    level: float,
    seed: int,
    iteration: int,
    chunk_rows: int = 4096,
) -> dict[str, Any]:
    """Pass-2 partial of one block: ``sum_{i kept} J_i^T J_i / p_i`` over rows ``r0 + i``.

    ``p_i = min(1, level q_i)`` (``level = inf`` keeps every row with ``q_i > 0``); row
    ``i`` is kept when ``uniform(seed, iteration, SAMPLE_STREAM, r0 + i) < p_i``. The kept
    rows' Jacobians are formed ``chunk_rows`` samples at a time (memory
    ``chunk_rows ny p`` floats). Keys: ``"gram"`` (p x p), ``"rows"`` (kept samples),
    ``"expected_rows"`` (``sum p_i``).
    """
    m, ny, npar = X.shape[0], net.n_outputs, net.n_params
    q = net.jacobian_sq_norms(theta, X)
    with np.errstate(invalid="ignore"):  # level = inf and q = 0: masked
        prob = np.where(q > 0.0, np.minimum(1.0, level * q), 0.0)
    u = crng.uniform(seed, iteration, SAMPLE_STREAM, np.arange(r0, r0 + m, dtype=np.int64))
    keep = np.flatnonzero(u < prob)
    gram = np.zeros((npar, npar), order="F")
    for s0 in range(0, keep.size, chunk_rows):
        idx = keep[s0 : s0 + chunk_rows]
        _, J = net.residual_jacobian(theta, X[idx], Y[idx])
        wt = np.tile(1.0 / prob[idx], ny)  # J's rows: output 1 of every sample, then output 2, ...
        J *= np.sqrt(wt)[:, None]
        # upper triangle of gram + J^T J (half the flops of a full product)
        gram = blas.dsyrk(1.0, J, beta=1.0, c=gram, trans=1, lower=0, overwrite_c=1)
    gram = np.triu(gram) + np.triu(gram, 1).T
    return {"gram": gram, "rows": float(keep.size), "expected_rows": float(prob.sum())}


# --------------------------------------------------------------------------- tasks
def _inputs_outputs(blk: Block, target: str, n_outputs: int) -> tuple[np.ndarray, np.ndarray]:
    """A block's inputs ``X`` (dense) and outputs ``Y`` (``n_rows x n_outputs``)."""
    X = blk.A.toarray() if sp.issparse(blk.A) else np.asarray(blk.A)
    Y = blk.b if target == "b" else blk.extra[target]
    return X, np.asarray(Y, dtype=np.float64).reshape(X.shape[0], n_outputs)


def _stats_task(blk: Block, r0: int, net: TwoLayerNet, theta: np.ndarray, target: str) -> dict[str, Any]:
    X, Y = _inputs_outputs(blk, target, net.n_outputs)
    return loss_gradient_scores(net, theta, X, Y)


def _gram_task(blk: Block, r0: int, net: TwoLayerNet, theta: np.ndarray, target: str, level: float, seed: int,
               iteration: int) -> dict[str, Any]:
    X, Y = _inputs_outputs(blk, target, net.n_outputs)
    return sampled_gram(net, theta, X, Y, r0, level=level, seed=seed, iteration=iteration)


def _combine(*parts: dict[str, Any]) -> dict[str, Any]:
    """Sum partials key by key (histograms bin by bin), in argument order."""
    out: dict[str, Any] = {}
    for key in parts[0]:
        if key == "hist":
            out[key] = merge_histograms(*(p[key] for p in parts))
        else:
            total = parts[0][key]
            for p in parts[1:]:
                total = total + p[key]
            out[key] = total
    return out


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class CurvatureEstimate:
    """Loss, gradient and sketched GGN matrix at one iterate (two passes).

    Attributes
    ----------
    loss : float
        ``R(theta)``, exact (all rows).
    gradient : ndarray of shape (p,)
        ``J^T r``, exact.
    gram : ndarray of shape (p, p)
        ``G~``, the row-sampled estimate of ``J^T Q J`` (exact when every row is kept).
    sketch_rows : int
        Samples kept.
    expected_rows : float
        ``sum_i p_i``.
    level : float
        The water level ``c`` (``inf``: every row kept).
    """

    loss: float
    gradient: np.ndarray
    gram: np.ndarray
    sketch_rows: int
    expected_rows: float
    level: float


# --------------------------------------------------------------------------- solver
class SketchedGGN:
    """GGN-SCORE with the full-data GGN matrix estimated by row sampling on a cluster.

    Parameters
    ----------
    net : TwoLayerNet
        The network (``p = net.n_params`` should be small: the driver solves ``p x p``).
    config : GGNScoreConfig
        ``tau``, ``mu``, smoother, ``alpha`` and the ``scale_hessian_by_tau`` flag.
    sketch_size : int or None
        Expected number of sampled rows ``s``; ``None`` (or ``s >= n``) uses every row:
        the exact ``J^T Q J``.
    seed : int
        Key of the sampling randomness (with the iteration and the global row).
    target : str
        ``"b"`` (one output) or a row-aligned member of shape (n, ny).
    block_rows : int
        Rows per block (ignored when ``bounds`` is given).
    bounds : sequence of (start, stop), optional
        Explicit contiguous row blocks covering every row.
    persist : bool
        Load the blocks into worker memory once per fit instead of reading the store
        on every pass (one counted pass).
    split_every : int
        Fan-in of the reduction tree.
    backtracking : bool
        Off (default): the authors' step ``theta + alpha_k d`` is always taken. On: a step
        that increases the objective is halved until it does not (at most
        ``max_halvings`` times, then a ``ConvergenceWarning`` and the fit stops). The
        trial's objective comes from the pass the next step needs anyway, so an accepted
        step costs nothing extra. A safeguard for small sketches: row-norm sampling errs
        by ``~ ||G|| / sqrt(s)`` in absolute terms, which can be large relative to a small
        ``H`` in the flat directions of ``J^T Q J``.
    max_halvings : int

    Examples
    --------
    >>> solver = SketchedGGN(TwoLayerNet(10, 32), GGNScoreConfig(mu=32**0.5), sketch_size=3520)
    >>> res = solver.fit_store(spec, client, theta0=theta0, iters=10)  # doctest: +SKIP
    """

    def __init__(
        self,
        net: TwoLayerNet,
        config: GGNScoreConfig,
        *,
        sketch_size: int | None,
        seed: int = 0,
        target: str = "b",
        block_rows: int = DEFAULT_BLOCK_ROWS,
        bounds: Sequence[tuple[int, int]] | None = None,
        persist: bool = False,
        split_every: int = 8,
        backtracking: bool = False,
        max_halvings: int = 20,
    ) -> None:
        if sketch_size is not None and (isinstance(sketch_size, bool) or int(sketch_size) != sketch_size
                                        or sketch_size < 1):
            raise InvalidParameterError(f"sketch_size must be a positive integer or None; got {sketch_size!r}")
        if int(block_rows) < 1:
            raise ChunkLayoutError(f"block_rows must be a positive integer; got {block_rows!r}")
        if int(split_every) < 2:
            raise InvalidParameterError(f"split_every must be >= 2; got {split_every!r}")
        self.net = net
        self.config = config
        self.sketch_size = None if sketch_size is None else int(sketch_size)
        self.seed = int(seed)
        self.target = target
        self.block_rows = int(block_rows)
        self.bounds = None if bounds is None else [(int(a), int(b)) for a, b in bounds]
        self.persist = bool(persist)
        self.split_every = int(split_every)
        self.backtracking = bool(backtracking)
        if int(max_halvings) != max_halvings or max_halvings < 0:
            raise InvalidParameterError(f"max_halvings must be a non-negative integer; got {max_halvings!r}")
        self.max_halvings = int(max_halvings)
        self.smoother = config.make_smoother()
        self.M_g = score_constant(self.smoother, net.n_params)

    # ------------------------------------------------------------------ data layout
    def _check_store(self, spec: ProblemSpec) -> None:
        if spec.has_w:
            raise StoreFormatError(
                f"store {spec.path!r} has row weights w, but the network loss is unweighted; "
                "write the store without w"
            )
        ny = self.net.n_outputs
        if self.target == "b":
            if ny != 1:
                raise StoreFormatError(f"target 'b' holds one output but the network has n_outputs={ny}; "
                                 "pass target=<member of shape (n, ny)>")
        elif self.target not in spec.members:
            raise StoreFormatError(f"target {self.target!r} is not a member of {spec.path!r}; "
                             f"members: {['b', *spec.members]}")
        if spec.n_features != self.net.n_inputs:
            raise StoreFormatError(f"the store has {spec.n_features} columns but the network expects "
                             f"n_inputs={self.net.n_inputs}")

    def _engine(self, spec: ProblemSpec, client: Client, *, persist: bool = False) -> Engine:
        """The engine over the store's row blocks (``block_rows`` or ``bounds``)."""
        self._check_store(spec)
        return Engine(spec, client, block_rows=self.block_rows, bounds=self.bounds, persist=persist,
                      split_every=self.split_every, members=() if self.target == "b" else (self.target,))

    # ------------------------------------------------------------------ stages
    def _pass_loss_gradient(self, engine: Engine, theta: np.ndarray, k: int) -> tuple[
            float, np.ndarray, dict[str, np.ndarray]]:
        tot = engine.map_reduce(_stats_task, self.net, theta, self.target, combine=_combine)
        return float(tot["sse"]) / k, np.asarray(tot["grad"]) / k, tot["hist"]

    def _pass_gram(self, engine: Engine, theta: np.ndarray, level: float, iteration: int, k: int) -> dict[str, Any]:
        tot = engine.map_reduce(_gram_task, self.net, theta, self.target, level, self.seed, iteration,
                                combine=_combine)
        G = np.asarray(tot["gram"], dtype=np.float64) / k
        return {"gram": 0.5 * (G + G.T), "rows": round(float(tot["rows"])),
                "expected_rows": float(tot["expected_rows"])}

    def _level(self, hist: dict[str, np.ndarray], n: int) -> float:
        return water_level(hist, n if self.sketch_size is None else self.sketch_size)

    def update_gradient_hessian(
        self, spec: ProblemSpec, client: Client, theta: np.ndarray, *, iteration: int = 0
    ) -> CurvatureEstimate:
        """Exact loss and gradient and the sampled GGN matrix at ``theta`` (two passes).

        Parameters
        ----------
        spec : ProblemSpec
        client : distributed.Client
        theta : ndarray of shape (p,)
        iteration : int
            Key of the sample (with ``seed`` and the global rows).
        """
        theta = np.asarray(theta, dtype=np.float64)
        engine = self._engine(spec, client)
        k = spec.n_samples * self.net.n_outputs
        loss, grad, hist = self._pass_loss_gradient(engine, theta, k)
        level = self._level(hist, spec.n_samples)
        g = self._pass_gram(engine, theta, level, iteration, k)
        return CurvatureEstimate(loss=loss, gradient=grad, gram=g["gram"], sketch_rows=g["rows"],
                                 expected_rows=g["expected_rows"], level=level)

    def loss_gradient(self, spec: ProblemSpec, client: Client, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """Exact ``R(theta)`` and ``J^T r`` over all rows (one pass)."""
        loss, grad, _ = self._pass_loss_gradient(self._engine(spec, client), np.asarray(theta, dtype=np.float64),
                                                 spec.n_samples * self.net.n_outputs)
        return loss, grad

    def inner_solve(self, est: CurvatureEstimate, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Direction ``d = -(G~ + H)^{-1} (J^T r + g)``; returns ``(d, g, h)``.

        A Cholesky factorisation of ``G~ + H`` (positive definite: ``G~`` is PSD and
        ``h > 0``); if it fails numerically a ``ConvergenceWarning`` is issued and the
        system is solved by an eigendecomposition with the spectrum floored at
        ``1e-12 * max``.
        """
        cfg = self.config
        g, h = regulariser_terms(self.smoother, theta, tau=cfg.tau, scale_hessian_by_tau=cfg.scale_hessian_by_tau)
        rhs = est.gradient + g
        A = est.gram + np.diag(h)
        try:
            d = -sla.cho_solve(sla.cho_factor(A, lower=True, check_finite=True), rhs)
        except np.linalg.LinAlgError:
            warnings.warn("the sketched GGN system is not numerically positive definite; solving it with a "
                          "floored eigendecomposition (increase sketch_size or tau)", ConvergenceWarning,
                          stacklevel=3)
            w, V = np.linalg.eigh(A)
            w = np.maximum(w, 1e-12 * max(float(w.max()), 1e-300))
            d = -V @ ((V.T @ rhs) / w)
        return d, g, h

    def objective(self, loss: float, theta: np.ndarray) -> float:
        """``loss + tau sum_p h_mu(theta_p)``."""
        return loss + self.config.tau * float(np.sum(self.smoother.value(theta)))

    # ------------------------------------------------------------------ run
    def fit_store(
        self, spec: ProblemSpec, client: Client, *, theta0: np.ndarray, iters: int
    ) -> FitResult:
        """Run ``iters`` sketched GGN-SCORE steps from ``theta0`` on the whole store.

        Parameters
        ----------
        spec : ProblemSpec
            ``A`` holds the inputs (n x n0), the target member the outputs.
        client : distributed.Client
        theta0 : ndarray of shape (p,)
        iters : int
            Number of steps. Each reads the data twice: the sampled GGN pass, and the
            loss / gradient / score pass at the new iterate (which the next step reuses);
            one more pass evaluates ``theta0``. A rejected backtracking trial costs one
            more pass.

        Returns
        -------
        FitResult
            ``x`` is the last ``theta``, ``jac`` the objective's gradient there. The history
            has a row per iterate ``theta_0 .. theta_T`` (:data:`HISTORY_COLUMNS`, ``loss``
            the objective, loss + ``tau sum h_mu``, and ``step_size``,
            ``newton_decrement`` (``sqrt(-(J^T r + g)^T d)``) and ``sketch_rows`` of the step
            from it, NaN on the last row) plus ``data_loss`` (without the regulariser) and
            ``expected_rows``; ``info["data_loss"]`` is the last one. Backtracking that
            finds no decrease stops with ``Status.LINE_SEARCH_FAILED``.
        """
        theta = np.array(theta0, dtype=np.float64, copy=True)
        if theta.shape != (self.net.n_params,):
            raise InvalidParameterError(f"theta0 must have shape ({self.net.n_params},); got {theta.shape}")
        if int(iters) != iters or iters < 0:
            raise InvalidParameterError(f"iters must be a non-negative integer; got {iters!r}")
        self._check_store(spec)
        k = spec.n_samples * self.net.n_outputs
        hist: dict[str, list[float]] = {c: [] for c in (*HISTORY_COLUMNS, "data_loss", "expected_rows")}
        passes = 0
        t0 = time.perf_counter()

        def record(it: int, pt: _Point, **step: float) -> None:
            row = {"iteration": it, "data_loss": pt.loss, "loss": pt.obj, "grad_norm": float(np.linalg.norm(pt.jac)),
                   "step_size": np.nan, "newton_decrement": np.nan, "sketch_rows": np.nan, "expected_rows": np.nan,
                   **step, "passes": passes, "seconds": time.perf_counter() - t0}
            for c, column in hist.items():
                column.append(float(row[c]))

        engine = self._engine(spec, client, persist=self.persist)
        passes += int(self.persist)  # the load of the blocks into worker memory
        status = Status.COMPLETED
        try:
            pt = self._evaluate(engine, theta, k)
            passes += 1
            for it in range(int(iters)):
                nxt, step, n = self._step(engine, spec, pt, it, k)
                passes += n
                record(it, pt, **step)
                if nxt is None:
                    warnings.warn(f"iteration {it}: no decrease of the objective after {self.max_halvings} "
                                  "halvings; stopping (increase sketch_size)", ConvergenceWarning, stacklevel=2)
                    status = Status.LINE_SEARCH_FAILED
                    break
                logger.info("sketched GGN it %d: objective %.6e, step %.3g, rows %d", it, pt.obj, step["step_size"],
                            step["sketch_rows"])
                pt = nxt
            else:
                record(int(iters), pt)
        finally:
            engine.close()
        return FitResult(
            x=pt.theta, fun=pt.obj, jac=pt.jac, success=status is Status.COMPLETED, status=status,
            message=STATUS_MESSAGES[status], nit=len(hist["iteration"]) - 1, n_passes=passes,
            wall_time=time.perf_counter() - t0, grad_norm=float(np.linalg.norm(pt.jac)),
            history={c: np.asarray(v) for c, v in hist.items()},
            info={"data_loss": float(pt.loss), "sketch_size": self.sketch_size},
        )

    def _evaluate(self, engine: Engine, theta: np.ndarray, k: int) -> _Point:
        """The point ``theta`` with its loss, gradient, scores and objective (one pass)."""
        loss, grad, scores = self._pass_loss_gradient(engine, theta, k)
        jac = grad + self.config.tau * self.smoother.d1(theta)
        return _Point(theta=theta, loss=loss, grad=grad, scores=scores, obj=self.objective(loss, theta), jac=jac)

    def _step(self, engine: Engine, spec: ProblemSpec, pt: _Point, it: int,
              k: int) -> tuple[_Point | None, dict[str, float], int]:
        """One GGN-SCORE step from ``pt``: the sampled GGN pass, the direction, and the
        trial points (halved while the objective rises, with ``backtracking``). Returns the
        next point (None when backtracking found no decrease), the step's history entries
        and the passes it took."""
        level = self._level(pt.scores, spec.n_samples)
        gp = self._pass_gram(engine, pt.theta, level, it, k)
        est = CurvatureEstimate(loss=pt.loss, gradient=pt.grad, gram=gp["gram"], sketch_rows=gp["rows"],
                                expected_rows=gp["expected_rows"], level=level)
        d, g, h = self.inner_solve(est, pt.theta)
        a_k = score_step_size(g, h, M_g=self.M_g, alpha=self.config.alpha)
        step = {"newton_decrement": math.sqrt(max(-float((pt.grad + g) @ d), 0.0)),
                "sketch_rows": gp["rows"], "expected_rows": gp["expected_rows"]}
        passes = 1
        for halving in range(self.max_halvings + 1):
            trial = self._evaluate(engine, pt.theta + a_k * d, k)
            passes += 1
            if not self.backtracking or trial.obj <= pt.obj or halving == self.max_halvings:
                break
            a_k *= 0.5
        if self.backtracking and trial.obj > pt.obj:
            return None, step, passes
        return trial, {**step, "step_size": a_k}, passes


@dataclass(frozen=True)
class _Point:
    """An iterate of :meth:`SketchedGGN.fit_store` with what one pass computes there."""

    theta: np.ndarray  # (p,) parameters
    loss: float  # data loss R(theta)
    grad: np.ndarray  # (p,) J^T r
    scores: dict[str, np.ndarray]  # histogram of the sampling scores
    obj: float  # loss + tau sum h_mu(theta)
    jac: np.ndarray  # (p,) gradient of the objective


__all__ = [
    "BINS_PER_OCTAVE",
    "SAMPLE_STREAM",
    "CurvatureEstimate",
    "SketchedGGN",
    "loss_gradient_scores",
    "merge_histograms",
    "sampled_gram",
    "score_histogram",
    "water_level",
]
