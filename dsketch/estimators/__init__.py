"""scikit-learn compatible estimators on the dsketch engine.

:class:`LogisticRegression`, :class:`PoissonRegressor` and :class:`LinearRegression` take
scikit-learn's parameters with scikit-learn's meanings (``C``, ``alpha``,
``fit_intercept``, ``tol``, ``max_iter``): with the same parameters they minimise the same
objective, so at convergence they return the same coefficients as
``sklearn.linear_model.LogisticRegression`` (binary), ``PoissonRegressor`` and
``LinearRegression``. The intercept is not penalised. :class:`GammaRegressor` and
:class:`TweedieRegressor` are scikit-learn's of those names; :class:`GeneralizedLinearRegressor`
takes glum's ``family`` and ``link`` names. Every GLM regressor but
:class:`LinearRegression` takes glum's ``l1_ratio`` besides ``alpha`` (the penalty
``alpha (l1_ratio ||w||_1 + (1 - l1_ratio) ||w||^2 / 2)``, default ``l1_ratio=0``);
:class:`LogisticRegression` takes scikit-learn's ``penalty`` and ``l1_ratio``.
:class:`GeneralizedLinearRegressorCV` chooses ``alpha`` and ``l1_ratio`` by cross-validation
(glum's estimator of that name; :func:`dsketch.cv_path`).

``fit(X, y)`` accepts a NumPy array, a scipy.sparse matrix, a dask array (written block by
block, never gathered whole), or the path / URL of a problem store (``y`` omitted: the
store's ``b``). NumPy and scipy.sparse inputs are fitted in place on threads of this
process (:func:`dsketch.in_memory`: no store, no cluster) unless a cluster is named by
``client``, ``scheduler`` or ``$DSKETCH_SCHEDULER``. Dask arrays, and in-memory inputs
fitted on a named cluster, are written to a temporary Zarr store that is deleted after the
fit; they run on that cluster or on a small in-process cluster shared by the estimators of
this process (threads; created on first use). Both routes give the same coefficients, bit
for bit.

Objectives (mean form, ``n`` rows, ``w`` the coefficients without the intercept):

* logistic: ``mean(log(1 + e^eta) - y eta) + ||w||^2 / (2 C n)``, i.e. scikit-learn's
  ``C sum(loss) + ||w||^2 / 2`` divided by ``C n``;
* Poisson: ``mean(e^eta - y eta) + alpha ||w||^2 / 2`` (half the mean deviance up to a
  constant, as scikit-learn);
* least squares: ``mean((eta - y)^2) / 2``.

:class:`SoftmaxRegression` (no intercept: softmax over the rows is invariant to a shift of
every row's logit) fits a target distribution ``y`` over the rows of ``X`` by
``softmax(X x)``: ``1/2 ||softmax(X x) - y||^2 + alpha/2 ||X x||^2``, the engine model
"softmax" with the store's row weights ``w_i = sqrt(alpha)``.
"""

from __future__ import annotations

from dsketch.estimators._base import _close_shared  # noqa: F401 - tests close the shared cluster
from dsketch.estimators.glm import (
    LinearRegression,
    LogisticRegression,
    PoissonRegressor,
)
from dsketch.estimators.glm_cv import GeneralizedLinearRegressorCV
from dsketch.estimators.glm_families import GammaRegressor, GeneralizedLinearRegressor, TweedieRegressor
from dsketch.estimators.softmax import SoftmaxRegression

__all__ = ["GammaRegressor", "GeneralizedLinearRegressor", "GeneralizedLinearRegressorCV", "LinearRegression", "LogisticRegression",
           "PoissonRegressor", "SoftmaxRegression", "TweedieRegressor"]
