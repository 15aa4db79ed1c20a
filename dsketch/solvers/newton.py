"""Approximate Newton on the engine: exact low-rank parts, sketched diagonal part.

Order of calls in one iteration (docs/theory.md#the-approximate-newton-framework, DESIGN.md section 3):

1. ``update_gradient_hessian``: the sketch's preliminary stages (if any) and the fused
   curvature pass over A: loss, gradient ``A^T r``, ``A^T U`` and the sketch of
   ``A^T diag(D) A``. The driver assembles ``H~ = sketch + (A^T U) C (A^T U)^T + penalty``.
2. ``check_convergence``: relative gradient norm.
3. ``inner_solve``: Cholesky of ``H~`` with the fallbacks of
   :func:`dsketch.solvers.linalg.solve_newton_system`; the Newton decrement.
4. ``line_search``: one pass computes ``A p``; all Armijo trial steps are then evaluated
   together on the cached predictor (``eta + t A p``) without reading A again.

So an iteration costs 2 passes over A (plus a sketch's preliminary passes that read A:
one for leverage scores), and the exact Newton method is the same solver with the exact
Gram ``A^T diag(D) A``.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from dsketch.engine.core import Engine
from dsketch.errors import ConvergenceWarning, NonFiniteCurvatureError
from dsketch.models.base import Model, Scalars
from dsketch.sketch import SketchContext
from dsketch.solvers.checkpoint import Checkpoint, save_checkpoint
from dsketch.solvers.linalg import pcg, preconditioner, solve_newton_system
from dsketch.solvers.stopping import _trace, _vanished
from dsketch.solvers.result import (
    HISTORY_COLUMNS,
    STATUS_MESSAGES,
    SUCCESS,
    TABLE_HEADER,
    FitResult,
    NewtonState,
    Status,
    format_row,
)

logger = logging.getLogger("dsketch")

Callback = Callable[[NewtonState], None]
EPS = float(np.finfo(np.float64).eps)


@dataclass(frozen=True)
class NewtonConfig:
    """Settings of the approximate Newton solver (validated once).

    Parameters
    ----------
    tol : float, default 1e-8
        Stop when ``||grad||_2 <= tol * ||grad_0||_2``.
    max_iter : int, default 50
    armijo : float, default 1e-4
        Sufficient-decrease constant ``c`` in ``L(x + t p) <= L(x) + c t g.p``.
    max_halvings : int, default 30
        Trial steps are ``1, 1/2, ..., 2**-max_halvings``, all evaluated in one round.
    seed : int, default 0
        Key of the counter-based sketch randomness.
    direction : {"newton", "gradient"}, default "newton"
        ``"newton"`` solves the (sketched) Newton system; ``"newton-cg"`` solves the
        *exact* Newton system by conjugate gradients on exact Hessian-vector products
        (``A^T (D * (A v))`` in one pass over A, plus the exact low-rank part),
        preconditioned by the Cholesky factor of the sketched Hessian, to the relative
        residual ``min(0.1, sqrt(||g|| / ||g_0||))`` (superlinear, no accuracy ceiling);
        ``"gradient"`` is the gradient-descent baseline: ``p = -tau g`` with ``tau``
        doubled after every accepted step and the backtracking taking care of the rest
        (the curvature is not used).
    adaptive_sketch : bool, default False
        ``direction="newton"`` with a sampled or embedded sketch: double the sketch size
        when a step falls short of the decrease its quadratic model predicts (a step below
        1 was needed, or the actual decrease is under half the predicted one) or when the
        Newton decrement shrank by less than half over the last step (slow progress), and
        shrink it by a quarter when a full step delivered 0.9-1.1 times the prediction and
        the decrement shrank twentyfold (slack); between ``n_features`` and ``n_samples``.
    fused : bool, default True
        For a model whose global scalars do not depend on ``A x`` (``Model.fixed_scalars``:
        the GLMs), fold the line search's ``A p`` and the next iteration's curvature into one
        pass (:meth:`NewtonSolver.fused_line_search`): an iteration whose full step is
        accepted costs one pass over A instead of two (plus the leverage-score pass, which
        the fused pass also replaces). The sketch is then drawn with the previous
        iteration's context (leverage scores one step old; still unbiased). Ignored for
        other models.
    score_reuse : int, default 3
        With fused passes, a sketch that rebuilds its context from the sketched Gram
        (leverage scores: ``Sketch.refreshes_from_gram``) rebuilds it every ``score_reuse``
        iterations and keeps it in between; the scores' product with A is then cached on
        the workers and the kept iterations sample with current ``D`` and the older
        transform at no cost beyond the row draw. 1: rebuild every iteration.
    cg_max_iter : int, default 20
        ``direction="newton-cg"``: most Hessian-vector products (passes over A) per step.
    ftol : float or None, default None
        Convergence in loss value: stop with ``Status.CONVERGED_LOSS`` when an accepted step
        decreases the loss by at most ``ftol * |loss|``, and, for a model that is not smooth
        (``model.smooth = False``: the ReLU models, whose Hessian jumps across
        ``(Ax)_i = 0``), also when the line search finds no decrease right after such a
        step (``<= sqrt(ftol) * |loss|``). None: ``1e-12`` for non-smooth models, off (0)
        for smooth ones, which converge in the gradient.
    """

    tol: float = 1e-8
    max_iter: int = 50
    armijo: float = 1e-4
    max_halvings: int = 30
    seed: int = 0
    direction: str = "newton"
    ftol: float | None = None
    cg_max_iter: int = 20
    score_reuse: int = 3
    adaptive_sketch: bool = False
    fused: bool = True

    def __post_init__(self) -> None:
        if self.ftol is not None and not (np.isfinite(self.ftol) and 0 <= self.ftol < 1):
            raise ValueError(f"ftol must be a number in [0, 1) or None; got {self.ftol!r}")
        if not (np.isfinite(self.tol) and self.tol >= 0):
            raise ValueError(f"tol must be a finite number >= 0; got {self.tol!r}")
        if int(self.max_iter) != self.max_iter or self.max_iter < 0:
            raise ValueError(f"max_iter must be an integer >= 0; got {self.max_iter!r}")
        if not 0 < self.armijo < 0.5:
            raise ValueError(f"armijo must lie in (0, 0.5); got {self.armijo!r}")
        if not 0 <= self.max_halvings <= 60:
            raise ValueError(f"max_halvings must lie in [0, 60]; got {self.max_halvings!r}")
        if int(self.seed) != self.seed or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer; got {self.seed!r}")
        if self.direction not in ("newton", "newton-cg", "gradient"):
            raise ValueError(f"direction must be 'newton', 'newton-cg' or 'gradient'; got {self.direction!r}")
        if int(self.cg_max_iter) != self.cg_max_iter or self.cg_max_iter < 1:
            raise ValueError(f"cg_max_iter must be an integer >= 1; got {self.cg_max_iter!r}")
        if int(self.score_reuse) != self.score_reuse or self.score_reuse < 1:
            raise ValueError(f"score_reuse must be an integer >= 1; got {self.score_reuse!r}")


@dataclass
class _Iterate:
    x: np.ndarray
    scalars: Scalars
    loss: float = np.nan
    grad: np.ndarray | None = None
    hess: np.ndarray | None = None
    sketch_rows: int = 0
    lowrank: tuple[np.ndarray, np.ndarray] | None = None  # (A^T U, C) for exact products
    penalty_hess: np.ndarray | None = None
    drawn: SketchContext | None = None  # the context of a fused pass's sketch draw


class NewtonSolver:
    """Approximate (sketched) Newton method with Armijo backtracking.

    Parameters
    ----------
    engine : Engine
    model : Model
    sketch : dsketch.sketch.Sketch
        Curvature estimate of ``A^T diag(D) A`` (``make_sketch("exact")`` for exact Newton).
    sketch_size : int
        Rows sampled (expected) or embedding dimension; ignored by the exact sketch.
    config : NewtonConfig
    callback : callable, optional
        ``callback(state: NewtonState) -> None`` after every iteration; raising
        ``StopIteration`` ends the run with ``Status.CALLBACK_STOP``.
    """

    def __init__(
        self,
        engine: Engine,
        model: Model,
        sketch: Any,
        *,
        sketch_size: int,
        config: NewtonConfig,
        callback: Callback | None = None,
        checkpoint: str | None = None,
        settings: dict[str, Any] | None = None,
    ) -> None:
        self.engine = engine
        self.model = model
        self.sketch = sketch
        self.sketch_size = int(sketch_size)
        self.config = config
        self.callback = callback
        self.history: dict[str, list[float]] = {k: [] for k in HISTORY_COLUMNS}
        self.checkpoint = checkpoint
        self.settings = dict(settings or {})
        self._t_offset = 0.0
        self._header_logged = False
        self._info: dict[str, Any] = {}  # the sketch context's info of the last curvature pass
        self._resume_info: tuple[SketchContext, dict[str, Any] | None] | None = None
        self._last_dec = float("nan")  # the Newton decrement of the last iteration (for adaptive sizes)

    # ------------------------------------------------------------------ stages
    def _context(self, iteration: int, info: dict[str, Any] | None = None) -> SketchContext:
        return SketchContext(
            seed=self.config.seed,
            iteration=iteration,
            n_samples=self.engine.problem.n_samples,
            n_features=self.engine.problem.n_features,
            sketch_size=self.sketch_size,
            info=dict(info or {}),
        )

    def update_gradient_hessian(self, it: _Iterate, iteration: int) -> None:
        """Fused curvature pass; sets ``it.loss``, ``it.grad``, ``it.hess``.

        Where the model overflows at ``it.x`` (an infinite loss, non-finite curvature
        weights) the iterate gets an infinite loss and a NaN gradient, and :meth:`run` stops
        with ``Status.NUMERICAL_ERROR``."""
        try:
            if self._resume_info is not None:  # redraw a fused pass's sketch as it was drawn
                drawn, nxt_info = self._resume_info
                self._resume_info = None
                total, ctx = self.engine.curvature(self.model, self.sketch, it.scalars, drawn, pre_stages=False)
                self._info = dict(nxt_info if nxt_info is not None else drawn.info)
                it.drawn = drawn
            else:
                total, ctx = self.engine.curvature(self.model, self.sketch, it.scalars, self._context(iteration))
                self._info = ctx.info
        except NonFiniteCurvatureError:  # raised by a sketch's preliminary stage
            total = {"loss": np.inf}
        if not np.isfinite(float(total["loss"])):
            d = it.x.size
            it.loss, it.grad, it.hess, it.sketch_rows = float("inf"), np.full(d, np.nan), np.zeros((d, d)), 0
            return
        self._assemble(it, total, ctx)

    def _assemble(self, it: _Iterate, total: dict[str, Any], ctx: SketchContext) -> Any:
        """``H~ = sketch + (A^T U) C (A^T U)^T + penalty``, loss and gradient from reduced partials."""
        sk = self.sketch.finish(
            {k.split(":", 1)[1]: v for k, v in total.items() if k.startswith("sketch:")}, ctx
        )
        pv, pg, ph = self.model.penalty(it.x)
        H = np.array(sk.gram, dtype=np.float64, copy=True)
        if "AU" in total:
            AU = total["AU"]
            C = self.model.core(it.scalars)
            H += AU @ C @ AU.T
            it.lowrank = (AU, C)
        H[np.diag_indices_from(H)] += ph
        it.penalty_hess = ph
        it.loss = float(total["loss"]) + pv
        it.grad = np.asarray(total["grad"], dtype=np.float64) + pg
        it.hess = H
        it.sketch_rows = int(sk.n_rows)
        return sk

    def _adapt_sketch_size(self, step: float, actual: float, predicted: float, loss: float,
                           contraction: float) -> None:
        """Grow the sketch when a step misses its prediction or progress is slow; shrink on slack.

        ``contraction`` is ``dec_k / dec_{k-1}``, how much the last step shrank the Newton
        decrement. A sketched Newton method contracts about as fast as its sketch is
        accurate, so a full step that only halved the decrement says the sketch is too
        rough (grow), and one that divided it by 20 or more says a smaller one would do
        (shrink). Agreement of the actual with the predicted decrease alone is no sign of
        slack: near the optimum every adequate sketch predicts its own step well.
        """
        if getattr(self.sketch, "kind", "") == "exact" or not predicted > 1e3 * EPS * abs(loss):
            return  # exact curvature, or a decrease the loss cannot measure
        n, d = self.engine.problem.n_samples, self.engine.problem.n_features
        ratio = actual / predicted
        old = self.sketch_size
        if step < 1.0 or ratio < 0.5 or contraction > 0.5:
            self.sketch_size = min(n, 2 * old)
        elif contraction < 0.05 and 0.9 <= ratio <= 1.1:
            self.sketch_size = max(min(d, n), int(0.75 * old))
        if self.sketch_size != old:
            logger.debug("sketch size %d -> %d (step %.3g, actual/predicted %.3f, decrement contraction %.3g)",
                         old, self.sketch_size, step, ratio, contraction)

    def hessvec(self, it: _Iterate, v: np.ndarray) -> np.ndarray:
        """The exact ``H v`` at the iterate (one pass over A for the diagonal part)."""
        hv = self.engine.hessvec(self.model, it.scalars, v)
        if it.lowrank is not None:
            AU, C = it.lowrank
            hv = hv + AU @ (C @ (AU.T @ v))
        if it.penalty_hess is not None:
            hv = hv + it.penalty_hess * v
        return hv

    def newton_cg(self, it: _Iterate, rel_grad: float) -> np.ndarray:
        """Inexact Newton direction by PCG on exact products, preconditioned by the sketch."""
        assert it.hess is not None and it.grad is not None
        rtol = min(0.1, float(np.sqrt(rel_grad)))
        p, _n, reason = pcg(lambda v: self.hessvec(it, v), it.grad, preconditioner(it.hess),
                            rtol=rtol, maxiter=self.config.cg_max_iter)
        if reason == "negative-curvature":
            logger.debug("newton-cg: negative curvature; taking the preconditioned step")
        if not np.all(np.isfinite(p)) or float(it.grad @ p) >= 0.0:
            p, _method = solve_newton_system(it.hess, it.grad, stacklevel=5)
        return p

    def _armijo(self, it: _Iterate, p: np.ndarray, gp: float, ts: tuple[float, ...],
                data_loss: np.ndarray) -> tuple[int, float] | None:
        """Index and objective of the largest trial step with sufficient decrease, or None."""
        # tolerance for rounding in the loss itself (sums over many rows)
        slack = 16.0 * EPS * max(abs(it.loss), 1e-300)
        for j, t in enumerate(ts):
            lt = float(data_loss[j]) + self.model.penalty(it.x + t * p)[0]
            if np.isfinite(lt) and lt <= it.loss + self.config.armijo * t * gp + slack:
                return j, lt
        return None

    def line_search(self, it: _Iterate, p: np.ndarray, gp: float, ap: list[Any] | None = None,
                    start: int = 0) -> tuple[float, Scalars, float] | None:
        """Armijo backtracking on the cached predictor; one pass over A for ``A p``.

        Trial steps ``2**-start, 2**-(start+1), ...`` are evaluated four at a time (one round
        trip of two small reductions each, no read of A). ``ap``: ``A p`` already computed
        (by a fused pass), so no pass at all. Returns ``(t, scalars, loss)`` of the largest
        accepted step, or None when none satisfies the sufficient-decrease condition.
        """
        if ap is None:
            ap = self.engine.matvec(p)
        per_round = 4
        for j0 in range(start, self.config.max_halvings + 1, per_round):
            ts = tuple(0.5**j for j in range(j0, min(j0 + per_round, self.config.max_halvings + 1)))
            scal = self.engine.trial_scalars(self.model, ap, ts)
            found = self._armijo(it, p, gp, ts, self.engine.trial_losses(self.model, scal, ap, ts))
            if found is not None:
                j, lt = found
                self.engine.advance(ap, ts[j])
                return ts[j], scal[j], lt
        return None

    def fused_line_search(self, it: _Iterate, p: np.ndarray, gp: float,
                          iteration: int) -> tuple[tuple[float, Scalars, float] | None, _Iterate | None]:
        """Line search and the next iteration's curvature in one pass (fixed-scalar models).

        One pass computes ``A p``, the losses at ``t = 1, 1/2, 1/4, 1/8`` and, speculatively,
        loss, gradient and sketch at the full step ``x + p`` (sampled with the previous
        iteration's sketch context: for leverage scores, the score transform of the point
        before; the next one comes from this iteration's sketched Gram,
        :meth:`~dsketch.sketch.Sketch.context_from_gram`, without a pass). When ``t = 1`` is
        accepted (near the optimum always) the next iterate comes back complete and the
        iteration cost one pass; otherwise the shorter step is taken on the cached predictor
        and the next iteration runs its own curvature pass. Returns ``(accepted, next)``
        with ``next`` None when the speculative curvature is not usable.
        """
        ctx = self._context(iteration + 1, self._info)
        ts = tuple(0.5**j for j in range(min(4, self.config.max_halvings + 1)))
        ap, total = self.engine.fused_step(self.model, self.sketch, it.scalars, p, ts, ctx)
        found = self._armijo(it, p, gp, ts, total["trial_losses"])
        if found is None:
            if len(ts) > self.config.max_halvings:
                return None, None
            return self.line_search(it, p, gp, ap=ap, start=len(ts)), None
        j, lt = found
        self.engine.advance(ap, ts[j])
        if j > 0 or float(total["curvature_bad"]) > 0:
            return (ts[j], it.scalars, lt), None
        nxt = _Iterate(x=it.x + ts[0] * p, scalars=it.scalars, drawn=ctx)
        sk = self._assemble(nxt, total, ctx)
        nxt.loss = lt
        # refresh the sketch's context at the new point for the next fused pass
        if self.sketch.refreshes_from_gram:
            born = self._info.get("born")
            if born is None or iteration + 1 - int(born) >= self.config.score_reuse:
                new = self.sketch.context_from_gram(sk.gram, ctx, ridge=nxt.penalty_hess).info
                self._info = {**new, "born": iteration + 1}
            return (ts[0], it.scalars, lt), nxt
        for stage in range(self.sketch.n_pre_stages):
            if self.sketch.pre_stage_reads_A[stage]:
                if stage > 0:
                    break  # only the first stage comes with the fused pass; keep the older context
                pre = {k.split(":", 1)[1]: v for k, v in total.items() if k.startswith("pre:")}
                ctx = self.sketch.pre_finish(0, pre, ctx)
            else:
                ctx = self.engine.pre_stage(self.model, self.sketch, stage, it.scalars, ctx)
        else:
            self._info = ctx.info
        return (ts[0], it.scalars, lt), nxt

    # ------------------------------------------------------------------ driver
    def _record(self, it: _Iterate, iteration: int, dec: float, step: float, t0: float) -> None:
        row = {
            "iteration": iteration,
            "loss": it.loss,
            "grad_norm": float(np.linalg.norm(it.grad)) if it.grad is not None else np.nan,
            "newton_decrement": dec,
            "step_size": step,
            "sketch_rows": it.sketch_rows,
            "passes": self.engine.n_passes,
            "seconds": time.perf_counter() - t0 + self._t_offset,
        }
        for k in HISTORY_COLUMNS:
            self.history[k].append(float(row[k]))
        if not self._header_logged:  # after the cluster is up, so its lines come first
            logger.info("%s", TABLE_HEADER)
            self._header_logged = True
        logger.info("%s", format_row(row))

    def _save(self, it: _Iterate, iteration: int, g0: float, prev_gnorm: float | None,
              tau: float | None, t0: float) -> None:
        if self.checkpoint is None:
            return
        self.engine.check_store()  # a checkpoint never names a store that was replaced
        save_checkpoint(self.checkpoint, Checkpoint(
            x=it.x, iteration=iteration, n_passes=self.engine.n_passes,
            seconds=time.perf_counter() - t0 + self._t_offset, g0=g0, prev_gnorm=prev_gnorm,
            tau=tau, history={k: np.asarray(v) for k, v in self.history.items()},
            settings=self.settings, sketch_size=self.sketch_size,
            last_dec=self._last_dec,
            drawn_info=None if it.drawn is None else it.drawn.info,
            drawn_size=None if it.drawn is None else it.drawn.sketch_size,
            next_info=None if it.drawn is None else self._info,
        ))

    def run(self, x0: np.ndarray | None = None, *, resume: Checkpoint | None = None) -> FitResult:
        """Run from ``x0`` (None: the model's initialiser) until convergence or a stop.

        With ``resume``, continue the fit that wrote that checkpoint instead.
        """
        cfg = self.config
        t0 = time.perf_counter()
        g0: float | None = None
        prev_gnorm: float | None = None
        tau: float | None = None
        iteration = 0
        if resume is not None:
            x0 = resume.x
            g0, prev_gnorm, tau, iteration = resume.g0, resume.prev_gnorm, resume.tau, resume.iteration
            self.history = {k: [float(v) for v in resume.history[k]] for k in HISTORY_COLUMNS}
            self.engine.n_passes = resume.n_passes
            if resume.sketch_size is not None:
                self.sketch_size = int(resume.sketch_size)
            if resume.last_dec is not None:
                self._last_dec = float(resume.last_dec)
            if resume.drawn_info is not None and cfg.fused:
                drawn = replace(self._context(iteration, resume.drawn_info),
                                sketch_size=int(resume.drawn_size or self.sketch_size))
                self._resume_info = (drawn, resume.next_info)
            self._t_offset = resume.seconds
        elif x0 is None:
            x0 = self.engine.initial_coef(self.model)
        x = np.array(x0, dtype=np.float64, copy=True)
        self.engine.init(x, self.model)
        self.engine.check_targets(self.model)
        it = _Iterate(x=x, scalars=self.engine.trial_scalars(self.model)[0])
        status: Status | None = None
        step = np.nan
        last_dec = self._last_dec
        smooth = bool(getattr(self.model, "smooth", True))
        ftol = cfg.ftol if cfg.ftol is not None else (0.0 if smooth else 1e-12)
        last_drop = np.inf
        loss_flat = False
        fused = cfg.fused and bool(getattr(self.model, "fixed_scalars", False))
        first: tuple[float, float] | None = None  # loss and curvature trace at the start
        while True:
            if it.grad is None:
                self.update_gradient_hessian(it, iteration)
            assert it.grad is not None and it.hess is not None
            gnorm = float(np.linalg.norm(it.grad))
            if not (np.isfinite(it.loss) and np.isfinite(gnorm)):
                self._record(it, iteration, np.nan, np.nan, t0)
                status = Status.NUMERICAL_ERROR
                break
            g0 = gnorm if g0 is None else g0
            if iteration > 0 and self.callback is not None:
                state = NewtonState(
                    iteration=iteration,
                    coef=it.x.copy(),
                    loss=it.loss,
                    grad_norm=gnorm,
                    newton_decrement=last_dec,
                    step_size=step,
                    n_passes=self.engine.n_passes,
                    sketch_rows=it.sketch_rows,
                    seconds=time.perf_counter() - t0,
                )
                try:
                    self.callback(state)
                except StopIteration:
                    self._record(it, iteration, np.nan, np.nan, t0)
                    status = Status.CALLBACK_STOP
                    break
            if first is None:
                first = (it.loss, _trace(it.hess))
            # check_convergence: a small gradient relative to the first one is not enough
            # from a far start (its norm can be 1e26 there); the Newton decrement, the
            # quadratic model's predicted decrease, must be small against the loss too
            if gnorm == 0.0:
                self._record(it, iteration, np.nan, np.nan, t0)
                status = Status.CONVERGED_GRADIENT
                break
            small_grad = gnorm <= cfg.tol * g0
            if small_grad and cfg.direction == "gradient":
                self._record(it, iteration, np.nan, np.nan, t0)
                status = Status.CONVERGED_GRADIENT
                break
            if loss_flat:
                self._record(it, iteration, np.nan, np.nan, t0)
                status = Status.CONVERGED_LOSS
                break
            if iteration >= cfg.max_iter and not small_grad:
                self._record(it, iteration, np.nan, np.nan, t0)
                status = Status.MAX_ITER
                break
            # inner_solve
            if cfg.direction == "gradient":
                tau = 1.0 / gnorm if tau is None else tau
                p = -tau * it.grad
                gp = -tau * gnorm**2
                dec = np.nan
            elif cfg.direction == "newton-cg":
                p = self.newton_cg(it, gnorm / g0)
                gp = float(it.grad @ p)
                dec = float(np.sqrt(max(-gp, 0.0)))
            else:
                p, _method = solve_newton_system(it.hess, it.grad, stacklevel=4)
                gp = float(it.grad @ p)
                dec = float(np.sqrt(max(-gp, 0.0)))
            if small_grad:
                if 0.5 * dec * dec <= cfg.tol * max(1.0, abs(it.loss)):
                    self._record(it, iteration, dec, np.nan, t0)
                    status = Status.CONVERGED_GRADIENT
                    break
                if iteration >= cfg.max_iter:
                    self._record(it, iteration, dec, np.nan, t0)
                    status = Status.MAX_ITER
                    break
            # The loss cannot resolve a decrease below its rounding level; stop there once
            # the gradient has also stopped shrinking (one more step is cheap and usually
            # still divides the gradient, hence the error in x, by a large factor).
            at_rounding = 0.5 * abs(gp) <= 4.0 * EPS * abs(it.loss)
            if at_rounding and prev_gnorm is not None and gnorm > 0.5 * prev_gnorm:
                self._record(it, iteration, dec, np.nan, t0)
                status = Status.CONVERGED_DECREMENT
                break
            prev_gnorm = gnorm
            nxt = None
            if fused:
                accepted, nxt = self.fused_line_search(it, p, gp, iteration)
            else:
                accepted = self.line_search(it, p, gp)
            if accepted is None:
                self._record(it, iteration, dec, 0.0, t0)
                if at_rounding:
                    status = Status.CONVERGED_DECREMENT
                elif not smooth and last_drop <= np.sqrt(ftol) * abs(it.loss):
                    status = Status.CONVERGED_LOSS
                else:
                    status = Status.LINE_SEARCH_FAILED
                break
            step, scalars, new_loss = accepted
            last_drop = it.loss - new_loss
            if cfg.adaptive_sketch and cfg.direction == "newton":
                contraction = dec / last_dec if np.isfinite(last_dec) and last_dec > 0 else np.nan
                self._adapt_sketch_size(step, last_drop, -0.5 * gp, it.loss, contraction)
            if tau is not None:
                tau *= 2.0 * step
            self._record(it, iteration, dec, step, t0)
            last_dec = dec
            self._last_dec = float(dec)
            iteration += 1
            it = nxt if nxt is not None else _Iterate(x=it.x + step * p, scalars=scalars, loss=new_loss)
            assert g0 is not None
            self._save(it, iteration, g0, prev_gnorm, tau, t0)
            loss_flat = ftol > 0 and last_drop <= ftol * abs(new_loss)
        # the result belongs to the store at the engine's path only if it is still the one
        # opened (streamed passes check every read; persisted blocks would not notice)
        self.engine.check_store()
        if status in SUCCESS and first is not None and _vanished(self.model, first, it):
            status = Status.DIVERGED
        message = STATUS_MESSAGES[status]
        if status not in SUCCESS and status is not Status.CALLBACK_STOP:
            warnings.warn(message, ConvergenceWarning, stacklevel=3)
        return FitResult(
            x=it.x,
            fun=it.loss,
            success=status in SUCCESS,
            status=status,
            message=message,
            nit=iteration,
            n_passes=self.engine.n_passes,
            wall_time=time.perf_counter() - t0 + self._t_offset,
            grad_norm=float(self.history["grad_norm"][-1]),
            history={k: np.asarray(v) for k, v in self.history.items()},
        )
