"""Problems held in the driver's memory: fitted without writing them to a store.

:func:`in_memory` validates arrays as :func:`~dsketch.store.write_problem` would and returns
a :class:`MemoryProblem`, a :class:`~dsketch.store.ProblemSpec` that keeps references to
the caller's arrays. Its row blocks (:meth:`MemoryProblem.block`) are made by the same
reader as blocks of a store (:func:`dsketch.store.blocks.block_from`), so they have the
same dtype, memory alignment, CSR index types and intercept column as the same rows read
from a store written with ``write_problem``; a fit of either gives the same bits. Where
possible a block is a view of the caller's rows (a C-contiguous float64 ``A`` whose rows
start on the reader's alignment; CSR ``data`` and ``indices``; the vectors), otherwise one
aligned copy of those rows. The views are read-only: nothing writes into the caller's
arrays.

Its :attr:`~dsketch.store.ProblemSpec.path` is :data:`MEMORY_PATH` and its fingerprint is
empty, so the checks that a store was not replaced are off.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from dsketch.store.blocks import SUM_STEP, _Arrays, block_from, masked_weights, row_blocks
from dsketch.store.builder import checked_inputs, default_chunk_rows
from dsketch.store.folds import SAMPLE_WEIGHT
from dsketch.store.spec import Block, ProblemSpec
from dsketch.errors import InvalidParameterError

#: The :attr:`~dsketch.store.ProblemSpec.path` of every in-memory problem.
MEMORY_PATH = "<memory>"


@dataclass(frozen=True, eq=False)
class MemoryProblem(ProblemSpec):
    """A problem whose arrays are in the driver's memory (see :func:`in_memory`).

    Equal only to itself. Pickling it pickles the arrays: the engine sends it to no worker
    (it sends the blocks, :meth:`block`, to a Dask cluster when it runs on one).
    """

    arrays: _Arrays | None = field(default=None, repr=False, compare=False)

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)

    def block(self, r0: int, r1: int, members: Sequence[str] = ()) -> Block:
        """Rows ``[r0, r1)`` as a :class:`~dsketch.store.Block` (views where possible)."""
        r0, r1 = int(r0), int(r1)
        if not 0 <= r0 <= r1 <= self.n_samples:
            raise InvalidParameterError(f"row range [{r0}, {r1}) is not inside [0, {self.n_samples}]")
        unknown = [m for m in members if m not in self.members]
        if unknown:
            raise InvalidParameterError(f"the in-memory problem has no row-aligned member(s) {unknown}; "
                             f"available: {list(self.members)}")
        assert self.arrays is not None
        return _read_only(block_from(self, self.arrays, r0, r1, members, check=False))

    def member(self, name: str) -> np.ndarray:
        """A row-aligned member (``b``, ``w`` or an extra) as given."""
        assert self.arrays is not None
        arr = {"b": self.arrays.b, "w": self.arrays.w}.get(name, self.arrays.extra.get(name))
        if arr is None:
            raise InvalidParameterError(
                f"the in-memory problem has no member {name!r}; available: {list(self.members)}"
            )
        return arr

    def member_shape(self, name: str) -> tuple[int, ...]:
        """The shape of a row-aligned member, as given."""
        if self.virtual_weight and name == SAMPLE_WEIGHT:
            return (self.n_samples,)
        return tuple(int(s) for s in np.shape(self.member(name)))

    def member_sum(self, name: str) -> float:
        """:func:`dsketch.store.member_sum` of the arrays (the same slices, the same sum)."""
        virtual = self.virtual_weight and name == SAMPLE_WEIGHT
        values = None if virtual else self.member(name)
        total = 0.0
        for r0, r1 in row_blocks(self.n_samples, SUM_STEP):
            part = None if values is None else np.asarray(values[r0:r1], dtype=np.float64)
            if self.row_mask is not None and name == SAMPLE_WEIGHT:
                part = masked_weights(self, part, r0, r1)
            total += float(np.sum(part))
        return total


def _frozen(a: Any) -> Any:
    if isinstance(a, np.ndarray) and a.flags.writeable and a.base is not None:
        a = a.view()
        a.flags.writeable = False
    return a


def _read_only(blk: Block) -> Block:
    """The block with its views of the caller's arrays made read-only (copies stay as they are)."""
    A = blk.A
    if not sp.issparse(A):
        A = _frozen(A)
    return Block(A=A, b=_frozen(blk.b), w=_frozen(blk.w), extra={k: _frozen(v) for k, v in blk.extra.items()})


def in_memory(
    A: Any,
    b: Any,
    w: Any = None,
    *,
    sample_weight: Any = None,
    offset: Any = None,
    extra: dict[str, Any] | None = None,
) -> MemoryProblem:
    """An in-memory problem: the arguments of :func:`~dsketch.store.write_problem`, checked
    the same way, kept by reference (nothing is copied but a non-canonical CSR matrix).

    Its ``a_chunk_rows`` is the chunking ``write_problem`` would choose. The engine's
    default row blocks (:func:`~dsketch.engine.core.auto_block_rows`) do not depend on the
    chunking, so a fit of it is the fit of any store written from the same arrays.

    Raises
    ------
    ShapeMismatchError, EmptyProblemError, DTypeError, NonFiniteError, StoreFormatError
        For bad inputs, as ``write_problem``.
    """
    A, arrays, extras, dtype = checked_inputs(A, b, w, sample_weight=sample_weight, offset=offset, extra=extra)
    n, d = (int(s) for s in A.shape)
    sparse = sp.issparse(A)
    nnz = int(A.nnz) if sparse else n * d
    chunk = default_chunk_rows(d, n_samples=n, itemsize=8 if dtype == "float64" else 4,
                               density=(nnz / max(1, n * d)) if sparse else 1.0)
    if sparse:
        csr = {"data": A.data, "indices": A.indices, "indptr": A.indptr}
    else:
        csr = dict.fromkeys(("data", "indices", "indptr"))
    arrs = _Arrays(A=None if sparse else A, b=arrays.get("b"), w=arrays.get("w"),
                   extra={k: arrays[k] for k in extras}, **csr)
    return MemoryProblem(
        path=MEMORY_PATH, n_samples=n, n_features=d, sparse=sparse, nnz=nnz, dtype=dtype, has_w=w is not None,
        members=tuple(sorted(extras)), a_chunk_rows=chunk, index_dtype=str(A.indices.dtype) if sparse else None,
        has_b=b is not None, arrays=arrs,
    )
