"""Generalised linear models with an L2 penalty, in scikit-learn's mean form.

``L(x) = (1/n) sum_i l(eta_i, b_i) + 1/2 * l2 * ||x||^2`` with ``eta = A x``. The gradient
is ``A^T l'(eta)/n + l2 x`` and the Hessian ``A^T diag(l''(eta)/n) A + l2 I`` (purely
diagonal in the Gram form). ``n`` is the total number of rows, a global scalar.
The row weights ``w`` of a store are not used by these models.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import numpy as np
from scipy.special import expit

from dsketch.models.base import FloatArray, Model, RowTerms, Scalars, Stats


class _GLM(Model):
    rank: ClassVar[int] = 0
    uses_w: ClassVar[bool] = False

    def __init__(self, l2: float = 1e-4) -> None:
        l2 = float(l2)
        if not (np.isfinite(l2) and l2 >= 0.0):
            raise ValueError(f"l2 must be a finite number >= 0; got {l2!r}")
        self.l2 = l2

    def describe(self) -> dict[str, object]:
        return {"model": self.name, "l2": self.l2}

    # per-row loss and its first two derivatives in eta
    @abstractmethod
    def _loss(self, eta: FloatArray, b: FloatArray) -> FloatArray:
        """Per-row loss ``l(eta_i, b_i)``."""

    @abstractmethod
    def _d1_d2(self, eta: FloatArray, b: FloatArray) -> tuple[FloatArray, FloatArray]:
        """First and second derivatives of the per-row loss in ``eta``."""

    def stats(self, eta: FloatArray, b: FloatArray, w: FloatArray | None) -> Stats:
        return {"n": int(eta.size)}

    def merge_stats(self, left: Stats, right: Stats) -> Stats:
        return {"n": left["n"] + right["n"]}

    def scalars(self, stats: Stats) -> Scalars:
        return {"n": float(stats["n"])}

    def loss_terms(self, eta: FloatArray, b: FloatArray, w: FloatArray | None, scalars: Scalars) -> float:
        with np.errstate(over="ignore"):
            return float(np.sum(self._loss(eta, b))) / scalars["n"]

    def row_terms(self, eta: FloatArray, b: FloatArray, w: FloatArray | None, scalars: Scalars) -> RowTerms:
        with np.errstate(over="ignore"):
            d1, d2 = self._d1_d2(eta, b)
        n = scalars["n"]
        return RowTerms(grad_weight=d1 / n, diag=d2 / n, lowrank=None)

    def penalty(self, x: FloatArray) -> tuple[float, FloatArray, FloatArray]:
        return 0.5 * self.l2 * float(x @ x), self.l2 * x, np.full(x.shape, self.l2)

    def default_w(self, n_samples: int, regime: str) -> float:  # pragma: no cover - unused
        raise ValueError(f"model {self.name!r} does not use row weights w")


class LogisticRegression(_GLM):
    """L2 logistic regression, targets in {0, 1}: ``l = log(1 + e^eta) - b eta``.

    ``l' = sigma(eta) - b``, ``l'' = sigma(eta)(1 - sigma(eta))``; computed with
    ``logaddexp`` and ``expit`` so that no ``|eta|`` overflows.
    """

    name: ClassVar[str] = "logistic"

    def _loss(self, eta: FloatArray, b: FloatArray) -> FloatArray:
        return np.logaddexp(0.0, eta) - b * eta

    def _d1_d2(self, eta: FloatArray, b: FloatArray) -> tuple[FloatArray, FloatArray]:
        s = expit(eta)
        return s - b, s * (1.0 - s)

    def check_targets(self, b: FloatArray) -> None:
        bad = (b != 0.0) & (b != 1.0)
        if bad.any():
            raise ValueError(
                f"logistic regression needs targets in {{0, 1}}; {int(bad.sum())} of {b.size} are not "
                f"(first: {b[bad][0]!r}) — recode the labels as 0/1"
            )

    def sample_targets(self, eta: FloatArray, scalars: Scalars, rng: np.random.Generator, *, noise: float) -> FloatArray:
        """Bernoulli(sigma(eta)) labels (``noise`` is unused: the labels are random already)."""
        return (rng.random(eta.size) < expit(eta)).astype(np.float64)


class PoissonRegression(_GLM):
    """L2 Poisson regression with log link, targets >= 0: ``l = e^eta - b eta``."""

    name: ClassVar[str] = "poisson"

    def _loss(self, eta: FloatArray, b: FloatArray) -> FloatArray:
        return np.exp(eta) - b * eta

    def _d1_d2(self, eta: FloatArray, b: FloatArray) -> tuple[FloatArray, FloatArray]:
        e = np.exp(eta)
        return e - b, e

    def check_targets(self, b: FloatArray) -> None:
        bad = b < 0.0
        if bad.any():
            raise ValueError(
                f"Poisson regression needs targets >= 0; {int(bad.sum())} of {b.size} are negative "
                f"(first: {b[bad][0]!r})"
            )

    def sample_targets(self, eta: FloatArray, scalars: Scalars, rng: np.random.Generator, *, noise: float) -> FloatArray:
        """Poisson(e^eta) counts."""
        return rng.poisson(np.exp(np.minimum(eta, 50.0))).astype(np.float64)


class LeastSquares(_GLM):
    """L2-penalised least squares: ``l = (eta - b)^2 / 2``."""

    name: ClassVar[str] = "least-squares"

    def _loss(self, eta: FloatArray, b: FloatArray) -> FloatArray:
        r = eta - b
        return 0.5 * r * r

    def _d1_d2(self, eta: FloatArray, b: FloatArray) -> tuple[FloatArray, FloatArray]:
        return eta - b, np.ones_like(eta)

    def sample_targets(self, eta: FloatArray, scalars: Scalars, rng: np.random.Generator, *, noise: float) -> FloatArray:
        """``b = eta + noise * N(0, 1)``."""
        return eta + noise * rng.standard_normal(eta.size)
