"""The settings and the per-iteration state of :class:`~dsketch.solvers.newton.NewtonSolver`.

:class:`NewtonConfig` holds the outer iteration's validated settings; :class:`IterationState`
is what the stages of one iteration pass on to the next. Both are re-exported by
:mod:`dsketch.solvers.newton`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dsketch.errors import InvalidOptionError
from dsketch.models.base import Scalars
from dsketch.sketch import SketchContext


@dataclass(frozen=True)
class NewtonConfig:
    """Settings of the outer Newton iteration (validated once); the user-facing ones come
    from :class:`dsketch.Solver`, the inner solve is
    :class:`~dsketch.solvers.newton.NewtonSolver`'s ``inner``.

    Parameters
    ----------
    tol : float, default 1e-8
        Stop when ``||grad||_2 <= tol * ||grad_0||_2`` (and, for a second-order inner
        solver, half the squared Newton decrement is below ``tol * max(1, |loss|)``).
    max_iter : int, default 50
    armijo : float, default 1e-4
        Sufficient-decrease constant ``c`` in ``L(x + t p) <= L(x) + c t g.p``.
    max_halvings : int, default 30
        Trial steps are ``1, 1/2, ..., 2**-max_halvings``, evaluated four at a time.
    seed : int, default 0
        Key of the counter-based sketch randomness.
    ftol : float or None, default None
        Convergence in loss value: stop with ``Status.CONVERGED_LOSS`` when an accepted step
        decreases the loss by at most ``ftol * |loss|``, and, for a model that is not smooth
        (``model.smooth = False``: the ReLU models, whose Hessian jumps across
        ``(Ax)_i = 0``), also when the line search finds no decrease right after such a
        step (``<= sqrt(ftol) * |loss|``). None: ``1e-12`` for non-smooth models, off (0)
        for smooth ones, which converge in the gradient.
    score_reuse : int, default 3
        With fused passes, a sketch that rebuilds its context from the sketched Gram
        (leverage scores: ``Sketch.refreshes_from_gram``) rebuilds it every ``score_reuse``
        iterations and keeps it in between. 1: rebuild every iteration.
    adaptive_sketch : bool, default False
        With an inner solver that ``adapts_sketch`` and a sampled or embedded sketch: double
        the sketch size when a step falls short of the decrease its quadratic model predicts
        (a step below 1 was needed, or the actual decrease is under half the predicted one)
        or when the Newton decrement shrank by less than half over the last step, and shrink
        it by a quarter when a full step delivered 0.9-1.1 times the prediction and the
        decrement shrank twentyfold; between ``n_features`` and ``n_samples``.
    fused : bool, default True
        For a model whose global scalars do not depend on ``A x`` (``Model.fixed_scalars``:
        the GLMs), fold the line search's ``A p`` and the next iteration's loss, gradient and
        curvature into one pass
        (:meth:`~dsketch.solvers.newton.NewtonSolver.fused_line_search`). The sketch is
        then drawn with the previous iteration's context (leverage scores one step old;
        still unbiased). Ignored for other models.
    """

    tol: float = 1e-8
    max_iter: int = 50
    armijo: float = 1e-4
    max_halvings: int = 30
    seed: int = 0
    ftol: float | None = None
    score_reuse: int = 3
    adaptive_sketch: bool = False
    fused: bool = True

    def __post_init__(self) -> None:
        checks = (
            ("ftol", self.ftol is None or (np.isfinite(self.ftol) and 0 <= self.ftol < 1),
             "a number in [0, 1) or None"),
            ("tol", np.isfinite(self.tol) and self.tol >= 0, "a finite number >= 0"),
            ("max_iter", int(self.max_iter) == self.max_iter and self.max_iter >= 0, "an integer >= 0"),
            ("armijo", 0 < self.armijo < 0.5, "a number in (0, 0.5)"),
            ("max_halvings", 0 <= self.max_halvings <= 60, "an integer in [0, 60]"),
            ("seed", int(self.seed) == self.seed and self.seed >= 0, "a non-negative integer"),
            ("score_reuse", int(self.score_reuse) == self.score_reuse and self.score_reuse >= 1, "an integer >= 1"),
        )
        for name, ok, what in checks:
            if not ok:
                raise InvalidOptionError(f"{name} must be {what}; got {getattr(self, name)!r}")


@dataclass(frozen=True)
class IterationState:
    """Everything the stages of one Newton iteration pass on; replaced, never mutated.

    The cached predictor ``A x`` lives on the workers (the engine moves it with each
    accepted step); everything else is here.
    """

    x: np.ndarray  # (d,) float64, the iterate
    scalars: Scalars  # the model's global scalars at x
    iteration: int = 0  # iterations completed
    loss: float = float("nan")  # objective at x
    grad: np.ndarray | None = None  # (d,) gradient at x; None until computed
    hess: np.ndarray | None = None  # (d, d) reduced curvature H~; None without curvature
    hess_cols: np.ndarray | None = None  # the columns S of a restricted hess (= H~[S][:, S]); None: all
    grad_norm: float = float("nan")
    sketch_rows: int = 0  # rows of the curvature estimate
    lowrank: tuple[np.ndarray, np.ndarray] | None = None  # (A^T U, C) for exact products
    penalty_hess: np.ndarray | None = None  # (d,) diagonal of the penalty's Hessian
    drawn: SketchContext | None = None  # the context of a fused pass's sketch draw
    sketch_size: int = 0  # the size of the next sketch (adaptive sizes change it)
    sketch_info: dict[str, Any] = field(default_factory=dict)  # context info of the last draw
    redraw: tuple[SketchContext, dict[str, Any] | None] | None = None  # a resumed fused draw
    g0: float | None = None  # the first gradient norm
    prev_gnorm: float | None = None  # the gradient norm of the iterate before
    tau: float | None = None  # step scale of a first-order inner solver
    step: float = float("nan")  # the line-search step that produced x
    last_dec: float = float("nan")  # the Newton decrement of the iteration before
    last_drop: float = float("inf")  # the loss decrease of the last step
    loss_flat: bool = False  # that step decreased the loss by at most ftol
    first: tuple[float, float] | None = None  # loss and curvature trace at the start
