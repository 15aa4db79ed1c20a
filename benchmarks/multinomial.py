"""Multinomial logistic regression: dsketch's Newton-CG on a Zarr store against scikit-learn (issue 16).

Every solver minimises the same objective, without intercept,

    f(X) = mean_i [logsumexp(a_i X) - (a_i X)_{y_i}] + (l2 / 2) ||X||^2,   X of size d x K,

scikit-learn through ``C = 1 / (l2 n)``. Problems (``--scale`` divides the rows,
``--dscale`` the columns; the full size is ``--scale 1 --dscale 1``):

* ``dense_200``: dense 1e6 x 200, standard normal entries, ``l2 = 1e-6``;
* ``sparse_2000``: CSR 2e6 x 2000, 0.5% non-zeros (standard normal values), ``l2 = 1e-5``;

each with K = 10 and K = 50 classes (``--classes``): labels drawn from the softmax of
``A X_true`` with ``X_true`` standard normal over ``sqrt(nnz per row)``.

Problem ``dense_ill_200`` is ``dense_200`` with correlated features: ``A = (G * s) U^T``
with ``G`` standard normal, ``s = logspace(0, -2, d)`` and ``U`` a random rotation (feature
covariance condition number 1e4, as in ``benchmarks/glm_peers.py``), true coefficients
``U (Z / s) / sqrt(d)``: the case where first-order methods need hundreds of iterations.

Solvers: scikit-learn ``LogisticRegression`` with ``lbfgs`` and ``newton-cholesky`` (the
latter only where its dK x dK Hessian takes at most ``--hessian-gib``), both on the arrays
in memory; ``dsketch.fit`` with its defaults (solver and curvature ``"auto"``: L-BFGS first,
Newton-CG once L-BFGS contracts slowly) on the arrays and on the store written beforehand
(the write untimed; the fit runs on threads of this process, reading included); and
dsketch's Newton-CG on the store with the block-diagonal preconditioner (``dsketch
Newton-CG block``; exact K diagonal Grams) and, where ``dK`` is at most ``--full-max``, the
full sampled-rows Hessian (``dsketch Newton-CG full``: uniform sampling of ``--full-rows``
rows). glum, which has no multinomial model, is timed one-vs-rest (``glum one-vs-rest``:
K binary logistic fits with the same ``l2``, its matrix converted once): another model,
whose coefficients are scored by the multinomial objective like the others' and never
reach its optimum; only where ``--solvers`` names it, since it takes K fits. The time of a fit is wall-clock seconds, and the time to the target the seconds until
its objective first came within 1e-8 of the best (scikit-learn's lbfgs: from its objective
evaluations, recorded by wrapping ``scipy.optimize.minimize`` inside scikit-learn; dsketch:
from its history); whether it reached relative suboptimality
``(f - f*) / |f*| <= 1e-8`` is judged here with ``f*`` the smallest objective any fit
reached. Peak driver memory is the peak of this process's traced allocations
(``tracemalloc``: NumPy arrays and Python objects) during a second run of the same fit: the
timed run is not traced, as tracing every allocation slows a fit in proportion to the
allocations it makes (``--no-memory`` skips the second run).

Run from the repository root::

    python benchmarks/multinomial.py [--scale 1] [--dscale 1] [--classes 10 50]
        [--problems dense_200 dense_ill_200 sparse_2000] [--solvers 'sklearn lbfgs' 'dsketch defaults']
        [--repeats 1] [--no-memory] [--traces] [--peer-read] [--warm-memory GIB]
        [--out docs/reproductions/multinomial.md]

``--peer-read`` adds a row with the seconds that reading the store into NumPy / SciPy arrays
with zarr takes: the in-memory peers' times leave it out (their arrays are made beforehand),
while dsketch's fits on the store include their own reading.

``--warm-memory GIB`` touches and frees that much memory before every timed run (untimed):
on a virtual machine whose host takes freed memory back within seconds, a fit that
allocates its data (dsketch on a store) otherwise pays a first touch of memory several
times dearer than that of memory the process freed just before, which a fit handed arrays
made beforehand does not.

``--compare-preconditioners`` instead fits dsketch alone in memory (threads, exact curvature)
with each preconditioner, to show where each wins.

Prints a Markdown table and writes it, with the date, commit, cores and command, to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import sys
import tempfile
import time
import tracemalloc
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp
from scipy.special import logsumexp, softmax

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from benchmarks.glm_peers import commit  # noqa: E402

OUT = ROOT / "docs" / "reproductions" / "multinomial.md"
TARGET = 1e-8
#: glum's row: K binary fits (glum has no multinomial model), run only where named.
OVR = "glum one-vs-rest"
#: The row of ``--peer-read``: reading the store into memory with zarr, timed like a fit.
READ = "zarr read of the store (an in-memory peer's first step)"
PROBLEMS = {"dense_200": (1_000_000, 200, 1e-6, None), "dense_ill_200": (1_000_000, 200, 1e-6, None),
            "sparse_2000": (2_000_000, 2000, 1e-5, 0.005)}
#: The covariance condition number of ``dense_ill_200``'s features.
ILL_CONDITION = 1e4


def objective(A: Any, y: np.ndarray, X: np.ndarray, l2: float) -> float:
    E = np.asarray(A @ X)
    return float(np.mean(logsumexp(E, axis=1) - E[np.arange(y.size), y.astype(int)])) + 0.5 * l2 * float(
        np.sum(X * X))


def make_problem(name: str, k: int, scale: int, dscale: int, seed: int = 0) -> tuple[Any, np.ndarray, float]:
    n0, d0, l2, density = PROBLEMS[name]
    n, d = max(n0 // scale, 10), max(d0 // dscale, 2)
    rng = np.random.default_rng(seed)
    if density is None:
        A: Any = rng.standard_normal((n, d))
        per_row = d
        if name == "dense_ill_200":  # A = (G * sv) U^T: singular values sv of the feature covariance's root
            from scipy.stats import ortho_group

            sv = np.logspace(0, -0.5 * np.log10(ILL_CONDITION), d)
            U = ortho_group.rvs(d, random_state=seed)
            A = (A * sv) @ U.T
            X_true = U @ (rng.standard_normal((d, k)) / sv[:, None]) / np.sqrt(d)
            P = softmax(A @ X_true, axis=1)
            y = np.minimum((np.cumsum(P, axis=1) < rng.random(n)[:, None]).sum(axis=1), k - 1).astype(np.float64)
            return A, y, l2
    else:
        counts = rng.binomial(d, density * dscale if dscale > 1 else density, size=n)  # same nnz a row
        indptr = np.concatenate([[0], np.cumsum(counts)])
        indices = rng.integers(0, d, size=int(indptr[-1]))
        A = sp.csr_matrix((rng.standard_normal(indices.size), indices, indptr), shape=(n, d))
        A.sum_duplicates()
        A.sort_indices()
        per_row = max(A.nnz / n, 1.0)
    P = softmax(np.asarray(A @ (rng.standard_normal((d, k)) / np.sqrt(per_row))), axis=1)
    y = np.minimum((np.cumsum(P, axis=1) < rng.random(n)[:, None]).sum(axis=1), k - 1).astype(np.float64)
    return A, y, l2


@dataclass
class Row:
    problem: str
    solver: str
    seconds: float = float("nan")
    peak_mib: float = float("nan")
    nit: int | None = None
    passes: int | None = None
    f: float = float("nan")
    note: str = ""
    #: ``(seconds, [(seconds, objective) along the fit])`` of each timed run (an empty list:
    #: only the end is known)
    runs: list[tuple[float, list[tuple[float, float]]]] = field(default_factory=list)

    @property
    def traced(self) -> bool:
        return any(trace for _, trace in self.runs)

    def to_target(self, best: float) -> float:
        """Median over the runs of the seconds until the objective first came within
        :data:`TARGET` of ``best`` (the whole fit's seconds where no trace was recorded; NaN
        where it never did)."""
        if self.f - best > TARGET * abs(best):
            return float("nan")
        hits = [next((t for t, f in trace if f - best <= TARGET * abs(best)), float("nan")) if trace else sec
                for sec, trace in self.runs]
        return float(np.median(hits)) if hits else float("nan")


#: ``(seconds since the fit started, objective)`` at every objective evaluation of the fit
#: running now (filled by :class:`_Recorder` for scikit-learn's lbfgs, from the history for
#: dsketch), from which the table reads the time each fit first came within 1e-8 of the best.
TRACE: list[tuple[float, float]] = []


class _Recorder:
    """Stands in for ``scipy.optimize`` inside scikit-learn's logistic module: its
    ``minimize`` wraps the objective so that every evaluation's value and time go to
    :data:`TRACE` (scikit-learn's lbfgs objective with ``C = 1 / (l2 n)`` is this script's
    :func:`objective`: the mean loss plus ``l2 / 2 ||X||^2``)."""

    def __init__(self, module: Any, t0: float) -> None:
        self.module, self.t0 = module, t0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.module, name)

    def minimize(self, fun: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        def recorded(w: np.ndarray, *a: Any) -> Any:
            out = fun(w, *a)
            TRACE.append((time.perf_counter() - self.t0, float(out[0])))
            return out

        return self.module.minimize(recorded, *args, **kw)


def sklearn_fit(A: Any, y: np.ndarray, l2: float, solver: str) -> tuple[np.ndarray, int, None]:
    from scipy import optimize
    from sklearn.linear_model import LogisticRegression, _logistic

    m = LogisticRegression(C=1.0 / (l2 * y.size), fit_intercept=False, solver=solver, tol=1e-10, max_iter=100_000)
    _logistic.optimize = _Recorder(optimize, time.perf_counter())  # type: ignore[assignment]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m.fit(A, y)
    finally:
        _logistic.optimize = optimize  # type: ignore[assignment]
    return m.coef_.T, int(m.n_iter_[0]), None


def glum_one_vs_rest(A: Any, y: np.ndarray, l2: float, k: int) -> tuple[np.ndarray, int, None]:
    """K binary L2 logistic regressions by glum, class c against the rest (glum's objective
    ``mean logloss + l2 / 2 ||w||^2``, the binary counterpart of this script's); its matrix
    type made once. Returns the ``d x K`` coefficients and glum's iterations summed."""
    import glum
    import tabmat

    X = tabmat.SparseMatrix(A) if sp.issparse(A) else tabmat.DenseMatrix(np.asarray(A))
    W, its = np.empty((A.shape[1], k)), 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for c in range(k):
            m = glum.GeneralizedLinearRegressor(family="binomial", alpha=l2, l1_ratio=0.0, fit_intercept=False,
                                                gradient_tol=1e-8)
            m.fit(X, (y == c).astype(np.float64))
            W[:, c], its = m.coef_, its + int(m.n_iter_)
    return W, its, None


def _record_history(res: Any) -> None:
    """dsketch's objective at each iterate, with the seconds since its fit started."""
    TRACE.extend(zip(map(float, res.history["seconds"]), map(float, res.history["loss"]), strict=True))


def dsketch_fit(store: str, l2: float, k: int, preconditioner: str, rows: int) -> tuple[np.ndarray, int, int]:
    import dsketch

    curvature = dsketch.Curvature("exact") if preconditioner == "block" else dsketch.Curvature("uniform", size=rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = dsketch.fit(store, "multinomial", model_params={"l2": l2, "n_classes": k,
                                                              "preconditioner": preconditioner},
                          curvature=curvature, solver=dsketch.Solver("newton-cg", tol=1e-10, max_iter=200))
    _record_history(res)
    return res.x.reshape(-1, k), int(res.nit), int(res.n_passes)


def dsketch_defaults(data: Any, l2: float, k: int) -> tuple[np.ndarray, int, int]:
    """``dsketch.fit`` with its defaults (solver and curvature ``"auto"``) on a store or on
    the arrays."""
    import dsketch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = dsketch.fit(data, "multinomial", model_params={"l2": l2, "n_classes": k},
                          solver=dsketch.Solver(tol=1e-10, max_iter=1000))
    _record_history(res)
    return res.x.reshape(-1, k), int(res.nit), int(res.n_passes)


def read_store(store: str) -> tuple[Any, np.ndarray]:
    """The store's ``A`` and ``b`` read into memory with zarr (what an in-memory peer needs
    before it can fit data that live in a store): an ndarray, or a CSR matrix from the
    store's ``data``, ``indices`` and ``indptr``."""
    import zarr

    g = zarr.open_group(store, mode="r")
    b = np.asarray(g["b"][:])
    node = g["A"]
    if isinstance(node, zarr.Group):
        shape = tuple(int(v) for v in node.attrs["shape"])
        return sp.csr_matrix((node["data"][:], node["indices"][:], node["indptr"][:]), shape=shape), b
    return np.asarray(node[:]), b


def warm_memory(gib: float) -> None:
    """Touch ``gib`` GiB of new memory and free it (untimed, before every timed run when
    ``--warm-memory`` is given). On a virtual machine whose host takes freed memory back
    within seconds, the first touch of memory the process has not used lately is several
    times dearer than that of memory it freed just before (measured on such a machine: 1.5 GB
    in 4.1 to 4.3 s against 0.34 s); a fit that allocates its data (dsketch
    on a store holds its blocks) pays that, a fit handed arrays made beforehand does not.
    Touching and freeing memory first gives every fit memory the host has just backed."""
    if gib > 0:
        buf = np.ones(int(gib * 2**30) // 8)
        del buf


def timed(fn: Callable[[], tuple[np.ndarray, int, int | None]]) -> tuple[tuple[np.ndarray, int, int | None], float]:
    """The fit's result and wall-clock seconds, untraced (tracing every allocation slows a
    fit in proportion to the allocations it makes: at 5 * 10^5 x 200, K = 10, it took
    dsketch's threaded fit from 2.4 s to 4.5 s and scikit-learn's from 3.6 s to 3.6 s)."""
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def peak_mib(fn: Callable[[], Any]) -> float:
    """The peak of this process's traced allocations (MiB) during a second run of ``fn``."""
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return peak


def wanted(args: argparse.Namespace, solver: str) -> bool:
    """Whether ``--solvers`` (none: every solver) names a part of the label ``solver``."""
    return not args.solvers or any(part in solver for part in args.solvers)


def run(name: str, k: int, args: argparse.Namespace) -> list[Row]:
    A, y, l2 = make_problem(name, k, args.scale, args.dscale)
    n, d = A.shape
    label = f"{name} K={k} ({n:,} × {d:,})"
    print(f"== {label}", flush=True)
    solvers: dict[str, Callable[[], Any]] = {"sklearn lbfgs": lambda: sklearn_fit(A, y, l2, "lbfgs")}
    if args.solvers and wanted(args, OVR):
        solvers[OVR] = lambda: glum_one_vs_rest(A, y, l2, k)
    rows: list[Row] = []
    if 8 * (d * k) ** 2 <= args.hessian_gib * 2**30:
        solvers["sklearn newton-cholesky"] = lambda: sklearn_fit(A, y, l2, "newton-cholesky")
    elif wanted(args, "sklearn newton-cholesky"):
        rows.append(Row(label, "sklearn newton-cholesky", note=f"skipped: dK x dK Hessian over {args.hessian_gib} GiB"))
    with tempfile.TemporaryDirectory(prefix="multinomial_bench_") as tmp:
        import dsketch

        store = os.path.join(tmp, "p.zarr")
        dsketch.write_problem(store, A, y)
        solvers["dsketch defaults, arrays"] = lambda: dsketch_defaults((A, y), l2, k)
        solvers["dsketch defaults, store"] = lambda: dsketch_defaults(store, l2, k)
        solvers["dsketch Newton-CG block"] = lambda: dsketch_fit(store, l2, k, "block", 0)
        if d * k <= args.full_max:
            solvers["dsketch Newton-CG full"] = lambda: dsketch_fit(store, l2, k, "full", min(args.full_rows, n))
        if args.peer_read:  # reading the store into memory, which the in-memory peers' timings leave out
            solvers[READ] = lambda: (read_store(store)[1][:0], 0, None)
        runs: dict[str, list[tuple[float, list[tuple[float, float]]]]] = {}
        results: dict[str, tuple[np.ndarray, int, int | None]] = {}
        failed: dict[str, str] = {}
        for _ in range(args.repeats):  # rounds over the solvers, so that each sees the same load
            for s, fn in solvers.items():
                if not (s == READ or wanted(args, s)) or s in failed:
                    continue
                TRACE.clear()
                warm_memory(args.warm_memory)
                try:
                    results[s], sec = timed(fn)
                except Exception as exc:  # a solver's failure is reported, not fatal
                    failed[s] = f"failed: {type(exc).__name__}: {exc}"[:160]
                    continue
                trace = list(TRACE)
                if s.startswith("dsketch") and trace:  # its clock starts with the iterations: setup before
                    trace = [(t + sec - trace[-1][0], f) for t, f in trace]
                runs.setdefault(s, []).append((sec, trace))
                print(f"   {s}: {sec:.2f} s, iterations {results[s][1]}, passes {results[s][2]}", flush=True)
        for s, fn in solvers.items():
            if s in failed:
                rows.append(Row(label, s, note=failed[s]))
            elif s == READ and s in runs:
                rows.append(Row(label, s, float(np.median([t for t, _ in runs[s]])), note="reading only, no fit"))
            elif s in runs:
                X, nit, passes = results[s]
                peak = peak_mib(fn) if args.memory else float("nan")
                rows.append(Row(label, s, float(np.median([t for t, _ in runs[s]])), peak, nit, passes,
                                objective(A, y, X, l2), runs=runs[s]))
                print(f"   {s}: peak {peak:.0f} MiB", flush=True)
    return rows


def best_objectives(rows: list[Row]) -> dict[str, float]:
    """The smallest objective any fit reached, per problem."""
    best: dict[str, float] = {}
    for r in rows:
        if np.isfinite(r.f):
            best[r.problem] = min(best.get(r.problem, np.inf), r.f)
    return best


def table(rows: list[Row]) -> str:
    best = best_objectives(rows)
    fastest: dict[str, float] = {}
    first: dict[str, float] = {}
    for r in rows:
        if r.solver.startswith("sklearn") and np.isfinite(r.f) and (r.f - best[r.problem]) <= TARGET * abs(best[r.problem]):
            fastest[r.problem] = min(fastest.get(r.problem, np.inf), r.seconds)
            first[r.problem] = min(first.get(r.problem, np.inf), r.to_target(best[r.problem]))
    out = ["| problem | solver | seconds | / fastest peer | s to 1e-8 | / fastest peer's | peak driver MiB "
           "| iterations | passes over A | rel. suboptimality | reached 1e-8 |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if not np.isfinite(r.f):
            sec = f"{r.seconds:.2f}" if np.isfinite(r.seconds) else "–"
            out.append(f"| {r.problem} | {r.solver} | {sec} | – | – | – | – | – | – | – | {r.note} |")
            continue
        sub = max(0.0, (r.f - best[r.problem]) / abs(best[r.problem]))
        ratio = r.seconds / fastest[r.problem] if r.problem in fastest else float("nan")
        hit = r.to_target(best[r.problem])
        ratio_hit = hit / first[r.problem] if r.problem in first else float("nan")
        whole = "" if r.traced else " (whole fit)"
        hit_s = f"{hit:.2f}{whole}" if np.isfinite(hit) else "never"
        out.append(f"| {r.problem} | {r.solver} | {r.seconds:.2f} | {ratio:.2f} | {hit_s} | {ratio_hit:.2f} | "
                   f"{r.peak_mib:.0f} | {r.nit} | {'–' if r.passes is None else r.passes} | {sub:.1e} | "
                   f"{'yes' if sub <= TARGET else 'no'} |")
    return "\n".join(out)


def traces(rows: list[Row]) -> str:
    """Each fit's objective along its first timed run: seconds and relative suboptimality at
    every objective evaluation (scikit-learn lbfgs) or iterate (dsketch)."""
    best = best_objectives(rows)
    out = ["", "", "Objective along the first timed run of each fit (seconds: relative suboptimality):", ""]
    for r in rows:
        if r.runs and r.runs[0][1]:
            f0 = best[r.problem]
            points = ", ".join(f"{t:.2f}: {max(f - f0, 0.0) / abs(f0):.1e}" for t, f in r.runs[0][1])
            out.append(f"- {r.problem}, {r.solver}: {points}")
    return "\n".join(out)


def compare_preconditioners(args: argparse.Namespace) -> str:
    """Block against full preconditioner, in memory (the driver's threads, no cluster, exact
    curvature): seconds, Newton iterations and passes over A for each problem and K."""
    import dsketch

    out = ["| problem | dK | preconditioner | seconds | iterations | passes over A |", "|---|---:|---|---:|---:|---:|"]
    for name in args.problems:
        for k in args.classes:
            A, y, l2 = make_problem(name, k, args.scale, args.dscale)
            for pre in ("block", "full"):
                t = time.perf_counter()
                res = dsketch.fit((A, y), "multinomial", model_params={"l2": l2, "n_classes": k, "preconditioner": pre},
                                  curvature="exact", solver=dsketch.Solver("newton-cg", tol=1e-10, max_iter=200))
                sec = time.perf_counter() - t
                ok = "" if res.success else " (not converged)"
                out.append(f"| {name} K={k} ({A.shape[0]:,} × {A.shape[1]:,}) | {A.shape[1] * k:,} | {pre}{ok} "
                           f"| {sec:.2f} | {res.nit} | {res.n_passes} |")
                print(out[-1], flush=True)
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problems", nargs="+", choices=list(PROBLEMS), default=list(PROBLEMS))
    ap.add_argument("--classes", nargs="+", type=int, default=[10, 50])
    ap.add_argument("--scale", type=int, default=1, help="divide the rows by this")
    ap.add_argument("--dscale", type=int, default=1, help="divide the columns by this (same non-zeros a row)")
    ap.add_argument("--hessian-gib", type=float, default=16.0, help="largest dK x dK Hessian newton-cholesky gets")
    ap.add_argument("--full-max", type=int, default=2000, help="largest dK for dsketch's full preconditioner")
    ap.add_argument("--full-rows", type=int, default=100_000, help="rows sampled for the full preconditioner")
    ap.add_argument("--solvers", nargs="+", default=None,
                    help="run only the solvers whose label contains one of these parts, e.g. 'sklearn lbfgs' "
                         "'dsketch defaults' (default: all)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="timed runs of each fit, in rounds over the solvers; the table shows their medians")
    ap.add_argument("--peer-read", action="store_true",
                    help="also time reading the store into memory with zarr (which the in-memory peers' times "
                         "leave out)")
    ap.add_argument("--warm-memory", type=float, default=0.0, metavar="GIB",
                    help="touch and free this many GiB before every timed run (untimed), so that no fit pays "
                         "a virtual machine's first touch of memory its host took back")
    ap.add_argument("--traces", action="store_true",
                    help="also list each fit's objective along its first timed run")
    ap.add_argument("--no-memory", dest="memory", action="store_false",
                    help="skip the second, traced run of each fit that measures its peak driver memory")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--compare-preconditioners", action="store_true",
                    help="only compare dsketch's block and full preconditioners in memory (exact curvature)")
    args = ap.parse_args(argv)
    if args.compare_preconditioners:
        md = compare_preconditioners(args)
        title = "Multinomial Newton-CG: block against full preconditioner, in memory"
    else:
        rows = [r for name in args.problems for k in args.classes for r in run(name, k, args)]
        md = table(rows) + (traces(rows) if args.traces else "")
        title = "Multinomial logistic regression: dsketch against scikit-learn"
    print(md)
    command = "python benchmarks/multinomial.py" + ("" if not argv else " " + shlex.join(argv))
    Path(args.out).write_text("\n".join([
        f"# {title}", "",
        f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC. Commit: `{commit()}`. "
        f"Machine: {os.cpu_count()} cores. Command: `{command}`.", "",
        f"Medians of {args.repeats} timed run(s) of each solver, in rounds"
        + (f", each after touching and freeing {args.warm_memory:g} GiB (untimed)" if args.warm_memory else "")
        + ". Relative suboptimality against the "
        "smallest objective any fit reached. Peak driver "
        "memory: tracemalloc's peak of this process during a second run of the same fit (the timed run is not "
        "traced: tracing every allocation slows a fit in proportion to the allocations it makes). dsketch's fits "
        "run on threads of this "
        "process; on a store, reading it is part of the time. '/ fastest peer': seconds over the fastest "
        "scikit-learn fit that reached 1e-8. 's to 1e-8': seconds until the fit's objective first came within "
        "1e-8 (relative) of the best, read from scikit-learn lbfgs's objective evaluations and from dsketch's "
        "iterations (its set-up counted before the first); '(whole fit)' where only the end is known "
        "(scikit-learn's newton-cholesky). Each fit runs to its own tolerance (scikit-learn: tol = 1e-10 and "
        "lbfgs's ftol of 64 machine epsilons; dsketch: relative gradient 1e-10), so the two time columns "
        "differ.", "", md, ""]))


if __name__ == "__main__":
    main()
