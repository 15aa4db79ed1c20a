"""Multinomial elastic-net paths above ``dK = 2000``: the curvature each proximal Newton step
models, compared on one path.

* ``auto``: the default. On the path's screened features (every class of each feature that
  may move) the curvature pass forms the whole Hessian, class pairs included, while those
  hold at most ``FULL_CURVATURE_MAX`` (2000) coefficients; the K diagonal blocks otherwise.
* ``block``: the K diagonal ``d x d`` blocks always (``preconditioner="block"``): a proximal
  quasi-Newton step, one class at a time.
* ``whole``: the whole ``dK x dK`` Hessian on every feature (``preconditioner="full"``
  with ``restricted_curvature=False``; ``"full"`` alone is restricted on a path as ``auto``).

Data: dense Gaussian ``A`` (``--n`` x ``--d``), labels drawn from a softmax model in which
the first three features carry the signal, ``--classes`` classes, an intercept. Reported per
curvature: Newton iterations over the path (total and per alpha), passes over A (the fit
finding alpha_max included), seconds (median of ``--repeats``), and the largest difference
of the penalised coefficients from the ``auto`` path (the intercepts are unique only up to a
common shift).

Run from the repository root::

    python benchmarks/multinomial_path.py [--n 3000] [--d 450] [--classes 5] [--n-alphas 7]
        [--eps 0.1] [--repeats 3] [--curvatures auto block whole] [--out docs/reproductions/multinomial_path.md]
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import softmax

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import dsketch  # noqa: E402
from benchmarks.glm_peers import commit  # noqa: E402

CURVATURES = ("auto", "block", "whole")


def make(n: int, d: int, k: int, seed: int = 11) -> tuple[np.ndarray, np.ndarray]:
    """``A`` and labels ``0 .. k-1`` from a softmax model on the first three features."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, d))
    W = np.zeros((d, k))
    W[:3] = 1.5 * rng.standard_normal((3, k))
    P = softmax(A @ W, axis=1)
    y = np.minimum((np.cumsum(P, axis=1) < rng.random(n)[:, None]).sum(axis=1), k - 1)
    return A, y.astype(np.float64)


def run(A: np.ndarray, y: np.ndarray, curvature: str, args: argparse.Namespace) -> tuple[float, Any]:
    params = {"auto": {}, "block": {"preconditioner": "block"}, "whole": {"preconditioner": "full"}}[curvature]
    t = time.perf_counter()
    path = dsketch.fit_path((A, y), "multinomial", l1_ratio=args.l1_ratio, n_alphas=args.n_alphas, eps=args.eps,
                            model_params=params, fit_intercept=True, restricted_curvature=curvature != "whole",
                            solver=dsketch.Solver(tol=args.tol, max_iter=args.max_iter))
    return time.perf_counter() - t, path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=3000, help="rows (default 3000)")
    p.add_argument("--d", type=int, default=450, help="features (default 450)")
    p.add_argument("--classes", type=int, default=5, help="classes K (default 5)")
    p.add_argument("--l1-ratio", type=float, default=0.5, help="L1 share of the penalty (default 0.5)")
    p.add_argument("--n-alphas", type=int, default=7, help="alphas on the path (default 7)")
    p.add_argument("--eps", type=float, default=0.1, help="smallest alpha over alpha_max (default 0.1)")
    p.add_argument("--tol", type=float, default=1e-10, help="gradient tolerance of each fit (default 1e-10)")
    p.add_argument("--max-iter", type=int, default=400, help="iterations allowed a fit (default 400)")
    p.add_argument("--repeats", type=int, default=3, help="rounds; the median time is reported (default 3)")
    p.add_argument("--curvatures", nargs="+", default=list(CURVATURES), choices=CURVATURES)
    p.add_argument("--out", default=None, help="Markdown file for the table (default: print only)")
    args = p.parse_args(argv)
    A, y = make(args.n, args.d, args.classes)
    times: dict[str, list[float]] = {c: [] for c in args.curvatures}
    paths: dict[str, Any] = {}
    for rnd in range(args.repeats):
        for c in args.curvatures if rnd % 2 == 0 else args.curvatures[::-1]:
            s, paths[c] = run(A, y, c, args)
            times[c].append(s)
    pen = args.d * args.classes
    base = paths[args.curvatures[0]].coef[:, :pen]
    rows = [f"| curvature | iterations (per alpha) | passes over A | seconds / path | success | "
            f"max abs coef difference from {args.curvatures[0]} |", "|---|---|---|---|---|---|"]
    for c in args.curvatures:
        path = paths[c]
        passes = int(path.n_passes.sum() + path.n_passes_start)
        diff = float(np.max(np.abs(path.coef[:, :pen] - base)))
        rows.append(f"| {c} | {int(path.n_iter.sum())} ({', '.join(map(str, path.n_iter))}) | {passes} | "
                    f"{statistics.median(times[c]):.2f} | {path.success} | {diff:.1e} |")
    last = paths[args.curvatures[0]]
    command = "python benchmarks/multinomial_path.py" + ("" if not argv else " " + shlex.join(argv))
    text = "\n".join([
        "# Multinomial elastic-net path above dK = 2000: whole Hessian on the screened features against blocks",
        "", f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC. Commit: `{commit()}`. "
        f"Machine: {os.cpu_count()} cores. Command: `{command}`.", "",
        f"{args.n:,} x {args.d} dense, K = {args.classes} (dK = {(args.d + 1) * args.classes:,} with the intercepts), "
        f"{args.n_alphas} alphas from alpha_max down to {args.eps:g} alpha_max, l1_ratio {args.l1_ratio:g}, "
        f"tol {args.tol:g}; nonzero coefficients along the path: {', '.join(map(str, last.n_active))}. Seconds: "
        f"median of {args.repeats} round(s), the order alternating.", "", *rows, ""])
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main(sys.argv[1:])
