"""The command line: help, make-data -> info -> fit, convert from AnnData, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

import dsketch
from dsketch.cli import main
from dsketch.store import read_block


@pytest.mark.parametrize("sub", [[], ["fit"], ["predict"], ["make-data"], ["convert"], ["info"], ["demo"],
                                 ["summary"]])
def test_help(sub, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*sub, "--help"])
    assert exc.value.code == 0
    assert "usage: dsketch" in capsys.readouterr().out


def test_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "dsketch.cli", "--help"], capture_output=True, text=True, check=True)
    for cmd in ("make-data", "convert", "info", "fit", "demo"):
        assert cmd in out.stdout


def test_make_data_info_fit(client, tmp_path, capsys):
    addr = client.scheduler.address
    store = str(tmp_path / "p.zarr")
    assert main(["make-data", store, "--model", "logistic", "--n-samples", "5000", "--n-features", "12",
                 "--density", "0.3", "--seed", "3", "--scheduler", addr]) == 0
    capsys.readouterr()
    assert main(["info", store, "--json", "--check"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert "logistic" in json.dumps(info)
    out = str(tmp_path / "r.zarr")
    assert main(["fit", "--model", "logistic", "--data", store, "--out", out, "--sketch", "leverage",
                 "--sketch-size", "600", "--tol", "1e-10", "--max-iter", "60", "--scheduler", addr,
                 "--plot", str(tmp_path / "c.png")]) == 0
    text = capsys.readouterr().out
    assert "passes" in text and "Converged" in text
    res = dsketch.load_result(out)
    assert res.success and res.x.shape == (12,)
    assert (tmp_path / "c.png").stat().st_size > 1000
    # the planted solution is recovered up to the statistical error of 5000 samples
    xp = np.asarray(dsketch.open_problem(store).metadata["dsketch"]["x_planted"])
    assert np.linalg.norm(res.x - xp) / np.linalg.norm(xp) < 0.3


def test_anndata_roundtrip(client, tmp_path, capsys):
    anndata = pytest.importorskip("anndata")
    import pandas as pd

    rng = np.random.default_rng(0)
    n, d = 600, 10
    X = sp.random(n, d, density=0.4, random_state=rng, format="csr", dtype=np.float64)
    xt = rng.standard_normal(d)
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ xt)))).astype(float)
    ad = anndata.AnnData(X=X, obs=pd.DataFrame({"label": y}, index=[f"c{i}" for i in range(n)]))
    src = str(tmp_path / "cells.zarr")
    ad.write_zarr(src)
    store = str(tmp_path / "p.zarr")
    assert main(["convert", src, store, "--obs-column", "label"]) == 0
    assert main(["info", store]) == 0
    assert "csr" in capsys.readouterr().out.lower()
    out = str(tmp_path / "r.zarr")
    assert main(["fit", "--model", "logistic", "--data", store, "--out", out, "--param", "l2=0.01",
                 "--scheduler", client.scheduler.address]) == 0
    res = dsketch.load_result(out)
    assert res.success


def test_errors_are_clear(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing.zarr")]) == 2
    err = capsys.readouterr().err
    assert "error" in err and "missing.zarr" in err and "Traceback" not in err
    assert main(["fit", "--model", "logistic", "--data", str(tmp_path / "missing.zarr"),
                 "--out", str(tmp_path / "r.zarr")]) == 2
    assert "missing.zarr" in capsys.readouterr().err
    assert main(["fit", "--model", "logistic", "--data", "x", "--out", "y", "--param", "l2"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_fit_on_corrupt_store_names_the_problem(client, tmp_path, capsys):
    """A NaN inside A, written by plain zarr calls, surfaces from the workers as one clear line."""
    import zarr

    rng = np.random.default_rng(1)
    n, d = 300, 4
    A = rng.standard_normal((n, d))
    A[123, 2] = np.nan
    store = str(tmp_path / "bad.zarr")
    g = zarr.open_group(store, mode="w")
    g.create_array("A", shape=(n, d), chunks=(64, d), dtype="f8")[...] = A
    g.create_array("b", shape=(n,), chunks=(64,), dtype="f8")[...] = (rng.random(n) < 0.5).astype(float)
    code = main(["fit", "--model", "logistic", "--data", store, "--out", str(tmp_path / "r.zarr"),
                 "--scheduler", client.scheduler.address])
    err = capsys.readouterr().err
    assert code == 2
    assert "NaN" in err and "123" in err and "Traceback" not in err
    assert not (tmp_path / "r.zarr").exists()


def test_scheduler_from_environment(client, tmp_path, monkeypatch):
    """DSKETCH_SCHEDULER makes fit join the running cluster instead of starting one."""
    rng = np.random.default_rng(2)
    A = rng.standard_normal((400, 3))
    y = (rng.random(400) < 0.5).astype(float)
    store = str(tmp_path / "p.zarr")
    dsketch.write_problem(store, A, y)
    before = set(client.scheduler_info()["workers"])

    def curvature_seconds(dask_scheduler):
        tp = dask_scheduler.task_prefixes.get("curvature")
        return 0.0 if tp is None else float(sum(tp.all_durations.values()))

    t_before = client.run_on_scheduler(curvature_seconds)
    monkeypatch.setenv("DSKETCH_SCHEDULER", client.scheduler.address)
    seen = []

    def cb(state):
        seen.append(state.iteration)

    res = dsketch.fit(store, "logistic", callback=cb)
    assert res.success and seen
    # the tasks ran on the session cluster's workers
    assert set(client.scheduler_info()["workers"]) == before
    assert client.run_on_scheduler(curvature_seconds) > t_before


def test_fit_ggn_score_from_cli(tmp_path, capsys):
    """GGN-SCORE from the command line on a store with one-hot targets as a member."""
    rng = np.random.default_rng(5)
    n, d, k = 600, 4, 3
    X = rng.standard_normal((n, d))
    labels = np.argmax(X[:, :k], axis=1)
    store = str(tmp_path / "xy.zarr")
    dsketch.write_problem(store, X, labels.astype(float), extra={"Y": np.eye(k)[labels]})
    out = str(tmp_path / "net.zarr")
    assert main(["fit", "--model", "ggn-score", "--data", store, "--out", out, "--param", "hidden=32",
                 "--param", "target=Y", "--param", "epochs=4", "--param", "batch_size=50"]) == 0
    res = dsketch.load_result(out)
    assert res.success and res.info["n_outputs"] == k
    loss = res.history["loss"]
    assert loss[-1] < 0.5 * loss[0]
    from dsketch.models.twolayer_net import TwoLayerNet

    net = TwoLayerNet(d, 32, k, "relu")
    acc = np.mean(np.argmax(net.predict(res.x, X), axis=1) == labels)
    assert acc > 0.8
    assert main(["fit", "--model", "ggn-score", "--data", store, "--out", str(tmp_path / "x.zarr"),
                 "--param", "target=nope"]) == 2
    assert "nope" in capsys.readouterr().err
    # an option the network does not use is refused, not ignored
    assert main(["fit", "--model", "ggn-score", "--data", store, "--out", str(tmp_path / "y.zarr"),
                 "--param", "hidden=8", "--fit-intercept"]) == 2
    assert "--fit-intercept is for the GLMs" in capsys.readouterr().err


def test_make_data_solve_records_the_optimum(client, tmp_path):
    """--solve: generation writes the store, then a tight fit records x* (the gradient of
    mean(log(1 + e^z) - b z) + l2/2 |x|^2, written out here, vanishes there)."""
    store = str(tmp_path / "s.zarr")
    assert main(["make-data", store, "--model", "logistic", "--n-samples", "3000", "--n-features", "5",
                 "--param", "l2=0.01", "--scheduler", client.scheduler.address, "--solve"]) == 0
    spec = dsketch.open_problem(store)
    x = np.asarray(spec.metadata["dsketch"]["x_star"])
    blk = read_block(spec, 0, spec.n_samples)
    A, b = np.asarray(blk.A), np.asarray(blk.b)
    grad = A.T @ (1 / (1 + np.exp(-(A @ x))) - b) / len(b) + 0.01 * x
    assert np.linalg.norm(grad) < 1e-9 and spec.metadata["dsketch"]["x_star_converged"]


def test_no_bench_subcommand(capsys):
    """The benchmark is not part of the installed package: it runs from a checkout."""
    with pytest.raises(SystemExit) as exc:
        main(["bench"])
    assert exc.value.code == 2
    assert "invalid choice: 'bench'" in capsys.readouterr().err


def _subparsers():
    from dsketch.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sub.choices


def test_every_option_has_help_that_gives_its_default():
    import argparse

    for name, p in _subparsers().items():
        text = " ".join(p.format_help().split())
        for action in p._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            where = f"dsketch {name} {action.option_strings or action.dest}"
            assert action.help, where
            if action.option_strings and action.default not in (None, argparse.SUPPRESS) \
                    and not isinstance(action.default, bool):
                assert "default" in p._get_formatter()._get_help_string(action), where
        assert "(default: auto)" in text or name != "fit"


def test_no_effect_options_are_refused_in_one_line(tmp_path, capsys):
    base = ["fit", "--model", "logistic", "--data", str(tmp_path / "missing.zarr"), "--out", str(tmp_path / "r.zarr")]
    for extra, what in ((["--sketch", "exact", "--sketch-size", "100"], "size"),
                        (["--sketch", "exact", "--adaptive-sketch"], "adaptive"),
                        (["--solver", "gd", "--sketch-size", "100"], "size")):
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "no effect" in err and what in err, err
    assert main(["demo", "--out", str(tmp_path / "d"), "--sketch", "exact", "--sketch-size", "10"]) == 2
    assert "no effect" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_misspelt_names_suggest_the_nearest(tmp_path, capsys):
    out = str(tmp_path / "r.zarr")
    assert main(["fit", "--model", "logistc", "--data", str(tmp_path / "missing.zarr"), "--out", out]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'logistic'" in err and len(err.strip().splitlines()) == 1
    assert main(["make-data", out, "--model", "poison", "--n-samples", "10", "--n-features", "2"]) == 2
    assert "did you mean 'poisson'" in capsys.readouterr().err
    assert not (tmp_path / "r.zarr").exists()
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--model", "logistic", "--data", "x", "--out", "y", "--sketch", "levrage"])
    assert exc.value.code == 2 and "did you mean 'leverage'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["fti", "--model", "logistic"])
    assert "did you mean 'fit'" in capsys.readouterr().err


def test_quiet_before_or_after_the_command(tmp_path, capsys):
    from dsketch.cli import build_parser

    parser = build_parser()
    tail = ["--model", "logistic", "--data", "d", "--out", "o"]
    assert parser.parse_args(["fit", *tail]).quiet is False
    assert parser.parse_args(["--quiet", "fit", *tail]).quiet is True
    assert parser.parse_args(["fit", *tail, "--quiet"]).quiet is True
    assert parser.parse_args(["fit", "--quiet", *tail]).quiet is True
    store = str(tmp_path / "p.zarr")
    rng = np.random.default_rng(0)
    dsketch.write_problem(store, rng.standard_normal((50, 3)), rng.standard_normal(50))
    assert main(["info", store, "--quiet"]) == 0
    assert "50" in capsys.readouterr().out
    assert main(["fit", "--model", "least-squares", "--data", store, "--out", str(tmp_path / "r.zarr"),
                 "--quiet"]) == 0
    assert dsketch.load_result(str(tmp_path / "r.zarr")).success
