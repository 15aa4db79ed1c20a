"""Reading row blocks of a problem store (the hot path of every pass over the data).

:func:`read_block` runs inside Dask worker processes once per block and pass. The opened
Zarr arrays are cached per process, keyed on the store's path and the identity of its
directory (inode and modification time), so a store replaced by an atomic overwrite is
reopened rather than read through stale metadata. When that identity changes, the store's
fingerprint is computed again and compared with the one the :class:`ProblemSpec` recorded
when it was opened: a store replaced while a fit runs (another commit at the same path)
raises :class:`~dsketch.errors.StoreChangedError` on the next block read instead of mixing
the data of two stores.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import zarr

from dsketch.errors import (
    ChunkLayoutError,
    DSketchError,
    InvalidParameterError,
    StoreChangedError,
    StoreFormatError,
    StoreNotFoundError,
)
from dsketch.store import _fs, _identity
from dsketch.store.folds import SAMPLE_WEIGHT
from dsketch.store.spec import (
    GLOBAL_GROUP,
    Block,
    ProblemSpec,
    check_csr_indices,
    check_finite,
    check_indptr,
)

_INT32_MAX = np.iinfo(np.int32).max


def row_blocks(n_rows: int, block_rows: int) -> list[tuple[int, int]]:
    """Cut rows ``[0, n_rows)`` into consecutive ``[start, stop)`` blocks of ``block_rows`` rows.

    The one place row ranges are cut into blocks (engine passes, data generation, writers,
    predictions): the last block holds the remainder. ``n_rows = 0`` gives no block.

    Raises
    ------
    ChunkLayoutError
        When ``block_rows`` is not a positive integer or ``n_rows`` is negative.
    """
    if isinstance(block_rows, bool) or int(block_rows) != block_rows or block_rows < 1:
        raise ChunkLayoutError(f"block_rows must be a positive integer; got {block_rows!r}")
    if int(n_rows) != n_rows or n_rows < 0:
        raise ChunkLayoutError(f"the number of rows must be a non-negative integer; got {n_rows!r}")
    n, step = int(n_rows), int(block_rows)
    return [(r0, min(r0 + step, n)) for r0 in range(0, n, step)]


@dataclass(frozen=True)
class _Arrays:
    """The opened Zarr arrays of one problem store."""

    A: Any  # zarr.Array (dense) or None
    data: Any
    indices: Any
    indptr: Any
    b: Any
    w: Any
    extra: dict[str, Any]


@functools.lru_cache(maxsize=32)
def _open_arrays(path: str, sparse: bool, members: tuple[str, ...], ident: tuple[object, ...]) -> _Arrays:
    g = zarr.open_group(path, mode="r")
    a = g["A"]
    csr = {k: a[k] for k in ("data", "indices", "indptr")} if sparse else dict.fromkeys(("data", "indices", "indptr"))
    return _Arrays(
        A=None if sparse else a,
        b=g["b"] if "b" in g else None,
        w=g["w"] if "w" in g else None,
        extra={name: g[name] for name in members},
        **csr,
    )


@functools.lru_cache(maxsize=32)
def _fingerprint_at(path: str, nodes: tuple[str, ...], ident: tuple[object, ...]) -> str:
    return _identity.fingerprint(path, nodes, ident)


def _identity_of(spec: ProblemSpec) -> tuple[object, ...]:
    try:
        return _fs.identity(spec.path)
    except FileNotFoundError:
        raise StoreNotFoundError(
            f"store {spec.path!r} no longer exists (it was opened earlier); reopen it with "
            "dsketch.store.open_problem"
        ) from None


def _check_fingerprint(spec: ProblemSpec, ident: tuple[object, ...]) -> None:
    if not spec.fingerprint:
        return
    try:
        now = _fingerprint_at(spec.path, _identity.spec_nodes(spec), ident)
    except FileNotFoundError:
        now = "(none: the store is gone)"
    if now != spec.fingerprint:
        raise StoreChangedError(
            f"store {spec.path!r} was replaced while in use (fingerprint {spec.fingerprint} when "
            f"opened, {now} now): a fit cannot mix the data of two stores nor report a result for "
            "the store now at that path — start the fit afresh on the new store"
        )


def check_unchanged(spec: ProblemSpec, *, missing_ok: bool = False) -> None:
    """Raise :class:`StoreChangedError` when the store at ``spec.path`` is not the one opened.

    Cheap: one ``stat`` of the store's directory (one metadata request for a URL); its
    metadata are read again only when that identity changed since the last check in this
    process. Nothing is checked for a spec without a fingerprint (built by hand).

    Parameters
    ----------
    missing_ok : bool
        Return quietly when nothing is at the path any more (a removed store is no other
        data; the passes that need it raise :class:`StoreNotFoundError`).
    """
    if not spec.fingerprint:
        return
    try:
        ident = _fs.identity(spec.path)
    except FileNotFoundError:
        if missing_ok:
            return
        raise StoreNotFoundError(f"store {spec.path!r} no longer exists (it was opened earlier)") from None
    _check_fingerprint(spec, ident)


def arrays_for(spec: ProblemSpec) -> _Arrays:
    """The cached opened arrays of ``spec``'s store in this process.

    Raises :class:`StoreChangedError` when the store at the path is no longer the one
    ``spec`` was opened from (checked when the directory's identity changes).
    """
    ident = _identity_of(spec)
    _check_fingerprint(spec, ident)
    return _open_arrays(spec.path, spec.sparse, spec.stored_members, ident)


def clear_cache() -> None:
    """Forget the arrays opened by :func:`read_block` in this process."""
    _open_arrays.cache_clear()
    _fingerprint_at.cache_clear()


#: Alignment (bytes) of the dense arrays a block hands to BLAS. BLAS kernels may sum in a
#: different order for differently aligned inputs; with one fixed alignment a block gives
#: bit-identical products whether it was just read, persisted, moved between workers or
#: taken from the caller's arrays. Where this process's BLAS sums in the same order at every
#: alignment (:func:`alignment_matters`), the dense rows of ``A`` are used where they are.
ALIGNMENT = 64

#: Rows of the probe matrix of :func:`alignment_matters` (odd: the kernels' tails run too)
#: and the most columns its Gram-type products use.
_PROBE_ROWS, _PROBE_GRAM_COLS = 257, 96


def _probe_products(A: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """The BLAS products a pass forms with a dense block ``A`` (as it is, never copied):
    matrix-vector both ways, matrix-matrix with a few and with many outputs both ways, the
    Gram-type ``A^T (D A)`` on leading columns, and the squared row norms."""
    n, d = A.shape
    v, u = rng.standard_normal(d), rng.standard_normal(n)
    V2, V11, U11 = rng.standard_normal((d, 2)), rng.standard_normal((d, 11)), rng.standard_normal((n, 11))
    G = A[:, : min(d, _PROBE_GRAM_COLS)]
    D = rng.random(n)
    return [A @ v, A.T @ u, A @ V2, A @ V11, A.T @ U11, G.T @ (D[:, None] * G),
            np.einsum("ij,ij->i", A, A)]


@functools.lru_cache(maxsize=None)
def alignment_matters(n_features: int) -> bool:
    """Whether this process's BLAS gives a dense block of ``n_features`` columns products
    that depend on the block's memory alignment (checked once per process and width).

    A random ``257 x n_features`` matrix is placed at every 8-byte offset from an
    :data:`ALIGNMENT` boundary and the products a pass forms (:func:`_probe_products`) are
    compared bit for bit with those of the aligned copy. Where they all agree, an unaligned
    block of the caller's arrays gives the same bits as an aligned copy, and is not copied.
    """
    d = int(n_features)
    if d < 1:
        return False
    base = np.random.default_rng(20261205).standard_normal((_PROBE_ROWS, d))
    nbytes = base.nbytes
    buf = np.empty(nbytes + 2 * ALIGNMENT, dtype=np.uint8)
    start = (-buf.ctypes.data) % ALIGNMENT
    reference = None
    for offset in range(0, ALIGNMENT, 8):
        A = buf[start + offset : start + offset + nbytes].view(np.float64).reshape(base.shape)
        A[...] = base
        got = _probe_products(A, np.random.default_rng(7))
        if reference is None:
            reference = got
        elif not all(np.array_equal(a, b) for a, b in zip(got, reference, strict=True)):
            return True
    return False


def blas_ready(A: np.ndarray) -> bool:
    """Whether the dense array ``A`` (float64, C-contiguous, 2-D) can go to BLAS where it
    is: it starts on an :data:`ALIGNMENT` boundary, or alignment does not change this
    process's products for its width (:func:`alignment_matters`)."""
    if A.dtype != np.float64 or not A.flags.c_contiguous or A.ndim != 2:
        return False
    return A.ctypes.data % ALIGNMENT == 0 or A.size == 0 or not alignment_matters(A.shape[1])


def aligned(values: Any, dtype: Any = np.float64) -> np.ndarray:
    """``values`` as a C-contiguous array of ``dtype`` starting on an :data:`ALIGNMENT`
    boundary (returned as is when it already is one, else copied once)."""
    a = np.asarray(values)
    if a.dtype == dtype and a.flags.c_contiguous and a.ctypes.data % ALIGNMENT == 0:
        return a
    out = _aligned_empty(a.shape, dtype)
    out[...] = a
    return out


def _aligned_empty(shape: tuple[int, ...], dtype: Any = np.float64) -> np.ndarray:
    """An uninitialised C-contiguous array starting on an :data:`ALIGNMENT` boundary."""
    dt = np.dtype(dtype)
    size = int(np.prod(shape, dtype=np.int64))
    if size == 0:
        return np.empty(shape, dtype=dt)
    nbytes = size * dt.itemsize
    buf = np.empty(nbytes + ALIGNMENT, dtype=np.uint8)
    off = (-buf.ctypes.data) % ALIGNMENT
    return buf[off : off + nbytes].view(dt).reshape(shape)


def read_slice(path: str, arr: Any, name: str, lo: Any, hi: Any = None, r0: int = 0) -> Any:
    """``arr[lo:hi]`` with storage failures turned into errors that name the store and member.

    A chunk that cannot be decoded (truncated or overwritten bytes: the codec raises) becomes
    :class:`StoreFormatError`; a store that disappeared becomes :class:`StoreNotFoundError`.
    A chunk that is simply missing reads as the fill value (NaN, or -1 for CSR indices), which
    the checks after the read report.
    """
    try:
        return arr[lo] if hi is None else arr[lo:hi]
    except DSketchError:
        raise
    except Exception as exc:  # codec, I/O and metadata errors of any storage backend
        if not _fs.exists(path):
            raise StoreNotFoundError(
                f"store {path!r} disappeared while member {name!r} was being read (rows from {r0}); "
                "the fit cannot continue without its data — restore the store and resume"
            ) from None
        at = f"positions [{lo}, {hi})" if hi is not None else "the requested positions"
        raise StoreFormatError(
            f"store {path!r}: member {name!r} could not be read at {at} "
            f"(rows from {r0}): {type(exc).__name__}: {exc} — a chunk is corrupt or truncated; "
            "rewrite the store or restore it from a copy"
        ) from None


def _append_ones_csr(
    data: np.ndarray, indices: np.ndarray, ip: np.ndarray, d: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR arrays of the rows with an entry 1.0 in column ``d`` appended to each."""
    m = ip.size - 1
    new_ip = ip + np.arange(m + 1, dtype=ip.dtype)
    ends = new_ip[1:] - 1  # the last slot of every new row
    mask = np.ones(data.size + m, dtype=bool)
    mask[ends] = False
    new_data = np.empty(data.size + m)
    new_data[mask] = data
    new_data[ends] = 1.0
    new_indices = np.empty(data.size + m, dtype=np.int64)
    new_indices[mask] = indices
    new_indices[ends] = d
    return new_data, new_indices, new_ip


def _read_dense(spec: ProblemSpec, arrs: _Arrays, r0: int, r1: int) -> np.ndarray:
    values = read_slice(spec.path, arrs.A, "A", r0, r1, r0)
    if not spec.intercept:
        dense = np.asarray(values)
        return dense if blas_ready(dense) else aligned(dense)
    out = _aligned_empty((r1 - r0, spec.n_features))
    out[:, :-1] = values
    out[:, -1] = 1.0
    return out


def _read_csr(spec: ProblemSpec, arrs: _Arrays, r0: int, r1: int) -> sp.csr_matrix:
    where = f"store {spec.path!r}, member 'A'"
    ip = np.asarray(read_slice(spec.path, arrs.indptr, "A/indptr", r0, r1 + 1, r0), dtype=np.int64)
    check_indptr(where, ip, r0, spec.stored_nnz)
    lo, hi = int(ip[0]), int(ip[-1])
    data = np.asarray(read_slice(spec.path, arrs.data, "A/data", lo, hi, r0), dtype=np.float64)
    indices = np.asarray(read_slice(spec.path, arrs.indices, "A/indices", lo, hi, r0))
    ip = ip - lo  # a new array: for in-memory arrays the slice is the caller's indptr
    d = spec.stored_features
    check_csr_indices(where, ip, indices, d, r0)
    check_finite(f"store {spec.path!r}", "A", data, r0, indptr=ip)
    if spec.intercept:  # one more entry per row: the ones of the last column
        data, indices, ip = _append_ones_csr(data, indices, ip, d)
    # int32 index arrays when they fit, so scipy neither copies nor scans them again.
    if spec.n_features <= _INT32_MAX:
        indices = indices.astype(np.int32, copy=False)
        if int(ip[-1]) <= _INT32_MAX:
            ip = ip.astype(np.int32)
    else:
        indices = indices.astype(np.int64, copy=False)
    A = sp.csr_matrix((data, indices, ip), shape=(r1 - r0, spec.n_features), copy=False)
    A.has_sorted_indices = True
    A.has_canonical_format = True
    return A


def read_block(spec: ProblemSpec, r0: int, r1: int, *, members: Sequence[str] = ()) -> Block:
    """Read and validate rows ``[r0, r1)`` of a problem store.

    Exactly ``indptr[r0:r1+1]`` and the matching slices of ``data`` and ``indices`` are read
    for a CSR ``A``. The block is checked on the way (finite values; CSR indices in range
    and strictly increasing per row; ``indptr`` non-decreasing), so a corrupt store fails
    with the same specific error on any pass as with ``open_problem(check="full")``.

    Parameters
    ----------
    spec : ProblemSpec
        From :func:`dsketch.store.open_problem`.
    r0, r1 : int
        Global row range, ``0 <= r0 <= r1 <= spec.n_samples``.
    members : sequence of str, optional
        Row-aligned extra members to read into ``Block.extra``.

    Returns
    -------
    Block
        float64 data: a C-contiguous ndarray, or a ``scipy.sparse.csr_matrix`` of shape
        ``(r1 - r0, n_features)`` with sorted, unique indices.

    Raises
    ------
    ValueError
        For a row range outside ``[0, n_samples]``, or an unknown member name.
    NonFiniteError, InvalidIndicesError, ShapeMismatchError
        When the rows read are corrupt (the message names the member and the global row).
    StoreNotFoundError
        When the store was removed after it was opened.
    StoreChangedError
        When another store was put at the path after it was opened.

    Notes
    -----
    Memory: the block itself plus one temporary of its size (the float64 cast, when the
    store holds another dtype). The opened arrays are cached per process.
    """
    r0, r1 = int(r0), int(r1)
    if not 0 <= r0 <= r1 <= spec.n_samples:
        raise InvalidParameterError(
            f"row range [{r0}, {r1}) is not inside [0, {spec.n_samples}] for store {spec.path!r}; "
            "need 0 <= r0 <= r1 <= n_samples"
        )
    unknown = [m for m in members if m not in spec.members]
    if unknown:
        raise InvalidParameterError(
            f"store {spec.path!r} has no row-aligned member(s) {unknown}; available: {list(spec.members)}"
        )
    return block_from(spec, arrays_for(spec), r0, r1, members)


def block_from(spec: ProblemSpec, arrs: _Arrays, r0: int, r1: int, members: Sequence[str] = (), *,
               check: bool = True) -> Block:
    """Rows ``[r0, r1)`` of the opened arrays ``arrs`` as a validated :class:`Block`.

    The one place a block is made: :func:`read_block` passes a store's Zarr arrays, an
    in-memory problem (:mod:`dsketch.store.memory`) the caller's NumPy arrays, so a block has
    the same dtype, memory alignment, index types and intercept column either way (and the
    fit the same bits). ``check=False`` skips the finiteness checks of the dense values and
    vectors (for arrays that were checked whole already).
    """
    where = f"store {spec.path!r}"
    if spec.sparse:
        A: np.ndarray | sp.csr_matrix = _read_csr(spec, arrs, r0, r1)
    else:
        A = _read_dense(spec, arrs, r0, r1)
        if check:
            check_finite(where, "A", A, r0)
    b = None
    if arrs.b is not None:
        b = np.asarray(read_slice(spec.path, arrs.b, "b", r0, r1, r0), dtype=np.float64)
        if check:
            check_finite(where, "b", b, r0)
    w = None
    if arrs.w is not None:
        w = np.asarray(read_slice(spec.path, arrs.w, "w", r0, r1, r0), dtype=np.float64)
        if check:
            check_finite(where, "w", w, r0)
    extra = {}
    for name in members:
        if name == SAMPLE_WEIGHT and spec.virtual_weight:
            continue
        extra[name] = aligned(read_slice(spec.path, arrs.extra[name], name, r0, r1, r0))
        if check:
            check_finite(where, name, extra[name], r0)
    if spec.row_mask is not None and SAMPLE_WEIGHT in members:
        extra[SAMPLE_WEIGHT] = masked_weights(spec, extra.get(SAMPLE_WEIGHT), r0, r1)
    return Block(A=A, b=b, w=w, extra=extra)


def masked_weights(spec: ProblemSpec, stored: np.ndarray | None, r0: int, r1: int) -> np.ndarray:
    """The sample weights of rows ``[r0, r1)`` of a problem with a row mask: the stored
    ones (or ones) times the mask's 0s and 1s, keyed by the global row."""
    keep = spec.row_mask.keep(r0, r1)
    return aligned(keep if stored is None else np.asarray(stored, dtype=np.float64) * keep)


#: Rows per slice of :func:`member_sum` (a fixed step: the sum does not depend on the chunking).
SUM_STEP = 2**20


def member_sum(spec: ProblemSpec, name: str) -> float:
    """The sum of a 1-D row-aligned member (e.g. ``sample_weight``), read ``SUM_STEP`` rows
    at a time, so a member of any length is summed in bounded memory.

    Raises
    ------
    ValueError
        When the store has no such member; NonFiniteError when it holds NaN or inf.
    """
    if name not in spec.members:
        raise InvalidParameterError(f"store {spec.path!r} has no row-aligned member {name!r}; available: {list(spec.members)}")
    virtual = spec.virtual_weight and name == SAMPLE_WEIGHT
    arr = None if virtual else zarr.open_group(spec.path, mode="r")[name]
    total = 0.0
    for r0, r1 in row_blocks(spec.n_samples, SUM_STEP):
        part = None if virtual else np.asarray(read_slice(spec.path, arr, name, r0, r1, r0), dtype=np.float64)
        if part is not None:
            check_finite(f"store {spec.path!r}", name, part, r0)
        if spec.row_mask is not None and name == SAMPLE_WEIGHT:
            part = masked_weights(spec, part, r0, r1)
        total += float(np.sum(part))
    return total


def read_global(spec: ProblemSpec, name: str) -> np.ndarray:
    """Read a whole array of the store's ``global`` subgroup (not row-aligned) as float64.

    Raises
    ------
    ValueError
        When the store has no such global member (the message lists those it has).
    NonFiniteError
        When the array holds NaN or infinite values.
    StoreNotFoundError
        When the store was removed after it was opened.
    StoreChangedError
        When another store was put at the path after it was opened.
    """
    if name not in spec.global_members:
        raise InvalidParameterError(
            f"store {spec.path!r} has no global member {name!r} (in its 'global' group); "
            f"available: {list(spec.global_members)}"
        )
    if not _fs.exists(spec.path):
        raise StoreNotFoundError(f"store {spec.path!r} no longer exists (it was opened earlier)")
    check_unchanged(spec)
    arr = zarr.open_group(spec.path, mode="r")[f"{GLOBAL_GROUP}/{name}"]
    values = np.asarray(read_slice(spec.path, arr, f"{GLOBAL_GROUP}/{name}", Ellipsis), dtype=np.float64)
    check_finite(f"store {spec.path!r}", f"{GLOBAL_GROUP}/{name}", values.reshape(1, -1), 0)
    return values
