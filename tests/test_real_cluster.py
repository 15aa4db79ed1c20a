"""A real cluster: `dask scheduler` and `dask worker` processes on 127.0.0.1 over TCP."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from distributed import Client

import dsketch
from dsketch.cli import main

pytestmark = pytest.mark.cluster


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def scheduler_address():
    dask = shutil.which("dask", path=os.path.dirname(sys.executable)) or shutil.which("dask")
    if dask is None:
        pytest.skip("the dask command is not installed")
    port = _free_port()
    addr = f"tcp://127.0.0.1:{port}"
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        for _ in range(2):
            procs.append(subprocess.Popen([dask, "worker", addr, "--host", "127.0.0.1", "--nthreads", "1",
                                           "--no-dashboard", "--memory-limit", "2GiB"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.time() + 60
        while True:
            try:
                with Client(addr, timeout=5, set_as_default=False) as c:
                    c.wait_for_workers(2, timeout=max(1, deadline - time.time()))
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
        yield addr
    finally:
        for p in procs[::-1]:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_fit_through_scheduler_processes(scheduler_address, tmp_path, capsys):
    rng = np.random.default_rng(3)
    n, d = 5000, 6
    A = rng.standard_normal((n, d))
    xt = rng.standard_normal(d)
    y = (rng.random(n) < 1 / (1 + np.exp(-A @ xt))).astype(float)
    store = str(tmp_path / "p.zarr")
    dsketch.write_problem(store, A, y)
    out = str(tmp_path / "r.zarr")
    assert main(["fit", "--model", "logistic", "--data", store, "--out", out, "--sketch", "leverage",
                 "--sketch-size", "800", "--tol", "1e-10", "--scheduler", scheduler_address]) == 0
    cli = dsketch.load_result(out)
    # the Python API on the same cluster agrees with the command line to the last bit
    api = dsketch.fit(store, "logistic", sketch="leverage", sketch_size=800, tol=1e-10,
                      scheduler=scheduler_address)
    np.testing.assert_array_equal(cli.x, api.x)
    with Client(scheduler_address, set_as_default=False) as c:
        assert len(c.scheduler_info()["workers"]) == 2
