"""scikit-learn's GLM estimators on the engine: logistic, Poisson and least squares (the
other families are in :mod:`dsketch.estimators.glm_families`).

Standard errors: the estimators' ``fit_result_`` is a :class:`dsketch.FitResult` of a GLM,
so :func:`dsketch.covariance` computes them from it and the store the model was fitted to.
An estimator fitted to a store passes that store::

    est = PoissonRegressor(alpha=0.0).fit("counts.zarr")
    inf = dsketch.covariance(est.fit_result_, "counts.zarr", cov_type="HC1")
    print(est.fit_result_.summary())

An estimator fitted to in-memory arrays keeps no store: write them once yourself (``dsketch.write_problem(path, X, y01,
sample_weight=sw)``, with the logistic labels as 0/1, ``classes_[1]`` being 1) and fit and
infer on that path. With ``alpha > 0`` (or finite ``C``) the covariance is that of the
penalised fit (:mod:`dsketch.inference`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from sklearn.base import ClassifierMixin, RegressorMixin

from dsketch.estimators._base import _EngineGLM, class_offsets
from dsketch.store import (
    ProblemSpec,
)
from dsketch.errors import InvalidParameterError, InvalidTargetError, UnusedOptionError


class LogisticRegression(ClassifierMixin, _EngineGLM):
    """Penalised logistic regression with scikit-learn's parameters: binary for two
    classes, multinomial (softmax) for more.

    Two classes: minimises ``C sum_i s_i log(1 + exp(-y_i (x_i w + c))) + (1 - r) ||w||^2 / 2
    + r ||w||_1`` (``y`` in {-1, 1}; the intercept ``c`` unpenalised; ``r`` 0 for
    ``penalty="l2"``, 1 for ``"l1"``, ``l1_ratio`` for ``"elasticnet"``), the objective of
    ``sklearn.linear_model.LogisticRegression(C=C, penalty=..., l1_ratio=...)`` (the engine
    model ``logistic``). An L1 share fits by proximal Newton (``solver`` "auto" or
    "prox-newton").
    ``K > 2`` classes: minimises ``C sum_i s_i (logsumexp(x_i W + c) - (x_i W + c)_{y_i}) +
    (1 - r) ||W||^2 / 2 + r sum |W|`` over ``W`` (``d x K``) and the intercepts ``c``
    (unpenalised), scikit-learn's multinomial objective (the engine model ``multinomial``,
    fitted by Newton-CG, or by proximal Newton with an L1 share).

    Parameters
    ----------
    C : float, default 1.0
        Inverse regularisation strength (> 0).
    penalty : {"l2", "l1", "elasticnet"}, default "l2"
    l1_ratio : float in [0, 1], optional
        The L1 share with ``penalty="elasticnet"`` (required there, refused otherwise).
    fit_intercept, tol, max_iter
        As in scikit-learn; ``tol`` is dsketch's relative gradient norm
        ``||g|| <= tol ||g_0||``.
    solver : {"auto", "newton", "newton-cg", "lbfgs", "gd", "prox-newton"}, default "auto"
        As :class:`dsketch.Solver`'s ``method``: ``"auto"`` runs L-BFGS while the gradient
        contracts fast and Newton steps after (Newton from the start with a named ``sketch``);
        with more than two classes it is Newton-CG (``"newton"`` is refused there: the
        ``dK x dK`` Hessian is never factored); with an L1 share it is ``"prox-newton"``.
        L-BFGS converges linearly and stops at ``tol``, where a Newton method's last step
        usually lands far below it: for coefficients accurate beyond ``tol``, lower ``tol``
        or choose ``"newton"``.
    sketch : {"auto", "exact", "leverage", ...}, default "auto"
    sketch_size, random_state, client, scheduler, block_rows
        As in :func:`dsketch.fit`, with its defaults (``random_state`` is its ``seed``):
        with ``"auto"`` a chosen sketch adapts its size, ``sketch_size`` is where it starts;
        a named sketch with a ``sketch_size`` keeps that size.

    Attributes
    ----------
    classes_ : ndarray of shape (K,)
        The sorted labels (any type); a store's labels are ``0 .. K-1``.
    coef_ : ndarray of shape (1, n_features) for two classes, (K, n_features) for more
    intercept_ : ndarray of shape (1,) or (K,)
        With more than two classes the intercepts are unique only up to a common constant
        (softmax ignores it); they are returned centred (summing to zero).
    n_iter_ : ndarray of shape (1,)
    n_passes_ : int
        Passes over the data of the fit.
    fit_result_ : dsketch.FitResult

    Notes
    -----
    Offsets (``fit``, ``decision_function``, ``predict_proba``, ``predict``): a vector of
    ``n`` for two classes, an ``(n, K)`` matrix for ``K > 2`` (column ``j`` is added to the
    scores of ``classes_[j]``; a vector is refused there, it would add the same number to
    every class and change nothing).
    """

    def __init__(self, C: float = 1.0, *, penalty: str = "l2", l1_ratio: float | None = None,
                 fit_intercept: bool = True, tol: float = 1e-4, max_iter: int = 100, solver: str = "auto",
                 sketch: str = "auto", sketch_size: int | None = None,
                 random_state: int = 0, client: Any = None, scheduler: str | None = None,
                 block_rows: int | None = None) -> None:
        super().__init__(fit_intercept=fit_intercept, tol=tol, max_iter=max_iter, solver=solver, sketch=sketch,
                         sketch_size=sketch_size, random_state=random_state, client=client,
                         scheduler=scheduler, block_rows=block_rows)
        self.C = C
        self.penalty = penalty
        self.l1_ratio = l1_ratio

    @property
    def _multiclass(self) -> bool:
        return len(getattr(self, "classes_", ())) > 2

    @property
    def _model(self) -> str:  # type: ignore[override]
        return "multinomial" if self._multiclass else "logistic"

    def _l2(self, total_weight: float) -> float:
        if not (isinstance(self.C, (int, float, np.floating)) and self.C > 0):
            raise InvalidParameterError(f"C must be a positive number; got {self.C!r}")
        return 1.0 / (float(self.C) * total_weight)

    def _ratio(self) -> float:
        """The L1 share of the penalty: 0 for "l2", 1 for "l1", ``l1_ratio`` for "elasticnet"."""
        if self.penalty not in ("l2", "l1", "elasticnet"):
            raise InvalidParameterError(f"penalty must be 'l2', 'l1' or 'elasticnet'; got {self.penalty!r}")
        if self.penalty != "elasticnet":
            if self.l1_ratio is not None:
                raise UnusedOptionError(f"l1_ratio has no effect with penalty={self.penalty!r}; drop it or use "
                                        "penalty='elasticnet'")
            return 1.0 if self.penalty == "l1" else 0.0
        r = self.l1_ratio
        if isinstance(r, bool) or not (isinstance(r, (int, float, np.floating)) and 0 <= r <= 1):
            raise InvalidParameterError(f"penalty='elasticnet' needs l1_ratio in [0, 1]; got {r!r}")
        return float(r)

    def _model_params(self, total_weight: float) -> dict[str, Any]:
        """scikit-learn's ``C sum s_i l_i + (1 - r) ||w||^2 / 2 + r ||w||_1`` divided by
        ``C sum s``: ``l2 = (1 - r) / (C S)``, ``l1 = r / (C S)``."""
        scale, ratio = self._l2(total_weight), self._ratio()
        classes = {"n_classes": len(self.classes_)} if self._multiclass else {}
        return {"l2": scale * (1.0 - ratio), **({"l1": scale * ratio} if ratio > 0 else {}), **classes}

    def _targets(self, y: np.ndarray) -> np.ndarray:
        from sklearn.utils.multiclass import check_classification_targets

        check_classification_targets(y)
        classes, codes = np.unique(y, return_inverse=True)
        if classes.size < 2:
            raise InvalidTargetError(
                f"LogisticRegression needs at least 2 classes in y; got {classes.size} class(es) {classes.tolist()}"
            )
        self.classes_ = classes
        return codes.reshape(-1).astype(np.float64)

    def _check_store_targets(self, spec: ProblemSpec) -> None:
        from dsketch.api import largest_label

        super()._check_store_targets(spec)
        self.classes_ = np.arange(max(largest_label(spec) + 1, 2), dtype=np.float64)

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None, offset: Any = None) -> LogisticRegression:
        """Fit on an array, sparse matrix, dask array or problem store (then ``y=None``: its
        labels ``b`` are ``0 .. K-1``).

        ``sample_weight`` (scikit-learn's meaning: each row's loss is multiplied by it) and
        ``offset`` (added to the linear predictor, glum's meaning; ``(n, K)`` with ``K > 2``
        classes, in the order of ``classes_``) are row-aligned; a store brings its own
        members ``sample_weight`` and ``offset``.
        """
        x = self._fit_problem(X, y, sample_weight, offset)
        if self._multiclass:
            k = len(self.classes_)
            W = x.reshape(-1, k)
            c = W[-1] - W[-1].mean() if self._has_intercept else np.zeros(k)
            self.coef_ = np.ascontiguousarray((W[:-1] if self._has_intercept else W).T)
            self.intercept_ = c
            return self
        w, c = self._split(x)
        self.coef_ = w[None, :]
        self.intercept_ = np.array([c])
        return self

    def _offset_rows(self, offset: Any, n: int) -> np.ndarray:
        if not self._multiclass:
            return super()._offset_rows(offset, n)
        return class_offsets(offset, n, len(self.classes_))

    def _coef_vector(self) -> np.ndarray:
        return self.coef_[0] if self.coef_.shape[0] == 1 else self.coef_.T

    def _intercept_value(self) -> Any:
        return float(self.intercept_[0]) if self.intercept_.size == 1 else self.intercept_

    def decision_function(self, X: Any, offset: Any = None) -> np.ndarray:
        """``X w + c + offset`` (positive: the second class); with more than two classes the
        ``(n, K)`` scores ``X W + c + offset``."""
        if not self._multiclass:
            return self._linear(X, offset)
        return self._scores(X, offset)

    def _scores(self, X: Any, offset: Any) -> np.ndarray:
        from sklearn.utils.validation import check_is_fitted, validate_data

        from dsketch.estimators._base import _is_dask

        check_is_fitted(self)
        if _is_dask(X):
            eta = np.asarray((X @ self.coef_.T).compute())
        else:
            X = validate_data(self, X, accept_sparse="csr", dtype=np.float64, reset=False)
            eta = np.asarray(X @ self.coef_.T)
        eta = eta + self.intercept_
        return eta if offset is None else eta + class_offsets(offset, *eta.shape)

    def predict_proba(self, X: Any, offset: Any = None) -> np.ndarray:
        """Probabilities of the classes, shape (n_samples, K)."""
        return np.exp(self.predict_log_proba(X, offset))

    def predict_log_proba(self, X: Any, offset: Any = None) -> np.ndarray:
        """Log-probabilities of the classes (computed without overflow)."""
        z = self.decision_function(X, offset)
        if self._multiclass:
            from scipy.special import log_softmax

            return np.asarray(log_softmax(z, axis=1))
        return np.column_stack([-np.logaddexp(0.0, z), -np.logaddexp(0.0, -z)])

    def predict(self, X: Any, offset: Any = None) -> np.ndarray:
        """The most probable class label."""
        z = self.decision_function(X, offset)
        if self._multiclass:
            return self.classes_[np.argmax(z, axis=1)]
        return self.classes_[(z > 0).astype(int)]


def check_alpha(alpha: Any) -> float:
    """``alpha`` as a float, or :class:`InvalidParameterError` unless a finite number >= 0."""
    if not (isinstance(alpha, (int, float, np.floating)) and not isinstance(alpha, bool) and alpha >= 0
            and np.isfinite(alpha)):
        raise InvalidParameterError(f"alpha must be a finite number >= 0; got {alpha!r}")
    return float(alpha)


def elastic_net(alpha: float, l1_ratio: Any) -> dict[str, float]:
    """glum's penalty ``alpha (l1_ratio ||w||_1 + (1 - l1_ratio) ||w||^2 / 2)`` as the
    models' ``l2`` and (when ``l1_ratio > 0``) ``l1``.

    Raises
    ------
    InvalidParameterError
        ``l1_ratio`` not a number in [0, 1].
    """
    r = l1_ratio
    if not (isinstance(r, (int, float, np.floating)) and not isinstance(r, bool) and 0 <= r <= 1):
        raise InvalidParameterError(f"l1_ratio must be a number in [0, 1] (0: ridge, 1: lasso); got {r!r}")
    return {"l2": alpha * (1.0 - float(r)), **({"l1": alpha * float(r)} if r > 0 else {})}


class _EngineRegressor(RegressorMixin, _EngineGLM):
    """A regressor: ``coef_`` of shape (n_features,) and a scalar ``intercept_``."""

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None, offset: Any = None) -> _EngineRegressor:
        """Fit on an array, sparse matrix, dask array or problem store (then ``y=None``).

        ``sample_weight`` (scikit-learn's meaning: each row's loss is multiplied by it) and
        ``offset`` (added to the linear predictor, glum's meaning: ``log(exposure)`` for a
        Poisson rate) are row-aligned vectors; a store brings its own members
        ``sample_weight`` and ``offset``.
        """
        w, c = self._split(self._fit_problem(X, y, sample_weight, offset))
        self.coef_, self.intercept_ = w, c
        return self

    def _coef_vector(self) -> np.ndarray:
        return self.coef_

    def _intercept_value(self) -> float:
        return float(self.intercept_)


class PoissonRegressor(_EngineRegressor):
    """Poisson regression with log link, scikit-learn's parameters and glum's ``l1_ratio``.

    Minimises ``mean(exp(eta) - y eta) + alpha ((1 - l1_ratio) ||w||^2 / 2 + l1_ratio
    ||w||_1)`` with ``eta = X w + c``: with the default ``l1_ratio=0`` the objective of
    ``sklearn.linear_model.PoissonRegressor(alpha=alpha)`` up to a constant, otherwise that
    of ``glum.GeneralizedLinearRegressor(family="poisson", alpha=alpha, l1_ratio=l1_ratio)``
    (fitted by proximal Newton: ``solver`` "auto" or "prox-newton").
    ``score`` is scikit-learn's D² (fraction of Poisson deviance explained).
    """

    _model: ClassVar[str] = "poisson"

    def __init__(self, *, alpha: float = 1.0, l1_ratio: float = 0.0, fit_intercept: bool = True, tol: float = 1e-4,
                 max_iter: int = 100, solver: str = "auto", sketch: str = "auto", sketch_size: int | None = None,
                 random_state: int = 0, client: Any = None, scheduler: str | None = None,
                 block_rows: int | None = None) -> None:
        super().__init__(fit_intercept=fit_intercept, tol=tol, max_iter=max_iter, solver=solver, sketch=sketch,
                         sketch_size=sketch_size, random_state=random_state, client=client,
                         scheduler=scheduler, block_rows=block_rows)
        self.alpha = alpha
        self.l1_ratio = l1_ratio

    def _l2(self, total_weight: float) -> float:
        return check_alpha(self.alpha)

    def _model_params(self, total_weight: float) -> dict[str, Any]:
        return elastic_net(self._l2(total_weight), self.l1_ratio)

    def _targets(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y, dtype=np.float64)
        if (y < 0).any():
            raise InvalidTargetError("Some value(s) of y are negative which is not allowed for Poisson regression. "
                                     "Pass counts (y >= 0).")
        return y

    def predict(self, X: Any, offset: Any = None) -> np.ndarray:
        """The predicted mean ``exp(X w + c + offset)``."""
        return np.exp(self._linear(X, offset))

    def score(self, X: Any, y: Any, sample_weight: Any = None, offset: Any = None) -> float:
        """D², the fraction of Poisson deviance explained (as scikit-learn's)."""
        from sklearn.metrics import d2_tweedie_score

        return float(d2_tweedie_score(y, self.predict(X, offset), sample_weight=sample_weight, power=1))

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.positive_only = True
        return tags


class LinearRegression(_EngineRegressor):
    """Ordinary least squares with scikit-learn's parameters (no penalty).

    Minimises ``mean((X w + c - y)^2) / 2``; rank-deficient ``X`` is handled by the
    solver's eigenvalue-floored fallback (a ``NumericalWarning``), which returns a
    minimiser, not necessarily the minimum-norm one that scikit-learn returns.
    """

    _model: ClassVar[str] = "least-squares"

    def _l2(self, total_weight: float) -> float:
        return 0.0

    def predict(self, X: Any, offset: Any = None) -> np.ndarray:
        """``X w + c + offset``."""
        return self._linear(X, offset)


#: Tolerance on ``|sum(y) - 1|`` of a distribution target; the one ``dsketch info`` uses for
#: its ``sums_to_one`` flag (:func:`dsketch.store.describe.describe`).
