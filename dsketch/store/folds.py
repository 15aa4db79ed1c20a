"""Row masks: a split of a problem's rows into folds by global row index, applied to the
sample weights as blocks are read, so that a fold is fitted or scored without rewriting the
store (:meth:`dsketch.store.ProblemSpec.with_row_mask`). :class:`RowMask` is a fold of the
hashed split below; :class:`RowSubset` any given set of rows (a splitter's train or test
indices), held as one byte a row.

Row ``i`` belongs to fold ``mix(i * phi + mix(seed)) mod n_folds`` (``mix`` the SplitMix64
finaliser, a bijection of ``uint64`` with full avalanche; ``phi`` the 64-bit golden ratio):
a pure function of the row's global index, so the folds do not depend on the store's
chunks, the engine's blocks or the number of workers, and :func:`fold_ids` gives the same
assignment in memory (to build the same folds for another library). Fold sizes are binomial,
``n / n_folds`` on average, not exactly equal.
"""

from __future__ import annotations

import functools
import hashlib
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from dsketch.errors import InvalidParameterError

#: The row-aligned member a row mask multiplies (ones where the store has none).
SAMPLE_WEIGHT = "sample_weight"

_PHI = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
#: Rows hashed at a time by :func:`fold_ids` (bounded memory for any ``n``).
_STEP = 2**20


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser of a ``uint64`` array (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise InvalidParameterError(f"{name} must be an integer >= {low}; got {value!r}")
    return int(value)


def fold_of(r0: int, r1: int, n_folds: int, seed: int = 0) -> np.ndarray:
    """The folds (``0 .. n_folds - 1``, int64) of the global rows ``[r0, r1)``."""
    key = _mix(np.array([int(seed) % 2**64], dtype=np.uint64))
    rows = np.arange(r0, r1, dtype=np.uint64)
    return (_mix(rows * _PHI + key) % np.uint64(n_folds)).astype(np.int64)


def fold_ids(n_samples: int, n_folds: int, seed: int = 0) -> np.ndarray:
    """The fold of every row of an ``n_samples``-row problem: the folds of
    :func:`dsketch.cv_path` and :class:`RowMask` (same ``n_folds`` and ``seed``).

    Returns
    -------
    ndarray of int64, shape (n_samples,)
    """
    n = _check_int("n_samples", n_samples, 0)
    k = _check_int("n_folds", n_folds, 2)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([fold_of(a, min(a + _STEP, n), k, seed) for a in range(0, n, _STEP)])


@functools.lru_cache(maxsize=64)
def fold_sizes(n_samples: int, n_folds: int, seed: int = 0) -> tuple[int, ...]:
    """The number of rows of each fold of :func:`fold_ids` (hashed on the driver in steps
    of ``2**20`` rows: no pass over the data; remembered for the last 64 splits)."""
    n = _check_int("n_samples", n_samples, 0)
    k = _check_int("n_folds", n_folds, 2)
    counts = np.zeros(k, dtype=np.int64)
    for a in range(0, n, _STEP):
        counts += np.bincount(fold_of(a, min(a + _STEP, n), k, seed), minlength=k)
    return tuple(int(c) for c in counts)


@dataclass(frozen=True)
class RowMask:
    """The rows of one fold of :func:`fold_ids`, or all rows but that fold's.

    A problem read through :meth:`~dsketch.store.ProblemSpec.with_row_mask` has its sample
    weights multiplied by 1 on the kept rows and 0 on the others (the weights are 1 where
    the store has none): for the GLMs, whose objective is the weighted mean of the rows'
    losses, that is the fit of the kept rows alone.

    Attributes
    ----------
    n_folds : int
        Folds of the split (``>= 2``).
    fold : int
        The fold, ``0 .. n_folds - 1``.
    seed : int, default 0
        Key of the assignment of rows to folds.
    held_out : bool, default False
        False: keep the training rows (every fold but ``fold``); True: keep ``fold``'s rows.
    """

    n_folds: int
    fold: int
    seed: int = 0
    held_out: bool = False

    def __post_init__(self) -> None:
        k = _check_int("n_folds", self.n_folds, 2)
        if _check_int("fold", self.fold, 0) >= k:
            raise InvalidParameterError(f"fold must be in 0 .. {k - 1} for n_folds={k}; got {self.fold!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral):
            raise InvalidParameterError(f"seed must be an integer; got {self.seed!r}")

    def keep(self, r0: int, r1: int) -> np.ndarray:
        """1.0 on the kept rows of ``[r0, r1)``, 0.0 on the others (float64)."""
        inside = fold_of(r0, r1, self.n_folds, self.seed) == self.fold
        return (inside if self.held_out else ~inside).astype(np.float64)

    def n_kept(self, n_samples: int) -> int:
        """The number of rows this mask keeps of an ``n_samples``-row problem."""
        inside = fold_sizes(int(n_samples), int(self.n_folds), int(self.seed))[self.fold]
        return inside if self.held_out else int(n_samples) - inside

    def describe(self) -> dict[str, Any]:
        """The mask as plain values (for a fit's settings and info)."""
        return {"n_folds": int(self.n_folds), "fold": int(self.fold), "seed": int(self.seed),
                "held_out": bool(self.held_out)}


@dataclass(frozen=True, eq=False)
class RowSubset:
    """Given rows of a problem (for instance a scikit-learn splitter's train or test
    indices), with the interface of :class:`RowMask`.

    It holds one byte a row and travels with the problem's handle: free on the driver's
    threads, sent with every task to a Dask cluster's workers (the hashed folds of
    :class:`RowMask` cost nothing to send).

    Attributes
    ----------
    kept : ndarray of bool, shape (n_samples,)
    """

    kept: np.ndarray

    @classmethod
    def of(cls, indices: Any, n_samples: int) -> RowSubset:
        """The rows ``indices`` (integers in ``0 .. n_samples - 1``, at least one) of an
        ``n_samples``-row problem."""
        idx = np.asarray(indices)
        if idx.ndim != 1 or idx.size == 0 or idx.dtype.kind not in "iu":
            raise InvalidParameterError(f"a split's rows must be a non-empty 1-D array of row indices; got "
                                        f"{idx.dtype} of shape {idx.shape}")
        if idx.min() < 0 or idx.max() >= n_samples:
            raise InvalidParameterError(f"a split's row indices must be in 0 .. {n_samples - 1}; got "
                                        f"{int(idx.min())} .. {int(idx.max())}")
        kept = np.zeros(int(n_samples), dtype=bool)
        kept[idx] = True
        kept.flags.writeable = False
        return cls(kept)

    def keep(self, r0: int, r1: int) -> np.ndarray:
        """1.0 on the kept rows of ``[r0, r1)``, 0.0 on the others (float64)."""
        return self.kept[r0:r1].astype(np.float64)

    def n_kept(self, n_samples: int) -> int:
        """The number of rows kept (``n_samples`` is the problem's, checked by
        :meth:`~dsketch.store.ProblemSpec.with_row_mask`)."""
        return int(np.count_nonzero(self.kept))

    def describe(self) -> dict[str, Any]:
        """The number of rows and a digest of which (for a fit's settings and info)."""
        digest = hashlib.sha256(np.packbits(self.kept).tobytes()).hexdigest()[:16]
        return {"rows": int(self.kept.sum()), "digest": digest}

    def __repr__(self) -> str:
        return f"RowSubset({int(self.kept.sum())} of {self.kept.size} rows)"
