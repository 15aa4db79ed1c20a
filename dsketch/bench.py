"""The benchmark of issue 4: dsketch against the solvers a user would pick instead.

L2-regularised logistic regression, ``L(x) = mean(log(1 + e^{a_i x}) - y_i a_i x) +
l2 ||x||^2 / 2`` without intercept, on four problems written to Zarr first:

* ``ill-dense``: dense, columns AR(1)-correlated (rho = 0.985), Hessian condition number
  of order 1e4;
* ``sparse``: CSR, 0.5% density, power-law column frequencies (as text or count data);
* ``well-dense``: dense, independent standard normal columns;
* ``coherent``: dense, a few rows a thousand times larger than the rest (high leverage).

Solvers (the same objective; scikit-learn and dask-ml take ``C = 1 / (l2 n)``):
dsketch exact Newton, leverage-sketched Newton and Newton-CG on an embedded 2-worker
cluster; scipy L-BFGS-B and trust-ncg with exact gradients and Hessian-vector products,
and scikit-learn ``LogisticRegression`` (newton-cholesky, lbfgs), in memory where the data
fit (``--max-memory-gb``); dask-ml ``LogisticRegression`` (newton, lbfgs, admm) on a
2-worker LocalCluster over the same Zarr store, when dask-ml is installed
(``pip install -e '.[bench]'``).

For every solver: the wall time and the passes over A (where countable) to reach relative
suboptimality ``(L - L*) / |L*|`` of 1e-6, 1e-8 and 1e-10, where ``L*`` is the best value
of a tight exact solve and every solver's run; peak resident memory of the driver and of
the workers; or the error it failed with. Timed runs are repeated (``--repeats``) and the
median reported. Writes ``OUT/benchmark.md`` and ``OUT/benchmark.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

LEVELS = (1e-6, 1e-8, 1e-10)


# ---------------------------------------------------------------------------- problems
@dataclass(frozen=True)
class ProblemDef:
    """A benchmark problem at full size (scaled by ``--scale``)."""

    name: str
    n: int
    d: int
    kind: str  # "ill", "sparse", "well", "coherent"
    density: float = 1.0
    l2: float = 1e-6


PROBLEMS = (
    ProblemDef("ill-dense", 2_000_000, 500, "ill"),
    ProblemDef("sparse", 5_000_000, 2000, "sparse", density=0.005),
    ProblemDef("well-dense", 2_000_000, 100, "well", l2=1e-4),
    ProblemDef("coherent", 2_000_000, 50, "coherent"),
)


def _rng(seed: int, k: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, k, stream])


def _block(pdef: ProblemDef, seed: int, k: int, n_rows: int, w_true: np.ndarray) -> tuple[Any, np.ndarray]:
    rng = _rng(seed, k, 1)
    d = pdef.d
    if pdef.kind == "sparse":
        p = 1.0 / np.arange(1, d + 1) ** 1.1
        p /= p.sum()
        counts = rng.poisson(pdef.density * d, size=n_rows).clip(1, d)
        rows = np.repeat(np.arange(n_rows), counts)
        cols = rng.choice(d, size=rows.size, p=p)
        vals = np.log1p(rng.poisson(2.0, size=rows.size) + 1.0)
        A = sp.csr_matrix((vals, (rows, cols)), shape=(n_rows, d))
        A.sum_duplicates()
        A.sort_indices()
    else:
        Z = rng.standard_normal((n_rows, d))
        if pdef.kind == "ill":
            rho, s = 0.985, np.sqrt(1 - 0.985**2)
            for j in range(1, d):
                Z[:, j] = rho * Z[:, j - 1] + s * Z[:, j]
        if pdef.kind == "coherent":
            Z[_rng(seed, k, 3).random(n_rows) < 1e-4] *= 1e3
        A = Z / np.sqrt(d)
    eta = np.asarray(A @ w_true).ravel()
    y = (_rng(seed, k, 2).random(n_rows) < 1.0 / (1.0 + np.exp(-eta))).astype(np.float64)
    return A, y


def _write_task(builder: Any, pdef: ProblemDef, seed: int, k: int, r0: int, n_rows: int, w_true: np.ndarray,
                offset: int | None) -> Any:
    A, y = _block(pdef, seed, k, n_rows, w_true)
    builder.write_vector("b", r0, y)
    if sp.issparse(A):
        return builder.write_csr_rows(r0, A.indptr, A.indices, A.data, offset)
    builder.write_dense_rows(r0, A)
    return None


def _nnz_task(pdef: ProblemDef, seed: int, k: int, n_rows: int, w_true: np.ndarray) -> int:
    return int(_block(pdef, seed, k, n_rows, w_true)[0].nnz)


def write_benchmark_problem(path: str, pdef: ProblemDef, client: Any, *, seed: int = 0,
                            block_rows: int = 2**16) -> Any:
    """Generate ``pdef`` block by block on the workers and write it to ``path`` (atomic)."""
    from dsketch.store import ProblemBuilder

    w_true = _rng(seed, 2**31, 0).standard_normal(pdef.d)
    bounds = [(r0, min(r0 + block_rows, pdef.n)) for r0 in range(0, pdef.n, block_rows)]
    sparse = pdef.kind == "sparse"
    offsets = [0] * (len(bounds) + 1)
    if sparse:  # the blocks are generated twice: once to count, once to write (cheap next to a fit)
        counts = client.gather([client.submit(_nnz_task, pdef, seed, k, r1 - r0, w_true, pure=False)
                                for k, (r0, r1) in enumerate(bounds)])
        offsets = np.concatenate([[0], np.cumsum(counts)]).tolist()
    builder = ProblemBuilder.create(path, n_samples=pdef.n, n_features=pdef.d, sparse=sparse,
                                    nnz=int(offsets[-1]) if sparse else None, chunk_rows=block_rows, overwrite=True,
                                    attrs={"dsketch": {"generator": "dsketch bench", "problem": pdef.name,
                                                       "seed": seed}})
    try:
        edges = client.gather([client.submit(_write_task, builder, pdef, seed, k, r0, r1 - r0, w_true,
                                             int(offsets[k]) if sparse else None, pure=False)
                               for k, (r0, r1) in enumerate(bounds)])
        if sparse:
            builder.write_edges(edges)
        return builder.commit()
    except BaseException:
        builder.abort()
        raise


# ---------------------------------------------------------------------------- memory
class PeakRSS:
    """Poll the resident memory of this process and of the workers of ``client``."""

    def __init__(self, client: Any = None, period: float = 0.2) -> None:
        self.client, self.period = client, period
        self.driver = 0
        self.workers = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            self.driver = max(self.driver, int(me.memory_info().rss))
            if self.client is not None:
                try:
                    rss = self.client.run(lambda: __import__("psutil").Process().memory_info().rss)
                    self.workers = max(self.workers, max(rss.values(), default=0))
                except Exception:  # noqa: BLE001 - a busy or restarting worker must not stop the sampler
                    pass
            self._stop.wait(self.period)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ---------------------------------------------------------------------------- runs
@dataclass
class Run:
    """One solver on one problem: a trace of (seconds, objective, passes or nan)."""

    solver: str
    trace: list[tuple[float, float, float]] = field(default_factory=list)
    seconds: float = float("nan")
    error: str | None = None
    peak_driver: int = 0
    peak_workers: int = 0


def _objective(A: Any, y: np.ndarray, l2: float) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    n = A.shape[0]

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        z = np.asarray(A @ x).ravel()
        f = float(np.mean(np.logaddexp(0.0, z) - y * z)) + 0.5 * l2 * float(x @ x)
        s = 0.5 * (1.0 + np.tanh(0.5 * z))
        return f, np.asarray(A.T @ (s - y)).ravel() / n + l2 * x

    return fun


def _dsketch_runs(spec: Any, pdef: ProblemDef, client: Any) -> list[tuple[str, Callable[[], Run]]]:
    import dsketch

    def make(label: str, **kw: Any) -> Callable[[], Run]:
        def go() -> Run:
            run = Run(label)
            t0 = time.perf_counter()

            def cb(state: Any) -> None:
                run.trace.append((time.perf_counter() - t0, state.loss, state.n_passes))

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = dsketch.fit(spec, "logistic", model_params={"l2": pdef.l2}, x0="zeros", tol=1e-13,
                                  max_iter=100, client=client, callback=cb, **kw)
            run.seconds = time.perf_counter() - t0
            run.trace.append((run.seconds, res.fun, res.n_passes))
            return run
        return go

    return [("dsketch exact Newton", make("dsketch exact Newton", sketch="exact")),
            ("dsketch sketched Newton (leverage, adaptive)", make("dsketch sketched Newton (leverage, adaptive)",
                                                                 sketch="leverage", adaptive_sketch=True)),
            ("dsketch Newton-CG (leverage)", make("dsketch Newton-CG (leverage)", sketch="leverage",
                                                  solver="newton-cg"))]


def _memory_runs(A: Any, y: np.ndarray, pdef: ProblemDef) -> list[tuple[str, Callable[[], Run]]]:
    import scipy.optimize as so
    from sklearn.linear_model import LogisticRegression

    fun = _objective(A, y, pdef.l2)
    n = A.shape[0]

    def scipy_run(method: str) -> Callable[[], Run]:
        def go() -> Run:
            run = Run(f"scipy {method}")
            t0 = time.perf_counter()
            calls = [0]

            def f(x: np.ndarray) -> tuple[float, np.ndarray]:
                calls[0] += 1
                val, g = fun(x)
                run.trace.append((time.perf_counter() - t0, val, 2.0 * calls[0]))
                return val, g

            def hessp(x: np.ndarray, p: np.ndarray) -> np.ndarray:
                z = np.asarray(A @ x).ravel()
                s = 0.5 * (1.0 + np.tanh(0.5 * z))
                return np.asarray(A.T @ (s * (1 - s) * np.asarray(A @ p).ravel())).ravel() / n + pdef.l2 * p

            opts = {"maxiter": 200, "gtol": 1e-14} if method == "trust-ncg" else {
                "maxiter": 2000, "ftol": 1e-16, "gtol": 1e-14}
            so.minimize(f, np.zeros(A.shape[1]), jac=True, method=method,
                        hessp=hessp if method == "trust-ncg" else None, options=opts)
            run.seconds = time.perf_counter() - t0
            return run
        return go

    def sk_run(solver: str) -> Callable[[], Run]:
        def go() -> Run:
            run = Run(f"scikit-learn {solver}")
            t_total = 0.0
            for tol in (1e-4, 1e-6, 1e-8):
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    m = LogisticRegression(C=1.0 / (pdef.l2 * n), fit_intercept=False, solver=solver, tol=tol,
                                           max_iter=2000).fit(A, y)
                dt = time.perf_counter() - t0
                t_total = max(t_total, dt)
                run.trace.append((dt, fun(m.coef_.ravel())[0], float("nan")))
            run.seconds = t_total
            return run
        return go

    return [("scipy L-BFGS-B", scipy_run("L-BFGS-B")), ("scipy trust-ncg", scipy_run("trust-ncg")),
            ("scikit-learn newton-cholesky", sk_run("newton-cholesky")), ("scikit-learn lbfgs", sk_run("lbfgs"))]


def _daskml_runs(spec: Any, pdef: ProblemDef) -> list[tuple[str, Callable[[], Run]]]:
    try:
        from dask_ml.linear_model import LogisticRegression
    except ImportError:
        return []
    import dask.array as da

    def go_factory(solver: str) -> Callable[[], Run]:
        def go() -> Run:
            run = Run(f"dask-ml {solver}")
            if spec.sparse:
                import zarr

                g = zarr.open_group(spec.path, mode="r")
                rows = max(spec.a_chunk_rows, 2**16)

                def part(r0: int) -> sp.csr_matrix:
                    from dsketch.store import read_block

                    return read_block(spec, r0, min(spec.n_samples, r0 + rows)).A

                parts = [da.from_delayed(__import__("dask").delayed(part)(r0),
                                         shape=(min(spec.n_samples, r0 + rows) - r0, spec.n_features),
                                         dtype=float, meta=sp.csr_matrix((0, 0)))
                         for r0 in range(0, spec.n_samples, rows)]
                X = da.concatenate(parts, axis=0)
                y = da.from_zarr(g["b"])
            else:
                X = da.from_zarr(os.path.join(spec.path, "A"))
                y = da.from_zarr(os.path.join(spec.path, "b"))
            t_total = 0.0
            for max_iter in (5, 20, 100):
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    m = LogisticRegression(C=1.0 / (pdef.l2 * spec.n_samples), fit_intercept=False, solver=solver,
                                           max_iter=max_iter, tol=1e-12).fit(X, y)
                dt = time.perf_counter() - t0
                t_total = max(t_total, dt)
                coef = np.asarray(m.coef_).ravel()
                run.trace.append((dt, _store_objective(spec, coef, pdef.l2), float("nan")))
            run.seconds = t_total
            return run
        return go

    return [(f"dask-ml {s}", go_factory(s)) for s in ("newton", "lbfgs", "admm")]


def _store_objective(spec: Any, x: np.ndarray, l2: float) -> float:
    """The objective at ``x``, computed block by block from the store (reference values)."""
    from dsketch.store import read_block

    total, step = 0.0, max(spec.a_chunk_rows, 2**16)
    for r0 in range(0, spec.n_samples, step):
        blk = read_block(spec, r0, min(spec.n_samples, r0 + step))
        z = np.asarray(blk.A @ x).ravel()
        total += float(np.sum(np.logaddexp(0.0, z) - blk.b * z))
    return total / spec.n_samples + 0.5 * l2 * float(x @ x)


def _measure(go: Callable[[], Run], label: str, client: Any) -> Run:
    with PeakRSS(client) as mem:
        try:
            run = go()
        except Exception as exc:  # noqa: BLE001 - a failing peer is a result of the benchmark
            run = Run(label, error=f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}")
            traceback.print_exc()
    run.peak_driver, run.peak_workers = mem.driver, mem.workers
    return run


def _time_to(run: Run, fstar: float, level: float) -> tuple[float, float]:
    for t, f, passes in run.trace:
        if (f - fstar) / abs(fstar) <= level:
            return t, passes
    return float("nan"), float("nan")


def _fmt_time(t: float, passes: float) -> str:
    if not np.isfinite(t):
        return "—"
    return f"{t:.1f} s" + (f" / {int(passes)}" if np.isfinite(passes) else "")


def run_benchmark(out: str, *, scale: float = 1.0, problems: tuple[str, ...] | None = None, repeats: int = 1,
                  max_memory_gb: float = 6.0, n_workers: int = 2, seed: int = 0, keep_stores: bool = False) -> str:
    """Run the benchmark; return the markdown table (also written to ``out``)."""
    from distributed import Client, LocalCluster

    from dsketch.store import read_block

    os.makedirs(out, exist_ok=True)
    chosen = [p for p in PROBLEMS if problems is None or p.name in problems]
    lines = [f"L2 logistic regression, no intercept; scale {scale:g}; {n_workers} workers; cells: median seconds "
             "(of the timed repeats) / passes over A to the relative suboptimality; '—' not reached.", ""]
    traces: dict[str, list[Run]] = {}
    for base in chosen:
        pdef = ProblemDef(base.name, max(1000, int(base.n * scale)), base.d, base.kind, base.density, base.l2)
        store = os.path.join(out, f"{pdef.name}.zarr")
        with LocalCluster(n_workers=n_workers, threads_per_worker=1, host="127.0.0.1",
                          dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as client:
            t0 = time.perf_counter()
            spec = write_benchmark_problem(store, pdef, client, seed=seed)
            print(f"== {pdef.name}: {pdef.n} x {pdef.d}, nnz {spec.nnz}, written in "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
            runs: list[Run] = []
            jobs = _dsketch_runs(spec, pdef, client)
            mem_gb = (spec.nnz * 12 if spec.sparse else spec.nnz * 8) / 2**30
            A = y = None
            if mem_gb <= max_memory_gb:
                blk = read_block(spec, 0, spec.n_samples)
                A, y = blk.A, blk.b
                jobs += _memory_runs(A, y, pdef)
            jobs += _daskml_runs(spec, pdef)
            for label, go in jobs:
                print(f"   {label} ...", flush=True)
                reps = [_measure(go, label, client) for _ in range(max(1, repeats))]
                ok = [r for r in reps if r.error is None]
                best = ok[len(ok) // 2] if ok else reps[0]
                if ok:  # median by total seconds
                    ok.sort(key=lambda r: r.seconds)
                    best = ok[len(ok) // 2]
                runs.append(best)
            del A, y
        values = [f for r in runs for _, f, _ in r.trace if np.isfinite(f)]
        fstar = min(values)
        traces[pdef.name] = runs
        lines += [f"### {pdef.name} (n = {pdef.n:,}, d = {pdef.d}, nnz = {spec.nnz:,}, l2 = {pdef.l2:g}; "
                  f"L* = {fstar:.15g})", "",
                  "| solver | 1e-6 | 1e-8 | 1e-10 | best suboptimality | peak RSS driver | peak RSS worker | error |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in runs:
            cells = [_fmt_time(*_time_to(r, fstar, lv)) for lv in LEVELS]
            best = min(((f - fstar) / abs(fstar) for _, f, _ in r.trace if np.isfinite(f)), default=float("nan"))
            lines.append(f"| {r.solver} | {' | '.join(cells)} | {best:.1e} | {r.peak_driver / 2**30:.2f} GiB | "
                         f"{r.peak_workers / 2**30:.2f} GiB | {r.error or ''} |")
        lines.append("")
        if not keep_stores:
            shutil.rmtree(store, ignore_errors=True)
    text = "\n".join(lines)
    with open(os.path.join(out, "benchmark.md"), "w") as fh:
        fh.write(text + "\n")
    _plot(traces, os.path.join(out, "benchmark.png"))
    with open(os.path.join(out, "benchmark.json"), "w") as fh:
        json.dump({k: [{"solver": r.solver, "trace": r.trace, "error": r.error} for r in v]
                   for k, v in traces.items()}, fh)
    return text


def _plot(traces: dict[str, list[Run]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = max(1, len(traces))
    fig, axes = plt.subplots(1, k, figsize=(5 * k, 4), squeeze=False, constrained_layout=True)
    for ax, (name, runs) in zip(axes[0], traces.items(), strict=False):
        fstar = min(f for r in runs for _, f, _ in r.trace if np.isfinite(f))
        for r in runs:
            pts = [(t, max((f - fstar) / abs(fstar), 1e-16)) for t, f, _ in r.trace if np.isfinite(f)]
            if pts:
                ax.loglog(*zip(*sorted(pts), strict=True), "o-", ms=3, label=r.solver)
        ax.set_title(name)
        ax.set_xlabel("seconds")
        ax.set_ylabel("(L - L*) / |L*|")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="dsketch bench", description=__doc__.split("\n", 1)[0])
    ap.add_argument("--out", default=os.path.join("results", "benchmark"))
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the full row counts")
    ap.add_argument("--problems", default=",".join(p.name for p in PROBLEMS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-memory-gb", type=float, default=6.0,
                    help="largest A loaded into driver memory for the in-memory peers")
    ap.add_argument("--keep-stores", action="store_true")
    args = ap.parse_args(argv)
    print(run_benchmark(args.out, scale=args.scale, problems=tuple(args.problems.split(",")),
                        repeats=args.repeats, max_memory_gb=args.max_memory_gb, keep_stores=args.keep_stores))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
