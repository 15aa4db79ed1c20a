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
        kw = dict(curvature=dsketch.Curvature("leverage", size=1500), seed=5,
                  solver=dsketch.Solver(tol=1e-12, max_iter=30), cluster=dsketch.Cluster(c, block_rows=5000))
        undisturbed = dsketch.fit(spec, "logistic", **kw)
        killed = []

        def kill_one_worker(state):
            if state.iteration == 2 and not killed:
                addr = sorted(c.scheduler_info()["workers"])[0]
                pid = c.run(os.getpid, workers=[addr])[addr]
                os.kill(pid, signal.SIGKILL)  # the cached predictor blocks on it are lost
                killed.append(addr)

        disturbed = dsketch.fit(spec, "logistic", callback=kill_one_worker, **kw)
    assert killed
    assert disturbed.success and undisturbed.success
    # lost blocks are recomputed from the store with the same counter-based randomness
    np.testing.assert_array_equal(disturbed.x, undisturbed.x)
    np.testing.assert_array_equal(disturbed.history["sketch_rows"], undisturbed.history["sketch_rows"])


def _problem(tmp_path, n=20_000, d=8, seed=6):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, d)) / np.sqrt(d)
    A[:, 0] *= 30.0  # ill-conditioned, so a small uniform sketch needs many iterations
    xt = rng.standard_normal(d)
    y = (rng.random(n) < 1 / (1 + np.exp(-A @ xt))).astype(float)
    path = str(tmp_path / "p.zarr")
    dsketch.write_problem(path, A, y)
    return path


def test_resume_after_driver_failure_ends_at_same_x(client, tmp_path):
    path = _problem(tmp_path)
    kw = dict(model_params={"l2": 1e-4}, curvature=dsketch.Curvature("uniform", size=400), seed=3,
              solver=dsketch.Solver(tol=1e-11, max_iter=200), cluster=dsketch.Cluster(client, block_rows=3000))
    undisturbed = dsketch.fit(path, "logistic", **kw)
    ckpt = str(tmp_path / "run.checkpoint")

    class DriverDied(Exception):
        pass

    def die(state):
        if state.iteration == 4:
            raise DriverDied

    with pytest.raises(DriverDied):
        dsketch.fit(path, "logistic", checkpoint=ckpt, callback=die, **kw)
    resumed = dsketch.fit(path, "logistic", checkpoint=ckpt, resume=True, **kw)
    assert undisturbed.nit > 6
    assert resumed.success and resumed.nit == undisturbed.nit
    np.testing.assert_allclose(resumed.x, undisturbed.x, rtol=1e-10)
    np.testing.assert_array_equal(resumed.history["sketch_rows"], undisturbed.history["sketch_rows"])
    # a resume with other settings is refused, naming the difference
    with pytest.raises(ValueError, match="seed"):
        dsketch.fit(path, "logistic", checkpoint=ckpt, resume=True, **{**kw, "seed": 4})


def test_cli_resume_after_sigkill(client, tmp_path):
    import subprocess
    import sys
    import time

    from dsketch.cli import main
    from dsketch.solvers.checkpoint import load_checkpoint

    path = _problem(tmp_path, n=40_000)
    addr = client.scheduler.address
    args = ["fit", "--model", "logistic", "--data", path, "--param", "l2=1e-4", "--sketch", "uniform",
            "--sketch-size", "400", "--seed", "3", "--tol", "1e-11", "--max-iter", "300",
            "--block-rows", "4000", "--scheduler", addr]
    ref_out = str(tmp_path / "ref.zarr")
    assert main([*args, "--out", ref_out]) == 0
    out = str(tmp_path / "r.zarr")
    proc = subprocess.Popen([sys.executable, "-m", "dsketch.cli", "--quiet", *args, "--out", out],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = out + ".checkpoint"
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            if os.path.exists(ckpt):
                try:
                    if load_checkpoint(ckpt).iteration >= 3:
                        break
                except Exception:  # noqa: BLE001 - mid-swap: try again
                    pass
            if proc.poll() is not None:
                pytest.fail("the fit finished before it could be killed; make the problem harder")
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert not os.path.exists(out)  # no result that looks complete
    assert main([*args, "--out", out, "--resume"]) == 0
    ref, res = dsketch.load_result(ref_out), dsketch.load_result(out)
    assert not os.path.exists(ckpt)
    assert res.nit == ref.nit
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-10)


def _corrupt_chunk(store: str, member: str = "A") -> str:
    """Overwrite the start of one stored chunk of ``member`` with bytes no codec accepts."""
    chunks = sorted(
        os.path.join(root, f) for root, _, files in os.walk(os.path.join(store, member, "c")) for f in files
    )
    target = chunks[len(chunks) // 2]
    with open(target, "r+b") as fh:
        fh.write(b"\x00not a chunk\xff" * 4)
    return target


def test_corrupted_chunk_mid_fit_is_named_and_no_result_is_written(client, tmp_path):
    from dsketch.errors import StoreFormatError
    from dsketch.solvers.checkpoint import load_checkpoint

    path = _problem(tmp_path)
    ckpt = str(tmp_path / "run.checkpoint")

    def corrupt(state):
        if state.iteration == 1:
            _corrupt_chunk(path)

    with pytest.raises(StoreFormatError, match=r"member 'A' could not be read .*corrupt"):
        dsketch.fit(path, "logistic", model_params={"l2": 1e-4}, solver=dsketch.Solver(tol=1e-12),
                    cluster=dsketch.Cluster(client, block_rows=3000, persist=False), checkpoint=ckpt,
                    callback=corrupt)  # streamed: held blocks keep the data read before the damage
    # what survives is the checkpoint of the last finished iteration, marked as such
    assert load_checkpoint(ckpt).iteration >= 1


def test_corrupted_chunk_from_cli_is_one_line_and_leaves_no_result(client, tmp_path, capsys):
    from dsketch.cli import main

    path = _problem(tmp_path)
    _corrupt_chunk(path)
    out = tmp_path / "r.zarr"
    code = main(["fit", "--model", "logistic", "--data", path, "--out", str(out),
                 "--scheduler", client.scheduler.address])
    err = capsys.readouterr().err
    assert code == 2
    assert "could not be read" in err and "'A'" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_store_deleted_during_fit_is_a_clear_error(client, tmp_path):
    import shutil

    from dsketch.errors import StoreNotFoundError

    path = _problem(tmp_path)

    def delete(state):
        if state.iteration == 1:
            shutil.rmtree(path)

    with pytest.raises(StoreNotFoundError, match="no longer exists|disappeared"):
        dsketch.fit(path, "logistic", model_params={"l2": 1e-4}, solver=dsketch.Solver(tol=1e-12),
                    cluster=dsketch.Cluster(client, block_rows=3000, persist=False),  # streamed: held blocks
                    callback=delete)  # keep the data opened, and a fit on them ends (check_store)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_scheduler_gone_mid_fit_is_a_clear_error_and_no_result(tmp_path):
    """Real ``dask scheduler`` / ``dask worker`` processes; the scheduler is SIGKILLed while a
    command-line fit runs: exit 2, one line naming the scheduler and how to resume, no result
    store, and a checkpoint that the resume can use."""
    import subprocess
    import sys
    import time

    from dsketch.solvers.checkpoint import load_checkpoint

    dask = os.path.join(os.path.dirname(sys.executable), "dask")
    port = _free_port()
    addr = f"tcp://127.0.0.1:{port}"
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sched = subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                             **quiet)
    worker = subprocess.Popen([dask, "worker", addr, "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"],
                              **quiet)
    proc = None
    try:
        path = _problem(tmp_path, n=40_000)
        out = str(tmp_path / "r.zarr")
        time.sleep(2.0)
        proc = subprocess.Popen(
            [sys.executable, "-m", "dsketch.cli", "--quiet", "fit", "--connect-timeout", "5", "--model", "logistic",
             "--data", path,
             "--param", "l2=1e-4", "--sketch", "uniform", "--sketch-size", "400", "--tol", "1e-14",
             "--max-iter", "300", "--block-rows", "4000", "--scheduler", addr, "--out", out],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        ckpt = out + ".checkpoint"
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            try:
                if load_checkpoint(ckpt).iteration >= 2:
                    break
            except Exception:  # noqa: BLE001 - not written yet, or mid-swap
                pass
            time.sleep(0.02)
        assert proc.poll() is None, "the fit finished before the scheduler could be stopped"
        sched.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=90)  # bounded: the client gives up, it does not hang
        assert proc.returncode == 2, err
        lines = [ln for ln in err.strip().splitlines() if ln.startswith("dsketch fit")]
        assert len(lines) == 1 and "lost the Dask scheduler at " + addr in lines[0] and "--resume" in lines[0]
        assert "Traceback" not in err
        assert not os.path.exists(out)
        assert load_checkpoint(ckpt).iteration >= 2
    finally:
        for p in (proc, worker, sched):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait(timeout=30)
