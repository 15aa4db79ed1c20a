"""Zarr storage: problem stores, row-block reads, atomic writers, result groups.

This layer knows nothing about the maths and does not import dask. Public API:

* :func:`open_problem` -> :class:`ProblemSpec` (validated, picklable handle);
* :func:`read_block` -> :class:`Block` (rows ``[r0, r1)`` in memory, validated);
* :func:`read_global` -> an array of the ``global`` subgroup (not row-aligned);
* :func:`write_problem` and :class:`ProblemBuilder` (parallel, block by block), atomic;
* :func:`write_group` / :func:`read_group` for results and checkpoints;
* :mod:`dsketch.store.convert`: ``convert`` from npy / npz / svmlight / AnnData, ``describe``.
"""

from dsketch.errors import StoreExistsError
from dsketch.store import _exit  # noqa: F401 - a quiet exit under load (see the module)
from dsketch.store.blocks import clear_cache, member_sum, read_block, read_global
from dsketch.store.builder import (
    EdgePieces,
    ProblemBuilder,
    default_chunk_rows,
    write_problem,
)
from dsketch.store.groups import read_group, write_group
from dsketch.store.problem import open_problem
from dsketch.store.spec import Block, ProblemSpec

__all__ = [
    "Block",
    "EdgePieces",
    "ProblemBuilder",
    "ProblemSpec",
    "StoreExistsError",
    "clear_cache",
    "default_chunk_rows",
    "member_sum",
    "open_problem",
    "read_block",
    "read_global",
    "read_group",
    "write_group",
    "write_problem",
]
