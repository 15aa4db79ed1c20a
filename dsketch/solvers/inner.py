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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

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
        from dsketch.solvers.proximal import ProximalCoordinateDescent  # it builds on Direction, defined here

        return ProximalCoordinateDescent()
    return CholeskySolve()
