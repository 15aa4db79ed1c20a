"""Generalised linear models with an L2 penalty, in scikit-learn's mean form.

Objective, with ``eta = A x`` and ``n`` the total number of rows (a global scalar)::

    L(x) = (1/n) sum_i l(eta_i, b_i) + 1/2 * l2 * ||x||^2

Gradient ``A^T (l'(eta) / n) + l2 x``; Hessian in Gram form, purely diagonal (rank 0)::

    hess L(x) = A^T diag(l''(eta) / n) A + l2 I

The derivatives ``l'``, ``l''`` are taken in ``eta``. The row weights ``w`` of a store
are not used by these models (``uses_w = False``). The scaling matches scikit-learn:
``LogisticRegression(C=1 / (l2 n), fit_intercept=False)``, ``PoissonRegressor(alpha=l2,
fit_intercept=False)`` and ``Ridge(alpha=l2 n, fit_intercept=False)`` have the same
minimiser.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import numpy as np
from scipy.special import expit

from dsketch.errors import ModelDomainError
from dsketch.models.base import FloatArray, Model, RowTerms, Scalars, Stats

#: Largest ``eta`` used as a Poisson mean when simulating (``e^40 ~ 2.4e17`` counts).
POISSON_ETA_MAX = 40.0


def _first_bad(b: FloatArray, bad: np.ndarray) -> str:
    first = int(np.argmax(bad))
    return f"{int(bad.sum())} of {b.size} targets (first at row {first}: {float(b[first])!r})"


class _GLM(Model):
    """Shared machinery: ``n`` as the only statistic, the L2 penalty, the Gram terms."""

    rank: ClassVar[int] = 0
    uses_w: ClassVar[bool] = False
    fixed_scalars: ClassVar[bool] = True  # the scalars are the row count alone

    def __init__(self, l2: float = 1e-4, n_unpenalized: int = 0) -> None:
        try:
            value = float(l2)
        except (TypeError, ValueError):
            raise ValueError(f"l2 must be a finite number >= 0; got {l2!r}") from None
        if not (np.isfinite(value) and value >= 0.0):
            raise ValueError(f"l2 must be a finite number >= 0; got {l2!r}")
        if isinstance(n_unpenalized, bool) or int(n_unpenalized) != n_unpenalized or n_unpenalized < 0:
            raise ValueError(f"n_unpenalized must be an integer >= 0; got {n_unpenalized!r}")
        self.l2 = value
        #: The last ``n_unpenalized`` coefficients (an intercept column) carry no penalty.
        self.n_unpenalized = int(n_unpenalized)

    def __repr__(self) -> str:
        extra = f", n_unpenalized={self.n_unpenalized}" if self.n_unpenalized else ""
        return f"{type(self).__name__}(l2={self.l2!r}{extra})"

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.name, "l2": self.l2}
        if self.n_unpenalized:
            out["n_unpenalized"] = self.n_unpenalized
        return out

    @abstractmethod
    def _loss(self, eta: FloatArray, b: FloatArray) -> FloatArray:
        """Per-row loss ``l(eta_i, b_i)``."""

    @abstractmethod
    def _d1_d2(self, eta: FloatArray, b: FloatArray) -> tuple[FloatArray, FloatArray]:
        """First and second derivatives of the per-row loss in ``eta``."""

    # -- global statistics ----------------------------------------------------------
    def stats(self, eta: FloatArray, b: FloatArray, w: FloatArray | None) -> Stats:
        return {"n": int(eta.size)}

    def merge_stats(self, left: Stats, right: Stats) -> Stats:
        return {"n": left["n"] + right["n"]}

    def scalars(self, stats: Stats) -> Scalars:
        """``{"n": total rows}``; raises :class:`ModelDomainError` when there are none."""
        if stats["n"] == 0:
            raise ModelDomainError(f"model {self.name!r} needs at least one row; got n=0")
        return {"n": float(stats["n"])}

    # -- per-row terms -------------------------------------------------------------
    def loss_terms(
        self, eta: FloatArray, b: FloatArray, w: FloatArray | None, scalars: Scalars
    ) -> float:
        """``(1/n) sum_block l(eta_i, b_i)`` (may be ``+inf`` on overflow, without warnings)."""
        with np.errstate(over="ignore", under="ignore"):
            return float(np.sum(self._loss(eta, b))) / scalars["n"]

    def row_terms(
        self, eta: FloatArray, b: FloatArray, w: FloatArray | None, scalars: Scalars
    ) -> RowTerms:
        """``r = l'(eta) / n`` and ``D = l''(eta) / n``."""
        with np.errstate(over="ignore", under="ignore"):
            d1, d2 = self._d1_d2(eta, b)
        n = scalars["n"]
        return RowTerms(grad_weight=d1 / n, diag=d2 / n, lowrank=None)

    # -- coefficient-space penalty ---------------------------------------------------
    def penalty(self, x: FloatArray) -> tuple[float, FloatArray, FloatArray]:
        """``(1/2 l2 ||x_p||^2, l2 x_p, l2 * 1_p)`` over the penalised coefficients ``x_p``
        (all but the last ``n_unpenalized``)."""
        mask = np.full(x.shape, self.l2)
        if self.n_unpenalized:
            mask[x.size - self.n_unpenalized :] = 0.0
        xp = mask * x
        return 0.5 * float(x @ xp), xp, mask


class LogisticRegression(_GLM):
    """L2-penalised logistic regression, targets in {0, 1}.

    Per-row loss ``l = log(1 + e^eta) - b eta``, ``l' = sigma(eta) - b``,
    ``l'' = sigma(eta) (1 - sigma(eta))``, computed with ``logaddexp`` and ``expit`` so
    that no ``eta`` overflows. Objective, gradient and Hessian: see the module docstring.

    Parameters
    ----------
    l2 : float, default 1e-4
        L2 penalty strength (``>= 0``).
    """

    name: ClassVar[str] = "logistic"

    def _loss(self, eta: FloatArray, b: FloatArray) -> FloatArray:
        out: FloatArray = np.logaddexp(0.0, eta) - b * eta
        return out

    def _d1_d2(self, eta: FloatArray, b: FloatArray) -> tuple[FloatArray, FloatArray]:
        s = expit(eta)
        return s - b, s * (1.0 - s)

    def check_targets(self, b: FloatArray) -> None:
        """Raise ``ValueError`` unless every target is 0 or 1."""
        bad = (b != 0.0) & (b != 1.0)
        if bad.any():
            raise ValueError(
                f"logistic regression needs targets in {{0, 1}}; {_first_bad(b, bad)} are not. "
                "Recode the labels as 0/1."
            )

    def sample_targets(
        self, eta: FloatArray, scalars: Scalars, rng: np.random.Generator, *, noise: float
    ) -> FloatArray:
        """Bernoulli(sigma(eta)) labels as 0.0/1.0 (``noise`` is unused: labels are random)."""
        return (rng.random(eta.size) < expit(eta)).astype(np.float64)


class PoissonRegression(_GLM):
    """L2-penalised Poisson regression with log link, targets ``>= 0``.

    Per-row loss ``l = e^eta - b eta`` (the half deviance up to a constant),
    ``l' = e^eta - b``, ``l'' = e^eta``. For ``eta`` beyond about 709 the loss is ``+inf``.
    Objective, gradient and Hessian: see the module docstring.

    Parameters
    ----------
    l2 : float, default 1e-4
        L2 penalty strength (``>= 0``).
    """

    name: ClassVar[str] = "poisson"

    def _loss(self, eta: FloatArray, b: FloatArray) -> FloatArray:
        out: FloatArray = np.exp(eta) - b * eta
        return out

    def _d1_d2(self, eta: FloatArray, b: FloatArray) -> tuple[FloatArray, FloatArray]:
        e = np.exp(eta)
        return e - b, e

    def check_targets(self, b: FloatArray) -> None:
        """Raise ``ValueError`` unless every target is a finite number ``>= 0``."""
        bad = ~(np.isfinite(b) & (b >= 0.0))
        if bad.any():
            raise ValueError(
                f"Poisson regression needs finite targets >= 0; {_first_bad(b, bad)} are not."
            )

    def sample_targets(
        self, eta: FloatArray, scalars: Scalars, rng: np.random.Generator, *, noise: float
    ) -> FloatArray:
        """Poisson(e^eta) counts as floats (``eta`` capped at ``POISSON_ETA_MAX``; no ``noise``)."""
        lam = np.exp(np.minimum(eta, POISSON_ETA_MAX))
        return rng.poisson(lam).astype(np.float64)


class LeastSquares(_GLM):
    """L2-penalised least squares (ridge regression).

    Per-row loss ``l = (eta - b)^2 / 2``, ``l' = eta - b``, ``l'' = 1``.
    Objective, gradient and Hessian: see the module docstring.

    Parameters
    ----------
    l2 : float, default 1e-4
        L2 penalty strength (``>= 0``).
    """

    name: ClassVar[str] = "least-squares"

    def _loss(self, eta: FloatArray, b: FloatArray) -> FloatArray:
        r = eta - b
        out: FloatArray = 0.5 * r * r
        return out

    def _d1_d2(self, eta: FloatArray, b: FloatArray) -> tuple[FloatArray, FloatArray]:
        return eta - b, np.ones_like(eta)

    def sample_targets(
        self, eta: FloatArray, scalars: Scalars, rng: np.random.Generator, *, noise: float
    ) -> FloatArray:
        """``b = eta + noise * N(0, 1)``."""
        return eta + noise * rng.standard_normal(eta.size)
