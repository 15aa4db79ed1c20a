"""Regularised softmax regression (Deng, Li & Song, arXiv 2304.10411; MODELS.md section 3)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from dsketch.models.base import FloatArray, Model, RowTerms, Scalars, Stats


def _w2(w: FloatArray | None, n: int) -> FloatArray | float:
    return 0.0 if w is None else w * w


class SoftmaxRegression(Model):
    r"""Softmax regression with the row-weighted regulariser.

    Objective (``v = A x``, ``f = exp(v) / <exp(v), 1>``, ``c = f - b``)::

        L(x) = 1/2 ||f - b||^2 + 1/2 ||diag(w) A x||^2

    Gradient::

        grad L = A^T (f*c - <f,c> f + w*w*v)

    Hessian, in Gram form ``A^T diag(D) A + (A^T U) C (A^T U)^T``::

        D = (2f - b)*f - <f,c> f + w*w
        U = [f, (2f - b)*f]
        C = [[3||f||^2 - 2<f,b>, -1], [-1, 0]]

    Global scalars come from max-shifted sums (online log-sum-exp): ``m = max v``,
    ``S0 = sum e^(v-m)``, ``S1 = sum e^(2(v-m))``, ``S2 = sum e^(v-m) b``; then
    ``||f||^2 = S1/S0^2`` and ``<f,b> = S2/S0``. Merging rescales by ``e^(m_i - m)``, so
    the sums neither overflow (``|v|`` up to 700 and beyond) nor lose the normaliser over
    10^8 rows.

    Notes
    -----
    ``f`` lies on the simplex, so the data term is O(1/n) (MODELS.md section 1.1b):
    choose ``w`` of order ``1/n`` (the "weak" regime) to let the data matter, or of order
    one ("strong") for the papers' positive-definiteness guarantee.

    References
    ----------
    Y. Deng, Z. Li, Z. Song. Attention scheme inspired softmax regression. arXiv 2304.10411.
    """

    name: ClassVar[str] = "softmax"
    rank: ClassVar[int] = 2
    uses_w: ClassVar[bool] = True

    def stats(self, eta: FloatArray, b: FloatArray, w: FloatArray | None) -> Stats:
        n = int(eta.size)
        if n == 0:
            return {"n": 0, "m": -np.inf, "S0": 0.0, "S1": 0.0, "S2": 0.0}
        m = float(np.max(eta))
        e = np.exp(eta - m)
        return {"n": n, "m": m, "S0": float(e.sum()), "S1": float(e @ e), "S2": float(e @ b)}

    def merge_stats(self, left: Stats, right: Stats) -> Stats:
        m = max(left["m"], right["m"])
        if m == -np.inf:
            return {**left, "n": left["n"] + right["n"]}
        sl = np.exp(left["m"] - m) if left["m"] > -np.inf else 0.0
        sr = np.exp(right["m"] - m) if right["m"] > -np.inf else 0.0
        return {
            "n": left["n"] + right["n"],
            "m": m,
            "S0": left["S0"] * sl + right["S0"] * sr,
            "S1": left["S1"] * sl * sl + right["S1"] * sr * sr,
            "S2": left["S2"] * sl + right["S2"] * sr,
        }

    def scalars(self, stats: Stats) -> Scalars:
        S0 = float(stats["S0"])
        ff = float(stats["S1"]) / (S0 * S0)
        fb = float(stats["S2"]) / S0
        return {
            "n": float(stats["n"]),
            "m": float(stats["m"]),
            "S0": S0,
            "log_alpha": float(stats["m"]) + float(np.log(S0)),
            "ff": ff,
            "fb": fb,
            "fc": ff - fb,
            "s": 3.0 * ff - 2.0 * fb,
        }

    def _f(self, eta: FloatArray, scalars: Scalars) -> FloatArray:
        return np.exp(eta - scalars["m"]) / scalars["S0"]

    def loss_terms(self, eta: FloatArray, b: FloatArray, w: FloatArray | None, scalars: Scalars) -> float:
        c = self._f(eta, scalars) - b
        reg = 0.0 if w is None else float(np.sum((w * eta) ** 2))
        return 0.5 * float(c @ c) + 0.5 * reg

    def row_terms(self, eta: FloatArray, b: FloatArray, w: FloatArray | None, scalars: Scalars) -> RowTerms:
        f = self._f(eta, scalars)
        c = f - b
        fc = scalars["fc"]
        w2 = _w2(w, eta.size)
        p = (2.0 * f - b) * f
        return RowTerms(
            grad_weight=f * c - fc * f + w2 * eta,
            diag=p - fc * f + w2,
            lowrank=np.column_stack([f, p]),
        )

    def core(self, scalars: Scalars) -> FloatArray:
        return np.array([[scalars["s"], -1.0], [-1.0, 0.0]])

    # -- data simulation ----------------------------------------------------------
    def sample_targets(self, eta: FloatArray, scalars: Scalars, rng: np.random.Generator, *, noise: float) -> FloatArray:
        """``b = f(eta) * (1 + noise * N(0, 1))`` (the planted x gives ``f``)."""
        return self._f(eta, scalars) * (1.0 + noise * rng.standard_normal(eta.size))

    @staticmethod
    def default_w(n_samples: int, regime: str) -> float:
        """Row weight for generated problems.

        ``"weak"``: ``w = 0.3 / n`` (MODELS.md section 1.1b: the optimum stays near the planted
        x). ``"strong"``: ``w = sqrt(13)``, so ``w^2 >= 6 (1 + ||b||_inf) + 1`` for
        ``||b||_inf <= 1`` (MODELS.md section 3 bound with ``l / sigma_min^2 <= 1``).
        """
        if regime == "weak":
            return 0.3 / n_samples
        if regime == "strong":
            return float(np.sqrt(13.0))
        raise ValueError(f"regime must be 'weak' or 'strong'; got {regime!r}")
