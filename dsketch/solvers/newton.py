"""Approximate Newton on the engine: exact low-rank parts, sketched diagonal part.

Order of calls in one iteration (docs/theory.md#the-approximate-newton-framework; docs/how-a-fit-runs.md), each stage a
method that takes an :class:`IterationState` and returns a new one (or a verdict):

1. ``update_gradient_hessian``: the sketch's preliminary stages (if any) and the fused
   curvature pass over A: loss, gradient ``A^T r``, ``A^T U`` and the sketch of
   ``A^T diag(D) A``. The driver assembles ``H~ = sketch + (A^T U) C (A^T U)^T + penalty``.
   An inner solver that needs no curvature (gradient descent) gets loss and gradient only.
2. ``check_convergence``: relative gradient norm, iteration limit, flat loss.
3. ``inner_solve``: the direction, from the pluggable inner solver
   (:mod:`dsketch.solvers.inner`: Cholesky of ``H~``, preconditioned conjugate gradients,
   a gradient step); then ``check_convergence`` again with its Newton decrement.
4. ``line_search``: one pass computes ``A p``; all Armijo trial steps are then evaluated
   together on the cached predictor (``eta + t A p``) without reading A again. For the
   GLMs the same pass also computes the next iterate's loss, gradient and sketch.
5. ``finalize``: the divergence test and the :class:`~dsketch.solvers.result.FitResult`.

So an iteration costs 2 passes over A (1 when fused; plus a sketch's preliminary passes
that read A: one for leverage scores), and the exact Newton method is the same solver with
the exact Gram ``A^T diag(D) A``.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from dsketch.engine.core import Engine
from dsketch.errors import ConvergenceWarning, InvalidOptionError, NonFiniteCurvatureError
from dsketch.models.base import Model, Scalars
from dsketch.sketch import SketchContext
from dsketch.sketch.columns import ColumnSubset
from dsketch.sketch.per_output import PerOutput
from dsketch import interrupts
from dsketch.solvers.checkpoint import Checkpoint, save_checkpoint
from dsketch.solvers.inner import CholeskySolve, Direction, InnerSolver, wants_curvature
from dsketch.solvers.proximal import min_norm_subgradient
from dsketch.solvers.newton_state import IterationState, NewtonConfig
from dsketch.solvers.record import RunRecord, checkpoint_of, resumed_fields
from dsketch.solvers.result import STATUS_MESSAGES, SUCCESS, FitResult, NewtonState, Status, outside_stacklevel
from dsketch.solvers.stopping import _trace, _vanished

logger = logging.getLogger("dsketch")

Callback = Callable[[NewtonState], None]
EPS = float(np.finfo(np.float64).eps)


def _add_diagonal(H: np.ndarray, ph: np.ndarray) -> None:
    """Add the penalty's Hessian diagonal ``ph`` to ``H`` in place: a ``d x d`` matrix, or
    the ``(K, d, d)`` diagonal blocks of a K-output model (``ph`` flattened ``d x K``)."""
    if H.ndim == 2:
        H[np.diag_indices_from(H)] += ph
        return
    k, d = H.shape[0], H.shape[1]
    idx = np.arange(d)
    H[:, idx, idx] += ph.reshape(d, k).T


class NewtonSolver:
    """Approximate (sketched) Newton method with Armijo backtracking.

    Parameters
    ----------
    engine : Engine
    model : Model
    sketch : dsketch.sketch.Sketch or None
        Curvature estimate of ``A^T diag(D) A`` (``make_sketch("exact")`` for exact Newton);
        None with an inner solver that needs no curvature.
    sketch_size : int
        Rows sampled (expected) or embedding dimension; ignored by the exact sketch.
    config : NewtonConfig
    inner : InnerSolver, default CholeskySolve()
        The direction of each iteration (:mod:`dsketch.solvers.inner`).
    callback : callable, optional
        ``callback(state: NewtonState) -> None`` after every iteration; raising
        ``StopIteration`` ends the run with ``Status.CALLBACK_STOP``.
    checkpoint : str, optional
        A checkpoint rewritten after every iteration (:mod:`dsketch.solvers.checkpoint`).
    settings : dict, optional
        The fit's settings, stored with the checkpoint (a resume must match them).
    """

    def __init__(self, engine: Engine, model: Model, sketch: Any, *, sketch_size: int, config: NewtonConfig,
                 inner: InnerSolver | None = None, callback: Callback | None = None,
                 checkpoint: str | None = None, settings: dict[str, Any] | None = None) -> None:
        self.engine = engine
        self.model = model
        self.inner = CholeskySolve() if inner is None else inner
        if self.inner.needs_curvature and sketch is None:
            raise InvalidOptionError(f"the inner solver {type(self.inner).__name__} needs a curvature estimate; "
                                     "pass a sketch")
        self.n_outputs = int(getattr(model, "n_outputs", 1))
        self.l1 = model.l1_weights(engine.problem.n_features * self.n_outputs)
        if self.l1.any() and not getattr(self.inner, "handles_l1", False):
            raise InvalidOptionError(f"the model has an L1 penalty, which the inner solver {type(self.inner).__name__} "
                                     "cannot handle; use Solver('prox-newton') (or 'auto')")
        self.sketch = sketch if self.inner.needs_curvature else None
        if self.sketch is not None and self.n_outputs > 1:  # K diagonal blocks of the curvature
            self.sketch = PerOutput(self.sketch, self.n_outputs)
        # a K-output model that can form the whole Hessian on a few features (one at least):
        # the copy of it whose passes give the class pairs, for a restricted curvature
        full_for = getattr(model, "full_for", None) if self.n_outputs > 1 else None
        self._full_model = None if full_for is None else full_for(self.n_outputs)
        self.sketch_size = int(sketch_size)
        self.config = config
        self.callback = callback
        self.checkpoint = checkpoint
        self.settings = dict(settings or {})
        self.fused = config.fused and bool(getattr(model, "fixed_scalars", False))
        smooth = bool(getattr(model, "smooth", True))
        self.ftol = config.ftol if config.ftol is not None else (0.0 if smooth else 1e-12)

    # ------------------------------------------------------------------ stages
    def _context(self, iteration: int, sketch_size: int, info: dict[str, Any] | None = None) -> SketchContext:
        return SketchContext(seed=self.config.seed, iteration=iteration, n_samples=self.engine.problem.n_samples,
                             n_features=self.engine.problem.n_features, sketch_size=sketch_size,
                             info=dict(info or {}), n_kept=self.engine.problem.n_kept_rows)

    def update_gradient_hessian(self, state: IterationState) -> IterationState:
        """Loss, gradient and (if the inner solver needs it) curvature at ``state.x``: one
        pass (plus the sketch's preliminary stages); a state that has them is returned as is.

        Where the model overflows at ``state.x`` (an infinite loss, non-finite curvature
        weights) the state gets an infinite loss and a NaN gradient, and :meth:`run` stops
        with ``Status.NUMERICAL_ERROR``."""
        if state.grad is None:
            state = self._pass(state, self._curvature_sketch(state.x) if self._curvature_wanted(state) else None)
        if np.isfinite(state.loss) and (self._misses(state) if state.hess is not None else self._curvature_wanted(state)):
            # the inner solver asks for the curvature now, or a restricted one lacks a column
            # whose gradient violates the KKT conditions: compute it again with that column
            state = self._pass(replace(state, grad=None), self._curvature_sketch(state.x, state.grad))
        return state

    def _curvature_wanted(self, state: IterationState) -> bool:
        return self.sketch is not None and wants_curvature(self.inner, state)

    def _columns(self, x: np.ndarray, grad: np.ndarray | None) -> np.ndarray | None:
        """The columns the inner solver needs the curvature of at ``x`` (``grad``: the
        gradient there, when known); None: all."""
        decide = getattr(self.inner, "curvature_columns", None)
        if decide is None or self.sketch is None or self.sketch.n_pre_stages:
            return None
        if self.n_outputs > 1 and self._full_model is None:
            return None  # the model's own curvature (the K blocks, or the whole Hessian)
        needed = decide(x, grad, self.l1)
        return needed if needed is None or self.n_outputs == 1 else self._whole_features(needed, x.size)

    def _whole_features(self, needed: np.ndarray, n_coef: int) -> np.ndarray | None:
        """All ``K`` coefficients ``j K + k`` of each feature ``j`` with one in ``needed`` (a
        K-output model's flattened indices, sorted), or None (the model's own curvature) when
        that is every feature or more than the model forms the whole Hessian on."""
        k = self.n_outputs
        features = np.unique(needed // k)
        if features.size * k == n_coef or self.model.full_for(features.size * k) is None:
            return None
        return (features[:, None] * k + np.arange(k)).ravel()

    def _curvature_sketch(self, x: np.ndarray, grad: np.ndarray | None = None) -> Any:
        """The sketch of the curvature pass at ``x``: restricted to the inner solver's
        columns (:class:`~dsketch.sketch.columns.ColumnSubset`) when it names some.

        For a K-output model the columns are the features any of whose ``K`` coefficients the
        inner solver needs, and the pass (with :meth:`_model_for` the sketch) forms the whole
        Hessian on all ``K`` classes of each: the coordinate descent then minimises the
        quadratic model with the classes coupled, not one class's block at a time."""
        cols = self._columns(x, grad)
        if cols is None:
            return self.sketch
        return ColumnSubset(self.sketch, cols if self.n_outputs == 1 else cols[:: self.n_outputs] // self.n_outputs)

    def _model_for(self, sketch: Any) -> Model:
        """The model whose passes feed ``sketch``: for a K-output model's restricted curvature
        the copy that gives the class pairs of the whole Hessian, else the model itself."""
        if self._full_model is not None and isinstance(sketch, ColumnSubset):
            return self._full_model
        return self.model

    def _restricted_cols(self, sketch: Any) -> np.ndarray | None:
        """The coefficients a restricted curvature from ``sketch`` covers (sorted; for a
        K-output model ``j K + k`` for each of its features ``j``), or None: all."""
        if not isinstance(sketch, ColumnSubset):
            return None
        k = self.n_outputs
        return sketch.cols if k == 1 else (sketch.cols[:, None] * k + np.arange(k)).ravel()

    def _misses(self, state: IterationState) -> bool:
        """Whether the restricted curvature of ``state`` lacks a column the inner solver now
        needs (one whose gradient violates the KKT conditions)."""
        if state.hess_cols is None:
            return False
        cols = self._columns(state.x, state.grad)
        return cols is None or not np.all(np.isin(cols, state.hess_cols, assume_unique=True))

    def _pass(self, state: IterationState, sketch: Any) -> IterationState:
        """The pass of :meth:`update_gradient_hessian` with ``sketch`` (None: loss and
        gradient only)."""
        redraw, drawn = state.redraw, None
        try:
            if redraw is not None and sketch is not None:  # redraw a resumed fused pass's sketch as it was drawn
                drawn, nxt_info = redraw
                total, ctx = self.engine.curvature(self._model_for(sketch), sketch, state.scalars, drawn,
                                                   pre_stages=False)
                info = dict(nxt_info if nxt_info is not None else drawn.info)
            else:
                ctx = self._context(state.iteration, state.sketch_size)
                total, ctx = self.engine.curvature(self._model_for(sketch), sketch, state.scalars, ctx)
                info = ctx.info if sketch is not None else state.sketch_info
        except NonFiniteCurvatureError:  # raised by a sketch's preliminary stage
            total, info = {"loss": np.inf}, state.sketch_info
        state = replace(state, redraw=None if sketch is not None else redraw, drawn=drawn, sketch_info=info)
        if not np.isfinite(float(total["loss"])):
            d, k = state.x.size, self.n_outputs
            zeros = np.zeros((d, d)) if k == 1 else np.zeros((k, d // k, d // k))
            return replace(state, loss=float("inf"), grad=np.full(d, np.nan), grad_norm=float("nan"),
                           hess=zeros if sketch is not None else None, hess_cols=None, sketch_rows=0)
        state = self._assemble(state, total, ctx, sketch)[0]
        if state.first is None and np.isfinite(state.grad_norm):  # the divergence test's reference
            state = replace(state, first=(state.loss, _trace(state.hess)))
        return state

    def _assemble(self, state: IterationState, total: dict[str, Any], ctx: SketchContext,
                  sketch: Any) -> tuple[IterationState, Any]:
        """``H~ = sketch + (A^T U) C (A^T U)^T + penalty``, loss and gradient from reduced partials."""
        pv, pg, ph = self.model.penalty(state.x)
        grad = np.asarray(total["grad"], dtype=np.float64) + pg
        # with an L1 term the stationarity measure is the least-norm subgradient (KKT)
        gnorm = float(np.linalg.norm(min_norm_subgradient(grad, state.x, self.l1) if self.l1.any() else grad))
        loss = float(total["loss"]) + pv + self.model.nonsmooth(state.x)
        g0 = state.g0 if state.g0 is not None or not (np.isfinite(loss) and np.isfinite(gnorm)) else gnorm
        state = replace(state, loss=loss, grad=grad, grad_norm=gnorm, g0=g0, penalty_hess=ph)
        if sketch is None:
            return state, None
        sk = sketch.finish({k.split(":", 1)[1]: v for k, v in total.items() if k.startswith("sketch:")}, ctx)
        H = np.array(sk.gram, dtype=np.float64, copy=True)
        cols = self._restricted_cols(sketch)
        lowrank = None
        if "AU" in total:
            AU = total["AU"]
            C = self.model.core(state.scalars)
            AU_s = AU if cols is None else AU[cols]
            H += AU_s @ C @ AU_s.T
            lowrank = (AU, C)
        _add_diagonal(H, ph if cols is None else ph[cols])
        return replace(state, hess=H, hess_cols=cols, lowrank=lowrank, sketch_rows=int(sk.n_rows)), sk

    def hessvec(self, state: IterationState, v: np.ndarray) -> np.ndarray:
        """The exact ``H v`` at the iterate (one pass over A for the diagonal part)."""
        hv = self.engine.hessvec(self.model, state.scalars, v)
        if state.lowrank is not None:
            AU, C = state.lowrank
            hv = hv + AU @ (C @ (AU.T @ v))
        if state.penalty_hess is not None:
            hv = hv + state.penalty_hess * v
        return hv

    def inner_solve(self, state: IterationState) -> Direction:
        """The search direction of the inner solver at ``state``."""
        return self.inner.solve(state, self)

    def check_convergence(self, state: IterationState, direction: Direction | None = None) -> Status | None:
        """Whether to stop at ``state``: before the inner solve (``direction`` None) on the
        gradient, the iteration count and a flat loss; after it on the Newton decrement.

        A small gradient relative to the first one is not enough from a far start (its norm
        can be 1e26 there): the Newton decrement, the quadratic model's predicted decrease,
        must be small against the loss too. The change in ``x`` is not used: a slow step is
        no sign of an optimum. The loss cannot resolve a decrease below its rounding level;
        the solver stops there once the gradient has also stopped shrinking (one more step
        is cheap and usually still divides the gradient, hence the error in x, a lot).
        """
        cfg, gnorm = self.config, state.grad_norm
        assert state.g0 is not None
        small_grad = gnorm <= cfg.tol * state.g0
        if direction is None:
            if gnorm == 0.0 or small_grad and not self.inner.second_order:
                return Status.CONVERGED_GRADIENT
            if state.loss_flat:
                return Status.CONVERGED_LOSS
            if state.iteration >= cfg.max_iter and not small_grad:
                return Status.MAX_ITER
            return None
        if small_grad:
            if 0.5 * direction.decrement**2 <= cfg.tol * max(1.0, abs(state.loss)):
                return Status.CONVERGED_GRADIENT
            if state.iteration >= cfg.max_iter:
                return Status.MAX_ITER
        # "stopped shrinking": by less than half a step, or for a linearly converging
        # direction (Direction.linear), whose gradient shrinks steadily, by less than 1%
        stalled = (0.99 if direction.linear else 0.5) * (state.prev_gnorm or 0.0)
        if self._at_rounding(state, direction) and state.prev_gnorm is not None and gnorm > stalled:
            return Status.CONVERGED_DECREMENT
        return None

    @staticmethod
    def _at_rounding(state: IterationState, direction: Direction) -> bool:
        """Whether the predicted decrease is at the rounding level of the loss."""
        return 0.5 * abs(direction.gp) <= 4.0 * EPS * abs(state.loss)

    def _armijo(self, state: IterationState, p: np.ndarray, gp: float, ts: tuple[float, ...],
                data_loss: np.ndarray) -> tuple[int, float] | None:
        """Index and objective of the largest trial step with sufficient decrease, or None."""
        # tolerance for rounding in the loss itself (sums over many rows)
        slack = 16.0 * EPS * max(abs(state.loss), 1e-300)
        for j, t in enumerate(ts):
            xt = state.x + t * p
            lt = float(data_loss[j]) + self.model.penalty(xt)[0] + self.model.nonsmooth(xt)
            if np.isfinite(lt) and lt <= state.loss + self.config.armijo * t * gp + slack:
                return j, lt
        return None

    def _search(self, state: IterationState, p: np.ndarray, gp: float, ap: list[Any] | None = None,
                start: int = 0) -> tuple[float, Scalars, float] | None:
        """Armijo backtracking on the cached predictor; one pass over A for ``A p``.

        Trial steps ``2**-start, 2**-(start+1), ...`` are evaluated four at a time (one round
        trip of two small reductions each, no read of A). ``ap``: ``A p`` already computed
        (by a fused pass), so no pass at all. Returns ``(t, scalars, loss)`` of the largest
        accepted step, or None when none satisfies the sufficient-decrease condition.
        """
        if ap is None:
            ap = self.engine.matvec(p, self.n_outputs)
        per_round = 4
        for j0 in range(start, self.config.max_halvings + 1, per_round):
            ts = tuple(0.5**j for j in range(j0, min(j0 + per_round, self.config.max_halvings + 1)))
            scal = self.engine.trial_scalars(self.model, ap, ts)
            found = self._armijo(state, p, gp, ts, self.engine.trial_losses(self.model, scal, ap, ts))
            if found is not None:
                j, lt = found
                self.engine.advance(ap, ts[j])
                return ts[j], scal[j], lt
        return None

    def line_search(self, state: IterationState, direction: Direction) -> IterationState | None:
        """The next iterate along ``direction`` (Armijo backtracking), or None when no trial
        step decreases the loss enough. With fused passes the next iterate comes with its
        loss, gradient and curvature when the full step is accepted."""
        p, gp = direction.p, direction.gp
        nxt, info = None, state.sketch_info
        if self.fused:
            accepted, nxt, info = self.fused_line_search(state, p, gp)
        else:
            accepted = self._search(state, p, gp)
        if accepted is None:
            return None
        step, scalars, new_loss = accepted
        drop = state.loss - new_loss
        size = state.sketch_size
        if self.config.adaptive_sketch and self.inner.adapts_sketch:
            last = state.last_dec
            contraction = direction.decrement / last if np.isfinite(last) and last > 0 else np.nan
            size = self._adapted_size(size, step, drop, -0.5 * gp, state.loss, contraction)
        base = nxt if nxt is not None else IterationState(x=state.x + step * p, scalars=scalars, loss=new_loss)
        return replace(
            base, iteration=state.iteration + 1, step=step, sketch_size=size, sketch_info=info, g0=state.g0,
            prev_gnorm=state.grad_norm, tau=None if direction.tau is None else direction.tau * 2.0 * step,
            last_dec=float(direction.decrement), last_drop=drop, first=state.first,
            loss_flat=self.ftol > 0 and drop <= self.ftol * abs(new_loss),
        )

    def _adapted_size(self, size: int, step: float, actual: float, predicted: float, loss: float,
                      contraction: float) -> int:
        """Grow the sketch when a step misses its prediction or progress is slow; shrink on slack.

        ``contraction`` is ``dec_k / dec_{k-1}``, how much the last step shrank the Newton
        decrement. A sketched Newton method contracts about as fast as its sketch is
        accurate, so a full step that only halved the decrement says the sketch is too
        rough (grow), and one that divided it by 20 or more says a smaller one would do
        (shrink). Agreement of the actual with the predicted decrease alone is no sign of
        slack: near the optimum every adequate sketch predicts its own step well.
        """
        if getattr(self.sketch, "kind", "") == "exact" or not predicted > 1e3 * EPS * abs(loss):
            return size  # exact curvature, or a decrease the loss cannot measure
        n, d = self.engine.problem.n_samples, self.engine.problem.n_features
        ratio = actual / predicted
        new = size
        if step < 1.0 or ratio < 0.5 or contraction > 0.5:
            new = min(n, 2 * size)
        elif contraction < 0.05 and 0.9 <= ratio <= 1.1:
            new = max(min(d, n), int(0.75 * size))
        if new != size:
            logger.debug("sketch size %d -> %d (step %.3g, actual/predicted %.3f, decrement contraction %.3g)",
                         size, new, step, ratio, contraction)
        return new

    def fused_line_search(self, state: IterationState, p: np.ndarray, gp: float) -> tuple[
            tuple[float, Scalars, float] | None, IterationState | None, dict[str, Any]]:
        """Line search and the next iteration's curvature in one pass (fixed-scalar models).

        One pass computes ``A p``, the losses at ``t = 1, 1/2, 1/4, 1/8`` and, speculatively,
        loss, gradient and sketch at the full step ``x + p`` (sampled with the previous
        iteration's sketch context: for leverage scores, the score transform of the point
        before; the next one comes from this iteration's sketched Gram,
        :meth:`~dsketch.sketch.Sketch.context_from_gram`, without a pass). When ``t = 1`` is
        accepted (near the optimum always) the next iterate comes back complete and the
        iteration cost one pass; otherwise the shorter step is taken on the cached predictor
        and the next iteration runs its own curvature pass. Returns ``(accepted, next,
        info)``: ``next`` None when the speculative curvature is not usable, ``info`` the
        sketch context info the next fused pass draws with.
        """
        ctx = self._context(state.iteration + 1, state.sketch_size, state.sketch_info)
        sketch = self._curvature_sketch(state.x + p) if self._curvature_wanted(state) else None
        # trial steps evaluated in the pass itself: four for a Newton step, whose first
        # steps from afar are often short; one for a quasi-Newton step (nearly always
        # accepted whole, and each trial loss costs a transcendental function a row)
        trials = 4 if sketch is not None or self.inner.second_order else 1
        ts = tuple(0.5**j for j in range(min(trials, self.config.max_halvings + 1)))
        ap, total = self.engine.fused_step(self._model_for(sketch), sketch, state.scalars, p, ts, ctx)
        found = self._armijo(state, p, gp, ts, total["trial_losses"])
        if found is None:
            if len(ts) > self.config.max_halvings:
                return None, None, state.sketch_info
            return self._search(state, p, gp, ap=ap, start=len(ts)), None, state.sketch_info
        j, lt = found
        self.engine.advance(ap, ts[j])
        accepted = (ts[j], state.scalars, lt)
        if j > 0 or float(total["curvature_bad"]) > 0:
            return accepted, None, state.sketch_info
        nxt, sk = self._assemble(IterationState(x=state.x + ts[0] * p, scalars=state.scalars,
                                                drawn=ctx if sketch is not None else None, g0=state.g0),
                                 total, ctx, sketch)
        nxt = replace(nxt, loss=lt)
        return accepted, nxt, self._next_info(state, total, sk, ctx, nxt, sketch)

    def _next_info(self, state: IterationState, total: dict[str, Any], sk: Any, ctx: SketchContext,
                   nxt: IterationState, sketch: Any) -> dict[str, Any]:
        """The sketch context info for the next fused pass, refreshed at the new point."""
        info = state.sketch_info
        if sketch is None:
            return info
        if self.sketch.refreshes_from_gram:
            born = info.get("born")
            if born is None or state.iteration + 1 - int(born) >= self.config.score_reuse:
                new = self.sketch.context_from_gram(sk.gram, ctx, ridge=nxt.penalty_hess).info
                info = {**new, "born": state.iteration + 1}
            return info
        for stage in range(self.sketch.n_pre_stages):
            if self.sketch.pre_stage_reads_A[stage]:
                if stage > 0:
                    return info  # only the first stage comes with the fused pass; keep the older context
                pre = {k.split(":", 1)[1]: v for k, v in total.items() if k.startswith("pre:")}
                ctx = self.sketch.pre_finish(0, pre, ctx)
            else:
                ctx = self.engine.pre_stage(self.model, self.sketch, stage, state.scalars, ctx)
        return ctx.info

    # ------------------------------------------------------------------ driver
    def init_state(self, x0: np.ndarray | None, resume: Checkpoint | None, record: RunRecord) -> IterationState:
        """The state at the start: ``x0`` (None: the model's initialiser), or the state a
        checkpoint saved (its history and clock go into ``record``)."""
        extra: dict[str, Any] = {}
        size = self.sketch_size
        if resume is not None:
            x0 = resume.x
            extra = resumed_fields(resume)
            record.restore(resume)
            self.engine.n_passes = resume.n_passes
            if resume.sketch_size is not None:
                size = int(resume.sketch_size)
            if resume.inner is not None and hasattr(self.inner, "load_state_dict"):
                self.inner.load_state_dict(resume.inner)
            if resume.drawn_info is not None and self.config.fused:
                drawn = self._context(resume.iteration, int(resume.drawn_size or size), resume.drawn_info)
                extra["redraw"] = (drawn, resume.next_info)
        elif x0 is None:
            x0 = self.engine.initial_coef(self.model)
        x = np.array(x0, dtype=np.float64, copy=True)
        self.engine.init(x, self.model, norms=self.sketch is not None and self.sketch.n_pre_stages > 0)
        self.engine.check_targets(self.model)
        return IterationState(x=x, scalars=self.engine.trial_scalars(self.model)[0], sketch_size=size, **extra)

    def run(self, x0: np.ndarray | None = None, *, resume: Checkpoint | None = None) -> FitResult:
        """Run from ``x0`` (None: the model's initialiser) until convergence or a stop.

        With ``resume``, continue the fit that wrote that checkpoint instead.
        """
        record = RunRecord(t0=time.perf_counter())
        state = self.init_state(x0, resume, record)
        while True:
            state = self.update_gradient_hessian(state)
            known = record.seconds()  # the iterate's loss and gradient are known from here
            status = self._observe(state, record)
            direction = None
            if status is None:
                status = self.check_convergence(state)
            if status is None:
                direction = self.inner_solve(state)
                status = self.check_convergence(state, direction)
            dec = np.nan if direction is None else direction.decrement
            if status is not None:
                self._record(state, record, dec, np.nan, known)
                break
            assert direction is not None
            nxt = self.line_search(state, direction)
            if nxt is None:
                self._record(state, record, dec, 0.0, known)
                status = self._search_failed(state, direction)
                break
            self._record(state, record, dec, nxt.step, known)
            state = nxt
            self._save(state, record)
            interrupts.check()  # a Ctrl-C that Python dropped ends the fit here, its iteration saved
        return self.finalize(state, status, record)

    def _observe(self, state: IterationState, record: RunRecord) -> Status | None:
        """A non-finite point stops the run; otherwise the callback sees the new iterate."""
        if not (np.isfinite(state.loss) and np.isfinite(state.grad_norm)):
            return Status.NUMERICAL_ERROR
        if state.iteration == 0 or self.callback is None:
            return None
        try:
            self.callback(NewtonState(
                iteration=state.iteration, coef=state.x.copy(), loss=state.loss, grad_norm=state.grad_norm,
                newton_decrement=state.last_dec, step_size=state.step, n_passes=self.engine.n_passes,
                sketch_rows=state.sketch_rows, seconds=time.perf_counter() - record.t0,
            ))
        except StopIteration:
            return Status.CALLBACK_STOP
        return None

    def _search_failed(self, state: IterationState, direction: Direction) -> Status:
        """Why no step was found: the rounding level of the loss (converged), a non-smooth
        model's flat loss after a tiny step (converged in loss), or a failure."""
        if self._at_rounding(state, direction):
            return Status.CONVERGED_DECREMENT
        smooth = bool(getattr(self.model, "smooth", True))
        if not smooth and state.last_drop <= np.sqrt(self.ftol) * abs(state.loss):
            return Status.CONVERGED_LOSS
        return Status.LINE_SEARCH_FAILED

    def _record(self, state: IterationState, record: RunRecord, dec: float, step: float, seconds: float) -> None:
        """Add the iterate's row to the history; ``seconds``: when its loss and gradient were
        known (the row itself is written after the step from it, whose size it records)."""
        record.append({
            "iteration": state.iteration,
            "loss": state.loss,
            "grad_norm": state.grad_norm if state.grad is not None else np.nan,
            "newton_decrement": dec,
            "step_size": step,
            "sketch_rows": state.sketch_rows,
            "passes": self.engine.n_passes,
            "seconds": seconds,
        })

    def _save(self, state: IterationState, record: RunRecord) -> None:
        if self.checkpoint is None:
            return
        self.engine.check_store()  # a checkpoint never names a store that was replaced
        save_checkpoint(self.checkpoint, checkpoint_of(state, record, n_passes=self.engine.n_passes,
                                                       settings=self.settings, inner=self.inner))

    def finalize(self, state: IterationState, status: Status, record: RunRecord) -> FitResult:
        """The result at the last state: the store is checked once more (the result belongs
        to the store at the engine's path only if it is still the one opened; persisted
        blocks would not notice a replacement), a "converged" model whose loss and curvature
        both vanished is reported as diverged, and a failure warns."""
        self.engine.check_store()
        self.engine.settle(state.x, self.model)  # the rows hold A x of the last iterate
        if status in SUCCESS and state.first is not None and _vanished(self.model, state.first, state):
            status = Status.DIVERGED
        message = STATUS_MESSAGES[status]
        if status not in SUCCESS and status is not Status.CALLBACK_STOP:
            warnings.warn(message, ConvergenceWarning, stacklevel=outside_stacklevel())
        return FitResult(
            x=state.x, fun=state.loss, jac=state.grad, success=status in SUCCESS, status=status, message=message,
            nit=state.iteration, n_passes=self.engine.n_passes, wall_time=record.seconds(),
            grad_norm=float(record.history["grad_norm"][-1]),
            history={k: np.asarray(v) for k, v in record.history.items()},
            info=self.inner.describe() if hasattr(self.inner, "describe") else {},
        )
