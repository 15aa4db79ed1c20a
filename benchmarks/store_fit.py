"""A fit from a store against a peer in memory, with the store defaults before and after,
side by side in one run (issue 15, target 3).

The problem is one of ``glm_peers``' (default its dense ill-conditioned logistic
regression, 10^6 x 100 at ``--scale 1``), fitted to tol 1e-10 by:

* a peer on the arrays in memory (the bar: default glum's IRLS; ``--peer`` names another
  of ``glm_peers``' solvers, e.g. ``"sklearn lbfgs"`` on the sparse problem);
* ``dsketch.fit(store, "logistic")`` with today's defaults: a store written with Blosc
  LZ4, no cluster named (the driver's threads), blocks held when they fit;
* the former defaults: a store written with zarr's Zstandard level 0, an embedded cluster
  of two worker processes started and stopped inside the time
  (``Cluster(n_workers=2, persist=False)``), every pass reading the store.

Each round fits with every one once, the order rotated; medians. Writing the stores is not
timed. Usage::

    python -m benchmarks.store_fit [--problem dense_ill_100] [--peer "glum auto"] [--scale 1]
        [--repeats 3] [--out docs/reproductions/store_fit.md]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
import warnings
from typing import Any
from unittest import mock

import numpy as np

import dsketch
from benchmarks.glm_peers import PROBLEMS, make_problem, objective, runner
from benchmarks.store_passes import commit, publish
from dsketch.store import layout

def fit_store(path: str, l2: float, cluster: Any) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = dsketch.fit(path, "logistic", model_params={"l2": l2}, cluster=cluster,
                          solver=dsketch.Solver(tol=1e-10, max_iter=100))
    return np.asarray(res.x)


def write_stores(A: Any, y: np.ndarray, tmp: str) -> dict[str, str]:
    from zarr.codecs import ZstdCodec

    new, old = os.path.join(tmp, "new.zarr"), os.path.join(tmp, "old.zarr")
    dsketch.write_problem(new, A, y)
    with mock.patch.object(layout, "default_compressors", lambda: (ZstdCodec(level=0),)):
        dsketch.write_problem(old, A, y)
    return {"new": new, "old": old}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--problem", choices=list(PROBLEMS), default="dense_ill_100")
    ap.add_argument("--peer", default="glum auto", help="the in-memory solver of glm_peers to compare with")
    ap.add_argument("--scale", type=int, default=1, help="divide the problem's rows by this")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=os.path.join("docs", "reproductions", "store_fit.md"))
    args = ap.parse_args(argv)
    A, y = make_problem(args.problem, args.scale)
    l2 = PROBLEMS[args.problem].l2
    with tempfile.TemporaryDirectory() as tmp:
        stores = write_stores(A, y, tmp)
        runs = {
            f"{args.peer} (in memory)": lambda: runner(args.peer, A, y, l2, None, 1e-10)().x,
            "dsketch store, defaults now (threads, blocks held, Blosc LZ4)": lambda: fit_store(stores["new"], l2, None),
            "dsketch store, former defaults (2 worker processes, streamed, Zstandard 0)":
                lambda: fit_store(stores["old"], l2, dsketch.Cluster(n_workers=2, persist=False)),
        }
        names, times, objs = list(runs), {k: [] for k in runs}, {}
        for r in range(args.repeats):
            for name in names[r % len(names):] + names[:r % len(names)]:
                t0 = time.perf_counter()
                x = runs[name]()
                times[name].append(time.perf_counter() - t0)
                objs[name] = objective(A, y, x, l2)
                print(f"round {r + 1} {name}: {times[name][-1]:.2f} s", flush=True)
    peer = statistics.median(times[names[0]])
    best = min(objs.values())
    lines = ["| fit | seconds (median) | all rounds | / peer | rel. objective gap |", "|---|---:|---|---:|---:|"]
    for name in names:
        med = statistics.median(times[name])
        lines.append(f"| {name} | {med:.2f} | {', '.join(f'{t:.2f}' for t in times[name])} | {med / peer:.2f} | "
                     f"{(objs[name] - best) / abs(best):.1e} |")
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")  # noqa: UP017
    cmd = "python -m benchmarks.store_fit " + " ".join(argv if argv is not None else sys.argv[1:])
    md = (f"# A fit from a store against {args.peer} in memory\n\nDate: {now}. Commit: `{commit()}`. Machine: "
          f"{os.cpu_count()} cores, shared with other work. Command: `{cmd.strip()}`. Problem: {args.problem} "
          f"(logistic), {A.shape[0]:,} x {A.shape[1]}, l2 = {l2:g}, tol 1e-10; medians of "
          f"{args.repeats} rounds, the order rotated.\n\n" + "\n".join(lines) + "\n")
    publish(md, args.out)


if __name__ == "__main__":
    main()
