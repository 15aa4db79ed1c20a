"""Limited-memory BFGS directions, and the rule that picks between them and Newton steps.

A quasi-Newton iteration reads ``A`` once (the fused pass computes ``A p``, the line
search's losses and the gradient at the full step) and forms no ``d x d`` curvature, so
on a well-conditioned problem it runs at the speed of a gradient evaluation. On an
ill-conditioned one it needs many iterations, and a Newton step with the (exact or
sketched) curvature wins. :class:`QuasiNewtonProbe` measures which case a fit is in from
the first quasi-Newton iterations' gradient norms and switches to Newton steps when they
contract too slowly; the switch is final, so a fit converges with Newton's local rate.

References
----------
J. Nocedal, S. J. Wright. Numerical Optimization, 2nd ed., Springer 2006, section 7.2
(the two-loop recursion and the initial scaling ``gamma_k = s^T y / y^T y``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from dsketch.errors import InvalidParameterError


class LBFGSMemory:
    """The last ``m`` curvature pairs ``(s, y)`` and the direction they define.

    ``s_k = x_{k+1} - x_k`` and ``y_k = g_{k+1} - g_k``; a pair is kept only when
    ``s^T y > eps_curv * y^T y`` (the update then keeps the inverse-Hessian approximation
    positive definite, without a Wolfe line search). :meth:`direction` returns
    ``-H_k g`` by the two-loop recursion, with ``H_0 = gamma I`` scaled by the newest pair
    (without pairs: a gradient step of length ``1 / ||g||`` in each coordinate's scale,
    ``-g / ||g||_2``, which the line search then shortens or accepts).
    """

    def __init__(self, m: int = 10, eps_curv: float = 1e-10) -> None:
        if int(m) != m or m < 1:
            raise InvalidParameterError(f"the L-BFGS memory must be an integer >= 1; got {m!r}")
        self.m = int(m)
        self.eps_curv = float(eps_curv)
        self.pairs: deque[tuple[np.ndarray, np.ndarray, float]] = deque(maxlen=self.m)

    def update(self, s: np.ndarray, y: np.ndarray) -> bool:
        """Add the pair ``(s, y)``; False (and nothing kept) when ``s^T y`` is too small."""
        s = np.asarray(s, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        sy, yy = float(s @ y), float(y @ y)
        if not (np.isfinite(sy) and np.isfinite(yy)) or sy <= self.eps_curv * yy or yy == 0.0:
            return False
        self.pairs.append((s.copy(), y.copy(), 1.0 / sy))
        return True

    def direction(self, g: np.ndarray) -> np.ndarray:
        """``-H g`` for the current inverse-Hessian approximation ``H``."""
        q = np.array(g, dtype=np.float64, copy=True)
        if not self.pairs:
            norm = float(np.linalg.norm(q))
            return -q / norm if norm > 0 else -q
        alphas = []
        for s, y, rho in reversed(self.pairs):
            a = rho * float(s @ q)
            q -= a * y
            alphas.append(a)
        s, y, rho = self.pairs[-1]
        z = q * (float(s @ y) / float(y @ y))
        for (s, y, rho), a in zip(self.pairs, reversed(alphas), strict=True):
            b = rho * float(y @ z)
            z += (a - b) * s
        return -z

    def clear(self) -> None:
        self.pairs.clear()


@dataclass
class QuasiNewtonProbe:
    """Decide, from the quasi-Newton iterations' gradient norms, when to take Newton steps.

    After ``probe`` quasi-Newton iterations the geometric mean of the last ``probe - 1``
    contractions ``||g_k|| / ||g_{k-1}||`` is the observed rate ``rho``. When
    ``rho > rate`` the problem is ill-conditioned for L-BFGS (at ``rho = 0.4`` reaching a
    relative gradient of 1e-8 takes about 20 more iterations, and near ``rho = 1``
    thousands), so :meth:`use_newton` turns true and stays true.

    Measured (logistic regression, l2 penalty, relative gradient 1e-8): on a sparse
    well-conditioned problem (2e5 x 1000, 1% non-zeros) L-BFGS contracts at about 0.2 and
    finishes in 11 iterations of one pass each; on a dense problem whose covariance has
    condition number 1e4 (2e5 x 100) it contracts at about 0.97 (over 500 iterations)
    and the probe hands over to Newton after 3, which then needs 4.
    """

    probe: int = 3
    rate: float = 0.4
    norms: list[float] = field(default_factory=list)
    switched: bool = False

    def __post_init__(self) -> None:
        if int(self.probe) != self.probe or self.probe < 2:
            raise InvalidParameterError(f"probe must be an integer >= 2; got {self.probe!r}")
        if not 0.0 < self.rate < 1.0:
            raise InvalidParameterError(f"rate must lie in (0, 1); got {self.rate!r}")

    def observe(self, grad_norm: float) -> None:
        """Record the gradient norm of a new iterate (the starting point's first)."""
        self.norms.append(float(grad_norm))

    def observed_rate(self) -> float:
        """Geometric mean of the last ``probe - 1`` contractions (NaN before enough)."""
        k = self.probe - 1
        if len(self.norms) < k + 1 or self.norms[-1 - k] <= 0.0:
            return float("nan")
        return float((self.norms[-1] / self.norms[-1 - k]) ** (1.0 / k))

    def use_newton(self) -> bool:
        """True once ``probe`` quasi-Newton iterations contracted slower than ``rate``."""
        if not self.switched and len(self.norms) > self.probe:
            rho = self.observed_rate()
            self.switched = bool(rho > self.rate)  # NaN (a zero gradient): stay
        return self.switched
