"""Small in-memory problems: dsketch's LogisticRegression against scikit-learn's.

Times, in one run and side by side (medians of repeats):

* a fit of 1,000 x 10 dense logistic data: the first fit of a fresh Python process (imports
  done, not timed; one subprocess per repeat) and later fits in the same process;
* a 5 x 5 ``GridSearchCV`` (five values of ``C``, five folds, refit) on 20,000 x 20.

Estimators: dsketch's default route for NumPy input (in memory, on threads), dsketch's
previous route for it (the data written to a temporary store, fitted on the in-process
Dask cluster the estimators start), and scikit-learn's ``newton-cholesky`` and ``lbfgs``. Prints a Markdown table and writes it to ``docs/reproductions/small_problems.md``.

Run from the repository root: ``python benchmarks/small_problems.py [--repeats 7]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "reproductions" / "small_problems.md"
CS = [0.01, 0.1, 1.0, 10.0, 100.0]


def data(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    y = (X @ rng.standard_normal(d) + rng.logistic(size=n) > 0).astype(np.int64)
    return X, y


def _store_route_class():  # type: ignore[no-untyped-def]
    import dsketch.estimators as est

    class StoreRoute(est.LogisticRegression):
        """The route NumPy input took before it was fitted in memory: written to a
        temporary store and fitted on the process-wide in-process Dask cluster (a
        ``client=`` could not go through GridSearchCV, which deep-copies parameters)."""

        def _on_cluster(self) -> bool:
            return True

    return StoreRoute


def _StoreRoute():  # type: ignore[no-untyped-def]
    global _STORE_ROUTE
    if _STORE_ROUTE is None:
        _STORE_ROUTE = _store_route_class()
    return _STORE_ROUTE()


_STORE_ROUTE = None


def make(name: str):  # type: ignore[no-untyped-def]
    """A fresh estimator by name."""
    from sklearn.linear_model import LogisticRegression as SkLR

    import dsketch.estimators as est

    if name == "dsketch (in memory)":
        return est.LogisticRegression()
    if name == "dsketch (store + in-process cluster)":
        return _StoreRoute()
    if name == "sklearn newton-cholesky":
        return SkLR(solver="newton-cholesky")
    if name == "sklearn lbfgs":
        return SkLR(solver="lbfgs")
    raise ValueError(name)


NAMES = ["dsketch (in memory)", "dsketch (store + in-process cluster)", "sklearn newton-cholesky", "sklearn lbfgs"]


def _first_fit_child(name: str) -> None:
    """In a fresh process: import, then time one fit (printed as JSON)."""
    X, y = data(1000, 10)
    est = make(name)
    t = time.perf_counter()
    est.fit(X, y)
    print(json.dumps({"seconds": time.perf_counter() - t}))


def first_fit(name: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, __file__, "--first-fit-child", name], capture_output=True, text=True,
                             check=True, cwd=ROOT, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        times.append(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])
    return statistics.median(times)


def later_fits(name: str, repeats: int) -> tuple[float, np.ndarray]:
    X, y = data(1000, 10)
    make(name).fit(X, y)  # the first fit is timed separately
    times = []
    for _ in range(repeats):
        est = make(name)
        t = time.perf_counter()
        est.fit(X, y)
        times.append(time.perf_counter() - t)
    return statistics.median(times), np.r_[est.coef_.ravel(), est.intercept_]


def grid(name: str, repeats: int) -> float:
    from sklearn.model_selection import GridSearchCV

    X, y = data(20_000, 20, seed=1)
    times = []
    for _ in range(repeats):
        search = GridSearchCV(make(name), {"C": CS}, cv=5)
        t = time.perf_counter()
        search.fit(X, y)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="repeats per figure (median reported)")
    parser.add_argument("--grid-repeats", type=int, default=3, help="repeats of each grid search")
    parser.add_argument("--first-fit-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.first_fit_child:
        _first_fit_child(args.first_fit_child)
        return
    warnings.simplefilter("ignore")
    rows = []
    coefs = {}
    for name in NAMES:
        first = first_fit(name, args.repeats)
        later, coefs[name] = later_fits(name, args.repeats)
        search = grid(name, args.grid_repeats)
        rows.append((name, first, later, search))
        print(f"{name:40s} first {first * 1e3:8.1f} ms  later {later * 1e3:8.1f} ms  grid {search:7.2f} s",
              flush=True)
    ref = coefs["sklearn newton-cholesky"]
    diff = max(float(np.max(np.abs(coefs[n] - ref))) for n in NAMES if n.startswith("dsketch"))
    import dsketch
    import sklearn

    lines = [
        "# Small in-memory problems: dsketch against scikit-learn",
        "",
        "Produced by `python benchmarks/small_problems.py` (binary logistic regression, `C=1`, default "
        "tolerances; medians of repeats). *First fit*: one fit of 1,000 x 10 in a fresh Python process, "
        f"imports not timed (median of {args.repeats} processes). *Later fit*: the same fit again in a process "
        f"that has fitted once (median of {args.repeats}). *Grid search*: `GridSearchCV` over five values of `C` "
        f"with five folds and the refit, on 20,000 x 20 (median of {args.grid_repeats}).",
        "",
        "| estimator | first fit 1,000 x 10 | later fit 1,000 x 10 | 5 x 5 grid search 20,000 x 20 |",
        "|---|---:|---:|---:|",
        *(f"| {n} | {a * 1e3:.1f} ms | {b * 1e3:.1f} ms | {c:.2f} s |" for n, a, b, c in rows),
        "",
        f"dsketch's coefficients on 1,000 x 10 differ from scikit-learn's newton-cholesky by at most {diff:.1e}.",
        "`dsketch (in memory)` is the estimator's default for NumPy input; `dsketch (store + in-process "
        "cluster)` is the route such input took before: written to a temporary store and fitted on the "
        "in-process Dask cluster the estimators start (the route a `client=` or `scheduler=` still takes).",
        "",
        f"Machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, "
        f"NumPy {np.__version__}, scikit-learn {sklearn.__version__}, dsketch {dsketch.__version__}.",
        "",
    ]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines))
    print("\n".join(lines))
    from dsketch.estimators._base import _close_shared

    _close_shared()


if __name__ == "__main__":
    main()
