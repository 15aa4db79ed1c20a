"""The fits of a path share one engine (``dsketch.session.shared_engines``): a store is
read once for the whole path, and a fit that starts where the one before ended caches its
rows without a pass. Checked against independent references: the rows an engine keeps
against ``A x`` computed here with NumPy, the path's solutions against the KKT conditions
on a dense gradient computed here and against the fits of each alpha run on their own."""

import numpy as np
from model_helpers import enet_logistic_kkt as _kkt_violation
import scipy.sparse as sp
from scipy.special import expit

import dsketch
import dsketch.engine.tasks as tasks
import dsketch.session as session
from dsketch.engine.core import Engine
from dsketch.engine.threads import ThreadClient
from dsketch.models import get_model
from dsketch.store.memory import in_memory

RATIO = 0.5


def _problem(seed=0, n=4000, d=30):
    rng = np.random.default_rng(seed)
    A = sp.random(n, d, density=0.2, random_state=seed, format="csr", data_rvs=rng.standard_normal)
    beta = rng.standard_normal(d) * (rng.random(d) < 0.4)
    y = (rng.random(n) < expit(A @ beta + 0.2)).astype(float)
    return A, y


def _count_reads(monkeypatch):
    """Count the blocks read from a store (on the driver's threads, in this process)."""
    count = [0]
    read = tasks.read_block

    def spy(*a, **kw):
        count[0] += 1
        return read(*a, **kw)

    monkeypatch.setattr(tasks, "read_block", spy)
    return count


def test_a_path_on_a_store_reads_each_block_once(tmp_path, monkeypatch):
    """With the blocks held, the whole path (its start and 4 alphas) reads every block of
    the store once; its solutions satisfy the KKT conditions (dense gradient here)."""
    A, y = _problem()
    store = str(tmp_path / "p.zarr")
    dsketch.write_problem(store, A, y)
    count = _count_reads(monkeypatch)
    path = dsketch.fit_path(store, "logistic", l1_ratio=RATIO, n_alphas=4, eps=0.1, fit_intercept=True,
                            cluster=dsketch.Cluster(persist=True, block_rows=1000))
    assert path.success and count[0] == 4  # 4000 rows in blocks of 1000, read once
    for k, alpha in enumerate(path.alphas):
        assert _kkt_violation(A, y, path.coef[k, :-1], path.coef[k, -1], alpha, RATIO) <= 1e-8


def test_each_fit_of_a_path_equals_the_fit_of_its_alpha_on_its_own():
    """The fits of a path, which start from the rows the fit before left, end where a fit
    of the same alpha on its own (its own engine, from the solution at the alpha before)
    ends, and satisfy the KKT conditions (dense gradient here)."""
    A, y = _problem(seed=1)
    path = dsketch.fit_path((A, y), "logistic", l1_ratio=RATIO, n_alphas=4, eps=0.1, fit_intercept=True,
                            solver=dsketch.Solver(tol=1e-10))
    assert path.success
    for k in range(1, len(path.alphas)):
        if path.n_passes[k] == 0:  # an alpha at or above alpha_max: the null model
            continue
        alpha = path.alphas[k]
        alone = dsketch.fit((A, y), "logistic", model_params={"l1": alpha * RATIO, "l2": alpha * (1 - RATIO)},
                            fit_intercept=True, x0=path.coef[k - 1],
                            solver=dsketch.Solver("prox-newton", tol=1e-10))
        np.testing.assert_allclose(alone.x, path.coef[k], rtol=1e-6, atol=1e-8)
        assert _kkt_violation(A, y, path.coef[k, :-1], path.coef[k, -1], alpha, RATIO) <= 1e-8


def _engine(A, y, client):
    spec = in_memory(A, y)
    return Engine(spec, client, block_rows=700)


def test_engine_init_reads_nothing_at_the_point_its_rows_were_settled_at():
    """``settle(x)`` after steps by ``advance`` makes ``init(x)`` free; the rows then are
    ``A x`` (NumPy, to rounding). A different point, or a model with other row data, costs
    the pass again."""
    A, y = _problem(seed=2, n=3000, d=12)
    rng = np.random.default_rng(0)
    model = get_model("logistic", l2=1e-3)
    with ThreadClient(2) as c:
        engine = _engine(A, y, c)
        x = rng.standard_normal(12)
        engine.init(x, model, norms=False)
        assert engine.n_passes == 1
        p = rng.standard_normal(12)
        engine.advance(engine.matvec(p), 0.5)
        x_new = x + 0.5 * p
        engine.init(x_new, model, norms=False)  # not settled: the pass is made
        assert engine.n_passes == 3
        engine.advance(engine.matvec(p), 0.25)
        x_new = x_new + 0.25 * p
        engine.settle(x_new, get_model("logistic", l2=1.0, l1=0.5))  # penalty differs: same rows
        engine.init(x_new, model, norms=False)
        assert engine.n_passes == 4
        np.testing.assert_allclose(engine.gather_eta(), A @ x_new, rtol=1e-12, atol=1e-12)
        engine.init(x_new, model, norms=True)  # row norms wanted, not cached: a pass
        assert engine.n_passes == 5
        engine.init(x_new, model, norms=False)  # the rows hold the norms now
        assert engine.n_passes == 5
        engine.init(x_new, get_model("poisson", l2=1e-3), norms=False)  # other model: a pass
        assert engine.n_passes == 6
        engine.init(x_new + 1e-12, get_model("poisson", l2=1e-3), norms=False)
        assert engine.n_passes == 7
        np.testing.assert_allclose(engine.gather_eta(), A @ (x_new + 1e-12), rtol=1e-12, atol=1e-12)


def test_on_a_dask_cluster_init_computes_the_rows_again(client):
    """On a Dask cluster ``settle`` does not spare the next ``init`` its pass (so that a
    path's rows do not descend from every fit before, which the scheduler would keep to
    recompute them); the rows are ``A x`` (NumPy)."""
    A, y = _problem(seed=6, n=2000, d=8)
    model = get_model("logistic", l2=1e-3)
    engine = Engine(in_memory(A, y), client, block_rows=500)
    x, p = np.linspace(-1.0, 1.0, 8), np.linspace(0.5, -0.5, 8)
    engine.init(x, model, norms=False)
    engine.advance(engine.matvec(p), 0.5)
    engine.settle(x + 0.5 * p, model)
    engine.init(x + 0.5 * p, model, norms=False)
    assert engine.n_passes == 3
    np.testing.assert_allclose(engine.gather_eta(), A @ (x + 0.5 * p), rtol=1e-12, atol=1e-12)
    engine.close()


def test_a_path_on_threads_gets_the_threads_of_its_fits(monkeypatch):
    """The path's one thread pool has as many threads as a fit of the problem with its
    intercept column takes, whose stored entries are over the threshold for a pool where
    the problem's own are under it."""
    import os

    from dsketch.config import as_cluster
    from dsketch.path import one_cluster
    from dsketch.session import THREADS_MIN_NNZ, n_threads

    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    n = THREADS_MIN_NNZ // 10 - 100  # 10 columns: under the threshold, over it with the intercept's
    A = np.random.default_rng(7).standard_normal((n, 10))
    spec = in_memory(A, np.zeros(n))
    fitted = n_threads(spec.with_intercept(), None, None)
    assert fitted > n_threads(spec, None, None) == 1  # the case this test is about
    with one_cluster(spec, as_cluster(None), fit_intercept=True) as clu:
        assert clu.client.n_threads == fitted
    with one_cluster(spec, as_cluster(None)) as clu:
        assert clu.client.n_threads == 1


def test_limits_are_taken_once_per_client_inside_shared_engines(monkeypatch):
    """Inside ``shared_engines`` the memory limits of a client are taken once (blocks the
    first fit holds are not counted against the fits that reuse them); outside, each time."""
    calls = []
    monkeypatch.setattr(session, "client_limits", lambda c: calls.append(c) or object())
    client = object()
    session.limits_of(client)
    session.limits_of(client)
    assert len(calls) == 2
    with session.shared_engines():
        first = session.limits_of(client)
        assert session.limits_of(client) is first
    assert len(calls) == 3


def test_engines_are_closed_when_the_block_ends():
    A, y = _problem(seed=3, n=1500, d=6)
    spec = in_memory(A, y)
    with ThreadClient(1) as c:
        with session.shared_engines():
            with session.engine_for(spec, c, block_rows=500, bounds=None, persist=False, members=(),
                                    count_load=True) as first:
                first.init(np.zeros(6), None, norms=False)
            with session.engine_for(spec, c, block_rows=500, bounds=None, persist=False, members=(),
                                    count_load=True) as second:
                assert second is first and second.n_passes == 0 and second.rows is not None
            with session.engine_for(spec, c, block_rows=750, bounds=None, persist=False, members=(),
                                    count_load=True) as other:
                assert other is not first  # other blocks: another engine
        assert first.rows is None and other.rows is None
        with session.engine_for(spec, c, block_rows=500, bounds=None, persist=False, members=(),
                                count_load=True) as alone:
            assert alone is not first
            alone.init(np.zeros(6), None, norms=False)
        assert alone.rows is None
