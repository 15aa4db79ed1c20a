"""Driver memory of a dsketch fit at n and 4 n rows: it stays small next to the data.

Writes a dense L2 logistic problem (the benchmark's ``well`` kind: independent standard
normal columns, d = 100, l2 = 1e-4) at two sizes, n1 and n2 = 4 n1 rows, starts an
embedded 2-worker cluster, and fits each with exact Newton
(``dsketch.fit(store, "logistic", sketch="exact", x0="zeros", tol=1e-10)``). A first fit
on a small store loads every module before anything is measured. For each size it records,
sampled every 0.2 s by :class:`benchmarks.bench.PeakRSS`:

* the driver's peak resident memory during the fit minus its resident memory just before
  the fit (what the fit itself costs the driver);
* the largest resident memory of a worker just before the fit and its peak during the fit;
* the passes over A, the iterations and the seconds of the fit.

The rows are streamed by the workers, so the driver's increase should stay small next to
A when n grows fourfold. The LocalCluster's scheduler runs in the driver process: its
state per task (row blocks times passes) is part of the driver's increase.

Usage::

    python -m pipelines.driver_memory [--n1 250000] [--out results/driver_memory] [--keep-stores]
        [--classes K]

``--classes K`` fits multinomial regression over K classes instead (labels from a softmax
model, the store written from this process; dsketch's default solver), whose driver keeps
vectors of ``d K`` and, in a Newton-CG phase, K diagonal ``d x d`` blocks.

Prints a markdown table and the ratio of the driver's peak increase at n2 to that at n1,
and writes both to ``OUT/driver_memory.md``.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import time
import warnings
from typing import Any

import numpy as np
import psutil
from distributed import Client, LocalCluster
from scipy.special import softmax

import dsketch
from benchmarks.bench import PeakRSS, ProblemDef, write_benchmark_problem
from dsketch.store import open_problem

D = 100
L2 = 1e-4
WARMUP_ROWS = 10_000


def _rss() -> int:
    return int(psutil.Process().memory_info().rss)


def _fit(spec: object, client: Client, classes: int) -> dsketch.FitResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if classes:  # the defaults: L-BFGS, Newton-CG with K diagonal d x d blocks once it is slow
            return dsketch.fit(spec, "multinomial", model_params={"l2": L2, "n_classes": classes},
                               solver=dsketch.Solver(tol=1e-10), cluster=client)
        return dsketch.fit(spec, "logistic", model_params={"l2": L2}, curvature="exact", x0="zeros",
                           solver=dsketch.Solver(tol=1e-10), cluster=client)


def _write_multinomial(store: str, n: int, classes: int) -> Any:
    """A dense multinomial problem (standard normal ``A``, labels drawn from the softmax of
    ``A X`` with ``X`` standard normal over ``sqrt(d)``), written from this process; the
    arrays are freed before the fit is measured."""
    rng = np.random.default_rng(n)
    A = rng.standard_normal((n, D))
    P = softmax(A @ (rng.standard_normal((D, classes)) / np.sqrt(D)), axis=1)
    y = np.minimum((np.cumsum(P, axis=1) < rng.random(n)[:, None]).sum(axis=1), classes - 1).astype(np.float64)
    dsketch.write_problem(store, A, y)
    del A, P, y
    return open_problem(store)


def measure(n: int, out: str, client: Client, classes: int = 0) -> dict[str, Any]:
    """Write the ``n``-row problem, fit it, and return the memory, passes and time of the fit."""
    store = os.path.join(out, f"well_{n}.zarr")
    t0 = time.perf_counter()
    spec = (_write_multinomial(store, n, classes) if classes else
            write_benchmark_problem(store, ProblemDef(f"well-{n}", n, D, "well", l2=L2), client))
    print(f"   n = {n:,}: written in {time.perf_counter() - t0:.0f} s", flush=True)
    gc.collect()
    workers_before = max(client.run(_rss).values())
    before = _rss()
    with PeakRSS(client) as mem:
        res = _fit(spec, client, classes)
    return {"n": n, "a_mib": spec.nnz * 8 / 2**20, "before": before, "driver_increase": max(mem.driver - before, 0),
            "workers_before": workers_before, "workers": mem.workers, "passes": res.n_passes, "nit": res.nit,
            "seconds": res.wall_time, "success": res.success, "blocks": res.info["n_blocks"], "store": store}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--n1", type=int, default=250_000, help="rows of the smaller problem; the larger has 4 * n1")
    ap.add_argument("--out", default=os.path.join("results", "driver_memory"))
    ap.add_argument("--keep-stores", action="store_true", help="keep the Zarr stores written under OUT")
    ap.add_argument("--classes", type=int, default=0,
                    help="fit multinomial regression with this many classes (dsketch's defaults) instead of "
                         "logistic regression by exact Newton")
    args = ap.parse_args()
    if args.n1 < 1000:
        ap.error(f"--n1 must be at least 1000 rows, got {args.n1}")
    os.makedirs(args.out, exist_ok=True)
    rows = []
    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
        print("== warm-up fit (loads the modules on the driver)", flush=True)
        warm = measure(WARMUP_ROWS, args.out, client, args.classes)
        shutil.rmtree(warm["store"], ignore_errors=True)
        for n in (args.n1, 4 * args.n1):
            print(f"== n = {n:,}", flush=True)
            rows.append(measure(n, args.out, client, args.classes))
            if not args.keep_stores:
                shutil.rmtree(rows[-1]["store"], ignore_errors=True)
    mib = 2**20
    what = (f"Dense L2 multinomial regression, K = {args.classes} (standard normal features, d = {D}, l2 = {L2:g}), "
            "dsketch's defaults (L-BFGS, then Newton-CG if it is slow) to tol 1e-10" if args.classes else
            f"Dense L2 logistic regression (well-conditioned, d = {D}, l2 = {L2:g}), exact Newton from zeros to "
            "tol 1e-10")
    lines = [
        f"{what} on a 2-worker LocalCluster; driver RSS sampled every 0.2 s during the fit.",
        "",
        "| n | A (float64) | row blocks | driver RSS before fit | driver peak increase during fit | worker RSS before fit | "
        "worker peak RSS during fit | passes | iterations | seconds | converged |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['n']:,} | {r['a_mib']:.0f} MiB | {r['blocks']} | {r['before'] / mib:.0f} MiB | "
                     f"{r['driver_increase'] / mib:.1f} MiB | {r['workers_before'] / mib:.0f} MiB | "
                     f"{r['workers'] / mib:.0f} MiB | {r['passes']} | "
                     f"{r['nit']} | {r['seconds']:.1f} | {r['success']} |")
    small, large = rows
    ratio = large["driver_increase"] / max(small["driver_increase"], 1)
    lines += ["", f"Driver peak increase at n2 = {large['n']:,} vs n1 = {small['n']:,} (4x the rows): "
                  f"{large['driver_increase'] / mib:.1f} MiB / {small['driver_increase'] / mib:.1f} MiB = "
                  f"{ratio:.2f}x, while A grew by {(large['a_mib'] - small['a_mib']):.0f} MiB. The LocalCluster's "
                  "scheduler runs in the driver process, so the increase includes its per-task state (tasks: row "
                  "blocks x passes)."]
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(args.out, "driver_memory.md"), "w") as fh:
        fh.write(text + "\n")


if __name__ == "__main__":
    main()
