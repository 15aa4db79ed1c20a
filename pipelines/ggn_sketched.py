"""Sketched full-data GGN-SCORE on a large teacher-student store (docs/theory.md#ggn-score).

A teacher-student problem (inputs on the unit sphere, teacher = 5 SiLU units with
unit-norm weights and +-1 outputs, one output) with ``n`` rows is written to a Zarr
problem store; a SiLU student with ``n1`` hidden units (``p = n1 n0 + n1`` parameters) is
trained on the whole store through a local Dask cluster with

* GGN-SCORE whose GGN matrix ``J^T Q J`` is estimated from ``s`` rows sampled by their
  Jacobian norms, for ``s`` in a few multiples of ``p``, with backtracking (a step that
  raises the objective is halved; the check reuses the next iteration's pass), and the
  smallest ``s`` also without it (the authors' rule);
* GGN-SCORE with the exact GGN matrix (every row, ``s = n``; the authors' rule);
* gradient descent on the same objective, fixed step ``1 / lambda_max(J^T Q J)`` at
  ``theta_0`` (one pass per iteration).

Every method starts from the same ``theta_0``; the exact loss and gradient are computed on
all rows at every iteration. The GGN runs load the blocks into worker memory once
(``persist=True``, counted as one pass); gradient descent reads the store on every pass.
Settings: ``tau = 1e-4``, ``mu = sqrt(n1)``, ``alpha = 0.95``,
``scale_hessian_by_tau=True`` (``H = tau diag(h'')``: the curvature then comes from the
GGN matrix, so the sketch matters; with the authors' ``diag(h'')`` the damping dominates).

Usage::

    python pipelines/ggn_sketched.py [--n 1000000] [--hidden 32] [--iters 10] [--gd-iters 40]
                                     [--workers 2] [--out results/ggn_sketched]

Prints a markdown table and writes it with ``ggn_sketched.png`` to OUT.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
import warnings

# single-threaded BLAS on the driver: its p x p solves are small, and idle OpenBLAS threads
# spinning on a 2-core machine would steal the workers' cores
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np

import dsketch
from dsketch.engine.client import connect
from dsketch.models.twolayer_net import TwoLayerNet
from dsketch.solvers.ggn_score import GGNScoreConfig
from dsketch.solvers.ggn_sketched import SketchedGGN


def write_teacher_student(path: str, n: int, n0: int, seed: int, chunk: int = 200_000) -> dsketch.ProblemSpec:
    """Write the teacher-student store block by block (memory ~ one block)."""
    rng = np.random.default_rng(seed)
    U = rng.standard_normal((5, n0))
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    v = rng.choice([-1.0, 1.0], size=5)
    Xs, ys = [], []
    for r0 in range(0, n, chunk):
        X = rng.standard_normal((min(chunk, n - r0), n0))
        X /= np.linalg.norm(X, axis=1, keepdims=True)
        Z = X @ U.T
        Xs.append(X)
        ys.append((Z / (1 + np.exp(-Z))) @ v)
    return dsketch.write_problem(path, np.vstack(Xs), np.concatenate(ys), overwrite=True)


def gradient_descent(solver: SketchedGGN, spec, client, theta0: np.ndarray, iters: int, lr: float):
    """Fixed-step gradient descent on loss + tau sum h_mu (one pass per iteration)."""
    theta, trace = theta0.copy(), []
    t0 = time.perf_counter()
    for it in range(iters + 1):
        loss, grad = solver.loss_gradient(spec, client, theta)
        trace.append((it, time.perf_counter() - t0, solver.objective(loss, theta), it + 1))
        if it < iters:
            theta = theta - lr * (grad + solver.config.tau * solver.smoother.d1(theta))
    return trace


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--n0", type=int, default=10)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--gd-iters", type=int, default=40)
    ap.add_argument("--multiples", default="2,5,20", help="sketch sizes as multiples of p")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--block-rows", type=int, default=2**17)
    ap.add_argument("--out", default=os.path.join("results", "ggn_sketched"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    t_start = time.perf_counter()
    store = os.path.join(args.out, "teacher_student.zarr")
    spec = write_teacher_student(store, args.n, args.n0, seed=0)
    t_write = time.perf_counter() - t_start
    net = TwoLayerNet(args.n0, args.hidden, 1, "silu")
    p = net.n_params
    theta0 = net.init_params(np.random.default_rng(1))
    cfg = GGNScoreConfig(tau=1e-4, mu=float(np.sqrt(args.hidden)), alpha=0.95, scale_hessian_by_tau=True)
    mult = [int(m) for m in args.multiples.split(",")]
    runs = [(m * p, True) for m in mult] + [(mult[0] * p, False), (None, False)]
    traces: dict[str, list[tuple[int, float, float, float]]] = {}
    rows: dict[str, float] = {}
    with connect(None, n_workers=args.workers) as client:
        for s, backtrack in runs:
            label = (f"GGN, s = {s // p}p = {s}" + (", backtracking" if backtrack else ", no line search")
                     if s is not None else f"GGN, exact (s = n = {args.n})")
            solver = SketchedGGN(net, cfg, sketch_size=s, seed=0, block_rows=args.block_rows,
                                 backtracking=backtrack, persist=True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a diverging run may meet a numerically singular system
                res = solver.fit_store(spec, client, theta0=theta0, iters=args.iters)
            h = res.history
            traces[label] = list(zip(h["iteration"], h["seconds"], h["loss"], h["passes"], strict=True))
            rows[label] = float(np.nanmean(h["sketch_rows"]))
        gd_solver = SketchedGGN(net, cfg, sketch_size=None, block_rows=args.block_rows)
        lam = float(np.linalg.eigvalsh(gd_solver.update_gradient_hessian(spec, client, theta0).gram)[-1])
        label = f"GD (step 1/lambda_max = {1 / lam:.3g})"
        traces[label] = gradient_descent(gd_solver, spec, client, theta0, args.gd_iters, 1.0 / lam)
        rows[label] = float("nan")
    exact_label = next(k for k in traces if "exact" in k)
    target = traces[exact_label][-1][2]
    lines = [
        (f"### Sketched GGN-SCORE: teacher-student, n = {args.n:,} rows, n0 = {args.n0}, n1 = {args.hidden}, "
         f"p = {p}, {args.workers} workers"),
        "",
        (f"Store written in {t_write:.1f} s. Objective = half MSE + tau sum h_mu (tau = 1e-4, mu = sqrt(n1), "
         "pseudo-Huber, H = tau diag(h'')). 'time to exact' = first time the objective is within 1% of the "
         f"exact GGN's after {args.iters} iterations ({target:.4e})."),
        "",
        ("| method | mean rows sampled | iterations | passes | objective at start | objective at end "
         "| seconds | s / iteration | time to exact (+1%) |"),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, tr in traces.items():
        it, sec, obj, passes = (np.asarray(c) for c in zip(*tr, strict=True))
        hit = np.flatnonzero(np.isfinite(obj) & (obj <= 1.01 * target))
        reach = f"{sec[hit[0]]:.1f} s (it {int(it[hit[0]])})" if hit.size else "not reached"
        r = "all" if "exact" in label else ("-" if np.isnan(rows[label]) else f"{rows[label]:.0f}")
        lines.append(f"| {label} | {r} | {int(it[-1])} | {int(passes[-1])} | {obj[0]:.4e} | {obj[-1]:.4e} | "
                     f"{sec[-1]:.1f} | {sec[-1] / max(int(it[-1]), 1):.2f} | {reach} |")
    lines += ["", f"Total wall time {time.perf_counter() - t_start:.0f} s (including the store)."]
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(args.out, "ggn_sketched.md"), "w") as fh:
        fh.write(text + "\n")
    _plot(traces, os.path.join(args.out, "ggn_sketched.png"), f"n = {args.n:,}, p = {p}")
    shutil.rmtree(store, ignore_errors=True)


def _plot(traces, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for label, tr in traces.items():
        it, sec, obj, _ = (np.asarray(c) for c in zip(*tr, strict=True))
        style = "--" if label.startswith("GD") else "-"
        axes[0].semilogy(it, obj, style, marker="." if not label.startswith("GD") else None, label=label)
        axes[1].semilogy(sec, obj, style, label=label)
    axes[0].set_xlabel("iteration")
    axes[1].set_xlabel("seconds")
    finite = np.concatenate([np.asarray([t[2] for t in tr]) for tr in traces.values()])
    finite = finite[np.isfinite(finite)]
    start = max(tr[0][2] for tr in traces.values())
    for ax in axes:
        ax.set_ylim(0.5 * finite.min(), 5 * start)  # a diverging run leaves the plot upwards
        ax.set_ylabel("objective (all rows)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_xlim(-0.5, max(len(tr) for k, tr in traces.items() if not k.startswith("GD")) - 0.5)
    fig.suptitle(f"sketched GGN-SCORE against exact GGN and gradient descent ({title})")
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
