"""What :class:`~dsketch.solvers.newton.NewtonSolver` records of a run: its history and
clock (one row an iteration, logged as the convergence table) and the checkpoint it writes
after every iteration and resumes from (:mod:`dsketch.solvers.checkpoint`)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from dsketch.solvers.checkpoint import Checkpoint
from dsketch.solvers.result import HISTORY_COLUMNS, TABLE_HEADER, format_row

if TYPE_CHECKING:
    from dsketch.solvers.newton import IterationState

logger = logging.getLogger("dsketch")


@dataclass
class RunRecord:
    """The run's history and clock (appended to, one row an iteration)."""

    t0: float
    offset: float = 0.0
    history: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in HISTORY_COLUMNS})
    header_logged: bool = False

    def seconds(self) -> float:
        """Wall time of the run, with that of the fit a checkpoint resumed."""
        return time.perf_counter() - self.t0 + self.offset

    def restore(self, ckpt: Checkpoint) -> None:
        """Continue the history and the clock of the fit that wrote ``ckpt``."""
        self.history = {k: [float(v) for v in ckpt.history[k]] for k in HISTORY_COLUMNS}
        self.offset = ckpt.seconds

    def append(self, row: dict[str, float]) -> None:
        """Add one row (a value for each of :data:`~dsketch.solvers.result.HISTORY_COLUMNS`)
        and log it as a line of the convergence table (its header first)."""
        for k in HISTORY_COLUMNS:
            self.history[k].append(float(row[k]))
        if not self.header_logged:  # after the cluster is up, so its lines come first
            logger.info("%s", TABLE_HEADER)
            self.header_logged = True
        logger.info("%s", format_row(row))


def checkpoint_of(state: IterationState, record: RunRecord, *, n_passes: int, settings: dict[str, Any],
                  inner: Any) -> Checkpoint:
    """The checkpoint of the run at ``state`` (with the inner solver's own state, if it
    keeps one: ``inner.state_dict()``)."""
    assert state.g0 is not None
    drawn = state.drawn
    return Checkpoint(
        x=state.x, iteration=state.iteration, n_passes=n_passes, seconds=record.seconds(),
        g0=state.g0, prev_gnorm=state.prev_gnorm, tau=state.tau,
        history={k: np.asarray(v) for k, v in record.history.items()}, settings=settings,
        sketch_size=state.sketch_size, last_dec=state.last_dec,
        drawn_info=None if drawn is None else drawn.info, drawn_size=None if drawn is None else drawn.sketch_size,
        next_info=None if drawn is None else state.sketch_info,
        inner=inner.state_dict() if hasattr(inner, "state_dict") else None,
    )


def resumed_fields(ckpt: Checkpoint) -> dict[str, Any]:
    """The :class:`~dsketch.solvers.newton.IterationState` fields a checkpoint restores as
    saved (the iteration count, the stopping rules' scalars and the step that led to the
    saved iterate, the history's last, which an inner solver that reuses a curvature reads)."""
    extra: dict[str, Any] = dict(iteration=ckpt.iteration, g0=ckpt.g0, prev_gnorm=ckpt.prev_gnorm, tau=ckpt.tau)
    if ckpt.last_dec is not None:
        extra["last_dec"] = float(ckpt.last_dec)
    steps = ckpt.history.get("step_size")
    if steps is not None and len(steps):
        extra["step"] = float(steps[-1])
    return extra
