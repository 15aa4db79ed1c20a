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
    contractions ``||g_k|| / ||g_{k-1}||`` is the observed rate ``rho``. While
    ``rho <= rate`` L-BFGS goes on (at ``rho = 0.4`` a relative gradient of 1e-8 is about
    20 iterations away). A slower rate switches to Newton steps (:meth:`use_newton` turns
    true and stays true), unless Newton's curvature is dear (:attr:`reuses_curvature`) and
    the cost of finishing by Newton is known: then L-BFGS goes on while the iterations it
    still needs at this rate, ``log(tol ||g_0|| / ||g_k||) / log(rho)`` at the rate ``rho`` of the last
    :data:`PRICING_WINDOW` contractions, cost less than
    ``newton_cost`` (Newton's remaining iterations priced in L-BFGS iterations,
    :func:`newton_cost`) and fit in what is left of ``max_iter``. Where the curvature is
    cheap (at most :data:`REUSE_CURVATURE_PASSES` passes an iteration) the first slow rate
    hands over: that extrapolation rests on two contractions of a sequence that is not
    monotone, and continuing on it can only save a few cheap Newton iterations. On the
    dense 2e5 x 500 problem of the benchmark (AR(1) columns, a Newton iteration about 9
    passes) the contractions read 0.68, 0.41, 1.17, 0.33, 0.76, 1.26; at ``tol = 1e-8``
    the extrapolation kept L-BFGS for 6 iterations where 3 were enough, and Newton still
    needed 4 iterations after either.

    ``curvature_passes`` (:func:`curvature_passes`, None: unknown) is what one Newton
    iteration with fresh curvature costs in passes; above :data:`REUSE_CURVATURE_PASSES`
    the Newton phase reuses its curvature (:attr:`reuses_curvature`). ``extrapolate``
    prices the Newton finish whatever the curvature costs: a K-output model
    (multinomial), whose Newton-CG steps take several products each besides the curvature
    (:func:`multi_output_newton_cost`), and whose first contractions on well-conditioned
    data are slow too.

    Measured (logistic regression, l2 penalty, relative gradient 1e-8): on a sparse
    well-conditioned problem (2e5 x 1000, 1% non-zeros) L-BFGS contracts at about 0.2 and
    finishes in 11 iterations of one pass each; on a dense problem whose covariance has
    condition number 1e4 (2e5 x 100) it contracts at about 0.97 (over 500 iterations)
    and the probe hands over to Newton after 3, which then needs 4.
    """

    probe: int = 3
    rate: float = 0.4
    tol: float | None = None
    newton_cost: float | None = None
    max_iter: int | None = None
    curvature_passes: float | None = None
    extrapolate: bool = False
    norms: list[float] = field(default_factory=list)
    switched: bool = False

    def __post_init__(self) -> None:
        if int(self.probe) != self.probe or self.probe < 2:
            raise InvalidParameterError(f"probe must be an integer >= 2; got {self.probe!r}")
        if not 0.0 < self.rate < 1.0:
            raise InvalidParameterError(f"rate must lie in (0, 1); got {self.rate!r}")

    @property
    def reuses_curvature(self) -> bool:
        """Whether a Newton iteration's fresh curvature costs more than
        :data:`REUSE_CURVATURE_PASSES` passes (then it is formed once and reused)."""
        return self.curvature_passes is not None and self.curvature_passes > REUSE_CURVATURE_PASSES

    def observe(self, grad_norm: float) -> None:
        """Record the gradient norm of a new iterate (the starting point's first)."""
        self.norms.append(float(grad_norm))

    def observed_rate(self, window: int | None = None) -> float:
        """Geometric mean of the last ``window`` (default ``probe - 1``) contractions, or of
        all there are when fewer (NaN before ``probe - 1``)."""
        k = self.probe - 1
        if len(self.norms) < k + 1:
            return float("nan")
        k = max(k, min(k if window is None else int(window), len(self.norms) - 1))
        if self.norms[-1 - k] <= 0.0:
            return float("nan")
        return float((self.norms[-1] / self.norms[-1 - k]) ** (1.0 / k))

    def remaining(self) -> float:
        """Quasi-Newton iterations still needed to reach ``tol``, at the rate of the last
        :data:`PRICING_WINDOW` contractions (fewer at the start)."""
        rho = self.observed_rate(PRICING_WINDOW)
        if self.tol is None or not np.isfinite(rho) or not self.norms or self.norms[-1] <= 0.0:
            return float("nan")
        target = self.tol * self.norms[0]
        if self.norms[-1] <= target:
            return 0.0
        return float("inf") if rho >= 1.0 else float(np.log(target / self.norms[-1]) / np.log(rho))

    def use_newton(self) -> bool:
        """True once quasi-Newton, after ``probe`` iterations, is too slow to finish first."""
        if self.switched or len(self.norms) <= self.probe:
            return self.switched
        if not self.observed_rate() > self.rate:  # fast (or a zero gradient: NaN)
            return False
        if self.tol is None or self.newton_cost is None or not (self.reuses_curvature or self.extrapolate):
            self.switched = True  # cheap (or unpriced) curvature: Newton at the first slow rate
            return True
        left = float("inf") if self.max_iter is None else self.max_iter - (len(self.norms) - 1) - NEWTON_ITERATIONS
        need = self.remaining()
        self.switched = bool(need > self.newton_cost or need > left)
        return self.switched


#: Contractions whose geometric mean prices the quasi-Newton iterations still needed
#: (:meth:`QuasiNewtonProbe.remaining`). L-BFGS gradient norms are not monotone: on sparse
#: multinomial data (2e4 x 2000, K = 10) they went 6.6e-4, 4.2e-4, 2.6e-4, 4.4e-4, and over
#: the last two contractions (rate 1.02) the extrapolation saw no end to L-BFGS and handed over
#: to a Newton phase of 8 s an iteration after 0.5 s of L-BFGS; over five (0.72) it needs 60
#: more L-BFGS iterations of 10 ms.
PRICING_WINDOW = 5

#: Newton iterations assumed to finish a fit from where the quasi-Newton phase hands over.
NEWTON_ITERATIONS = 6

#: How much more a BLAS-3 product (a dense Gram, a Cholesky factorisation) does per second
#: than a pass's memory-bound products, in the cost model of :func:`newton_cost`.
BLAS3_SPEEDUP = 8.0

#: A Newton iteration priced above this many passes (:func:`curvature_passes`) forms its
#: curvature once and then reuses it as the preconditioner of conjugate gradients on exact
#: Hessian-vector products (:class:`~dsketch.solvers.inner.QuasiNewtonThenNewton`).
REUSE_CURVATURE_PASSES = 10.0

#: Hessian-vector products (passes) assumed per Newton step preconditioned by reused
#: curvature, in the cost model; the solver forms the curvature afresh once a step needs
#: more than :data:`REFRESH_PRODUCTS`.
REUSED_STEP_PRODUCTS = 4
REFRESH_PRODUCTS = 10


def curvature_passes(n_samples: int, n_features: int, nnz: int, sparse: bool) -> float:
    """What one Newton iteration with fresh curvature costs, in passes over A.

    A pass is ``A p`` and ``A^T r``, about ``4 nnz(A)`` flops (memory-bound). A Newton
    iteration is that pass plus the Gram ``A^T D A`` (sparse: ``n (nnz/n)^2 / 2`` products;
    dense: ``n d^2 / 2`` at BLAS-3 speed) and the Cholesky factorisation (``d^3 / 3`` at
    BLAS-3 speed). On one-hot data with thousands of columns (the 2013 New York flights,
    327,346 x 3,295) about 190 passes, on a dense 10^6 x 100 problem about 2.
    """
    n, d = max(int(n_samples), 1), max(int(n_features), 1)
    nnz = max(int(nnz), 1) if sparse else n * d
    gram = n * (nnz / n) ** 2 / 2.0 if sparse else n * d * d / 2.0 / BLAS3_SPEEDUP
    chol = d**3 / 3.0 / BLAS3_SPEEDUP
    return 1.0 + (gram + chol) / (4.0 * nnz)


def newton_cost(n_samples: int, n_features: int, nnz: int, sparse: bool) -> float:
    """What finishing a fit by Newton costs, in quasi-Newton iterations (one pass each).

    :data:`NEWTON_ITERATIONS` iterations of :func:`curvature_passes` each; where that is
    over :data:`REUSE_CURVATURE_PASSES`, the curvature is formed once and the remaining
    iterations take :data:`REUSED_STEP_PRODUCTS` Hessian-vector products and their own pass
    each (about 215 passes on the flights data instead of 1,135).
    """
    once = curvature_passes(n_samples, n_features, nnz, sparse)
    if once <= REUSE_CURVATURE_PASSES:
        return NEWTON_ITERATIONS * once
    return once + (NEWTON_ITERATIONS - 1) * (1.0 + REUSED_STEP_PRODUCTS)


#: Hessian-vector products a Newton-CG step of a K-output model (multinomial) takes with
#: its centred block preconditioner, in the cost model (3.6 to 5.5 measured on the
#: generated problems of ``benchmarks/multinomial.py``).
MULTI_OUTPUT_PRODUCTS = 5


def multi_output_newton_cost(n_samples: int, n_features: int, nnz: int, sparse: bool) -> float:
    """:func:`newton_cost` for a K-output model: every Newton-CG iteration forms its K
    diagonal blocks afresh (``K`` Grams and factors against a pass's ``K`` products: the
    ratio of one output, :func:`curvature_passes`) and takes :data:`MULTI_OUTPUT_PRODUCTS`
    products of one pass each."""
    return NEWTON_ITERATIONS * (curvature_passes(n_samples, n_features, nnz, sparse) + MULTI_OUTPUT_PRODUCTS)
