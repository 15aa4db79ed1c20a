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
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from dsketch.solvers.linalg import pcg, preconditioner, solve_newton_system
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
    """

    p: np.ndarray
    gp: float
    decrement: float = float("nan")
    tau: float | None = None


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
    """

    max_iter: int = 20
    needs_curvature = True
    second_order = True
    adapts_sketch = False

    def solve(self, state: IterationState, problem: NewtonSolver) -> Direction:
        assert state.hess is not None and state.grad is not None and state.g0 is not None
        rtol = min(0.1, float(np.sqrt(state.grad_norm / state.g0)))
        p, _n, reason = pcg(lambda v: problem.hessvec(state, v), state.grad, preconditioner(state.hess),
                            rtol=rtol, maxiter=self.max_iter)
        if reason == "negative-curvature":
            logger.debug("newton-cg: negative curvature; taking the preconditioned step")
        if not np.all(np.isfinite(p)) or float(state.grad @ p) >= 0.0:
            p, _method = solve_newton_system(state.hess, state.grad, stacklevel=outside_stacklevel() + 1)
        return newton_direction(p, state.grad)


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


def inner_solver(method: str, cg_max_iter: int = 20) -> InnerSolver:
    """The inner solver of ``dsketch.Solver(method)``."""
    if method == "newton-cg":
        return ConjugateGradient(max_iter=cg_max_iter)
    if method == "gd":
        return GradientStep()
    return CholeskySolve()
