"""Counter-based randomness keyed by (seed, iteration, stream, global row index).

Every random number is a pure function of its key, so a row gets the same numbers
whichever block it is read in, whichever worker reads it and however often a task is
retried; nothing depends on the order of calls or on hidden generator state.

Construction
------------
The key ``(seed, iteration, stream)`` is hashed into a 64-bit stream key ``k``. Row ``i``
then gets the SplitMix64 state ``z_i = mix(i * phi + k)`` (``phi`` the 64-bit golden
ratio, ``mix`` the SplitMix64 finaliser: a bijection of ``uint64`` with full avalanche),
and entry ``(i, j)`` of a per-row sequence gets ``mix(z_i + j * phi)``: for a fixed row,
the columns are the SplitMix64 sequence started at ``z_i`` (Steele, Lea & Flood 2014,
which passes BigCrush). One-per-row draws use column 0, so ``uniform(..., rows)`` equals
column 0 of the per-entry draws. A value for ``(row, column)`` does not depend on how many
columns are requested, so a sketch of size ``s`` is a prefix of one of size ``s' > s``.
All arithmetic is ``uint64`` and wraps modulo ``2**64`` on purpose; NumPy does not warn on
array wrap-around, and the scalar steps run under ``np.errstate(over="ignore")``.

Streams in use: 1 row sampling (``rowsample``), 2-3 CountSketch buckets and signs, 4
Gaussian embedding, 5-6 OSNAP buckets and signs, 7 the JL matrix of approximate leverage
scores (``embed``, ``leverage``). A new consumer takes a new stream number.

References
----------
G. L. Steele, D. Lea, C. H. Flood. Fast splittable pseudorandom number generators.
OOPSLA 2014.
J. K. Salmon, M. A. Moraes, R. O. Dror, D. E. Shaw. Parallel random numbers: as easy as
1, 2, 3. SC 2011 (the counter-based design).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import ndtri
from dsketch.errors import DSketchTypeError, InvalidParameterError

_MASK = 0xFFFFFFFFFFFFFFFF
_PHI = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
_S11 = np.uint64(11)
_TWO_M53 = 1.0 / 2.0**53


def _mix(z: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """SplitMix64 finaliser, applied in place to a fresh ``uint64`` array and returned."""
    z ^= z >> _S30
    z *= _M1
    z ^= z >> _S27
    z *= _M2
    z ^= z >> _S31
    return z


def _check_key(seed: int, iteration: int, stream: int) -> None:
    for name, val in (("seed", seed), ("iteration", iteration), ("stream", stream)):
        if isinstance(val, (bool, np.bool_)) or not isinstance(val, (int, np.integer)):
            raise DSketchTypeError(f"{name} must be an integer; got {type(val).__name__} {val!r}")
    if iteration < 0 or stream < 0:
        raise InvalidParameterError(f"iteration and stream must be >= 0; got iteration={iteration}, stream={stream}")


def stream_key(seed: int, iteration: int, stream: int) -> np.uint64:
    """The 64-bit key of stream ``(seed, iteration, stream)`` (any Python int seed)."""
    _check_key(seed, iteration, stream)
    with np.errstate(over="ignore"):
        k = np.array([int(seed) & _MASK], dtype=np.uint64)
        k = _mix(_mix(k) + np.uint64(int(iteration) & _MASK) * _PHI)
        k = _mix(k ^ (np.uint64(int(stream) & _MASK) * _M1 + _PHI))
    return np.uint64(k[0])


def _rows_u64(rows: ArrayLike) -> NDArray[np.uint64]:
    r = np.asarray(rows)
    if r.dtype.kind not in "iu":
        if r.size == 0:
            return np.zeros(r.shape, dtype=np.uint64)
        raise DSketchTypeError(f"rows must be integer indices; got dtype {r.dtype}")
    if r.dtype.kind == "i" and r.size and int(r.min()) < 0:
        raise InvalidParameterError(f"rows must be non-negative global row indices; got min {int(r.min())}")
    return r.astype(np.uint64)


def bits(seed: int, iteration: int, stream: int, rows: ArrayLike, n_cols: int | None = None) -> NDArray[np.uint64]:
    """64 random bits per row, or per ``(row, column)`` when ``n_cols`` is given.

    Parameters
    ----------
    seed, iteration, stream : int
        The stream key.
    rows : array_like of int
        Non-negative global row indices (any shape when ``n_cols`` is None, else 1-D).
    n_cols : int, optional
        Columns ``0 .. n_cols - 1`` per row.

    Returns
    -------
    ndarray of uint64, shape ``rows.shape`` or ``(len(rows), n_cols)``
    """
    key = stream_key(seed, iteration, stream)
    r = _rows_u64(rows)
    z = _mix(r * _PHI + key)  # SplitMix64 state of each row
    if n_cols is None:
        return _mix(z)  # column 0: mix(z + 0 * phi)
    if int(n_cols) < 0:
        raise InvalidParameterError(f"n_cols must be >= 0; got {n_cols}")
    if r.ndim != 1:
        raise InvalidParameterError(f"rows must be 1-D when n_cols is given; got shape {r.shape}")
    cols = np.arange(int(n_cols), dtype=np.uint64) * _PHI
    return _mix(z[:, None] + cols[None, :])


def _to_unit(b: NDArray[np.uint64]) -> NDArray[np.float64]:
    # top 53 bits, centred in their cell: values in [2**-54, 1 - 2**-54], never 0 or 1
    b >>= _S11
    u = b.astype(np.float64)
    u += 0.5
    u *= _TWO_M53
    return u


def uniform(seed: int, iteration: int, stream: int, rows: ArrayLike) -> NDArray[np.float64]:
    """Uniform numbers in the open interval (0, 1), one per row (53 random bits)."""
    return _to_unit(bits(seed, iteration, stream, rows))


def integers(seed: int, iteration: int, stream: int, rows: ArrayLike, high: int) -> NDArray[np.int64]:
    """Integers in ``[0, high)``, one per row (modulo bias below ``high / 2**64``)."""
    if int(high) < 1:
        raise InvalidParameterError(f"high must be >= 1; got {high}")
    return (bits(seed, iteration, stream, rows) % np.uint64(int(high))).astype(np.int64)


def signs(seed: int, iteration: int, stream: int, rows: ArrayLike) -> NDArray[np.float64]:
    """Random signs ``+1.0`` / ``-1.0``, one per row (the top bit)."""
    top = (bits(seed, iteration, stream, rows) >> np.uint64(63)).astype(np.float64)
    return 1.0 - 2.0 * top


def uniform_cols(seed: int, iteration: int, stream: int, rows: ArrayLike, n_cols: int) -> NDArray[np.float64]:
    """Uniform numbers in (0, 1) of shape ``(len(rows), n_cols)``, keyed by (row, column)."""
    return _to_unit(bits(seed, iteration, stream, rows, n_cols))


def integers_cols(seed: int, iteration: int, stream: int, rows: ArrayLike, n_cols: int, high: int) -> NDArray[np.int64]:
    """Integers in ``[0, high)`` of shape ``(len(rows), n_cols)``, keyed by (row, column)."""
    if int(high) < 1:
        raise InvalidParameterError(f"high must be >= 1; got {high}")
    return (bits(seed, iteration, stream, rows, n_cols) % np.uint64(int(high))).astype(np.int64)


def signs_cols(seed: int, iteration: int, stream: int, rows: ArrayLike, n_cols: int) -> NDArray[np.float64]:
    """Random signs of shape ``(len(rows), n_cols)``, keyed by (row, column)."""
    top = (bits(seed, iteration, stream, rows, n_cols) >> np.uint64(63)).astype(np.float64)
    return 1.0 - 2.0 * top


def standard_normal(seed: int, iteration: int, stream: int, rows: ArrayLike, n_cols: int) -> NDArray[np.float64]:
    """Standard normals of shape ``(len(rows), n_cols)``, keyed by (row, column).

    Inverse-CDF transform of :func:`uniform_cols` (``scipy.special.ndtri``); the tails are
    exact down to ``|z| ~ 8.3`` (the 53-bit uniform resolution).
    """
    u = uniform_cols(seed, iteration, stream, rows, n_cols)
    return ndtri(u, out=u)


__all__ = [
    "bits",
    "integers",
    "integers_cols",
    "signs",
    "signs_cols",
    "standard_normal",
    "stream_key",
    "uniform",
    "uniform_cols",
]
