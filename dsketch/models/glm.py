"""Generalised linear models with an L2 penalty, in scikit-learn's weighted-mean form.

Objective, with ``eta = A x + o`` (``o`` the per-row offsets, zero by default), sample
weights ``s`` (one by default) and ``S = sum_i s_i`` (a global scalar)::

    L(x) = (1/S) sum_i s_i l(eta_i, b_i) + 1/2 * l2 * ||x||^2

Gradient ``A^T (s l'(eta) / S) + l2 x``; Hessian in Gram form, purely diagonal (rank 0)::

    hess L(x) = A^T diag(s l''(eta) / S) A + l2 I

The derivatives ``l'``, ``l''`` are taken in ``eta``. A sample weight of 2 is the same
objective as the row written twice; weights only need to be ``>= 0`` (a zero weight drops
the row) with a positive sum. Sample weights and offsets are the store's row-aligned members
``sample_weight`` and ``offset``; the softmax models' regularisation weights ``w`` are not
used here and a store holding them is refused (:meth:`Model.check_unused`).

The scaling matches scikit-learn: ``LogisticRegression(C=1 / (l2 S), fit_intercept=False)``,
``PoissonRegressor(alpha=l2, fit_intercept=False)`` and ``Ridge(alpha=l2 S,
fit_intercept=False)`` have the same minimiser for the same ``sample_weight``.
"""

from __future__ import annotations

import copy
from abc import abstractmethod
from typing import Any, ClassVar

import numpy as np
from scipy.special import expit, xlogy

from dsketch.errors import InvalidParameterError, InvalidTargetError, ModelDomainError, StoreFormatError
from dsketch.models.base import ROW_DATA_MEMBERS, FloatArray, Model, RowTerms, Scalars, Stats

#: Largest ``eta`` used as a Poisson mean when simulating (``e^40 ~ 2.4e17`` counts).
POISSON_ETA_MAX = 40.0


def _first_bad(b: FloatArray, bad: np.ndarray, what: str = "targets") -> str:
    first = int(np.argmax(bad))
    return f"{int(bad.sum())} of {b.size} {what} (first at row {first}: {float(b[first])!r})"


def split_rows(b: FloatArray) -> tuple[FloatArray, FloatArray | None, FloatArray | None]:
    """``(targets, sample weights or None, offsets or None)`` of a GLM's per-row data.

    Without sample weights and offsets the per-row data is the target vector itself; with
    either it is an ``(n, 3)`` array of targets, weights (ones when absent) and offsets
    (zeros when absent), as :meth:`_GLM.row_data` builds it.
    """
    if b.ndim == 1:
        return b, None, None
    return b[:, 0], b[:, 1], b[:, 2]


def check_sample_weight(s: FloatArray, r0: int = 0) -> None:
    """Raise ``ModelDomainError`` unless every sample weight is finite and ``>= 0``."""
    bad = ~(np.isfinite(s) & (s >= 0.0))
    if bad.any():
        first = int(np.argmax(bad))
        raise ModelDomainError(
            f"sample weights must be finite and >= 0; {int(bad.sum())} of {s.size} are not "
            f"(first at row {r0 + first}: {float(s[first])!r})"
        )


def _strength(name: str, value: Any) -> float:
    """A penalty strength: a finite number >= 0."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"{name} must be a finite number >= 0; got {value!r}") from None
    if not (np.isfinite(out) and out >= 0.0):
        raise InvalidParameterError(f"{name} must be a finite number >= 0; got {value!r}")
    return out


class _GLM(Model):
    """Shared machinery: the weighted row count as the only statistic, sample weights and
    offsets, the L2 penalty, the Gram terms."""

    rank: ClassVar[int] = 0
    uses_w: ClassVar[bool] = False
    fixed_scalars: ClassVar[bool] = True  # the scalars are the (weighted) row count alone
    optional_members: ClassVar[tuple[str, ...]] = ROW_DATA_MEMBERS

    def __init__(self, l2: float = 1e-4, n_unpenalized: int = 0, l1: float = 0.0) -> None:
        value = _strength("l2", l2)
        if isinstance(n_unpenalized, bool) or int(n_unpenalized) != n_unpenalized or n_unpenalized < 0:
            raise InvalidParameterError(f"n_unpenalized must be an integer >= 0; got {n_unpenalized!r}")
        self.l2 = value
        #: L1 strength: the objective gains ``l1 * ||x_p||_1`` (solved by proximal Newton).
        self.l1 = _strength("l1", l1)
        #: The last ``n_unpenalized`` coefficients (an intercept column) carry no penalty.
        self.n_unpenalized = int(n_unpenalized)
        #: Whether the last coefficient is the intercept of :meth:`with_intercept`.
        self.intercept = False

    def __repr__(self) -> str:
        extra = f", n_unpenalized={self.n_unpenalized}" if self.n_unpenalized else ""
        extra += ", intercept=True" if self.intercept else ""
        extra = (f", l1={self.l1!r}" if self.l1 else "") + extra
        return f"{type(self).__name__}(l2={self.l2!r}{extra})"

    def with_intercept(self) -> Model:
        """A copy with one more unpenalised coefficient, last: the intercept (the engine
        appends the column of ones to every block); its start is the intercept-only fit."""
        if self.intercept:
            return self
        out = copy.copy(self)
        out.n_unpenalized = self.n_unpenalized + 1
        out.intercept = True
        return out

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.name, "l2": self.l2}
        if self.l1:
            out["l1"] = self.l1
        if self.n_unpenalized:
            out["n_unpenalized"] = self.n_unpenalized
        if self.intercept:
            out["fit_intercept"] = True
        for m in self.row_members:
            out[m] = True
        return out

    @abstractmethod
    def _loss(self, eta: FloatArray, b: FloatArray) -> FloatArray:
        """Per-row loss ``l(eta_i, b_i)``."""

    @abstractmethod
    def _d1_d2(self, eta: FloatArray, b: FloatArray) -> tuple[FloatArray, FloatArray]:
        """First and second derivatives of the per-row loss in ``eta``."""

    #: Whether the family's dispersion is fixed at 1 (binomial, Poisson); otherwise it is
    #: estimated (Pearson's chi-squared over the residual degrees of freedom) for inference.
    fixed_dispersion: ClassVar[bool] = True

    @abstractmethod
    def mean(self, eta: FloatArray) -> FloatArray:
        """The mean ``mu = g^-1(eta)`` of the family for the linear predictor ``eta`` (offset
        included): a probability for logistic, a rate for Poisson, ``eta`` for least squares."""

    @abstractmethod
    def variance(self, mu: FloatArray) -> FloatArray:
        """The family's variance function ``V(mu)`` (``Var(y) = dispersion * V(mu) / s``)."""

    #: Whether the link is the family's canonical one: the expected (Fisher) information
    #: then equals the observed one, ``l''``; otherwise the model-based covariance uses the
    #: expected information ``s (dmu/deta)^2 / V(mu)`` (:meth:`fisher_rows`), as statsmodels and R do.
    canonical: ClassVar[bool] = True

    def fisher_rows(self, eta: FloatArray, b: FloatArray) -> FloatArray:
        """Per-row expected-information weights ``s (dmu/deta)^2 / V(mu)`` (offset added here);
        for a canonical link the curvature weights of :meth:`inference_rows` themselves."""
        y, s, o = split_rows(b)
        e = eta if o is None else eta + o
        with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
            if self.canonical:
                w = self._d1_d2(e, y)[1]
            else:
                mu = self.mean(e)
                v = self.variance(mu)
                g = self.dmu_deta(e)
                w = np.where(v > 0.0, g * g / np.where(v > 0.0, v, 1.0), 0.0)
            return w if s is None else np.where(s > 0.0, s * w, 0.0)

    def dmu_deta(self, eta: FloatArray) -> FloatArray:
        """``dmu/deta``, the inverse link's derivative (needed for non-canonical links)."""
        # internal: only called for non-canonical links, which override it
        raise TypeError(f"model {self.name!r} has a canonical link: its Fisher information is l''")

    def inference_rows(
        self, eta: FloatArray, b: FloatArray
    ) -> tuple[FloatArray, FloatArray, FloatArray, np.ndarray]:
        """Per-row pieces of the covariance at ``eta = A x`` (offset not yet added).

        Returns ``(s l', s l'', s (y - mu)^2 / V(mu), s > 0)``: the score and curvature
        weights of the sum-form objective ``sum_i s_i l_i`` (no division by ``S``), the
        rows' Pearson terms (zero where ``V(mu) = 0``) and which rows count (a zero sample
        weight drops its row). ``l''`` is the curvature the fit uses (the observed one, or
        the Fisher information where the model says so).
        """
        y, s, o = split_rows(b)
        e = eta if o is None else eta + o
        with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
            d1, d2 = self._d1_d2(e, y)
            mu = self.mean(e)
            v = self.variance(mu)
            pearson = np.where(v > 0.0, (y - mu) ** 2 / np.where(v > 0.0, v, 1.0), 0.0)
            if s is None:
                return d1, d2, pearson, np.ones(y.shape, dtype=bool)
            keep = s > 0.0
            return (np.where(keep, s * d1, 0.0), np.where(keep, s * d2, 0.0),
                    np.where(keep, s * pearson, 0.0), keep)

    # -- binding to a store: sample weights and offsets ---------------------------------
    def bind(self, spec: Any) -> Model:
        """Check the store; return a model that reads its ``sample_weight`` and ``offset``
        members when it has them (a copy; ``self`` is unchanged)."""
        super().bind(spec)
        members = tuple(m for m in ROW_DATA_MEMBERS if m in spec.members)
        if members == self.row_members:
            return self
        bound = copy.copy(self)
        bound.row_members = members  # type: ignore[misc]
        return bound

    def row_data(self, block: Any) -> Any:
        """The targets, or with sample weights / offsets the ``(n, 3)`` stack of
        :func:`split_rows`. Raises ``ModelDomainError`` on a negative sample weight."""
        if not self.row_members:
            return block.b
        n = block.b.shape[0]
        s = block.extra.get("sample_weight")
        if s is not None:
            check_sample_weight(np.asarray(s, dtype=np.float64))
        o = block.extra.get("offset")
        if o is not None and np.ndim(o) != 1:
            raise StoreFormatError(
                f"model {self.name!r} takes offsets of shape (n,), one a row; the store's 'offset' has shape "
                f"{np.shape(o)} in a block of {n} rows (offsets of shape "
                "(n, K), one a class, are the multinomial model's): fit 'multinomial' or rewrite the store with a "
                "vector of offsets")
        out = np.empty((n, 3))
        out[:, 0] = block.b
        out[:, 1] = 1.0 if s is None else s
        out[:, 2] = 0.0 if o is None else o
        return out

    # -- global statistics ----------------------------------------------------------
    def stats(self, eta: FloatArray, b: FloatArray, w: FloatArray | None) -> Stats:
        """``{"n": rows, "s": sum of sample weights}`` of a block."""
        s = split_rows(b)[1]
        return {"n": int(eta.size), "s": float(eta.size) if s is None else float(np.sum(s))}

    def merge_stats(self, left: Stats, right: Stats) -> Stats:
        return {"n": left["n"] + right["n"], "s": left["s"] + right["s"]}

    def scalars(self, stats: Stats) -> Scalars:
        """``{"n": total sample weight S}`` (the row count without weights); raises
        :class:`ModelDomainError` when there are no rows or the weights sum to zero."""
        if stats["n"] == 0:
            raise ModelDomainError(f"model {self.name!r} needs at least one row; got n=0")
        if not stats["s"] > 0.0:
            raise ModelDomainError(
                f"model {self.name!r}: the sample weights sum to {stats['s']!r}; at least one row "
                "needs a positive weight"
            )
        return {"n": float(stats["s"])}

    # -- per-row terms -------------------------------------------------------------
    def loss_terms(
        self, eta: FloatArray, b: FloatArray, w: FloatArray | None, scalars: Scalars
    ) -> float:
        """``(1/S) sum_block s_i l(eta_i + o_i, b_i)`` (may be ``+inf`` on overflow, without
        warnings)."""
        y, s, o = split_rows(b)
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            vals = self._loss(eta if o is None else eta + o, y)
            if s is not None:
                # a zero weight drops its row, even where the loss overflowed
                vals = np.where(s > 0.0, s * vals, 0.0)
            return float(np.sum(vals)) / scalars["n"]

    def row_terms(
        self, eta: FloatArray, b: FloatArray, w: FloatArray | None, scalars: Scalars
    ) -> RowTerms:
        """``r = s l'(eta + o) / S`` and ``D = s l''(eta + o) / S``."""
        y, s, o = split_rows(b)
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            d1, d2 = self._d1_d2(eta if o is None else eta + o, y)
            if s is not None:
                d1 = np.where(s > 0.0, s * d1, 0.0)
                d2 = np.where(s > 0.0, s * d2, 0.0)
        n = scalars["n"]
        return RowTerms(grad_weight=d1 / n, diag=d2 / n, lowrank=None)

    # -- held-out scoring: the unit deviance -------------------------------------------
    #: Whether :meth:`unit_deviance` is defined (every single-output family).
    has_deviance: ClassVar[bool] = True

    def _saturated_loss(self, y: FloatArray) -> FloatArray:
        """The per-row loss at the saturated mean ``mu = y``."""
        raise NotImplementedError(f"model {self.name!r} has no unit deviance")

    def unit_deviance(self, eta: FloatArray, y: FloatArray) -> FloatArray:
        """The family's unit deviance ``d(y, mu)`` at ``mu = g^-1(eta)`` (offset included in
        ``eta``): twice the loss above its value at ``mu = y``, the loss being half the
        deviance up to terms free of ``eta``."""
        with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
            out: FloatArray = 2.0 * (self._loss(eta, y) - self._saturated_loss(y))
        return out

    def deviance_sums(self, eta: FloatArray, b: FloatArray) -> tuple[FloatArray, float]:
        """``(sum_i s_i d(y_i, mu_ij) for each column j of eta, sum_i s_i)`` over a block:
        ``eta`` is ``A X^T`` (``n x m``, offset not yet added) for ``m`` coefficient vectors;
        a row of zero weight counts for nothing, even where its deviance overflowed."""
        y, s, o = split_rows(b)
        e = eta if o is None else eta + o[:, None]
        dev = self.unit_deviance(e, y[:, None])
        if s is None:
            return dev.sum(axis=0), float(y.size)
        return np.where(s[:, None] > 0.0, s[:, None] * dev, 0.0).sum(axis=0), float(np.sum(s))

    # -- starting point: the intercept-only fit -----------------------------------------
    @property
    def has_warm_start(self) -> bool:
        """Only a model with an intercept starts elsewhere than at zero."""
        return self.intercept

    def init_terms(self, A: Any, b: FloatArray, w: FloatArray | None) -> dict[str, Any] | None:
        """With an intercept: the block's weighted sums for :meth:`_intercept_start`."""
        if not self.intercept:
            return None
        y, s, o = split_rows(b)
        s = np.ones_like(y) if s is None else s
        o = np.zeros_like(y) if o is None else o
        return self._start_sums(y, s, o)

    def _start_sums(self, y: FloatArray, s: FloatArray, o: FloatArray) -> dict[str, Any]:
        """Sums over a block from which :meth:`_intercept_start` computes the start."""
        return {"s": float(np.sum(s)), "sy": float(np.sum(s * y)), "so": float(np.sum(s * o))}

    def _intercept_start(self, total: dict[str, Any]) -> float:
        """The intercept at the start: the link of the weighted mean target (the exact
        intercept-only fit for canonical links without offsets)."""
        return (total["sy"] - total["so"]) / total["s"]

    def init_coef(self, total: dict[str, Any], n_features: int) -> FloatArray:
        x = np.zeros(n_features)
        if self.intercept and total is not None and total["s"] > 0.0:
            start = self._intercept_start(total)
            if np.isfinite(start):
                x[-1] = start
        return x

    # -- coefficient-space penalty ---------------------------------------------------
    def penalty(self, x: FloatArray) -> tuple[float, FloatArray, FloatArray]:
        """``(1/2 l2 ||x_p||^2, l2 x_p, l2 * 1_p)`` over the penalised coefficients ``x_p``
        (all but the last ``n_unpenalized``)."""
        mask = np.full(x.shape, self.l2)
        if self.n_unpenalized:
            mask[x.size - self.n_unpenalized :] = 0.0
        xp = mask * x
        return 0.5 * float(x @ xp), xp, mask

    def l1_weights(self, n_features: int) -> FloatArray:
        """The L1 strength of each coefficient: ``l1`` on the penalised ones, 0 on the last
        ``n_unpenalized`` (the intercept)."""
        w = np.full(n_features, self.l1)
        if self.n_unpenalized:
            w[n_features - self.n_unpenalized :] = 0.0
        return w

    def nonsmooth(self, x: FloatArray) -> float:
        """``l1 * ||x_p||_1``, the part of the objective without a gradient."""
        return float(self.l1_weights(x.size) @ np.abs(x)) if self.l1 else 0.0

    def check_targets(self, b: FloatArray) -> None:
        """Raise ``ValueError`` when a target is outside the family's domain."""
        self._check_y(split_rows(b)[0])

    def _check_y(self, y: FloatArray) -> None:
        """The family's target check on the plain target vector (default: any value)."""


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

    @property  # type: ignore[misc]
    def may_diverge(self) -> bool:  # type: ignore[override]
        """Separable classes have no optimum when a coefficient is unpenalised (all of them at
        ``l2 = 0``; an intercept when every label is the same)."""
        return self.l2 == 0.0 or self.n_unpenalized > 0

    def _loss(self, eta: FloatArray, b: FloatArray) -> FloatArray:
        out: FloatArray = np.logaddexp(0.0, eta) - b * eta
        return out

    def _d1_d2(self, eta: FloatArray, b: FloatArray) -> tuple[FloatArray, FloatArray]:
        s = expit(eta)
        return s - b, s * (1.0 - s)

    def mean(self, eta: FloatArray) -> FloatArray:
        """``sigma(eta)``, the probability of label 1."""
        out: FloatArray = expit(eta)
        return out

    def variance(self, mu: FloatArray) -> FloatArray:
        """``mu (1 - mu)``."""
        return mu * (1.0 - mu)

    def _intercept_start(self, total: dict[str, Any]) -> float:
        """``logit`` of the weighted mean label (clipped away from 0 and 1), less the mean offset."""
        p = min(max(total["sy"] / total["s"], 1e-10), 1.0 - 1e-10)
        return float(np.log(p / (1.0 - p))) - total["so"] / total["s"]

    def _saturated_loss(self, y: FloatArray) -> FloatArray:
        """``-(y log y + (1 - y) log(1 - y))``: 0 for labels 0 and 1."""
        out: FloatArray = -(xlogy(y, y) + xlogy(1.0 - y, 1.0 - y))
        return out

    def _check_y(self, b: FloatArray) -> None:
        """Raise ``ValueError`` unless every target is 0 or 1."""
        bad = (b != 0.0) & (b != 1.0)
        if bad.any():
            raise InvalidTargetError(
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

    def mean(self, eta: FloatArray) -> FloatArray:
        """``e^eta`` (``+inf`` beyond about 709, without warnings)."""
        with np.errstate(over="ignore"):
            out: FloatArray = np.exp(eta)
        return out

    def variance(self, mu: FloatArray) -> FloatArray:
        """``mu``."""
        return mu

    def _start_sums(self, y: FloatArray, s: FloatArray, o: FloatArray) -> dict[str, Any]:
        with np.errstate(over="ignore"):
            seo = float(np.sum(s * np.exp(o)))
        return {"s": float(np.sum(s)), "sy": float(np.sum(s * y)), "seo": seo}

    def _intercept_start(self, total: dict[str, Any]) -> float:
        """``log(sum s y / sum s e^o)``: the intercept-only Poisson fit (exact with offsets
        too), so targets of any magnitude start at their scale."""
        if not (total["sy"] > 0.0 and 0.0 < total["seo"] < np.inf):
            return 0.0
        return float(np.log(total["sy"]) - np.log(total["seo"]))

    def _saturated_loss(self, y: FloatArray) -> FloatArray:
        """``y - y log y`` (0 at ``y = 0``)."""
        out: FloatArray = y - xlogy(y, y)
        return out

    def _check_y(self, b: FloatArray) -> None:
        """Raise ``ValueError`` unless every target is a finite number ``>= 0``."""
        bad = ~(np.isfinite(b) & (b >= 0.0))
        if bad.any():
            raise InvalidTargetError(
                f"Poisson regression needs finite targets >= 0; {_first_bad(b, bad)} are not."
            )

    def sample_targets(
        self, eta: FloatArray, scalars: Scalars, rng: np.random.Generator, *, noise: float
    ) -> FloatArray:
        """Poisson(e^eta) counts as floats (``eta`` capped at ``POISSON_ETA_MAX``; no ``noise``)."""
        lam = np.exp(np.minimum(eta, POISSON_ETA_MAX))
        return rng.poisson(lam).astype(np.float64)


class LeastSquares(_GLM):
    """Least squares, unpenalised by default; ridge regression with ``l2 > 0``.

    Per-row loss ``l = (eta - b)^2 / 2``, ``l' = eta - b``, ``l'' = 1``.
    Objective, gradient and Hessian: see the module docstring.

    Parameters
    ----------
    l2 : float, default 0.0
        L2 penalty strength (``>= 0``). Unlike the other GLMs (default ``1e-4``), least
        squares is unpenalised by default, as scikit-learn's ``LinearRegression``: the
        default fit is ordinary least squares (``A`` needs full column rank for a unique
        minimiser; pass ``l2`` for ridge).
    """

    name: ClassVar[str] = "least-squares"

    def __init__(self, l2: float = 0.0, n_unpenalized: int = 0, l1: float = 0.0) -> None:
        super().__init__(l2=l2, n_unpenalized=n_unpenalized, l1=l1)

    def _loss(self, eta: FloatArray, b: FloatArray) -> FloatArray:
        r = eta - b
        out: FloatArray = 0.5 * r * r
        return out

    def _d1_d2(self, eta: FloatArray, b: FloatArray) -> tuple[FloatArray, FloatArray]:
        return eta - b, np.ones_like(eta)

    fixed_dispersion: ClassVar[bool] = False

    def _saturated_loss(self, y: FloatArray) -> FloatArray:
        return np.zeros_like(y)

    def mean(self, eta: FloatArray) -> FloatArray:
        """``eta`` (identity link)."""
        return eta

    def variance(self, mu: FloatArray) -> FloatArray:
        """``1``."""
        return np.ones_like(mu)

    def sample_targets(
        self, eta: FloatArray, scalars: Scalars, rng: np.random.Generator, *, noise: float
    ) -> FloatArray:
        """``b = eta + noise * N(0, 1)``."""
        return eta + noise * rng.standard_normal(eta.size)
