"""The defaults of a fit from a store: the driver's threads when no cluster is named, the
blocks held in memory when they fit (``Cluster(persist=None)``), and the store's codec
(Blosc LZ4; stores written with another codec still read). None changes a result."""

from __future__ import annotations

import contextlib
from unittest import mock

import numpy as np
import pytest
import zarr

import dsketch
from dsketch import api, session
from dsketch.engine.memory import MemoryLimits, holds_blocks
from dsketch.errors import InvalidOptionError, StoreChangedError
from dsketch.store import layout, open_problem

KW = dict(model_params={"l2": 1e-4}, solver=dsketch.Solver(tol=1e-12, max_iter=30))


def _data(seed: int = 3, n: int = 3000, d: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, d))
    y = (rng.random(n) < 1 / (1 + np.exp(-A @ rng.standard_normal(d)))).astype(float)
    return A, y


def _no_cluster(*args, **kwargs):
    raise AssertionError("a cluster was started")


def test_a_store_fit_without_a_cluster_runs_on_threads_holds_its_blocks_and_matches_a_dask_cluster(client, tmp_path):
    """No cluster named: no cluster starts; the blocks are held (the store read once) and
    the passes counted as when streaming; the coefficients are those of a streamed fit on a
    Dask cluster, bit for bit."""
    path = str(tmp_path / "p.zarr")
    dsketch.write_problem(path, *_data(), chunk_rows=512)
    with mock.patch.object(session, "connect", _no_cluster):
        held = dsketch.fit(path, "logistic", cluster=dsketch.Cluster(block_rows=1000), **KW)
    streamed = dsketch.fit(path, "logistic", cluster=dsketch.Cluster(client, block_rows=1000, persist=False), **KW)
    assert held.info["persist"] is True and streamed.info["persist"] is False
    assert held.n_passes == streamed.n_passes and held.nit == streamed.nit
    np.testing.assert_array_equal(held.x, streamed.x)


def test_n_workers_given_starts_a_process_cluster_of_that_size(client, tmp_path):
    path = str(tmp_path / "p.zarr")
    dsketch.write_problem(path, *_data())
    asked = []

    @contextlib.contextmanager
    def fake_connect(scheduler, *, n_workers):
        asked.append((scheduler, n_workers))
        yield client

    with mock.patch.object(session, "connect", fake_connect):
        dsketch.fit(path, "logistic", cluster=dsketch.Cluster(n_workers=1), **KW)
    assert asked == [(None, 1)]


def test_blocks_are_held_only_when_they_fit_half_the_memory(tmp_path):
    path = str(tmp_path / "p.zarr")
    A, y = _data(n=20000, d=20)
    spec = dsketch.write_problem(path, A, y)
    roomy = MemoryLimits(driver_bytes=100 * A.nbytes, worker_bytes=100 * A.nbytes, n_workers=1, threads=1, shared=True)
    tight = MemoryLimits(driver_bytes=100 * A.nbytes, worker_bytes=A.nbytes, n_workers=1, threads=1)
    assert holds_blocks(spec, roomy)
    assert not holds_blocks(spec, tight)  # the blocks alone take more than half of a worker


def test_blocks_are_streamed_when_they_do_not_fit(tmp_path, monkeypatch):
    path = str(tmp_path / "p.zarr")
    dsketch.write_problem(path, *_data())
    monkeypatch.setattr(api, "holds_blocks", lambda *a, **k: False)
    res = dsketch.fit(path, "logistic", **KW)
    assert res.info["persist"] is False and res.success


def test_a_store_replaced_during_a_default_fit_is_an_error(tmp_path):
    """The held blocks keep the old data; the fit still refuses to report a result for the
    store that now sits at the path."""
    path = str(tmp_path / "p.zarr")
    dsketch.write_problem(path, *_data())
    done = []

    def replace(state):
        if state.iteration == 1 and not done:
            dsketch.write_problem(path, *_data(seed=9), overwrite=True)
            done.append(1)

    with pytest.raises(StoreChangedError, match="was replaced"):
        dsketch.fit(path, "logistic", callback=replace, **KW)
    assert done == [1]


def test_new_stores_use_blosc_lz4_and_old_zstd_stores_fit_the_same(tmp_path):
    A, y = _data()
    new, old = str(tmp_path / "new.zarr"), str(tmp_path / "old.zarr")
    dsketch.write_problem(new, A, y)
    with mock.patch.object(layout, "default_compressors", lambda: (zarr.codecs.ZstdCodec(level=0),)):
        dsketch.write_problem(old, A, y)
    (codec,) = zarr.open_group(new, mode="r")["A"].compressors
    assert type(codec).__name__ == "BloscCodec" and codec.cname.value == "lz4"
    (codec,) = zarr.open_group(old, mode="r")["A"].compressors
    assert type(codec).__name__ == "ZstdCodec"
    np.testing.assert_array_equal(zarr.open_group(new, mode="r")["A"][...], A)
    fits = [dsketch.fit(p, "logistic", **KW).x for p in (new, old)]
    in_memory = dsketch.fit((A, y), "logistic", **KW).x
    np.testing.assert_array_equal(fits[0], fits[1])
    np.testing.assert_array_equal(fits[0], in_memory)
    assert open_problem(old).n_samples == A.shape[0]


def test_cluster_persist_and_n_workers_accept_none_and_refuse_other_values():
    assert dsketch.Cluster().persist is None and dsketch.Cluster().n_workers is None
    with pytest.raises(InvalidOptionError, match="persist must be True or False or None"):
        dsketch.Cluster(persist="yes")
    with pytest.raises(InvalidOptionError, match="n_workers"):
        dsketch.Cluster(n_workers=0)
