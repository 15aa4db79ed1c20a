"""Inner solvers of the Newton iteration: the search direction from the iterate's state.

The outer loop (:class:`~dsketch.solvers.newton.NewtonSolver`) computes the loss, the
gradient and (when the inner solver asks for it) the reduced curvature ``H~`` of an
iterate, then asks its inner solver for a direction ``p``, then line-searches along it.
An inner solver is any object with the attributes and the method of :class:`InnerSolver`;
a new one (coordinate descent, a block preconditioner) is one new class passed as
``NewtonSolver(..., inner=...)``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from dsketch.solvers._coordinate import sweep
from dsketch.solvers.lbfgs import REFRESH_PRODUCTS, LBFGSMemory, QuasiNewtonProbe
from dsketch.solvers.linalg import centre_rows, pcg, preconditioner, shift_split, solve_newton_system
from dsketch.solvers.result import outside_stacklevel

if TYPE_CHECKING:
    from dsketch.solvers.newton import IterationState, NewtonSolver

logger = logging.getLogger("dsketch")


@dataclass(frozen=True)
class Direction:
    """A search direction and what the outer loop needs from it.

    Attributes
    ----------
    p : ndarray of shape (n_features,)
        The direction (a descent direction: ``grad . p < 0``).
    gp : float
        ``grad . p``, the directional derivative (the Armijo rule's slope).
    decrement : float
        The Newton decrement ``sqrt(-grad . p)``; NaN for a first-order direction.
    tau : float or None
        The step scale of a first-order direction (kept for the next iteration and in
        checkpoints), None otherwise.
    linear : bool
        The direction minimises a model that leaves out part of the curvature (the
        block-diagonal one of a multinomial L1 fit), so the iteration converges linearly: a
        predicted decrease at the rounding level of the loss is then no sign that the
        gradient has stopped shrinking (see :meth:`NewtonSolver.check_convergence`).
    """

    p: np.ndarray
    gp: float
    decrement: float = float("nan")
    tau: float | None = None
    linear: bool = False


@runtime_checkable
class InnerSolver(Protocol):
    """What an inner solver provides.

    Attributes
    ----------
    needs_curvature : bool
        Whether the outer loop must compute the reduced curvature ``state.hess`` (the
        sketch, ``A^T U`` and the penalty's Hessian). False: loss and gradient only.
    second_order : bool
        Whether :attr:`Direction.decrement` is a Newton decrement the stopping rule may use
        (a first-order solver stops on the gradient alone).
    adapts_sketch : bool
        Whether an adaptive sketch size follows this solver's steps (the step of a solve
        with ``H~`` tells how good the sketch is).
    """

    needs_curvature: bool
    second_order: bool
    adapts_sketch: bool

    def solve(self, state: IterationState, problem: NewtonSolver) -> Direction:
        """The direction at ``state`` (``problem.hessvec(state, v)`` gives exact products)."""
        ...


def newton_direction(p: np.ndarray, grad: np.ndarray) -> Direction:
    """A :class:`Direction` for a Newton-type ``p``, with its slope and decrement."""
    gp = float(grad @ p)
    return Direction(p=p, gp=gp, decrement=float(np.sqrt(max(-gp, 0.0))))


class CholeskySolve:
    """Solve ``H~ p = -g`` with the reduced (sketched or exact) Hessian by Cholesky.

    When ``H~`` is not numerically positive definite, the fallbacks of
    :func:`~dsketch.solvers.linalg.solve_newton_system` (a diagonal shift, then an
    eigenvalue-modified solve) are taken, with a :class:`~dsketch.errors.NumericalWarning`.
    """

    needs_curvature = True
    second_order = True
    adapts_sketch = True

    def solve(self, state: IterationState, problem: NewtonSolver) -> Direction:
        assert state.hess is not None and state.grad is not None
        p, _method = solve_newton_system(state.hess, state.grad, stacklevel=outside_stacklevel() + 1)
        return newton_direction(p, state.grad)


@dataclass(frozen=True)
class ConjugateGradient:
    """Inexact exact-Newton steps: preconditioned conjugate gradients on ``H p = -g``.

    Each product ``H v`` is exact (one pass over A for ``A^T diag(D) A v``, plus the exact
    low-rank part and the penalty); the preconditioner is the Cholesky factor of the reduced
    (sketched) ``H~``. The solve stops at the relative residual
    ``min(0.1, sqrt(||g|| / ||g_0||))`` (superlinear convergence, no accuracy ceiling from
    the sketch) or after ``max_iter`` products. A direction that is not finite or not a
    descent direction is replaced by the Cholesky solve with ``H~``.

    For a K-output model (multinomial) ``H~`` is the stack ``(K, d, d)`` of the Hessian's
    diagonal blocks (or its whole ``dK x dK`` matrix): the preconditioner is then
    block-diagonal over the classes (:func:`~dsketch.solvers.linalg.preconditioner`) and a
    failed direction is replaced by the preconditioned step ``-M^-1 g``.
    """

    max_iter: int = 20
    needs_curvature = True
    second_order = True
    adapts_sketch = False

    def solve(self, state: IterationState, problem: NewtonSolver) -> Direction:
        assert state.hess is not None and state.grad is not None and state.g0 is not None
        rtol = min(0.1, float(np.sqrt(state.grad_norm / state.g0)))
        if state.hess.ndim == 3 and getattr(problem.model, "shift_invariant", False):
            return self._centred(state, problem, rtol)
        p, _n, reason = pcg(lambda v: problem.hessvec(state, v), state.grad, preconditioner(state.hess),
                            rtol=rtol, maxiter=self.max_iter)
        if reason == "negative-curvature":
            logger.debug("newton-cg: negative curvature; taking the preconditioned step")
        if not np.all(np.isfinite(p)) or float(state.grad @ p) >= 0.0:
            if state.hess.ndim == 3:  # a K-output model's diagonal blocks: the preconditioned step
                p = -preconditioner(state.hess)(state.grad)
            else:
                p, _method = solve_newton_system(state.hess, state.grad, stacklevel=outside_stacklevel() + 1)
        return newton_direction(p, state.grad)

    def _centred(self, state: IterationState, problem: NewtonSolver, rtol: float) -> Direction:
        """The step of a shift-invariant K-output model (softmax): exact along the shift
        directions, conjugate gradients on their complement with the block preconditioner
        projected onto it (:func:`~dsketch.solvers.linalg.shift_split`)."""
        assert state.hess is not None and state.grad is not None
        k = state.hess.shape[0]
        g, shift = shift_split(state.grad, k, state.penalty_hess)
        blocks = preconditioner(state.hess)

        def solve(r: np.ndarray) -> np.ndarray:
            return centre_rows(blocks(centre_rows(r, k)), k)

        p, _n, reason = pcg(lambda v: problem.hessvec(state, v), g, solve, rtol=rtol, maxiter=self.max_iter)
        if reason == "negative-curvature":
            logger.debug("newton-cg: negative curvature; taking the preconditioned step")
        if not np.all(np.isfinite(p)) or float(g @ p) >= 0.0:
            p = -solve(g)
        return newton_direction(p + shift, state.grad)


class GradientStep:
    """Gradient descent: ``p = -tau g``.

    ``tau`` starts at ``1 / ||g_0||`` and is doubled times the accepted step after every
    iteration (the line search halves it where needed), so it tracks the largest step the
    Armijo rule accepts. No curvature is computed.
    """

    needs_curvature = False
    second_order = False
    adapts_sketch = False

    def solve(self, state: IterationState, problem: NewtonSolver) -> Direction:
        assert state.grad is not None
        tau = 1.0 / state.grad_norm if state.tau is None else state.tau
        return Direction(p=-tau * state.grad, gp=-tau * state.grad_norm**2, tau=tau)


class QuasiNewton:
    """L-BFGS: ``p = -H g`` with ``H`` built from the last ``memory`` steps and gradient
    changes (:class:`~dsketch.solvers.lbfgs.LBFGSMemory`). No curvature is computed: with
    fused passes an iteration whose full step is accepted reads A once, at the cost of a
    gradient evaluation. Right for well-conditioned problems; on ill-conditioned ones it
    needs many iterations (see :class:`QuasiNewtonThenNewton`).

    The pairs are kept between calls (an inner solver belongs to one fit); the pair of the
    last step is added when the next iterate's gradient arrives.
    """

    needs_curvature = False
    second_order = False
    adapts_sketch = False

    def __init__(self, memory: int = 10) -> None:
        self.memory = LBFGSMemory(memory)
        self._last: tuple[int, np.ndarray, np.ndarray] | None = None

    def solve(self, state: IterationState, problem: NewtonSolver) -> Direction:
        assert state.grad is not None
        self.remember(state)
        p = self.memory.direction(state.grad)
        return Direction(p=p, gp=float(state.grad @ p))

    def remember(self, state: IterationState) -> None:
        """Add the pair from the previous iterate to ``state`` (once per iteration)."""
        assert state.grad is not None
        if self._last is not None and self._last[0] == state.iteration:
            return
        if self._last is not None and self._last[0] == state.iteration - 1:
            self.memory.update(state.x - self._last[1], state.grad - self._last[2])
        self._last = (state.iteration, state.x.copy(), state.grad.copy())

    def state_dict(self) -> dict[str, object]:
        """What a checkpoint keeps so that a resumed fit takes the same steps."""
        out: dict[str, object] = {"pairs": len(self.memory.pairs)}
        for i, (s, y, _rho) in enumerate(self.memory.pairs):
            out[f"s{i}"], out[f"y{i}"] = s, y
        if self._last is not None:
            out["last_iteration"], out["last_x"], out["last_grad"] = self._last
        return out

    def load_state_dict(self, saved: dict[str, object]) -> None:
        self.memory.clear()
        for i in range(int(saved["pairs"])):  # type: ignore[call-overload]
            self.memory.update(np.asarray(saved[f"s{i}"]), np.asarray(saved[f"y{i}"]))
        if "last_iteration" in saved:
            self._last = (int(saved["last_iteration"]), np.asarray(saved["last_x"]),  # type: ignore[call-overload]
                          np.asarray(saved["last_grad"]))


class QuasiNewtonThenNewton:
    """``Solver("auto")``: L-BFGS while it contracts the gradient fast, Newton steps after.

    The first iterations are quasi-Newton (:class:`QuasiNewton`: one pass each, no
    curvature). :class:`~dsketch.solvers.lbfgs.QuasiNewtonProbe` watches the gradient norms;
    once they contract slower than its ``rate`` (an ill-conditioned problem, where L-BFGS
    would take hundreds of iterations) the fit asks for the curvature at the current iterate
    and takes Newton steps (:class:`CholeskySolve`) to the end, with the usual fused passes
    and adaptive sketch sizes. On a well-conditioned problem no curvature is ever formed.

    Where fresh curvature is dear (:attr:`QuasiNewtonProbe.reuses_curvature`: one-hot data
    with thousands of columns, whose exact Gram costs some 190 passes), the first Newton
    iteration forms it and takes the Cholesky step, and the next ones keep it as the
    preconditioner of conjugate gradients on exact Hessian-vector products (one pass each,
    to the relative residual of :class:`ConjugateGradient`). The curvature is formed afresh
    after a step that needed more than :data:`~dsketch.solvers.lbfgs.REFRESH_PRODUCTS`
    products or did not converge. Models whose curvature has an exact low-rank part keep
    forming it every iteration (their products need it).

    A K-output model (multinomial) takes Newton-CG steps (``newton``: a
    :class:`ConjugateGradient`, preconditioned by its sketched diagonal blocks) after the
    hand-over, with fresh curvature every iteration.
    """

    needs_curvature = True  # may need it: the fit prepares a sketch

    def __init__(self, memory: int = 10, probe: QuasiNewtonProbe | None = None, cg_max_iter: int = 20,
                 newton: CholeskySolve | ConjugateGradient | None = None) -> None:
        self.quasi = QuasiNewton(memory)
        self.newton = CholeskySolve() if newton is None else newton
        self.probe = QuasiNewtonProbe() if probe is None else probe
        self.cg_max_iter = cg_max_iter
        self._seen = -1
        #: The iteration from which Newton steps were taken (None: L-BFGS throughout).
        self.newton_from: int | None = None
        #: The curvature kept as the preconditioner (``(H~, M^-1)``), and whether to refresh it.
        self._kept: tuple[np.ndarray, Any] | None = None
        self._refresh = False

    @property
    def second_order(self) -> bool:  # type: ignore[override]
        return self.probe.switched

    @property
    def adapts_sketch(self) -> bool:  # type: ignore[override]
        return self.probe.switched and not self.probe.reuses_curvature and self.newton.adapts_sketch

    def _observe(self, state: IterationState) -> None:
        if state.grad is not None and state.iteration > self._seen:
            self.probe.observe(state.grad_norm)
            self._seen = state.iteration
            if self.newton_from is None and self.probe.use_newton():
                self.newton_from = state.iteration
                logger.debug("auto solver: L-BFGS contracted at %.3g per iteration; Newton steps from "
                             "iteration %d", self.probe.observed_rate(), state.iteration)

    def describe(self) -> dict[str, object]:
        """What the result's ``info`` records about the choice."""
        return {"newton_from": self.newton_from}

    def wants_curvature(self, state: IterationState) -> bool:
        """Whether the pass at (or towards) ``state`` should compute the curvature."""
        self._observe(state)
        return self.probe.use_newton() and (self._kept is None or self._refresh)

    def solve(self, state: IterationState, problem: NewtonSolver) -> Direction:
        assert state.grad is not None
        self._observe(state)
        if not self.probe.use_newton():
            return self.quasi.solve(state, problem)
        if state.hess is not None:
            return self._fresh_step(state, problem)
        if self._kept is not None:
            return self._reused_step(state, problem)
        return self.quasi.solve(state, problem)

    def _fresh_step(self, state: IterationState, problem: NewtonSolver) -> Direction:
        """The Cholesky step with the curvature just formed (kept when it is dear)."""
        assert state.hess is not None and state.grad is not None
        if not self.probe.reuses_curvature or state.lowrank is not None or state.hess.ndim == 3:
            return self.newton.solve(state, problem)
        solve = preconditioner(state.hess)
        self._kept, self._refresh = (state.hess, solve), False
        p = -solve(state.grad)
        if np.all(np.isfinite(p)) and float(state.grad @ p) < 0.0:
            return newton_direction(p, state.grad)
        self._kept = None  # not positive definite beyond repair: plain Newton steps
        return self.newton.solve(state, problem)

    def _reused_step(self, state: IterationState, problem: NewtonSolver) -> Direction:
        """Conjugate gradients on exact products, preconditioned by the kept curvature."""
        assert self._kept is not None and state.grad is not None and state.g0 is not None
        solve = self._kept[1]
        rtol = min(0.1, float(np.sqrt(state.grad_norm / state.g0)))
        p, n, reason = pcg(lambda v: problem.hessvec(state, v), state.grad, solve, rtol=rtol,
                           maxiter=self.cg_max_iter)
        self._refresh = reason != "converged" or n > REFRESH_PRODUCTS
        if not np.all(np.isfinite(p)) or float(state.grad @ p) >= 0.0:
            p = -solve(state.grad)  # M positive definite: a descent direction
        logger.debug("auto solver: %d products with the kept curvature (%s)", n, reason)
        return newton_direction(p, state.grad)

    def state_dict(self) -> dict[str, object]:
        kept = {} if self._kept is None else {"kept_hess": self._kept[0]}
        return {**self.quasi.state_dict(), "norms": np.asarray(self.probe.norms, dtype=np.float64),
                "switched": int(self.probe.switched), "seen": self._seen, "refresh": int(self._refresh),
                "newton_from": -1 if self.newton_from is None else self.newton_from, **kept}

    def load_state_dict(self, saved: dict[str, object]) -> None:
        self.quasi.load_state_dict(saved)
        self.probe.norms = [float(v) for v in np.asarray(saved["norms"])]
        self.probe.switched = bool(int(saved["switched"]))  # type: ignore[call-overload]
        self._seen = int(saved["seen"])  # type: ignore[call-overload]
        start = int(saved["newton_from"])  # type: ignore[call-overload]
        self.newton_from = None if start < 0 else start
        kept = saved.get("kept_hess")
        self._kept = None if kept is None else (np.asarray(kept), preconditioner(np.asarray(kept)))
        self._refresh = bool(int(saved.get("refresh", 0)))  # type: ignore[call-overload]


def min_norm_subgradient(grad: np.ndarray, x: np.ndarray, l1: np.ndarray) -> np.ndarray:
    """The element of least norm in the subdifferential of ``f + sum_j l1_j |x_j|`` at ``x``
    (``grad``: the gradient of the smooth ``f``): ``g_j + l1_j sign(x_j)`` where ``x_j != 0``,
    ``sign(g_j) max(|g_j| - l1_j, 0)`` where ``x_j = 0``. Zero exactly at a minimiser."""
    shrunk = np.sign(grad) * np.maximum(np.abs(grad) - l1, 0.0)
    return np.where(x != 0.0, grad + l1 * np.sign(x), shrunk)


def penalty_shifts(Z: np.ndarray, l1: np.ndarray, l2: np.ndarray) -> np.ndarray:
    """For each row ``j`` of ``Z`` (``d x K``), the ``c_j`` that minimises the row's elastic-net
    penalty after a common shift, ``l2_j / 2 sum_k (Z_jk + c)^2 + l1_j sum_k |Z_jk + c|``
    (of the minimisers, the one closest to 0: 0 for an unpenalised row).

    The penalty's subgradient in ``c`` is ``h(c) = K l2 c + l2 sum_k Z_jk + l1 (#{Z_jk + c > 0}
    - #{Z_jk + c < 0})``, nondecreasing and linear between the breakpoints ``-Z_jk``: with
    ``m`` the breakpoints (sorted) where its right limit is ``<= 0``, the root lies between
    the ``m``-th and the next, where the sign count is ``2m - K``."""
    d, k = Z.shape
    b = np.sort(-Z, axis=1)
    w, lam, total = l2[:, None], l1[:, None], Z.sum(axis=1, keepdims=True)
    right = k * w * b + w * total + lam * (2 * np.arange(1, k + 1) - k)
    m = np.count_nonzero(right <= 0.0, axis=1)
    edges = np.hstack([np.full((d, 1), -np.inf), b, np.full((d, 1), np.inf)])
    lo, hi = edges[np.arange(d), m], edges[np.arange(d), m + 1]
    slope = l1 * (2 * m - k)
    with np.errstate(divide="ignore", invalid="ignore"):
        flat = np.where(slope == 0.0, 0.0, -np.sign(slope) * np.inf)  # l2 = 0: the penalty is piecewise linear
        c = np.where(l2 > 0.0, -(l2 * total[:, 0] + slope) / (k * l2), flat)
    out: np.ndarray = np.where((l1 == 0.0) & (l2 == 0.0), 0.0, np.clip(c, lo, hi))
    return out


def _decrease(p: np.ndarray, g: np.ndarray, x: np.ndarray, l1: np.ndarray) -> float:
    """The proximal decrease ``g.p + sum_j l1_j (|x_j + p_j| - |x_j|)`` along ``p``."""
    return float(g @ p + l1 @ (np.abs(x + p) - np.abs(x)))


def _shifted(p: np.ndarray, g: np.ndarray, x: np.ndarray, l1: np.ndarray, l2: np.ndarray | None,
             k: int) -> np.ndarray:
    """A block direction ``p`` of a K-output model whose loss ignores a vector added to every
    column (softmax), completed by the common shift of each row of ``x + p`` that minimises
    its penalty (:func:`penalty_shifts`): along those directions the loss is flat, so the
    shift minimises the objective itself, where the block curvature is furthest off. Kept
    when it leaves a descent direction (a negative proximal decrease), else ``p``."""
    z = (x + p).reshape(-1, k)
    l2_rows = np.zeros(z.shape[0]) if l2 is None else l2.reshape(-1, k)[:, 0]
    c = penalty_shifts(z, l1.reshape(-1, k)[:, 0], l2_rows)
    q = (z + c[:, None]).ravel() - x  # x + q is exactly 0 where a shifted entry is
    return q if _decrease(q, g, x, l1) < 0.0 else p


def _positive_diagonal(H: np.ndarray) -> np.ndarray:
    """``H`` with every diagonal entry that is not positive set to the median of the positive
    ones (1 if there are none). A sampled curvature has a zero row and column where no
    sampled row touches a feature; coordinate descent would then never move that
    coordinate, and the fit would stall away from the optimum with a vanishing predicted
    decrease. With the stand-in the coordinate takes a scaled proximal-gradient step, which
    the line search corrects."""
    diag = np.diag(H)
    bad = np.flatnonzero(~(diag > 0.0))
    if bad.size == 0:
        return H
    good = diag[diag > 0.0]
    out = H.copy()
    out[bad, bad] = float(np.median(good)) if good.size else 1.0
    return out


@dataclass
class ProximalCoordinateDescent:
    """Proximal Newton for an objective ``f + sum_j l1_j |x_j|`` (``model.l1_weights``):
    the direction minimises the quadratic model with the L1 term,
    ``g.p + p^T H~ p / 2 + sum_j l1_j |x_j + p_j|``, by cyclic coordinate descent on the
    reduced (exact or sketched) ``H~`` on the driver.

    The sweeps start from ``p = 0``, that is from the current iterate, the minimiser of the
    previous model after a full step (a warm start). After a full sweep, sweeps run over the
    active coordinates (``x_j + p_j != 0`` or unpenalised) until the largest change, in the
    units of the gradient (``H_jj |delta_j|``), is below ``forcing`` times the iterate's
    KKT measure; then a full sweep checks for coordinates to re-admit, and the loop ends
    when a full sweep changes nothing beyond that level (or after ``max_sweeps``). The
    :class:`Direction`'s ``gp`` is the proximal decrease
    ``Delta = g.p + sum_j l1_j (|x_j + p_j| - |x_j|)`` (negative unless ``x`` minimises the
    model), which the Armijo rule on ``F = f + l1 ||.||_1`` uses; its decrement is
    ``sqrt(-Delta)``.

    The sweeps first run over the coordinates that are nonzero at ``x``, unpenalised, or
    zero with ``|g_j| > l1_j`` (the others would not move in a first sweep), and, with a
    ``screen`` mask (a regularisation path's strong rule), only those it keeps; a left-out
    coordinate whose model gradient ``|g_j + (H~ p)_j|`` exceeds ``l1_j`` is re-admitted
    and the sweeps go on, so screening changes the work, never the direction.

    For a K-output model (multinomial) whose curvature is the stack ``(K, d, d)`` of the
    Hessian's diagonal blocks, the model is separable over the classes and each class's
    ``d`` coordinates (``j K + k`` of the flattened ``d x K`` coefficients) are minimised on
    their own block: a proximal quasi-Newton step, whose fixed points are still exactly the
    minimisers of the objective (the gradient is exact), reached at a linear rate. For a
    model that ignores a vector added to every column (``model.shift_invariant``: softmax),
    the direction then takes each row's penalty-minimising common shift (:func:`_shifted`),
    the directions the blocks model worst.

    With ``restrict > 0`` and a ``screen``, the curvature itself is formed on the columns
    ``S`` that may move only (:meth:`curvature_columns`: the screened-in, unpenalised and
    nonzero ones, and every column whose gradient has violated ``|g_j| <= l1_j`` at an
    iterate of the fit), as long as they are at most that fraction of all. The direction
    then minimises the model over ``S`` with ``p_j = 0`` elsewhere; the outer loop computes
    the curvature again, with the new columns, at an iterate where a column outside ``S``
    violates the KKT conditions, so the fit converges to the minimiser over all columns and
    the stopping rule, on the full gradient, never accepts a violation.
    """

    forcing: float = 1e-3
    max_sweeps: int = 500
    #: Coordinates to sweep first (strong-rule screening of a path); None: all.
    screen: np.ndarray | None = None
    #: Screened-out coordinates the KKT check had to re-admit (a count over the fit).
    readmitted: int = 0
    #: Restrict the curvature to the screened columns while they are at most this share of
    #: all (0: never; needs ``screen``).
    restrict: float = 0.0
    _needed: np.ndarray | None = field(default=None, init=False, repr=False)
    handles_l1 = True
    needs_curvature = True
    second_order = True
    adapts_sketch = False

    def solve(self, state: IterationState, problem: NewtonSolver) -> Direction:
        assert state.hess is not None and state.grad is not None
        x, g = state.x, state.grad
        l1 = problem.model.l1_weights(x.size)
        kkt = np.abs(min_norm_subgradient(g, x, l1))
        tol = self.forcing * float(kkt.max()) if kkt.size else 0.0
        if state.hess.ndim == 3:  # the K diagonal blocks of a K-output model: one class at a time
            p = self.minimise_blocks(state.hess, g, x, l1, tol)
            if getattr(problem.model, "shift_invariant", False):
                p = _shifted(p, g, x, l1, state.penalty_hess, state.hess.shape[0])
        elif state.hess_cols is None:
            p = self.minimise(_positive_diagonal(state.hess), g, x, l1, tol, self.screen)
        else:  # the model over the columns of a restricted curvature, p = 0 elsewhere
            cols = state.hess_cols
            p = np.zeros(x.size)
            p[cols] = self.minimise(_positive_diagonal(state.hess), g[cols], x[cols], l1[cols], tol)
        delta = _decrease(p, g, x, l1)
        return Direction(p=p, gp=delta, decrement=float(np.sqrt(max(-delta, 0.0))), linear=state.hess.ndim == 3)

    def minimise_blocks(self, blocks: np.ndarray, g: np.ndarray, x: np.ndarray, l1: np.ndarray,
                        tol: float) -> np.ndarray:
        """:meth:`minimise` on each class's block of a ``(K, d, d)`` curvature, over that
        class's coordinates ``k, K + k, 2K + k, ...`` (the model is separable over classes)."""
        k = blocks.shape[0]
        p = np.zeros(x.size)
        for c in range(k):
            idx = np.arange(c, x.size, k)
            p[idx] = self.minimise(_positive_diagonal(blocks[c]), g[idx], x[idx], l1[idx], tol,
                                   None if self.screen is None else self.screen[idx])
        return p

    def curvature_columns(self, x: np.ndarray, grad: np.ndarray | None, l1: np.ndarray) -> np.ndarray | None:
        """The columns whose curvature the next direction needs at ``x`` (sorted), or None
        for all of them: see the class notes. ``grad`` (the gradient at ``x``, when known)
        adds the columns where ``|g_j| > l1_j``; the set only grows during a fit."""
        if self.screen is None or not self.restrict > 0.0:
            return None
        if self._needed is None:
            self._needed = np.asarray(self.screen, dtype=bool) | (l1 == 0.0)
        self._needed |= x != 0.0
        if grad is not None:
            violators = ~self._needed & (np.abs(grad) > l1)
            self.readmitted += int(violators.sum())
            self._needed |= violators
        if not 0 < np.count_nonzero(self._needed) <= self.restrict * x.size:
            return None  # too many to gain, or none (all zero and no violator: the full curvature)
        return np.flatnonzero(self._needed)

    def minimise(self, H: np.ndarray, g: np.ndarray, x: np.ndarray, l1: np.ndarray, tol: float,
                 screen: np.ndarray | None = None) -> np.ndarray:
        """The coordinate-descent minimiser ``p`` of the penalised quadratic model; with
        ``screen``, first over the screened-in coordinates, then over those the KKT check
        of the model re-admits, until none violates it."""
        usable = np.diag(H) > 0.0
        # zero coordinates whose model gradient is inside [-l1, l1] at p = 0 start out (the
        # KKT check below takes back any that a later change pushes out of it)
        candidates = (x != 0.0) | (l1 == 0.0) | (np.abs(g) > l1)
        allowed = usable & candidates if screen is None else usable & (screen & candidates | (x != 0.0))
        p, Hp = np.zeros(x.size), np.zeros(x.size)
        while True:
            self._descend(H, g, x, l1, tol, p, Hp, np.flatnonzero(allowed))
            out = usable & ~allowed
            # a left-out coordinate (p_j = 0 = x_j) violates the model's KKT where |g_j + (H p)_j| > l1_j
            violators = out & (np.abs(g + Hp) > l1 + tol)
            if not violators.any():
                return p
            self.readmitted += int(violators.sum())
            allowed |= violators

    def _descend(self, H: np.ndarray, g: np.ndarray, x: np.ndarray, l1: np.ndarray, tol: float, p: np.ndarray,
                 Hp: np.ndarray, everything: np.ndarray) -> None:
        """Active-set cyclic sweeps over ``everything`` (``p``, ``Hp`` updated in place; ``Hp``
        current on all coordinates on return). Sweeps over the active set track ``H p`` on
        that set only, and ``H p`` is recomputed whole before the next full sweep."""
        every = np.arange(x.size)
        coords, track, sweeps = everything, every, 0
        while sweeps < self.max_sweeps:
            change = sweep(H, g, x, l1, p, Hp, coords, track)
            sweeps += 1
            if change > tol:
                if coords is everything:  # keep working on the support of the full sweep
                    coords = everything[(x[everything] + p[everything] != 0.0) | (l1[everything] == 0.0)]
                    # a gathered update pays off on a small active set; a large one updates all
                    track = coords if 2 * coords.size < x.size else every
                continue
            if coords is everything:
                return
            coords = everything
            if track is not every:
                Hp[:] = H @ p
                track = every
        if track is not every:
            Hp[:] = H @ p
        logger.debug("proximal coordinate descent: %d sweeps without reaching %.3g", sweeps, tol)


def wants_curvature(inner: InnerSolver, state: IterationState) -> bool:
    """Whether ``inner`` wants the curvature at ``state``: its ``wants_curvature(state)``
    when it decides as the fit goes (:class:`QuasiNewtonThenNewton`), else
    ``needs_curvature``."""
    decide = getattr(inner, "wants_curvature", None)
    return bool(decide(state)) if callable(decide) else bool(inner.needs_curvature)


def inner_solver(method: str, cg_max_iter: int = 20, probe: QuasiNewtonProbe | None = None,
                 multi_output: bool = False) -> InnerSolver:
    """The inner solver of ``dsketch.Solver(method)`` (``probe``: the hand-over rule of
    ``"auto"``; ``multi_output``: for a K-output model, whose Newton steps are Newton-CG)."""
    if method == "newton-cg":
        return ConjugateGradient(max_iter=cg_max_iter)
    if method == "gd":
        return GradientStep()
    if method == "lbfgs":
        return QuasiNewton()
    if method == "auto":
        newton = ConjugateGradient(max_iter=cg_max_iter) if multi_output else None
        return QuasiNewtonThenNewton(probe=probe, cg_max_iter=cg_max_iter, newton=newton)
    if method == "prox-newton":
        return ProximalCoordinateDescent()
    return CholeskySolve()
