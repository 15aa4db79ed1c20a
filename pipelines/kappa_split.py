"""Reproduction: kappa and the two Hessian splits in the weak-regularisation regime.

docs/theory.md#two-ways-to-split-the-hessian: sketching only the per-row part of the Hessian ``H`` by leverage-score
row sampling with accuracy ``eps`` gives ``||H^{-1/2}(H~ - H)H^{-1/2}|| <= eps * kappa``, with
``kappa = lambda_max(H^{-1/2} G H^{-1/2})`` and ``G`` the Gram of the matrix whose leverage
scores drive the sampling (``research.splits``):

* split (a), the model contract: ``G_a = A^T diag(|D|) A`` (``H = A^T D A + rank-2``);
* split (b): ``G_b = A^T diag(w^2 + |s_d|) A + (JA)^T (JA)`` (Gauss-Newton rows sketched,
  the rank-2 part of the second-order term ``S`` exact).

In the weak regime (docs/theory.md#regimes-of-the-row-weights: ``w = 0.3/n``, ``b = f(A x_p) (1 + 0.05 N(0,1))``) this
script measures, for each model and problem:

1. ``kappa_a`` and ``kappa_b`` at ``x*`` (a tight exact Newton solve from ``x_p``), at
   ``x* + rho ||x*|| u`` (``u`` a fixed random unit vector) for several ``rho``, and at
   ``x_p``; beside them the measured whitened sketch error ``eps0`` of one sampled Hessian
   per split at ``eps = 0.5`` (median over the seeds), which the bound says is
   ``<= 0.5 kappa`` with probability ``>= 1 - delta``;
2. the unit-step approximate Newton iteration of docs/theory.md#the-approximate-newton-framework with each split, from
   ``x0 = x* + r0 ||x*|| u``, at ``eps`` in {0.5, 0.25, 0.1} with ``s = 3 d ln(2d/delta)/eps^2``
   expected rows (``delta = 0.1``; ``p_i = min(1, s tau_i / d)``): the iterations to reach
   ``||x - x*|| <= 1e-10 ||x*||`` and the rate per step (geometric mean of
   ``r_(t+1)/r_t``), median over seeds of the sampling.

Problems (generated in memory, ``A`` dense, rows ``a_i = s_i z_i / sqrt(d)``,
``z_i ~ N(0, I_d)``, ``x_p`` a random direction of the given norm):

* ``gaussian``: ``s_i = 1`` and ``||x_p|| = sqrt(d)``: the distribution of the library's
  problem generator (``dsketch.make_problem``); ``r0 = 0.1``;
* ``t8``: heavy-tailed rows, ``s_i = |t_8|`` (Student t, 8 degrees of freedom), and
  ``||x_p|| = 3``: a peaked softmax. Here ``H(x)`` stops being positive definite about
  ``0.03 ||x*||`` from ``x*``, so ``r0 = 0.01`` (the good initial point of docs/theory.md#the-approximate-newton-framework (the condition on the start)).

Usage::

    python -m pipelines.kappa_split [--n-samples 100000] [--n-features 20]
        [--models softmax,resnet-softmax] [--problems gaussian,t8] [--seeds 5]
        [--out results/kappa_split]

Writes ``OUT/kappa_split.md`` (the tables) and ``OUT/kappa_split.png``.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from dataclasses import dataclass

import numpy as np

from dsketch.models import get_model
from research.split_sampling import (
    approximate_newton,
    sketched_hessian,
    solve_exact,
)
from research.splits import (
    hessian_split_b,
    normalised_pieces,
    sampling_gram,
    spectral_error,
    top_direction,
)

EPSILONS = (0.5, 0.25, 0.1)
DELTA = 0.1
ERR_TOL = 1e-10
RHOS = (0.003, 0.01, 0.03, 0.1, 0.3)
NOISE = 0.05


@dataclass(frozen=True)
class ProblemKind:
    """How one generated problem is drawn: row-scale tail, ``||x_p||`` and the start radius."""

    df: float | None  # Student-t degrees of freedom of the row scales; None for s_i = 1
    x_norm: float | None  # ||x_p||; None for sqrt(d)
    r0: float  # ||x0 - x*|| / ||x*|| of the Newton runs


PROBLEMS: dict[str, ProblemKind] = {
    "gaussian": ProblemKind(df=None, x_norm=None, r0=0.1),
    "t8": ProblemKind(df=8.0, x_norm=3.0, r0=0.01),
}


@dataclass(frozen=True)
class Problem:
    A: np.ndarray
    b: np.ndarray
    w: np.ndarray
    x_planted: np.ndarray
    x_star: np.ndarray
    u: np.ndarray


def make_weak_problem(model_name: str, kind: ProblemKind, n: int, d: int, seed: int) -> Problem:
    """Draw ``A``, ``x_p`` and ``b = f(A x_p)(1 + 0.05 N)``; ``w = 0.3/n``; solve for ``x*``."""
    model = get_model(model_name)
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, d)) / math.sqrt(d)
    if kind.df is not None:
        A *= np.abs(rng.standard_t(kind.df, size=n))[:, None]
    x_p = rng.standard_normal(d)
    x_p *= (kind.x_norm if kind.x_norm is not None else math.sqrt(d)) / np.linalg.norm(x_p)
    eta = A @ x_p
    scalars = model.scalars(model.stats(eta, np.zeros(n), None))
    b = model.sample_targets(eta, scalars, rng, noise=NOISE)
    w = np.full(n, model.default_w(n, "weak"))
    x_star = solve_exact(model, A, b, x_p, w=w)
    u = rng.standard_normal(d)
    return Problem(A=A, b=b, w=w, x_planted=x_p, x_star=x_star, u=u / np.linalg.norm(u))


def chernoff_size(eps: float, d: int) -> float:
    """``3 d ln(2d/delta) / eps^2`` (docs/theory.md#leverage-score-sampling)."""
    return 3.0 * d * math.log(2.0 * d / DELTA) / eps**2


def kappa_rows(model_name: str, prob: Problem, seeds: int) -> list[dict]:
    """kappa of both splits and the measured eps0 at eps = 0.5 at x*, along u, and at x_p."""
    model = get_model(model_name)
    d = prob.A.shape[1]
    scale = float(np.linalg.norm(prob.x_star))
    points = [("x*", prob.x_star)]
    points += [(f"x* + {rho:g}‖x*‖u", prob.x_star + rho * scale * prob.u) for rho in RHOS]
    points.append(("x_p (planted)", prob.x_planted))
    out = []
    for label, x in points:
        row = {"point": label, "dist": float(np.linalg.norm(x - prob.x_star)) / scale}
        pieces = normalised_pieces(model, prob.A, prob.b, x, w=prob.w)
        H = hessian_split_b(prob.A, pieces)
        lam = np.linalg.eigvalsh(H)
        row["lam_ratio"] = float(lam[0] / lam[-1])
        if lam[0] <= 0.0:
            out.append(row)
            continue
        for split in ("a", "b"):
            row[f"kappa_{split}"], v = top_direction(H, sampling_gram(prob.A, pieces, split=split))
            sampled = [sketched_hessian(prob.A, pieces, split=split, sketch_size=chernoff_size(0.5, d), seed=s).hess
                       for s in range(seeds)]
            row[f"eps0_{split}"] = float(np.median([spectral_error(H, Ht) for Ht in sampled]))
            # error along the amplified direction (v^T H v = 1)
            row[f"dir_{split}"] = float(np.median([abs(v @ (Ht - H) @ v) for Ht in sampled]))
        out.append(row)
    return out


def _rate(errors: np.ndarray, target: float) -> float:
    """Geometric mean of ``r_(t+1)/r_t`` up to the first error below ``target`` (or the end)."""
    hit = np.flatnonzero(errors <= target)
    last = int(hit[0]) if hit.size else errors.size - 1
    if last == 0 or errors[last] <= 0.0:
        return float("nan")
    return float((errors[last] / errors[0]) ** (1.0 / last))


def newton_rows(model_name: str, prob: Problem, r0: float, seeds: int, max_iter: int) -> tuple[list[dict], dict]:
    """Iterations and rates of both splits per eps (medians over seeds), and median curves."""
    model = get_model(model_name)
    d = prob.A.shape[1]
    scale = float(np.linalg.norm(prob.x_star))
    x0 = prob.x_star + r0 * scale * prob.u
    target = ERR_TOL * scale
    exact = approximate_newton(model, prob.A, prob.b, x0, x_star=prob.x_star, split="a", sketch_size=1e300,
                               w=prob.w, tol=ERR_TOL, max_iter=max_iter, seed=0)
    rows, curves = [], {"exact": exact.errors / scale}
    for eps in EPSILONS:
        size = chernoff_size(eps, d)
        row: dict = {"eps": eps, "size": size, "exact_iters": exact.n_iter if exact.converged else None}
        for split in ("a", "b"):
            traces = [approximate_newton(model, prob.A, prob.b, x0, x_star=prob.x_star, split=split,
                                         sketch_size=size, w=prob.w, tol=ERR_TOL, max_iter=max_iter,
                                         seed=1000 * s + 17)
                      for s in range(seeds)]
            iters = [t.n_iter if t.converged else math.inf for t in traces]
            row[f"iters_{split}"] = float(np.median(iters))
            row[f"conv_{split}"] = sum(t.converged for t in traces)
            row[f"rate_{split}"] = float(np.median([_rate(t.errors, target) for t in traces]))
            row[f"rows_{split}"] = float(np.median(np.concatenate([t.rows for t in traces])))
            length = max(t.errors.size for t in traces)
            padded = np.array([np.pad(t.errors, (0, length - t.errors.size), constant_values=np.nan)
                               for t in traces])
            curves[(eps, split)] = np.nanmedian(padded, axis=0) / scale
        rows.append(row)
    return rows, curves


def _fmt(v: float | None, spec: str = ".3g") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, float) and math.isinf(v):
        return "not reached"
    return format(v, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--n-samples", type=int, default=100_000)
    ap.add_argument("--n-features", type=int, default=20)
    ap.add_argument("--models", default="softmax,resnet-softmax")
    ap.add_argument("--problems", default="gaussian,t8", help=f"comma list of {sorted(PROBLEMS)}")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--max-iter", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0, help="seed of the generated data")
    ap.add_argument("--out", default=os.path.join("results", "kappa_split"))
    args = ap.parse_args()
    models = [m for m in args.models.split(",") if m]
    problems = [p for p in args.problems.split(",") if p]
    unknown = [p for p in problems if p not in PROBLEMS]
    if unknown:
        raise ValueError(f"unknown problem(s) {unknown}; valid: {sorted(PROBLEMS)}")
    for name in models:
        get_model(name)  # fail early on a typo
    os.makedirs(args.out, exist_ok=True)
    n, d = args.n_samples, args.n_features
    t_start = time.perf_counter()
    kap: dict[tuple[str, str], list[dict]] = {}
    newt: dict[tuple[str, str], list[dict]] = {}
    curves: dict[tuple[str, str], dict] = {}
    for name in models:
        for pname in problems:
            kind = PROBLEMS[pname]
            prob = make_weak_problem(name, kind, n, d, args.seed)
            kap[(name, pname)] = kappa_rows(name, prob, args.seeds)
            newt[(name, pname)], curves[(name, pname)] = newton_rows(name, prob, kind.r0, args.seeds, args.max_iter)
    elapsed = time.perf_counter() - t_start

    lines = [
        f"Weak regime (docs/theory.md#regimes-of-the-row-weights): n = {n}, d = {d}, w = 0.3/n, b = f(A x_p)(1 + {NOISE} N(0,1)); "
        f"problems: " + "; ".join(
            f"{p}: rows × {'|t_' + format(PROBLEMS[p].df, 'g') + '|' if PROBLEMS[p].df else '1'}, "
            f"‖x_p‖ = {_fmt(PROBLEMS[p].x_norm) if PROBLEMS[p].x_norm else '√d'}, r0 = {PROBLEMS[p].r0:g}"
            for p in problems),
        "",
        ("κ = λ_max(H^-1/2 G H^-1/2) with G the Gram of the sampled matrix: split (a) G = Aᵀ|D|A; split (b) "
        "G = Aᵀdiag(w²+|s_d|)A + (JA)ᵀ(JA). ε₀ = ‖H^-1/2(H̃−H)H^-1/2‖ of one leverage-sampled Hessian at "
        f"ε = 0.5 (s = {chernoff_size(0.5, d):.0f} expected rows), median of {args.seeds} seeds; the bound is "
        "ε₀ ≤ 0.5 κ. 'along v': |vᵀ(H̃−H)v| / vᵀHv for the direction v attaining κ (same draws, median). "
        "'—': H not positive definite there (κ undefined)."),
        "",
        ("| model | problem | point | ‖x−x*‖/‖x*‖ | λ_min/λ_max of H | κ (a) | κ (b) | ε₀ (a) | ε₀ (b) "
        "| error along v (a) | error along v (b) |"),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (name, pname), rows in kap.items():
        for r in rows:
            lines.append(
                f"| {name} | {pname} | {r['point']} | {_fmt(r['dist'], '.2g')} | {_fmt(r['lam_ratio'], '.2g')} | "
                f"{_fmt(r.get('kappa_a'))} | {_fmt(r.get('kappa_b'))} | {_fmt(r.get('eps0_a'))} | {_fmt(r.get('eps0_b'))} | "
                f"{_fmt(r.get('dir_a'), '.2g')} | {_fmt(r.get('dir_b'), '.2g')} |"
            )
    lines += [
        "",
        (f"Unit-step approximate Newton from x0 = x* + r0‖x*‖u; iterations to ‖x−x*‖ ≤ {ERR_TOL:g}‖x*‖ "
        f"(median of {args.seeds} sampling seeds, at most {args.max_iter}; converged runs in brackets), "
        "rate = geometric mean of r(t+1)/r(t) up to that point (median), rows = median kept rows per step. "
        "s = 3 d ln(2d/δ)/ε², δ = 0.1. Exact Newton (all rows kept) for reference."),
        "",
        "| model | problem | ε | s | iterations (a) | iterations (b) | rate (a) | rate (b) | rows (a) | rows (b) | exact Newton iterations |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (name, pname), rows in newt.items():
        for r in rows:
            lines.append(
                f"| {name} | {pname} | {r['eps']:g} | {r['size']:.0f} | {_fmt(r['iters_a'], 'g')} ({r['conv_a']}/{args.seeds}) | "
                f"{_fmt(r['iters_b'], 'g')} ({r['conv_b']}/{args.seeds}) | {_fmt(r['rate_a'], '.2g')} | {_fmt(r['rate_b'], '.2g')} | "
                f"{r['rows_a']:.0f} | {r['rows_b']:.0f} | {_fmt(r['exact_iters'], 'd')} |"
            )
    lines += ["", *_summary(kap, newt), "", f"Wall time: {elapsed:.0f} s."]
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(args.out, "kappa_split.md"), "w") as fh:
        fh.write(text + "\n")
    _plot(kap, curves, os.path.join(args.out, "kappa_split.png"))


def _summary(kap: dict, newt: dict) -> list[str]:
    """Computed one-line findings: kappa at x*, iteration differences, eps0 against its bound."""
    at_star = "; ".join(f"{m}/{p} {r[0]['kappa_a']:.2f} vs {r[0]['kappa_b']:.2f}" for (m, p), r in kap.items())
    rows = [r for rs in newt.values() for r in rs]
    diffs = [r["iters_a"] - r["iters_b"] for r in rows]
    same = sum(dv == 0 for dv in diffs)
    measured = [r for rs in kap.values() for r in rs if "eps0_a" in r]
    ratio = [r["eps0_a"] / r["eps0_b"] for r in measured]
    slack_a = max(r["eps0_a"] / (0.5 * r["kappa_a"]) for r in measured)
    slack_b = max(r["eps0_b"] / (0.5 * r["kappa_b"]) for r in measured)
    return [
        f"Summary. κ at x*, split (a) vs split (b): {at_star}.",
        (f"Median iterations equal for the two splits in {same} of {len(diffs)} (model, problem, ε) cases; "
        f"largest difference (a) − (b): {max(diffs, key=abs):+g}."),
        (f"Measured ε₀(a)/ε₀(b) at ε = 0.5 over the points with H positive definite: "
        f"{min(ratio):.2f} to {max(ratio):.2f}; ε₀ / (0.5 κ) at most {slack_a:.2f} for (a) and {slack_b:.2f} for (b)."),
    ]


def _plot(kap: dict, curves: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(kap)
    fig, axes = plt.subplots(2, len(keys), figsize=(4.2 * len(keys), 7.4), constrained_layout=True, squeeze=False)
    for j, key in enumerate(keys):
        name, pname = key
        ax = axes[0][j]
        rows = [r for r in kap[key] if "kappa_a" in r and r["point"] != "x_p (planted)"]
        dist = [max(r["dist"], 1e-4) for r in rows]
        ax.semilogx(dist, [r["kappa_a"] for r in rows], "o-", color="C0", label="κ split (a)")
        ax.semilogx(dist, [r["kappa_b"] for r in rows], "s-", color="C1", label="κ split (b)")
        ax.semilogx(dist, [r["eps0_a"] / 0.5 for r in rows], "o:", color="C0", label="ε₀/ε measured (a), ε=0.5")
        ax.semilogx(dist, [r["eps0_b"] / 0.5 for r in rows], "s:", color="C1", label="ε₀/ε measured (b), ε=0.5")
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_title(f"{name}, {pname}: κ (x* plotted at 1e-4)", fontsize=9)
        ax.set_xlabel("‖x − x*‖ / ‖x*‖")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        ax = axes[1][j]
        cs = curves[key]
        ax.semilogy(np.maximum(cs["exact"], 1e-17), "k.-", label="exact Newton")
        for k, eps in enumerate(EPSILONS):
            for split, style in (("a", "o-"), ("b", "s--")):
                c = cs[(eps, split)]
                ax.semilogy(np.maximum(c, 1e-17), style, color=f"C{k}", ms=3, label=f"ε={eps} split ({split})")
        ax.axhline(ERR_TOL, color="grey", lw=0.8)
        ax.set_title(f"{name}, {pname}: median ‖x_t − x*‖/‖x*‖", fontsize=9)
        ax.set_xlabel("iteration")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
