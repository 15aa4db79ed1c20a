"""``dsketch cv`` end to end on a store: the table it prints and writes against glum's
GeneralizedLinearRegressorCV on the same folds (:func:`dsketch.fold_ids`) and alphas."""

import csv
import json
import warnings

import glum
import numpy as np
import pytest
from scipy.special import expit

import dsketch
from dsketch.cli import main


def _store(tmp_path, n=500, d=6, seed=3):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, d))
    y = (rng.random(n) < expit(A[:, 0] - 0.8 * A[:, 1] + 0.3)).astype(float)
    sw = rng.uniform(0.5, 2.0, n)
    store = str(tmp_path / "p.zarr")
    dsketch.write_problem(store, A, y, sample_weight=sw, chunk_rows=128)
    return store, A, y, sw


def _glum(A, y, sw, k, seed, alphas, l1_ratio):
    """glum's cross-validation on dsketch's hashed folds (one OpenMP thread: see test_cv)."""
    from threadpoolctl import threadpool_limits

    f = dsketch.fold_ids(y.size, k, seed=seed)
    splits = [(np.flatnonzero(f != j), np.flatnonzero(f == j)) for j in range(k)]
    with warnings.catch_warnings(), threadpool_limits(limits=1, user_api="openmp"):
        warnings.simplefilter("ignore")
        return glum.GeneralizedLinearRegressorCV(family="binomial", cv=splits, alphas=alphas, l1_ratio=l1_ratio,
                                                 gradient_tol=1e-12).fit(A, y, sample_weight=sw)


def _argv(store, out, client, alphas, *extra):
    return ["--quiet", "cv", "--model", "logistic", "--data", store, "--out", out, "--fit-intercept",
            "--alphas", ",".join(map(str, alphas)), "--tol", "1e-12", "--max-iter", "300",
            "--scheduler", client.scheduler.address, *extra]


def test_cli_cv_json_equals_glums_cross_validation(tmp_path, client, capsys):
    """Two l1 ratios, three folds: every fold's held-out deviance, their mean and standard
    deviation, the chosen pair, the 1-SE alpha and the refit equal glum's."""
    store, A, y, sw = _store(tmp_path)
    alphas = list(np.geomspace(0.1, 0.002, 5))
    out = str(tmp_path / "cv.json")
    assert main(_argv(store, out, client, alphas, "--folds", "3", "--seed", "5", "--l1-ratio", "0.5,1")) == 0
    ref = _glum(A, y, sw, 3, 5, alphas, [0.5, 1.0])
    with open(out, encoding="utf-8") as fh:
        saved = json.load(fh)
    rows = saved["rows"]
    assert [(r["l1_ratio"], r["alpha"]) for r in rows] == [(lr, a) for lr in (0.5, 1.0) for a in alphas]
    dev = np.array([[r[f"fold_{f}"] for r in rows] for f in range(3)]).reshape(3, 2, 5)
    np.testing.assert_allclose(dev, ref.deviance_path_, rtol=1e-8)
    mean, std = ref.deviance_path_.mean(axis=0), ref.deviance_path_.std(axis=0, ddof=1)
    np.testing.assert_allclose([r["mean_deviance"] for r in rows], mean.ravel(), rtol=1e-8)
    np.testing.assert_allclose([r["std_deviance"] for r in rows], std.ravel(), rtol=1e-6)
    np.testing.assert_allclose([r["se_deviance"] for r in rows], std.ravel() / np.sqrt(3), rtol=1e-6)
    assert (saved["l1_ratio"], saved["alpha"]) == (ref.l1_ratio_, ref.alpha_)
    assert [r["chosen"] for r in rows].count(True) == 1
    i = [0.5, 1.0].index(ref.l1_ratio_)
    best = int(np.argmin(mean[i]))
    assert saved["alpha_1se"] == max(a for a, m in zip(alphas, mean[i], strict=True)
                                     if m <= mean[i, best] + std[i, best] / np.sqrt(3))
    np.testing.assert_allclose(saved["coef"], np.r_[ref.coef_, ref.intercept_], atol=1e-7)
    np.testing.assert_allclose(saved["fold_weights"],
                               [sw[dsketch.fold_ids(y.size, 3, seed=5) == j].sum() for j in range(3)], rtol=1e-12)
    printed = capsys.readouterr().out
    assert printed.count("<- chosen") == 1 and f"alpha {ref.alpha_:.6e}" in printed


def test_cli_cv_csv_equals_glum_and_refuses_bad_outputs(tmp_path, client, capsys):
    """One l1 ratio, two folds, a CSV table; an existing table, a suffix that is neither
    .csv nor .json and a sketch size with the exact curvature are refused before any fit."""
    store, A, y, sw = _store(tmp_path, n=300, d=4, seed=4)
    alphas = [0.05, 0.01, 0.002]
    out = str(tmp_path / "cv.csv")
    argv = _argv(store, out, client, alphas, "--folds", "2", "--seed", "1", "--l1-ratio", "0.8")
    assert main(argv) == 0
    ref = _glum(A, y, sw, 2, 1, alphas, 0.8)
    with open(out, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [float(r["alpha"]) for r in rows] == alphas
    np.testing.assert_allclose([float(r["mean_deviance"]) for r in rows], ref.deviance_path_.mean(axis=0).ravel(),
                               rtol=1e-8)
    np.testing.assert_allclose([[float(r[f"fold_{f}"]) for r in rows] for f in range(2)],
                               ref.deviance_path_[:, 0], rtol=1e-8)
    assert [float(r["alpha"]) for r in rows if r["chosen"] == "True"] == [ref.alpha_]
    capsys.readouterr()
    assert main(argv) == 2  # the table exists
    assert "exists" in capsys.readouterr().err
    assert main([*argv[:7], str(tmp_path / "cv.txt"), *argv[8:]]) == 2
    assert ".csv or .json" in capsys.readouterr().err
    other = str(tmp_path / "other.csv")
    assert main([*argv[:7], other, *argv[8:], "--sketch", "exact", "--sketch-size", "10"]) == 2
    assert not (tmp_path / "other.csv").exists()


@pytest.mark.parametrize("extra,message", [
    (["--l1-ratio", "a,b"], "--l1-ratio"),
    (["--model", "multinomial"], "deviance"),
    (["--folds", "1"], "n_folds"),
])
def test_cli_cv_refuses_bad_settings_in_one_line(tmp_path, capsys, extra, message):
    store, *_ = _store(tmp_path, n=60, d=3)
    argv = ["cv", "--model", "logistic", "--data", store, "--alphas", "0.1", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
