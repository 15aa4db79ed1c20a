"""Checkpoints of a running fit, so that a fit survives the death of its driver.

After every iteration the solver writes the iterate, the iteration count, the history and
the few scalars its stopping rules carry (``||g_0||``, the previous gradient norm, the
gradient-descent step scale) to a Zarr group, atomically (built beside the target, then
swapped in), so a checkpoint is never half-written. ``fit(..., resume=True)`` continues
from it: the sketch randomness is keyed by the iteration number, so the resumed fit
draws the same sketches the undisturbed one would have and ends at the same ``x`` (up to
the rounding of recomputing ``A x`` once).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from dsketch.errors import StoreFormatError
from dsketch.solvers.result import HISTORY_COLUMNS
from dsketch.store import read_group, write_group

CHECKPOINT_ATTR = "dsketch_checkpoint"


@dataclass(frozen=True)
class Checkpoint:
    """The state needed to continue a fit.

    Attributes
    ----------
    x : ndarray of shape (n_features,)
    iteration : int
        Iterations completed.
    n_passes : int
        Passes over A so far.
    seconds : float
        Wall time so far.
    g0 : float
        Gradient norm at the start (the relative stopping rule's scale).
    prev_gnorm : float or None
    tau : float or None
        Step scale of gradient descent.
    history : dict of str to ndarray
    settings : dict
        Model, curvature, seed and data of the fit; a resume must match them.
    sketch_size : int or None
        The sketch size of the next iteration (it changes with ``adaptive_sketch``).
    """

    x: np.ndarray
    iteration: int
    n_passes: int
    seconds: float
    g0: float
    prev_gnorm: float | None
    tau: float | None
    history: dict[str, np.ndarray]
    settings: dict[str, Any]
    sketch_size: int | None = None


def save_checkpoint(path: str, ckpt: Checkpoint) -> None:
    """Write (or atomically replace) the checkpoint group at ``path``."""
    arrays = {"x": np.asarray(ckpt.x, dtype=np.float64)}
    for k in HISTORY_COLUMNS:
        arrays[f"history__{k}"] = np.asarray(ckpt.history.get(k, []), dtype=np.float64)
    meta = {
        "iteration": int(ckpt.iteration),
        "n_passes": int(ckpt.n_passes),
        "seconds": float(ckpt.seconds),
        "g0": float(ckpt.g0),
        "prev_gnorm": None if ckpt.prev_gnorm is None else float(ckpt.prev_gnorm),
        "tau": None if ckpt.tau is None else float(ckpt.tau),
        "settings": json.loads(json.dumps(ckpt.settings, default=str)),
        "sketch_size": None if ckpt.sketch_size is None else int(ckpt.sketch_size),
    }
    write_group(path, arrays, {CHECKPOINT_ATTR: meta}, overwrite=True)


def load_checkpoint(path: str) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`."""
    arrays, attrs = read_group(path)
    if CHECKPOINT_ATTR not in attrs:
        raise StoreFormatError(f"{path!r} is a Zarr group but not a dsketch checkpoint")
    meta = attrs[CHECKPOINT_ATTR]
    history = {k: np.asarray(arrays[f"history__{k}"]) for k in HISTORY_COLUMNS}
    return Checkpoint(
        x=np.asarray(arrays["x"]),
        iteration=int(meta["iteration"]),
        n_passes=int(meta["n_passes"]),
        seconds=float(meta["seconds"]),
        g0=float(meta["g0"]),
        prev_gnorm=meta["prev_gnorm"],
        tau=meta["tau"],
        history=history,
        settings=dict(meta["settings"]),
        sketch_size=meta.get("sketch_size"),
    )


def check_settings(saved: dict[str, Any], current: dict[str, Any], path: str) -> None:
    """Refuse to resume a checkpoint written by a fit with other settings."""
    current = json.loads(json.dumps(current, default=str))
    diff = {k: (saved.get(k), v) for k, v in current.items() if saved.get(k) != v}
    if diff:
        detail = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in sorted(diff.items()))
        raise ValueError(
            f"checkpoint {path!r} was written by a fit with other settings ({detail}); "
            "resume with the same model, data, curvature and seed, or start afresh without resume"
        )
