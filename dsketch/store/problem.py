"""Problem stores: open, validate, and read row blocks.

A problem store is one Zarr v3 group with members

* ``A``: a dense 2-D array ``(n, d)`` chunked by rows only, or a CSR group in AnnData's
  encoding (attributes ``encoding-type: "csr_matrix"``, ``encoding-version``,
  ``shape: [n, d]``; arrays ``data``, ``indices``, ``indptr``);
* ``b``: ``(n,)`` targets; optional ``w``: ``(n,)`` row weights;
* optional further arrays whose first axis has length ``n`` (row-aligned members).

Nothing here knows about the maths.
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import zarr

from dsketch.errors import (
    ChunkLayoutError,
    DTypeError,
    EmptyProblemError,
    EncodingError,
    InvalidIndicesError,
    NonFiniteError,
    ShapeMismatchError,
    StoreFormatError,
    StoreNotFoundError,
)

RESERVED = ("A", "b", "w")
CSR_ENCODING = "csr_matrix"


@dataclass(frozen=True)
class ProblemSpec:
    """A validated, picklable handle on a problem store.

    Attributes
    ----------
    path : str
        Absolute path of the store.
    n_samples, n_features : int
        Shape of ``A``.
    sparse : bool
        CSR (True) or dense (False) ``A``.
    nnz : int
        Stored entries of ``A`` (``n * d`` when dense).
    dtype : str
        dtype of ``A``'s values.
    has_w : bool
        Whether the store has row weights ``w``.
    members : tuple of str
        Names of further row-aligned members.
    a_chunk_rows : int
        Rows per chunk of dense ``A`` (CSR: entries per chunk of ``indptr``).
    index_dtype : str or None
        dtype of CSR ``indices``.
    attrs_json : str
        The group's attributes, as JSON (see :attr:`metadata`).
    """

    path: str
    n_samples: int
    n_features: int
    sparse: bool
    nnz: int
    dtype: str
    has_w: bool
    members: tuple[str, ...] = ()
    a_chunk_rows: int = 0
    index_dtype: str | None = None
    attrs_json: str = field(default="{}", repr=False)

    @property
    def metadata(self) -> dict[str, Any]:
        """The store group's attributes."""
        return dict(json.loads(self.attrs_json))

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_samples, self.n_features)


@dataclass
class Block:
    """Rows ``[r0, r1)`` of a problem, in memory.

    Attributes
    ----------
    A : ndarray of shape (n_rows, n_features) or scipy.sparse.csr_matrix
    b : ndarray of shape (n_rows,)
    w : ndarray of shape (n_rows,) or None
    extra : dict of str to ndarray
    """

    A: Any
    b: np.ndarray
    w: np.ndarray | None
    extra: dict[str, np.ndarray] = field(default_factory=dict)


# --------------------------------------------------------------------------- opening
def _open_group(path: str) -> zarr.Group:
    if not os.path.exists(path):
        raise StoreNotFoundError(
            f"no store at {path!r}; create one with 'dsketch make-data', 'dsketch convert' "
            "or dsketch.write_problem"
        )
    try:
        return zarr.open_group(path, mode="r")
    except Exception as exc:  # zarr raises several types for "not a group"
        raise StoreFormatError(
            f"{path!r} exists but is not a Zarr group ({type(exc).__name__}: {exc}); "
            "a problem store is a Zarr group with members 'A' and 'b'"
        ) from None


def _check_numeric(path: str, name: str, dtype: np.dtype) -> None:
    if dtype.kind not in "fiu":
        raise DTypeError(
            f"{path!r}: member {name!r} has dtype {dtype}, which is not numeric; stores must "
            "hold integer or floating-point numbers (object, string and boolean dtypes are "
            "rejected) — rewrite it as float64"
        )


def _member(group: zarr.Group, path: str, name: str) -> Any:
    if name not in group:
        raise StoreNotFoundError(
            f"{path!r} has no member {name!r} (members: {sorted(group.keys())}); a problem "
            "store needs 'A' (matrix) and 'b' (targets), and optionally 'w'"
        )
    return group[name]


def _array(group: zarr.Group, path: str, name: str) -> zarr.Array:
    node = _member(group, path, name)
    if not isinstance(node, zarr.Array):
        raise StoreFormatError(f"{path!r}: member {name!r} must be an array, found a group")
    _check_numeric(path, name, np.dtype(node.dtype))
    return node


def open_problem(path: str | os.PathLike[str], *, check: str = "metadata") -> ProblemSpec:
    """Open and validate a problem store.

    Parameters
    ----------
    path : str or path-like
        The store (a Zarr group directory).
    check : {"metadata", "full"}
        ``"metadata"`` checks members, encodings, shapes, dtypes, chunk layout and the CSR
        ``indptr``. ``"full"`` also reads everything, chunk by chunk, and checks that all
        values are finite and that CSR column indices are sorted and inside ``[0, d)``.
        (Every block read by a fit is checked the same way, so a fit never proceeds on
        bad data either way.)

    Returns
    -------
    ProblemSpec

    Raises
    ------
    StoreNotFoundError, StoreFormatError, EncodingError, ShapeMismatchError,
    EmptyProblemError, DTypeError, ChunkLayoutError, NonFiniteError, InvalidIndicesError
    """
    if check not in ("metadata", "full"):
        raise ValueError(f"check must be 'metadata' or 'full'; got {check!r}")
    path = os.path.abspath(os.fspath(path))
    g = _open_group(path)
    a = _member(g, path, "A")
    index_dtype = None
    if isinstance(a, zarr.Group):
        enc = a.attrs.get("encoding-type")
        if enc != CSR_ENCODING:
            raise EncodingError(
                f"{path!r}: group 'A' has encoding-type {enc!r}; dsketch reads "
                f"'{CSR_ENCODING}' groups (AnnData's CSR encoding) or dense 2-D arrays — "
                "convert CSC data to CSR first (scipy: A.tocsr())"
            )
        shape = a.attrs.get("shape")
        if not (isinstance(shape, (list, tuple)) and len(shape) == 2):
            raise EncodingError(f"{path!r}: CSR group 'A' needs a 'shape' attribute [n, d]; got {shape!r}")
        n, d = int(shape[0]), int(shape[1])
        data = _array(a, path + "/A", "data")
        indices = _array(a, path + "/A", "indices")
        indptr = _array(a, path + "/A", "indptr")
        if data.ndim != 1 or indices.ndim != 1 or indptr.ndim != 1:
            raise ShapeMismatchError(f"{path!r}: CSR arrays data/indices/indptr must be 1-D")
        if indices.dtype.kind not in "iu" or indptr.dtype.kind not in "iu":
            raise DTypeError(f"{path!r}: CSR indices and indptr must be integers; got {indices.dtype}, {indptr.dtype}")
        if indptr.shape[0] != n + 1:
            raise ShapeMismatchError(
                f"{path!r}: CSR shape attribute says {n} rows but indptr has {indptr.shape[0]} "
                f"entries (expected n + 1 = {n + 1})"
            )
        if data.shape[0] != indices.shape[0]:
            raise ShapeMismatchError(
                f"{path!r}: CSR data has {data.shape[0]} entries but indices has {indices.shape[0]}"
            )
        ip = indptr[:]
        if n > 0 and (ip[0] != 0 or np.any(np.diff(ip) < 0) or ip[-1] != data.shape[0]):
            raise ShapeMismatchError(
                f"{path!r}: CSR indptr must start at 0, never decrease and end at len(data) = "
                f"{data.shape[0]}; got start {ip[0]}, end {ip[-1]}"
            )
        sparse, nnz, dtype = True, int(data.shape[0]), str(data.dtype)
        chunk_rows = int(indptr.chunks[0])
        index_dtype = str(indices.dtype)
    elif isinstance(a, zarr.Array):
        _check_numeric(path, "A", np.dtype(a.dtype))
        if a.ndim != 2:
            raise ShapeMismatchError(f"{path!r}: dense 'A' must be 2-D; got shape {a.shape}")
        n, d = (int(s) for s in a.shape)
        if d > 0 and a.chunks[1] != d:
            raise ChunkLayoutError(
                f"{path!r}: dense 'A' with shape {a.shape} has chunks {a.chunks}; it must be "
                f"chunked by rows only (chunks=(rows, {d})) — rewrite it with "
                f"dsketch.write_problem or zarr chunks=(r, {d})"
            )
        sparse, nnz, dtype = False, n * d, str(a.dtype)
        chunk_rows = int(a.chunks[0])
    else:  # pragma: no cover - zarr only has arrays and groups
        raise StoreFormatError(f"{path!r}: member 'A' is neither an array nor a group")
    if n == 0 or d == 0 or nnz == 0:
        raise EmptyProblemError(
            f"{path!r}: the design matrix is empty (shape ({n}, {d}), {nnz} stored entries); "
            "a problem needs at least one row, one column and one non-zero"
        )
    b = _array(g, path, "b")
    if b.shape != (n,):
        raise ShapeMismatchError(f"{path!r}: 'A' has {n} rows but 'b' has shape {b.shape}; b must have shape ({n},)")
    has_w = "w" in g
    if has_w:
        w = _array(g, path, "w")
        if w.shape != (n,):
            raise ShapeMismatchError(f"{path!r}: 'A' has {n} rows but 'w' has shape {w.shape}; w must have shape ({n},)")
    members = []
    for name in sorted(g.keys()):
        if name in RESERVED:
            continue
        node = g[name]
        if isinstance(node, zarr.Array):
            _check_numeric(path, name, np.dtype(node.dtype))
            if node.ndim == 0 or node.shape[0] != n:
                raise ShapeMismatchError(
                    f"{path!r}: extra member {name!r} has shape {node.shape}; row-aligned members "
                    f"need {n} rows on their first axis"
                )
            members.append(name)
    spec = ProblemSpec(
        path=path,
        n_samples=n,
        n_features=d,
        sparse=sparse,
        nnz=nnz,
        dtype=dtype,
        has_w=has_w,
        members=tuple(members),
        a_chunk_rows=chunk_rows,
        index_dtype=index_dtype,
        attrs_json=json.dumps(dict(g.attrs)),
    )
    if check == "full":
        step = max(1, min(n, (1 << 24) // max(1, d if not sparse else max(1, nnz // n))))
        for r0 in range(0, n, step):
            read_block(spec, r0, min(n, r0 + step), members=spec.members)
    return spec


# --------------------------------------------------------------------------- reading
@functools.lru_cache(maxsize=16)
def _arrays(path: str) -> dict[str, Any]:
    g = zarr.open_group(path, mode="r")
    out: dict[str, Any] = {"b": g["b"], "w": g["w"] if "w" in g else None}
    a = g["A"]
    if isinstance(a, zarr.Group):
        out.update(data=a["data"], indices=a["indices"], indptr=a["indptr"])
    else:
        out["A"] = a
    for name in g.keys():
        if name not in RESERVED and isinstance(g[name], zarr.Array):
            out["extra:" + name] = g[name]
    return out


def clear_cache() -> None:
    """Forget the opened arrays of this process (after a store is replaced)."""
    _arrays.cache_clear()


def _check_finite(spec: ProblemSpec, name: str, values: np.ndarray, r0: int, row_of: Any = None) -> None:
    if values.dtype.kind != "f" or values.size == 0:
        return
    if np.isfinite(values).all():
        return
    bad_rows = ~np.isfinite(values.reshape(values.shape[0], -1)).all(axis=1)
    first = int(np.flatnonzero(bad_rows)[0])
    row = r0 + (first if row_of is None else int(row_of(first)))
    raise NonFiniteError(
        f"{spec.path!r}: member {name!r} holds NaN or infinite values (first at row {row}); "
        "remove or impute them before fitting"
    )


def read_block(spec: ProblemSpec, r0: int, r1: int, *, members: tuple[str, ...] | list[str] = ()) -> Block:
    """Read rows ``[r0, r1)`` of a problem, validating what was read.

    Returns float64 data: a C-contiguous ndarray, or a ``csr_matrix`` with sorted indices.

    Raises
    ------
    ValueError
        For an invalid row range.
    NonFiniteError, InvalidIndicesError
        When the block holds NaN/inf values or bad CSR column indices.
    """
    if not (0 <= r0 < r1 <= spec.n_samples):
        raise ValueError(f"row range [{r0}, {r1}) is outside [0, {spec.n_samples}) or empty")
    try:
        arrs = _arrays(spec.path)
    except FileNotFoundError as exc:
        raise StoreNotFoundError(f"store {spec.path!r} disappeared: {exc}") from None
    if spec.sparse:
        ip = np.asarray(arrs["indptr"][r0 : r1 + 1], dtype=np.int64)
        lo, hi = int(ip[0]), int(ip[-1])
        data = np.asarray(arrs["data"][lo:hi], dtype=np.float64)
        idx = np.asarray(arrs["indices"][lo:hi])
        ip = ip - lo
        if np.any(np.diff(ip) < 0) or ip[-1] != data.size:
            raise ShapeMismatchError(f"{spec.path!r}: CSR indptr decreases within rows [{r0}, {r1})")
        if idx.size:
            rows_of = np.repeat(np.arange(r1 - r0), np.diff(ip))
            bad = (idx < 0) | (idx >= spec.n_features)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise InvalidIndicesError(
                    f"{spec.path!r}: CSR column index {int(idx[i])} in row {r0 + int(rows_of[i])} is "
                    f"outside [0, {spec.n_features}); the store is corrupt or its shape attribute is wrong"
                )
            same_row = rows_of[1:] == rows_of[:-1]
            unsorted = same_row & (idx[1:] <= idx[:-1])
            if unsorted.any():
                i = int(np.flatnonzero(unsorted)[0])
                raise InvalidIndicesError(
                    f"{spec.path!r}: CSR column indices of row {r0 + int(rows_of[i])} are not strictly "
                    "increasing (unsorted or duplicated); rewrite A with sorted indices "
                    "(scipy: A.sum_duplicates(); A.sort_indices())"
                )
            _check_finite(spec, "A", data, r0, row_of=lambda j: rows_of[j])
        A = sp.csr_matrix((data, idx.astype(np.int32, copy=False) if spec.n_features < 2**31 else idx, ip),
                          shape=(r1 - r0, spec.n_features))
        A.has_sorted_indices = True
    else:
        A = np.ascontiguousarray(arrs["A"][r0:r1], dtype=np.float64)
        _check_finite(spec, "A", A, r0)
    b = np.asarray(arrs["b"][r0:r1], dtype=np.float64)
    _check_finite(spec, "b", b, r0)
    w = None
    if arrs["w"] is not None:
        w = np.asarray(arrs["w"][r0:r1], dtype=np.float64)
        _check_finite(spec, "w", w, r0)
    extra = {}
    for name in members:
        key = "extra:" + name
        if key not in arrs:
            raise StoreNotFoundError(f"{spec.path!r} has no row-aligned member {name!r}")
        extra[name] = np.asarray(arrs[key][r0:r1], dtype=np.float64)
        _check_finite(spec, name, extra[name], r0)
    return Block(A=A, b=b, w=w, extra=extra)
