"""Counter-based randomness keyed by (seed, iteration, stream, global row index).

Every random number is a pure function of its key, computed by a SplitMix64-style
integer hash in vectorised NumPy ``uint64`` arithmetic. A row therefore gets the same
numbers whichever block it is read in, whichever worker reads it, and however often a
task is retried; nothing depends on the order of calls.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtri

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)


def _mix(z: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser (a bijection of uint64 with good avalanche)."""
    z = z ^ (z >> _S30)
    z = z * _M1
    z = z ^ (z >> _S27)
    z = z * _M2
    return z ^ (z >> _S31)


def _key(seed: int, iteration: int, stream: int) -> np.uint64:
    with np.errstate(over="ignore"):
        k = _mix(np.array([int(seed) & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))
        k = _mix(k ^ (np.uint64(int(iteration) & 0xFFFFFFFFFFFFFFFF) * _GOLDEN))
        k = _mix(k ^ (np.uint64(int(stream) & 0xFFFFFFFFFFFFFFFF) + _GOLDEN))
    return k[0]


def bits(seed: int, iteration: int, stream: int, counters: np.ndarray) -> np.ndarray:
    """64 random bits per counter (counters: non-negative integers, e.g. global rows)."""
    c = np.asarray(counters).astype(np.uint64, copy=False)
    with np.errstate(over="ignore"):
        return _mix((c * _GOLDEN) ^ _key(seed, iteration, stream))


def uniform(seed: int, iteration: int, stream: int, rows: np.ndarray) -> np.ndarray:
    """Uniform numbers in the open interval (0, 1), one per row."""
    b = bits(seed, iteration, stream, rows) >> np.uint64(11)
    return (b.astype(np.float64) + 0.5) * (1.0 / 2.0**53)


def integers(seed: int, iteration: int, stream: int, rows: np.ndarray, high: int) -> np.ndarray:
    """Integers in ``[0, high)`` (bias below 2**-40 for ``high < 2**24``)."""
    b = bits(seed, iteration, stream, rows)
    return (b % np.uint64(high)).astype(np.int64)


def signs(seed: int, iteration: int, stream: int, rows: np.ndarray) -> np.ndarray:
    """Random signs +1.0 / -1.0, one per row."""
    b = bits(seed, iteration, stream, rows) >> np.uint64(63)
    return 1.0 - 2.0 * b.astype(np.float64)


def standard_normal(seed: int, iteration: int, stream: int, rows: np.ndarray, n_cols: int) -> np.ndarray:
    """Standard normals of shape ``(len(rows), n_cols)``, keyed by (row, column)."""
    r = np.asarray(rows).astype(np.uint64, copy=False)
    counters = r[:, None] * np.uint64(n_cols) + np.arange(n_cols, dtype=np.uint64)[None, :]
    u = uniform(seed, iteration, stream, counters.ravel())
    return ndtri(u).reshape(r.size, n_cols)
