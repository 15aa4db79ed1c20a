"""Regularised softmax regression (Deng, Li & Song, arXiv 2304.10411; docs/theory.md#softmax-regression)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from dsketch.errors import InvalidParameterError, ModelDomainError
from dsketch.models.base import FloatArray, Model, RowTerms, Scalars, Stats

REGIMES = ("weak", "strong")


def _w2(w: FloatArray | None) -> FloatArray | float:
    """``w * w``, or 0 when the store has no row weights."""
    return 0.0 if w is None else w * w


class SoftmaxRegression(Model):
    r"""Softmax regression with the row-weighted regulariser of the paper.

    With ``v = A x``, ``alpha = <exp(v), 1>``, ``f = exp(v) / alpha`` and ``c = f - b``:

    Objective::

        L(x) = 1/2 ||f - b||^2 + 1/2 ||diag(w) A x||^2

    Gradient::

        grad L(x) = A^T r,   r = f*c - <f,c> f + w*w*v

    Hessian, in Gram form ``A^T diag(D) A + (A^T U) C (A^T U)^T``::

        D = (2f - b)*f - <f,c> f + w*w
        U = [f, (2f - b)*f]                        (n_samples x 2)
        C = [[s, -1], [-1, 0]],   s = 3||f||^2 - 2<f,b>

    ``D`` may be negative; ``D - w*w`` is bounded below by ``-(1 + 2||b||_inf)``.
    When ``w`` is None it is taken as zero.

    Global statistics are max-shifted sums, as in an online log-sum-exp: per block
    ``m = max v``, ``S0 = sum e^(v-m)``, ``S1 = sum e^(2(v-m))``, ``S2 = sum e^(v-m) b``.
    Merging rescales each side by ``e^(m_side - m)`` (a factor <= 1), so nothing
    overflows for any finite ``v`` (``|v|`` of 700 and beyond) and the normaliser keeps
    full relative precision over 10^8 rows. The scalars (keys of :meth:`scalars`) are
    ``n``, ``m``, ``S0``, ``log_alpha = m + log S0``, ``ff = ||f||^2 = S1/S0^2``,
    ``fb = <f,b> = S2/S0``, ``fc = <f,c> = ff - fb`` and ``s = 3 ff - 2 fb``.

    Notes
    -----
    ``f`` lies on the simplex, so the data term is O(1/n) and its curvature in ``x`` is
    O(1/n^2) (docs/theory.md#regimes-of-the-row-weights). With ``w`` of order one the regulariser dominates
    and ``x* ~ 0`` (the papers' "strong" regime, which guarantees a positive definite
    Hessian); with ``w ~ 0.3/n`` (the "weak" regime) the data term decides the optimum.
    See :meth:`default_w`. ``fc`` is formed as ``ff - fb``: its absolute error is of
    order ``eps * (ff + |fb|)`` and it loses relative accuracy when ``b`` is close to ``f``.

    References
    ----------
    Y. Deng, Z. Li, Z. Song. Attention scheme inspired softmax regression.
    arXiv 2304.10411 (2023).

    Examples
    --------
    >>> import numpy as np
    >>> from dsketch.models import SoftmaxRegression, loss_gradient_hessian
    >>> A = np.eye(3); b = np.full(3, 1 / 3)
    >>> loss, grad, hess = loss_gradient_hessian(SoftmaxRegression(), A, b, np.zeros(3))
    >>> float(loss), float(abs(grad).max())
    (0.0, 0.0)
    """

    name: ClassVar[str] = "softmax"
    rank: ClassVar[int] = 2
    uses_w: ClassVar[bool] = True

    def __repr__(self) -> str:
        return "SoftmaxRegression()"

    # -- global statistics ----------------------------------------------------------
    def stats(self, eta: FloatArray, b: FloatArray, w: FloatArray | None) -> Stats:
        """Max-shifted sums ``n, m, S0, S1, S2`` of one block (see the class docstring).

        Raises
        ------
        ModelDomainError
            If ``eta`` holds NaN or ``+inf`` (the normaliser is undefined).
        """
        n = int(eta.size)
        if n == 0:
            return {"n": 0, "m": -np.inf, "S0": 0.0, "S1": 0.0, "S2": 0.0}
        m = float(np.max(eta))
        if not np.isfinite(m):
            raise ModelDomainError(
                f"softmax needs a finite linear predictor A x; its maximum is {m} "
                "(check x and the design matrix for NaN or overflow)"
            )
        with np.errstate(under="ignore"):
            e = np.exp(eta - m)
            return {
                "n": n,
                "m": m,
                "S0": float(e.sum()),
                "S1": float(e @ e),
                "S2": float(e @ b),
            }

    def merge_stats(self, left: Stats, right: Stats) -> Stats:
        """Rescale both sides to the larger max and add (associative and commutative)."""
        m = max(left["m"], right["m"])
        out: Stats = {"n": left["n"] + right["n"], "m": m}
        if m == -np.inf:  # both sides empty
            return {**out, "S0": 0.0, "S1": 0.0, "S2": 0.0}
        with np.errstate(under="ignore"):
            sl = float(np.exp(left["m"] - m))  # exp(-inf) = 0 for an empty side
            sr = float(np.exp(right["m"] - m))
            out["S0"] = left["S0"] * sl + right["S0"] * sr
            out["S1"] = left["S1"] * sl * sl + right["S1"] * sr * sr
            out["S2"] = left["S2"] * sl + right["S2"] * sr
        return out

    def scalars(self, stats: Stats) -> Scalars:
        """``n, m, S0, log_alpha, ff, fb, fc, s`` from fully merged statistics.

        Raises
        ------
        ModelDomainError
            If the statistics cover no rows.
        """
        S0 = float(stats["S0"])
        if stats["n"] == 0 or not S0 > 0.0:
            raise ModelDomainError(f"softmax scalars need at least one row; got n={stats['n']}")
        m = float(stats["m"])
        ff = float(stats["S1"]) / (S0 * S0)
        fb = float(stats["S2"]) / S0
        return {
            "n": float(stats["n"]),
            "m": m,
            "S0": S0,
            "log_alpha": m + float(np.log(S0)),
            "ff": ff,
            "fb": fb,
            "fc": ff - fb,
            "s": 3.0 * ff - 2.0 * fb,
        }

    # -- per-row terms -------------------------------------------------------------
    def probabilities(self, eta: FloatArray, scalars: Scalars) -> FloatArray:
        """``f = exp(eta - m) / S0``: the block's slice of the softmax vector."""
        with np.errstate(under="ignore"):
            out: FloatArray = np.exp(eta - scalars["m"]) / scalars["S0"]
        return out

    def loss_terms(
        self, eta: FloatArray, b: FloatArray, w: FloatArray | None, scalars: Scalars
    ) -> float:
        """``1/2 sum (f_i - b_i)^2 + 1/2 sum w_i^2 eta_i^2`` over the block, formed directly."""
        c = self.probabilities(eta, scalars) - b
        reg = 0.0 if w is None else float(np.sum((w * eta) ** 2))
        return 0.5 * float(c @ c) + 0.5 * reg

    def row_terms(
        self, eta: FloatArray, b: FloatArray, w: FloatArray | None, scalars: Scalars
    ) -> RowTerms:
        """``r``, ``D`` and ``U = [f, (2f - b)*f]`` of the block (class docstring)."""
        f = self.probabilities(eta, scalars)
        fc = scalars["fc"]
        w2 = _w2(w)
        p = (2.0 * f - b) * f
        return RowTerms(
            grad_weight=f * (f - b) - fc * f + w2 * eta,
            diag=p - fc * f + w2,
            lowrank=np.column_stack([f, p]),
        )

    def core(self, scalars: Scalars) -> FloatArray:
        """``C = [[3||f||^2 - 2<f,b>, -1], [-1, 0]]``."""
        return np.array([[scalars["s"], -1.0], [-1.0, 0.0]])

    # -- starting point -----------------------------------------------------------
    def init_terms(self, A: Any, b: FloatArray, w: FloatArray | None) -> dict[str, Any]:
        """Normal equations of the log-linear fit ``log b ~ A x + c`` over rows with ``b > 0``.

        Since ``log f = A x - log alpha``, regressing ``log b`` on ``[A, 1]`` recovers ``x``
        up to the noise in ``b``: a starting point inside the region of fast local
        convergence when the targets are (noisy) softmax outputs (docs/theory.md#the-approximate-newton-framework (the condition on the start)).
        """
        pos = b > 0
        Av = A[np.flatnonzero(pos)]
        y = np.log(b[pos])
        G = Av.T @ Av
        G = G.toarray() if hasattr(G, "toarray") else np.asarray(G)
        return {
            "G": G,
            "s": np.asarray(Av.sum(axis=0), dtype=np.float64).ravel(),
            "t": np.asarray(Av.T @ y, dtype=np.float64).ravel(),
            "u": float(y.sum()),
            "m": float(y.size),
        }

    def init_coef(self, total: dict[str, Any], n_features: int) -> FloatArray:
        """Solve the bordered normal equations (ridge 1e-10 * trace for safety)."""
        if total["m"] < 2:
            return np.zeros(n_features)
        d = n_features
        M = np.zeros((d + 1, d + 1))
        M[:d, :d] = total["G"]
        M[:d, d] = M[d, :d] = total["s"]
        M[d, d] = total["m"]
        M[np.diag_indices(d + 1)] += 1e-10 * max(float(np.trace(M)) / (d + 1), 1e-300)
        rhs = np.concatenate([total["t"], [total["u"]]])
        sol = np.linalg.lstsq(M, rhs, rcond=None)[0]
        return sol[:d]

    # -- data simulation -----------------------------------------------------------
    def sample_targets(
        self, eta: FloatArray, scalars: Scalars, rng: np.random.Generator, *, noise: float
    ) -> FloatArray:
        """Targets for a planted ``x``: ``b = f(eta) * (1 + noise * N(0, 1))``.

        Parameters
        ----------
        eta : ndarray of shape (n_rows,)
            The block's slice of ``A x_planted``.
        scalars : dict
            ``self.scalars`` of the merged statistics of the whole ``A x_planted``
            (computed with ``b = 0``, ``w = None``).
        rng : numpy.random.Generator
        noise : float
            Relative (multiplicative) noise level.

        Returns
        -------
        b : ndarray of shape (n_rows,)
        """
        f = self.probabilities(eta, scalars)
        return f * (1.0 + noise * rng.standard_normal(eta.size))

    @staticmethod
    def default_w(n_samples: int, regime: str, *, b_max: float = 1.0) -> float:
        """Constant row weight ``w`` for generated problems.

        Parameters
        ----------
        n_samples : int
        regime : {"weak", "strong"}
            ``"weak"``: ``w = 0.3 / n_samples``. The regulariser's curvature ``w^2`` is then
            comparable to the data term's O(1/n^2) (docs/theory.md#regimes-of-the-row-weights: the optimum
            stays near the planted ``x``).
            ``"strong"``: the papers' regime, ``w^2 = 6 (1 + b_max) + 1``, which is 13
            for ``b_max = 1``. Since ``B >= -6 ||c||_inf I`` and
            ``||c||_inf <= 1 + ||b||_inf`` (docs/theory.md#softmax-regression), every target vector
            with ``||b||_inf <= b_max`` gives ``hess L(x) >= sigma_min(A)^2 I`` for every
            ``x``. The regulariser then dominates and ``x* ~ 0``.
        b_max : float, default 1.0
            Bound on ``||b||_inf`` assumed by the strong regime. Generated targets are
            ``f (1 + noise N(0,1))`` with ``f <= 1``.

        Returns
        -------
        float
        """
        if regime == "weak":
            return 0.3 / n_samples
        if regime == "strong":
            return float(np.sqrt(6.0 * (1.0 + abs(b_max)) + 1.0))
        raise InvalidParameterError(f"regime must be one of {REGIMES}; got {regime!r}")
