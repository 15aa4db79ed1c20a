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

from dsketch.errors import CheckpointMismatchError, StoreChangedError, StoreFormatError
from dsketch.solvers.result import HISTORY_COLUMNS
from dsketch.store import outputs, read_group, write_group

CHECKPOINT_ATTR = outputs.CHECKPOINT_ATTR
#: Key of the fit settings holding the fingerprint of the store the fit reads.
FINGERPRINT_KEY = "data_fingerprint"
#: The settings' key of a masked fit's row mask (:meth:`~dsketch.store.ProblemSpec.with_row_mask`;
#: absent for a fit of all rows): a checkpoint resumes only the fit of the same rows.
MASK_KEY = "row_mask"


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
    last_dec : float or None
        The Newton decrement of the last iteration (adaptive sketch sizes use its
        contraction).
    drawn_info : dict or None
        With fused passes: the sketch context ``info`` (for leverage scores, the score
        transform of the iterate before) with which the current iterate's curvature was
        drawn; the resumed fit redraws it with the same, so it stays on the same path.
        None when the current curvature came from its own pass.
    drawn_size : int or None
        The sketch size of that draw (adaptive sizes change after it).
    next_info : dict or None
        The sketch context ``info`` the next fused pass draws with.
    inner : dict or None
        The inner solver's own state (``state_dict()``: L-BFGS's pairs, the probe's
        gradient norms), so that a resumed fit takes the same steps.
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
    last_dec: float | None = None
    drawn_info: dict[str, Any] | None = None
    drawn_size: int | None = None
    next_info: dict[str, Any] | None = None
    inner: dict[str, Any] | None = None


def _split_info(prefix: str, info: dict[str, Any] | None, arrays: dict[str, np.ndarray]) -> dict[str, Any] | None:
    """Arrays of a sketch context's info go to ``arrays``; the rest (numbers, names) to JSON."""
    if info is None:
        return None
    plain: dict[str, Any] = {}
    for k, v in info.items():
        if isinstance(v, np.ndarray):
            arrays[f"{prefix}__{k}"] = v
            plain[k] = {"array": f"{prefix}__{k}"}
        else:
            plain[k] = v.item() if isinstance(v, np.generic) else v
    return plain


def _join_info(plain: dict[str, Any] | None, arrays: dict[str, np.ndarray]) -> dict[str, Any] | None:
    if plain is None:
        return None
    return {k: np.asarray(arrays[v["array"]]) if isinstance(v, dict) and "array" in v else v
            for k, v in plain.items()}


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
        "drawn_info": _split_info("drawn_info", ckpt.drawn_info, arrays),
        "next_info": _split_info("next_info", ckpt.next_info, arrays),
        "inner": _split_info("inner", ckpt.inner, arrays),
        "drawn_size": None if ckpt.drawn_size is None else int(ckpt.drawn_size),
        "last_dec": None if ckpt.last_dec is None or not np.isfinite(ckpt.last_dec) else float(ckpt.last_dec),
    }
    write_group(path, arrays, {CHECKPOINT_ATTR: meta}, overwrite=True, kind=outputs.CHECKPOINT)


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
        drawn_info=_join_info(meta.get("drawn_info"), arrays),
        next_info=_join_info(meta.get("next_info"), arrays),
        inner=_join_info(meta.get("inner"), arrays),
        drawn_size=meta.get("drawn_size"),
        last_dec=meta.get("last_dec"),
    )


def check_settings(saved: dict[str, Any], current: dict[str, Any], path: str) -> None:
    """Refuse to resume a checkpoint written by a fit with other settings.

    The settings' :data:`FINGERPRINT_KEY` is the identity of the store the fit read
    (:attr:`~dsketch.store.ProblemSpec.fingerprint`): a store replaced at the same path since
    the checkpoint was written raises :class:`~dsketch.errors.StoreChangedError`. Checkpoints
    written before fingerprints were recorded (no such key) are compared on the rest only.
    """
    current = json.loads(json.dumps(current, default=str))
    was, now = saved.get(FINGERPRINT_KEY), current.get(FINGERPRINT_KEY)
    if was and now and was != now and saved.get("data") == current.get("data"):
        raise StoreChangedError(
            f"checkpoint {path!r} was written by a fit of the store {current.get('data')!r} as it "
            f"was then (fingerprint {was}); the store at that path has been replaced since "
            f"(fingerprint {now}), so the fit cannot be resumed on it — start the fit afresh "
            "without resume"
        )
    _check_rows(saved.get(MASK_KEY), current.get(MASK_KEY), path)
    diff = {k: (saved.get(k), v) for k, v in current.items() if k != FINGERPRINT_KEY and saved.get(k) != v}
    if diff:
        detail = "; ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in sorted(diff.items()))
        raise CheckpointMismatchError(
            f"checkpoint {path!r} was written by a fit with other settings ({detail}); "
            "resume with the same model, data, curvature and seed, or start afresh without resume"
        )


def _rows_read(mask: dict[str, Any] | None) -> str:
    return "all rows (no row mask)" if mask is None else f"the rows of the row mask {mask}"


def _check_rows(was: dict[str, Any] | None, now: dict[str, Any] | None, path: str) -> None:
    """Refuse a resume that reads other rows than the checkpointed fit: the settings'
    :data:`MASK_KEY` is the row mask's description (a hashed fold's split, or a given
    subset's row count and digest), absent for a fit of all rows, so an unmasked fit, a
    masked one and one with another mask never resume each other's checkpoints."""
    if was != now:
        raise CheckpointMismatchError(
            f"checkpoint {path!r} was written by a fit of {_rows_read(was)}; this fit reads {_rows_read(now)}: "
            "a checkpoint resumes only the fit of the same rows — resume with the same row mask "
            "(ProblemSpec.with_row_mask), or start afresh without resume"
        )
