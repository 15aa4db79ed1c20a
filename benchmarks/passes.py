"""Timing bare passes over a problem store: the yardstick a fit's iteration is compared to."""

from __future__ import annotations

import time

import numpy as np

from dsketch.engine.core import Engine


def _n_rows(block) -> int:
    return int(block.A.shape[0])


def bare_pass_times(spec, client, x: np.ndarray, repeats: int = 3, *, persist: bool = False) -> list[float]:
    """Wall times of ``repeats`` passes ``A x`` over all blocks (each reduced to a scalar).

    Streamed from the store, or with ``persist=True`` over blocks loaded into cluster
    memory first (the loading is not timed).
    """
    engine = Engine(spec, client, persist=persist)
    if persist:  # the blocks are in worker memory before the clock starts
        client.gather([client.submit(_n_rows, src, pure=False) for src in engine._sources])
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        futs = engine.matvec(x)
        client.gather([client.submit(np.sum, f, pure=False) for f in futs])
        times.append(time.perf_counter() - t0)
        del futs
    engine.close()
    return times
