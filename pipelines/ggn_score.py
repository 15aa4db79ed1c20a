"""Reproduction (scaled down): GGN-SCORE on a two-layer network (docs/theory.md#the-ggn-score-experiments).

1. Synthetic teacher-student: inputs on the unit sphere, teacher = 5 SiLU units with
   unit-norm weights and +-1 outputs, student n1 SiLU units, full batch; GGN-SCORE
   (tau = 1e-4, mu = sqrt(n1), alpha = 0.95) against gradient descent (tau = 0, step 1).
2. Real data shipped with scikit-learn (digits, breast cancer, wine; one-hot targets,
   ReLU, n1 = 128, mini-batches of 64): GGN-SCORE against full-batch gradient descent
   (25 steps per GGN-SCORE epoch) and Adam (learning rate 1e-2, 20 epochs per GGN-SCORE
   epoch): final train/test loss and accuracy, and time.
3. Sparsity: "#zeros" (p - k0, k0 = the fewest parameters holding 99.9% of ||theta||_1)
   of the teacher-student solution against tau and against mu.

Usage::

    python pipelines/ggn_score.py [--iters 100] [--epochs 5] [--out results/ggn_score]

Prints markdown tables and writes them with ``ggn_score.png`` to OUT.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from dsketch.models.twolayer_net import TwoLayerNet
from dsketch.solvers.ggn_score import GGNScore, GGNScoreConfig


def teacher_student(rng: np.random.Generator, m: int, n0: int) -> tuple[np.ndarray, np.ndarray]:
    X = rng.standard_normal((m, n0))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    U = rng.standard_normal((5, n0))
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    v = rng.choice([-1.0, 1.0], size=5)
    Z = X @ U.T
    return X, (Z / (1 + np.exp(-Z))) @ v


def n_zeros(theta: np.ndarray) -> int:
    a = np.sort(np.abs(theta))[::-1]
    c = np.cumsum(a)
    k0 = int(np.searchsorted(c, 0.999 * c[-1]) + 1)
    return theta.size - k0


def gd(net, theta, X, Y, iters, lr, batch=None, rng=None, adam=False):
    """Gradient descent (full batch) or Adam (mini-batches); returns theta and a trace."""
    m = X.shape[0]
    mom, vel, t = np.zeros_like(theta), np.zeros_like(theta), 0
    trace = [(0.0, net.loss(theta, X, Y))]
    t0 = time.perf_counter()
    for _ in range(iters):
        order = rng.permutation(m) if batch else np.arange(m)
        for s in range(0, m, batch or m):
            idx = order[s : s + (batch or m)]
            g = net.loss_gradient(theta, X[idx], Y[idx])[1]
            if adam:
                t += 1
                mom = 0.9 * mom + 0.1 * g
                vel = 0.999 * vel + 0.001 * g * g
                theta = theta - lr * (mom / (1 - 0.9**t)) / (np.sqrt(vel / (1 - 0.999**t)) + 1e-8)
            else:
                theta = theta - lr * g
        trace.append((time.perf_counter() - t0, net.loss(theta, X, Y)))
    return theta, trace


def accuracy(net, theta, X, labels):
    return float(np.mean(np.argmax(net.predict(theta, X), axis=1) == labels))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--out", default=os.path.join("results", "ggn_score"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = []
    curves = {}

    # 1. teacher-student
    n0, n1 = 20, 500
    X, y = teacher_student(rng, 2000, n0)
    Xtr, ytr, Xte, yte = X[:1000], y[:1000], X[1000:], y[1000:]
    net = TwoLayerNet(n0, n1, 1, "silu")
    theta0 = net.init_params(rng)
    solver = GGNScore(net, GGNScoreConfig(tau=1e-4, mu=np.sqrt(n1), alpha=0.95))
    theta, trace = theta0.copy(), [(0.0, net.loss(theta0, Xtr, ytr))]
    t0 = time.perf_counter()
    for _ in range(args.iters):
        theta, _ = solver.step(theta, Xtr, ytr)
        trace.append((time.perf_counter() - t0, net.loss(theta, Xtr, ytr)))
    theta_gd, trace_gd = gd(net, theta0.copy(), Xtr, ytr, args.iters, lr=1.0)
    curves["teacher-student"] = {"GGN-SCORE": trace, "GD (step 1)": trace_gd}
    lines += [
        f"### Teacher-student (m = 1000 train / 1000 test, n0 = {n0}, n1 = {n1}, {args.iters} iterations)",
        "",
        "| method | train loss | test loss | seconds |",
        "|---|---|---|---|",
        f"| GGN-SCORE | {trace[-1][1]:.3e} | {net.loss(theta, Xte, yte):.3e} | {trace[-1][0]:.1f} |",
        f"| GD | {trace_gd[-1][1]:.3e} | {net.loss(theta_gd, Xte, yte):.3e} | {trace_gd[-1][0]:.1f} |",
        "",
    ]

    # 3. sparsity against tau (small problem)
    Xs, ys = teacher_student(np.random.default_rng(1), 500, 5)
    net_s = TwoLayerNet(5, 100, 1, "silu")
    th0 = net_s.init_params(np.random.default_rng(2))
    lines += ["### #zeros against tau (teacher-student m = 500, n0 = 5, n1 = 100, 100 iterations)", "",
              "| tau | #zeros of p = %d | train loss |" % net_s.n_params, "|---|---|---|"]
    for tau in (1e-6, 1e-4, 1e-2, 1e-1):
        sv = GGNScore(net_s, GGNScoreConfig(tau=tau, mu=np.sqrt(100), alpha=0.95))
        th = th0.copy()
        for _ in range(100):
            th, _ = sv.step(th, Xs, ys)
        lines.append(f"| {tau:g} | {n_zeros(th)} | {net_s.loss(th, Xs, ys):.3e} |")
    lines += ["", "### #zeros against mu (same problem, tau = 1e-4)", "",
              "| mu | #zeros of p = %d | train loss |" % net_s.n_params, "|---|---|---|"]
    for mu in (1e-3, 1e-2, 1e-1, 1.0):
        sv = GGNScore(net_s, GGNScoreConfig(tau=1e-4, mu=mu, alpha=0.95))
        th = th0.copy()
        for _ in range(100):
            th, _ = sv.step(th, Xs, ys)
        lines.append(f"| {mu:g} | {n_zeros(th)} | {net_s.loss(th, Xs, ys):.3e} |")
    lines.append("")

    # 2. real data
    from sklearn.datasets import load_breast_cancer, load_digits, load_wine
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    lines += [f"### scikit-learn data sets (ReLU, n1 = 128, batch 64, {args.epochs} epochs)", "",
              "| data | method | train loss | test loss | train acc | test acc | seconds |",
              "|---|---|---|---|---|---|---|"]
    for name, loader in (("digits", load_digits), ("breast cancer", load_breast_cancer), ("wine", load_wine)):
        Xd, lab = loader(return_X_y=True)
        Xa, Xb, la, lb = train_test_split(Xd, lab, test_size=0.3, random_state=0, stratify=lab)
        sc = StandardScaler().fit(Xa)
        Xa, Xb = sc.transform(Xa), sc.transform(Xb)
        k = int(lab.max()) + 1
        Ya, Yb = np.eye(k)[la], np.eye(k)[lb]
        netd = TwoLayerNet(Xa.shape[1], 128, k, "relu")
        th0 = netd.init_params(np.random.default_rng(3))
        sv = GGNScore(netd, GGNScoreConfig(tau=1e-4, mu=np.sqrt(128), alpha=1.0))
        t0 = time.perf_counter()
        res = sv.fit(Xa, Ya, theta0=th0, epochs=args.epochs, batch_size=64, rng=np.random.default_rng(4))
        runs = {"GGN-SCORE": (res.x, time.perf_counter() - t0)}
        t0 = time.perf_counter()
        th_gd, _ = gd(netd, th0.copy(), Xa, Ya, args.epochs * 25, lr=1.0)
        runs["GD (full batch, step 1)"] = (th_gd, time.perf_counter() - t0)
        t0 = time.perf_counter()
        th_ad, _ = gd(netd, th0.copy(), Xa, Ya, 20 * args.epochs, lr=1e-2, batch=64,
                      rng=np.random.default_rng(4), adam=True)
        runs[f"Adam (1e-2, batch 64, {20 * args.epochs} epochs)"] = (th_ad, time.perf_counter() - t0)
        for method, (th, sec) in runs.items():
            lines.append(
                f"| {name} | {method} | {netd.loss(th, Xa, Ya):.3e} | {netd.loss(th, Xb, Yb):.3e} | "
                f"{accuracy(netd, th, Xa, la):.3f} | {accuracy(netd, th, Xb, lb):.3f} | {sec:.1f} |")
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(args.out, "ggn_score.md"), "w") as fh:
        fh.write(text + "\n")
    _plot(curves, os.path.join(args.out, "ggn_score.png"))


def _plot(curves, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for label, trace in curves["teacher-student"].items():
        sec, loss = np.asarray(trace).T
        axes[0].semilogy(np.arange(loss.size), loss, label=label)
        axes[1].semilogy(sec, loss, label=label)
    axes[0].set_xlabel("iteration")
    axes[1].set_xlabel("seconds")
    for ax in axes:
        ax.set_ylabel("training loss")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle("teacher-student: GGN-SCORE against gradient descent")
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
