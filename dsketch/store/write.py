"""Atomic writers: problems (in one go or block by block in parallel) and result groups.

Everything is built under a sibling temporary name ``<target>.partial-<uuid>`` and renamed
into place by :meth:`ProblemBuilder.commit` / at the end of :func:`write_group`, so an
interrupted write never leaves anything under the target name, and an interrupted
overwrite leaves the old store intact.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import zarr

from dsketch.errors import DSketchError, NonFiniteError, ShapeMismatchError
from dsketch.store.problem import CSR_ENCODING, ProblemSpec, _check_numeric, clear_cache, open_problem

NNZ_CHUNK = 2**20


class StoreExistsError(DSketchError, FileExistsError):
    """The target store exists and ``overwrite`` was not requested."""


def default_chunk_rows(n_features: int, *, target_bytes: int = 16 * 2**20) -> int:
    """Power-of-two rows per chunk, about ``target_bytes`` of float64, in [2**10, 2**17]."""
    rows = target_bytes / (8.0 * max(1, n_features))
    return 1 << int(np.clip(math.floor(math.log2(max(rows, 1.0))), 10, 17))


def _temp_name(target: str) -> str:
    return f"{target}.partial-{uuid.uuid4().hex[:12]}"


def _check_target(target: str, overwrite: bool) -> None:
    if os.path.exists(target) and not overwrite:
        raise StoreExistsError(f"{target!r} already exists; pass overwrite=True (--overwrite) to replace it")


def _swap_into_place(tmp: str, target: str, overwrite: bool) -> None:
    """Rename ``tmp`` to ``target``; an existing target is moved aside first, then removed."""
    _check_target(target, overwrite)
    old = None
    if os.path.exists(target):
        old = f"{target}.old-{uuid.uuid4().hex[:12]}"
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    clear_cache()


@dataclass(frozen=True)
class EdgePieces:
    """CSR entries that share a chunk with another block; written by the driver."""

    pieces: tuple[tuple[int, np.ndarray, np.ndarray], ...] = field(default=())


@dataclass(frozen=True)
class ProblemBuilder:
    """Build a problem store piece by piece (picklable: ship it to Dask workers).

    Dense rows and vectors may be written concurrently from different processes for
    disjoint row ranges that start on a multiple of ``chunk_rows``. CSR entries are
    written by :meth:`write_csr_rows`, which writes only whole chunks of ``data`` and
    ``indices`` and returns the partial ones for :meth:`write_edges` on the driver.
    """

    target: str
    tmp: str
    n_samples: int
    n_features: int
    sparse: bool
    nnz: int | None
    chunk_rows: int
    nnz_chunk: int
    overwrite: bool

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        n_samples: int,
        n_features: int,
        sparse: bool,
        nnz: int | None = None,
        dtype: str = "float64",
        has_w: bool = False,
        extra: dict[str, tuple[tuple[int, ...], str]] | None = None,
        chunk_rows: int | None = None,
        attrs: dict[str, Any] | None = None,
        overwrite: bool = False,
        nnz_chunk: int = NNZ_CHUNK,
    ) -> ProblemBuilder:
        """Create the temporary store with all members allocated (values unwritten)."""
        target = os.path.abspath(os.fspath(path))
        _check_target(target, overwrite)
        if n_samples < 1 or n_features < 1:
            raise ValueError(f"a problem needs at least one row and one column; got ({n_samples}, {n_features})")
        if sparse and (nnz is None or nnz < 0):
            raise ValueError("a sparse problem needs nnz >= 0")
        parent = os.path.dirname(target)
        if parent:
            os.makedirs(parent, exist_ok=True)
        rows = int(chunk_rows or default_chunk_rows(n_features))
        tmp = _temp_name(target)
        try:
            g = zarr.open_group(tmp, mode="w")
            if attrs:
                g.attrs.update(json.loads(json.dumps(attrs)))
            if sparse:
                a = g.create_group("A")
                a.attrs.update({"encoding-type": CSR_ENCODING, "encoding-version": "0.1.0",
                                "shape": [int(n_samples), int(n_features)]})
                c = int(min(nnz_chunk, max(int(nnz or 0), 1)))
                a.create_array("data", shape=(int(nnz or 0),), chunks=(c,), dtype=dtype)
                idx_dtype = "int32" if n_features < 2**31 else "int64"
                a.create_array("indices", shape=(int(nnz or 0),), chunks=(c,), dtype=idx_dtype)
                a.create_array("indptr", shape=(n_samples + 1,), chunks=(rows,), dtype="int64")
            else:
                g.create_array("A", shape=(n_samples, n_features), chunks=(rows, n_features), dtype=dtype)
            g.create_array("b", shape=(n_samples,), chunks=(rows,), dtype="float64")
            if has_w:
                g.create_array("w", shape=(n_samples,), chunks=(rows,), dtype="float64")
            for name, (tail, dt) in (extra or {}).items():
                g.create_array(name, shape=(n_samples, *tail), chunks=(rows, *tail), dtype=dt)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls(target=target, tmp=tmp, n_samples=n_samples, n_features=n_features,
                   sparse=sparse, nnz=nnz, chunk_rows=rows, nnz_chunk=c if sparse else 0,
                   overwrite=overwrite)

    def _group(self) -> zarr.Group:
        return zarr.open_group(self.tmp, mode="r+")

    def write_dense_rows(self, r0: int, rows: np.ndarray) -> None:
        """Write rows ``[r0, r0 + len(rows))`` of dense ``A``."""
        rows = np.asarray(rows)
        self._group()["A"][r0 : r0 + rows.shape[0]] = rows

    def write_vector(self, name: str, r0: int, values: np.ndarray) -> None:
        """Write rows ``[r0, r0 + len(values))`` of ``b``, ``w`` or an extra member."""
        values = np.asarray(values)
        self._group()[name][r0 : r0 + values.shape[0]] = values

    def write_csr_rows(
        self, r0: int, indptr_local: np.ndarray, indices: np.ndarray, data: np.ndarray, nnz_offset: int
    ) -> EdgePieces:
        """Write a CSR row block whose entries start at global position ``nnz_offset``."""
        a = self._group()["A"]
        ip = np.asarray(indptr_local, dtype=np.int64)
        m = ip.size - 1
        a["indptr"][r0 : r0 + m] = ip[:-1] + int(nnz_offset)
        o0, o1 = int(nnz_offset), int(nnz_offset) + int(ip[-1])
        c = self.nnz_chunk
        a0 = -(-o0 // c) * c
        a1 = (o1 // c) * c
        pieces = []
        if a1 > a0:
            a["data"][a0:a1] = data[a0 - o0 : a1 - o0]
            a["indices"][a0:a1] = indices[a0 - o0 : a1 - o0]
            if a0 > o0:
                pieces.append((o0, np.array(data[: a0 - o0]), np.array(indices[: a0 - o0])))
            if o1 > a1:
                pieces.append((a1, np.array(data[a1 - o0 :]), np.array(indices[a1 - o0 :])))
        elif o1 > o0:
            pieces.append((o0, np.array(data), np.array(indices)))
        return EdgePieces(tuple(pieces))

    def write_edges(self, edges: list[EdgePieces | None]) -> None:
        """Write the partial-chunk CSR entries returned by :meth:`write_csr_rows` (driver only)."""
        a = self._group()["A"]
        for e in edges:
            if e is None:
                continue
            for off, data, idx in e.pieces:
                a["data"][off : off + data.size] = data
                a["indices"][off : off + idx.size] = idx

    def commit(self) -> ProblemSpec:
        """Finish the store (last ``indptr`` entry), validate it and rename it into place."""
        if self.sparse:
            self._group()["A"]["indptr"][self.n_samples] = int(self.nnz or 0)
        open_problem(self.tmp)  # metadata validation before the store becomes visible
        _swap_into_place(self.tmp, self.target, self.overwrite)
        return open_problem(self.target)

    def abort(self) -> None:
        """Remove the temporary store."""
        shutil.rmtree(self.tmp, ignore_errors=True)


def write_problem(
    path: str | os.PathLike[str],
    A: Any,
    b: np.ndarray,
    w: np.ndarray | None = None,
    *,
    extra: dict[str, np.ndarray] | None = None,
    attrs: dict[str, Any] | None = None,
    chunk_rows: int | None = None,
    overwrite: bool = False,
) -> ProblemSpec:
    """Write an in-memory problem (ndarray or scipy.sparse ``A``) to a new store, atomically.

    Parameters
    ----------
    path : str or path-like
    A : ndarray or scipy.sparse matrix of shape (n_samples, n_features)
    b : ndarray of shape (n_samples,)
    w : ndarray of shape (n_samples,), optional
    extra : dict of str to ndarray, optional
        Row-aligned members (first axis ``n_samples``).
    attrs : dict, optional
        JSON-serialisable metadata stored as group attributes.
    chunk_rows : int, optional
        Rows per chunk (default: a power of two giving ~16 MiB chunks).
    overwrite : bool

    Returns
    -------
    ProblemSpec
    """
    sparse = sp.issparse(A)
    if sparse:
        A = sp.csr_matrix(A)
        A.sum_duplicates()
        A.sort_indices()
    else:
        A = np.asarray(A)
        if A.ndim != 2:
            raise ShapeMismatchError(f"A must be 2-D; got shape {A.shape}")
    _check_numeric(str(path), "A", np.dtype(A.dtype))
    n, d = A.shape
    b = np.asarray(b)
    _check_numeric(str(path), "b", b.dtype)
    if b.shape != (n,):
        raise ShapeMismatchError(f"A has {n} rows but b has shape {b.shape}; b must have shape ({n},)")
    if w is not None:
        w = np.asarray(w)
        _check_numeric(str(path), "w", w.dtype)
        if w.shape != (n,):
            raise ShapeMismatchError(f"A has {n} rows but w has shape {w.shape}; w must have shape ({n},)")
    for name, arr in (extra or {}).items():
        if np.asarray(arr).shape[:1] != (n,):
            raise ShapeMismatchError(f"extra member {name!r} has shape {np.shape(arr)}; its first axis must be {n}")
    vals = A.data if sparse else A
    if vals.dtype.kind == "f" and not np.isfinite(vals).all():
        raise NonFiniteError("A holds NaN or infinite values; remove or impute them before writing")
    builder = ProblemBuilder.create(
        path, n_samples=n, n_features=d, sparse=sparse, nnz=int(A.nnz) if sparse else None,
        dtype="float32" if vals.dtype == np.float32 else "float64", has_w=w is not None,
        extra={k: (np.asarray(v).shape[1:], "float64") for k, v in (extra or {}).items()},
        chunk_rows=chunk_rows, attrs=attrs, overwrite=overwrite,
    )
    try:
        if sparse:
            builder.write_edges([builder.write_csr_rows(0, A.indptr, A.indices, A.data, 0)])
        else:
            builder.write_dense_rows(0, A)
        builder.write_vector("b", 0, b.astype(np.float64))
        if w is not None:
            builder.write_vector("w", 0, w.astype(np.float64))
        for name, arr in (extra or {}).items():
            builder.write_vector(name, 0, np.asarray(arr, dtype=np.float64))
        return builder.commit()
    except BaseException:
        builder.abort()
        raise


def write_group(
    path: str | os.PathLike[str], arrays: dict[str, np.ndarray], attrs: dict[str, Any], *, overwrite: bool = False
) -> None:
    """Write named arrays and JSON attributes to a new Zarr group, atomically."""
    target = os.path.abspath(os.fspath(path))
    _check_target(target, overwrite)
    tmp = _temp_name(target)
    try:
        g = zarr.open_group(tmp, mode="w")
        g.attrs.update(json.loads(json.dumps(attrs)))
        for name, arr in arrays.items():
            arr = np.asarray(arr)
            z = g.create_array(name, shape=arr.shape, dtype=arr.dtype,
                               chunks=arr.shape if arr.size else None)
            if arr.size:
                z[...] = arr
        _swap_into_place(tmp, target, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_group(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read every array and the attributes of a group written by :func:`write_group`."""
    from dsketch.store.problem import _open_group

    g = _open_group(os.path.abspath(os.fspath(path)))
    arrays = {name: np.asarray(node[...]) for name, node in g.arrays()}
    return arrays, dict(g.attrs)
