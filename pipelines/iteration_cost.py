"""Cost of one Newton iteration against one bare pass A·x, side by side in one run.

Writes (or reuses) a synthetic sparse logistic problem, starts an embedded 2-worker
cluster, and measures, with medians over repeated runs:

* one streamed pass ``A x`` (read from Zarr, multiply, reduce to a scalar);
* one iteration of the Newton solver with each curvature kind (exact Gram and the
  sketches), from the fits' own per-iteration timings.

Usage::

    python pipelines/iteration_cost.py [--n-samples 2000000] [--n-features 200]
        [--density 0.01] [--out results/iteration_cost]

Prints a markdown table and writes it to ``OUT/iteration_cost.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import warnings

import numpy as np

import dsketch
from dsketch.demo import bare_pass_times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--n-samples", type=int, default=2_000_000)
    ap.add_argument("--n-features", type=int, default=200)
    ap.add_argument("--density", type=float, default=0.01)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=os.path.join("results", "iteration_cost"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    store = os.path.join(args.out, "logistic.zarr")
    kinds = ("exact", "leverage", "uniform", "rownorm", "countsketch")
    rows = []
    with dsketch.connect(n_workers=2) as client:
        spec = dsketch.make_problem(store, model="logistic", n_samples=args.n_samples,
                                    n_features=args.n_features, density=args.density,
                                    client=client, overwrite=True, model_params={"l2": 1e-4})
        bare = bare_pass_times(spec, client, np.ones(args.n_features), args.repeats)
        for kind in kinds:
            size = None if kind != "countsketch" else 8 * args.n_features
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = dsketch.fit(spec, "logistic", model_params={"l2": 1e-4}, sketch=kind,
                                  sketch_size=size, tol=1e-10, max_iter=40, client=client)
            per_it = np.diff(np.asarray(res.history["seconds"]))
            rows.append((kind, float(np.median(per_it)), res.nit, res.n_passes,
                         int(np.median(res.history["sketch_rows"])), res.success))
    b = statistics.median(bare)
    lines = [
        f"n = {args.n_samples}, d = {args.n_features}, density = {args.density}; "
        f"bare pass A·x: median {b:.3f} s over {args.repeats} runs",
        "",
        "| curvature | median s / iteration | ratio to bare pass | iterations to tol 1e-10 | passes | sketch rows | converged |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, t, nit, passes, srows, ok in rows:
        lines.append(f"| {kind} | {t:.3f} | {t / b:.1f} | {nit} | {passes} | {srows} | {ok} |")
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(args.out, "iteration_cost.md"), "w") as fh:
        fh.write(text + "\n")


if __name__ == "__main__":
    main()
