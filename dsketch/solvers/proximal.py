"""Proximal Newton's inner solve for L1 (and elastic-net) penalties: coordinate descent on
the penalised quadratic model built from the curvature and the gradient of an iterate
(:class:`ProximalCoordinateDescent`), with strong-rule screening, the curvature restricted
to the screened columns, and the per-class blocks of a K-output model; and the
least-norm subgradient that the stopping rule measures (:func:`min_norm_subgradient`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from scipy.linalg import LinAlgError, cho_factor, cho_solve

from dsketch.solvers._coordinate import sweep
from dsketch.solvers.inner import Direction

if TYPE_CHECKING:
    from dsketch.solvers.newton import IterationState, NewtonSolver

logger = logging.getLogger("dsketch")

#: Sweeps of coordinate descent after which the inner solve tries the exact minimiser on the
#: support they reached (:meth:`ProximalCoordinateDescent._on_support`).
WARM_SWEEPS = 8
#: Solves on a support grown by the coordinates that violate the model's KKT conditions off
#: it, at most, before coordinate descent goes on.
SUPPORT_ROUNDS = 5
#: The smallest pivot of that solve's Cholesky factor, relative to the largest diagonal
#: entry, below which the support's curvature counts as singular and the solve is not tried.
PIVOT_FLOOR = 1e-12


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
    the stopping rule, on the full gradient, never accepts a violation. For a K-output model
    the solver widens the columns to whole features (all ``K`` classes of each) and forms the
    whole Hessian on them when the model allows it (``full_for``): the restricted branch then
    couples the classes, where the blocks would converge linearly.

    With ``reuse > 0`` (a regularisation path's fits) a curvature, once formed, is kept
    (:meth:`wants_curvature`) and the next iterations minimise the model with it while each
    step divides the KKT measure (the least-norm subgradient's norm) by at least
    ``1 / reuse`` and is taken whole: their passes over ``A`` compute loss and gradient only,
    where forming the exact Gram of a few thousand one-hot columns costs several times a
    gradient. The direction is then a proximal quasi-Newton step; its fixed points are the
    minimisers of the objective (the gradient is exact, the line search on the true
    objective), and the stopping rule is unchanged. A curvature is formed afresh at the next
    iterate after a step that contracted less or was shortened, and at once when the kept one
    lacks a column the direction needs (one that violates the KKT conditions). Models whose
    curvature has an exact low-rank part or comes in blocks (K outputs) form it every
    iteration, as without ``reuse``.
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
    #: Reuse a kept curvature while each step divides the KKT measure by at least
    #: ``1 / reuse`` (0: form it every iteration).
    reuse: float = 0.0
    #: After 8, 16, 32, ... sweeps, try the exact minimiser on the support they reached
    #: (:meth:`_on_support`); False: sweeps only.
    on_support: bool = False
    #: Curvatures formed and steps taken with a kept one (counts over the fit).
    formed: int = 0
    reused: int = 0
    _needed: np.ndarray | None = field(default=None, init=False, repr=False)
    #: The kept curvature: ``(H~, its columns or None for all)``.
    _kept: tuple[np.ndarray, np.ndarray | None] | None = field(default=None, init=False, repr=False)
    _refresh: bool = field(default=False, init=False, repr=False)
    _l1: np.ndarray | None = field(default=None, init=False, repr=False)
    handles_l1 = True
    needs_curvature = True
    second_order = True
    adapts_sketch = False

    def solve(self, state: IterationState, problem: NewtonSolver) -> Direction:
        assert state.grad is not None
        x, g = state.x, state.grad
        l1 = self._l1 = problem.model.l1_weights(x.size)
        H, cols, kept = self._curvature(state, problem)
        kkt = np.abs(min_norm_subgradient(g, x, l1))
        tol = self.forcing * float(kkt.max()) if kkt.size else 0.0
        if H.ndim == 3:  # the K diagonal blocks of a K-output model: one class at a time
            p = self.minimise_blocks(H, g, x, l1, tol)
            if getattr(problem.model, "shift_invariant", False):
                p = _shifted(p, g, x, l1, state.penalty_hess, H.shape[0])
        elif cols is None:
            p = self.minimise(_positive_diagonal(H), g, x, l1, tol, self.screen)
        else:  # the model over the columns of a restricted curvature, p = 0 elsewhere
            p = np.zeros(x.size)
            p[cols] = self.minimise(_positive_diagonal(H), g[cols], x[cols], l1[cols], tol)
        delta = _decrease(p, g, x, l1)
        return Direction(p=p, gp=delta, decrement=float(np.sqrt(max(-delta, 0.0))), linear=H.ndim == 3 or kept)

    def _curvature(self, state: IterationState, problem: NewtonSolver) -> tuple[np.ndarray, np.ndarray | None, bool]:
        """The curvature of the step at ``state`` and its columns (None: all): the one formed
        there (kept, with ``reuse``, where it can be), or else the kept one; and whether it
        is the kept one."""
        # the next iterate forms a curvature unless the last step contracted fast (Newton
        # steps until they do; then the kept curvature until a step does not)
        fast = state.prev_gnorm is not None and state.grad_norm <= self.reuse * state.prev_gnorm
        self._refresh = not fast or state.step < 1.0
        if state.hess is not None:
            self.formed += 1
            if self.reuse > 0.0 and state.hess.ndim == 2 and state.lowrank is None and problem.n_outputs == 1:
                self._kept = (state.hess, state.hess_cols)  # the penalty is the same at every iterate
            return state.hess, state.hess_cols, False
        if self._kept is None:  # internal: wants_curvature asks for one until one is kept
            raise RuntimeError("proximal coordinate descent has no curvature to reuse")
        self.reused += 1
        return self._kept[0], self._kept[1], True

    def wants_curvature(self, state: IterationState) -> bool:
        """Whether the pass at ``state`` (or, after :meth:`solve` there, the fused pass
        towards the next iterate) should form the curvature: always without ``reuse``;
        with it, when none is kept, after a poor step, and when the kept one lacks a column
        the direction needs."""
        if not self.reuse > 0.0 or self._kept is None or self._refresh or state.step < 1.0:
            return True
        assert self._l1 is not None  # set by the solve that kept the curvature
        needed, held = self.curvature_columns(state.x, state.grad, self._l1), self._kept[1]
        if held is None:
            return False
        return needed is None or not np.all(np.isin(needed, held, assume_unique=True))

    def describe(self) -> dict[str, object]:
        """What the result's ``info`` records: curvatures formed, steps with a kept one."""
        return {"curvatures_formed": int(self.formed), "curvature_reused": int(self.reused)}

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

    def state_dict(self) -> dict[str, object]:
        """What a checkpoint keeps so that a resumed fit restricts its curvature to the same
        columns (the needed set only grows during a fit), reuses the same kept curvature and
        counts on from its readmissions."""
        out: dict[str, object] = {"readmitted": int(self.readmitted), "formed": int(self.formed),
                                  "reused": int(self.reused), "refresh": int(self._refresh)}
        if self._needed is not None:
            out["needed"] = np.flatnonzero(self._needed)
            out["n_coef"] = int(self._needed.size)
        if self._kept is not None:
            out["kept_hess"] = self._kept[0]
            if self._kept[1] is not None:
                out["kept_cols"] = self._kept[1]
            out["l1"] = self._l1  # set by the solve that kept it
        return out

    def load_state_dict(self, saved: dict[str, object]) -> None:
        self.readmitted = int(saved["readmitted"])  # type: ignore[call-overload]
        self.formed = int(saved.get("formed", 0))  # type: ignore[call-overload]
        self.reused = int(saved.get("reused", 0))  # type: ignore[call-overload]
        self._refresh = bool(int(saved.get("refresh", 0)))  # type: ignore[call-overload]
        if "needed" in saved:
            self._needed = np.zeros(int(saved["n_coef"]), dtype=bool)  # type: ignore[call-overload]
            self._needed[np.asarray(saved["needed"], dtype=np.int64)] = True
        if "kept_hess" in saved:
            cols = saved.get("kept_cols")
            self._kept = (np.asarray(saved["kept_hess"], dtype=np.float64),
                          None if cols is None else np.asarray(cols, dtype=np.int64))
        if "l1" in saved:
            self._l1 = np.asarray(saved["l1"], dtype=np.float64)

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
        done, used, limit = False, 0, WARM_SWEEPS
        while not done and used < self.max_sweeps:  # sweeps, then the exact minimiser on their support
            step = min(limit, self.max_sweeps - used) if self.on_support else self.max_sweeps
            done = self._descend(H, g, x, l1, tol, p, Hp, np.flatnonzero(allowed), step)
            used, limit = used + step, 2 * limit
            if done or not self.on_support:
                break
            direct, violators = self._on_support(H, g, x, l1, tol, p, usable)
            if direct is not None:
                return direct
            self.readmitted += int(np.count_nonzero(violators & ~allowed))
            allowed |= violators  # left-out coordinates that the model's KKT condition takes back
        while True:
            if not done:
                logger.debug("proximal coordinate descent: %d sweeps without reaching %.3g", self.max_sweeps, tol)
            out = usable & ~allowed
            # a left-out coordinate (p_j = 0 = x_j) violates the model's KKT where |g_j + (H p)_j| > l1_j
            violators = out & (np.abs(g + Hp) > l1 + tol)
            if not violators.any():
                return p
            self.readmitted += int(violators.sum())
            allowed |= violators
            done = self._descend(H, g, x, l1, tol, p, Hp, np.flatnonzero(allowed), self.max_sweeps)

    @staticmethod
    def _on_support(H: np.ndarray, g: np.ndarray, x: np.ndarray, l1: np.ndarray, tol: float, p: np.ndarray,
                    usable: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """The exact minimiser of the model with the support and signs of ``x + p`` fixed
        (a Cholesky solve on the support) where it is the model's minimiser: its signs are
        those assumed and every coordinate off the support satisfies the model's KKT
        condition ``|g_j + (H q)_j| <= l1_j`` (to ``tol``); else None. A coordinate off the
        support that violates the condition joins it, with the sign that lowers the model,
        and the solve is repeated (:data:`SUPPORT_ROUNDS` times at most). Also the
        coordinates that joined or still violate, for the coordinate descent to take back."""
        z = x + p
        support = usable & ((z != 0.0) | (l1 == 0.0))
        sign, joined = np.sign(z), np.zeros(x.size, dtype=bool)
        for _ in range(SUPPORT_ROUNDS):
            on = np.flatnonzero(support)
            q = np.where(support | ~usable, 0.0, -x)  # off the support x + q = 0
            moved = np.flatnonzero(q)
            block = H[np.ix_(on, on)]
            try:
                factor = cho_factor(block, check_finite=False)
            except (LinAlgError, ValueError):  # not positive definite, or no support
                return None, joined
            if not np.diag(factor[0]).min(initial=np.inf) ** 2 > PIVOT_FLOOR * np.diag(block).max(initial=0.0):
                return None, joined  # singular to rounding (more coordinates than rows): the sweeps decide
            q[on] = cho_solve(factor, -(g[on] + l1[on] * sign[on] + H[np.ix_(on, moved)] @ q[moved]),
                              check_finite=False)
            if not np.all(np.isfinite(q[on])):
                return None, joined
            pen = on[l1[on] > 0.0]
            flipped = pen[np.sign(x[pen] + q[pen]) != sign[pen]]
            if flipped.size:  # leave them at 0 and solve again
                support[flipped] = False
                continue
            off = np.flatnonzero(usable & ~support)
            model_grad = g[off] + H[off] @ q
            out = np.abs(model_grad) > l1[off]
            if not out.any():
                return q, joined
            support[off[out]], joined[off[out]] = True, True
            sign[off[out]] = -np.sign(model_grad[out])
        return None, joined

    def _descend(self, H: np.ndarray, g: np.ndarray, x: np.ndarray, l1: np.ndarray, tol: float, p: np.ndarray,
                 Hp: np.ndarray, everything: np.ndarray, limit: int) -> bool:
        """Active-set cyclic sweeps over ``everything`` (``p``, ``Hp`` updated in place; ``Hp``
        current on all coordinates on return), at most ``limit``; whether a full sweep
        changed nothing beyond ``tol``. Sweeps over the active set track ``H p`` on that
        set only, and ``H p`` is recomputed whole before the next full sweep."""
        every = np.arange(x.size)
        coords, track, sweeps = everything, every, 0
        while sweeps < limit:
            change = sweep(H, g, x, l1, p, Hp, coords, track)
            sweeps += 1
            if change > tol:
                if coords is everything:  # keep working on the support of the full sweep
                    coords = everything[(x[everything] + p[everything] != 0.0) | (l1[everything] == 0.0)]
                    # a gathered update pays off on a small active set; a large one updates all
                    track = coords if 2 * coords.size < x.size else every
                continue
            if coords is everything:
                return True
            coords = everything
            if track is not every:
                Hp[:] = H @ p
                track = every
        if track is not every:
            Hp[:] = H @ p
        return False
