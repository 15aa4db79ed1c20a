"""Every wait for a cluster is bounded and ends in one line saying what is missing: no
workers asked for, a scheduler without workers, a port that accepts and never answers, a
service that is not a Dask scheduler."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from distributed import LocalCluster

import dsketch
from dsketch.engine.client import connect
from dsketch.errors import ClusterConnectionError


@contextlib.contextmanager
def _server(reply: bytes | None):
    """A loopback TCP service that accepts connections and sends ``reply`` (None: nothing)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            held.append(conn)
            if reply is not None:
                with contextlib.suppress(OSError):
                    conn.sendall(reply)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield f"tcp://127.0.0.1:{srv.getsockname()[1]}"
    finally:
        stop.set()
        t.join(5)
        for c in held:
            c.close()
        srv.close()


def _run(args, timeout=60):
    env = {**os.environ, "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("DSKETCH_SCHEDULER", None)
    env.pop("DSKETCH_DEBUG", None)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "dsketch.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)
    return proc, time.monotonic() - t0


@pytest.mark.parametrize("workers", ["0", "-1"])
def test_no_workers_is_refused_at_once(tmp_path, workers):
    rng = np.random.default_rng(0)
    store = str(tmp_path / "p.zarr")
    dsketch.write_problem(store, rng.standard_normal((50, 3)), rng.integers(0, 2, 50).astype(float))
    proc, took = _run(["fit", "--model", "logistic", "--data", store, "--out", str(tmp_path / "r.zarr"),
                       "--workers", workers])
    assert proc.returncode == 2, proc.stderr
    assert "at least one worker" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert took < 30
    proc, _ = _run(["make-data", str(tmp_path / "m.zarr"), "--model", "logistic", "--n-samples", "10",
                    "--n-features", "2", "--workers", workers])
    assert proc.returncode == 2 and "at least one worker" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_silent_port_times_out_in_one_line():
    with _server(None) as address:
        t0 = time.monotonic()
        with pytest.raises(ClusterConnectionError, match="sent no Dask handshake within 2 s"):
            with connect(address, timeout=2):
                pass
        assert time.monotonic() - t0 < 10


def test_other_service_is_named_as_such():
    with _server(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n") as address:
        with pytest.raises(ClusterConnectionError, match="does not speak Dask's protocol"):
            with connect(address, timeout=5):
                pass


def test_scheduler_without_workers_ends_in_one_line(tmp_path):
    rng = np.random.default_rng(1)
    store = str(tmp_path / "p.zarr")
    dsketch.write_problem(store, rng.standard_normal((50, 3)), rng.integers(0, 2, 50).astype(float))
    with LocalCluster(n_workers=0, host="127.0.0.1", dashboard_address=None) as cluster:
        proc, took = _run(["fit", "--model", "logistic", "--data", store, "--out", str(tmp_path / "r.zarr"),
                           "--scheduler", cluster.scheduler_address, "--connect-timeout", "3"])
    assert proc.returncode == 2, proc.stderr
    assert "has no workers" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert took < 40
    assert not os.path.exists(tmp_path / "r.zarr")


# ------------------------------------------------------------------ interrupts and one-line errors
def _start(args):
    env = {**os.environ, "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("DSKETCH_DEBUG", None)
    env.pop("DSKETCH_SCHEDULER", None)
    return subprocess.Popen([sys.executable, "-m", "dsketch.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)


#: Seconds a Ctrl-C test waits for each stage (the marker, then the exit): generous, as a
#: loaded machine (two cores shared by several test runs) only makes the commands slower.
PATIENCE = 600.0


def _drain(stream, sink: list[str]) -> threading.Thread:
    """Read ``stream`` to its end in a thread (so neither pipe fills and stalls the command)."""
    t = threading.Thread(target=lambda: sink.extend(iter(stream.readline, "")), daemon=True)
    t.start()
    return t


def _interrupt_when(proc, ready, what: str) -> tuple[str, str]:
    """Send SIGINT to the whole process group (as a terminal's Ctrl-C does) as soon as
    ``ready()`` is true: a mark the command leaves once the work to interrupt is under way
    (a file it writes), never a fixed delay. Fails if the command ends first, or does not
    end after the Ctrl-C. Returns its standard output and error."""
    import signal

    out: list[str] = []
    err: list[str] = []
    readers = [_drain(proc.stdout, out), _drain(proc.stderr, err)]
    t0 = time.monotonic()
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the command ended (status {proc.returncode}) before {what}; stderr: {''.join(err)}")
        if time.monotonic() - t0 > PATIENCE:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"no {what} after {PATIENCE:.0f} s")
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=PATIENCE)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"the command still ran {PATIENCE:.0f} s after the Ctrl-C; stderr: {''.join(err)}")
    for t in readers:
        t.join(PATIENCE)
    return "".join(out), "".join(err)


def _chunk_written(folder) -> bool:
    """Whether a store being built under ``folder`` has its first chunk file (Zarr v3
    keys ``.../c/...``): the data are being written, far from the end."""
    from pathlib import Path

    return any("c" in Path(root).relative_to(folder).parts for root, _dirs, files in os.walk(folder) if files)


def test_ctrl_c_during_make_data_is_one_line(tmp_path):
    out = tmp_path / "big.zarr"
    proc = _start(["make-data", str(out), "--model", "logistic", "--n-samples", "4000000", "--n-features",
                   "100", "--density", "0.05"])
    _, err = _interrupt_when(proc, lambda: _chunk_written(tmp_path), "a chunk of the store was written")
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["dsketch make-data: interrupted"]
    assert os.listdir(tmp_path) == []  # no store, no temporary directory


def test_ctrl_c_during_fit_names_the_checkpoint_and_a_rerun_needs_resume(tmp_path):
    rng = np.random.default_rng(2)
    store = str(tmp_path / "p.zarr")
    X = rng.standard_normal((20000, 20))
    dsketch.write_problem(store, X, (rng.random(20000) < 0.5).astype(float))
    result = str(tmp_path / "r.zarr")
    args = ["fit", "--model", "logistic", "--data", store, "--out", result, "--solver", "gd", "--tol", "1e-14",
            "--max-iter", "100000", "--block-rows", "2000", "--workers", "1"]
    proc = _start(args)
    # the checkpoint is written (atomically) after each iteration: interrupt once it exists
    _, err = _interrupt_when(proc, lambda: os.path.exists(result + ".checkpoint"), "checkpoint")
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "r.zarr.checkpoint" in lines[0] and "--resume" in lines[0], err
    # the same command again without --resume does not silently discard the checkpoint
    again, _ = _run(args, timeout=PATIENCE)
    assert again.returncode == 2
    assert "--resume" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    assert os.path.exists(result + ".checkpoint")


def test_broken_pipe_and_full_disk_are_one_line(tmp_path, monkeypatch, capsys):
    import errno

    from dsketch import cli
    from dsketch.store import builder

    rng = np.random.default_rng(3)
    store = str(tmp_path / "p.zarr")
    dsketch.write_problem(store, rng.standard_normal((30, 3)), np.zeros(30))

    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

        def flush(self):
            pass

    with monkeypatch.context() as m:
        m.setattr(sys, "stdout", ClosedPipe())
        assert cli.main(["info", store]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "dsketch info: error: output closed early (broken pipe)"]

    np.save(tmp_path / "X.npy", rng.standard_normal((100, 4)))
    np.save(tmp_path / "y.npy", np.zeros(100))

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(builder.ProblemBuilder, "write_dense_rows", full)
    rc = cli.main(["convert", str(tmp_path / "X.npy"), str(tmp_path / "c.zarr"), "--target",
                   str(tmp_path / "y.npy")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "No space left on device" in err[0]
    assert not any(name.startswith("c.zarr") for name in os.listdir(tmp_path))


def test_other_service_as_scheduler_is_one_line_in_the_cli(tmp_path):
    rng = np.random.default_rng(4)
    store = str(tmp_path / "p.zarr")
    dsketch.write_problem(store, rng.standard_normal((30, 3)), np.zeros(30))
    with _server(b"HTTP/1.1 400 Bad Request\r\n\r\n") as address:
        proc, _ = _run(["fit", "--model", "least-squares", "--data", store, "--out", str(tmp_path / "r.zarr"),
                        "--scheduler", address])
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not speak Dask's protocol" in lines[0]


@pytest.mark.parametrize("with_dsketch", [False, True])
def test_exit_is_quiet_while_zarrs_io_thread_is_busy(with_dsketch):
    """A loaded machine, reproduced: Zarr's I/O thread is busy for 1 s when the process
    exits. Zarr alone waits 0.2 s for it, then logs a warning and a traceback from its
    atexit clean-up (the control case, so the test can fail); a process that imported
    dsketch.store stops the thread patiently first and exits without a word."""
    code = "\n".join([
        "import time", "import numpy as np", "import zarr", "from zarr.core import sync",
        *(["import dsketch.store"] if with_dsketch else []),
        "zarr.array(np.arange(10))  # starts Zarr's I/O loop",
        "sync.loop[0].call_soon_threadsafe(time.sleep, 1.0)  # its thread busy at exit",
    ])
    env = {**os.environ, "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=PATIENCE, env=env,
                          check=False)
    assert proc.returncode == 0
    if with_dsketch:
        assert proc.stderr == ""
    else:
        assert "did not finish cleanly" in proc.stderr and "atexit" in proc.stderr
