"""Reproduction: the SubSample guarantee — spectral error of sketched A^T D A against size.

On a high-coherence matrix (Gaussian rows plus a few rows with a much larger norm, the
case where uniform sampling fails), for leverage-score, row-norm and uniform sampling,
CountSketch and a Gaussian embedding: the relative spectral error

    err = || M^{-1/2} (M~ - M) M^{-1/2} ||_2,     M = A^T D A,

against the sketch size (expected sampled rows, or embedding dimension), as the median
and the worst of several seeds. Beside it, the prediction of the matrix Chernoff bound
for leverage sampling, ``eps(s) = sqrt(3 d ln(2d/delta) / s)`` (docs/theory.md#leverage-score-sampling; delta = 0.1).
Every sketch runs through the same per-block code the engine maps over the cluster, here
over 16 in-memory row blocks.

Usage::

    python pipelines/subsample.py [--n-samples 200000] [--n-features 20] [--heavy 10]
        [--seeds 5] [--out results/subsample]

Writes ``OUT/subsample.md`` (the table) and ``OUT/subsample.png``.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from dsketch.sketch import make_sketch, sketch_gram

KINDS = ("leverage", "rownorm", "uniform", "countsketch", "gaussian")


def coherent_matrix(n: int, d: int, heavy: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian rows, ``heavy`` of them scaled by 1e3; weights D ~ U(0.5, 2)."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, d))
    idx = rng.choice(n, size=heavy, replace=False)
    A[idx] *= 1e3
    return A, rng.uniform(0.5, 2.0, size=n)


def spectral_error(M: np.ndarray, Mt: np.ndarray) -> float:
    lam, V = np.linalg.eigh(M)
    W = V / np.sqrt(lam)
    return float(np.max(np.abs(np.linalg.eigvalsh(W.T @ (Mt - M) @ W))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--n-samples", type=int, default=200_000)
    ap.add_argument("--n-features", type=int, default=20)
    ap.add_argument("--heavy", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--out", default=os.path.join("results", "subsample"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    n, d = args.n_samples, args.n_features
    A, D = coherent_matrix(n, d, args.heavy, seed=0)
    M = A.T @ (D[:, None] * A)
    bounds = list(np.linspace(0, n, 17).astype(int))
    sizes = [int(s) for s in np.unique(np.geomspace(2 * d, 40 * d * np.log(2 * d / 0.1), 10).astype(int))]
    table: dict[str, list[tuple[int, float, float, float]]] = {k: [] for k in KINDS}
    for kind in KINDS:
        sk = make_sketch(kind)
        for s in sizes:
            errs, used = [], []
            for seed in range(args.seeds):
                res = sketch_gram(sk, A, D, seed=seed, sketch_size=s, bounds=bounds)
                errs.append(spectral_error(M, res.gram))
                used.append(res.n_rows)
            table[kind].append((s, float(np.median(used)), float(np.median(errs)), float(np.max(errs))))
    lev_pred = {s: float(np.sqrt(3 * d * np.log(2 * d / 0.1) / s)) for s in sizes}
    lines = [
        f"n = {n}, d = {d}, {args.heavy} rows scaled by 1e3, D ~ U(0.5, 2); {args.seeds} seeds per size; "
        "error = ||M^-1/2 (M~ - M) M^-1/2||_2 (median / worst)",
        "",
        "| size s | Chernoff prediction (leverage) | " + " | ".join(KINDS) + " |",
        "|---|---|" + "---|" * len(KINDS),
    ]
    for i, s in enumerate(sizes):
        cells = [f"{table[k][i][2]:.3g} / {table[k][i][3]:.3g}" for k in KINDS]
        lines.append(f"| {s} | {lev_pred[s]:.3g} | " + " | ".join(cells) + " |")
    for eps in (0.5, 0.25):
        lines.append("")
        lines.append(f"Documented sizes for eps = {eps}, delta = 0.1: " + ", ".join(
            f"{k} {make_sketch(k).size_for(eps, 0.1, d)}" for k in KINDS))
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(args.out, "subsample.md"), "w") as fh:
        fh.write(text + "\n")
    _plot(table, lev_pred, os.path.join(args.out, "subsample.png"), title=lines[0])


def _plot(table, pred, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5), constrained_layout=True)
    for kind, rows in table.items():
        s = [r[0] for r in rows]
        ax.loglog(s, [r[2] for r in rows], "o-", label=f"{kind} (median)")
        ax.fill_between(s, [r[2] for r in rows], [r[3] for r in rows], alpha=0.15)
    ss = sorted(pred)
    ax.loglog(ss, [pred[s] for s in ss], "k--", label="sqrt(3 d ln(2d/δ) / s)  (Chernoff, leverage)")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xlabel("sketch size s (expected rows / embedding dimension)")
    ax.set_ylabel("relative spectral error")
    ax.set_title(title, fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
