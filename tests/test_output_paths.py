"""Output paths: nothing a command writes may replace its input, a store of another kind,
an unrelated directory or file; bad paths are refused before any work; failed or
symlinked writes leave nothing behind."""

from __future__ import annotations

import dataclasses
import errno
import glob
import hashlib
import os
import subprocess
import sys
import threading
import time

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dsketch
from dsketch.cli import main
from dsketch.errors import DSketchError, StoreExistsError
from dsketch.solvers.result import save_result
from dsketch.store import open_problem, outputs, read_block
from dsketch.store.convert import convert

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _problem(path, seed: int = 0, n: int = 300) -> str:
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, 3))
    dsketch.write_problem(str(path), A, (rng.random(n) < 1 / (1 + np.exp(-A[:, 0]))).astype(float))
    return str(path)


def _digest(path) -> dict[str, str]:
    """Every file under ``path`` by relative name, with the hash of its bytes."""
    out = {}
    for root, _, files in os.walk(path):
        for f in files:
            full = os.path.join(root, f)
            with open(full, "rb") as fh:
                out[os.path.relpath(full, path)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def _cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)}
    return subprocess.run([sys.executable, "-m", "dsketch.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


def _transitions(client) -> int:
    """Task transitions the session cluster's scheduler has made so far (did a fit start?)."""
    return client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.transition_counter)


def _one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


FIT = ("fit", "--model", "logistic", "--param", "l2=0.01", "--max-iter", "5")


# ------------------------------------------------------------------------------ fit --out
def test_fit_out_equal_to_data_is_refused(client, tmp_path):
    """--out = --data with --overwrite once replaced the problem store by the result."""
    store = _problem(tmp_path / "p.zarr")
    before = _digest(store)
    proc = _cli(*FIT, "--data", store, "--out", store, "--overwrite", "--scheduler", client.scheduler.address)
    _one_line_error(proc, "--data")
    assert _digest(store) == before
    np.testing.assert_array_equal(read_block(open_problem(store), 0, 300).A.shape, (300, 3))
    # the same through a symlink to the store
    os.symlink(store, tmp_path / "link.zarr")
    proc = _cli(*FIT, "--data", store, "--out", str(tmp_path / "link.zarr"), "--overwrite",
                "--scheduler", client.scheduler.address)
    _one_line_error(proc, "--data")
    assert _digest(store) == before and os.path.islink(tmp_path / "link.zarr")


def test_fit_out_onto_another_problem_store_is_refused(client, tmp_path):
    store = _problem(tmp_path / "p.zarr")
    other = _problem(tmp_path / "q.zarr", seed=1)
    before = _digest(other)
    proc = _cli(*FIT, "--data", store, "--out", other, "--overwrite", "--scheduler", client.scheduler.address)
    _one_line_error(proc, "problem store", "result store")
    assert _digest(other) == before and open_problem(other).n_samples == 300


@pytest.mark.parametrize("where", ["inside", "same", "link-inside"])
def test_path_out_inside_or_onto_the_data_store_is_refused_before_the_fit(tmp_path, capsys, where):
    """``dsketch path --out`` inside the data store (directly or through a symlink) once
    wrote its .npz into the store; like ``fit --out`` it is refused before any fit."""
    store = _problem(tmp_path / ("data.npz" if where == "same" else "data.zarr"))
    before = _digest(store)
    out = {"inside": os.path.join(store, "path.npz"), "same": store, "link-inside": str(tmp_path / "link.npz")}[where]
    if where == "link-inside":
        os.symlink(os.path.join(store, "path.npz"), out)
    argv = ["path", "--model", "logistic", "--data", store, "--out", out, "--alphas", "0.1", "--overwrite"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dsketch path: error:") and "--data" in err[0], err
    assert _digest(store) == before


@pytest.mark.parametrize("what", ["file", "directory"])
def test_fit_out_onto_file_or_directory_is_refused_before_the_fit(client, tmp_path, what):
    """Once refused only when the result was saved, after the whole fit (checkpoint left behind)."""
    store = _problem(tmp_path / "p.zarr")
    out = tmp_path / "precious"
    if what == "file":
        out.write_text("keep me")
    else:
        out.mkdir()
        (out / "thesis.tex").write_text("keep me")
    before = _transitions(client)
    t0 = time.perf_counter()
    proc = _cli(*FIT, "--data", store, "--out", str(out), "--overwrite", "--scheduler", client.scheduler.address)
    elapsed = time.perf_counter() - t0
    _one_line_error(proc, "precious", "remove it yourself or choose another path")
    assert _transitions(client) == before, "the fit ran on the cluster before the path was refused"
    assert elapsed < 60
    assert not os.path.exists(f"{out}.checkpoint")
    assert (out if what == "file" else out / "thesis.tex").read_text() == "keep me"
    assert sorted(os.listdir(tmp_path)) == ["p.zarr", "precious"]


def test_fit_plot_and_checkpoint_paths_are_checked_before_the_fit(client, tmp_path):
    store = _problem(tmp_path / "p.zarr")
    before = _transitions(client)
    out = str(tmp_path / "r.zarr")
    proc = _cli(*FIT, "--data", store, "--out", out, "--plot", str(tmp_path / "missing-dir" / "c.png"),
                "--scheduler", client.scheduler.address)
    _one_line_error(proc, "--plot", "does not exist")
    _problem(f"{out}.checkpoint")  # a problem store where the checkpoint would go
    proc = _cli(*FIT, "--data", store, "--out", out, "--scheduler", client.scheduler.address)
    _one_line_error(proc, "checkpoint", "problem store")
    assert _transitions(client) == before and not os.path.exists(out)


def test_save_result_overwrite_replaces_only_results(tmp_path):
    """The Python API: save_result(overwrite=True) replaces a result, through a symlink too."""
    from dsketch.solvers.result import FitResult, Status

    res = FitResult(x=np.ones(3), fun=1.0, success=True, status=Status.CONVERGED_GRADIENT, message="m", nit=1,
                    n_passes=1, wall_time=0.1, grad_norm=0.0, history={"loss": np.ones(1)})
    store = _problem(tmp_path / "p.zarr")
    before = _digest(store)
    with pytest.raises(StoreExistsError, match="problem store"):
        save_result(res, store, overwrite=True)
    assert _digest(store) == before
    save_result(res, str(tmp_path / "real.zarr"))
    os.symlink(tmp_path / "real.zarr", tmp_path / "r.zarr")
    res = dataclasses.replace(res, x=np.full(3, 2.0))  # results are immutable: a changed copy
    save_result(res, str(tmp_path / "r.zarr"), overwrite=True)
    assert os.path.islink(tmp_path / "r.zarr")
    np.testing.assert_array_equal(dsketch.load_result(str(tmp_path / "real.zarr")).x, 2.0)
    assert sorted(os.listdir(tmp_path)) == ["p.zarr", "r.zarr", "real.zarr"]


# ------------------------------------------------------------------------------ demo --out
def test_demo_out_onto_unrelated_directory_is_refused(client, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    proc = _cli("demo", "--out", str(out), "--n-samples", "2000", "--n-features", "5", "--scheduler",
                client.scheduler.address)
    _one_line_error(proc, "notes.txt", "--overwrite")
    assert sorted(os.listdir(out)) == ["notes.txt"]


def test_demo_overwrite_replaces_only_what_a_demo_wrote(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    (out / "softmax.zarr").mkdir()  # the demo's store name, but not a problem store
    (out / "softmax.zarr" / "data.csv").write_text("1,2")
    assert main(["demo", "--out", str(out), "--overwrite", "--scheduler", "tcp://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert "softmax.zarr" in err and len(err.strip().splitlines()) == 1
    assert (out / "softmax.zarr" / "data.csv").read_text() == "1,2"


# ------------------------------------------------------------------------------ leftovers
def test_disk_full_convert_leaves_no_partial_directory(tmp_path, monkeypatch):
    """A chunk write fails with ENOSPC while zarr's other writes of the call are in flight."""
    import zarr.storage._local as local

    n = 20_000
    np.save(tmp_path / "A.npy", np.random.default_rng(0).standard_normal((n, 4)))
    np.save(tmp_path / "b.npy", np.zeros(n))
    put, lock, count = local._put, threading.Lock(), [0]

    def full_disk(path, value, exclusive=False):
        with lock:
            count[0] += 1
            k = count[0]
        if "/A/c/" in str(path) and k >= 8:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        time.sleep(0.05)  # the other writes are still running when the first one fails
        return put(path, value, exclusive=exclusive)

    monkeypatch.setattr(local, "_put", full_disk)
    with pytest.raises(OSError) as exc:
        convert(tmp_path / "A.npy", tmp_path / "p.zarr", target=tmp_path / "b.npy",
                                      chunk_rows=1024)
    assert exc.value.errno == errno.ENOSPC
    time.sleep(0.5)  # any straggling writer would have recreated the directory by now
    assert glob.glob(str(tmp_path / "*.partial-*")) == []
    assert sorted(os.listdir(tmp_path)) == ["A.npy", "b.npy"]


def test_convert_overwrite_through_symlink_keeps_the_link(tmp_path, capsys):
    n = 50
    np.save(tmp_path / "A.npy", np.full((n, 2), 3.0))
    np.save(tmp_path / "b.npy", np.ones(n))
    real = _problem(tmp_path / "data" / "real.zarr")
    link = tmp_path / "link.zarr"
    os.symlink(real, link)
    assert main(["convert", str(tmp_path / "A.npy"), str(link), "--target", str(tmp_path / "b.npy"),
                 "--overwrite"]) == 0
    assert os.path.islink(link) and os.path.realpath(link) == os.path.realpath(real)
    spec = open_problem(real)
    assert spec.n_samples == n
    np.testing.assert_array_equal(read_block(spec, 0, n).A, 3.0)
    assert glob.glob(str(tmp_path / "*.partial-*")) == glob.glob(str(tmp_path / "data" / "*.partial-*")) == []
    assert sorted(os.listdir(tmp_path)) == ["A.npy", "b.npy", "data", "link.zarr"]
    # a link to something that is not a problem store is refused, the link and its target kept
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    os.symlink(tmp_path / "notes", tmp_path / "notes-link")
    assert main(["convert", str(tmp_path / "A.npy"), str(tmp_path / "notes-link"), "--target",
                 str(tmp_path / "b.npy"), "--overwrite"]) == 2
    assert "not a Zarr store" in capsys.readouterr().err
    assert os.path.islink(tmp_path / "notes-link") and os.listdir(tmp_path / "notes") == ["a.txt"]


# ------------------------------------------------------------------------------ property
STATES = ("missing", "problem", "result", "file", "data")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(state=st.sampled_from(STATES), via_link=st.booleans(), read_only=st.booleans(), overwrite=st.booleans())
def test_fit_out_check_accepts_only_a_new_path_or_a_result(tmp_path_factory, state, via_link, read_only,
                                                            overwrite):
    """``fit --out``'s check over random states of the path: accepted are a missing path
    (not a broken link) in a writable directory and, with overwrite, an earlier result."""
    root = tmp_path_factory.mktemp("out")
    data = _problem(root / "data.zarr", n=20)
    parent = root / "parent"
    parent.mkdir()
    target = parent / "r.zarr"
    if state == "problem":
        _problem(target, n=20)
    elif state == "result":
        dsketch.store.write_group(target, {"x": np.ones(2)}, {outputs.RESULT_ATTR: {}})
    elif state == "file":
        target.write_text("x")
    elif state == "data":
        target = root / "data.zarr"
    out = target
    if via_link:
        out = root / "link.zarr"
        os.symlink(target, out)
    if read_only:
        os.chmod(parent, 0o555)
    writable = os.access(parent, os.W_OK | os.X_OK)  # root may write anyway
    try:
        try:
            real = outputs.check_output(out, outputs.RESULT, overwrite=overwrite, others={"--data": data})
            accepted = True
        except DSketchError as exc:
            accepted, msg = False, str(exc)
    finally:
        os.chmod(parent, 0o755)
    expected = {
        "missing": not via_link and writable,  # a link to nothing is refused
        "result": overwrite and writable,
        "problem": False,
        "file": False,
        "data": False,
    }[state]
    assert accepted == expected, (state, via_link, read_only, overwrite)
    if accepted:
        assert real == os.path.realpath(target)
    else:
        assert str(out) in msg and len(msg.splitlines()) == 1


# ------------------------------------------------- every writing command, random path states
KIND_STATES = ("missing", "problem", "result", "checkpoint", "prediction", "zarr", "empty-dir", "dir", "file",
               "data")
STATE_KIND = {"problem": outputs.PROBLEM, "result": outputs.RESULT, "checkpoint": outputs.CHECKPOINT,
              "prediction": outputs.PREDICTION}


def _make_state(root, state):
    target = root / "parent" / "out.zarr"
    if state == "problem":
        _problem(target, n=20)
    elif state in ("result", "checkpoint", "prediction"):
        attr = {"result": outputs.RESULT_ATTR, "checkpoint": outputs.CHECKPOINT_ATTR,
                "prediction": outputs.PREDICTION_ATTR}[state]
        dsketch.store.write_group(target, {"x": np.ones(2)}, {attr: {}})
    elif state == "zarr":
        import zarr

        zarr.open_group(str(target), mode="w").attrs["other"] = 1
    elif state == "empty-dir":
        target.mkdir()
    elif state == "dir":
        target.mkdir()
        (target / "notes.txt").write_text("keep me")
    elif state == "file":
        target.write_text("keep me")
    elif state == "data":
        target = root / "data.zarr"
    return target


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=st.sampled_from([outputs.RESULT, outputs.PROBLEM, outputs.PREDICTION, outputs.CHECKPOINT]),
       state=st.sampled_from(KIND_STATES), via_link=st.booleans(), overwrite=st.booleans())
def test_every_output_kind_replaces_only_its_own_kind(tmp_path_factory, kind, state, via_link, overwrite):
    """The rule shared by fit (result, checkpoint), convert / make-data (problem store) and
    predict (prediction store): a new path is accepted; an existing one only with overwrite
    and only when it is an output of the same kind (or an empty directory); never the
    command's input, a plain file, a directory of other things or another kind of store."""
    root = tmp_path_factory.mktemp("kinds")
    data = _problem(root / "data.zarr", n=20)
    (root / "parent").mkdir()
    target = _make_state(root, state)
    out = target
    if via_link:
        out = root / "link.zarr"
        os.symlink(target, out)
    before = sorted(os.listdir(target)) if os.path.isdir(target) else None
    try:
        real = outputs.check_output(out, kind, overwrite=overwrite, others={"--data": data})
        accepted = True
    except DSketchError as exc:
        accepted, msg = False, str(exc)
    if state == "missing":
        expected = not via_link
    elif state == "data":
        expected = False
    else:
        expected = overwrite and (STATE_KIND.get(state) == kind or state == "empty-dir")
    assert accepted == expected, (kind, state, via_link, overwrite)
    if accepted:
        assert real == os.path.realpath(target)
    else:
        assert len(msg.splitlines()) == 1
    if before is not None:  # the check itself never changes what is there
        assert sorted(os.listdir(target)) == before


def _contents(target):
    """Every file's bytes under ``target`` (or the file's own)."""
    paths = glob.glob(str(target) + "/**", recursive=True) if os.path.isdir(target) else [str(target)]
    return {p: Path(p).read_bytes() for p in paths if os.path.isfile(p)}


@pytest.mark.parametrize("state", ["problem", "result", "dir", "file"])
@pytest.mark.parametrize("command", ["convert", "make-data", "fit", "predict"])
def test_every_writing_command_refuses_foreign_outputs_before_work(tmp_path, capsys, command, state):
    """Each command that writes a store, pointed with --overwrite at something of another
    kind, ends in one line with exit status 2 and leaves it as it was."""
    data = _problem(tmp_path / "data.zarr", n=20)
    (tmp_path / "parent").mkdir()
    own = {"convert": "problem", "make-data": "problem", "fit": "result", "predict": "prediction"}[command]
    if state == own:
        state = "zarr"  # the command's own kind is replaceable: test another foreign kind
    target = _make_state(tmp_path, state)
    snapshot = _contents(target)
    np.save(tmp_path / "A.npy", np.ones((20, 2)))
    np.save(tmp_path / "b.npy", np.ones(20))
    result = tmp_path / "fitted.zarr"
    dsketch.store.write_group(result, {"x": np.ones(2)}, {outputs.RESULT_ATTR: {}})
    argv = {
        "convert": ["convert", str(tmp_path / "A.npy"), str(target), "--target", str(tmp_path / "b.npy")],
        "make-data": ["make-data", str(target), "--model", "logistic", "--n-samples", "10", "--n-features", "2"],
        "fit": ["fit", "--model", "logistic", "--data", data, "--out", str(target)],
        "predict": ["predict", "--result", str(result), "--data", data, "--out", str(target)],
    }[command]
    assert main([*argv, "--overwrite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"dsketch {command}: error:"), err
    after = _contents(target)
    assert after == snapshot
