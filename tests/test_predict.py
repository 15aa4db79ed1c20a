"""dsketch.predict and `dsketch predict`: a fitted GLM's linear predictor and mean for the rows
of a problem store, checked against NumPy / scikit-learn computed from the in-memory arrays."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
import zarr
from scipy.special import expit

import dsketch
from dsketch.engine import tasks
from dsketch.errors import NonFiniteError, PredictionError, StoreExistsError
from dsketch.predict import model_from_info
from dsketch.store import outputs


def _logistic_data(rng, n=700, d=5, sparse=False):
    X = rng.standard_normal((n, d))
    if sparse:
        X = sp.random(n, d, density=0.4, random_state=rng, format="csr", dtype=np.float64)
    xt = rng.standard_normal(d)
    y = (rng.random(n) < expit(X @ xt + 0.7)).astype(float)
    return X, y


def _leftovers(directory) -> list[str]:
    return sorted(n for n in os.listdir(directory) if ".partial-" in n or ".old-" in n)


@pytest.mark.parametrize("sparse", [False, True])
def test_logistic_with_intercept_in_memory(client, tmp_path, rng, sparse):
    from sklearn.linear_model import LogisticRegression

    X, y = _logistic_data(rng, sparse=sparse)
    store = str(tmp_path / "p.zarr")
    dsketch.write_problem(store, X, y, chunk_rows=128)
    res = dsketch.fit(store, "logistic", fit_intercept=True, cluster=client, solver=dsketch.Solver(tol=1e-10))
    assert res.success and res.x.shape == (6,)
    coef, c = res.x[:-1], res.x[-1]
    # scikit-learn's own prediction with the same coefficients
    skl = LogisticRegression()
    skl.classes_, skl.coef_, skl.intercept_ = np.array([0.0, 1.0]), coef[None, :], np.array([c])
    eta, mean = dsketch.predict(res, store, cluster=dsketch.Cluster(client, block_rows=200))
    ref = np.asarray(X @ coef).ravel() + c
    assert eta.shape == mean.shape == (X.shape[0],)
    np.testing.assert_allclose(eta, ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(mean, expit(ref), rtol=0, atol=1e-12)
    np.testing.assert_allclose(mean, skl.predict_proba(X)[:, 1], rtol=0, atol=1e-12)
    # the same from the saved result store
    saved = str(tmp_path / "r.zarr")
    dsketch.save_result(res, saved)
    eta2, mean2 = dsketch.predict(saved, store, cluster=client)
    np.testing.assert_allclose(eta2, ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(mean2, expit(ref), rtol=0, atol=1e-12)
    # without a cluster: threads of this process, the same prediction and prediction store
    eta3, mean3 = dsketch.predict(saved, store)
    np.testing.assert_allclose(eta3, ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(mean3, expit(ref), rtol=0, atol=1e-12)
    written = dsketch.predict(saved, store, str(tmp_path / "pred.zarr"), cluster=dsketch.Cluster(block_rows=256))
    np.testing.assert_allclose(zarr.open_group(written, mode="r")["eta"][:], ref, rtol=0, atol=1e-12)


def test_poisson_with_offset_and_info_round_trip(client, tmp_path, rng):
    n, d = 800, 4
    X = 0.5 * rng.standard_normal((n, d))
    off = np.log(rng.uniform(0.5, 2.0, n))
    xt = rng.standard_normal(d) * 0.3
    y = rng.poisson(np.exp(X @ xt + 0.2 + off)).astype(float)
    store = str(tmp_path / "p.zarr")
    dsketch.write_problem(store, X, y, offset=off, chunk_rows=100)
    res = dsketch.fit(store, "poisson", fit_intercept=True, model_params={"l2": 1e-3}, cluster=client,
                      solver=dsketch.Solver(tol=1e-10))
    assert res.success
    saved = str(tmp_path / "r.zarr")
    dsketch.save_result(res, saved)
    back = dsketch.load_result(saved)
    assert back.info == res.info  # everything predict reads survives the store
    assert back.info["model"] == "poisson" and back.info["fit_intercept"] is True
    assert back.info["n_features_in"] == d and back.x.size == d + 1
    model = model_from_info(back.info)
    assert (model.l2, model.intercept, model.n_unpenalized) == (1e-3, True, 1)
    eta, mean = dsketch.predict(saved, store, cluster=client)
    ref = X @ res.x[:-1] + res.x[-1] + off
    np.testing.assert_allclose(eta, ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(mean, np.exp(ref), rtol=1e-12, atol=0)
    # new rows without an offset member: offset 0
    plain = str(tmp_path / "plain.zarr")
    dsketch.write_problem(plain, X[:50], y[:50])
    eta0, mean0 = dsketch.predict(saved, plain, cluster=client)
    np.testing.assert_allclose(eta0, X[:50] @ res.x[:-1] + res.x[-1], rtol=0, atol=1e-12)
    np.testing.assert_allclose(mean0, np.exp(eta0), rtol=1e-12, atol=0)


def test_predict_on_an_in_memory_problem(tmp_path, rng):
    """dsketch.in_memory data (threads of this process): the rows come from its arrays, with
    the intercept column and the offsets, in arrays and in a prediction store."""
    X = 0.5 * rng.standard_normal((300, 3))
    off = np.log(rng.uniform(0.5, 2.0, 300))
    y = rng.poisson(np.exp(X @ np.array([0.3, -0.2, 0.1]) + off)).astype(float)
    data = dsketch.in_memory(X, y, offset=off)
    res = dsketch.fit(data, "poisson", fit_intercept=True, model_params={"l2": 1e-3})
    eta, mean = dsketch.predict(res, data)
    ref = X @ res.x[:-1] + res.x[-1] + off
    np.testing.assert_allclose(eta, ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(mean, np.exp(ref), rtol=1e-12, atol=0)
    path = dsketch.predict(res, data, tmp_path / "pred.zarr")
    np.testing.assert_array_equal(zarr.open_group(path, mode="r")["mean"][:], mean)


@pytest.fixture
def fitted(client, tmp_path_factory):
    """A dense logistic store chunked by 64 rows, and its saved fit with an intercept."""
    rng = np.random.default_rng(7)
    base = tmp_path_factory.mktemp("fitted")
    X, y = _logistic_data(rng, n=700, d=5)
    store = str(base / "p.zarr")
    dsketch.write_problem(store, X, y, chunk_rows=64)
    res = dsketch.fit(store, "logistic", fit_intercept=True, cluster=client, solver=dsketch.Solver(tol=1e-10))
    saved = str(base / "r.zarr")
    dsketch.save_result(res, saved)
    return X, store, res, saved


def test_prediction_store_several_blocks(client, tmp_path, fitted):
    X, store, res, saved = fitted
    ref = X @ res.x[:-1] + res.x[-1]
    out = str(tmp_path / "pred.zarr")
    written = dsketch.predict(saved, store, out, cluster=dsketch.Cluster(client, block_rows=100))  # not a multiple of 64
    assert written == os.path.realpath(out)
    g = zarr.open_group(out, mode="r")
    for name, want in (("eta", ref), ("mean", expit(ref))):
        assert g[name].shape == (700,) and g[name].chunks == (64,)
        np.testing.assert_allclose(g[name][...], want, rtol=0, atol=1e-12)
    meta = g.attrs[outputs.PREDICTION_ATTR]
    assert meta["kind"] == "prediction" and meta["data"] == os.path.realpath(store)
    assert meta["result"] == os.path.realpath(saved) and meta["model"]["model"] == "logistic"
    assert meta["block_rows"] % 64 == 0 and meta["block_rows"] >= 100  # blocks of whole chunks
    assert outputs.path_kind(out) == outputs.PREDICTION
    assert _leftovers(tmp_path) == []
    # an earlier prediction store is replaced only with overwrite=True
    with pytest.raises(StoreExistsError, match="overwrite"):
        dsketch.predict(saved, store, out, cluster=client)
    dsketch.predict(saved, store, out, cluster=client, overwrite=True)
    from dsketch.errors import RemovedOptionError, UnusedOptionError

    with pytest.raises(RemovedOptionError, match=r"scheduler= is now cluster.*n_workers= is now dsketch.Cluster"):
        dsketch.predict(saved, store, out, scheduler="tcp://127.0.0.1:1", n_workers=1)
    with pytest.raises(UnusedOptionError, match="fused and bounds have no effect"):
        dsketch.predict(saved, store, out, cluster=dsketch.Cluster(client, fused=False, bounds=[(0, 10)]))
    np.testing.assert_allclose(zarr.open_group(out, mode="r")["eta"][...], ref, rtol=0, atol=1e-12)


def test_failure_on_second_block_leaves_nothing(client, tmp_path, fitted, monkeypatch):
    _, store, _, saved = fitted
    orig = tasks.predict_block

    def failing(model, source, x, out):
        if source.r0 > 0 and source.r0 <= 128:  # the second block
            raise RuntimeError("injected failure in the second block")
        return orig(model, source, x, out)

    monkeypatch.setattr(tasks, "predict_block", failing)
    out = tmp_path / "pred.zarr"
    with pytest.raises(RuntimeError, match="injected"):
        dsketch.predict(saved, store, str(out), cluster=dsketch.Cluster(client, block_rows=128))
    assert not out.exists() and _leftovers(tmp_path) == []


def test_corrupt_row_in_a_later_block_leaves_nothing(client, tmp_path, fitted):
    """A NaN read by the third block's task on a worker: the error names the row, and no
    output or temporary directory is left."""
    X, _, _, saved = fitted
    bad = str(tmp_path / "bad.zarr")
    g = zarr.open_group(bad, mode="w")
    A = X.copy()
    A[300, 1] = np.nan
    g.create_array("A", shape=A.shape, chunks=(64, 5), dtype="f8")[...] = A
    g.create_array("b", shape=(700,), chunks=(64,), dtype="f8")[...] = 0.0
    out = tmp_path / "pred.zarr"
    with pytest.raises(NonFiniteError, match="300"):
        dsketch.predict(saved, bad, str(out), cluster=dsketch.Cluster(client, block_rows=128))
    assert not out.exists() and _leftovers(tmp_path) == []


@pytest.mark.filterwarnings("ignore::dsketch.errors.ConvergenceWarning")  # the softmax fit is cut short
def test_refusals(client, tmp_path, fitted, rng):
    X, store, res, saved = fitted
    before_store, before_result = sorted(os.listdir(store)), sorted(os.listdir(saved))
    with pytest.raises(StoreExistsError, match="data store"):
        dsketch.predict(saved, store, store, cluster=client, overwrite=True)
    with pytest.raises(StoreExistsError, match="result store"):
        dsketch.predict(saved, store, saved, cluster=client, overwrite=True)
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    with pytest.raises(StoreExistsError, match="not a Zarr store"):
        dsketch.predict(saved, store, str(other), cluster=client, overwrite=True)
    assert (other / "notes.txt").read_text() == "keep" and os.listdir(other) == ["notes.txt"]
    assert sorted(os.listdir(store)) == before_store and sorted(os.listdir(saved)) == before_result
    # a store with another column count
    wide = str(tmp_path / "wide.zarr")
    dsketch.write_problem(wide, rng.standard_normal((50, 6)), np.zeros(50))
    with pytest.raises(PredictionError, match="6 columns but the result has 5 coefficients plus the intercept"):
        dsketch.predict(saved, wide, str(tmp_path / "w.zarr"), cluster=client)
    assert not (tmp_path / "w.zarr").exists()
    # a model without a mean (softmax)
    n, d = 300, 3
    A = rng.standard_normal((n, d))
    b = np.exp(A @ rng.standard_normal(d))
    sm_store = str(tmp_path / "sm.zarr")
    dsketch.write_problem(sm_store, A, b / b.sum())
    sm = dsketch.fit(sm_store, "softmax", cluster=client, solver=dsketch.Solver(max_iter=5))
    with pytest.raises(PredictionError, match="no mean"):
        dsketch.predict(sm, sm_store, str(tmp_path / "s.zarr"), cluster=client)
    assert not (tmp_path / "s.zarr").exists()
    assert _leftovers(tmp_path) == []


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dsketch.cli", *args], capture_output=True, text=True,
                          timeout=300)


def test_cli_fit_predict_info(client, tmp_path, rng):
    X, y = _logistic_data(rng, n=600, d=4)
    store, result, pred = (str(tmp_path / n) for n in ("p.zarr", "r.zarr", "pred.zarr"))
    dsketch.write_problem(store, X, y, chunk_rows=100)
    addr = ["--scheduler", client.scheduler.address]
    run = _cli("fit", "--model", "logistic", "--data", store, "--out", result, "--fit-intercept", "--tol", "1e-10",
               *addr)
    assert run.returncode == 0, run.stderr
    run = _cli("predict", "--result", result, "--data", store, "--out", pred, "--block-rows", "150", *addr)
    assert run.returncode == 0, run.stderr
    line = run.stdout.strip().splitlines()[-1]
    assert line.startswith(f"wrote {pred}") and "600 rows" in line
    x = zarr.open_group(result, mode="r")["x"][...]
    ref = X @ x[:-1] + x[-1]
    g = zarr.open_group(pred, mode="r")
    np.testing.assert_allclose(g["eta"][...], ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(g["mean"][...], expit(ref), rtol=0, atol=1e-12)

    info = _cli("info", pred)
    assert info.returncode == 0, info.stderr
    fields = dict(ln.split(None, 1) for ln in info.stdout.splitlines() if ln.strip())
    assert fields["kind"] == "prediction" and fields["rows"] == "600"
    assert fields["result"] == os.path.realpath(result) and fields["data"] == os.path.realpath(store)
    info = _cli("info", result)
    assert info.returncode == 0, info.stderr
    fields = dict(ln.split(None, 1) for ln in info.stdout.splitlines() if ln.strip())
    assert fields["kind"] == "result" and fields["model"] == "logistic" and fields["success"] == "True"
    assert fields["coefficients"] == "5" and fields["fit_intercept"] == "True" and int(fields["iterations"]) >= 1

    # refusals are one line on stderr with exit 2, and write nothing
    again = _cli("predict", "--result", result, "--data", store, "--out", store, "--overwrite", *addr)
    assert again.returncode == 2 and "data store" in again.stderr and "Traceback" not in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    again = _cli("predict", "--result", result, "--data", store, "--out", pred, *addr)
    assert again.returncode == 2 and "already exists" in again.stderr
