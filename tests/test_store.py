"""Tests of dsketch.store: problem stores, row blocks, atomic writers, builders, groups."""

from __future__ import annotations

import glob
import json
import multiprocessing
import os
import pickle
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
import scipy.sparse as sp
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsketch.errors import (
    ChunkLayoutError,
    DTypeError,
    EmptyProblemError,
    EncodingError,
    InvalidIndicesError,
    NonFiniteError,
    ShapeMismatchError,
    StoreExistsError,
    StoreFormatError,
    StoreNotFoundError,
)
from dsketch.store import (
    Block,
    EdgePieces,
    ProblemBuilder,
    default_chunk_rows,
    open_problem,
    read_block,
    read_group,
    write_group,
    write_problem,
)
from dsketch.store import builder as builder_mod

N, D, CHUNK = 300, 6, 64


def _csr(rng: np.random.Generator, n: int, d: int, max_per_row: int = 4) -> sp.csr_matrix:
    """Random CSR with 0..max_per_row entries per row (some rows empty)."""
    counts = rng.integers(0, max_per_row + 1, n)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    indices = np.concatenate([np.sort(rng.choice(d, k, replace=False)) for k in counts]).astype(np.int32)
    return sp.csr_matrix((rng.normal(size=indptr[-1]), indices, indptr), shape=(n, d))


def _partials(path: str) -> list[str]:
    return glob.glob(path + ".partial-*") + glob.glob(path + ".old-*")


@pytest.fixture
def dense_problem(tmp_path, rng):
    A, b, w = rng.normal(size=(N, D)), rng.normal(size=N), rng.uniform(size=N)
    z = rng.normal(size=(N, 2))
    spec = write_problem(tmp_path / "dense.zarr", A, b, w, extra={"z": z}, attrs={"dsketch": {"model": "x"}},
                         chunk_rows=CHUNK)
    return spec, A, b, w, z


@pytest.fixture
def csr_problem(tmp_path, rng):
    A, b = _csr(rng, N, 40), rng.normal(size=N)
    return write_problem(tmp_path / "csr.zarr", A, b, chunk_rows=CHUNK), A, b


# ------------------------------------------------------------------------------ round trips
def test_dense_round_trip(dense_problem):
    spec, A, b, w, z = dense_problem
    assert (spec.n_samples, spec.n_features, spec.sparse, spec.nnz) == (N, D, False, N * D)
    assert spec.has_w and spec.members == ("z",) and spec.a_chunk_rows == CHUNK and spec.index_dtype is None
    assert spec.metadata == {"dsketch": {"model": "x"}} and os.path.isabs(spec.path)
    assert pickle.loads(pickle.dumps(spec)) == spec and spec.shape == (N, D) and spec.density == 1.0
    blk = read_block(spec, 0, N, members=("z",))
    assert isinstance(blk, Block) and blk.A.flags.c_contiguous and blk.A.dtype == np.float64
    np.testing.assert_array_equal(blk.A, A)
    np.testing.assert_array_equal(blk.b, b)
    np.testing.assert_array_equal(blk.w, w)
    np.testing.assert_array_equal(blk.extra["z"], z)
    assert open_problem(spec.path, check="full") == spec


def test_csr_round_trip(csr_problem):
    spec, A, b = csr_problem
    assert spec.sparse and spec.nnz == A.nnz and spec.index_dtype == "int32" and not spec.has_w
    blk = read_block(spec, 0, N)
    assert isinstance(blk.A, sp.csr_matrix) and blk.A.dtype == np.float64 and blk.A.has_canonical_format
    assert blk.A.shape == A.shape and (blk.A != A).nnz == 0 and blk.w is None
    g = zarr.open_group(spec.path, mode="r")
    assert dict(g["A"].attrs) == {"encoding-type": "csr_matrix", "encoding-version": "0.1.0", "shape": [N, 40]}
    assert g["A/indptr"].dtype == np.int64


def test_write_problem_canonicalises_without_touching_input(tmp_path):
    A = sp.csr_matrix((np.array([1.0, 2.0, 3.0]), np.array([2, 0, 2]), np.array([0, 3, 3])), shape=(2, 3))
    before = A.indices.copy()
    spec = write_problem(tmp_path / "p.zarr", A, np.zeros(2))
    np.testing.assert_array_equal(A.indices, before)
    np.testing.assert_array_equal(read_block(spec, 0, 2).A.toarray(), [[2.0, 0.0, 4.0], [0.0, 0.0, 0.0]])


def test_float32_kept_and_bool_targets(tmp_path, rng):
    A = rng.normal(size=(20, 3)).astype(np.float32)
    spec = write_problem(tmp_path / "p.zarr", A, rng.uniform(size=20) > 0.5)
    assert spec.dtype == "float32"
    blk = read_block(spec, 0, 20)
    assert blk.A.dtype == np.float64 and set(np.unique(blk.b)) <= {0.0, 1.0}


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_store_written_by_plain_zarr_opens(tmp_path, rng, zarr_format):
    A, b = _csr(rng, 50, 9), rng.normal(size=50)
    g = zarr.open_group(tmp_path / "plain.zarr", mode="w", zarr_format=zarr_format)
    a = g.create_group("A")
    a.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0", "shape": [50, 9]})
    for name, arr in (("data", A.data), ("indices", A.indices.astype(np.int64)), ("indptr", A.indptr.astype(np.int64))):
        a.create_array(name, shape=arr.shape, chunks=(16,), dtype=arr.dtype)[:] = arr
    g.create_array("b", shape=(50,), chunks=(7,), dtype="f4")[:] = b
    g.create_array("dense", shape=(50, 9), chunks=(10, 9), dtype="i8")[:] = A.toarray().round()
    g.attrs["dsketch"] = {"model": "least-squares"}
    spec = open_problem(tmp_path / "plain.zarr", check="full")
    assert spec.index_dtype == "int64" and spec.members == ("dense",) and spec.a_chunk_rows == 16
    blk = read_block(spec, 3, 41, members=["dense"])
    assert (blk.A != A[3:41]).nnz == 0 and blk.extra["dense"].dtype == np.float64
    np.testing.assert_allclose(blk.b, b[3:41].astype(np.float32))
    del g["A"]  # dense A whose chunks are wider than the matrix also opens
    g.create_array("A", shape=(50, 9), chunks=(16, 32), dtype="f8")[:] = A.toarray()
    spec = open_problem(tmp_path / "plain.zarr", check="full")
    np.testing.assert_array_equal(read_block(spec, 2, 19).A, A[2:19].toarray())


# ------------------------------------------------------------------------------ read_block
RANGES = [(0, 1), (17, 18), (N - 1, N), (CHUNK - 1, CHUNK + 1), (10, 3 * CHUNK + 5), (0, N), (40, 40)]


@pytest.mark.parametrize(("r0", "r1"), RANGES)
def test_read_block_matches_memory(dense_problem, csr_problem, r0, r1):
    spec, A, b, w, z = dense_problem
    blk = read_block(spec, r0, r1, members=["z"])
    np.testing.assert_array_equal(blk.A, A[r0:r1])
    np.testing.assert_array_equal(blk.b, b[r0:r1])
    np.testing.assert_array_equal(blk.w, w[r0:r1])
    np.testing.assert_array_equal(blk.extra["z"], z[r0:r1])
    cspec, C, cb = csr_problem
    cblk = read_block(cspec, r0, r1)
    assert cblk.A.shape == (r1 - r0, C.shape[1]) and (cblk.A != C[r0:r1]).nnz == 0
    np.testing.assert_array_equal(cblk.b, cb[r0:r1])


@pytest.mark.parametrize(("r0", "r1"), [(-1, 3), (5, 4), (0, N + 1), (N + 1, N + 2)])
def test_read_block_bad_range(dense_problem, r0, r1):
    with pytest.raises(ValueError, match="row range"):
        read_block(dense_problem[0], r0, r1)


def test_bad_arguments(dense_problem):
    with pytest.raises(ValueError, match="no row-aligned member"):
        read_block(dense_problem[0], 0, 3, members=["nope"])
    with pytest.raises(ValueError, match="check must be"):
        open_problem(dense_problem[0].path, check="deep")


def test_read_block_after_store_removed(dense_problem):
    import shutil

    spec = dense_problem[0]
    read_block(spec, 0, 2)
    shutil.rmtree(spec.path)
    with pytest.raises(StoreNotFoundError, match="no longer exists"):
        read_block(spec, 0, 2)


# ------------------------------------------------------------------------------ validation
def _good(path, *, sparse=True, n=8, d=5, zarr_format=3):
    """A valid problem store written with plain zarr calls; returns the group."""
    g = zarr.open_group(path, mode="w", zarr_format=zarr_format)
    if sparse:
        a = g.create_group("A")
        a.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0", "shape": [n, d]})
        indptr = np.arange(n + 1, dtype=np.int64) * 2
        a.create_array("indptr", shape=(n + 1,), dtype="i8")[:] = indptr
        a.create_array("indices", shape=(2 * n,), dtype="i4")[:] = np.tile([0, 3], n)
        a.create_array("data", shape=(2 * n,), dtype="f8")[:] = np.arange(1.0, 2 * n + 1)
    else:
        g.create_array("A", shape=(n, d), chunks=(4, d), dtype="f8")[:] = np.ones((n, d))
    g.create_array("b", shape=(n,), dtype="f8")[:] = np.zeros(n)
    return g


def _set(g, name, values, dtype=None):
    values = np.asarray(values)
    del g[name]
    g.create_array(name, shape=values.shape, dtype=dtype or values.dtype)[...] = values


def _v2_pickled(path):
    _good(path, zarr_format=2)
    os.makedirs(os.path.join(path, "obj"))
    with open(os.path.join(path, "obj", ".zarray"), "w") as f:
        json.dump({"zarr_format": 2, "shape": [8], "chunks": [8], "dtype": "|O", "compressor": None,
                   "fill_value": None, "filters": [{"id": "pickle", "protocol": 4}], "order": "C"}, f)


def _corrupt_entry(g, member, index, value):
    arr = g[member]
    arr[index] = value


METADATA_CASES = [
    ("missing", lambda p: None, StoreNotFoundError, "no problem store"),
    ("plain-dir", lambda p: os.makedirs(p), StoreFormatError, "not a Zarr group"),
    ("zarr-array", lambda p: zarr.create_array(p, shape=(3,), dtype="f8"), StoreFormatError, "array, not a group"),
    ("no-A", lambda p: _good(p).__delitem__("A"), StoreNotFoundError, "no member 'A'"),
    ("no-b", lambda p: _good(p).__delitem__("b"), StoreNotFoundError, "no member 'b'"),
    ("no-encoding", lambda p: _good(p)["A"].attrs.__delitem__("encoding-type"), EncodingError, "encoding-type None"),
    ("csc", lambda p: _good(p)["A"].attrs.update({"encoding-type": "csc_matrix"}), EncodingError, "tocsr"),
    ("b-length", lambda p: _set(_good(p), "b", np.zeros(7)), ShapeMismatchError, "member 'b' has shape \\(7,\\)"),
    ("w-length", lambda p: _set(_good(p), "w", np.zeros(9)), ShapeMismatchError, "member 'w' has shape \\(9,\\)"),
    ("extra-length", lambda p: _set(_good(p), "z", np.zeros((3, 2))), ShapeMismatchError, "member 'z'"),
    ("shape-attr", lambda p: _good(p)["A"].attrs.update({"shape": [9, 5]}), ShapeMismatchError, "says 9 rows"),
    ("indptr-start", lambda p: _corrupt_entry(_good(p), "A/indptr", 0, 1), ShapeMismatchError, "start at 0"),
    ("indptr-decreasing", lambda p: _corrupt_entry(_good(p), "A/indptr", 3, 1), ShapeMismatchError,
     "decreases at row 2"),
    ("indptr-end", lambda p: _corrupt_entry(_good(p), "A/indptr", 8, 15), ShapeMismatchError, "end at len"),
    ("data-indices", lambda p: _set(_good(p)["A"], "indices", np.zeros(15, "i4")), ShapeMismatchError,
     "same length"),
    ("float-indices", lambda p: _set(_good(p)["A"], "indices", np.zeros(16)), DTypeError, "integer dtype"),
    ("no-rows", lambda p: _good(p, sparse=False, n=0), EmptyProblemError, "empty"),
    ("no-cols", lambda p: _good(p, sparse=False, d=0), EmptyProblemError, "empty"),
    ("no-nnz", lambda p: _empty_csr(p), EmptyProblemError, "0 stored entries"),
    ("string-b", lambda p: _set(_good(p), "b", np.array(["x"] * 8), dtype=str), DTypeError, "not numeric"),
    ("complex-A", lambda p: _set(_good(p, sparse=False), "A", np.zeros((8, 5), complex)), DTypeError, "not numeric"),
    ("pickled", _v2_pickled, DTypeError, "never unpickled"),
    ("col-chunks", lambda p: _column_chunked(p), ChunkLayoutError, "chunked by rows only"),
]


def _column_chunked(p):
    g = _good(p, sparse=False)
    del g["A"]
    g.create_array("A", shape=(8, 5), chunks=(4, 2), dtype="f8")[:] = 1.0


def _empty_csr(p):
    a = _good(p)["A"]
    _set(a, "data", np.zeros(0))
    _set(a, "indices", np.zeros(0, "i4"))
    _set(a, "indptr", np.zeros(9, "i8"))


@pytest.mark.parametrize(("make", "error", "match"), [c[1:] for c in METADATA_CASES],
                         ids=[c[0] for c in METADATA_CASES])
def test_open_problem_metadata_errors(tmp_path, make, error, match):
    path = str(tmp_path / "bad.zarr")
    make(path)
    with pytest.raises(error, match=match) as info:
        open_problem(path)
    if error is not StoreNotFoundError or "no problem store" not in match:
        assert path in str(info.value)  # every message names the store


FULL_CASES = [
    ("nan-dense-A", False, lambda g: _corrupt_entry(g, "A", (6, 2), np.nan), NonFiniteError, "'A'.*row 6"),
    ("inf-b", True, lambda g: _corrupt_entry(g, "b", 5, np.inf), NonFiniteError, "'b'.*row 5"),
    ("nan-w", True, lambda g: g.create_array("w", shape=(8,), dtype="f8").__setitem__(slice(None), [0] * 7 + [np.nan]),
     NonFiniteError, "'w'.*row 7"),
    ("nan-csr", True, lambda g: _corrupt_entry(g, "A/data", 9, np.nan), NonFiniteError, "'A'.*row 4"),
    ("unsorted", True, lambda g: _corrupt_entry(g, "A/indices", slice(6, 8), [3, 0]), InvalidIndicesError,
     "row 3 are not strictly increasing"),
    ("duplicate", True, lambda g: _corrupt_entry(g, "A/indices", slice(10, 12), [3, 3]), InvalidIndicesError,
     "row 5 .*duplicated"),
    ("out-of-range", True, lambda g: _corrupt_entry(g, "A/indices", 13, 5), InvalidIndicesError,
     "index 5 in row 6 is outside"),
    ("negative-index", True, lambda g: _corrupt_entry(g, "A/indices", 0, -1), InvalidIndicesError, "row 0"),
]


@pytest.mark.parametrize(("sparse", "corrupt", "error", "match"), [c[1:] for c in FULL_CASES],
                         ids=[c[0] for c in FULL_CASES])
def test_full_check_and_read_block_errors(tmp_path, sparse, corrupt, error, match):
    path = str(tmp_path / "bad.zarr")
    corrupt(_good(path, sparse=sparse))
    spec = open_problem(path)  # the metadata are fine
    with pytest.raises(error, match=match):
        open_problem(path, check="full")
    row = int(match.split("row ")[1].split()[0])
    with pytest.raises(error, match=match):  # any pass reading the row fails the same way
        read_block(spec, max(0, row - 1), row + 1)
    other = (0, row) if row >= 2 else (row + 1, 8)
    read_block(spec, *other)  # blocks without the bad row read fine


# ------------------------------------------------------------------------------ atomicity
def _boom(*args, **kwargs):
    raise RuntimeError("injected failure")


@pytest.mark.parametrize("sparse", [False, True])
def test_interrupted_write_leaves_nothing(tmp_path, rng, monkeypatch, sparse):
    path = str(tmp_path / "p.zarr")
    A = _csr(rng, N, 9) if sparse else rng.normal(size=(N, 4))
    monkeypatch.setattr(builder_mod.ProblemBuilder, "write_vector", _boom)
    with pytest.raises(RuntimeError, match="injected"):
        write_problem(path, A, np.zeros(N), chunk_rows=CHUNK)
    assert not os.path.exists(path) and _partials(path) == []


def test_interrupted_overwrite_keeps_original(tmp_path, rng, monkeypatch):
    path = str(tmp_path / "p.zarr")
    old = write_problem(path, rng.normal(size=(10, 3)), np.arange(10.0))
    monkeypatch.setattr(builder_mod.ProblemBuilder, "write_dense_rows", _boom)
    with pytest.raises(RuntimeError, match="injected"):
        write_problem(path, np.ones((5, 2)), np.zeros(5), overwrite=True)
    assert open_problem(path) == old and _partials(path) == []
    np.testing.assert_array_equal(read_block(old, 0, 10).b, np.arange(10.0))


def _killed_writer(path):  # runs in a child process
    def die(*args, **kwargs):
        os._exit(3)

    builder_mod.ProblemBuilder.write_vector = die
    write_problem(path, np.ones((40, 3)), np.zeros(40), chunk_rows=8)


def test_killed_write_leaves_no_target(tmp_path):
    path = str(tmp_path / "p.zarr")
    proc = multiprocessing.get_context("spawn").Process(target=_killed_writer, args=(path,))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 3 and not os.path.exists(path)
    with pytest.raises(StoreNotFoundError):
        open_problem(path)


def test_overwrite_rules(tmp_path, rng):
    path = str(tmp_path / "p.zarr")
    spec = write_problem(path, np.ones((10, 3)), np.zeros(10))
    read_block(spec, 0, 10)  # populate this process's cache
    with pytest.raises(StoreExistsError, match="overwrite=True") as info:
        write_problem(path, np.ones((10, 3)), np.zeros(10))
    assert isinstance(info.value, FileExistsError)
    new = write_problem(path, np.full((12, 3), 2.0), np.ones(12), overwrite=True)
    assert new.n_samples == 12 and _partials(path) == []
    np.testing.assert_array_equal(read_block(new, 0, 12).A, 2.0)  # no stale cached arrays
    precious = tmp_path / "not-a-store"
    precious.mkdir()
    (precious / "thesis.tex").write_text("x")
    with pytest.raises(StoreExistsError, match="not a Zarr store"):
        write_problem(precious, np.ones((2, 2)), np.zeros(2), overwrite=True)
    assert (precious / "thesis.tex").exists()


@pytest.mark.parametrize(("A", "b", "error", "match"), [
    (np.ones(5), np.zeros(5), ShapeMismatchError, "2-D"),
    (np.ones((5, 2)), np.zeros(4), ShapeMismatchError, "'b' has shape"),
    (np.array([[1.0, np.nan]]), np.zeros(1), NonFiniteError, "'A'.*row 0"),
    (np.ones((2, 2)), np.array([0.0, np.inf]), NonFiniteError, "'b'.*row 1"),
    (np.array([["a"]]), np.zeros(1), DTypeError, "not numeric"),
    (np.ones((0, 2)), np.zeros(0), EmptyProblemError, "at least one row"),
    (sp.csr_matrix((3, 2)), np.zeros(3), EmptyProblemError, "nnz >= 1"),
])
def test_write_problem_rejects_bad_input(tmp_path, A, b, error, match):
    path = str(tmp_path / "p.zarr")
    with pytest.raises(error, match=match):
        write_problem(path, A, b)
    assert not os.path.exists(path) and _partials(path) == []


# ------------------------------------------------------------------------------ builder
def _plan(rng, n, chunk_rows):
    """Random block boundaries on multiples of chunk_rows."""
    cuts = np.sort(rng.choice(np.arange(1, -(-n // chunk_rows)), size=3, replace=False)) * chunk_rows
    return [(int(a), int(b)) for a, b in zip([0, *cuts], [*cuts, n], strict=True)]


def test_builder_parallel_csr_equals_one_go(tmp_path, rng):
    n, d, chunk = 1000, 50, 32
    A, b, w = _csr(rng, n, d, max_per_row=9), rng.normal(size=n), rng.uniform(size=n)
    bounds = _plan(rng, n, chunk)
    builder = ProblemBuilder.create(tmp_path / "par.zarr", n_samples=n, n_features=d, sparse=True, nnz=A.nnz,
                                    has_w=True, chunk_rows=chunk, nnz_chunk=64, attrs={"k": 1})
    assert pickle.loads(pickle.dumps(builder)) == builder
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=ctx) as pool:
        futures = []
        for r0, r1 in bounds:
            blk = A[r0:r1]
            futures.append(pool.submit(builder.write_csr_rows, r0, blk.indptr, blk.indices, blk.data,
                                       int(A.indptr[r0])))
            futures.append(pool.submit(builder.write_vector, "b", r0, b[r0:r1]))
            futures.append(pool.submit(builder.write_vector, "w", r0, w[r0:r1]))
        edges = [f.result() for f in futures[::3]]
        [f.result() for f in futures]
    assert all(isinstance(e, EdgePieces) for e in edges) and sum(e.nbytes for e in edges) > 0
    builder.write_edges(edges)
    spec = builder.commit()
    assert spec.path == os.path.abspath(tmp_path / "par.zarr") and spec.metadata == {"k": 1}
    assert not os.path.exists(builder.tmp)
    blk = read_block(open_problem(spec.path, check="full"), 0, n)
    assert (blk.A != A).nnz == 0
    np.testing.assert_array_equal(blk.b, b)
    np.testing.assert_array_equal(blk.w, w)
    one = write_problem(tmp_path / "one.zarr", A, b, w, chunk_rows=chunk)
    g1, g2 = zarr.open_group(one.path, mode="r"), zarr.open_group(spec.path, mode="r")
    for k in ("A/data", "A/indices", "A/indptr", "b", "w"):
        np.testing.assert_array_equal(g1[k][:], g2[k][:])


def test_builder_parallel_dense(tmp_path, rng):
    n, d, chunk = 700, 5, 64
    A, b = rng.normal(size=(n, d)), rng.normal(size=n)
    z = rng.integers(0, 9, size=(n, 3))
    builder = ProblemBuilder.create(tmp_path / "d.zarr", n_samples=n, n_features=d, sparse=False,
                                    extra={"z": ((3,), "int64")}, chunk_rows=chunk)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=ctx) as pool:
        futs = [pool.submit(builder.write_dense_rows, r0, A[r0:r1]) for r0, r1 in _plan(rng, n, chunk)]
        futs += [pool.submit(builder.write_vector, "b", r0, b[r0:r1]) for r0, r1 in _plan(rng, n, chunk)]
        futs += [pool.submit(builder.write_vector, "z", r0, z[r0:r1]) for r0, r1 in _plan(rng, n, chunk)]
        [f.result() for f in futs]
    spec = builder.commit()
    blk = read_block(spec, 0, n, members=["z"])
    np.testing.assert_array_equal(blk.A, A)
    np.testing.assert_array_equal(blk.b, b)
    np.testing.assert_array_equal(blk.extra["z"], z)


def test_builder_detects_unwritten_rows(tmp_path):
    dense = ProblemBuilder.create(tmp_path / "d.zarr", n_samples=40, n_features=2, sparse=False, chunk_rows=8)
    dense.write_dense_rows(0, np.ones((16, 2)))
    dense.write_vector("b", 0, np.zeros(40))
    spec = dense.commit()
    with pytest.raises(NonFiniteError, match="row 16.*never written"):
        read_block(spec, 0, 40)
    csr = ProblemBuilder.create(tmp_path / "c.zarr", n_samples=16, n_features=3, sparse=True, nnz=16, chunk_rows=8)
    csr.write_csr_rows(0, np.arange(9), np.zeros(8, int), np.ones(8), 0)  # rows 8..15 missing
    csr.write_vector("b", 0, np.zeros(16))
    with pytest.raises(ShapeMismatchError, match="indptr"):
        csr.commit()
    csr.abort()
    assert not os.path.exists(csr.tmp) and not os.path.exists(tmp_path / "c.zarr")


def test_builder_argument_errors(tmp_path):
    builder = ProblemBuilder.create(tmp_path / "d.zarr", n_samples=40, n_features=2, sparse=False, chunk_rows=8)
    with pytest.raises(ChunkLayoutError, match="chunk boundary"):
        builder.write_dense_rows(4, np.ones((4, 2)))
    with pytest.raises(ValueError, match="outside"):
        builder.write_vector("b", 32, np.ones(16))
    with pytest.raises(ValueError, match="unknown member"):
        builder.write_vector("w", 0, np.ones(8))
    with pytest.raises(NonFiniteError, match="row 9"):
        builder.write_vector("b", 8, np.r_[0.0, np.nan])
    with pytest.raises(TypeError, match="CSR builder"):
        builder.write_csr_rows(0, np.arange(2), np.zeros(1, int), np.ones(1), 0)
    builder.abort()
    with pytest.raises(ValueError, match="reserved"):
        ProblemBuilder.create(tmp_path / "x.zarr", n_samples=2, n_features=2, sparse=False, extra={"w": ((), "f8")})
    csr = ProblemBuilder.create(tmp_path / "c.zarr", n_samples=8, n_features=3, sparse=True, nnz=4, chunk_rows=8)
    with pytest.raises(InvalidIndicesError, match="row 1"):
        csr.write_csr_rows(0, np.array([0, 1, 3] + [3] * 6), np.array([0, 2, 1]), np.ones(3), 0)
    csr.abort()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), nnz_chunk=st.integers(1, 40), chunk=st.sampled_from([1, 2, 4, 8]))
def test_builder_edges_property(tmp_path_factory, seed, nnz_chunk, chunk):
    """Any aligned partition and any nnz chunking, blocks written in any order, gives A."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    A = _csr(rng, n, 7, max_per_row=5)
    if A.nnz == 0:
        A[0, 0] = 1.0
    starts = sorted({0, *(int(s) * chunk for s in rng.integers(0, -(-n // chunk), 4))})
    bounds = list(zip(starts, [*starts[1:], n], strict=True))
    builder = ProblemBuilder.create(tmp_path_factory.mktemp("h") / "p.zarr", n_samples=n, n_features=7,
                                    sparse=True, nnz=A.nnz, chunk_rows=chunk, nnz_chunk=nnz_chunk)
    edges = []
    for k in rng.permutation(len(bounds)):
        r0, r1 = bounds[k]
        blk = A[r0:r1]
        edges.append(builder.write_csr_rows(r0, blk.indptr, blk.indices, blk.data, int(A.indptr[r0])))
    builder.write_vector("b", 0, np.zeros(n))
    builder.write_edges(edges[::-1])
    spec = builder.commit()
    assert (read_block(spec, 0, n).A != A).nnz == 0


def test_default_chunk_rows():
    for d in (1, 10, 100, 10_000, 10**6):
        rows = default_chunk_rows(d)
        assert rows & (rows - 1) == 0 and 2**10 <= rows <= 2**17
    assert default_chunk_rows(100) == 2**14  # 16 MiB / (100 * 8 B)
    assert default_chunk_rows(100, n_samples=50) == 64
    assert default_chunk_rows(100, density=0.01) == 2**17


# ------------------------------------------------------------------------------ groups
def test_group_round_trip_and_overwrite(tmp_path, rng):
    path = tmp_path / "result.zarr"
    arrays = {"x": rng.normal(size=5), "history__loss": np.arange(3.0), "empty": np.zeros(0),
              "scalar": np.array(2.5), "mat": rng.integers(0, 5, (3, 4))}
    attrs = {"status": "SUCCESS", "nested": {"a": [1, 2]}, "fun": float("nan")}
    write_group(path, arrays, attrs)
    got, got_attrs = read_group(path)
    assert got.keys() == arrays.keys()
    for k, v in arrays.items():
        np.testing.assert_array_equal(got[k], v)
        assert got[k].dtype == v.dtype
    assert got_attrs["nested"] == {"a": [1, 2]} and np.isnan(got_attrs["fun"])
    with pytest.raises(StoreExistsError):
        write_group(path, {}, {})
    write_group(path, {"x": np.ones(2)}, {"v": 2}, overwrite=True)
    assert read_group(path)[1] == {"v": 2} and list(read_group(path)[0]) == ["x"]


def test_group_errors_and_atomicity(tmp_path, monkeypatch):
    path = str(tmp_path / "g.zarr")
    with pytest.raises(StoreNotFoundError):
        read_group(path)
    with pytest.raises(TypeError, match="JSON"):
        write_group(path, {}, {"f": object()})
    with pytest.raises(DTypeError):
        write_group(path, {"s": np.array(["a"])}, {})
    from dsketch.store import _atomic

    monkeypatch.setattr(_atomic, "publish", _boom)
    with pytest.raises(RuntimeError, match="injected"):
        write_group(path, {"x": np.ones(3)}, {})
    assert not os.path.exists(path) and _partials(path) == []
