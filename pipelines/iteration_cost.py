"""Cost of one Newton iteration against one bare pass A·x, side by side in one run.

Writes a synthetic L2 logistic problem to Zarr, starts an embedded 2-worker cluster, and
measures, with medians over repeated runs:

* one pass ``A x`` over all blocks (read, multiply, reduce to a scalar), streamed from the
  store, or over blocks held in cluster memory with ``--persist``;
* one iteration of the Newton solver with each curvature kind, fused (one pass per
  iteration with a full step: ``A p``, the trial losses and the next iteration's loss,
  gradient and sketch together) and two-pass (``fused=False``), from the fits' own
  per-iteration timings.

Two problems: ``--problem dense`` (the issue's case: dense, d = 500, AR(1)-correlated
columns, as the benchmark's ``ill-dense``) and ``--problem sparse`` (1% density).

Usage::

    python -m pipelines.iteration_cost [--problem dense] [--n-samples 400000]
        [--n-features 500] [--persist] [--adaptive] [--out results/iteration_cost]

Prints a markdown table and writes it to ``OUT/iteration_cost_PROBLEM.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import warnings

import numpy as np

import dsketch
from benchmarks.bench import ProblemDef, write_benchmark_problem
from benchmarks.passes import bare_pass_times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--problem", choices=("dense", "sparse"), default="dense")
    ap.add_argument("--n-samples", type=int, default=400_000)
    ap.add_argument("--n-features", type=int, default=500)
    ap.add_argument("--density", type=float, default=0.01, help="sparse problem only")
    ap.add_argument("--persist", action="store_true", help="hold the blocks in cluster memory")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--kinds", default="exact,leverage,uniform")
    ap.add_argument("--adaptive", action="store_true",
                    help="adaptive sketch sizes from the adaptive start (as the estimators and the benchmark)")
    ap.add_argument("--out", default=os.path.join("results", "iteration_cost"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    store = os.path.join(args.out, f"{args.problem}.zarr")
    l2 = 1e-6 if args.problem == "dense" else 1e-4
    rows = []
    with dsketch.connect(n_workers=2) as client:
        if args.problem == "dense":
            spec = write_benchmark_problem(store, ProblemDef("ill-dense", args.n_samples, args.n_features, "ill"),
                                           client)
        else:
            spec = dsketch.make_problem(store, model="logistic", n_samples=args.n_samples,
                                        n_features=args.n_features, density=args.density,
                                        client=client, overwrite=True, model_params={"l2": l2})
        x = np.ones(args.n_features) / np.sqrt(args.n_features)
        bare = bare_pass_times(spec, client, x, args.repeats, persist=args.persist)
        for kind in args.kinds.split(","):
            for fused in (True, False):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    res = dsketch.fit(spec, "logistic", model_params={"l2": l2},
                                      curvature=dsketch.Curvature(kind, adaptive=args.adaptive and kind != "exact"),
                                      x0="zeros", solver=dsketch.Solver(tol=1e-10, max_iter=40),
                                      cluster=dsketch.Cluster(client, fused=fused, persist=args.persist))
                per_it = np.diff(np.asarray(res.history["seconds"]))
                rows.append((kind, fused, float(np.median(per_it)), res.nit, res.n_passes,
                             int(np.median(res.history["sketch_rows"])), res.success))
    b = statistics.median(bare)
    where = "blocks in cluster memory" if args.persist else "streamed from Zarr"
    lines = [
        f"{args.problem}: n = {args.n_samples}, d = {args.n_features}"
        + (f", density = {args.density}" if args.problem == "sparse" else "")
        + f"; {where}; {'adaptive' if args.adaptive else 'fixed'} sketch sizes"
        + f"; bare pass A·x: median {b:.3f} s over {args.repeats} runs",
        "",
        "| curvature | passes per iteration | median s / iteration | ratio to bare pass | iterations to tol 1e-10 "
        "| passes in all | sketch rows | converged |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind, fused, t, nit, passes, srows, ok in rows:
        lines.append(f"| {kind} | {'fused (1)' if fused else 'two-pass (2+)'} | {t:.3f} | {t / b:.2f} | {nit} | "
                     f"{passes} | {srows} | {ok} |")
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(args.out, f"iteration_cost_{args.problem}.md"), "w") as fh:
        fh.write(text + "\n")


if __name__ == "__main__":
    main()
