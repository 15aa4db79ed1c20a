"""Engine reductions through Dask equal the in-memory NumPy results, for any row blocking."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import scipy.sparse as sp

from dsketch.engine.core import Engine
from dsketch.store.blocks import row_blocks
from dsketch.errors import ChunkLayoutError
from dsketch.models import get_model
from dsketch.sketch import SketchContext, make_sketch
from dsketch.store import open_problem, write_problem

N, D = 203, 6


def _bounds(kind: str) -> list[tuple[int, int]]:
    if kind == "one":
        return [(0, N)]
    if kind == "uneven":
        return [(0, 17), (17, 150), (150, 151), (151, N)]
    if kind == "single-row":
        return [(0, 1)] + [(1, 2)] + [(2, N - 1), (N - 1, N)]
    if kind == "many":
        return row_blocks(N, 9)
    raise AssertionError(kind)


CHUNKINGS = ["one", "uneven", "single-row", "many"]


@pytest.fixture(scope="module", params=["dense", "sparse"])
def problem(request, tmp_path_factory):
    rng = np.random.default_rng(7)
    if request.param == "dense":
        A = rng.standard_normal((N, D))
    else:
        A = sp.random(N, D, density=0.4, random_state=rng, format="csr")
        A.data = rng.standard_normal(A.nnz)
    x = rng.standard_normal(D)
    eta = np.asarray(A @ x).ravel()
    f = np.exp(eta - eta.max())
    f /= f.sum()
    b = f * (1 + 0.1 * rng.standard_normal(N))
    w = np.full(N, 0.3 / N)
    path = str(tmp_path_factory.mktemp("engine") / "p.zarr")
    write_problem(path, A, b, w, chunk_rows=32)
    Ad = A.toarray() if sp.issparse(A) else A
    return open_problem(path), Ad, b, w


@pytest.mark.parametrize("chunking", CHUNKINGS)
def test_reductions_equal_numpy(client, problem, chunking):
    spec, A, b, w = problem
    model = get_model("softmax")
    rng = np.random.default_rng(3)
    x = rng.standard_normal(D) * 0.5
    p = rng.standard_normal(D)
    eng = Engine(spec, client, bounds=_bounds(chunking))
    eng.init(x)
    assert eng.n_passes == 1
    np.testing.assert_allclose(eng.gather_eta(), A @ x, rtol=1e-13, atol=1e-13)

    # global scalars, straight NumPy reference on the full vectors
    eta = A @ x
    m = eta.max()
    f = np.exp(eta - m) / np.exp(eta - m).sum()
    sc = eng.trial_scalars(model)[0]
    ref = model.scalars(model.stats(eta, b, w))
    for key in ref:
        np.testing.assert_allclose(sc[key], ref[key], rtol=1e-12, err_msg=key)

    # loss at several trial steps equals the direct formula at A(x + t p)
    ap = eng.matvec(p)
    assert eng.n_passes == 2
    ts = (1.0, 0.5, 0.0)
    scal = eng.trial_scalars(model, ap, ts)
    losses = eng.trial_losses(model, scal, ap, ts)
    for t, val in zip(ts, losses, strict=True):
        v = A @ (x + t * p)
        ft = np.exp(v - v.max()) / np.exp(v - v.max()).sum()
        direct = 0.5 * np.sum((ft - b) ** 2) + 0.5 * np.sum((w * v) ** 2)
        np.testing.assert_allclose(val, direct, rtol=1e-12)

    # the fused curvature pass: gradient, A^T U and the exact Gram
    sk = make_sketch("exact")
    ctx = SketchContext(seed=0, iteration=0, n_samples=N, n_features=D, sketch_size=N, info={})
    total, ctx = eng.curvature(model, sk, sc, ctx)
    assert eng.n_passes == 3
    c = f - b
    fc = f @ c
    r = f * c - fc * f + w**2 * eta
    np.testing.assert_allclose(total["grad"], A.T @ r, rtol=1e-11, atol=1e-14 * np.abs(A.T @ r).max())
    U = np.column_stack([f, (2 * f - b) * f])
    np.testing.assert_allclose(total["AU"], A.T @ U, rtol=1e-11, atol=1e-16)
    Dg = (2 * f - b) * f - fc * f + w**2
    gram = sk.finish({k.split(":", 1)[1]: v for k, v in total.items() if k.startswith("sketch:")}, ctx).gram
    np.testing.assert_allclose(gram, A.T @ (Dg[:, None] * A), rtol=1e-10, atol=1e-16)
    np.testing.assert_allclose(total["loss"], 0.5 * np.sum(c**2) + 0.5 * np.sum((w * eta) ** 2), rtol=1e-12)

    # advancing the cached predictor needs no pass over A
    eng.advance(ap, 0.5)
    assert eng.n_passes == 3
    np.testing.assert_allclose(eng.gather_eta(), A @ (x + 0.5 * p), rtol=1e-12, atol=1e-13)
    eng.close()


def test_persisted_blocks_give_identical_results(client, problem):
    spec, A, b, w = problem
    model = get_model("softmax")
    x = np.linspace(-1, 1, D)
    out = []
    for persist in (False, True):
        eng = Engine(spec, client, bounds=_bounds("uneven"), persist=persist)
        eng.init(x)
        sc = eng.trial_scalars(model)[0]
        ctx = SketchContext(seed=0, iteration=0, n_samples=N, n_features=D, sketch_size=N, info={})
        total, _ = eng.curvature(model, make_sketch("exact"), sc, ctx)
        out.append(total["grad"])
        eng.close()
    np.testing.assert_array_equal(out[0], out[1])


@pytest.mark.parametrize(
    ("bounds", "match"),
    [
        ([(0, 10), (12, N)], "contiguous"),
        ([(0, 10), (10, 10), (10, N)], "empty"),
        ([(0, N - 1)], "end at n_samples"),
        ([(1, N)], "start at 0"),
    ],
)
def test_bad_bounds(client, problem, bounds, match):
    spec = problem[0]
    with pytest.raises(ChunkLayoutError, match=match):
        Engine(spec, client, bounds=bounds)


def test_bad_block_rows(client, problem):
    with pytest.raises(ChunkLayoutError, match="positive"):
        Engine(problem[0], client, block_rows=0)


@pytest.mark.parametrize("persist", [False, True])
def test_bare_pass_times_streamed_and_persisted(client, problem, persist):
    """The benchmark's bare pass runs on a client that is not the default one, in both modes."""
    from benchmarks.passes import bare_pass_times

    spec, _, _, _ = problem
    times = bare_pass_times(spec, client, np.ones(D), 2, persist=persist)
    assert len(times) == 2 and all(np.isfinite(t) and t > 0 for t in times)


def _weighted_column_sums(blk, r0, v):
    """A per-block map for ``Engine.map_reduce``: ``A_b^T (v * (global row index))`` and the
    block's row count."""
    rows = np.arange(r0, r0 + blk.A.shape[0], dtype=np.float64)
    return {"s": np.asarray(blk.A.T @ (rows * v[rows.astype(int)])).ravel(), "n": blk.A.shape[0]}


@pytest.mark.parametrize("persist", [False, True])
def test_map_reduce_runs_a_block_function_over_the_tree(client, problem, persist):
    """Per-block maths outside the model interface (the sketched GGN's): each block gets its
    first global row, arrays are shared once, the partials are summed over the tree."""
    spec, A, _, _ = problem
    v = np.linspace(-1.0, 1.0, N)
    engine = Engine(spec, client, bounds=_bounds("uneven"), persist=persist, split_every=2)
    passes = engine.n_passes
    total = engine.map_reduce(_weighted_column_sums, v)
    assert engine.n_passes == passes + 1
    assert total["n"] == N
    np.testing.assert_allclose(total["s"], A.T @ (np.arange(N) * v), rtol=1e-12, atol=1e-12)
    engine.close()


def _spec(n: int, d: int, *, chunk: int, sparse: bool = False, nnz: int = 0, dtype: str = "float64"):
    from dsketch.store.spec import ProblemSpec

    return ProblemSpec(path="unused", n_samples=n, n_features=d, sparse=sparse, nnz=nnz if sparse else n * d,
                       dtype=dtype, has_w=False, a_chunk_rows=chunk)


@pytest.mark.parametrize(
    ("n", "d", "sparse", "nnz", "expected"),
    [
        (100_000, 500, False, 0, 4096),  # small: n / 16 = 6250 rows, down to a power of two
        (2_000_000, 500, False, 0, 16384),  # large dense: 64 MiB / 4000 B = 16777 rows
        # sparse, 120 B a row: 64 MiB is 559,240 rows, but n / 16 = 312,500; the 32 MB d x d
        # partial asks for 2 x 32 MB of A a block: 533,333 rows
        (5_000_000, 2000, True, 50_000_000, 524288),
        (250_000, 2000, True, 2_125_000, 131072),  # the same, smaller: two blocks remain
        # one-hot flights, 6 entries a row: two halves in multiples of 16,384 rows (n / 16
        # down to a power of two), 163,840 + 163,506, not 262,144 + 65,202
        (327_346, 3295, True, 1_988_662, 163840),
        (200_000, 2000, True, 4_000_000, 106496),  # the sparse path benchmark at 1/10: 106,496 + 93,504
        (20_000_000, 10, False, 0, 524288),  # narrow dense, 80 B a row: 838,860 rows
        (50_000_000, 2, False, 0, 1048576),  # 16 B a row: 4,194,304 rows, capped at 2**20
        (300_000, 40, False, 0, 16384),  # n / 16 = 18,750 rows, down to a power of two
        (700, 3, False, 0, 1024),  # tiny: the 1024-row floor
    ],
)
def test_auto_block_rows(n, d, sparse, nnz, expected):
    """The default block size from the problem's shape alone: any storage chunking gives the
    same blocks (the same fit, to the bit)."""
    from dsketch.engine.core import auto_block_rows

    for chunk in (0, 1, 777, 4096, 65536, n):
        assert auto_block_rows(_spec(n, d, chunk=chunk, sparse=sparse, nnz=nnz)) == expected


def test_auto_block_rows_follow_the_value_type():
    """float32 rows are half as long: twice the rows for the same bytes per block."""
    from dsketch.engine.core import auto_block_rows

    assert auto_block_rows(_spec(2_000_000, 500, chunk=0, dtype="float32")) == 32768


def test_block_and_row_state_report_their_size_to_dask():
    """The scheduler weighs a persisted block by its bytes: without this it moves blocks freely."""
    from dask.sizeof import sizeof

    from dsketch.engine import tasks
    from dsketch.store import Block

    A = np.ones((1000, 50))
    blk = Block(A=A, b=np.ones(1000), w=None)
    assert sizeof(blk) >= A.nbytes + 8000
    S = sp.random(1000, 50, density=0.1, format="csr", random_state=0)
    assert sizeof(Block(A=S, b=np.ones(1000), w=np.ones(1000))) >= S.data.nbytes + S.indices.nbytes + 16000
    rows = tasks.RowState(r0=0, eta=np.zeros(1000), b=np.zeros(1000), w=None, rownorm2=np.zeros(1000))
    assert sizeof(rows) >= 24000


def test_held_network_blocks_report_their_size_to_dask():
    """The sketched GGN holds engine blocks too: inputs in ``A``, outputs in a member."""
    from dask.sizeof import sizeof

    from dsketch.store import Block

    X, Y = np.ones((500, 40)), np.ones((500, 3))
    assert sizeof(Block(A=X, b=None, w=None, extra={"Y": Y})) >= X.nbytes + Y.nbytes


def _page_faults_of_array_churn() -> int:
    """Minor page faults of 20 rounds of allocating, filling and freeing a 2 MiB array (below
    the size from which NumPy asks for huge pages), after one warm-up round."""
    import resource

    a = np.ones(2**18)
    del a
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        a = np.ones(2**18)
        del a
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.cluster
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_embedded_cluster_workers_reuse_freed_memory(client1):
    """dsketch's own cluster tunes its workers' allocator (:class:`AllocatorTuning`): a task
    that allocates and frees arrays repeatedly reuses the memory instead of faulting fresh
    pages in every time (Dask's default worker environment maps each one anew)."""
    import platform

    from distributed import Client

    from dsketch.engine.client import start_local_cluster, tune_allocator

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc's allocator")
    with start_local_cluster(n_workers=1) as cluster, Client(cluster, set_as_default=False) as c:
        faults = c.submit(_page_faults_of_array_churn, pure=False).result()
        assert list(c.run(tune_allocator).values()) == [True]
    # one 2 MiB array is 512 pages: 20 rounds of fresh pages fault ~10,000; a few hundred were
    # seen on a machine under memory pressure from other processes
    assert faults < 1500, faults
    # the discriminating case: a plain LocalCluster's worker, under Dask's default environment
    if list(client1.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_").values()) == ["65536"]:
        assert client1.submit(_page_faults_of_array_churn, pure=False).result() > 5000


@pytest.mark.parametrize("sparse", [False, True])
def test_block_matvec_takes_exactly_d_times_outputs_coefficients(sparse):
    """``A_b x`` against NumPy's dense product: d coefficients for a single-output model,
    d * K (row-major d x K) for K outputs; any other length is refused, never reshaped."""
    from dsketch.engine import tasks
    from dsketch.errors import DSketchError
    from dsketch.store.blocks import Block

    rng = np.random.default_rng(11)
    dense = rng.standard_normal((40, 5))
    blk = Block(A=sp.csr_matrix(dense) if sparse else dense, b=np.ones(40), w=None)
    x = rng.standard_normal(5)
    np.testing.assert_allclose(tasks.matvec(blk, x), dense @ x, rtol=1e-13)
    X = rng.standard_normal((5, 3))
    np.testing.assert_allclose(tasks.matvec(blk, X.ravel(), 3), dense @ X, rtol=1e-13)
    for bad, outputs in ((rng.standard_normal(10), 1), (rng.standard_normal(4), 1), (X.ravel(), 1),
                         (x, 3), (rng.standard_normal(20), 3)):
        with pytest.raises(DSketchError, match="coefficients"):
            tasks.matvec(blk, bad, outputs)
