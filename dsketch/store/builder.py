"""Writing problem stores atomically: in one go, or block by block from parallel workers.

Everything is built under a sibling temporary name ``<target>.partial-<hex>`` and renamed
into place by :meth:`ProblemBuilder.commit` (which :func:`write_problem` calls), so an
interrupted write leaves nothing under the target name and an interrupted overwrite
leaves the old store intact.

Float members are created with fill value NaN, CSR ``indices`` and ``indptr`` with -1, so
rows a builder never wrote are caught by the readers' checks instead of reading as zeros.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import scipy.sparse as sp
import zarr

from dsketch.errors import (
    ChunkLayoutError,
    DSketchTypeError,
    InvalidParameterError,
    ShapeMismatchError,
    UnknownNameError,
)
from dsketch.store import _atomic, _identity, outputs
from dsketch.store.blocks import clear_cache
from dsketch.store.layout import (
    INT32_MAX,
    NNZ_CHUNK,
    checked_layout,
    create_matrix,
    create_row_members,
    default_chunk_rows,
)
from dsketch.store.layout import default_compressors as default_compressors
from dsketch.store.problem import open_problem
from dsketch.store.spec import (
    GLOBAL_GROUP,
    ProblemSpec,
    check_csr_indices,
    check_finite,
    check_sample_weight_values,
    check_value_dtype,
)


@dataclass(frozen=True)
class EdgePieces:
    """CSR entries of partially covered ``data``/``indices`` chunks, for the driver to write.

    Attributes
    ----------
    pieces : tuple of (int, ndarray, ndarray)
        ``(global_offset, data, indices)`` runs.
    """

    pieces: tuple[tuple[int, np.ndarray, np.ndarray], ...] = field(default=())

    @property
    def nbytes(self) -> int:
        """Bytes held (what shipping these pieces to the driver costs)."""
        return sum(d.nbytes + i.nbytes for _, d, i in self.pieces)


@dataclass(frozen=True)
class ProblemBuilder:
    """Build a problem store piece by piece; picklable, so it can be shipped to Dask workers.

    Create it with :meth:`create`; then write rows with :meth:`write_dense_rows` /
    :meth:`write_csr_rows` and :meth:`write_vector`, possibly concurrently from several
    processes, for disjoint row ranges that each start on a multiple of ``chunk_rows``
    (each then ends where the next one starts, or at ``n_samples``); finally
    :meth:`commit` (or :meth:`abort`) on the driver.

    For CSR, the caller knows each block's global entry offset ``nnz_offset`` (a prefix
    sum of per-block non-zero counts). :meth:`write_csr_rows` writes only the ``data`` /
    ``indices`` chunks lying wholly inside its block and returns the rest as
    :class:`EdgePieces`, which the driver writes with :meth:`write_edges`. No chunk is
    ever written by two processes.

    Attributes
    ----------
    path : str
        The final (absolute) store path.
    tmp : str
        The temporary sibling directory being written.
    n_samples, n_features : int
    sparse : bool
    nnz : int
        Stored entries (CSR); ``n_samples * n_features`` when dense.
    chunk_rows : int
        Rows per chunk of ``A`` (dense), ``indptr``, ``b``, ``w`` and the extras.
    nnz_chunk : int
        Entries per chunk of CSR ``data`` and ``indices``.
    overwrite : bool
    vectors : tuple of str
        Row-aligned members that :meth:`write_vector` accepts.
    """

    path: str
    tmp: str
    n_samples: int
    n_features: int
    sparse: bool
    nnz: int
    chunk_rows: int
    nnz_chunk: int
    overwrite: bool
    vectors: tuple[str, ...]

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
        has_b: bool = True,
    ) -> ProblemBuilder:
        """Create the temporary store with every member allocated (values still unwritten).

        Parameters
        ----------
        path : str or path-like
            Target store; it appears there only at :meth:`commit`.
        n_samples, n_features : int
            Shape of ``A`` (both >= 1).
        sparse : bool
            CSR (True) or dense (False) ``A``.
        nnz : int, optional
            Stored entries of a CSR ``A`` (>= 1); required when ``sparse``.
        dtype : str
            Floating dtype of ``A``'s values ("float64" or "float32").
        has_w : bool
            Allocate row weights ``w``.
        extra : dict of str to (tuple of int, str), optional
            Row-aligned members: name -> (shape after the row axis, dtype).
        chunk_rows : int, optional
            Rows per chunk; default :func:`default_chunk_rows`.
        attrs : dict, optional
            JSON-serialisable group attributes.
        overwrite : bool
            Replace an existing problem store at ``path`` at commit time (never another
            kind of path; a symlink is kept and the store it names replaced).
        nnz_chunk : int
            Entries per chunk of CSR ``data`` / ``indices``.
        has_b : bool
            Allocate row-aligned targets ``b`` (False for the paired models' stores, whose
            targets are written with :meth:`write_global`).

        Returns
        -------
        ProblemBuilder
        """
        target = _atomic.absolute(path)
        _atomic.check_target(target, overwrite, outputs.PROBLEM)
        n, d, vdt, nnz_total, rows, c = checked_layout(target, n_samples, n_features, sparse, nnz, dtype, extra,
                                                       chunk_rows, nnz_chunk)
        attrs_clean = json.loads(json.dumps(attrs or {}))
        tmp = _atomic.temp_sibling(target)
        try:
            g = zarr.open_group(tmp, mode="w")
            g.attrs.update(attrs_clean)
            create_matrix(g, sparse, n, d, vdt, nnz_total, c, rows)
            vectors = create_row_members(g, target, n, rows, has_b, has_w, dict(extra or {}))
        except BaseException:
            _atomic.discard(tmp)
            raise
        return cls(
            path=target, tmp=tmp, n_samples=n, n_features=d, sparse=bool(sparse), nnz=nnz_total,
            chunk_rows=rows, nnz_chunk=c, overwrite=bool(overwrite), vectors=tuple(vectors),
        )

    # ------------------------------------------------------------------ row writers
    def _array(self, name: str) -> zarr.Array:
        return zarr.open_array(os.path.join(self.tmp, name), mode="r+")

    def _check_rows(self, r0: int, m: int, what: str) -> None:
        if r0 < 0 or r0 + m > self.n_samples:
            raise InvalidParameterError(f"{what}: rows [{r0}, {r0 + m}) are outside [0, {self.n_samples})")
        if r0 % self.chunk_rows:
            raise ChunkLayoutError(
                f"{what}: a row range must start on a chunk boundary (a multiple of chunk_rows = "
                f"{self.chunk_rows}) so that no two writers share a chunk; got r0 = {r0} — "
                "split the rows into blocks of a multiple of chunk_rows"
            )

    def write_dense_rows(self, r0: int, A_rows: np.ndarray) -> None:
        """Write rows ``[r0, r0 + len(A_rows))`` of a dense ``A`` (finite values only)."""
        if self.sparse:
            raise DSketchTypeError("write_dense_rows needs a dense builder; use write_csr_rows for CSR")
        A_rows = np.asarray(A_rows)
        if A_rows.ndim != 2 or A_rows.shape[1] != self.n_features:
            raise ShapeMismatchError(f"dense rows must have shape (m, {self.n_features}); got {A_rows.shape}")
        self._check_rows(int(r0), A_rows.shape[0], "write_dense_rows")
        check_value_dtype("input", "A", A_rows.dtype)
        check_finite("input", "A", A_rows, int(r0))
        self._array("A")[r0 : r0 + A_rows.shape[0]] = A_rows

    def write_vector(self, name: str, r0: int, values: np.ndarray) -> None:
        """Write rows ``[r0, r0 + len(values))`` of ``b``, ``w`` or an extra member."""
        if name not in self.vectors:
            raise UnknownNameError(f"unknown member {name!r}; this builder writes {list(self.vectors)}")
        values = np.asarray(values)
        self._check_rows(int(r0), values.shape[0] if values.ndim else 0, f"write_vector({name!r})")
        check_value_dtype("input", name, values.dtype)
        check_finite("input", name, values, int(r0))
        self._array(name)[r0 : r0 + values.shape[0]] = values

    def write_global(self, name: str, values: Any) -> None:
        """Write a whole array that is not row-aligned into the ``global`` subgroup."""
        if not name or "/" in name or name.startswith("."):
            raise InvalidParameterError(f"global member name {name!r} is invalid; use a plain name")
        arr = np.asarray(values)
        check_value_dtype("input", f"{GLOBAL_GROUP}/{name}", arr.dtype)
        if arr.ndim == 0 or arr.size == 0:
            raise ShapeMismatchError(f"global member {name!r} must be a non-empty array; got shape {arr.shape}")
        check_finite("input", f"{GLOBAL_GROUP}/{name}", arr.reshape(1, -1), 0)
        g = zarr.open_group(os.path.join(self.tmp, GLOBAL_GROUP), mode="a")
        g.create_array(name, shape=arr.shape, dtype=arr.dtype, overwrite=True)[...] = arr

    def write_csr_rows(
        self, r0: int, indptr_local: np.ndarray, indices: np.ndarray, data: np.ndarray, nnz_offset: int
    ) -> EdgePieces:
        """Write a CSR row block whose entries start at global position ``nnz_offset``.

        Writes ``indptr[r0 : r0 + m]`` (global offsets) and the ``data``/``indices`` chunks
        lying wholly inside ``[nnz_offset, nnz_offset + len(data))``.

        Parameters
        ----------
        r0 : int
            First global row; a multiple of ``chunk_rows``.
        indptr_local : ndarray of shape (m + 1,)
            Row pointers of the block, starting at 0.
        indices, data : ndarray of shape (indptr_local[-1],)
            Column indices (sorted, unique within each row) and values.
        nnz_offset : int
            Global position of the block's first entry.

        Returns
        -------
        EdgePieces
            The entries of chunks shared with neighbouring blocks; pass them (from all
            blocks) to :meth:`write_edges` on the driver.
        """
        if not self.sparse:
            raise DSketchTypeError("write_csr_rows needs a CSR builder; use write_dense_rows for dense A")
        r0, o0 = int(r0), int(nnz_offset)
        ip = np.asarray(indptr_local, dtype=np.int64)
        indices, data = np.asarray(indices), np.asarray(data)
        m = ip.size - 1
        if m < 0 or ip[0] != 0 or ip[-1] != data.size or indices.size != data.size:
            raise ShapeMismatchError(
                f"write_csr_rows: indptr_local must start at 0 and end at len(data) == len(indices); "
                f"got indptr [{ip[:1]} .. {ip[-1:]}], len(data)={data.size}, len(indices)={indices.size}"
            )
        self._check_rows(r0, m, "write_csr_rows")
        o1 = o0 + data.size
        if o0 < 0 or o1 > self.nnz:
            raise ShapeMismatchError(f"write_csr_rows: entries [{o0}, {o1}) are outside [0, {self.nnz})")
        check_value_dtype("input", "A", data.dtype)
        check_csr_indices("input", ip, indices, self.n_features, r0)
        indices = indices.astype(np.int32 if self.n_features <= INT32_MAX else np.int64, copy=False)
        check_finite("input", "A", data, r0, indptr=ip)
        self._array("A/indptr")[r0 : r0 + m] = ip[:-1] + o0
        c = self.nnz_chunk
        a0 = -(-o0 // c) * c  # first chunk boundary at or after o0
        a1 = (o1 // c) * c  # last chunk boundary at or before o1
        if o1 == self.nnz and a1 >= a0:
            a1 = o1  # the final, short chunk belongs to this block alone
        if a1 <= a0:
            return EdgePieces(((o0, data.copy(), indices.copy()),) if o1 > o0 else ())
        self._array("A/data")[a0:a1] = data[a0 - o0 : a1 - o0]
        self._array("A/indices")[a0:a1] = indices[a0 - o0 : a1 - o0]
        pieces = []
        if a0 > o0:
            pieces.append((o0, data[: a0 - o0].copy(), indices[: a0 - o0].copy()))
        if o1 > a1:
            pieces.append((a1, data[a1 - o0 :].copy(), indices[a1 - o0 :].copy()))
        return EdgePieces(tuple(pieces))

    def write_edges(self, edges: list[EdgePieces | None]) -> None:
        """Write the edge pieces returned by :meth:`write_csr_rows` (on one process only).

        Adjacent pieces are merged first, so a chunk split between two blocks is written
        once, whole.
        """
        pieces = sorted((p for e in edges if e is not None for p in e.pieces), key=lambda p: p[0])
        runs: list[tuple[int, list[np.ndarray], list[np.ndarray]]] = []
        for off, d, i in pieces:
            if runs and runs[-1][0] + sum(x.size for x in runs[-1][1]) == off:
                runs[-1][1].append(d)
                runs[-1][2].append(i)
            else:
                runs.append((off, [d], [i]))
        data_arr, idx_arr = self._array("A/data"), self._array("A/indices")
        for off, ds, is_ in runs:
            d, i = np.concatenate(ds), np.concatenate(is_)
            data_arr[off : off + d.size] = d
            idx_arr[off : off + i.size] = i

    # ------------------------------------------------------------------ finish
    def commit(self, *, attrs: dict[str, Any] | None = None) -> ProblemSpec:
        """Finish the store and move it into place atomically.

        Writes ``indptr[n_samples] = nnz`` (CSR), merges ``attrs`` and a new random
        content-version token (the store's identity, see :attr:`ProblemSpec.fingerprint`)
        into the group attributes, validates the metadata (:func:`open_problem`) and
        renames the temporary directory to :attr:`path`. On an error the temporary store is left for
        :meth:`abort`.

        Returns
        -------
        ProblemSpec
            The published store.
        """
        if self.sparse:
            self._array("A/indptr")[self.n_samples] = self.nnz
        # a fresh content-version token per commit: a store rewritten at the same path, with
        # the same shape, is told apart from the one a running fit or a checkpoint opened
        token = {_identity.TOKEN_ATTR: uuid.uuid4().hex}
        zarr.open_group(self.tmp, mode="r+").attrs.update({**json.loads(json.dumps(attrs or {})), **token})
        spec = open_problem(self.tmp)
        _atomic.publish(self.tmp, self.path, overwrite=self.overwrite, kind=outputs.PROBLEM)
        clear_cache()
        return replace(spec, path=self.path)

    def abort(self) -> None:
        """Remove the temporary store (nothing is published)."""
        _atomic.discard(self.tmp)


def _canonical(A: Any) -> np.ndarray | sp.csr_matrix:
    if not sp.issparse(A):
        return np.asarray(A)
    A = sp.csr_matrix(A)
    if not A.has_canonical_format:
        A = A.copy()
        A.sum_duplicates()
    return A


def check_offset_shape(shape: tuple[int, ...], n: int) -> None:
    """Raise :class:`ShapeMismatchError` unless ``shape`` is that of offsets for ``n`` rows:
    ``(n,)`` (one a row: the GLMs) or ``(n, K)`` with ``K >= 2`` (one a class: multinomial)."""
    if shape == (n,) or (len(shape) == 2 and shape[0] == n and shape[1] >= 2):
        return
    raise ShapeMismatchError(
        f"offset has shape {tuple(shape)} for {n} rows; give ({n},), one a row (the GLMs), or ({n}, K), one a "
        "row and class (the multinomial model with K classes)"
    )


def checked_inputs(
    A: Any, b: Any, w: Any = None, *, sample_weight: Any = None, offset: Any = None,
    extra: dict[str, Any] | None = None, global_arrays: dict[str, Any] | None = None,
) -> tuple[np.ndarray | sp.csr_matrix, dict[str, np.ndarray], dict[str, Any], str]:
    """Validate the arrays of an in-memory problem, as :func:`write_problem` stores them.

    Returns ``A`` (dense as given, or canonical CSR), the row-aligned arrays by member name
    (``b``, ``w``, ``sample_weight``, ``offset`` and the extras), the extras' names (a dict)
    and the dtype ``A`` is stored with (``"float32"`` for float32 input, else
    ``"float64"``). Nothing is copied except a CSR matrix that is not canonical.
    """
    A = _canonical(A)
    sparse = sp.issparse(A)
    if not sparse and A.ndim != 2:
        raise ShapeMismatchError(f"A must be 2-D (n_samples, n_features); got shape {A.shape}")
    dt = check_value_dtype("input", "A", A.dtype)
    n, d = A.shape
    if b is None and not global_arrays:
        raise ShapeMismatchError(
            "a problem needs targets: pass b (one per row), or global_arrays={'b': ...} for the "
            "paired models (two-layer, softmax-relu reading C)"
        )
    named = {"sample_weight": sample_weight, "offset": offset}
    clash = [k for k in named if named[k] is not None and k in (extra or {})]
    if clash:
        raise InvalidParameterError(f"{clash} given both as keywords and in extra; give each once")
    extra = {**(extra or {}), **{k: v for k, v in named.items() if v is not None}}
    vecs = {**({"b": b} if b is not None else {}), **({"w": w} if w is not None else {}),
            **{k: v for k, v in named.items() if v is not None}}
    arrays = {k: np.asarray(v) for k, v in {**vecs, **extra}.items()}
    for name, arr in arrays.items():
        check_value_dtype("input", name, arr.dtype)
        if name == "offset":
            check_offset_shape(arr.shape, n)
        elif (arr.shape != (n,)) if name in vecs else (arr.ndim == 0 or arr.shape[0] != n):
            raise ShapeMismatchError(
                f"A has {n} rows but {name!r} has shape {arr.shape}; every member must be row-aligned with A"
            )
        check_finite("input", name, arr, 0)
    if sample_weight is not None:
        check_sample_weight_values("input", arrays["sample_weight"])
    check_finite("input", "A", A.data if sparse else A, 0, indptr=A.indptr if sparse else None)
    return A, arrays, extra, "float32" if dt == np.float32 else "float64"


def write_problem(
    path: str | os.PathLike[str],
    A: Any,
    b: Any,
    w: Any = None,
    *,
    sample_weight: Any = None,
    offset: Any = None,
    extra: dict[str, Any] | None = None,
    global_arrays: dict[str, Any] | None = None,
    attrs: dict[str, Any] | None = None,
    chunk_rows: int | None = None,
    overwrite: bool = False,
) -> ProblemSpec:
    """Write an in-memory problem to a new store, atomically.

    Parameters
    ----------
    path : str or path-like
        Target store (a directory).
    A : ndarray or scipy.sparse matrix of shape (n_samples, n_features)
        Dense ``A`` is stored chunked by rows; sparse ``A`` in CSR (duplicates summed,
        indices sorted). float32 stays float32; other numeric dtypes become float64.
    b : array-like of shape (n_samples,) or None
        Row-aligned targets; None for the paired models' stores (their targets go into
        ``global_arrays={"b": ...}``).
    w : array-like of shape (n_samples,), optional
        Regularisation weights of the softmax-type models (not sample weights: the GLMs
        refuse a store that has them).
    sample_weight : array-like of shape (n_samples,), optional
        The GLMs' sample weights (finite, ``>= 0``; scikit-learn's meaning), stored as the
        row-aligned member ``sample_weight``.
    offset : array-like of shape (n_samples,) or (n_samples, K), optional
        The GLMs' offsets (``eta = A x + offset``; e.g. ``log(exposure)`` for a Poisson
        rate), stored as the row-aligned member ``offset``; ``(n_samples, K)``: one a class
        for the ``multinomial`` model (``E = A X + offset``).
    extra : dict of str to array-like, optional
        Row-aligned members (first axis ``n_samples``), stored with their dtype.
    global_arrays : dict of str to array-like, optional
        Arrays that are not row-aligned, stored in the ``global`` subgroup.
    attrs : dict, optional
        JSON-serialisable metadata stored as group attributes.
    chunk_rows : int, optional
        Rows per chunk (default: a power of two giving about 16 MiB chunks of ``A``).
    overwrite : bool
        Replace an existing store.

    Returns
    -------
    ProblemSpec

    Raises
    ------
    StoreExistsError
        ``path`` exists and ``overwrite`` is False.
    ShapeMismatchError, EmptyProblemError, DTypeError, NonFiniteError
        For bad inputs, before anything is written.
    """
    target = _atomic.absolute(path)
    A, arrays, extra, dtype = checked_inputs(A, b, w, sample_weight=sample_weight, offset=offset, extra=extra,
                                             global_arrays=global_arrays)
    n, d = A.shape
    sparse = sp.issparse(A)
    builder = ProblemBuilder.create(
        target, n_samples=n, n_features=d, sparse=sparse, nnz=int(A.nnz) if sparse else None,
        dtype=dtype, has_w=w is not None, has_b=b is not None,
        extra={k: (arrays[k].shape[1:], str(arrays[k].dtype)) for k in (extra or {})},
        chunk_rows=chunk_rows or default_chunk_rows(d, n_samples=n, itemsize=8 if dtype == "float64" else 4,
                                                    density=(A.nnz / max(1, n * d)) if sparse else 1.0),
        attrs=attrs, overwrite=overwrite,
    )
    try:
        if sparse:
            builder.write_edges([builder.write_csr_rows(0, A.indptr, A.indices, A.data.astype(dtype, copy=False), 0)])
        else:
            builder.write_dense_rows(0, A.astype(dtype, copy=False))
        for name, arr in arrays.items():
            builder.write_vector(name, 0, arr)
        for name, arr in (global_arrays or {}).items():
            builder.write_global(name, arr)
        return builder.commit()
    except BaseException:
        builder.abort()
        raise
