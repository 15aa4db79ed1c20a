"""A Ctrl-C that Python drops (raised inside a garbage-collector callback) still stops a
store from being published and a fit after its current iteration."""

from __future__ import annotations

import gc
import os
import signal

import numpy as np
import pytest

import dsketch
from dsketch import interrupts


@pytest.fixture
def handler():
    previous = interrupts.install()
    yield
    interrupts.restore(previous)
    interrupts._seen.clear()


def _ctrl_c_inside_gc() -> None:
    """Send SIGINT from a gc callback: the handler runs inside it, and Python drops the
    KeyboardInterrupt (as it does when a Ctrl-C meets the embedded scheduler's callback)."""
    fired = []

    def callback(phase, info):
        if phase == "start" and not fired:
            fired.append(True)
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # bytecodes for the pending signal to run its handler here
                pass

    gc.callbacks.append(callback)
    try:
        gc.collect()  # the interrupt raised in the callback does not come out of here
    finally:
        gc.callbacks.remove(callback)
    assert fired


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the dropped interrupt
def test_a_dropped_ctrl_c_stops_a_store_from_appearing(handler, tmp_path):
    _ctrl_c_inside_gc()
    assert interrupts.seen()
    rng = np.random.default_rng(0)
    with pytest.raises(KeyboardInterrupt):
        dsketch.write_problem(tmp_path / "p.zarr", rng.standard_normal((50, 3)), rng.standard_normal(50))
    assert os.listdir(tmp_path) == []  # neither the store nor its temporary sibling


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_dropped_ctrl_c_ends_a_fit_after_its_checkpoint(handler, tmp_path):
    rng = np.random.default_rng(1)
    A = rng.standard_normal((400, 4))
    y = (rng.random(400) < 0.5).astype(float)
    store = str(tmp_path / "p.zarr")
    dsketch.write_problem(store, A, y)
    _ctrl_c_inside_gc()
    ckpt = str(tmp_path / "fit.checkpoint")
    with pytest.raises(KeyboardInterrupt):
        dsketch.fit(store, "logistic", solver=dsketch.Solver("newton", tol=1e-12), checkpoint=ckpt)
    assert os.path.exists(ckpt)  # the first iteration was saved, and a resume goes on from it
    interrupts._seen.clear()
    res = dsketch.fit(store, "logistic", solver=dsketch.Solver("newton", tol=1e-12), checkpoint=ckpt, resume=True)
    assert res.success and res.nit > 1


def test_without_the_handler_nothing_is_remembered(tmp_path):
    """Outside the command line (no handler installed) check() never raises."""
    interrupts._seen.clear()
    interrupts.check()
    rng = np.random.default_rng(2)
    dsketch.write_problem(tmp_path / "q.zarr", rng.standard_normal((20, 2)), rng.standard_normal(20))
    assert os.path.isdir(tmp_path / "q.zarr")
