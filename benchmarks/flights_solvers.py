"""Newton-CG and the leverage sketch against the default fit on the flights one-hot design (issue 15).

The problem is ``flights`` of :mod:`benchmarks.glm_peers` (327,346 x 3,295 CSR, about six
non-zeros a row, L2-penalised logistic regression without intercept, ``l2 = 1e-5``), held
in memory and fitted by ``dsketch.fit`` on threads of this process. Every configuration
runs to the same stopping rule (``Solver(tol=1e-8)``: relative gradient norm ``1e-8`` and
half the squared Newton decrement below ``1e-8 max(1, |f|)``):

* ``default``: ``curvature="auto"``, solver ``"auto"``;
* ``newton-cg``: ``curvature="auto"``, solver ``"newton-cg"``;
* ``leverage newton``: ``curvature="leverage"`` (default size), solver ``"newton"``;
* ``leverage newton-cg``: ``curvature="leverage"``, solver ``"newton-cg"``.

Each round fits every configuration once, the order rotated from round to round; the time is
the median over the rounds of the wall time of ``dsketch.fit``. A configuration whose first
fit took over ``--cap`` seconds runs once. The objective of every result is recomputed here
(:func:`benchmarks.glm_peers.objective`) and compared with the smallest reached.

Run from the repository root::

    python -m benchmarks.flights_solvers [--repeats 3] [--scale 1] [--cap 120]
        [--only default "leverage newton"] [--out docs/reproductions/flights_solvers.md]

Prints a Markdown table and writes it, with the date, commit, cores and command, to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchmarks.glm_peers import ROOT, commit, flights, objective

import dsketch

OUT = ROOT / "docs" / "reproductions" / "flights_solvers.md"
L2 = 1e-5
TOL = 1e-8
#: Name: (curvature, solver method).
CONFIGS: dict[str, tuple[str, str]] = {
    "default": ("auto", "auto"),
    "newton-cg": ("auto", "newton-cg"),
    "leverage newton": ("leverage", "newton"),
    "leverage newton-cg": ("leverage", "newton-cg"),
}


@dataclass
class Entry:
    name: str
    times: list[float] = field(default_factory=list)
    results: list[Any] = field(default_factory=list)


def fit_once(A: Any, y: np.ndarray, name: str, seed: int = 0) -> tuple[float, Any]:
    """One ``dsketch.fit`` of the configuration; its wall time and result."""
    curvature, method = CONFIGS[name]
    t0 = time.perf_counter()
    res = dsketch.fit((A, y), "logistic", model_params={"l2": L2}, curvature=curvature,
                      solver=dsketch.Solver(method, tol=TOL, max_iter=1000), seed=seed)
    return time.perf_counter() - t0, res


def run(A: Any, y: np.ndarray, names: list[str], repeats: int, cap: float) -> list[Entry]:
    entries = [Entry(n) for n in names]
    for e in entries:  # compiled kernels and thread pools warmed up on a corner, untimed (400
        fit_once(A[:20_000, :400], y[:20_000], e.name)  # columns: the kernels of d > 256 too
    for rnd in range(repeats):
        k = rnd % len(entries)
        for e in entries[k:] + entries[:k]:
            if rnd and e.times and e.times[0] > cap:
                continue
            secs, res = fit_once(A, y, e.name)
            e.times.append(secs)
            e.results.append(res)
            print(f"round {rnd + 1}: {e.name}: {secs:.2f} s, {res.nit} iterations, {res.status}", flush=True)
    return entries


def table(A: Any, y: np.ndarray, entries: list[Entry]) -> str:
    fvals = {e.name: objective(A, y, np.asarray(e.results[-1].x), L2) for e in entries}
    fbest = min(fvals.values())
    base = next((statistics.median(e.times) for e in entries if e.name == "default"), None)
    rows = ["| configuration | curvature | solver | seconds (median) | rounds | iterations | passes over A "
            "| status | rel. gradient | (f − f_min)/|f_min| | / default |",
            "|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    for e in entries:
        r, med = e.results[-1], statistics.median(e.times)
        g0 = float(r.history["grad_norm"][0]) if "grad_norm" in r.history else float("nan")
        ratio = f"{med / base:.2f}" if base else "–"
        curvature, method = CONFIGS[e.name]
        rows.append(f"| {e.name} | {curvature} | {method} | {med:.2f} | {len(e.times)} | {r.nit} | {r.n_passes} "
                    f"| {r.status.name if hasattr(r.status, 'name') else r.status} | {r.grad_norm / g0:.1e} "
                    f"| {(fvals[e.name] - fbest) / abs(fbest):.1e} | {ratio} |")
    return "\n".join(rows)


def report(md: str, argv: list[str], shape: str) -> str:
    return "\n\n".join([
        "# Flights one-hot design: Newton-CG and the leverage sketch against the default",
        f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC. Commit: `{commit()}`. "
        f"Machine: {os.cpu_count()} cores. Command: `python -m benchmarks.flights_solvers {shlex.join(argv)}`.",
        f"Problem: {shape}, logistic, l2 = {L2:g}, no intercept, in memory (`dsketch.fit((A, y), ...)` on "
        f"threads). Every fit: `Solver(method, tol={TOL:g})`, seed 0. Seconds: median over the rounds, each "
        "configuration once a round, the order rotated. f is the objective recomputed from each fit's "
        "coefficients, f_min the smallest of them.",
        md, ""])


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scale", type=int, default=1)
    ap.add_argument("--cap", type=float, default=120.0, help="run once a configuration slower than this (s)")
    ap.add_argument("--only", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    A, y = flights(args.scale)
    shape = f"{A.shape[0]:,} × {A.shape[1]:,} CSR ({A.nnz:,} nnz)"
    md = table(A, y, run(A, y, args.only, args.repeats, args.cap))
    print(md)
    with open(args.out, "w", encoding="utf-8") as fh:
        fh.write(report(md, argv, shape))


if __name__ == "__main__":
    main()
