"""A seeded fit is the same to the last bit for any storage chunking and any cluster.

One problem is written to stores with awkward row chunkings (777 rows, one row, a single
chunk, the default) and fitted with the default block settings: a leverage-sampled,
adaptive, fused Newton fit of several iterations. The coefficients must be bitwise equal
across the chunkings, across clusters of one and three workers and against the in-memory
path on the driver's threads. The row blocks are cut at multiples of a size that depends on
the problem's shape alone and every reduction is a fixed tree over block indices; the
reference here is therefore another chunking or another cluster, never a stored answer.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from distributed import Client, LocalCluster

import dsketch
from dsketch.engine.core import auto_block_rows
from dsketch.errors import ChunkLayoutError
from dsketch.store import default_chunk_rows, open_problem, write_problem
from dsketch.store.blocks import row_blocks

N, D = 20_000, 20
N_ONE_ROW = 3_000  # the one-row-chunk store: one Zarr chunk a row is slow to write and read
FIT = {"model": "logistic", "model_params": {"l2": 1e-3}, "seed": 7, "x0": "zeros",
       "curvature": dsketch.Curvature("leverage", adaptive=True),
       "solver": dsketch.Solver("newton", tol=1e-14, max_iter=4)}


pytestmark = pytest.mark.filterwarnings("ignore::dsketch.errors.ConvergenceWarning")  # max_iter ends the fits


@pytest.fixture(scope="module")
def client3():
    with LocalCluster(n_workers=3, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0", memory_limit="2GiB") as cluster, \
            Client(cluster, set_as_default=False) as c:
        yield c


def _problem(n: int, sparse: bool):
    rng = np.random.default_rng(11)
    if sparse:
        A = sp.random(n, D, density=0.3, format="csr", random_state=rng, data_rvs=rng.standard_normal)
        A.sort_indices()
    else:
        A = rng.standard_normal((n, D))
    x = rng.standard_normal(D) / np.sqrt(D)
    eta = A @ x
    b = (rng.random(n) < 1.0 / (1.0 + np.exp(-eta))).astype(np.float64)
    return A, b


def _fit(data, client=None):
    res = dsketch.fit(data, cluster=client, **FIT)  # fused passes: the default
    assert res.nit >= 3, "the comparison needs a multi-iteration fit"
    n = data[0].shape[0] if isinstance(data, tuple) else data.n_samples
    assert np.all(np.asarray(res.history["sketch_rows"]) < n / 2), "the curvature must be sampled"
    return res.x


# the sparse variants repeat the dense ones on the other block type: slow, skipped in CI
@pytest.mark.parametrize("sparse", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["dense", "sparse"])
def test_same_fit_for_any_chunking_worker_count_and_in_memory(tmp_path, client1, client3, sparse):
    A, b = _problem(N, sparse)
    specs = {}
    for name, chunk in {"777 rows": 777, "one chunk": N, "default": None}.items():
        write_problem(str(tmp_path / f"{name}.zarr"), A, b, chunk_rows=chunk)
        specs[name] = open_problem(str(tmp_path / f"{name}.zarr"))
    assert len({s.a_chunk_rows for s in specs.values()}) == 3
    assert auto_block_rows(specs["default"]) < N  # several blocks, a reduction tree of two levels
    ref = _fit(specs["777 rows"], client1)
    for name, spec in specs.items():
        for c in (client1, client3):
            np.testing.assert_array_equal(_fit(spec, c), ref, err_msg=f"{name}, {len(c.scheduler_info()['workers'])} workers")
    np.testing.assert_array_equal(_fit((A, b)), ref, err_msg="in memory, driver threads")
    np.testing.assert_array_equal(_fit(dsketch.in_memory(A, b), client3), ref, err_msg="in memory, 3 workers")


# the sparse variants repeat the dense ones on the other block type: slow, skipped in CI
@pytest.mark.parametrize("sparse", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["dense", "sparse"])
def test_same_fit_from_one_row_chunks(tmp_path, client3, sparse):
    A, b = _problem(N_ONE_ROW, sparse)
    write_problem(str(tmp_path / "rows.zarr"), A, b, chunk_rows=1)
    write_problem(str(tmp_path / "default.zarr"), A, b)
    one_row = open_problem(str(tmp_path / "rows.zarr"))
    assert one_row.a_chunk_rows == 1
    ref = _fit((A, b))
    np.testing.assert_array_equal(_fit(one_row, client3), ref)
    np.testing.assert_array_equal(_fit(open_problem(str(tmp_path / "default.zarr")), client3), ref)


def test_row_blocks_cut_every_row_once():
    assert row_blocks(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert row_blocks(8, 4) == [(0, 4), (4, 8)]
    assert row_blocks(3, 10) == [(0, 3)]
    assert row_blocks(0, 5) == []
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ChunkLayoutError, match="block_rows"):
            row_blocks(10, bad)


@pytest.mark.parametrize(("n", "d", "density"), [(20_000, 20, 1.0), (10**6, 100, 1.0), (3_000, 5, 1.0),
                                                 (5 * 10**6, 2000, 0.004), (10**7, 10, 1.0), (50_000, 4000, 1.0),
                                                 (327_346, 3295, 0.00185), (200_000, 2000, 0.01)])
def test_default_blocks_read_whole_default_chunks(n, d, density):
    """A store written with the default chunking is read chunk-aligned by the default blocks."""
    from dsketch.store.spec import ProblemSpec

    sparse = density < 1.0
    nnz = int(n * d * density)
    spec = ProblemSpec(path="unused", n_samples=n, n_features=d, sparse=sparse, nnz=nnz, dtype="float64",
                       has_w=False)
    chunk = default_chunk_rows(d, n_samples=n, density=density)
    assert auto_block_rows(spec) % chunk == 0 or auto_block_rows(spec) >= n


def _at_offset(a: np.ndarray, offset: int) -> np.ndarray:
    """A copy of ``a`` (same memory order) starting ``offset`` bytes past a 64-byte boundary,
    as an array read out of a network message can."""
    buf = np.empty(a.nbytes + 128, dtype=np.uint8)
    start = (-buf.ctypes.data) % 64 + offset
    raw = buf[start : start + a.nbytes]
    fortran = a.flags.f_contiguous and not a.flags.c_contiguous
    out = raw.view(a.dtype).reshape(a.shape[::-1]).T if fortran else raw.view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


def test_task_arguments_are_settled_on_an_aligned_boundary():
    """Arrays that arrive misaligned for their dtype are copied (order kept) before a task
    uses them; aligned ones and everything else are passed through untouched."""
    from dsketch.engine.tasks import RowState, settled, settled_call
    from dsketch.sketch.base import SketchContext

    rng = np.random.default_rng(0)
    T = np.asfortranarray(rng.standard_normal((20, 7)))
    odd = _at_offset(T, 4)
    assert not odd.flags.aligned and odd.flags.f_contiguous
    ctx = SketchContext(n_samples=10, n_features=20, sketch_size=5, seed=1, iteration=2, info={"T": odd, "rank": 7})
    rows = RowState(r0=3, eta=_at_offset(np.arange(5.0), 12), b=np.ones(5), w=None, rownorm2=np.ones(5))
    ctx2, rows2 = settled(ctx), settled(rows)
    fixed = ctx2.info["T"]
    assert fixed.flags.aligned and fixed.flags.f_contiguous and fixed.ctypes.data % 64 == 0
    np.testing.assert_array_equal(fixed, T)
    assert ctx2.info["rank"] == 7 and ctx2.seed == 1 and ctx2.iteration == 2
    assert rows2.eta.flags.aligned and rows2.r0 == 3 and rows2.b is rows.b
    np.testing.assert_array_equal(rows2.eta, np.arange(5.0))
    assert settled(rows2) is rows2 and settled(ctx2) is ctx2  # nothing left to fix: the same objects
    assert settled_call(lambda c, r: (c.info["T"].flags.aligned, r.eta.flags.aligned), ctx, rows) == (True, True)
