"""The problem handle (:class:`ProblemSpec`), the in-memory row block (:class:`Block`), and
the cheap array checks shared by the readers and writers.

Every check raises a specific :mod:`dsketch.errors` exception whose message names the
store, the member, the global row when there is one, and the fix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import scipy.sparse as sp

from dsketch.errors import (
    DTypeError,
    InvalidParameterError,
    InvalidIndicesError,
    NonFiniteError,
    ShapeMismatchError,
    StoreFormatError,
)

#: Members with a fixed meaning; every other array in a problem group is row-aligned extra.
#: ``global`` is a subgroup of arrays that are *not* row-aligned (for example the m-vector of
#: targets of the two-layer model, whose rows are paired with the row-aligned ``A2T``).
RESERVED = ("A", "b", "w", "global")
GLOBAL_GROUP = "global"
CSR_ENCODING = "csr_matrix"
CSR_ENCODING_VERSION = "0.1.0"
#: dtype kinds accepted for values: bool (read as 0/1), signed, unsigned, floating.
VALUE_KINDS = "biuf"
INDEX_KINDS = "iu"


@dataclass(frozen=True)
class ProblemSpec:
    """A validated, picklable handle on a problem store (returned by ``open_problem``).

    It holds only paths and metadata, so it is cheap to ship to Dask workers, which read
    row blocks with :func:`dsketch.store.read_block`.

    Attributes
    ----------
    path : str
        Absolute path of the store (a Zarr group directory).
    n_samples : int
        Rows of ``A``.
    n_features : int
        Columns of ``A``.
    sparse : bool
        True when ``A`` is a CSR group, False when it is a dense array.
    nnz : int
        Stored entries of ``A`` (``n_samples * n_features`` when dense).
    dtype : str
        dtype of ``A``'s values as stored (blocks are always read as float64).
    has_w : bool
        Whether the store has row weights ``w``.
    members : tuple of str
        Names of further row-aligned members, sorted.
    has_b : bool
        Whether the store has row-aligned targets ``b`` (every store except those of the
        paired models, whose targets are the global member ``global/b``).
    global_members : tuple of str
        Names of the arrays in the ``global`` subgroup (not row-aligned), sorted.
    a_chunk_rows : int
        Rows per chunk of dense ``A``; for CSR the chunk length of ``indptr``.
    index_dtype : str or None
        dtype of the CSR column ``indices``; None when dense.
    attrs : str
        The group's attributes as a JSON string (see :attr:`metadata`), without the
        content-version token.
    intercept : bool
        True for the view :meth:`with_intercept` returns: blocks are read with a column of
        ones appended (last), and ``n_features`` and ``nnz`` count it. The store itself has
        no such column.
    fingerprint : str
        The identity of the store's contents when it was opened: a hash of its metadata
        documents, which include the random token every commit writes (for stores without
        one, also the directory's identity). Every block read and every checkpoint checks
        that the store at :attr:`path` still has it (``StoreChangedError`` otherwise); an
        empty string (a spec built by hand) turns the check off.
    row_mask : RowMask or None
        Set on the view :meth:`with_row_mask` returns: every block's ``sample_weight`` is
        multiplied by the mask (0 on the rows it leaves out). The store is not changed.
    virtual_weight : bool
        True when ``sample_weight`` is among :attr:`members` only because of the row mask
        (the store has none: the weights are the mask's 0s and 1s).
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
    attrs: str = field(default="{}", repr=False)
    has_b: bool = True
    global_members: tuple[str, ...] = ()
    fingerprint: str = field(default="", repr=False)
    intercept: bool = False
    row_mask: Any = None
    virtual_weight: bool = False

    def with_row_mask(self, mask: Any) -> ProblemSpec:
        """This store read with its sample weights multiplied by ``mask`` (a
        :class:`~dsketch.store.folds.RowMask` or
        :class:`~dsketch.store.folds.RowSubset`: 1 on the rows it keeps, 0 on the others), a
        member ``sample_weight`` of ones added where the store has none; nothing is written.
        For the GLMs this is the fit (or the score) of the kept rows alone; the other models
        refuse sample weights, hence a masked store."""
        from dsketch.store.folds import SAMPLE_WEIGHT, RowMask, RowSubset

        if not isinstance(mask, (RowMask, RowSubset)):
            raise InvalidParameterError(f"with_row_mask takes a dsketch.RowMask or RowSubset; got {mask!r}")
        if isinstance(mask, RowSubset) and mask.kept.size != self.n_samples:
            raise InvalidParameterError(f"the row subset is of {mask.kept.size} rows; the problem has "
                                        f"{self.n_samples}")
        if self.row_mask is not None:
            raise InvalidParameterError(f"the problem {self.path!r} already has a row mask ({self.row_mask}); "
                                        "mask the unmasked problem")
        if SAMPLE_WEIGHT in self.members:
            return replace(self, row_mask=mask)
        return replace(self, row_mask=mask, virtual_weight=True, members=tuple(sorted((*self.members, SAMPLE_WEIGHT))))

    @property
    def n_kept_rows(self) -> int:
        """The rows the row mask keeps (all ``n_samples`` without one): the others have
        weight 0, so no loss, gradient or curvature, and a uniform row sample spends its
        size on these (:class:`~dsketch.sketch.UniformSampler`)."""
        return self.n_samples if self.row_mask is None else self.row_mask.n_kept(self.n_samples)

    @property
    def stored_members(self) -> tuple[str, ...]:
        """The row-aligned members the store holds (:attr:`members` less a virtual
        ``sample_weight``)."""
        if not self.virtual_weight:
            return self.members
        return tuple(m for m in self.members if m != "sample_weight")

    def with_intercept(self) -> ProblemSpec:
        """This store read with a column of ones appended to ``A`` (an intercept), without
        writing anything: :func:`~dsketch.store.read_block` adds the column to every block."""
        if self.intercept:
            return self
        return replace(self, intercept=True, n_features=self.n_features + 1, nnz=self.nnz + self.n_samples)

    def global_array(self, name: str) -> np.ndarray:
        """An array of the store's ``global`` subgroup, checked
        (:func:`dsketch.store.read_global`). Models read their non-row-aligned data through
        the spec they are bound to, so that they need not import the storage layer."""
        from dsketch.store.blocks import read_global

        return read_global(self, name)

    def member_shape(self, name: str) -> tuple[int, ...]:
        """The shape of the row-aligned member ``name`` (from the store's metadata)."""
        import zarr

        if self.virtual_weight and name == "sample_weight":
            return (self.n_samples,)
        if name not in self.stored_members:
            raise StoreFormatError(f"store {self.path!r} has no row-aligned member {name!r}; "
                                   f"its members: {list(self.members)}")
        return tuple(int(s) for s in zarr.open_group(self.path, mode="r")[name].shape)

    @property
    def stored_features(self) -> int:
        """Columns of ``A`` as stored (``n_features`` less the intercept column)."""
        return self.n_features - int(self.intercept)

    @property
    def stored_nnz(self) -> int:
        """Entries of ``A`` as stored (``nnz`` less the intercept column's)."""
        return self.nnz - (self.n_samples if self.intercept else 0)

    @property
    def metadata(self) -> dict[str, Any]:
        """The group's attributes, as a fresh dict (for example ``["dsketch"]["x_planted"]``)."""
        return dict(json.loads(self.attrs))

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_samples, n_features)``."""
        return (self.n_samples, self.n_features)

    @property
    def density(self) -> float:
        """``nnz / (n_samples * n_features)``."""
        return self.nnz / float(self.n_samples * self.n_features)


@dataclass
class Block:
    """Rows ``[r0, r1)`` of a problem, in memory, validated.

    Attributes
    ----------
    A : ndarray of shape (n_rows, n_features) or scipy.sparse.csr_matrix
        C-contiguous float64, or CSR float64 with sorted, unique, in-range indices.
    b : ndarray of shape (n_rows,) or None
        Targets, float64 (None when the store has no row-aligned ``b``).
    w : ndarray of shape (n_rows,) or None
        Row weights, float64, when the store has ``w``.
    extra : dict of str to ndarray
        The requested row-aligned members, float64, first axis ``n_rows``.
    """

    A: np.ndarray | sp.csr_matrix
    b: np.ndarray | None
    w: np.ndarray | None
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_rows(self) -> int:
        """Number of rows in the block."""
        return int(self.A.shape[0])


def _as_dtype(dtype: Any) -> np.dtype[Any] | None:
    try:
        return np.dtype(dtype)
    except TypeError:
        return None


def check_value_dtype(where: str, name: str, dtype: Any) -> np.dtype[Any]:
    """Return ``dtype`` as a NumPy dtype if it holds numbers, else raise :class:`DTypeError`.

    Booleans are accepted and read as 0/1; object, string, complex and datetime dtypes are
    rejected (a store is never unpickled).
    """
    dt = _as_dtype(dtype)
    if dt is None or dt.kind not in VALUE_KINDS:
        raise DTypeError(
            f"{where}: member {name!r} has dtype {dtype}, which is not numeric; problem stores hold "
            "only booleans, integers or floating-point numbers (object, string and complex "
            "dtypes are rejected) — rewrite it as float64 (strings: encode them as numbers first)"
        )
    return dt


def check_index_dtype(where: str, name: str, dtype: Any) -> np.dtype[Any]:
    """Return ``dtype`` if it is an integer dtype, else raise :class:`DTypeError`."""
    dt = _as_dtype(dtype)
    if dt is None or dt.kind not in INDEX_KINDS:
        raise DTypeError(
            f"{where}: CSR member {name!r} has dtype {dtype}; it must be an integer dtype "
            "(int32 or int64) — rewrite it with dsketch.store.write_problem"
        )
    return dt


#: Entries per slice of :func:`_all_finite`: its temporaries stay in the cache, where one
#: mask of a whole in-memory ``A`` would be an eighth of ``A``'s size, written and read once.
FINITE_STEP = 2**16


def _all_finite(values: np.ndarray) -> bool:
    """Whether every entry of ``values`` is finite, checked a slice of rows at a time."""
    per_row = max(1, values.size // max(1, values.shape[0]))
    step = max(1, FINITE_STEP // per_row)
    return all(bool(np.isfinite(values[i : i + step]).all()) for i in range(0, values.shape[0], step))


def check_finite(where: str, name: str, values: np.ndarray, r0: int, indptr: np.ndarray | None = None) -> None:
    """Raise :class:`NonFiniteError` naming the first global row holding NaN or inf.

    Parameters
    ----------
    where : str
        The store (or "input") named in the message.
    name : str
        The member.
    values : ndarray
        Rows of the member (first axis = rows), or CSR ``data`` when ``indptr`` is given.
    r0 : int
        Global index of the first row.
    indptr : ndarray, optional
        Local CSR ``indptr`` mapping entries of ``values`` to rows.
    """
    if values.dtype.kind != "f" or values.size == 0 or _all_finite(values):
        return
    flat = ~np.isfinite(values.reshape(values.shape[0], -1)).all(axis=1)
    first = int(np.flatnonzero(flat)[0])
    local = first if indptr is None else int(np.searchsorted(indptr, first, side="right")) - 1
    hint = " (a ProblemBuilder store reads NaN where a block was never written)" if where != "input" else ""
    raise NonFiniteError(
        f"{where}: member {name!r} holds NaN or infinite values (first at row {r0 + local}); remove "
        f"or impute them before fitting{hint}"
    )


def check_sample_weight_values(where: str, values: np.ndarray, r0: int = 0) -> None:
    """Raise :class:`StoreFormatError` naming the first row whose sample weight is negative
    (non-finite values are :func:`check_finite`'s)."""
    neg = np.asarray(values) < 0
    if neg.any():
        first = int(np.argmax(neg))
        raise StoreFormatError(
            f"{where}: member 'sample_weight' holds {int(neg.sum())} negative value(s) (first at row "
            f"{r0 + first}: {float(values[first])!r}); sample weights must be >= 0"
        )


def check_indptr(where: str, indptr: np.ndarray, r0: int, nnz: int | None = None) -> None:
    """Check that a (slice of a) CSR ``indptr`` never decreases and stays inside ``[0, nnz]``.

    Raises
    ------
    ShapeMismatchError
        Naming the first offending global row.
    """
    if indptr.size == 0:
        return
    steps = np.diff(indptr)
    if steps.size and steps.min() < 0:
        row = r0 + int(np.flatnonzero(steps < 0)[0])
        raise ShapeMismatchError(
            f"{where}: CSR 'indptr' decreases at row {row} ({int(indptr[row - r0])} -> "
            f"{int(indptr[row - r0 + 1])}); indptr must be non-decreasing — the store is corrupt or "
            "was never completely written; rewrite it"
        )
    lo, hi = int(indptr[0]), int(indptr[-1])
    if lo < 0 or (nnz is not None and hi > nnz):
        raise ShapeMismatchError(
            f"{where}: CSR 'indptr' for rows from {r0} points outside [0, {nnz}] (got {lo} .. {hi}); "
            "the store is corrupt or was never completely written; rewrite it"
        )


def check_csr_indices(where: str, indptr: np.ndarray, indices: np.ndarray, n_features: int, r0: int) -> None:
    """Check CSR column indices: inside ``[0, n_features)`` and strictly increasing per row.

    Parameters
    ----------
    indptr : ndarray of shape (n_rows + 1,)
        Local row pointers, starting at 0 and ending at ``len(indices)``.
    indices : ndarray of shape (nnz_block,)
    n_features : int
    r0 : int
        Global index of the first row (for the message).

    Raises
    ------
    InvalidIndicesError
        Naming the first offending global row.
    """
    if indices.size == 0:
        return

    def row_of(entry: int) -> int:
        return r0 + int(np.searchsorted(indptr, entry, side="right")) - 1

    if int(indices.min()) < 0 or int(indices.max()) >= n_features:
        i = int(np.flatnonzero((indices < 0) | (indices >= n_features))[0])
        raise InvalidIndicesError(
            f"{where}: CSR column index {int(indices[i])} in row {row_of(i)} is outside "
            f"[0, {n_features}); the store is corrupt or its 'shape' attribute is wrong — rewrite it"
        )
    bad = np.diff(indices.astype(np.int64, copy=False)) <= 0
    starts = indptr[1:-1]
    bad[starts[(starts > 0) & (starts < indices.size)] - 1] = False  # a new row may restart
    if bad.any():
        i = int(np.flatnonzero(bad)[0]) + 1
        raise InvalidIndicesError(
            f"{where}: CSR column indices of row {row_of(i)} are not strictly increasing "
            "(unsorted or duplicated); rewrite A canonically (scipy: A.sum_duplicates(); "
            "A.sort_indices(); then dsketch.store.write_problem)"
        )
