"""Convergence plots (matplotlib, written to PNG without a display)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from dsketch.errors import MissingDependencyError

PLOT_HINT = "plotting needs matplotlib: pip install 'dsketch[plot]'"


def _pyplot():
    """matplotlib's pyplot on the non-interactive Agg backend, or a one-line error saying
    which extra to install."""
    try:
        import matplotlib
    except ImportError:
        raise MissingDependencyError(PLOT_HINT) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_convergence(results: Mapping[str, object], path: str, *, title: str = "") -> None:
    """Loss suboptimality and gradient norm against iteration and time, one line per fit.

    Parameters
    ----------
    results : mapping of label to FitResult
    path : str
        Output PNG file.
    title : str, optional

    Raises
    ------
    MissingDependencyError
        matplotlib is not installed (``pip install 'dsketch[plot]'``).
    """
    plt = _pyplot()

    fig, axes = plt.subplots(2, 2, figsize=(11, 8), constrained_layout=True)
    for label, res in results.items():
        h = res.history  # type: ignore[attr-defined]
        loss = np.asarray(h["loss"], dtype=float)
        gn = np.asarray(h["grad_norm"], dtype=float)
        it = np.asarray(h["iteration"], dtype=float)
        sec = np.asarray(h["seconds"], dtype=float)
        best = np.nanmin(loss)
        gap = loss - best
        scale = max(abs(best), np.finfo(float).tiny)
        rel = np.where(gap > 0, gap / scale, np.nan)
        for col, xs, xl in ((0, it, "iteration"), (1, sec, "seconds")):
            axes[0, col].semilogy(xs, rel, "o-", label=label)
            axes[0, col].set_xlabel(xl)
            axes[0, col].set_ylabel("(loss - final loss) / |final loss|")
            axes[1, col].semilogy(xs, gn, "o-", label=label)
            axes[1, col].set_xlabel(xl)
            axes[1, col].set_ylabel("gradient norm")
    for ax in axes.ravel():
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
