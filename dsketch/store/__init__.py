"""Zarr storage: problem stores, row-block reads, atomic writers, result groups.

This layer knows nothing about the maths and does not import dask.
"""

from dsketch.store.problem import Block, ProblemSpec, clear_cache, open_problem, read_block
from dsketch.store.write import (
    EdgePieces,
    ProblemBuilder,
    StoreExistsError,
    default_chunk_rows,
    read_group,
    write_group,
    write_problem,
)

__all__ = [
    "Block",
    "EdgePieces",
    "ProblemBuilder",
    "ProblemSpec",
    "StoreExistsError",
    "clear_cache",
    "default_chunk_rows",
    "open_problem",
    "read_block",
    "read_group",
    "write_group",
    "write_problem",
]
