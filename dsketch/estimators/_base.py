"""Shared machinery of the estimators: inputs written to Zarr, the shared cluster, the fit."""

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
from sklearn.base import BaseEstimator, ClassifierMixin
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
        block_rows: int | None = None,
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
                          max_iter=int(self.max_iter), client=c, adaptive_sketch=True,
                          block_rows=None if self.block_rows is None else int(self.block_rows))
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
