"""scikit-learn compatible estimators on the dsketch engine.

:class:`LogisticRegression`, :class:`PoissonRegressor` and :class:`LinearRegression` take
scikit-learn's parameters with scikit-learn's meanings (``C``, ``alpha``,
``fit_intercept``, ``tol``, ``max_iter``): with the same parameters they minimise the same
objective, so at convergence they return the same coefficients as
``sklearn.linear_model.LogisticRegression`` (binary), ``PoissonRegressor`` and
``LinearRegression``. The intercept is not penalised.

``fit(X, y)`` accepts a NumPy array, a scipy.sparse matrix, a dask array (written block by
block, never gathered whole), or the path / URL of a problem store (``y`` omitted: the
store's ``b``). In-memory and dask inputs are written to a temporary Zarr store that is
deleted after the fit. The fit runs on ``client``, on the scheduler at ``scheduler`` /
``$DSKETCH_SCHEDULER``, or on a small in-process cluster shared by the estimators of this
process (threads; created on first use).

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

import atexit
import contextlib
import os
import shutil
import tempfile
import threading
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from dsketch.errors import ConvergenceWarning
from dsketch.store import (
    ProblemBuilder,
    ProblemSpec,
    default_chunk_rows,
    open_problem,
    read_block,
    write_problem,
)

_SHARED: dict[str, Any] = {}
_SHARED_LOCK = threading.Lock()


def _shared_client() -> Any:
    """A process-wide in-process cluster (threads), started on first use, closed at exit."""
    from distributed import Client, LocalCluster

    with _SHARED_LOCK:
        client = _SHARED.get("client")
        if client is None or client.status != "running":
            # in-process transport: nothing listens on the network (the dashboard on 127.0.0.1)
            cluster = LocalCluster(n_workers=1, threads_per_worker=max(1, os.cpu_count() or 1), processes=False,
                                   dashboard_address="127.0.0.1:0")
            client = Client(cluster, set_as_default=False)
            _SHARED.update(client=client, cluster=cluster)
            atexit.register(_close_shared)
        return client


def _close_shared() -> None:
    with _SHARED_LOCK:
        for key in ("client", "cluster"):
            obj = _SHARED.pop(key, None)
            if obj is not None:
                with contextlib.suppress(Exception):
                    obj.close()


def _is_dask(X: Any) -> bool:
    return type(X).__module__.startswith("dask.") and hasattr(X, "chunks")


def _is_store(X: Any) -> bool:
    return isinstance(X, (str, os.PathLike, ProblemSpec))


class _EngineGLM(BaseEstimator, ABC):
    """Shared fitting machinery of the GLM estimators (not public)."""

    _model: ClassVar[str] = ""

    def __init__(
        self,
        *,
        fit_intercept: bool = True,
        tol: float = 1e-4,
        max_iter: int = 100,
        solver: str = "newton",
        sketch: str = "auto",
        sketch_size: int | None = None,
        random_state: int = 0,
        client: Any = None,
        scheduler: str | None = None,
        block_rows: int = 2**17,
    ) -> None:
        self.fit_intercept = fit_intercept
        self.tol = tol
        self.max_iter = max_iter
        self.solver = solver
        self.sketch = sketch
        self.sketch_size = sketch_size
        self.random_state = random_state
        self.client = client
        self.scheduler = scheduler
        self.block_rows = block_rows

    # -- subclass hooks -------------------------------------------------------------
    @abstractmethod
    def _l2(self, n_samples: int) -> float:
        """The mean-form L2 weight of the dsketch model for ``n_samples`` rows."""

    def _targets(self, y: np.ndarray) -> np.ndarray:
        return y.astype(np.float64)

    @property
    def _has_intercept(self) -> bool:
        """Whether a column of ones is appended to the design (the GLMs' ``fit_intercept``)."""
        return bool(self.fit_intercept)

    def _model_params(self, n_samples: int) -> dict[str, Any]:
        """``model_params`` of :func:`dsketch.fit`: the L2 weight, the intercept unpenalised."""
        params: dict[str, Any] = {"l2": self._l2(n_samples)}
        if self._has_intercept:
            params["n_unpenalized"] = 1
        return params

    def _row_weight(self) -> float | None:
        """Constant row weight ``w`` written to the store (None: no ``w``; the GLMs)."""
        return None

    # -- data -----------------------------------------------------------------------
    @contextlib.contextmanager
    def _client(self) -> Iterator[Any]:
        if self.client is not None:
            yield self.client
        elif self.scheduler is not None or os.environ.get("DSKETCH_SCHEDULER"):
            from dsketch.engine.client import connect

            with connect(self.scheduler) as c:
                yield c
        else:
            yield _shared_client()

    def _write_memory(self, tmp: str, X: Any, y: np.ndarray) -> ProblemSpec:
        if self._has_intercept:
            ones = np.ones((X.shape[0], 1))
            X = sp.hstack([X, ones], format="csr") if sp.issparse(X) else np.hstack([X, ones])
        w = self._row_weight()
        return write_problem(os.path.join(tmp, "p.zarr"), X, y, None if w is None else np.full(X.shape[0], w))

    def _write_dask(self, tmp: str, X: Any, y: Any) -> ProblemSpec:
        """Row block by row block: the dask array is never gathered whole."""
        n, d = (int(s) for s in X.shape)
        rows = default_chunk_rows(d + int(self._has_intercept), n_samples=n)
        X = X.rechunk((rows, d))
        yv = np.asarray(y.compute() if _is_dask(y) else y, dtype=np.float64).ravel()
        if yv.shape != (n,):
            raise ValueError(f"y must have {n} entries, one per row of X; got shape {yv.shape}")
        yv = self._targets(yv)
        w = self._row_weight()
        builder = ProblemBuilder.create(os.path.join(tmp, "p.zarr"), n_samples=n,
                                        n_features=d + int(self._has_intercept), sparse=False, chunk_rows=rows,
                                        has_w=w is not None)
        try:
            for k in range(X.numblocks[0]):
                block = np.asarray(X.blocks[k, 0].compute(), dtype=np.float64)
                if self._has_intercept:
                    block = np.hstack([block, np.ones((block.shape[0], 1))])
                builder.write_dense_rows(k * rows, block)
            builder.write_vector("b", 0, yv)
            if w is not None:
                builder.write_vector("w", 0, np.full(n, w))
            return builder.commit()
        except BaseException:
            builder.abort()
            raise

    def _copy_store(self, tmp: str, spec: ProblemSpec) -> ProblemSpec:
        """A copy of a store with a column of ones appended when there is an intercept, and
        the constant row weight :meth:`_row_weight` as its ``w`` (streamed block by block)."""
        rows = spec.a_chunk_rows
        extra = int(self._has_intercept)
        w = self._row_weight()
        builder = ProblemBuilder.create(os.path.join(tmp, "p.zarr"), n_samples=spec.n_samples,
                                        n_features=spec.n_features + extra, sparse=spec.sparse,
                                        nnz=spec.nnz + extra * spec.n_samples if spec.sparse else None,
                                        chunk_rows=rows, has_w=w is not None)
        try:
            offset, edges = 0, []
            for r0 in range(0, spec.n_samples, rows):
                blk = read_block(spec, r0, min(spec.n_samples, r0 + rows))
                ones = np.ones((blk.n_rows, extra))
                if spec.sparse:
                    A = sp.hstack([blk.A, ones], format="csr") if extra else sp.csr_matrix(blk.A)
                    A.sort_indices()
                    edges.append(builder.write_csr_rows(r0, A.indptr, A.indices, A.data, offset))
                    offset += A.nnz
                else:
                    builder.write_dense_rows(r0, np.hstack([blk.A, ones]))
                builder.write_vector("b", r0, blk.b)
                if w is not None:
                    builder.write_vector("w", r0, np.full(blk.n_rows, w))
            if spec.sparse:
                builder.write_edges(edges)
            return builder.commit()
        except BaseException:
            builder.abort()
            raise

    def _fit_problem(self, X: Any, y: Any) -> tuple[Any, ...]:
        """Validate, write, fit; return the coefficient vector (intercept last) and result."""
        from dsketch.api import fit

        if not (isinstance(self.max_iter, (int, np.integer)) and self.max_iter >= 1):
            raise ValueError(f"max_iter must be a positive integer; got {self.max_iter!r}")
        if not (isinstance(self.tol, (int, float, np.floating)) and self.tol >= 0):
            raise ValueError(f"tol must be a number >= 0; got {self.tol!r}")
        tmp = tempfile.mkdtemp(prefix="dsketch-estimator-")
        try:
            if _is_store(X):
                if y is not None:
                    raise ValueError("fitting a problem store takes its targets from the store: pass y=None")
                spec = X if isinstance(X, ProblemSpec) else open_problem(os.fspath(X))
                self.n_features_in_ = spec.n_features
                self._check_store_targets(spec)
                if self._has_intercept or self._row_weight() is not None:
                    spec = self._copy_store(tmp, spec)
            elif _is_dask(X):
                if X.ndim != 2:
                    raise ValueError(f"X must be 2-D; got a dask array of shape {X.shape}")
                self.n_features_in_ = int(X.shape[1])
                spec = self._write_dask(tmp, X, y)
            else:
                X, y = validate_data(self, X, y, accept_sparse="csr", dtype=np.float64, y_numeric=False)
                spec = self._write_memory(tmp, X, self._targets(y))
            params = self._model_params(spec.n_samples)
            with self._client() as c, warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                res = fit(spec, self._model, model_params=params, sketch=self.sketch, sketch_size=self.sketch_size,
                          solver=self.solver, x0="zeros", seed=int(self.random_state), tol=float(self.tol),
                          max_iter=int(self.max_iter), client=c, block_rows=int(self.block_rows))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if not res.success:
            from sklearn.exceptions import ConvergenceWarning as SkConvergenceWarning

            warnings.warn(f"dsketch: {res.message} (nit={res.nit})", SkConvergenceWarning, stacklevel=3)
        self.n_iter_ = np.array([res.nit]) if isinstance(self, ClassifierMixin) else int(res.nit)
        self.n_passes_ = int(res.n_passes)
        self.fit_result_ = res
        return res.x

    def _check_store_targets(self, spec: ProblemSpec) -> None:
        if not spec.has_b:
            raise ValueError(f"store {spec.path!r} has no row-aligned targets 'b'")

    def _split(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        return (x[:-1], float(x[-1])) if self._has_intercept else (x, 0.0)

    def _linear(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        if _is_dask(X):
            return np.asarray((X @ self._coef_vector()).compute()) + self._intercept_value()
        X = validate_data(self, X, accept_sparse="csr", dtype=np.float64, reset=False)
        return np.asarray(X @ self._coef_vector()).ravel() + self._intercept_value()

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


class LogisticRegression(ClassifierMixin, _EngineGLM):
    """Binary L2-penalised logistic regression with scikit-learn's parameters.

    Minimises ``C sum_i log(1 + exp(-y_i (x_i w + c))) + ||w||^2 / 2`` (``y`` in {-1, 1};
    the intercept ``c`` unpenalised), the objective of
    ``sklearn.linear_model.LogisticRegression(C=C)`` for two classes.

    Parameters
    ----------
    C : float, default 1.0
        Inverse regularisation strength (> 0).
    fit_intercept, tol, max_iter
        As in scikit-learn; ``tol`` is dsketch's relative gradient norm
        ``||g|| <= tol ||g_0||``.
    solver : {"newton", "newton-cg", "gd"}, default "newton"
    sketch : {"auto", "exact", "leverage", ...}, default "auto"
    sketch_size, random_state, client, scheduler, block_rows
        As in :func:`dsketch.fit` (``random_state`` is its ``seed``).

    Attributes
    ----------
    classes_ : ndarray of shape (2,)
    coef_ : ndarray of shape (1, n_features)
    intercept_ : ndarray of shape (1,)
    n_iter_ : ndarray of shape (1,)
    n_passes_ : int
        Passes over the data of the fit.
    fit_result_ : dsketch.FitResult
    """

    _model: ClassVar[str] = "logistic"

    def __init__(self, C: float = 1.0, *, fit_intercept: bool = True, tol: float = 1e-4, max_iter: int = 100,
                 solver: str = "newton", sketch: str = "auto", sketch_size: int | None = None,
                 random_state: int = 0, client: Any = None, scheduler: str | None = None,
                 block_rows: int = 2**17) -> None:
        super().__init__(fit_intercept=fit_intercept, tol=tol, max_iter=max_iter, solver=solver, sketch=sketch,
                         sketch_size=sketch_size, random_state=random_state, client=client,
                         scheduler=scheduler, block_rows=block_rows)
        self.C = C

    def _l2(self, n_samples: int) -> float:
        if not (isinstance(self.C, (int, float, np.floating)) and self.C > 0):
            raise ValueError(f"C must be a positive number; got {self.C!r}")
        return 1.0 / (float(self.C) * n_samples)

    def _targets(self, y: np.ndarray) -> np.ndarray:
        from sklearn.utils.multiclass import check_classification_targets

        check_classification_targets(y)
        classes = np.unique(y)
        if classes.size != 2:
            raise ValueError(
                f"Only binary classification is supported by dsketch's LogisticRegression: y must hold exactly "
                f"2 classes; got {classes.size} class(es) {classes[:5].tolist()}"
            )
        self.classes_ = classes
        return (y == classes[1]).astype(np.float64)

    def _check_store_targets(self, spec: ProblemSpec) -> None:
        super()._check_store_targets(spec)
        self.classes_ = np.array([0.0, 1.0])

    def fit(self, X: Any, y: Any = None) -> LogisticRegression:
        """Fit on an array, sparse matrix, dask array or problem store (then ``y=None``)."""
        x = self._fit_problem(X, y)
        w, c = self._split(x)
        self.coef_ = w[None, :]
        self.intercept_ = np.array([c])
        return self

    def _coef_vector(self) -> np.ndarray:
        return self.coef_[0]

    def _intercept_value(self) -> float:
        return float(self.intercept_[0])

    def decision_function(self, X: Any) -> np.ndarray:
        """``X w + c`` (positive: the second class)."""
        return self._linear(X)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Probabilities of the two classes, shape (n_samples, 2)."""
        from scipy.special import expit

        p = expit(self.decision_function(X))
        return np.column_stack([1.0 - p, p])

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Log-probabilities of the two classes (computed without overflow)."""
        z = self.decision_function(X)
        return np.column_stack([-np.logaddexp(0.0, z), -np.logaddexp(0.0, -z)])

    def predict(self, X: Any) -> np.ndarray:
        """The more probable class label."""
        positive = self.decision_function(X) > 0
        return self.classes_[positive.astype(int)]

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags


class _EngineRegressor(RegressorMixin, _EngineGLM):
    """A regressor: ``coef_`` of shape (n_features,) and a scalar ``intercept_``."""

    def fit(self, X: Any, y: Any = None) -> _EngineRegressor:
        """Fit on an array, sparse matrix, dask array or problem store (then ``y=None``)."""
        w, c = self._split(self._fit_problem(X, y))
        self.coef_, self.intercept_ = w, c
        return self

    def _coef_vector(self) -> np.ndarray:
        return self.coef_

    def _intercept_value(self) -> float:
        return float(self.intercept_)


class PoissonRegressor(_EngineRegressor):
    """Poisson regression with log link and scikit-learn's parameters.

    Minimises ``mean(exp(eta) - y eta) + alpha ||w||^2 / 2`` with ``eta = X w + c`` (the
    objective of ``sklearn.linear_model.PoissonRegressor(alpha=alpha)`` up to a constant).
    ``score`` is scikit-learn's D² (fraction of Poisson deviance explained).
    """

    _model: ClassVar[str] = "poisson"

    def __init__(self, *, alpha: float = 1.0, fit_intercept: bool = True, tol: float = 1e-4, max_iter: int = 100,
                 solver: str = "newton", sketch: str = "auto", sketch_size: int | None = None,
                 random_state: int = 0, client: Any = None, scheduler: str | None = None,
                 block_rows: int = 2**17) -> None:
        super().__init__(fit_intercept=fit_intercept, tol=tol, max_iter=max_iter, solver=solver, sketch=sketch,
                         sketch_size=sketch_size, random_state=random_state, client=client,
                         scheduler=scheduler, block_rows=block_rows)
        self.alpha = alpha

    def _l2(self, n_samples: int) -> float:
        if not (isinstance(self.alpha, (int, float, np.floating)) and self.alpha >= 0):
            raise ValueError(f"alpha must be a number >= 0; got {self.alpha!r}")
        return float(self.alpha)

    def _targets(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y, dtype=np.float64)
        if (y < 0).any():
            raise ValueError("Some value(s) of y are negative which is not allowed for Poisson regression.")
        return y

    def predict(self, X: Any) -> np.ndarray:
        """The predicted mean ``exp(X w + c)``."""
        return np.exp(self._linear(X))

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """D², the fraction of Poisson deviance explained (as scikit-learn's)."""
        from sklearn.metrics import d2_tweedie_score

        return float(d2_tweedie_score(y, self.predict(X), sample_weight=sample_weight, power=1))

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

    def _l2(self, n_samples: int) -> float:
        return 0.0

    def predict(self, X: Any) -> np.ndarray:
        """``X w + c``."""
        return self._linear(X)


#: Tolerance on ``|sum(y) - 1|`` of a distribution target; the one ``dsketch info`` uses for
#: its ``sums_to_one`` flag (:func:`dsketch.store.describe.describe`).
_SUM_TOL = 1e-6


def _check_distribution(where: str, fix: str, *, n_non_finite: int, minimum: float, total: float) -> None:
    """Raise ValueError unless the summarised target is a finite distribution (>= 0, sum 1)."""
    what = "the target of SoftmaxRegression is a distribution over the rows of X (non-negative, summing to 1)"
    if n_non_finite:
        raise ValueError(f"{where} holds {n_non_finite} NaN or infinite value(s); {what}: {fix}")
    if minimum < 0:
        raise ValueError(f"{where} has negative entries (minimum {minimum:.6g}); {what}: {fix}")
    if not abs(total - 1.0) <= _SUM_TOL:
        raise ValueError(f"{where} must sum to 1 (within {_SUM_TOL:g}) but sums to {total:.12g}; {what}: {fix}")


class SoftmaxRegression(RegressorMixin, _EngineGLM):
    r"""Softmax regression over the rows of ``X`` (Deng, Li & Song; the engine model "softmax").

    Fits a target distribution ``y`` over the ``n`` rows of ``X`` by the softmax of the
    linear predictor ``X coef``, with the row-weighted regulariser of the paper at a
    constant weight ``w_i = sqrt(alpha)``:

    .. math::

        \min_{x}\; \tfrac12 \lVert f(x) - y \rVert_2^2 + \tfrac{\alpha}{2} \lVert X x \rVert_2^2,
        \qquad f(x) = \frac{\exp(X x)}{\langle \exp(X x), 1_n \rangle},

    i.e. ``1/2 ||softmax(X x) - y||^2 + alpha/2 ||X x||^2``: the objective of
    :class:`dsketch.models.SoftmaxRegression` (MODELS.md section 3) with ``w = sqrt(alpha) 1_n``.
    Its gradient is ``X^T (f*c - <f,c> f + alpha v)`` with ``v = X x``, ``c = f - y``; the
    Hessian is ``X^T (diag(D) + U C U^T) X`` (diagonal plus rank 2, see the model).

    Parameters
    ----------
    alpha : float >= 0 or {"weak", "strong"}, default "weak"
        The L2 weight on the linear predictor, in the model's own scale (``alpha = w^2``).
        Since ``f`` lies on the simplex its entries are O(1/n), the data term is O(1/n) and
        its curvature O(1/n^2) (MODELS.md section 1.1b): a fixed ``alpha`` of order one
        drives ``coef_`` to about 0 (the uniform distribution). The named regimes are those
        of :meth:`dsketch.models.SoftmaxRegression.default_w`, resolved at ``fit`` into
        ``alpha_``:

        * ``"weak"``: ``alpha = (0.3 / n)^2``, comparable to the data term's curvature, so
          the data decide the optimum;
        * ``"strong"``: the papers' regime ``alpha = 6 (1 + max(y)) + 1`` (between 7 and
          13), under which the Hessian is at least ``sigma_min(X)^2 I`` everywhere (MODELS.md
          section 3); the regulariser dominates and ``coef_`` is close to 0.

        ``alpha = 0`` (no regulariser) is allowed, but the minimiser then need not exist,
        nor be unique (it is not when a combination of the columns of ``X`` is constant,
        see Notes).
    tol : float, default 1e-4
        dsketch's relative gradient norm ``||g|| <= tol ||g_0||``, with ``g_0`` the gradient
        at the start ``coef = 0`` (the uniform distribution), as for the other estimators.
        (``dsketch.fit(..., x0="auto")``, the model's log-linear warm start, takes fewer
        iterations but measures ``tol`` against a gradient that is at rounding level when
        ``y`` is an exact softmax.)
    max_iter : int, default 100
    solver : {"newton", "newton-cg", "gd"}, default "newton"
    sketch : {"auto", "exact", "leverage", ...}, default "auto"
    sketch_size, random_state, client, scheduler, block_rows
        As in :func:`dsketch.fit` (``random_state`` is its ``seed``).

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,)
    alpha_ : float
        The L2 weight used (``alpha`` itself, or its named regime resolved for the data).
    n_features_in_ : int
    n_iter_ : int
    n_passes_ : int
        Passes over the data of the fit.
    fit_result_ : dsketch.FitResult

    Notes
    -----
    ``fit(X, y)``: ``y`` must be a distribution over the rows of ``X``: finite,
    non-negative, and summing to 1 within ``1e-6`` (the tolerance of the ``sums_to_one``
    flag of ``dsketch info``); otherwise ``ValueError`` says what is wrong (pass
    ``y / y.sum()`` for non-negative weights that do not sum to 1). The estimator checks
    and does not normalise, as the engine model validates nothing and would fit any ``b``
    as given (``dsketch.fit(store, "softmax")`` remains for that). A store path is checked
    the same way (its ``b`` is streamed once) and is copied, block by block, with
    ``w = sqrt(alpha_)`` (its own ``w``, if any, is not used).

    There is no intercept: ``softmax(X x + c 1_n) = softmax(X x)`` for every ``c``, so a
    constant column is not identifiable by the data term (only the regulariser would
    pick its value). Likewise the distribution is over the rows of one ``X``: ``predict``
    on a subset of rows renormalises over that subset.

    The objective is not convex. From ``coef = 0`` the Hessian is often indefinite in the
    first iterations when ``alpha`` is small (the data term's diagonal ``(2f - y) f`` is
    negative on rows with ``y_i > 2/n``); the solver then takes its eigenvalue-floored
    Newton step and emits a ``dsketch.errors.NumericalWarning``. This is expected, and
    harmless when the fit converges (``fit_result_.success``; a scikit-learn
    ``ConvergenceWarning`` otherwise).

    ``score`` is R^2, ``1 - ||f - y||^2 / ||y - mean(y)||^2``. For a distribution
    ``mean(y) = 1/n`` is the uniform distribution, ``softmax(X 0)``: the score is the
    fraction of the squared error of the uniform prediction that the fit removes.

    References
    ----------
    Y. Deng, Z. Li, Z. Song. Attention scheme inspired softmax regression.
    arXiv 2304.10411 (2023).

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.special import softmax
    >>> from dsketch.estimators import SoftmaxRegression
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((500, 4))
    >>> y = softmax(X @ np.array([1.0, -0.5, 0.2, 0.0]))
    >>> est = SoftmaxRegression(alpha=0.0, tol=1e-10).fit(X, y)  # exact targets: no regulariser needed
    >>> est.coef_.round(6)
    array([ 1. , -0.5,  0.2,  0. ])
    >>> bool(np.isclose(est.predict(X).sum(), 1.0)), est.score(X, y) > 0.999999
    (True, True)
    """

    _model: ClassVar[str] = "softmax"

    def __init__(self, *, alpha: float | str = "weak", tol: float = 1e-4, max_iter: int = 100,
                 solver: str = "newton", sketch: str = "auto", sketch_size: int | None = None,
                 random_state: int = 0, client: Any = None, scheduler: str | None = None,
                 block_rows: int = 2**17) -> None:
        # no super().__init__: it would set fit_intercept, which this estimator does not take
        self.alpha = alpha
        self.tol = tol
        self.max_iter = max_iter
        self.solver = solver
        self.sketch = sketch
        self.sketch_size = sketch_size
        self.random_state = random_state
        self.client = client
        self.scheduler = scheduler
        self.block_rows = block_rows

    @property
    def _has_intercept(self) -> bool:
        return False

    def _l2(self, n_samples: int) -> float:
        return 0.0  # the regulariser is the row weight w (_row_weight), not a coefficient penalty

    def _model_params(self, n_samples: int) -> dict[str, Any]:
        return {}

    def _row_weight(self) -> float | None:
        return float(np.sqrt(self.alpha_))

    def _resolve_alpha(self, n_samples: int, b_max: float) -> None:
        """Validate ``alpha`` and set ``alpha_`` for ``n_samples`` rows with ``max(y) = b_max``."""
        from dsketch.models.softmax import REGIMES
        from dsketch.models.softmax import SoftmaxRegression as SoftmaxModel

        if isinstance(self.alpha, str) and self.alpha in REGIMES:
            self.alpha_ = SoftmaxModel.default_w(n_samples, self.alpha, b_max=b_max) ** 2
            return
        number = isinstance(self.alpha, (int, float, np.integer, np.floating)) and not isinstance(self.alpha, bool)
        if not (number and np.isfinite(self.alpha) and self.alpha >= 0):
            raise ValueError(f"alpha must be a finite number >= 0 or one of {REGIMES}; got {self.alpha!r}")
        self.alpha_ = float(self.alpha)

    def _targets(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y, dtype=np.float64)
        finite = np.isfinite(y)
        _check_distribution("y", "pass y / y.sum() for non-negative weights", n_non_finite=int(y.size - finite.sum()),
                            minimum=float(y[finite].min(initial=np.inf)), total=float(y[finite].sum()))
        self._resolve_alpha(y.size, float(y.max()))
        return y

    def _check_store_targets(self, spec: ProblemSpec) -> None:
        from dsketch.store.describe import describe

        super()._check_store_targets(spec)
        t = describe(spec)["target"]
        n_finite = spec.n_samples - t["non_finite"]
        _check_distribution(f"the targets b of store {spec.path!r}",
                            "write a store whose b is divided by its sum (dsketch.write_problem)",
                            n_non_finite=t["non_finite"], minimum=t["min"],
                            total=t["mean"] * n_finite if n_finite else 0.0)
        self._resolve_alpha(spec.n_samples, t["max"])

    def fit(self, X: Any, y: Any = None) -> SoftmaxRegression:
        """Fit on an array, sparse matrix, dask array or problem store (then ``y=None``).

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_samples, n_features), dask array, or a store path
        y : array-like of shape (n_samples,), or None for a store
            The target distribution over the rows of ``X`` (finite, >= 0, summing to 1).

        Returns
        -------
        self : SoftmaxRegression

        Raises
        ------
        ValueError
            When ``y`` is not a distribution over the rows of ``X`` (the message says which
            condition fails and how to fix it), or ``alpha`` is invalid.
        """
        self.coef_ = self._fit_problem(X, y)
        return self

    def _coef_vector(self) -> np.ndarray:
        return self.coef_

    def _intercept_value(self) -> float:
        return 0.0

    def predict(self, X: Any) -> np.ndarray:
        """The fitted distribution over the rows of ``X``: ``softmax(X coef)``.

        Returns
        -------
        f : ndarray of shape (n_samples,)
            Non-negative and summing to 1 (computed with the max shift, without overflow).
        """
        from scipy.special import softmax

        return np.asarray(softmax(self._linear(X)))

    def predict_proba(self, X: Any) -> np.ndarray:
        """The same distribution as :meth:`predict`, ``softmax(X coef)`` of shape (n_samples,).

        It is one distribution over the rows, not per-row class probabilities of shape
        (n_samples, n_classes) as a classifier's ``predict_proba``: the row ``i`` is
        drawn with probability ``predict_proba(X)[i]``.
        """
        return self.predict(X)

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """R^2 of the fitted distribution: ``1 - ||f - y||^2 / ||y - mean(y)||^2``, ``f = predict(X)``.

        For a distribution ``y`` the reference ``mean(y) = 1/n`` is the uniform
        distribution (``coef = 0``): 1 is a perfect fit, 0 no better than uniform.
        """
        return float(super().score(X, y, sample_weight=sample_weight))

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.positive_only = True
        return tags


__all__ = ["LinearRegression", "LogisticRegression", "PoissonRegressor", "SoftmaxRegression"]
