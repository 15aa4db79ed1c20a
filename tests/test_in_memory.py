"""In-memory problems: no store, no cluster, and the same bits as a store on a cluster."""

from __future__ import annotations

import tempfile
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

import dsketch
import dsketch.estimators as est
from dsketch.engine.threads import ThreadClient
from dsketch.errors import NonFiniteError
from dsketch.store import read_block, write_problem
import dsketch.store.blocks as blocks
from dsketch.store.blocks import ALIGNMENT, alignment_matters, blas_ready
from dsketch.store.memory import MEMORY_PATH, in_memory

N, D = 3000, 8


def _data(sparse: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    if sparse:
        X = sp.random(N, D, density=0.4, format="csr", random_state=seed, data_rvs=rng.standard_normal)
    else:
        X = rng.standard_normal((N, D))
    eta = np.asarray(X @ (0.3 * rng.standard_normal(D))).ravel()
    y = rng.poisson(np.exp(eta)).astype(np.float64)
    sw = rng.uniform(0.2, 2.0, N)
    off = 0.1 * rng.standard_normal(N)
    return X, y, sw, off


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("intercept", [False, True])
def test_blocks_equal_store_blocks(tmp_path, sparse, intercept):
    X, y, sw, off = _data(sparse)
    mem = in_memory(X, y, sample_weight=sw, offset=off)
    spec = write_problem(tmp_path / "p.zarr", X, y, sample_weight=sw, offset=off)
    for field in ("n_samples", "n_features", "sparse", "nnz", "dtype", "has_w", "has_b", "members",
                  "a_chunk_rows"):
        assert getattr(mem, field) == getattr(spec, field), field
    assert mem.path == MEMORY_PATH and mem.fingerprint == ""
    if intercept:
        mem, spec = mem.with_intercept(), spec.with_intercept()
    for r0, r1 in [(0, 1024), (1024, 2048), (2048, N), (5, 17)]:
        a = mem.block(r0, r1, ("offset", "sample_weight"))
        b = read_block(spec, r0, r1, members=("offset", "sample_weight"))
        if sparse:
            assert a.A.indices.dtype == b.A.indices.dtype and a.A.indptr.dtype == b.A.indptr.dtype
            assert a.A.has_sorted_indices and a.A.shape == b.A.shape
            for k in ("data", "indices", "indptr"):
                assert np.array_equal(getattr(a.A, k), getattr(b.A, k))
        else:
            assert a.A.dtype == np.float64 and a.A.flags.c_contiguous
            assert blas_ready(a.A)  # aligned, or alignment does not change this BLAS's products
            assert np.array_equal(a.A, b.A)
        assert np.array_equal(a.b, b.b)
        for k in ("offset", "sample_weight"):
            assert np.array_equal(a.extra[k], b.extra[k])
            assert a.extra[k].ctypes.data % ALIGNMENT == 0


def test_dense_blocks_are_read_only_views_when_aligned():
    buf = np.empty(N * D + ALIGNMENT // 8, dtype=np.float64)  # over-allocate, then align
    off = (-buf.ctypes.data) % ALIGNMENT // 8
    X = buf[off : off + N * D].reshape(N, D)
    X[...] = np.random.default_rng(1).standard_normal((N, D))
    y = np.zeros(N)
    blk = in_memory(X, y).block(1024, 2048)
    assert np.shares_memory(blk.A, X) and not blk.A.flags.writeable
    assert np.shares_memory(blk.b, y) and not blk.b.flags.writeable
    assert X.flags.writeable and y.flags.writeable  # the caller's arrays themselves are untouched


def _misaligned(X: np.ndarray, offset: int = 8) -> np.ndarray:
    """A copy of ``X`` starting ``offset`` bytes past an ALIGNMENT boundary."""
    buf = np.empty(X.size + 2 * ALIGNMENT // 8, dtype=np.float64)
    start = (-buf.ctypes.data) % ALIGNMENT // 8 + offset // 8
    out = buf[start : start + X.size].reshape(X.shape)
    out[...] = X
    assert out.ctypes.data % ALIGNMENT == offset
    return out


def test_misaligned_dense_blocks_are_views_only_where_alignment_does_not_matter(monkeypatch):
    X = _misaligned(np.random.default_rng(3).standard_normal((N, D)))
    blk = in_memory(X, np.zeros(N)).block(0, 1024)
    if alignment_matters(D):  # this BLAS sums differently at another alignment: an aligned copy
        assert not np.shares_memory(blk.A, X) and blk.A.ctypes.data % ALIGNMENT == 0
    else:
        assert np.shares_memory(blk.A, X)
    # a BLAS whose products change with the alignment (simulated): the probe sees it, the block is copied
    real = blocks._probe_products

    def sensitive(A, rng):
        out = real(A, rng)
        out[0] = out[0] + (A.ctypes.data % ALIGNMENT) * 1e-16
        return out

    monkeypatch.setattr(blocks, "_probe_products", sensitive)
    alignment_matters.cache_clear()
    try:
        assert alignment_matters(D)
        assert not blas_ready(X)
        blk = in_memory(X, np.zeros(N)).block(0, 1024)
        assert not np.shares_memory(blk.A, X) and blk.A.ctypes.data % ALIGNMENT == 0
        assert np.array_equal(blk.A, X[:1024])
    finally:
        alignment_matters.cache_clear()


@pytest.mark.parametrize("model", ["logistic", "multinomial"])
def test_misaligned_arrays_fit_the_same_bits_as_their_store(tmp_path, model):
    """Whether the caller's rows are used where they are (at every offset) or copied to an
    aligned block, the fit is the one of the store (whose blocks are aligned)."""
    X, y, _, _ = _data(False, seed=4)
    y = (y > np.median(y)).astype(np.float64) if model == "logistic" else np.minimum(y, 3.0)
    params = {"l2": 1e-3} if model == "logistic" else {"l2": 1e-3, "n_classes": 4}
    spec = write_problem(tmp_path / "p.zarr", X, y)
    args = dict(model_params=params, curvature="exact", solver=dsketch.Solver(tol=1e-10))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with ThreadClient(2) as threads:
            ref = dsketch.fit(spec, model, cluster=dsketch.Cluster(threads, block_rows=700), **args)
            for offset in (8, 16, 32, 48):
                got = dsketch.fit((_misaligned(X, offset), y), model, cluster=dsketch.Cluster(threads, block_rows=700),
                                  **args)
                assert np.array_equal(got.x, ref.x), offset
    assert ref.success and ref.nit >= 2


def test_in_memory_checks_like_write_problem():
    X, y, _, _ = _data(False)
    X = X.copy()
    X[7, 2] = np.nan
    with pytest.raises(NonFiniteError):
        in_memory(X, y)


CASES = [
    # (model, sparse, intercept, weighted)
    ("logistic", False, False, False),
    ("logistic", True, True, False),
    ("poisson", False, True, True),
    ("poisson", True, False, True),
    ("least-squares", False, True, True),
]


@pytest.mark.parametrize("sketch", ["exact", "leverage"])
@pytest.mark.parametrize(("model", "sparse", "intercept", "weighted"), CASES)
def test_fit_bit_identical_to_store_on_cluster(tmp_path, client, model, sparse, intercept, weighted, sketch):
    X, y, sw, off = _data(sparse, seed=2)
    if model == "logistic":
        y = (y > np.median(y)).astype(np.float64)
    kw = {"sample_weight": sw, "offset": off} if weighted else {}
    spec = write_problem(tmp_path / "p.zarr", X, y, **kw)
    args = dict(model_params={"l2": 1e-3}, fit_intercept=intercept,
                curvature=dsketch.Curvature(sketch, size=None if sketch == "exact" else 400), seed=7,
                solver=dsketch.Solver(tol=1e-10))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = dsketch.fit(spec, model, cluster=dsketch.Cluster(client, block_rows=512), **args)
        inline = dsketch.fit(in_memory(X, y, **kw), model, cluster=dsketch.Cluster(block_rows=512), **args)
        with ThreadClient(3) as threads:
            pooled = dsketch.fit(in_memory(X, y, **kw), model, cluster=dsketch.Cluster(threads, block_rows=512),
                                 **args)
        scattered = dsketch.fit(in_memory(X, y, **kw), model, cluster=dsketch.Cluster(client, block_rows=512),
                                **args)
    assert ref.nit >= 1 and ref.success
    for res in (inline, pooled, scattered):
        assert np.array_equal(res.x, ref.x)
        assert res.n_passes == ref.n_passes and res.fun == ref.fun
    assert inline.info["data"] == MEMORY_PATH


def test_fit_accepts_a_pair():
    X, y, _, _ = _data(False)
    a = dsketch.fit((X, y), "poisson", model_params={"l2": 1e-2})
    b = dsketch.fit(in_memory(X, y), "poisson", model_params={"l2": 1e-2})
    assert a.success and np.array_equal(a.x, b.x)


@pytest.fixture
def no_store_no_cluster(monkeypatch):
    """Fail on a temporary directory or the shared cluster; check nothing was started."""
    est._close_shared()

    def refuse(*args, **kwargs):
        raise AssertionError("an in-memory fit made a temporary directory")

    def no_cluster(*args, **kwargs):
        raise AssertionError("an in-memory fit started a cluster")

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    monkeypatch.setattr("dsketch.estimators._base._shared_client", no_cluster)
    monkeypatch.setattr("distributed.LocalCluster.__init__", no_cluster)
    monkeypatch.delenv("DSKETCH_SCHEDULER", raising=False)
    yield
    assert not est._base._SHARED


@pytest.mark.parametrize("sparse", [False, True])
def test_estimators_fit_numpy_without_store_or_cluster(no_store_no_cluster, sparse):
    X, y, sw, off = _data(sparse, seed=3)
    before = [a.copy() for a in (X.data if sparse else X, y, sw, off)]
    flags = X.data.flags.writeable if sparse else X.flags.writeable
    models = [est.PoissonRegressor(alpha=1e-3).fit(X, y, sample_weight=sw, offset=off),
              est.LogisticRegression().fit(X, y > 1, sample_weight=sw),
              est.LinearRegression().fit(X, y),
              est.GammaRegressor(alpha=1e-2).fit(X, y + 1.0)]
    assert all(np.isfinite(m.coef_).all() for m in models)
    for a, b in zip((X.data if sparse else X, y, sw, off), before, strict=True):
        assert np.array_equal(a, b)
    assert (X.data.flags.writeable if sparse else X.flags.writeable) == flags


@pytest.mark.parametrize("sparse", [False, True])
def test_estimator_in_memory_equals_estimator_on_cluster(client, sparse):
    """The in-memory route and the route through a store on a cluster give the same bits."""
    X, y, sw, off = _data(sparse, seed=4)
    a = est.PoissonRegressor(alpha=1e-3, block_rows=1024).fit(X, y, sample_weight=sw, offset=off)
    b = est.PoissonRegressor(alpha=1e-3, block_rows=1024, client=client).fit(X, y, sample_weight=sw, offset=off)
    assert np.array_equal(a.coef_, b.coef_) and a.intercept_ == b.intercept_
    a = est.LogisticRegression(C=0.5).fit(X, y > 1)
    b = est.LogisticRegression(C=0.5, client=client).fit(X, y > 1)
    assert np.array_equal(a.coef_, b.coef_) and np.array_equal(a.intercept_, b.intercept_)


def test_softmax_estimator_in_memory_equals_cluster(client):
    X, _, _, _ = _data(False, seed=5)
    z = X @ np.linspace(-1, 1, D)
    y = np.exp(z - z.max())
    y /= y.sum()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a sketched Hessian may need flooring on these toy targets
        a = est.SoftmaxRegression().fit(X, y)
        b = est.SoftmaxRegression(client=client).fit(X, y)
    assert np.array_equal(a.coef_, b.coef_)


def test_thread_client_runs_dependencies_and_raises_at_result():
    def boom(x):
        raise RuntimeError(f"bad {x}")

    for n in (1, 3):
        with ThreadClient(n) as c:
            f = c.submit(np.add, 1, 2)
            g = c.submit(np.multiply, f, 10)
            assert c.gather([f, g]) == [3, 30]
            bad = c.submit(boom, 1)
            after = c.submit(np.add, bad, 1)
            with pytest.raises(RuntimeError, match="bad 1"):
                after.result()
            assert [x.result() for x in c.map(np.add, [1, 2], [3, 4])] == [4, 6]


def test_thread_pool_runs_blas_single_threaded_and_restores():
    """Several pool threads each calling a multi-threaded BLAS oversubscribe the cores:
    while a pool runs, BLAS is held to one thread, and the caller's setting comes back."""
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    with threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        assert before and all(t == 2 for t in before)
        with ThreadClient(1):  # inline: BLAS keeps its threads
            assert blas_threads() == before
        with ThreadClient(3) as c:
            assert c.submit(blas_threads).result() == [1] * len(before)
        assert blas_threads() == before
