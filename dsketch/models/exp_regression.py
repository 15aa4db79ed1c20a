"""Regularised exp / cosh / sinh regression (Li, Song & Zhou, arXiv 2303.15725).

The maths is docs/theory.md#exp-cosh-and-sinh-regression.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from dsketch.errors import InvalidParameterError, ModelDomainError
from dsketch.models.base import FloatArray, Model, RowTerms, Scalars, Stats

_Fn = Callable[[FloatArray], FloatArray]

#: phi, phi', phi'' for each supported map.
PHIS: dict[str, tuple[_Fn, _Fn, _Fn]] = {
    "exp": (np.exp, np.exp, np.exp),
    "cosh": (np.cosh, np.sinh, np.cosh),
    "sinh": (np.sinh, np.cosh, np.sinh),
}
REGIMES = ("weak", "strong")
_LOG2 = float(np.log(2.0))


def _log_abs_phi(phi: str, eta: FloatArray) -> FloatArray:
    """``log |phi(eta)|`` without overflow (``-inf`` where ``phi(eta) = 0``)."""
    if phi == "exp":
        return eta
    a = np.abs(eta)
    with np.errstate(under="ignore", divide="ignore"):
        t = np.exp(-2.0 * a)
        tail = np.log1p(t) if phi == "cosh" else np.log1p(-t)
    out: FloatArray = a + tail - _LOG2
    return out


def _min_curvature(phi: str, b_max: float) -> float:
    """``inf`` over ``v`` and ``|b| <= b_max`` of ``phi'^2 + phi'' (phi - b)`` (docs/theory.md#exp-cosh-and-sinh-regression)."""
    b = abs(b_max)
    if phi == "exp":  # 2 e^{2v} - b e^v, smallest at e^v = b/4
        return -b * b / 8.0
    if phi == "cosh":  # cosh 2v - b cosh v, with cosh v >= 1
        return 1.0 - b if b <= 4.0 else -1.0 - b * b / 8.0
    return 1.0 - b * b / 8.0  # sinh: cosh 2v - b sinh v


class ExpRegression(Model):
    r"""Regression through an entrywise exponential-type map ``phi``.

    With ``v = A x`` and ``phi`` one of ``exp``, ``cosh``, ``sinh`` (entrywise):

    Objective::

        L(x) = 1/2 ||phi(A x) - b||^2 + 1/2 ||diag(w) A x||^2

    Gradient::

        grad L(x) = A^T r,   r = phi'(v) * (phi(v) - b) + w*w*v

    Hessian, in Gram form, purely diagonal (rank 0, no low-rank part)::

        hess L(x) = A^T diag(D) A,   D = phi'(v)^2 + phi''(v) * (phi(v) - b) + w*w

    i.e. ``D = 2e^{2v} - b e^v + w^2`` (exp), ``cosh 2v - b cosh v + w^2`` (cosh),
    ``cosh 2v - b sinh v + w^2`` (sinh). When ``w`` is None it is taken as zero.

    Parameters
    ----------
    phi : {"exp", "cosh", "sinh"}, default "exp"
        The map. The registry exposes the three as the models ``"exp"``, ``"cosh"``
        and ``"sinh"``; :attr:`name` equals ``phi``.

    Notes
    -----
    ``phi`` grows like ``e^|v|``: once ``|v|`` exceeds about 355 the squared residual
    leaves the float64 range and the loss (and the affected ``r``, ``D``) is ``+inf``,
    returned without floating-point warnings and never NaN; a line search rejects
    such steps. Beyond ``|v| ~ 710``, ``phi`` itself is infinite.

    The only global statistic besides ``n`` is the sum of squares ``sum phi(v)^2``, kept
    max-shifted as ``m = max log|phi(v)|`` and ``ssq = sum e^(2 (log|phi(v)| - m))`` (the
    softmax normaliser's scheme, so it never overflows); it gives the typical target
    scale ``phi_rms`` used by :meth:`sample_targets`.

    References
    ----------
    Z. Li, Z. Song, T. Zhou. Solving regularized exp, cosh and sinh regression problems.
    arXiv 2303.15725 (2023).
    """

    rank: ClassVar[int] = 0
    uses_w: ClassVar[bool] = True

    def __init__(self, phi: str = "exp") -> None:
        if phi not in PHIS:
            raise InvalidParameterError(f"phi must be one of {sorted(PHIS)}; got {phi!r}")
        self.phi = phi

    @property  # type: ignore[misc]
    def name(self) -> str:  # type: ignore[override]
        """Registry name: the map ``phi``."""
        return self.phi

    def __repr__(self) -> str:
        return f"ExpRegression(phi={self.phi!r})"

    def describe(self) -> dict[str, Any]:
        return {"model": self.phi}

    def _phis(self, eta: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        f0, f1, f2 = PHIS[self.phi]
        with np.errstate(over="ignore", under="ignore"):
            return f0(eta), f1(eta), f2(eta)

    # -- global statistics ----------------------------------------------------------
    def stats(self, eta: FloatArray, b: FloatArray, w: FloatArray | None) -> Stats:
        """``n`` and the max-shifted sum of squares ``m = max log|phi|``, ``ssq``."""
        n = int(eta.size)
        la = _log_abs_phi(self.phi, eta)
        m = float(np.max(la)) if n else -np.inf
        if not np.isfinite(m):  # empty or all phi = 0 (-inf); infinite or NaN eta
            return {"n": n, "m": m, "ssq": 0.0 if m == -np.inf else 1.0}
        with np.errstate(under="ignore"):
            return {"n": n, "m": m, "ssq": float(np.sum(np.exp(2.0 * (la - m))))}

    def merge_stats(self, left: Stats, right: Stats) -> Stats:
        """Rescale both sides to the larger max and add (associative and commutative)."""
        m = max(left["m"], right["m"])
        if not np.isfinite(m):
            return {"n": left["n"] + right["n"], "m": m, "ssq": 0.0 if m == -np.inf else 1.0}
        with np.errstate(under="ignore"):
            sl = float(np.exp(2.0 * (left["m"] - m)))
            sr = float(np.exp(2.0 * (right["m"] - m)))
        return {"n": left["n"] + right["n"], "m": m, "ssq": left["ssq"] * sl + right["ssq"] * sr}

    def scalars(self, stats: Stats) -> Scalars:
        """``n`` and ``phi_rms = sqrt(sum phi(v)^2 / n)`` (``+inf`` beyond the float64 range).

        Raises
        ------
        ModelDomainError
            If the statistics cover no rows.
        """
        n = int(stats["n"])
        if n == 0:
            raise ModelDomainError(f"model {self.phi!r} needs at least one row; got n=0")
        m = float(stats["m"])
        with np.errstate(over="ignore", under="ignore"):
            rms = 0.0 if m == -np.inf else float(np.exp(m) * np.sqrt(stats["ssq"] / n))
        return {"n": float(n), "phi_rms": rms}

    # -- per-row terms -------------------------------------------------------------
    def loss_terms(
        self, eta: FloatArray, b: FloatArray, w: FloatArray | None, scalars: Scalars
    ) -> float:
        """``1/2 sum (phi(eta_i) - b_i)^2 + 1/2 sum w_i^2 eta_i^2``; ``+inf`` on overflow."""
        u, _, _ = self._phis(eta)
        with np.errstate(over="ignore", under="ignore"):
            c = u - b
            val = 0.5 * float(c @ c)
            if w is not None:
                val += 0.5 * float(np.sum((w * eta) ** 2))
        return val

    def row_terms(
        self, eta: FloatArray, b: FloatArray, w: FloatArray | None, scalars: Scalars
    ) -> RowTerms:
        """``r = phi' (phi - b) + w^2 v`` and ``D = phi'^2 + phi'' (phi - b) + w^2``."""
        u, d1, d2 = self._phis(eta)
        w2 = 0.0 if w is None else w * w
        with np.errstate(over="ignore", under="ignore"):
            c = u - b
            return RowTerms(grad_weight=d1 * c + w2 * eta, diag=d1 * d1 + d2 * c + w2, lowrank=None)

    # -- data simulation -----------------------------------------------------------
    def sample_targets(
        self, eta: FloatArray, scalars: Scalars, rng: np.random.Generator, *, noise: float
    ) -> FloatArray:
        """Targets for a planted ``x``: ``b = phi(eta) + noise * phi_rms * N(0, 1)``.

        ``phi_rms = sqrt(mean phi(A x_planted)^2)`` over *all* rows (from ``scalars``),
        so the noise is homoscedastic and does not depend on the row blocking.

        Parameters
        ----------
        eta : ndarray of shape (n_rows,)
            The block's slice of ``A x_planted``.
        scalars : dict
            ``self.scalars`` of the merged statistics of the whole ``A x_planted``.
        rng : numpy.random.Generator
        noise : float
            Noise level relative to ``phi_rms``.

        Returns
        -------
        b : ndarray of shape (n_rows,)
        """
        u, _, _ = self._phis(eta)
        return u + (noise * scalars["phi_rms"]) * rng.standard_normal(eta.size)

    def default_w(self, n_samples: int, regime: str, *, b_max: float = 3.0) -> float:
        """Constant row weight ``w`` for generated problems.

        Parameters
        ----------
        n_samples : int
        regime : {"weak", "strong"}
            ``"weak"``: ``w = 0.3 / n_samples``, negligible against the data term's O(1)
            curvature per row (the optimum is the least-squares fit of the planted ``x``).
            ``"strong"``: ``w^2 = 1 + max(0, -inf_v D_phi)``, where ``inf_v D_phi`` is the
            smallest non-w part of ``D`` over all ``v`` and ``|b| <= b_max``: ``-b^2/8``
            (exp), ``1 - b`` for ``b <= 4`` else ``-1 - b^2/8`` (cosh), ``1 - b^2/8``
            (sinh) (docs/theory.md#exp-cosh-and-sinh-regression). Then every ``D_i >= 1`` and
            ``hess L(x) >= sigma_min(A)^2 I`` for every ``x``.
        b_max : float, default 3.0
            Bound on ``|b_i|`` assumed by the strong regime. Rows whose targets exceed
            it keep ``D_i >= 1`` only near a good fit (``phi(v_i) ~ b_i``).

        Returns
        -------
        float
        """
        if regime == "weak":
            return 0.3 / n_samples
        if regime == "strong":
            return float(np.sqrt(1.0 + max(0.0, -_min_curvature(self.phi, b_max))))
        raise InvalidParameterError(f"regime must be one of {REGIMES}; got {regime!r}")
