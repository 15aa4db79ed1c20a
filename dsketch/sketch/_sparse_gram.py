"""The weighted Gram ``A^T diag(w) A`` of a CSR block, straight into a dense ``d x d`` array.

A sparse product (``A.T @ (w A)`` in scipy) builds the result as a sparse matrix first:
for a row block of text- or count-like data, where ``d`` is in the thousands and the Gram
is dense-ish, that format costs more than the arithmetic, and turning it into the dense
array the driver needs costs as much again. Row ``r`` with ``k`` stored entries contributes
``w_r a_ri a_rj`` to ``k (k + 1) / 2`` entries of the upper triangle; the kernel adds them
in place, row after row, then mirrors the triangle. On the benchmark's sparse blocks
(62,500 x 2000, 8.5 entries a row) it is about four times faster than scipy's product.

Indices must be sorted and unique within each row (scipy's canonical format), so that
every pair ``(p, q)``, ``p <= q`` of a row lands in the upper triangle exactly once;
:func:`csr_weighted_gram` makes a canonical copy of a block that is not. Sums are in
float64 whatever the data's dtype.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
import scipy.sparse as sp


@numba.njit(cache=True, nogil=True)
def _add_upper_gram(G: Any, indptr: Any, indices: Any, data: Any, w: Any) -> None:  # pragma: no cover - compiled
    for r in range(indptr.size - 1):
        wr = w[r]
        if wr == 0.0:
            continue
        start, stop = indptr[r], indptr[r + 1]
        for p in range(start, stop):
            row = G[indices[p]]
            v = wr * np.float64(data[p])
            for q in range(p, stop):
                row[indices[q]] += v * np.float64(data[q])


@numba.njit(cache=True, nogil=True)
def _mirror_upper(G: Any) -> Any:  # pragma: no cover - compiled
    """Copy the strict upper triangle onto the lower, in 64 x 64 tiles (cache-friendly)."""
    d = G.shape[0]
    tile = 64
    for i0 in range(0, d, tile):
        for j0 in range(i0, d, tile):
            for i in range(i0, min(i0 + tile, d)):
                for j in range(max(j0, i + 1), min(j0 + tile, d)):
                    G[j, i] = G[i, j]
    return G


@numba.njit(cache=True, nogil=True)
def _symmetric_part(G: Any, out: Any) -> Any:  # pragma: no cover - compiled
    """``out = 0.5 * (G + G^T)`` in 64 x 64 tiles, each pair summed as NumPy sums it."""
    d = G.shape[0]
    tile = 64
    for i0 in range(0, d, tile):
        for j0 in range(i0, d, tile):
            for i in range(i0, min(i0 + tile, d)):
                for j in range(max(j0, i), min(j0 + tile, d)):
                    v = 0.5 * (G[i, j] + G[j, i])
                    out[i, j] = v
                    out[j, i] = 0.5 * (G[j, i] + G[i, j])
    return out


def symmetric_part(G: np.ndarray) -> np.ndarray:
    """``0.5 * (G + G.T)`` for a square float64 ``G``, the same bits as NumPy's expression
    (IEEE addition is commutative) without its strided pass over ``G.T`` (several times
    faster for ``d`` in the thousands)."""
    G = np.asarray(G, dtype=np.float64)
    if G.ndim != 2 or G.shape[0] != G.shape[1] or G.shape[0] < 64:
        return 0.5 * (G + G.T)
    return _symmetric_part(G, np.empty_like(G))


@numba.njit(cache=True, nogil=True)
def _add_upper_gram_cols(G: Any, indptr: Any, indices: Any, data: Any, w: Any, pos: Any,
                         width: int) -> None:  # pragma: no cover - compiled
    """:func:`_add_upper_gram` on the columns ``j`` with ``pos[j] >= 0`` only, column ``j``
    landing at ``pos[j]``: each row's kept entries are gathered first (in their order)."""
    at = np.empty(width, dtype=np.int64)
    val = np.empty(width, dtype=np.float64)
    for r in range(indptr.size - 1):
        wr = w[r]
        if wr == 0.0:
            continue
        m = 0
        for p in range(indptr[r], indptr[r + 1]):
            j = pos[indices[p]]
            if j >= 0:
                at[m] = j
                val[m] = np.float64(data[p])
                m += 1
        for a in range(m):
            row = G[at[a]]
            v = wr * val[a]
            for b in range(a, m):
                row[at[b]] += v * val[b]


def mirror_upper(G: np.ndarray) -> np.ndarray:
    """``G`` (square float64, in place) with its strict upper triangle copied onto the lower."""
    return _mirror_upper(G)  # type: ignore[no-any-return]


def _canonical(A: sp.csr_matrix | sp.csr_array) -> sp.csr_matrix:
    A = sp.csr_matrix(A)
    if not A.has_canonical_format:
        A = A.copy()
        A.sum_duplicates()
    return A


def _row_weights(A: sp.csr_matrix, w: np.ndarray) -> np.ndarray:
    w = np.ascontiguousarray(w, dtype=np.float64)
    if w.shape != (A.shape[0],):
        # internal: the engine passes one weight per row of the block
        raise ValueError(f"weights of shape {w.shape} for a block of {A.shape[0]} rows")
    return w


def csr_weighted_gram_upper(A: sp.csr_matrix | sp.csr_array, w: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The upper triangle (the strict lower one left 0) of ``A_S^T diag(w) A_S`` for the
    columns ``S = cols`` (sorted, unique) of a CSR ``A``, without forming ``A_S``: the same
    sums, in the same order, as :func:`csr_weighted_gram` of ``A[:, cols]``. Upper
    triangles add up over row blocks; :func:`mirror_upper` completes their sum once."""
    A = _canonical(A)
    w = _row_weights(A, w)
    pos = np.full(A.shape[1], -1, dtype=np.int64)
    pos[np.asarray(cols, dtype=np.int64)] = np.arange(len(cols), dtype=np.int64)
    data = A.data if A.data.dtype in (np.float32, np.float64) else A.data.astype(np.float64)
    width = int(np.diff(A.indptr).max(initial=0))
    G = np.zeros((len(cols), len(cols)))  # NumPy's allocation: see csr_weighted_gram
    _add_upper_gram_cols(G, A.indptr, A.indices, data, w, pos, width)
    return G


def csr_weighted_gram(A: sp.csr_matrix | sp.csr_array, w: np.ndarray) -> np.ndarray:
    """``A^T diag(w) A`` for a CSR ``A`` (any weights' signs) as a symmetric float64 array."""
    A = _canonical(A)
    w = _row_weights(A, w)
    data = A.data if A.data.dtype in (np.float32, np.float64) else A.data.astype(np.float64)
    # NumPy's allocation, not the compiled code's: NumPy asks the kernel for huge pages on
    # large arrays (madvise), and the kernel's scattered updates then miss the TLB far less
    # often (twice as fast in a Dask worker, whose allocator returns freed memory at once)
    G = np.zeros((A.shape[1], A.shape[1]))
    _add_upper_gram(G, A.indptr, A.indices, data, w)
    return _mirror_upper(G)


#: The smallest diagonal block :func:`cholesky_solver` eliminates first (and the smallest d
#: it looks for one in): below it a plain Cholesky factorisation costs little anyway.
MIN_DIAGONAL_BLOCK = 256


def diagonal_block(H: np.ndarray) -> np.ndarray | None:
    """Indices ``S`` with ``H[S, S]`` diagonal (exact zeros off the diagonal), or None where
    fewer than :data:`MIN_DIAGONAL_BLOCK` are found.

    The Gram matrix of one-hot columns has such a block for each categorical (two levels of
    one categorical never share a row). ``S`` is found greedily, the columns with the fewest
    off-diagonal nonzeros first, in a fixed order (the same ``S`` for the same ``H``)."""
    d = H.shape[0]
    if d < MIN_DIAGONAL_BLOCK:
        return None
    nz = H != 0
    np.fill_diagonal(nz, False)
    deg = nz.sum(axis=1)
    if d - 1 - int(deg.min()) < MIN_DIAGONAL_BLOCK - 1:  # no column has enough zeros beside it
        return None
    blocked, chosen = np.zeros(d, dtype=bool), []
    for i in np.argsort(deg, kind="stable"):
        if not blocked[i]:
            chosen.append(i)
            blocked |= nz[i]
    return np.sort(np.asarray(chosen)) if len(chosen) >= MIN_DIAGONAL_BLOCK else None
