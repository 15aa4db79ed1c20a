"""Out of core: a fit on a store several times larger than the workers' memory.

Writes a dense L2-logistic problem to a Zarr store (default 8.5 million rows x 100
features, 6.8 GB of float64), then fits it twice:

1. **streamed** on a LocalCluster of 2 workers with a 1 GiB memory limit each (the store is
   3.2x their total limit): every pass reads the row blocks from the store; then, on the
   same workers, the coefficients' robust (HC1) covariance (``dsketch.covariance``: one
   more exact streamed pass);
2. **persisted** on a LocalCluster of 2 workers with room for the whole matrix
   (``persist=True`` keeps the blocks in worker memory).

A sampler thread polls every worker's resident memory (RSS) during each fit. The
pipeline prints, and writes to ``OUT/out_of_core.md``, the store size against the
memory limits, the peak RSS per worker, the wall time and passes of each fit, and the
largest difference between the two solutions (the engine's fixed reduction trees and the
counter-based sketch make it exactly zero when both read the same blocks).

Usage::

    python pipelines/out_of_core.py [--rows 8500000] [--features 100] [--limit 1GiB]
        [--sketch leverage] [--out results/out_of_core]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import threading
import time
import warnings
from typing import Any

import numpy as np
from distributed import Client, LocalCluster

import dsketch


def _rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


class PeakMemory:
    """Poll the resident memory of every worker of ``client`` until stopped."""

    def __init__(self, client: Client, period: float = 0.25) -> None:
        self.client, self.period = client, period
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for addr, rss in self.client.run(_rss).items():
                    self.peak[addr] = max(self.peak.get(addr, 0), rss)
            except Exception:  # noqa: BLE001 - a worker restarting must not stop the sampler
                pass
            self._stop.wait(self.period)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _cluster(limit: str) -> LocalCluster:
    return LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                        dashboard_address="127.0.0.1:0", memory_limit=limit)


def _du(path: str) -> int:
    out = subprocess.run(["du", "-sb", path], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def _fit(spec, limit: str, persist: bool, args) -> tuple[dsketch.FitResult, dict[str, int], float, Any]:
    """The fit's result, peak worker RSS and seconds; streamed, also the HC1 covariance pass
    on the same workers (its peak RSS, seconds and largest standard error)."""
    with _cluster(limit) as cluster, Client(cluster) as client:
        print(f"  dashboard: {client.dashboard_link}", flush=True)
        t0 = time.perf_counter()
        with PeakMemory(client) as mem, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = dsketch.fit(spec, "logistic", model_params={"l2": 1e-4}, curvature=args.sketch,
                              solver=dsketch.Solver(tol=1e-10), cluster=dsketch.Cluster(client, persist=persist),
                              seed=0)
        seconds = time.perf_counter() - t0
        inference = None
        if not persist:
            t1 = time.perf_counter()
            with PeakMemory(client) as imem:
                inf = dsketch.covariance(res, spec, cov_type="HC1", cluster=client)
            inference = (imem.peak, time.perf_counter() - t1, float(np.max(inf.bse)))
        return res, mem.peak, seconds, inference


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.2f} GiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--rows", type=int, default=8_500_000)
    ap.add_argument("--features", type=int, default=100)
    ap.add_argument("--limit", default="1GiB", help="memory limit of each streaming worker")
    ap.add_argument("--persist-limit", default="8GiB", help="memory limit of each persisting worker")
    ap.add_argument("--sketch", default="leverage")
    ap.add_argument("--out", default=os.path.join("results", "out_of_core"))
    ap.add_argument("--keep-store", action="store_true", help="do not delete the generated store")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    store = os.path.join(args.out, "problem.zarr")
    from dask.utils import parse_bytes

    limit = parse_bytes(args.limit)
    try:
        t0 = time.perf_counter()
        with _cluster(args.limit) as cluster, Client(cluster) as client:
            spec = dsketch.make_problem(store, model="logistic", n_samples=args.rows, n_features=args.features,
                                        client=client, overwrite=True, seed=5)
        gen = time.perf_counter() - t0
        raw = spec.n_samples * spec.n_features * 8
        disk = _du(store)
        print(f"store: {spec.n_samples} x {spec.n_features} dense, {_gib(raw)} as float64, {_gib(disk)} on disk "
              f"(written in {gen:.0f} s); streaming workers: 2 x {args.limit}", flush=True)
        print("streamed fit ...", flush=True)
        streamed, peak_s, t_s, inference = _fit(spec, args.limit, False, args)
        print("persisted fit ...", flush=True)
        persisted, peak_p, t_p, _ = _fit(spec, args.persist_limit, True, args)
    finally:
        if not args.keep_store:
            shutil.rmtree(store, ignore_errors=True)
    diff = float(np.max(np.abs(streamed.x - persisted.x)))
    lines = [
        f"Store: {spec.n_samples:,} x {spec.n_features} dense float64 = {_gib(raw)} "
        f"({_gib(disk)} on disk), **{raw / (2 * limit):.1f}x** the streaming workers' total memory limit "
        f"(2 x {args.limit}). L2 logistic regression (l2 = 1e-4), {args.sketch} sketch, tol 1e-10.",
        "",
        "| fit | workers | peak RSS worker 1 | peak RSS worker 2 | iterations | passes over A | seconds | success |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, lim, res, peak, sec in (("streamed", args.limit, streamed, peak_s, t_s),
                                       ("persisted", args.persist_limit, persisted, peak_p, t_p)):
        p = sorted(peak.values()) + [0, 0]
        lines.append(f"| {label} | 2 x {lim} | {_gib(p[0])} | {_gib(p[1])} | {res.nit} | {res.n_passes} "
                     f"| {sec:.1f} | {res.success} |")
    lines += ["", f"max |x_streamed - x_persisted| = {diff:.3g}"]
    ipeak, isec, bse_max = inference
    ip = sorted(ipeak.values()) + [0, 0]
    lines += ["", f"Robust (HC1) covariance of the streamed fit on the same 2 x {args.limit} workers "
              f"(`dsketch.covariance`, one exact streamed pass): {isec:.1f} s, peak RSS {_gib(ip[0])} / "
              f"{_gib(ip[1])}, largest standard error {bse_max:.3g}."]
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(args.out, "out_of_core.md"), "w") as fh:
        fh.write(text + "\n")


if __name__ == "__main__":
    main()
