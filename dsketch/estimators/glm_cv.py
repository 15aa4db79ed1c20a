"""glum's ``GeneralizedLinearRegressorCV`` on the engine: the elastic-net penalty of a GLM
chosen by K-fold cross-validation (:func:`dsketch.cv_path`), the folds being row masks of
one problem (nothing is copied per fold)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from dsketch.errors import InvalidParameterError
from dsketch.estimators.glm_families import GeneralizedLinearRegressor, _init
from dsketch.store import ProblemSpec


class GeneralizedLinearRegressorCV(GeneralizedLinearRegressor):
    """A GLM by glum's family and link names whose ``alpha`` and ``l1_ratio`` are chosen by
    cross-validation, as ``glum.GeneralizedLinearRegressorCV``: for each ``l1_ratio`` the
    elastic-net path on every fold's training rows, scored by the weighted mean deviance of
    the fold's held-out rows; the pair of least mean deviance is refitted on all rows.

    Parameters
    ----------
    family, link, power, theta
        As :class:`GeneralizedLinearRegressor`.
    alphas : array-like, optional
        The alphas to try (None: ``n_alphas`` from the smallest alpha with every coefficient
        0 down to ``min_alpha_ratio`` times it, per ``l1_ratio``, from all rows).
    n_alphas : int, default 20
    min_alpha_ratio : float, default 1e-3
        glum's names (glum's defaults are 100 and 1e-6).
    l1_ratio : float or list of float in (0, 1], default 1.0
        The L1 share(s) to try; a path needs an L1 term, so 0 (ridge, glum's default) is
        refused.
    cv : int, splitter or iterable of (train, test) index pairs, default 5
        An integer: folds of :func:`dsketch.fold_ids` keyed by ``random_state`` (row ``i``'s
        fold is a hash of ``i``; glum's integer means contiguous ``KFold`` folds instead). A
        scikit-learn splitter (in-memory ``X`` only: it splits ``X`` and ``y``) or index
        pairs: those folds (``splits`` of :func:`dsketch.cv_path`).
    fit_intercept, tol, max_iter, solver, sketch, sketch_size, random_state, client, scheduler, block_rows
        As :class:`GeneralizedLinearRegressor` (``solver`` "auto" or "prox-newton").

    Attributes
    ----------
    alpha_, l1_ratio_ : float
        The chosen penalty.
    alphas_ : ndarray of shape (n_alphas,), or (n_l1_ratios, n_alphas) for several l1 ratios
    deviance_path_ : ndarray of shape (n_folds, n_l1_ratios, n_alphas)
        Held-out deviances (glum's attribute).
    coef_, intercept_
        The refit on all rows at ``(l1_ratio_, alpha_)``.
    cv_result_ : dsketch.CVResult
    """

    def __init__(self, family: str = "normal", link: str = "auto", *, alphas: Any = None, n_alphas: int = 20,
                 min_alpha_ratio: float = 1e-3, l1_ratio: Any = 1.0, cv: int = 5, power: float | None = None,
                 theta: float | None = None, fit_intercept: bool = True, tol: float = 1e-4, max_iter: int = 100,
                 solver: str = "auto", sketch: str = "auto", sketch_size: int | None = None, random_state: int = 0,
                 client: Any = None, scheduler: str | None = None, block_rows: int | None = None) -> None:
        _init(self, locals())
        self.family = family
        self.link = link
        self.l1_ratio = l1_ratio
        self.power = power
        self.theta = theta
        self.alphas = alphas
        self.n_alphas = n_alphas
        self.min_alpha_ratio = min_alpha_ratio
        self.cv = cv

    def fit(self, X: Any, y: Any = None, sample_weight: Any = None, offset: Any = None) -> Any:
        """Fit on an array, sparse matrix, dask array or problem store, as
        :class:`GeneralizedLinearRegressor`: the cross-validation, then the refit."""
        self._splits = self._cv_splits(X, y)
        try:
            return super().fit(X, y, sample_weight, offset)
        finally:
            del self._splits

    def _cv_splits(self, X: Any, y: Any) -> list[Any] | None:
        """The given folds as index pairs (None for a number of hashed folds)."""
        from dsketch.estimators._base import _is_dask, _is_store

        cv = self.cv
        if isinstance(cv, (int, np.integer)) and not isinstance(cv, bool):
            return None
        if hasattr(cv, "split"):
            if _is_store(X) or _is_dask(X):
                raise InvalidParameterError("a splitter needs the rows in memory; for a store or dask array pass cv as "
                                            "the number of folds or as (train, test) index pairs")
            return list(cv.split(X, y))
        if isinstance(cv, (str, bytes)) or not hasattr(cv, "__iter__"):
            raise InvalidParameterError(f"cv must be a number of folds, a splitter or (train, test) index pairs; "
                                        f"got {cv!r}")
        return list(cv)

    def _model_params(self, total_weight: float) -> dict[str, Any]:
        """The family's parameters (the penalty is the path's)."""
        return self._family_params()

    def _solve(self, spec: ProblemSpec, client: Any, params: dict[str, Any]) -> Any:
        """The cross-validation (:func:`dsketch.cv_path`); returns the refit's FitResult."""
        from dsketch.cv import cv_path

        splits = self._splits
        res = cv_path(spec, self._model, l1_ratio=self.l1_ratio, alphas=self.alphas, n_alphas=self.n_alphas,
                      eps=self.min_alpha_ratio, n_folds=None if splits is not None else int(self.cv), splits=splits,
                      model_params=params, fit_intercept=self._has_intercept, **self._settings(client))
        if not res.success:
            from sklearn.exceptions import ConvergenceWarning as SkConvergenceWarning

            warnings.warn("dsketch: a fit of the cross-validation did not converge; its deviances may be off "
                          "(raise max_iter)", SkConvergenceWarning, stacklevel=4)
        self.alpha_, self.l1_ratio_ = res.alpha, res.l1_ratio
        self.alphas_ = res.alphas[0] if res.alphas.shape[0] == 1 else res.alphas
        self.deviance_path_ = res.deviance
        self.cv_result_ = res
        return res.result
