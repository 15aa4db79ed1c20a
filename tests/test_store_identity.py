"""The identity of a problem store: a store replaced at its path (same shape, other data) while
a fit reads it, or between a checkpoint and its resume, is a clear error, never a result."""

from __future__ import annotations

import os

import numpy as np
import pytest
import zarr

import dsketch
from dsketch.errors import DSketchError, StoreChangedError
from dsketch.solvers.checkpoint import FINGERPRINT_KEY, load_checkpoint
from dsketch.solvers.result import Status
from dsketch.store import ProblemSpec, open_problem, read_block
from dsketch.store._identity import TOKEN_ATTR

#: Small logistic fits that take several exact Newton iterations over 4 blocks.
KW = dict(model_params={"l2": 1e-4}, solver=dsketch.Solver(tol=1e-12, max_iter=30))


def _on(client, **kw):
    """The cluster settings of these fits: blocks of 1000 rows on ``client``."""
    return dsketch.Cluster(client, block_rows=1000, **kw)


def _data(seed: int, n: int = 4000, d: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, d)) / np.sqrt(d)
    y = (rng.random(n) < 1 / (1 + np.exp(-A @ rng.standard_normal(d)))).astype(float)
    return A, y


def _write(path: str, seed: int, **kw) -> ProblemSpec:
    A, y = _data(seed)
    return dsketch.write_problem(path, A, y, chunk_rows=1000, **kw)


def _replace_at(iteration: int, path: str, seed: int = 99):
    """A callback that rewrites the store at ``path`` (same shape, other data) once, after
    ``iteration`` (the ``fit(callback=)`` runs between the passes of two iterations)."""
    done: list[int] = []

    def callback(state):
        if state.iteration == iteration and not done:
            _write(path, seed, overwrite=True)
            done.append(state.iteration)

    return callback, done


def _stop_at(iteration: int):
    def callback(state):
        if state.iteration == iteration:
            raise StopIteration

    return callback


def _drop_token(path: str) -> None:
    """Make the store look written by a dsketch without content-version tokens."""
    g = zarr.open_group(path, mode="r+")
    del g.attrs[TOKEN_ATTR]


def test_fingerprint_is_stable_for_a_store_and_changes_with_a_rewrite(tmp_path):
    """(c, store level) The same store opened twice has equal fingerprints (the one
    write_problem returns too); the token is not part of the user's metadata; a rewrite with
    the very same data is another store, and a spec of the old one refuses to read it."""
    path = str(tmp_path / "p.zarr")
    written = _write(path, 1, attrs={"dsketch": {"k": 1}})
    first, second = open_problem(path), open_problem(path)
    assert first.fingerprint and first.fingerprint == second.fingerprint == written.fingerprint
    assert first == second and first.metadata == {"dsketch": {"k": 1}}
    read_block(first, 0, 1000)  # caches the opened arrays of this store in this process
    rewritten = _write(path, 1, attrs={"dsketch": {"k": 1}}, overwrite=True)
    assert rewritten.fingerprint != first.fingerprint
    with pytest.raises(StoreChangedError, match="was replaced") as info:
        read_block(first, 0, 1000)
    assert path in str(info.value) and isinstance(info.value, DSketchError)
    np.testing.assert_array_equal(read_block(rewritten, 0, 1000).A, _data(1)[0][:1000])


def test_store_replaced_between_passes_of_a_streamed_fit_is_an_error(client, tmp_path):
    """(a, streamed) Blocks are read from the store on every pass: the first pass after the
    rewrite raises StoreChangedError (before, the workers silently reopened the new store and
    the fit reported 'Converged' with coefficients of neither dataset)."""
    path = str(tmp_path / "p.zarr")
    _write(path, 1)
    replace, done = _replace_at(1, path)
    with pytest.raises(StoreChangedError, match="was replaced"):
        dsketch.fit(path, "logistic", cluster=_on(client, persist=False), callback=replace, **KW)
    assert done == [1]


def test_store_replaced_during_a_persisted_fit_is_an_error_at_the_end_and_at_checkpoints(client, tmp_path):
    """(a, persisted) With persist=True the blocks in worker memory keep the data loaded, so the
    passes go on with the old store's data (consistently); but the result would be reported for
    the path, where another store now is: the fit raises StoreChangedError at the next
    checkpoint (none is written for the replaced store) or, without one, at the end."""
    path = str(tmp_path / "p.zarr")
    _write(path, 1)
    replace, done = _replace_at(1, path)
    with pytest.raises(StoreChangedError, match="was replaced"):
        dsketch.fit(path, "logistic", cluster=_on(client, persist=True), callback=replace, **KW)
    assert done == [1]

    path2, ck = str(tmp_path / "q.zarr"), str(tmp_path / "run.checkpoint")
    spec = _write(path2, 2)
    replace, done = _replace_at(1, path2)
    with pytest.raises(StoreChangedError, match="was replaced"):
        dsketch.fit(path2, "logistic", cluster=_on(client, persist=True), callback=replace, checkpoint=ck, **KW)
    saved = load_checkpoint(ck)  # the last checkpoint is the one written before the rewrite
    assert done == [1] and saved.iteration == 1
    assert saved.settings[FINGERPRINT_KEY] == spec.fingerprint


def test_resume_against_a_replaced_store_is_refused(client, tmp_path):
    """(b) A checkpointed fit stopped after 2 iterations, the store replaced at the same path:
    resume raises StoreChangedError (before, it continued on the new data, the loss history
    jumping, and reported 'Converged')."""
    path, ck = str(tmp_path / "p.zarr"), str(tmp_path / "run.checkpoint")
    spec = _write(path, 1)
    stopped = dsketch.fit(path, "logistic", cluster=_on(client), checkpoint=ck, callback=_stop_at(2), **KW)
    assert stopped.status is Status.CALLBACK_STOP and stopped.nit == 2
    _write(path, 99, overwrite=True)
    with pytest.raises(StoreChangedError, match="has been replaced since") as info:
        dsketch.fit(path, "logistic", cluster=_on(client), checkpoint=ck, resume=True, **KW)
    assert ck in str(info.value) and path in str(info.value)
    assert load_checkpoint(ck).settings[FINGERPRINT_KEY] == spec.fingerprint  # left as it was


def test_cli_resume_against_a_replaced_store_prints_one_line_and_exits_2(client, tmp_path, capsys):
    from dsketch.cli import main

    path, out = str(tmp_path / "p.zarr"), str(tmp_path / "r.zarr")
    _write(path, 1)
    # the checkpoint 'dsketch fit --out r.zarr' keeps, as left by a fit that stopped early
    dsketch.fit(path, "logistic", cluster=client, checkpoint=out + ".checkpoint", callback=_stop_at(2))
    _write(path, 99, overwrite=True)
    capsys.readouterr()
    code = main(["fit", "--model", "logistic", "--data", path, "--out", out, "--resume",
                 "--scheduler", client.scheduler.address])
    err = capsys.readouterr().err
    assert code == 2 and not os.path.exists(out)
    assert err.count("\n") == 1 and "error:" in err and "replaced" in err


def test_resume_against_the_unchanged_store_goes_on(client, tmp_path):
    """(c) The same store resumes fine and ends where an uninterrupted fit ends; the
    checkpoint records the fingerprint the store still has when it is opened again."""
    path, ck = str(tmp_path / "p.zarr"), str(tmp_path / "run.checkpoint")
    _write(path, 1)
    whole = dsketch.fit(path, "logistic", cluster=_on(client), **KW)
    dsketch.fit(path, "logistic", cluster=_on(client), checkpoint=ck, callback=_stop_at(2), **KW)
    assert load_checkpoint(ck).settings[FINGERPRINT_KEY] == open_problem(path).fingerprint
    resumed = dsketch.fit(path, "logistic", cluster=_on(client), checkpoint=ck, resume=True, **KW)
    assert whole.success and resumed.success and resumed.nit == whole.nit > 2
    np.testing.assert_allclose(resumed.x, whole.x, rtol=1e-9)


def test_store_without_a_token_opens_fits_and_is_still_told_apart(client, tmp_path):
    """(d) A store written before the content-version token existed (attribute deleted) opens
    and fits as before; its fingerprint falls back to the directory's identity, so another such
    store put at the same path is still seen."""
    path = str(tmp_path / "p.zarr")
    _write(path, 1, attrs={"dsketch": {"k": 1}})
    _drop_token(path)
    old = open_problem(path)
    assert TOKEN_ATTR not in zarr.open_group(path, mode="r").attrs
    assert old.fingerprint and old.fingerprint == open_problem(path).fingerprint
    assert old.metadata == {"dsketch": {"k": 1}}
    res = dsketch.fit(old, "logistic", cluster=_on(client), **KW)
    assert res.success
    _write(path, 1, attrs={"dsketch": {"k": 1}}, overwrite=True)  # same data, same metadata
    _drop_token(path)
    assert open_problem(path).fingerprint != old.fingerprint
    with pytest.raises(StoreChangedError, match="was replaced"):
        read_block(old, 0, 1000)
