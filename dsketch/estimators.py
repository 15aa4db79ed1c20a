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


__all__ = ["LinearRegression", "LogisticRegression", "PoissonRegressor"]
