"""``dsketch demo``: the main job on an embedded default.

Writes a synthetic sparse problem (2,000,000 x 200, 1% density by default) to local Zarr
stores, starts an embedded 2-process Dask cluster, fits softmax regression and L2
logistic regression with the sketched Newton solver, and writes the results, a
convergence plot and a timing table into the output directory.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from typing import Any

import numpy as np

from dsketch.api import fit
from dsketch.config import Curvature, Solver
from dsketch.engine.client import connect
from dsketch.engine.core import Engine
from dsketch.engine.datagen import make_problem
from dsketch.errors import MissingDependencyError
from dsketch.plot import plot_convergence
from dsketch.solvers.result import FitResult, save_result
from dsketch.store import open_problem, outputs

logger = logging.getLogger("dsketch")

#: What the demo writes into its directory, by name, with the kind of each.
OUTPUTS = {
    **{f"{m}.zarr": outputs.PROBLEM for m in ("softmax", "logistic")},
    **{f"{m}_result.zarr": outputs.RESULT for m in ("softmax", "logistic")},
    "convergence.png": outputs.FILE,
    "demo.md": outputs.FILE,
}


def _pass_seconds(spec, client, x: np.ndarray, repeats: int = 3) -> float:
    """Median wall time of a pass ``A x`` streamed from the store (the table's yardstick)."""
    engine = Engine(spec, client)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        client.gather([client.submit(np.sum, f, pure=False) for f in engine.matvec(x)])
        times.append(time.perf_counter() - t0)
    engine.close()
    return statistics.median(times)


def _make_and_fit(client: Any, out: str, model: str, params: dict[str, Any], *, n_samples: int, n_features: int,
                  density: float, sketch: str, sketch_size: int | None, seed: int) -> FitResult:
    """Write the demo's problem for ``model`` under ``out``, fit it and save its result there."""
    store = os.path.join(out, f"{model}.zarr")
    t0 = time.perf_counter()
    spec = make_problem(
        store, model=model, n_samples=n_samples, n_features=n_features,
        density=density, seed=seed, regime="weak", model_params=params,
        overwrite=True, client=client,
    )
    print(f"\n== {model}: wrote {store} ({spec.n_samples} x {spec.n_features}, "
          f"nnz={spec.nnz}) in {time.perf_counter() - t0:.1f}s; sketch={sketch}")
    res = fit(spec, model, model_params=params,
              # the documented fixed size, as the README shows
              curvature=Curvature(sketch, size=sketch_size, adaptive=False),
              solver=Solver("newton", tol=1e-10, max_iter=30), cluster=client, seed=seed)
    print(res.message)
    save_result(res, os.path.join(out, f"{model}_result.zarr"), overwrite=True)
    return res


def _timing_table(results: dict[str, FitResult], bare: float) -> str:
    """The Markdown table of each fit's median seconds an iteration against a bare pass."""
    timing = []
    for label, res in results.items():
        sec = np.diff(np.asarray(res.history["seconds"]))
        per_it = float(np.median(sec)) if sec.size else float("nan")
        timing.append((label, per_it, res.n_passes, res.nit))
    table = ["| fit | median s / iteration | bare pass A·x (s) | ratio | iterations | passes |",
             "|---|---|---|---|---|---|"]
    for label, per_it, passes, nit in timing:
        table.append(f"| {label} | {per_it:.3f} | {bare:.3f} | {per_it / bare:.1f} | {nit} | {passes} |")
    return "\n".join(table)


def run_demo(
    out: str,
    *,
    n_samples: int = 2_000_000,
    n_features: int = 200,
    density: float = 0.01,
    sketch: str = "leverage",
    sketch_size: int | None = None,
    seed: int = 0,
    scheduler: str | None = None,
    n_workers: int = 2,
    overwrite: bool = False,
) -> dict[str, object]:
    """Run the demo and return its results (also written under ``out``).

    ``out`` must be missing, empty or an earlier demo's output directory; with
    ``overwrite`` it may hold other files too, which are left alone. Only what an earlier
    demo wrote (:data:`OUTPUTS`, each of its kind) is ever replaced.
    """
    replaced = outputs.check_output_dir(out, OUTPUTS, overwrite=overwrite, what="demo", option="--out")
    if replaced:
        print(f"replacing the earlier demo's {', '.join(replaced)} in {out}")
    os.makedirs(out, exist_ok=True)
    results = {}
    lines = []
    t_start = time.perf_counter()
    with connect(scheduler, n_workers=n_workers) as client:
        for model, params in (("softmax", {}), ("logistic", {"l2": 1e-4})):
            res = _make_and_fit(client, out, model, params, n_samples=n_samples, n_features=n_features,
                                density=density, sketch=sketch, sketch_size=sketch_size, seed=seed)
            results[f"{model} ({sketch})"] = res
            lines.append(f"### {model}, sketch={sketch}\n\n```\n{res.history_table()}\n```\n")
        spec = open_problem(os.path.join(out, "logistic.zarr"))
        x = np.ones(spec.n_features)
        bare = _pass_seconds(spec, client, x)
    text = _timing_table(results, bare)
    print("\n" + text)
    try:
        plot_convergence(results, os.path.join(out, "convergence.png"),
                         title=f"dsketch demo: n={n_samples}, d={n_features}, density={density}")
        plotted = "convergence.png, "
    except MissingDependencyError as exc:  # the plot is an extra: the fits and tables stand without it
        print(f"\nno convergence.png: {exc}")
        plotted = ""
    with open(os.path.join(out, "demo.md"), "w") as fh:
        fh.write("# dsketch demo\n\n" + "\n".join(lines) + "\n## Timing\n\n" + text + "\n")
    print(f"\nwrote {out}/ (results, {plotted}demo.md) in {time.perf_counter() - t_start:.1f}s")
    return {"results": results, "bare_pass_seconds": bare}
