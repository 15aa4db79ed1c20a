"""Shared machinery of the estimators: the problem (in memory, or written to Zarr for a
cluster), the shared cluster, the fit.

NumPy and scipy.sparse inputs are fitted where they are (:func:`dsketch.in_memory`, on
threads of this process) unless a cluster is asked for (``client``, ``scheduler`` or
``$DSKETCH_SCHEDULER``); dask arrays and stores, and in-memory inputs on a cluster, go
through a problem store and the cluster (the shared in-process one when none is named).
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
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from dsketch.errors import ConvergenceWarning, InvalidParameterError, NonFiniteError, StoreFormatError
from dsketch.store.spec import check_sample_weight_values
from dsketch.store import (
    ProblemBuilder,
    ProblemSpec,
    default_chunk_rows,
    member_sum,
    open_problem,
    read_block,
    write_problem,
)
from dsketch.store.blocks import row_blocks
from dsketch.store.memory import MemoryProblem, in_memory

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


def _row_vector(v: Any, n: int, name: str, *, finite: bool = True) -> np.ndarray:
    """``v`` (array-like or dask) as a float64 vector of ``n`` entries (finite unless
    ``finite=False``), or ValueError."""
    values = np.asarray(v.compute() if _is_dask(v) else v, dtype=np.float64)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values.ravel()
    if values.shape != (n,):
        raise InvalidParameterError(f"{name} must have {n} entries, one per row of X; got shape {values.shape}")
    return _finite(values, name) if finite else values


def _finite(values: np.ndarray, name: str) -> np.ndarray:
    """``values``, or :class:`NonFiniteError` when one is NaN or infinite."""
    if not np.isfinite(values).all():
        raise NonFiniteError(f"{name} holds NaN or infinite values; remove or impute them before fitting")
    return values


def class_offsets(offset: Any, n: int, k: int) -> np.ndarray:
    """``offset`` (array-like or dask) as the finite float64 ``(n, k)`` offsets of a
    ``k``-class model, one a row and class, or :class:`InvalidParameterError`."""
    values = np.asarray(offset.compute() if _is_dask(offset) else offset, dtype=np.float64)
    if values.shape != (n, k):
        hint = " (a vector adds the same number to every class and changes nothing)" if values.ndim == 1 else ""
        raise InvalidParameterError(f"with {k} classes offset must have shape ({n}, {k}), one a row and class "
                                    f"(column j for classes_[j]); got shape {values.shape}{hint}")
    return _finite(values, "offset")


class _EngineGLM(BaseEstimator, ABC):
    """Shared fitting machinery of the GLM estimators (not public)."""

    _model: ClassVar[str] = ""

    def __init__(
        self,
        *,
        fit_intercept: bool = True,
        tol: float = 1e-4,
        max_iter: int = 100,
        solver: str = "auto",
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
    def _l2(self, total_weight: float) -> float:
        """The mean-form L2 weight of the dsketch model for rows of total sample weight
        ``total_weight`` (the row count without sample weights)."""

    def _targets(self, y: np.ndarray) -> np.ndarray:
        return y.astype(np.float64)

    @property
    def _has_intercept(self) -> bool:
        """Whether the fit has an intercept (the GLMs' ``fit_intercept``; the engine appends
        the column of ones, nothing is copied)."""
        return bool(self.fit_intercept)

    def _model_params(self, total_weight: float) -> dict[str, Any]:
        """``model_params`` of :func:`dsketch.fit`: the L2 weight."""
        return {"l2": self._l2(total_weight)}

    def _offset_rows(self, offset: Any, n: int) -> np.ndarray:
        """The offsets given to ``fit``, checked: a finite vector of ``n`` (the classifier's
        multinomial case takes ``(n, K)``); called after :meth:`_targets`."""
        return _row_vector(offset, n, "offset")

    def _row_weight(self) -> float | None:
        """Constant row weight ``w`` written to the store (None: no ``w``; the GLMs)."""
        return None

    # -- data -----------------------------------------------------------------------
    def _on_cluster(self) -> bool:
        """Whether the user asked for a Dask cluster (``client``, ``scheduler`` or
        ``$DSKETCH_SCHEDULER``); otherwise in-memory inputs are fitted on threads."""
        return self.client is not None or self.scheduler is not None or bool(os.environ.get("DSKETCH_SCHEDULER"))

    @contextlib.contextmanager
    def _client(self, spec: ProblemSpec | None = None) -> Iterator[Any]:
        if isinstance(spec, MemoryProblem) and not self._on_cluster():
            yield None  # dsketch.fit runs an in-memory problem on threads
        elif self.client is not None:
            yield self.client
        elif self.scheduler is not None or os.environ.get("DSKETCH_SCHEDULER"):
            from dsketch.engine.client import connect

            with connect(self.scheduler) as c:
                yield c
        else:
            yield _shared_client()

    def _in_memory(self, X: Any, y: np.ndarray, rows: dict[str, np.ndarray]) -> MemoryProblem:
        """The validated arrays as an in-memory problem (nothing copied, nothing written)."""
        w = self._row_weight()
        return in_memory(X, y, None if w is None else np.full(X.shape[0], w), **rows)

    def _write_memory(self, tmp: str, X: Any, y: np.ndarray, rows: dict[str, np.ndarray]) -> ProblemSpec:
        w = self._row_weight()
        return write_problem(os.path.join(tmp, "p.zarr"), X, y, None if w is None else np.full(X.shape[0], w),
                             **rows)

    def _write_dask(self, tmp: str, X: Any, y: Any, rows: dict[str, Any]) -> ProblemSpec:
        """Row block by row block: the dask array is never gathered whole."""
        n, d = (int(s) for s in X.shape)
        chunk = default_chunk_rows(d, n_samples=n)
        X = X.rechunk((chunk, d))
        yv = np.asarray(y.compute() if _is_dask(y) else y)  # labels keep their type (strings too)
        if yv.ndim == 2 and yv.shape[1] == 1:
            yv = yv.ravel()
        if yv.shape != (n,):
            raise InvalidParameterError(f"y must have {n} entries, one per row of X; got shape {yv.shape}")
        yv = self._targets(yv)
        vectors = {name: self._offset_rows(v, n) if name == "offset" else _row_vector(v, n, name)
                   for name, v in rows.items()}
        if "sample_weight" in vectors:
            check_sample_weight_values("input", vectors["sample_weight"])
        w = self._row_weight()
        builder = ProblemBuilder.create(os.path.join(tmp, "p.zarr"), n_samples=n, n_features=d, sparse=False,
                                        chunk_rows=chunk, has_w=w is not None,
                                        extra={name: (v.shape[1:], "float64") for name, v in vectors.items()})
        try:
            for k in range(X.numblocks[0]):
                builder.write_dense_rows(k * chunk, np.asarray(X.blocks[k, 0].compute(), dtype=np.float64))
            builder.write_vector("b", 0, yv)
            for name, v in vectors.items():
                builder.write_vector(name, 0, v)
            if w is not None:
                builder.write_vector("w", 0, np.full(n, w))
            return builder.commit()
        except BaseException:
            builder.abort()
            raise

    def _copy_store(self, tmp: str, spec: ProblemSpec) -> ProblemSpec:
        """A copy of a store with the constant row weight :meth:`_row_weight` as its ``w``
        (streamed block by block; the softmax estimator's regulariser)."""
        rows = spec.a_chunk_rows
        w = self._row_weight()
        builder = ProblemBuilder.create(os.path.join(tmp, "p.zarr"), n_samples=spec.n_samples,
                                        n_features=spec.n_features, sparse=spec.sparse,
                                        nnz=spec.nnz if spec.sparse else None, chunk_rows=rows, has_w=True)
        try:
            offset, edges = 0, []
            for r0, r1 in row_blocks(spec.n_samples, rows):
                blk = read_block(spec, r0, r1)
                if spec.sparse:
                    A = sp.csr_matrix(blk.A)
                    edges.append(builder.write_csr_rows(r0, A.indptr, A.indices, A.data, offset))
                    offset += A.nnz
                else:
                    builder.write_dense_rows(r0, blk.A)
                builder.write_vector("b", r0, blk.b)
                builder.write_vector("w", r0, np.full(blk.n_rows, w))
            if spec.sparse:
                builder.write_edges(edges)
            return builder.commit()
        except BaseException:
            builder.abort()
            raise

    def _fit_problem(self, X: Any, y: Any, sample_weight: Any = None, offset: Any = None) -> tuple[Any, ...]:
        """Validate, fit; return the coefficient vector (intercept last) and result.

        ``sample_weight`` and ``offset`` (row-aligned vectors) become the problem's members
        of those names; a store given as ``X`` brings its own. In-memory inputs are fitted
        in place unless a cluster was asked for; then they, like dask arrays, are written to
        a temporary store first.
        """
        self._check_iteration_params()
        rows = {k: v for k, v in (("sample_weight", sample_weight), ("offset", offset)) if v is not None}
        X, y, targets, spec, tmp = self._validated_inputs(X, y, rows)
        try:
            spec = self._problem_spec(X, y, targets, rows, spec, tmp)
            params = self._model_params(self._total_weight(spec))
            with self._client(spec) as c, warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                res = self._solve(spec, c, params)
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
        if not res.success:
            from sklearn.exceptions import ConvergenceWarning as SkConvergenceWarning

            warnings.warn(f"dsketch: {res.message} (nit={res.nit})", SkConvergenceWarning, stacklevel=3)
        self.n_iter_ = np.array([res.nit]) if isinstance(self, ClassifierMixin) else int(res.nit)
        self.n_passes_ = int(res.n_passes)
        self.fit_result_ = res
        return res.x

    def _check_iteration_params(self) -> None:
        """Refuse a bad ``max_iter`` or ``tol`` before any data are read."""
        if not (isinstance(self.max_iter, (int, np.integer)) and self.max_iter >= 1):
            raise InvalidParameterError(f"max_iter must be a positive integer; got {self.max_iter!r}")
        if not (isinstance(self.tol, (int, float, np.floating)) and self.tol >= 0):
            raise InvalidParameterError(f"tol must be a number >= 0; got {self.tol!r}")

    def _validated_inputs(self, X: Any, y: Any, rows: dict[str, Any]) -> tuple[Any, Any, Any, Any, str | None]:
        """Validate in-memory ``X``, ``y`` and the row vectors; decide where the fit reads.

        Returns ``(X, y, targets, spec, tmp)``: the validated inputs, the model's targets
        (None for a store or a dask array, whose targets are read later), the in-memory
        problem when it is fitted in place (else None) and the temporary directory of a
        store still to be written (else None). ``rows`` is replaced by its validated values
        in place.
        """
        if _is_store(X) or _is_dask(X):
            return X, y, None, None, tempfile.mkdtemp(prefix="dsketch-estimator-")
        X, y = validate_data(self, X, y, accept_sparse="csr", dtype=np.float64, y_numeric=False)
        if "sample_weight" in rows:
            rows["sample_weight"] = _check_sample_weight(rows["sample_weight"], X, dtype=np.float64)
            check_sample_weight_values("input", rows["sample_weight"])
        targets = self._targets(y)
        if "offset" in rows:
            rows["offset"] = self._offset_rows(rows["offset"], X.shape[0])
        if self._on_cluster():  # the cluster's workers read a store: one is written later
            return X, y, targets, None, tempfile.mkdtemp(prefix="dsketch-estimator-")
        # fitted where it is, on this process's threads
        return X, y, targets, self._in_memory(X, targets, rows), None

    def _problem_spec(self, X: Any, y: Any, targets: Any, rows: dict[str, Any], spec: Any, tmp: str | None) -> Any:
        """The problem the solver reads: a given store (copied into ``tmp`` when the
        estimator reweights its rows), a store written into ``tmp`` from a dask array or
        in-memory inputs, or ``spec``, the in-memory problem, as it is."""
        if _is_store(X):
            if y is not None or rows:
                raise InvalidParameterError(
                    "fitting a problem store takes its targets, sample weights and offsets from the store "
                    f"(members 'b', 'sample_weight', 'offset'): pass y=None and no {sorted(rows) or 'y'}"
                )
            spec = X if isinstance(X, ProblemSpec) else open_problem(os.fspath(X))
            self.n_features_in_ = spec.n_features
            self._check_store_targets(spec)
            if self._row_weight() is not None:
                assert tmp is not None
                spec = self._copy_store(tmp, spec)
        elif _is_dask(X):
            if X.ndim != 2:
                raise InvalidParameterError(f"X must be 2-D; got a dask array of shape {X.shape}")
            self.n_features_in_ = int(X.shape[1])
            assert tmp is not None
            spec = self._write_dask(tmp, X, y, rows)
        elif spec is None:
            assert tmp is not None
            spec = self._write_memory(tmp, X, targets, rows)
        return spec

    def _settings(self, client: Any) -> dict[str, Any]:
        """The curvature, solver, seed and cluster of :func:`dsketch.fit` from the parameters."""
        from dsketch.config import Cluster, Curvature, Solver

        return {"curvature": Curvature(self.sketch, size=self.sketch_size),
                "solver": Solver(self.solver, tol=float(self.tol), max_iter=int(self.max_iter)),
                "seed": int(self.random_state),
                "cluster": Cluster(client, block_rows=None if self.block_rows is None else int(self.block_rows))}

    def _solve(self, spec: ProblemSpec, client: Any, params: dict[str, Any]) -> Any:
        """The fit of the problem with the model parameters ``params`` (a FitResult)."""
        from dsketch.api import fit

        return fit(spec, self._model, model_params=params, fit_intercept=self._has_intercept,
                   x0="auto" if self._has_intercept else "zeros", **self._settings(client))

    @staticmethod
    def _total_weight(spec: ProblemSpec) -> float:
        """The sum of the store's sample weights (read in chunks), or its row count."""
        if "sample_weight" not in spec.members:
            return float(spec.n_samples)
        if isinstance(spec, MemoryProblem):
            return spec.member_sum("sample_weight")
        return member_sum(spec, "sample_weight")

    def _check_store_targets(self, spec: ProblemSpec) -> None:
        if not spec.has_b:
            raise StoreFormatError(f"store {spec.path!r} has no row-aligned targets 'b'; write the targets into it "
                                   "(dsketch.write_problem(path, A, b)) or fit the arrays with y")

    def _split(self, x: np.ndarray) -> tuple[np.ndarray, float]:
        return (x[:-1], float(x[-1])) if self._has_intercept else (x, 0.0)

    def _linear(self, X: Any, offset: Any = None) -> np.ndarray:
        """``X coef + intercept (+ offset)``."""
        check_is_fitted(self)
        if _is_dask(X):
            eta = np.asarray((X @ self._coef_vector()).compute()) + self._intercept_value()
        else:
            X = validate_data(self, X, accept_sparse="csr", dtype=np.float64, reset=False)
            eta = np.asarray(X @ self._coef_vector()).ravel() + self._intercept_value()
        return eta if offset is None else eta + _row_vector(offset, eta.shape[0], "offset")

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags
