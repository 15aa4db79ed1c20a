"""More GLM families with the log link: Tweedie (gamma, inverse Gaussian), negative binomial.

Same objective, sample weights, offsets and Gram-form Hessian as :mod:`dsketch.models.glm`;
the per-row loss ``l`` is half the family's unit deviance up to terms free of ``eta``, so
that ``l2`` is scikit-learn's and glum's ``alpha`` (``GammaRegressor(alpha=l2)``,
``TweedieRegressor(power=p, alpha=l2)``, ``glum.GeneralizedLinearRegressor(alpha=l2)``).

With the log link ``mu = e^eta`` and Tweedie power ``p`` (``V(mu) = mu^p``)::

    l   = -y mu^(1-p) / (1-p) + mu^(2-p) / (2-p)      (p not 1, 2)
    l'  = mu^(1-p) (mu - y)
    l'' = mu^(1-p) ((2-p) mu + (p-1) y)

``l''`` is ``>= 0`` for ``1 <= p <= 2`` and ``y >= 0``; for ``p > 2`` (and ``p = 0``) it is
negative where ``y`` is far from ``mu``, and the curvature used is then the expected (Fisher)
information ``(dmu/deta)^2 / V(mu) = mu^(2-p)``: the minimiser is the same, only the
Newton matrix differs (Fisher scoring). Every ``e^(k eta)`` is formed as ``exp(log y + k
eta)`` or as a difference of two exponentials that never subtracts ``inf - inf``, so an
overflow gives a ``+inf`` loss and infinite (never NaN) derivatives, without warnings.

Nothing here imports dask: the engine maps these methods over row blocks.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from scipy.special import expit, xlogy

from dsketch.models.base import FloatArray, Model
from dsketch.models.glm import LeastSquares, LogisticRegression, PoissonRegression, _first_bad, _GLM
from dsketch.errors import InvalidParameterError, InvalidTargetError, UnknownNameError


def _exp_diff(la: FloatArray, lb: FloatArray) -> FloatArray:
    """``e^la - e^lb`` for arrays that may be ``+-inf``-sized, never ``inf - inf``."""
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        big = np.maximum(la, lb)
        # e^big (1 - e^(small - big)) with the sign of the larger term
        mag = np.exp(big) * -np.expm1(-np.abs(la - lb))
        out: FloatArray = np.where(la >= lb, mag, -mag)
        return np.where(la == lb, 0.0, out)


def _log_y(y: FloatArray) -> FloatArray:
    with np.errstate(divide="ignore", invalid="ignore"):
        out: FloatArray = np.log(y)  # -inf at y = 0: e^(log y + ...) = 0
    return out


class _LogLink(_GLM):
    """The log link's mean and its start: ``log(sum s y / sum s e^o)``, the exact
    intercept-only fit without offsets (for every log-link family) and for Poisson with them."""

    canonical: ClassVar[bool] = False  # the log link is canonical for Poisson only

    def dmu_deta(self, eta: FloatArray) -> FloatArray:
        """``e^eta`` (= mu) for the log link."""
        return self.mean(eta)

    fixed_dispersion: ClassVar[bool] = False

    def mean(self, eta: FloatArray) -> FloatArray:
        """``e^eta`` (``+inf`` beyond about 709, without warnings)."""
        with np.errstate(over="ignore"):
            out: FloatArray = np.exp(eta)
        return out

    _start_sums = PoissonRegression._start_sums
    _intercept_start = PoissonRegression._intercept_start

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self._family_params()}

    def _family_params(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self._family_params().items())
        return super().__repr__()[:-1] + extra + ")"


class TweedieRegression(_LogLink):
    """L2-penalised Tweedie regression with the log link (scikit-learn's ``TweedieRegressor(
    power=p, link="log")``, glum's ``family="tweedie (p)"``).

    ``power`` 0 (normal, any real target), 1 (Poisson), ``1 < p < 2`` (compound Poisson-gamma,
    ``y >= 0``), 2 (gamma, ``y > 0``), ``p > 2`` (``y > 0``; 3 is the inverse Gaussian). No
    Tweedie distribution has ``0 < p < 1``; powers below 0 are not supported. Per-row loss
    and derivatives: see the module docstring (``p = 1``: ``e^eta - y eta``; ``p = 2``:
    ``y e^-eta + eta``); for ``p > 2`` and ``p = 0`` the curvature is the Fisher information
    ``mu^(2-p)``, otherwise the true ``l''``. For the identity link with ``p = 0`` use
    ``least-squares`` (:func:`tweedie` does so for ``link="identity"``).

    Parameters
    ----------
    power : float
        The Tweedie power ``p`` (``Var(y) = phi mu^p``).
    l2 : float, default 1e-4
        L2 penalty strength (``>= 0``).
    """

    name: ClassVar[str] = "tweedie"

    def __init__(self, power: float | None = None, l2: float = 1e-4, n_unpenalized: int = 0,
                 l1: float = 0.0) -> None:
        super().__init__(l2=l2, n_unpenalized=n_unpenalized, l1=l1)
        self.power = _check_power(power)

    @property
    def fixed_dispersion(self) -> bool:  # type: ignore[override]
        """Only Poisson (``p = 1``) has its dispersion fixed at 1."""
        return self.power == 1.0

    def _family_params(self) -> dict[str, Any]:
        return {"power": self.power}

    def _loss(self, eta: FloatArray, b: FloatArray) -> FloatArray:
        p = self.power
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            if p == 0.0:
                e = np.exp(eta)
                out: FloatArray = e * (0.5 * e - b)  # (mu - y)^2 / 2 less y^2 / 2
                return out
            if p == 1.0:
                return np.exp(eta) - b * eta
            if p == 2.0:
                return np.exp(_log_y(b) - eta) + eta
            la = _log_y(b) + (1.0 - p) * eta - np.log(abs(p - 1.0))  # y mu^(1-p) / |p-1|
            lb = (2.0 - p) * eta - np.log(abs(2.0 - p))  # mu^(2-p) / |2-p|
            if p < 2.0:
                return np.exp(la) + np.exp(lb)
            return _exp_diff(la, lb)

    def _d1_d2(self, eta: FloatArray, b: FloatArray) -> tuple[FloatArray, FloatArray]:
        p = self.power
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            if p == 0.0:
                e = np.exp(eta)
                return e * (e - b), e * e  # Fisher: mu^2
            ly = _log_y(b)
            a = ly + (1.0 - p) * eta  # log(y mu^(1-p))
            c = (2.0 - p) * eta  # log(mu^(2-p))
            d1 = _exp_diff(c, a)
            if p <= 2.0:  # (2-p) mu^(2-p) + (p-1) y mu^(1-p) >= 0
                d2 = (2.0 - p) * np.exp(c) + (p - 1.0) * np.exp(a)
            else:
                d2 = np.exp(c)  # Fisher information
            return d1, d2

    def _saturated_loss(self, y: FloatArray) -> FloatArray:
        """The loss at ``mu = y``: ``-y^2 / 2`` (p = 0), ``y - y log y`` (1), ``1 + log y`` (2),
        ``-y^(2-p) / ((1-p)(2-p))`` otherwise."""
        p = self.power
        with np.errstate(divide="ignore", invalid="ignore"):
            if p == 0.0:
                return -0.5 * y * y
            if p == 1.0:
                out: FloatArray = y - xlogy(y, y)
                return out
            if p == 2.0:
                return 1.0 + np.log(y)
            return -np.power(y, 2.0 - p) / ((1.0 - p) * (2.0 - p))

    def variance(self, mu: FloatArray) -> FloatArray:
        """``mu^p``."""
        with np.errstate(over="ignore"):
            out: FloatArray = np.power(mu, self.power)
        return out

    def _domain(self) -> tuple[str, Any]:
        p = self.power
        if p == 0.0:
            return "finite targets", lambda y: np.isfinite(y)
        if p < 2.0:
            return "finite targets >= 0", lambda y: np.isfinite(y) & (y >= 0.0)
        return "finite targets > 0", lambda y: np.isfinite(y) & (y > 0.0)

    def _family(self) -> str:
        return f"Tweedie regression with power {self.power:g}"

    def _check_y(self, b: FloatArray) -> None:
        """Raise ``ValueError`` when a target is outside the family's support."""
        what, ok = self._domain()
        bad = ~ok(b)
        if bad.any():
            raise InvalidTargetError(f"{self._family()} needs {what}; {_first_bad(b, bad)} are not.")


def _check_power(power: Any) -> float:
    if power is None:
        raise InvalidParameterError("model 'tweedie' needs its power (--param power=P, model_params={'power': P}): "
                         "0 normal, 1 Poisson, 1 < P < 2 compound Poisson, 2 gamma, 3 inverse Gaussian")
    try:
        p = float(power)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"the Tweedie power must be a number; got {power!r}") from None
    if not np.isfinite(p) or p < 0.0:
        raise InvalidParameterError(
            f"the Tweedie power must be 0 or >= 1 (powers below 0 are not supported); got {power!r}"
        )
    if 0.0 < p < 1.0:
        raise InvalidParameterError(f"no Tweedie distribution has a power between 0 and 1; got {power!r} "
                         "(use 0 for the normal, 1 for Poisson, 1 < p < 2 for compound Poisson)")
    return p


class GammaRegression(TweedieRegression):
    """L2-penalised gamma regression with the log link, targets ``> 0``: Tweedie power 2.

    Per-row loss ``l = y e^-eta + eta`` (half the gamma deviance up to terms in ``y``),
    ``l' = 1 - y e^-eta``, ``l'' = y e^-eta > 0``. scikit-learn's ``GammaRegressor(alpha=l2)``.
    """

    name: ClassVar[str] = "gamma"

    def __init__(self, l2: float = 1e-4, n_unpenalized: int = 0, l1: float = 0.0) -> None:
        super().__init__(power=2.0, l2=l2, n_unpenalized=n_unpenalized, l1=l1)

    def _family_params(self) -> dict[str, Any]:
        return {}

    def _family(self) -> str:
        return "gamma regression"


class InverseGaussianRegression(TweedieRegression):
    """L2-penalised inverse Gaussian regression with the log link, targets ``> 0``: Tweedie
    power 3, ``l = y e^(-2 eta) / 2 - e^-eta``, ``l' = (mu - y) / mu^2``; the curvature is the
    Fisher information ``1 / mu`` (the true ``l'' = (2 y - mu) / mu^3`` can be negative)."""

    name: ClassVar[str] = "inverse-gaussian"

    def __init__(self, l2: float = 1e-4, n_unpenalized: int = 0, l1: float = 0.0) -> None:
        super().__init__(power=3.0, l2=l2, n_unpenalized=n_unpenalized, l1=l1)

    def _family_params(self) -> dict[str, Any]:
        return {}

    def _family(self) -> str:
        return "inverse Gaussian regression"


class NegativeBinomialRegression(_LogLink):
    """L2-penalised negative binomial regression with fixed ``theta`` and the log link,
    targets ``>= 0`` (glum's ``family="negative.binomial"``: ``V(mu) = mu + theta mu^2``).

    Per-row loss (half the deviance up to terms in ``y``), with
    ``sigma = theta mu / (1 + theta mu) = expit(eta + log theta)``::

        l   = -y eta + (y + 1/theta) log(1 + theta e^eta)
        l'  = (mu - y) / (1 + theta mu)            = sigma / theta - y (1 - sigma)
        l'' = mu (1 + theta y) / (1 + theta mu)^2  = sigma (1 - sigma) (1 + theta y) / theta

    ``l'' >= 0`` (the true Hessian is used); nothing overflows for finite ``eta``.

    Parameters
    ----------
    theta : float, default 1.0
        The dispersion parameter (``> 0``).
    l2 : float, default 1e-4
    """

    name: ClassVar[str] = "negative-binomial"
    fixed_dispersion: ClassVar[bool] = True

    def __init__(self, theta: float = 1.0, l2: float = 1e-4, n_unpenalized: int = 0,
                 l1: float = 0.0) -> None:
        super().__init__(l2=l2, n_unpenalized=n_unpenalized, l1=l1)
        try:
            value = float(theta)
        except (TypeError, ValueError):
            raise InvalidParameterError(f"theta must be a finite number > 0; got {theta!r}") from None
        if not (np.isfinite(value) and value > 0.0):
            raise InvalidParameterError(
                f"theta must be a finite number > 0 (no negative binomial has theta <= 0); got {theta!r}"
            )
        self.theta = value

    def _family_params(self) -> dict[str, Any]:
        return {"theta": self.theta}

    def _loss(self, eta: FloatArray, b: FloatArray) -> FloatArray:
        t = self.theta
        out: FloatArray = (b + 1.0 / t) * np.logaddexp(0.0, eta + np.log(t)) - b * eta
        return out

    def _d1_d2(self, eta: FloatArray, b: FloatArray) -> tuple[FloatArray, FloatArray]:
        t = self.theta
        s = expit(eta + np.log(t))
        return s / t - b * (1.0 - s), s * (1.0 - s) * (1.0 + t * b) / t

    def _saturated_loss(self, y: FloatArray) -> FloatArray:
        """The loss at ``mu = y``: ``(y + 1/theta) log(1 + theta y) - y log y``."""
        t = self.theta
        out: FloatArray = (y + 1.0 / t) * np.log1p(t * y) - xlogy(y, y)
        return out

    def variance(self, mu: FloatArray) -> FloatArray:
        """``mu + theta mu^2``."""
        with np.errstate(over="ignore"):
            return mu + self.theta * mu * mu

    def _check_y(self, b: FloatArray) -> None:
        """Raise ``ValueError`` unless every target is a finite number ``>= 0``."""
        bad = ~(np.isfinite(b) & (b >= 0.0))
        if bad.any():
            raise InvalidTargetError(
                f"negative binomial regression needs finite targets >= 0; {_first_bad(b, bad)} are not."
            )


def tweedie(power: float | None = None, link: str = "auto", l2: float | None = None, l1: float = 0.0) -> Model:
    """The registry's ``tweedie``: :class:`TweedieRegression` with the log link, or
    ``least-squares`` for ``power=0`` with the identity link (``link="auto"`` is identity
    for power 0 and log otherwise, as scikit-learn's ``TweedieRegressor``). ``l2=None``:
    the chosen model's default (0 for least squares, 1e-4 otherwise)."""
    p = _check_power(power)
    if link not in ("auto", "identity", "log"):
        raise InvalidParameterError(f"the Tweedie link must be 'auto', 'identity' or 'log'; got {link!r}")
    if link == "identity" or (link == "auto" and p == 0.0):
        if p != 0.0:
            raise InvalidParameterError(
                f"the identity link is only supported with power 0 (normal); got power={power!r}"
            )
        return LeastSquares(l1=l1, **_l2(l2))
    return TweedieRegression(power=p, l1=l1, **_l2(l2))


#: glum's family names, with the links each one supports (the first is ``link="auto"``).
FAMILIES: dict[str, tuple[str, ...]] = {
    "normal": ("identity", "log"),
    "gaussian": ("identity", "log"),
    "binomial": ("logit",),
    "poisson": ("log",),
    "gamma": ("log",),
    "inverse.gaussian": ("log",),
    "tweedie": ("log", "identity"),
    "negative.binomial": ("log",),
}


def _l2(l2: float | None) -> dict[str, float]:
    """``l2`` as a keyword when given (``None``: the model's own default)."""
    return {} if l2 is None else {"l2": l2}


def glm(family: str = "normal", link: str = "auto", l2: float | None = None, power: float | None = None,
        theta: float | None = None, l1: float = 0.0) -> Model:
    """The registry's ``glm``: a family and link by glum's names, mapped onto the models
    (``normal``/``gaussian`` with identity: ``least-squares``; ``binomial``: ``logistic``;
    ``poisson``; ``gamma``; ``inverse.gaussian``; ``tweedie`` with ``power`` (default 1.5, as
    glum; its ``auto`` link is identity for power 0); ``negative.binomial`` with ``theta``
    (default 1.0)). ``l2=None``: the model's default (0 for least squares, 1e-4 otherwise);
    ``l1``: the L1 strength (:class:`~dsketch.models.glm._GLM`)."""
    if family not in FAMILIES:
        raise UnknownNameError(f"unknown GLM family {family!r}; valid: {', '.join(FAMILIES)}")
    if power is not None and family != "tweedie":
        raise InvalidParameterError(f"power= is for family 'tweedie'; got family={family!r}")
    if theta is not None and family != "negative.binomial":
        raise InvalidParameterError(f"theta= is for family 'negative.binomial'; got family={family!r}")
    if family == "tweedie":
        return tweedie(power=1.5 if power is None else power, link=link, l2=l2, l1=l1)
    links = FAMILIES[family]
    chosen = links[0] if link == "auto" else link
    if chosen not in links:
        raise InvalidParameterError(f"family {family!r} supports the link(s) {', '.join(links)}; got link={link!r}")
    if family in ("normal", "gaussian"):
        return (LeastSquares(l1=l1, **_l2(l2)) if chosen == "identity"
                else TweedieRegression(power=0.0, l1=l1, **_l2(l2)))
    if family == "negative.binomial":
        return NegativeBinomialRegression(theta=1.0 if theta is None else theta, l1=l1, **_l2(l2))
    cls = {"binomial": LogisticRegression, "poisson": PoissonRegression, "gamma": GammaRegression,
           "inverse.gaussian": InverseGaussianRegression}[family]
    return cls(l1=l1, **_l2(l2))


__all__ = ["FAMILIES", "GammaRegression", "InverseGaussianRegression", "NegativeBinomialRegression",
           "TweedieRegression", "glm", "tweedie"]
