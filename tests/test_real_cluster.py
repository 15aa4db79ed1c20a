"""A real cluster: `dask scheduler` and `dask worker` processes on 127.0.0.1 over TCP."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence

import numpy as np
import pytest
from distributed import Client, Security

import dsketch
from dsketch.cli import main

pytestmark = pytest.mark.cluster


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dask_command() -> str:
    """The ``dask`` command of this environment, or skip the test."""
    dask = shutil.which("dask", path=os.path.dirname(sys.executable)) or shutil.which("dask")
    if dask is None:
        pytest.skip("the dask command is not installed")
    return dask


@contextlib.contextmanager
def dask_processes(*, protocol: str = "tcp", n_workers: int = 2, dashboard: bool = False,
                   scheduler_args: Sequence[str] = (),
                   worker_args: Sequence[str] = (), security: Security | None = None,
                   log_dir: str) -> Iterator[str]:
    """Run ``dask scheduler`` and ``n_workers`` ``dask worker`` processes on 127.0.0.1.

    Yields the scheduler address once every worker has registered; the processes' output
    goes to ``log_dir`` and its tail is shown if the cluster does not come up in 60 s.
    """
    dask = dask_command()
    port = _free_port()
    addr = f"{protocol}://127.0.0.1:{port}"
    logs: list[str] = []

    def spawn(name: str, argv: list[str]) -> subprocess.Popen:
        path = os.path.join(log_dir, f"{name}.log")
        logs.append(path)
        with open(path, "wb") as log:
            return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)

    procs = [spawn("scheduler", [dask, "scheduler", "--protocol", protocol, "--host", "127.0.0.1",
                                 "--port", str(port),
                                 *(["--dashboard-address", "127.0.0.1:0"] if dashboard else ["--no-dashboard"]),
                                 *scheduler_args])]
    try:
        for i in range(n_workers):
            procs.append(spawn(f"worker{i}", [dask, "worker", addr, "--host", "127.0.0.1", "--nthreads", "1",
                                              "--no-dashboard", "--memory-limit", "2GiB", *worker_args]))
        deadline = time.time() + 60
        while True:
            try:
                with Client(addr, timeout=5, security=security, set_as_default=False) as c:
                    c.wait_for_workers(n_workers, timeout=max(1, deadline - time.time()))
                break
            except (OSError, TimeoutError):
                if time.time() > deadline:
                    tails = []
                    for path in logs:
                        with open(path, errors="replace") as f:
                            tails.append(f"--- {os.path.basename(path)}\n" + "".join(f.readlines()[-15:]))
                    raise RuntimeError(f"{addr} did not come up in 60 s\n" + "\n".join(tails)) from None
                time.sleep(0.5)
        yield addr
    finally:  # workers first, so that none waits for a scheduler that is gone
        for group in (procs[1:], procs[:1]):
            for p in group:
                p.terminate()
            for p in group:
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


@pytest.fixture(scope="module")
def scheduler_address(tmp_path_factory):
    with dask_processes(dashboard=True, log_dir=str(tmp_path_factory.mktemp("tcp-cluster"))) as addr:
        yield addr


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
    printed = capsys.readouterr().out
    # the Python API on the same cluster agrees with the command line to the last bit
    api = dsketch.fit(store, "logistic", curvature=dsketch.Curvature("leverage", size=800),
                      solver=dsketch.Solver(tol=1e-10), cluster=scheduler_address)
    np.testing.assert_array_equal(cli.x, api.x)
    with Client(scheduler_address, set_as_default=False) as c:
        assert len(c.scheduler_info()["workers"]) == 2
    # the scheduler's dashboard (on an ephemeral port) is printed, and it answers
    joined = [line for line in printed.splitlines() if line.startswith("joined scheduler")]
    assert len(joined) == 1, joined
    link = re.fullmatch(rf"joined scheduler {scheduler_address} \(dashboard: (http://127\.0\.0\.1:\d+/status)\)",
                        joined[0])
    assert link is not None, joined[0]
    assert link.group(1) != "http://127.0.0.1:8787/status"
    with urllib.request.urlopen(link.group(1).replace("/status", "/health"), timeout=10) as resp:
        assert resp.status == 200


def test_embedded_cluster_prints_its_dashboard(tmp_path, capsys):
    """fit prints the embedded cluster's dashboard address once, bound to 127.0.0.1."""
    rng = np.random.default_rng(4)
    A = rng.standard_normal((400, 3))
    y = (rng.random(400) < 0.5).astype(float)
    store = str(tmp_path / "p.zarr")
    dsketch.write_problem(store, A, y)
    assert main(["fit", "--model", "logistic", "--data", store, "--out", str(tmp_path / "r.zarr"),
                 "--workers", "1"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "dashboard:" in line]
    assert len(lines) == 1, out
    assert lines[0].startswith("started local cluster: 1 workers on 127.0.0.1")
    assert re.search(r"dashboard: http://127\.0\.0\.1:\d+/status", lines[0]), lines[0]


def test_unreachable_scheduler_fails_fast_with_one_line(tmp_path):
    """Nothing listens on the port: exit status 2 and one clear line within the timeout."""
    rng = np.random.default_rng(5)
    store = str(tmp_path / "p.zarr")
    dsketch.write_problem(store, rng.standard_normal((50, 2)), (rng.random(50) < 0.5).astype(float))
    with socket.socket() as reserved:  # bound, never listening: connections are refused
        reserved.bind(("127.0.0.1", 0))
        addr = f"tcp://127.0.0.1:{reserved.getsockname()[1]}"
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "dsketch.cli", "fit", "--model", "logistic", "--data", store,
                               "--out", str(tmp_path / "r.zarr"), "--scheduler", addr, "--connect-timeout", "2"],
                              capture_output=True, text=True, timeout=120)
        elapsed = time.perf_counter() - t0
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1, proc.stderr
    assert err[0].startswith(f"dsketch fit: error: cannot connect to the Dask scheduler at {addr}"), err
    assert "after 2 s" in err[0] and "--connect-timeout" in err[0], err
    assert elapsed < 30, elapsed  # interpreter start-up + the 2 s timeout, not distributed's 30 s
    assert not (tmp_path / "r.zarr").exists()


def test_connect_timeout_comes_from_dask_config(capsys):
    from dask import config

    from dsketch.engine.client import resolve_timeout

    assert resolve_timeout() == 30.0  # distributed's default
    with config.set({"distributed.comm.timeouts.connect": "7s"}):
        assert resolve_timeout() == 7.0
        assert resolve_timeout(1.5) == 1.5
    with pytest.raises(ValueError, match="positive"):
        resolve_timeout(0)
    assert main(["fit", "--model", "logistic", "--data", "x", "--out", "y", "--connect-timeout", "-1"]) == 2
    assert "--connect-timeout must be a positive number of seconds" in capsys.readouterr().err
