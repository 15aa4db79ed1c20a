"""scikit-learn / glum style estimators for the other GLM families: gamma, Tweedie and a
generic family-and-link regressor (glum's names).

Each minimises ``(1 / sum s) sum_i s_i d(y_i, mu_i) / 2 + alpha (l1_ratio ||w||_1 +
(1 - l1_ratio) ||w||^2 / 2)`` with ``d`` the family's unit deviance and the intercept
unpenalised: glum's ``GeneralizedLinearRegressor(alpha, l1_ratio)`` objective, and with the
default ``l1_ratio=0`` that of scikit-learn's ``GammaRegressor`` / ``TweedieRegressor``. An
L1 share (``l1_ratio > 0``) fits by proximal Newton (``solver`` "auto" or "prox-newton"). ``predict`` returns the mean ``mu``; ``score`` is D², the fraction of
deviance explained.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from scipy.special import xlogy

from dsketch.estimators.glm import _EngineRegressor, check_alpha, elastic_net
from dsketch.models import get_model
from dsketch.models.base import Model
from dsketch.models.glm import LeastSquares, LogisticRegression, PoissonRegression
from dsketch.models.glm_families import NegativeBinomialRegression, TweedieRegression

_COMMON = ("fit_intercept", "tol", "max_iter", "solver", "sketch", "sketch_size", "random_state", "client",
           "scheduler", "block_rows")


def _unit_deviance(model: Model, y: np.ndarray, mu: np.ndarray) -> np.ndarray | None:
    """The family's unit deviance, or None for the Tweedie families (scikit-learn's own)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if isinstance(model, NegativeBinomialRegression):
            t = model.theta
            return 2.0 * (xlogy(y, y / mu) - (y + 1.0 / t) * np.log((1.0 + t * y) / (1.0 + t * mu)))
        if isinstance(model, LogisticRegression):
            return 2.0 * (xlogy(y, y / mu) + xlogy(1.0 - y, (1.0 - y) / (1.0 - mu)))
    return None


def _tweedie_power(model: Model) -> float | None:
    if isinstance(model, TweedieRegression):
        return model.power
    if isinstance(model, PoissonRegression):
        return 1.0
    if isinstance(model, LeastSquares):
        return 0.0
    return None


def d2_score(model: Model, y: Any, mu: Any, sample_weight: Any = None) -> float:
    """D² of predicted means ``mu`` for targets ``y``: ``1 - dev(y, mu) / dev(y, mean y)``
    (the weighted deviances; scikit-learn's ``d2_tweedie_score`` for the Tweedie families)."""
    y = np.asarray(y, dtype=np.float64)
    mu = np.asarray(mu, dtype=np.float64)
    power = _tweedie_power(model)
    if power is not None:
        from sklearn.metrics import d2_tweedie_score

        return float(d2_tweedie_score(y, mu, sample_weight=sample_weight, power=power))
    s = np.ones_like(y) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    null = np.full_like(y, np.average(y, weights=s))
    dev = _unit_deviance(model, y, mu)
    dev0 = _unit_deviance(model, y, null)
    assert dev is not None and dev0 is not None
    return float(1.0 - np.sum(s * dev) / np.sum(s * dev0))


class _FamilyRegressor(_EngineRegressor):
    """Shared: the alpha penalty, the family's parameters, targets checked by the model, the
    mean as prediction and D² as score."""

    def _l2(self, total_weight: float) -> float:
        return check_alpha(self.alpha)

    def _family_params(self) -> dict[str, Any]:
        return {}

    def _model_params(self, total_weight: float) -> dict[str, Any]:
        """glum's penalty ``alpha (l1_ratio ||w||_1 + (1 - l1_ratio) ||w||^2 / 2)`` as
        ``l1`` and ``l2``, and the family's parameters."""
        return {**elastic_net(self._l2(total_weight), self.l1_ratio), **self._family_params()}

    def _glm_model(self) -> Model:
        """The dsketch model of these parameters (its mean, variance and target check)."""
        return get_model(self._model, **self._model_params(1.0))

    def _targets(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y, dtype=np.float64)
        self._glm_model()._check_y(y)  # type: ignore[attr-defined]
        return y

    def predict(self, X: Any, offset: Any = None) -> np.ndarray:
        """The predicted mean ``mu = g^-1(X w + c + offset)``."""
        out: np.ndarray = self._glm_model().mean(self._linear(X, offset))  # type: ignore[attr-defined]
        return out

    def score(self, X: Any, y: Any, sample_weight: Any = None, offset: Any = None) -> float:
        """D², the fraction of the family's deviance explained."""
        return d2_score(self._glm_model(), y, self.predict(X, offset), sample_weight)


def _init(self: Any, kw: dict[str, Any]) -> None:
    _EngineRegressor.__init__(self, **{k: kw[k] for k in _COMMON})


class GammaRegressor(_FamilyRegressor):
    """Gamma regression with the log link and scikit-learn's parameters (``y > 0``).

    Minimises ``mean(y e^-eta + eta) + alpha ((1 - l1_ratio) ||w||^2 / 2 + l1_ratio ||w||_1)``
    with ``eta = X w + c`` (half the mean gamma deviance up to a constant:
    ``sklearn.linear_model.GammaRegressor(alpha)`` for ``l1_ratio=0``, glum's
    ``GeneralizedLinearRegressor(family="gamma", alpha, l1_ratio)`` for any).
    """

    _model: ClassVar[str] = "gamma"

    def __init__(self, *, alpha: float = 1.0, l1_ratio: float = 0.0, fit_intercept: bool = True, tol: float = 1e-4, max_iter: int = 100,
                 solver: str = "auto", sketch: str = "auto", sketch_size: int | None = None,
                 random_state: int = 0, client: Any = None, scheduler: str | None = None,
                 block_rows: int | None = None) -> None:
        _init(self, locals())
        self.alpha = alpha
        self.l1_ratio = l1_ratio

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.positive_only = True
        return tags


class TweedieRegressor(_FamilyRegressor):
    """Tweedie regression with scikit-learn's parameters.

    ``power`` 0 (normal), 1 (Poisson), between 1 and 2 (compound Poisson-gamma), 2 (gamma),
    above 2 (3: inverse Gaussian); ``link`` "auto" is identity for power 0 and log otherwise
    (``sklearn.linear_model.TweedieRegressor(power, alpha, link)``). ``l1_ratio`` adds glum's
    L1 share: the penalty is ``alpha (l1_ratio ||w||_1 + (1 - l1_ratio) ||w||^2 / 2)``.
    """

    _model: ClassVar[str] = "tweedie"

    def __init__(self, *, power: float = 0.0, alpha: float = 1.0, l1_ratio: float = 0.0, link: str = "auto", fit_intercept: bool = True,
                 tol: float = 1e-4, max_iter: int = 100, solver: str = "auto", sketch: str = "auto",
                 sketch_size: int | None = None, random_state: int = 0, client: Any = None,
                 scheduler: str | None = None, block_rows: int | None = None) -> None:
        _init(self, locals())
        self.power = power
        self.alpha = alpha
        self.l1_ratio = l1_ratio
        self.link = link

    def _family_params(self) -> dict[str, Any]:
        return {"power": self.power, "link": self.link}

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.positive_only = isinstance(self.power, (int, float)) and self.power > 0
        return tags


class GeneralizedLinearRegressor(_FamilyRegressor):
    """A GLM by glum's family and link names with glum's elastic-net penalty
    (``GeneralizedLinearRegressor(family, link, alpha, l1_ratio)``): it minimises
    ``(1 / sum s) sum_i s_i d(y_i, mu_i) / 2 + alpha (l1_ratio ||w||_1 + (1 - l1_ratio)
    ||w||^2 / 2)``; ``l1_ratio > 0`` fits by proximal Newton (``solver`` "auto" or
    "prox-newton").

    ``family``: "normal"/"gaussian", "binomial", "poisson", "gamma", "inverse.gaussian",
    "tweedie" (with ``power``, default 1.5) or "negative.binomial" (with ``theta``, default 1);
    ``link``: "auto" (identity for normal and Tweedie power 0, logit for binomial, log
    otherwise), "identity", "log" or "logit" where the family supports it.
    """

    _model: ClassVar[str] = "glm"

    def __init__(self, family: str = "normal", link: str = "auto", *, alpha: float = 1.0, l1_ratio: float = 0.0,
                 power: float | None = None, theta: float | None = None, fit_intercept: bool = True,
                 tol: float = 1e-4, max_iter: int = 100, solver: str = "auto", sketch: str = "auto",
                 sketch_size: int | None = None, random_state: int = 0, client: Any = None,
                 scheduler: str | None = None, block_rows: int | None = None) -> None:
        _init(self, locals())
        self.family = family
        self.link = link
        self.alpha = alpha
        self.l1_ratio = l1_ratio
        self.power = power
        self.theta = theta

    def _family_params(self) -> dict[str, Any]:
        out: dict[str, Any] = {"family": self.family, "link": self.link}
        if self.power is not None:
            out["power"] = self.power
        if self.theta is not None:
            out["theta"] = self.theta
        return out

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.positive_only = self.family not in ("normal", "gaussian") and not (
            self.family == "tweedie" and self.power == 0)
        return tags
