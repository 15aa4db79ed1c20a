"""Faults: a worker killed in the middle of a fit does not change the result."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from distributed import Client, LocalCluster

import dsketch


@pytest.mark.cluster
def test_worker_killed_mid_fit_gives_identical_result(tmp_path):
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster, set_as_default=False) as c:
        spec = dsketch.make_problem(str(tmp_path / "p.zarr"), model="logistic", n_samples=60_000,
                                    n_features=12, density=0.3, client=c, seed=4)
        kw = dict(sketch="leverage", sketch_size=1500, seed=5, tol=1e-12, max_iter=30, block_rows=5000)
        undisturbed = dsketch.fit(spec, "logistic", client=c, **kw)
        killed = []

        def kill_one_worker(state):
            if state.iteration == 2 and not killed:
                addr = sorted(c.scheduler_info()["workers"])[0]
                pid = c.run(os.getpid, workers=[addr])[addr]
                os.kill(pid, signal.SIGKILL)  # the cached predictor blocks on it are lost
                killed.append(addr)

        disturbed = dsketch.fit(spec, "logistic", client=c, callback=kill_one_worker, **kw)
    assert killed
    assert disturbed.success and undisturbed.success
    # lost blocks are recomputed from the store with the same counter-based randomness
    np.testing.assert_array_equal(disturbed.x, undisturbed.x)
    np.testing.assert_array_equal(disturbed.history["sketch_rows"], undisturbed.history["sketch_rows"])
