"""The layout of a new problem store: its codec, its chunking, and the allocation of its
arrays, unwritten (float members filled with NaN, CSR ``indices`` and ``indptr`` with -1),
for :meth:`dsketch.store.builder.ProblemBuilder.create`.

:func:`default_compressors`, :func:`default_chunk_rows` and :data:`NNZ_CHUNK` are also
importable from :mod:`dsketch.store.builder`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import zarr

from dsketch.errors import ChunkLayoutError, EmptyProblemError, InvalidParameterError
from dsketch.store.spec import CSR_ENCODING, CSR_ENCODING_VERSION, RESERVED, check_value_dtype


def default_compressors() -> tuple[Any, ...]:
    """The codec of the row-aligned arrays of a store this module writes: Blosc with LZ4 and
    byte shuffle (level 5).

    Chosen by measurement (``python -m benchmarks.store_passes``; docs/benchmarks.md, "What
    a pass over a store costs"): reading and decoding 200 MB of dense float64 rows on one
    thread took 0.116 s against 0.256 s with zarr's own default, Zstandard level 0, for 2%
    fewer stored bytes; no compression read in 0.065 s but stored 8% more for dense values
    and 47% more for CSR arrays (whose column indices compress). Stores written with any other codec stay
    readable: the codec is recorded in each array's metadata.
    """
    from zarr.codecs import BloscCodec

    return (BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),)


#: Elements per chunk of CSR ``data`` / ``indices``.
NNZ_CHUNK = 2**20
MIN_CHUNK_ROWS, MAX_CHUNK_ROWS = 2**10, 2**17
INT32_MAX = int(np.iinfo(np.int32).max)


def default_chunk_rows(
    n_features: int, *, n_samples: int | None = None, itemsize: int = 8, density: float = 1.0
) -> int:
    """A power-of-two number of rows per chunk giving about 16 MiB of ``A`` per chunk.

    Parameters
    ----------
    n_features : int
    n_samples : int, optional
        When given, the result is at most the power of two at or above it (zarr stores
        edge chunks at full size, so a tiny problem should not get a huge chunk), and at
        most ``n_samples / 16`` rounded down to a power of two (but not under ``2**10``):
        never longer than the engine's default row blocks
        (:func:`dsketch.engine.core.auto_block_rows`), so those read whole chunks of a
        store written with this chunking.
    itemsize : int
        Bytes per stored value.
    density : float
        Fraction of stored entries (CSR: each also costs a 4-byte column index).

    Returns
    -------
    int
        ``2**k`` clipped to ``[2**10, 2**17]`` (the engine reads blocks of ``2**k`` rows),
        then capped by ``n_samples`` as above.
    """
    per_row = max(1e-9, n_features * min(1.0, max(density, 0.0))) * (itemsize + (4 if density < 1.0 else 0))
    k = math.floor(math.log2(max(16 * 2**20 / per_row, 1.0)))
    rows = int(np.clip(1 << min(k, 40), MIN_CHUNK_ROWS, MAX_CHUNK_ROWS))
    if n_samples is not None and n_samples >= 1:
        sixteenth = 1 << max(int(n_samples) // 16, 1).bit_length() - 1
        rows = min(rows, max(sixteenth, MIN_CHUNK_ROWS), 1 << (int(n_samples) - 1).bit_length())
    return rows


def _as_int_tuple(shape: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in (shape if isinstance(shape, list | tuple) else (shape,)))


def checked_layout(target: str, n_samples: int, n_features: int, sparse: bool, nnz: int | None, dtype: str,
                   extra: dict[str, tuple[tuple[int, ...], str]] | None, chunk_rows: int | None,
                   nnz_chunk: int) -> tuple[int, int, np.dtype, int, int, int]:
    """Check :meth:`~dsketch.store.builder.ProblemBuilder.create`'s shape, dtype and member
    names; return the rows, columns, value dtype, stored entries, rows per chunk and entries
    per CSR chunk (0: dense)."""
    n, d = int(n_samples), int(n_features)
    if n < 1 or d < 1:
        raise EmptyProblemError(f"a problem needs at least one row and one column; got ({n}, {d})")
    if sparse and (nnz is None or int(nnz) < 1):
        raise EmptyProblemError(f"a CSR problem needs nnz >= 1 stored entries; got nnz={nnz}")
    vdt = check_value_dtype(target, "A", dtype)
    if vdt.kind != "f":
        raise InvalidParameterError(f"dtype of A must be a floating dtype ('float64' or 'float32'); got {dtype!r}")
    for name in dict(extra or {}):
        if name in RESERVED or not name or "/" in name or name.startswith("."):
            raise InvalidParameterError(f"extra member name {name!r} is reserved or invalid; use a plain name")
    nnz_total = int(nnz) if sparse else n * d  # type: ignore[arg-type]
    rows = int(chunk_rows) if chunk_rows else default_chunk_rows(d, n_samples=n, itemsize=vdt.itemsize)
    if rows < 1:
        raise ChunkLayoutError(f"chunk_rows must be a positive integer; got {chunk_rows}")
    c = int(min(nnz_chunk, nnz_total)) if sparse else 0
    return n, d, vdt, nnz_total, rows, c


def create_matrix(g: zarr.Group, sparse: bool, n: int, d: int, vdt: np.dtype, nnz_total: int, c: int,
                  rows: int) -> None:
    """Allocate ``A`` in the new store: a CSR group (``data``, ``indices``, ``indptr``) or a
    dense array, unwritten (NaN / -1)."""
    if not sparse:
        g.create_array("A", shape=(n, d), chunks=(rows, d), dtype=vdt, fill_value=np.nan,
                       compressors=default_compressors())
        return
    a = g.create_group("A")
    a.attrs.update({"encoding-type": CSR_ENCODING, "encoding-version": CSR_ENCODING_VERSION, "shape": [n, d]})
    comp = default_compressors()
    a.create_array("data", shape=(nnz_total,), chunks=(c,), dtype=vdt, fill_value=np.nan, compressors=comp)
    idt = "int32" if d <= INT32_MAX else "int64"
    a.create_array("indices", shape=(nnz_total,), chunks=(c,), dtype=idt, fill_value=-1, compressors=comp)
    a.create_array("indptr", shape=(n + 1,), chunks=(rows,), dtype="int64", fill_value=-1, compressors=comp)


def create_row_members(g: zarr.Group, target: str, n: int, rows: int, has_b: bool, has_w: bool,
                       extra: dict[str, tuple[tuple[int, ...], str]]) -> list[str]:
    """Allocate the row-aligned members (``b``, ``w`` and ``extra``, unwritten); return their names."""
    vectors = [*(["b"] if has_b else []), *(["w"] if has_w else [])]
    for name in vectors:
        g.create_array(name, shape=(n,), chunks=(rows,), dtype="float64", fill_value=np.nan,
                       compressors=default_compressors())
    for name, (tail, dt) in extra.items():
        edt = check_value_dtype(target, name, dt)
        tail = _as_int_tuple(tail)
        g.create_array(
            name, shape=(n, *tail), chunks=(rows, *tail), dtype=edt,
            fill_value=np.nan if edt.kind == "f" else 0, compressors=default_compressors(),
        )
        vectors.append(name)
    return vectors
