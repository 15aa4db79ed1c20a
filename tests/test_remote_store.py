"""Stores addressed by an fsspec URL are read exactly like local paths (here: ``file://``)."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

import dsketch
from dsketch.cli import main
from dsketch.errors import StoreNotFoundError
from dsketch.store import open_problem, read_block, read_global, write_problem
from dsketch.store.convert import describe


def _url(path) -> str:
    return "file://" + str(path)


@pytest.mark.parametrize("sparse", [False, True])
def test_url_store_opens_and_reads_like_a_path(tmp_path, sparse):
    rng = np.random.default_rng(0)
    A = sp.random(3000, 7, density=0.4, format="csr", random_state=rng) if sparse else rng.standard_normal((3000, 7))
    local = write_problem(str(tmp_path / "p.zarr"), A, rng.standard_normal(3000), rng.uniform(size=3000),
                          extra={"E": rng.standard_normal((3000, 2))}, chunk_rows=1024)
    remote = open_problem(_url(local.path), check="full")
    assert remote.path == _url(local.path)
    for field in ("n_samples", "n_features", "sparse", "nnz", "dtype", "has_w", "members", "a_chunk_rows"):
        assert getattr(remote, field) == getattr(local, field)
    for r0, r1 in [(0, 1), (1000, 2500), (2999, 3000)]:
        a, b = read_block(local, r0, r1, members=("E",)), read_block(remote, r0, r1, members=("E",))
        Aa = a.A.toarray() if sparse else a.A
        Ab = b.A.toarray() if sparse else b.A
        np.testing.assert_array_equal(Aa, Ab)
        np.testing.assert_array_equal(a.b, b.b)
        np.testing.assert_array_equal(a.extra["E"], b.extra["E"])
    assert describe(remote)["shape"] == [3000, 7]


def test_url_store_errors_are_the_local_ones(tmp_path):
    with pytest.raises(StoreNotFoundError, match="no problem store"):
        open_problem(_url(tmp_path / "missing.zarr"))
    rng = np.random.default_rng(1)
    spec = write_problem(str(tmp_path / "p.zarr"), rng.standard_normal((50, 3)), rng.standard_normal(50))
    remote = open_problem(_url(spec.path))
    shutil.rmtree(spec.path)
    with pytest.raises(StoreNotFoundError, match="no longer exists"):
        read_block(remote, 0, 10)


def test_fit_from_url_equals_fit_from_path(client, tmp_path, capsys):
    rng = np.random.default_rng(2)
    n, d, m = 4000, 5, 3
    A = rng.standard_normal((n, d)) / np.sqrt(d)
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-A @ rng.standard_normal(d)))).astype(float)
    spec = write_problem(str(tmp_path / "logit.zarr"), A, y, chunk_rows=1024)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r_local = dsketch.fit(spec.path, "logistic", model_params={"l2": 1e-3}, curvature="leverage",
                              cluster=dsketch.Cluster(client, block_rows=1000), solver=dsketch.Solver(tol=1e-10))
        r_url = dsketch.fit(_url(spec.path), "logistic", model_params={"l2": 1e-3}, curvature="leverage",
                            cluster=dsketch.Cluster(client, block_rows=1000), solver=dsketch.Solver(tol=1e-10))
    np.testing.assert_array_equal(r_local.x, r_url.x)  # same data, same counter-based sample
    # a paired store (global member) through a URL, and the command line
    P = rng.standard_normal((n, m)) * np.sqrt(n)
    paired = write_problem(str(tmp_path / "paired.zarr"), A, None, np.full(n, 0.05), extra={"A2T": P},
                           global_arrays={"b": rng.standard_normal(m) * 0.2}, chunk_rows=1024)
    np.testing.assert_array_equal(read_global(open_problem(_url(paired.path)), "b"), read_global(paired, "b"))
    out = str(tmp_path / "r.zarr")
    assert main(["fit", "--model", "two-layer", "--data", _url(paired.path), "--out", out, "--tol", "1e-9",
                 "--scheduler", client.scheduler.address]) == 0
    assert dsketch.load_result(out).success
