"""Regularised exp / cosh / sinh regression (Li, Song & Zhou, arXiv 2303.15725; MODELS.md section 2)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from dsketch.models.base import FloatArray, Model, RowTerms, Scalars, Stats

_PHI = {
    # phi, phi', phi''
    "exp": (np.exp, np.exp, np.exp),
    "cosh": (np.cosh, np.sinh, np.cosh),
    "sinh": (np.sinh, np.cosh, np.sinh),
}


class ExpRegression(Model):
    r"""``L(x) = 1/2 ||phi(A x) - b||^2 + 1/2 ||diag(w) A x||^2`` with phi in {exp, cosh, sinh}.

    Gradient ``A^T (phi'(v) * (phi(v) - b) + w*w*v)``; Hessian ``A^T diag(D) A`` with the
    purely diagonal ``D = phi'(v)^2 + phi''(v) (phi(v) - b) + w*w`` (no low-rank part).

    Notes
    -----
    ``phi`` grows like ``e^|v|``: for ``|Ax|`` beyond about 355 the loss exceeds the float64
    range and is reported as ``+inf`` (never NaN and without floating-point warnings); the
    line search rejects such steps.

    References
    ----------
    Z. Li, Z. Song, T. Zhou. Solving regularized exp, cosh and sinh regression problems.
    arXiv 2303.15725.
    """

    rank: ClassVar[int] = 0
    uses_w: ClassVar[bool] = True

    def __init__(self, phi: str = "exp") -> None:
        if phi not in _PHI:
            raise ValueError(f"phi must be one of {sorted(_PHI)}; got {phi!r}")
        self.phi = phi

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.phi

    def describe(self) -> dict[str, object]:
        return {"model": self.phi}

    def _phis(self, eta: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        f0, f1, f2 = _PHI[self.phi]
        with np.errstate(over="ignore"):
            return f0(eta), f1(eta), f2(eta)

    def stats(self, eta: FloatArray, b: FloatArray, w: FloatArray | None) -> Stats:
        return {"n": int(eta.size)}

    def merge_stats(self, left: Stats, right: Stats) -> Stats:
        return {"n": left["n"] + right["n"]}

    def scalars(self, stats: Stats) -> Scalars:
        return {"n": float(stats["n"])}

    def loss_terms(self, eta: FloatArray, b: FloatArray, w: FloatArray | None, scalars: Scalars) -> float:
        u, _, _ = self._phis(eta)
        with np.errstate(over="ignore", invalid="ignore"):
            c = u - b
            val = 0.5 * float(np.sum(c * c))
        if not np.isfinite(val):
            return float("inf")
        reg = 0.0 if w is None else float(np.sum((w * eta) ** 2))
        return val + 0.5 * reg

    def row_terms(self, eta: FloatArray, b: FloatArray, w: FloatArray | None, scalars: Scalars) -> RowTerms:
        u, d1, d2 = self._phis(eta)
        w2 = 0.0 if w is None else w * w
        with np.errstate(over="ignore", invalid="ignore"):
            c = u - b
            return RowTerms(grad_weight=d1 * c + w2 * eta, diag=d1 * d1 + d2 * c + w2, lowrank=None)

    def sample_targets(self, eta: FloatArray, scalars: Scalars, rng: np.random.Generator, *, noise: float) -> FloatArray:
        """``b = phi(eta) + noise * std(phi(eta)) * N(0, 1)``."""
        u, _, _ = self._phis(eta)
        scale = float(np.std(u)) if u.size > 1 else 1.0
        return u + noise * scale * rng.standard_normal(eta.size)

    def default_w(self, n_samples: int, regime: str) -> float:
        """``"weak"``: ``w = 1e-3``; ``"strong"``: ``w^2 = 1 + max(0, -inf_v D_phi)`` with ``|b| <= 3``.

        MODELS.md section 2: ``inf_v`` of the non-w part of ``D`` is ``-b^2/8`` (exp),
        ``-1 - b^2/8`` (cosh, b > 4, else ``1 - b``) and ``1 - b^2/8`` (sinh); for targets of
        magnitude up to 3 the strong choice makes every ``D_i >= 1``.
        """
        if regime == "weak":
            return 1e-3
        if regime == "strong":
            worst = {"exp": 9.0 / 8.0, "cosh": 2.0, "sinh": 0.125}[self.phi]
            return float(np.sqrt(1.0 + worst))
        raise ValueError(f"regime must be 'weak' or 'strong'; got {regime!r}")
