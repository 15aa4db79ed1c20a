"""The benchmark of issue 4: dsketch against the solvers a user would pick instead.

L2-regularised logistic regression, ``L(x) = mean(log(1 + e^{a_i x}) - y_i a_i x) +
l2 ||x||^2 / 2`` without intercept, on five problems written to Zarr first
(:mod:`benchmarks.bench_problems`: ill-conditioned dense, sparse with power-law columns,
well-conditioned dense, high-coherence dense, and a dense 1e6 x 100 problem of covariance
condition 1e4 with l2 = 1e-8).

Solvers (the same objective; scikit-learn and dask-ml take ``C = 1 / (l2 n)``):
dsketch's defaults (the auto solver and curvature), Newton with the auto curvature, exact
Newton, leverage-sketched Newton and Newton-CG on an embedded 2-worker cluster; scipy L-BFGS-B and trust-ncg with exact gradients and Hessian-vector products,
scikit-learn ``LogisticRegression`` (newton-cholesky, lbfgs) and glum
``GeneralizedLinearRegressor`` (its default solver and lbfgs; ``alpha = l2``, see
:func:`glum_alpha`), in memory where the data
fit (``--max-memory-gb``); dask-ml ``LogisticRegression`` (newton, lbfgs, admm) on a
2-worker LocalCluster over the same Zarr store, when dask-ml is installed
(``pip install -e '.[bench]'``): ``normalize=False`` (its default standardises the columns and
so penalises ``std * x``), sparse stores as pydata ``sparse.COO`` chunks, a ladder of
``max_iter`` values (``--daskml-max-iter``, cut by ``--daskml-budget-s``; a fit still running
after ``--daskml-deadline-s`` is stopped by restarting the workers); its newton ignores the
penalty (it solves the unpenalised problem).

For every solver: wall time and passes over A (where countable) to relative suboptimality
``(L - L*) / |L*|`` of 1e-6, 1e-8, 1e-10 (``L*``: the best of a tight exact solve and every
run); peak resident memory of driver and workers, or the error it failed with; a note (what
a peer solves, what stopped it). Medians of ``--repeats`` timed runs. ``--solvers`` keeps
only the rows whose label contains one of its comma-separated parts. Writes
``OUT/benchmark.md`` and ``OUT/benchmark.png``.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
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

from benchmarks.bench_problems import PROBLEMS, ProblemDef, write_benchmark_problem

__all__ = ["PROBLEMS", "ProblemDef", "run_benchmark", "write_benchmark_problem"]

LEVELS = (1e-6, 1e-8, 1e-10)


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
    note: str = ""


def _objective(A: Any, y: np.ndarray, l2: float) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    n = A.shape[0]

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        z = np.asarray(A @ x).ravel()
        f = float(np.mean(np.logaddexp(0.0, z) - y * z)) + 0.5 * l2 * float(x @ x)
        s = 0.5 * (1.0 + np.tanh(0.5 * z))
        return f, np.asarray(A.T @ (s - y)).ravel() / n + l2 * x

    return fun


def _dsketch_runs(spec: Any, pdef: ProblemDef, client: Any, *, persist: bool) -> list[tuple[str, Callable[[], Run]]]:
    """dsketch's rows: its defaults (solver and curvature ``"auto"``, adaptive sizes), Newton
    with the auto curvature (the defaults before the auto solver), exact Newton, the leverage
    sketch and Newton-CG; blocks held in the workers' memory when ``persist``."""
    import dsketch

    def make(label: str, **kw: Any) -> Callable[[], Run]:
        def go() -> Run:
            run = Run(label)
            t0 = time.perf_counter()

            def cb(state: Any) -> None:
                run.trace.append((time.perf_counter() - t0, state.loss, state.n_passes))

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = dsketch.fit(spec, "logistic", model_params={"l2": pdef.l2}, x0="zeros",
                                  solver=dsketch.Solver(kw.get("solver", "newton"), tol=1e-13, max_iter=100),
                                  cluster=dsketch.Cluster(client, persist=persist), callback=cb,
                                  curvature=dsketch.Curvature(**{k: v for k, v in kw.items() if k != "solver"}))
            run.seconds = time.perf_counter() - t0
            run.trace.append((run.seconds, res.fun, res.n_passes))
            curvature, start = res.info.get("sketch"), res.info.get("newton_from", -1)
            run.note = (f"{res.nit} iterations, {res.n_passes} passes over A"
                        + (" (one to load the blocks)" if persist else "")
                        + (f"; curvature: {curvature}" if kw.get("kind") == "auto" else "")
                        + ("" if start == -1 else "; L-BFGS throughout" if start is None
                           else f"; Newton steps from iteration {start}"))
            return run
        return go

    runs = (("dsketch defaults (auto solver, auto curvature, adaptive size)",
             {"kind": "auto", "adaptive": True, "solver": "auto"}),
            ("dsketch Newton (auto curvature, adaptive size)", {"kind": "auto", "adaptive": True}),
            ("dsketch exact Newton", {"kind": "exact"}),
            ("dsketch leverage Newton (adaptive)", {"kind": "leverage", "adaptive": True}),
            ("dsketch Newton-CG (leverage)", {"kind": "leverage", "solver": "newton-cg", "adaptive": False}))
    return [(label, make(label, **kw)) for label, kw in runs]


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

    def glum_run(solver: str) -> Callable[[], Run]:
        def go() -> Run:
            from glum import GeneralizedLinearRegressor

            run = Run(f"glum {solver}")
            t_total = 0.0
            for tol in (1e-4, 1e-6, 1e-8, 1e-10):
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    m = GeneralizedLinearRegressor(family="binomial", alpha=glum_alpha(pdef.l2), l1_ratio=0.0,
                                                   fit_intercept=False, solver=solver, gradient_tol=tol,
                                                   max_iter=1000).fit(A, y)
                dt = time.perf_counter() - t0
                t_total = max(t_total, dt)
                run.trace.append((dt, fun(np.asarray(m.coef_, dtype=float).ravel())[0], float("nan")))
            run.seconds = t_total
            return run
        return go

    runs = [("scipy L-BFGS-B", scipy_run("L-BFGS-B")), ("scipy trust-ncg", scipy_run("trust-ncg")),
            ("scikit-learn newton-cholesky", sk_run("newton-cholesky")), ("scikit-learn lbfgs", sk_run("lbfgs"))]
    if importlib.util.find_spec("glum") is not None:  # the bench extra; skipped with a note otherwise
        runs += [("glum auto", glum_run("auto")), ("glum lbfgs", glum_run("lbfgs"))]
    else:
        print("   glum is not installed (pip install -e '.[bench]'): no glum rows", flush=True)
    return runs


def glum_alpha(l2: float) -> float:
    """glum's ``alpha`` for this benchmark's objective with penalty ``l2``.

    glum (``l1_ratio=0``) minimises ``sum_i s_i d_i / (2 sum_i s_i) + alpha ||x||^2 / 2`` with
    the binomial unit deviance ``d_i = 2 (log(1 + e^{z_i}) - y_i z_i)`` for ``y_i`` in {0, 1}:
    with unit weights its data term is ``mean(log(1 + e^{z_i}) - y_i z_i)``, the benchmark's
    own, so the penalties agree when ``alpha = l2`` (no factor of ``n``, unlike scikit-learn's
    ``C = 1 / (l2 n)``).
    """
    return float(l2)


#: dask-ml ``max_iter`` values, each a fit from zeros; the ladder stops early once a solver's own
#: test ends a fit before ``max_iter`` (a larger ``max_iter`` would return the same coefficients).
DASKML_MAX_ITERS = (5, 20, 100, 300)
#: Seconds a single dask-ml fit of the ladder may be expected to take before the ladder stops.
DASKML_BUDGET_S = 600.0
#: Seconds after which a dask-ml fit still running is stopped (its first one can run for an hour:
#: admm's first 5 iterations on the full-size sparse problem).
DASKML_DEADLINE_S = 4 * DASKML_BUDGET_S


def daskml_settings(max_iters: str | None, budget_s: float | None,
                    deadline_s: float | None) -> tuple[tuple[int, ...], float, float]:
    """The dask-ml ladder, budget and deadline from command-line text (``None``: the
    defaults; the deadline defaults to 4x the budget); ``ValueError`` on bad values."""
    text = ",".join(map(str, DASKML_MAX_ITERS)) if max_iters is None else max_iters
    try:
        ladder = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--daskml-max-iter must be comma-separated integers; got {text!r}") from None
    if not ladder or min(ladder) < 1:
        raise ValueError(f"--daskml-max-iter values must be >= 1; got {text!r}")
    budget = DASKML_BUDGET_S if budget_s is None else float(budget_s)
    deadline = 4 * budget if deadline_s is None else float(deadline_s)
    if not (budget > 0 and deadline > 0):
        raise ValueError("--daskml-budget-s and --daskml-deadline-s must be positive")
    return ladder, budget, deadline


def call_with_deadline(fn: Callable[[], Any], seconds: float, client: Any) -> Any:
    """``fn()``, which computes on ``client``; past ``seconds``, restart the cluster's workers
    (which cancels the computation, so ``fn`` raises and returns) and raise ``TimeoutError``."""
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            out["error"] = exc

    thread = threading.Thread(target=target, name="deadline", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        client.restart()
        thread.join()
        raise TimeoutError(f"still running after {seconds:g} s: stopped (the workers were restarted)")
    if "error" in out:
        raise out["error"]
    return out["value"]

#: The table's note per solver row: for dask-ml, what each solver solves and what stops it, read
#: from the dask-ml 2025.1 / dask-glm 0.4 sources (``dask_ml/linear_model/glm.py``,
#: ``dask_glm/algorithms.py``). Rows not listed get an empty note.
NOTES = {
    "dask-ml newton": "ignores the L2 penalty (dask-ml drops C for newton; dask-glm's newton has no regulariser): "
                      "solves the unpenalised problem; stops when no coefficient changes by more than tol",
    "dask-ml lbfgs": "scipy fmin_l_bfgs_b with pgtol = tol and its default factr = 1e7, which dask-glm does not "
                     "expose: stops once the relative decrease is <= 2.2e-9",
    "dask-ml admm": "dask-ml ignores tol for admm: abstol = reltol = 1e-12 passed instead of dask-glm's 1e-4 / "
                    "1e-2; rho = 1 and the local L-BFGS solves (maxiter 200, default tolerances) are fixed in dask-glm",
}


def _coo_rows(spec: Any, r0: int, r1: int) -> Any:
    """Rows ``[r0, r1)`` of a CSR store as a pydata ``sparse.COO`` (the sparse type dask-glm supports)."""
    import sparse

    from dsketch.store import read_block

    return sparse.COO.from_scipy_sparse(read_block(spec, r0, r1).A)


def daskml_inputs(spec: Any) -> tuple[Any, Any]:
    """``A`` and ``b`` of a problem store as dask arrays that dask-ml / dask-glm accept.

    Parameters
    ----------
    spec : dsketch.store.ProblemSpec
        The problem store.

    Returns
    -------
    X : dask.array.Array of shape (n_samples, n_features)
        Row-chunked, one column block: NumPy chunks read from Zarr for a dense ``A``; for a
        CSR ``A``, pydata ``sparse.COO`` chunks with a ``COO`` meta.
    y : dask.array.Array of shape (n_samples,)
        ``b``, with the row chunks of ``X`` (dask-glm's admm pairs the blocks of ``X`` and ``y``).

    Notes
    -----
    dask-glm handles sparse chunks only as pydata ``sparse`` arrays
    (``dask_glm.utils.is_dask_array_sparse`` tests the meta for ``sparse.SparseArray``). With
    ``scipy.sparse`` chunks, dask's ``mean``/``std`` reductions fail (scipy's ``sum`` takes no
    ``keepdims``; the fallback then indexes a CSR meta: "IndexError: Index dimension must be 1
    or 2. Got 0"), and dask's scipy ``tensordot`` asserts 2-D operands, so ``X.dot(beta)``
    fails for a 1-D ``beta``.
    """
    import dask
    import dask.array as da

    if spec.sparse:
        import sparse

        rows = max(spec.a_chunk_rows, 2**16)
        meta = sparse.COO.from_numpy(np.zeros((0, spec.n_features)))
        parts = [da.from_delayed(dask.delayed(_coo_rows)(spec, r0, min(spec.n_samples, r0 + rows)),
                                 shape=(min(spec.n_samples, r0 + rows) - r0, spec.n_features), dtype=np.float64,
                                 meta=meta)
                 for r0 in range(0, spec.n_samples, rows)]
        X = da.concatenate(parts, axis=0)
    else:
        X = da.from_zarr(os.path.join(spec.path, "A"))
    y = da.from_zarr(os.path.join(spec.path, "b")).rechunk({0: X.chunks[0]})
    return X, y


#: dask-ml's solvers in the benchmark, one row each.
DASKML_SOLVERS = ("newton", "lbfgs", "admm")


def _daskml_runs(spec: Any, pdef: ProblemDef, max_iters: tuple[int, ...] = DASKML_MAX_ITERS,
                 budget_s: float = DASKML_BUDGET_S,
                 deadline_s: float = DASKML_DEADLINE_S) -> list[tuple[str, Callable[[], Run]]]:
    """dask-ml ``LogisticRegression`` on the store, one fit per ``max_iter`` of ``max_iters``.

    dask-ml passes ``lamduh = 1 / C`` to dask-glm, whose loss is a sum over rows
    (``Logistic.loglike``) plus ``lamduh ||x||^2 / 2`` (``L2.f``), so ``C = 1 / (l2 n)`` is
    ``n`` times our objective. dask-glm's default ``normalize=True`` solves on standardised
    columns, which puts the penalty on ``std * x`` (another objective; on sparse chunks it
    fails), so every fit passes ``normalize=False``.

    The ladder stops when a fit returns the coefficients of the previous one (the solver's
    own test ended both before ``max_iter``), or when the next fit, extrapolated linearly in
    ``max_iter`` from the last one, would take more than ``budget_s`` seconds, or when a fit
    is still running after ``deadline_s`` (stopped, the earlier fits kept); the row's note
    says which.
    """
    try:
        from dask_ml.linear_model import LogisticRegression
    except ImportError:
        return []
    from distributed import default_client

    max_iters = tuple(sorted(set(max_iters)))

    def go_factory(solver: str) -> Callable[[], Run]:
        def go() -> Run:
            label = f"dask-ml {solver}"
            run = Run(label, note=NOTES.get(label, ""))
            X, y = daskml_inputs(spec)
            kwargs: dict[str, Any] = {"normalize": False}
            if solver == "admm":
                kwargs.update(abstol=1e-12, reltol=1e-12)
            stop = f"max_iter up to {max_iters[-1]}"
            prev: tuple[int, float, np.ndarray] | None = None  # (max_iter, seconds, coef) of the last fit
            for max_iter in max_iters:
                if prev is not None and prev[1] * max_iter / prev[0] > budget_s:
                    stop = (f"max_iter up to {prev[0]}: {max_iter} would take about "
                            f"{prev[1] * max_iter / prev[0]:.0f} s, over the {budget_s:g} s budget")
                    break
                t0 = time.perf_counter()
                est = LogisticRegression(C=1.0 / (pdef.l2 * spec.n_samples), fit_intercept=False, solver=solver,
                                         max_iter=max_iter, tol=1e-12, solver_kwargs=kwargs)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    try:
                        m = call_with_deadline(functools.partial(est.fit, X, y), deadline_s, default_client())
                    except TimeoutError:
                        stop = f"the fit with max_iter = {max_iter} was stopped after the {deadline_s:g} s deadline"
                        break
                dt = time.perf_counter() - t0
                run.seconds = dt if np.isnan(run.seconds) else max(run.seconds, dt)
                coef = np.asarray(m.coef_).ravel()
                run.trace.append((dt, _store_objective(spec, coef, pdef.l2), float("nan")))
                if prev is not None and np.array_equal(coef, prev[2]):
                    stop = f"its own test stopped it within max_iter = {prev[0]}"
                    break
                prev = (max_iter, dt, coef)
            run.note += f"; {stop}"
            return run
        return go

    return [(f"dask-ml {s}", go_factory(s)) for s in DASKML_SOLVERS]


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
            run = Run(label, error=f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}",
                      note=NOTES.get(label, ""))
            traceback.print_exc()
    run.peak_driver, run.peak_workers = mem.driver, mem.workers
    return run


def _time_to(run: Run, fstar: float, level: float) -> tuple[float, float]:
    for t, f, passes in run.trace:
        if (f - fstar) / abs(fstar) <= level:
            return t, passes
    return float("nan"), float("nan")


def _cell(text: str) -> str:
    """``text`` safe inside a markdown table cell (pipes escaped)."""
    return text.replace("|", "\\|")


def _fmt_time(t: float, passes: float) -> str:
    if not np.isfinite(t):
        return "—"
    return f"{t:.1f} s" + (f" / {int(passes)}" if np.isfinite(passes) else "")


def run_benchmark(out: str, *, scale: float = 1.0, problems: tuple[str, ...] | None = None, repeats: int = 1,
                  max_memory_gb: float = 6.0, n_workers: int = 2, seed: int = 0, keep_stores: bool = False,
                  daskml_max_iters: tuple[int, ...] = DASKML_MAX_ITERS,
                  daskml_budget_s: float = DASKML_BUDGET_S, daskml_deadline_s: float = DASKML_DEADLINE_S,
                  solvers: tuple[str, ...] | None = None) -> str:
    """Run the benchmark; return the markdown table (also written to ``out``).

    ``solvers`` keeps only the rows whose label contains one of its strings (any case;
    None: every row); the dask-ml fits are not prepared when none of them is kept.

    ``daskml_max_iters`` is the ladder of dask-ml ``max_iter`` values (one fit each, from
    zeros), cut where one fit would take more than ``daskml_budget_s`` seconds; a fit still
    running after ``daskml_deadline_s`` is stopped.
    """
    from distributed import Client

    from dsketch.engine.client import start_local_cluster
    from dsketch.store import read_block

    os.makedirs(out, exist_ok=True)
    chosen = [p for p in PROBLEMS if problems is None or p.name in problems]
    lines = [f"L2 logistic regression, no intercept; scale {scale:g}; {n_workers} workers; cells: median seconds "
             "(of the timed repeats) / passes over A to the relative suboptimality; '—' not reached. dask-ml "
             "runs with normalize=False: its default standardises the columns and so penalises std-scaled "
             "coefficients, another objective. Where A fits in memory (--max-memory-gb) the in-memory peers "
             "get it loaded (untimed) and dsketch holds its row blocks in the workers' memory (loaded from the "
             "store inside its timed fit); otherwise dsketch streams every pass from the store. Times are wall "
             "seconds from the start of each fit, on the same 2 cores, one solver at a time.", ""]
    traces: dict[str, list[Run]] = {}
    for base in chosen:
        pdef = ProblemDef(base.name, max(1000, int(base.n * scale)), base.d, base.kind, base.density, base.l2)
        store = os.path.join(out, f"{pdef.name}.zarr")
        with start_local_cluster(n_workers=n_workers) as cluster, Client(cluster) as client:
            t0 = time.perf_counter()
            spec = write_benchmark_problem(store, pdef, client, seed=seed)
            print(f"== {pdef.name}: {pdef.n} x {pdef.d}, nnz {spec.nnz}, written in "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
            runs: list[Run] = []
            mem_gb = (spec.nnz * 12 if spec.sparse else spec.nnz * 8) / 2**30
            # where A fits in memory the in-memory peers hold it, and dsketch holds its blocks in
            # the workers' memory (loaded from the store inside the timed fit); else it streams
            jobs = _dsketch_runs(spec, pdef, client, persist=mem_gb <= max_memory_gb)
            A = y = None
            if mem_gb <= max_memory_gb:
                blk = read_block(spec, 0, spec.n_samples)
                A, y = blk.A, blk.b
                jobs += _memory_runs(A, y, pdef)
            if select_runs([(f"dask-ml {s}", None) for s in DASKML_SOLVERS], solvers, strict=False):
                jobs += _daskml_runs(spec, pdef, daskml_max_iters, daskml_budget_s, daskml_deadline_s)
            jobs = select_runs(jobs, solvers)
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
                  "| solver | 1e-6 | 1e-8 | 1e-10 | best suboptimality | peak RSS driver | peak RSS worker | error "
                  "| note |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in runs:
            cells = [_fmt_time(*_time_to(r, fstar, lv)) for lv in LEVELS]
            best = min(((f - fstar) / abs(fstar) for _, f, _ in r.trace if np.isfinite(f)), default=float("nan"))
            lines.append(f"| {r.solver} | {' | '.join(cells)} | {best:.1e} | {r.peak_driver / 2**30:.2f} GiB | "
                         f"{r.peak_workers / 2**30:.2f} GiB | {_cell(r.error or '')} | {_cell(r.note)} |")
        lines.append("")
        if not keep_stores:
            shutil.rmtree(store, ignore_errors=True)
        _write_outputs(out, lines, traces)  # after every problem: a stopped run keeps what it measured
    text = "\n".join(lines)
    return text


def select_runs(jobs: list[tuple[str, Any]], solvers: tuple[str, ...] | None, *,
                strict: bool = True) -> list[tuple[str, Any]]:
    """The jobs whose label contains one of ``solvers`` (any case); all for None. With
    ``strict``, a string that matches no label is an error that lists the labels."""
    if solvers is None:
        return jobs
    keys = [k.lower() for k in solvers]
    unmatched = [k for k in keys if not any(k in label.lower() for label, _ in jobs)]
    if strict and unmatched:
        raise ValueError(f"--solvers {unmatched} match(es) no benchmark row; rows: {[label for label, _ in jobs]}")
    return [(label, go) for label, go in jobs if any(k in label.lower() for k in keys)]


def _write_outputs(out: str, lines: list[str], traces: dict[str, list[Run]]) -> None:
    """The table, the plot and the traces of the problems run so far."""
    with open(os.path.join(out, "benchmark.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    _plot(traces, os.path.join(out, "benchmark.png"))
    with open(os.path.join(out, "benchmark.json"), "w") as fh:
        json.dump({k: [{"solver": r.solver, "trace": r.trace, "error": r.error, "note": r.note} for r in v]
                   for k, v in traces.items()}, fh)


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
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.split("\n", 1)[0])
    ap.add_argument("--out", default=os.path.join("results", "benchmark"))
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the full row counts")
    ap.add_argument("--problems", default=",".join(p.name for p in PROBLEMS))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-memory-gb", type=float, default=6.0,
                    help="largest A loaded into driver memory for the in-memory peers")
    ap.add_argument("--keep-stores", action="store_true")
    ap.add_argument("--daskml-max-iter", default=None,
                    help="comma-separated ladder of dask-ml max_iter values, one fit each (default 5,20,100,300)")
    ap.add_argument("--daskml-budget-s", type=float, default=None,
                    help="skip the dask-ml fits predicted to take longer than this many seconds (default 600)")
    ap.add_argument("--daskml-deadline-s", type=float, default=None,
                    help="stop a dask-ml fit still running after this many seconds (default: 4 x the budget)")
    ap.add_argument("--solvers", default=None,
                    help="comma-separated parts of row labels to run, e.g. 'defaults,exact Newton,"
                         "newton-cholesky' (default: every row)")
    args = ap.parse_args(argv)
    names = tuple(x for x in args.problems.split(",") if x)
    unknown = sorted(set(names) - {p.name for p in PROBLEMS})
    if unknown:
        ap.error(f"unknown benchmark problem(s) {unknown}; valid: {[p.name for p in PROBLEMS]}")
    if not args.scale > 0:
        ap.error(f"--scale must be positive; got {args.scale}")
    try:
        ladder, budget, deadline = daskml_settings(args.daskml_max_iter, args.daskml_budget_s, args.daskml_deadline_s)
    except ValueError as exc:
        ap.error(str(exc))
    print(run_benchmark(args.out, scale=args.scale, problems=names,
                        repeats=args.repeats, max_memory_gb=args.max_memory_gb, keep_stores=args.keep_stores,
                        daskml_max_iters=ladder, daskml_budget_s=budget, daskml_deadline_s=deadline,
                        solvers=None if args.solvers is None else tuple(x for x in args.solvers.split(",") if x)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
