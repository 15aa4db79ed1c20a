"""Normalised entrywise-map regressions: ResNet+softmax and softmax-ReLU (docs/theory.md#the-normalised-family).

Both models are instances of the normalised family of docs/theory.md#the-normalised-family: with
``v = A x``, an entrywise map ``phi``, ``u = phi(v)``, ``alpha = <u, 1>``, ``f = u / alpha``
and ``c = f - b``::

    L(x)      = 1/2 ||f - b||^2 + 1/2 ||diag(w) A x||^2
    q = phi'(v) / alpha,   r = phi''(v) / alpha
    grad L(x) = A^T (q*c - <f,c> q + w*w*v)
    D         = q*q + (c - <f,c>)*r + w*w
    U         = [q, (2f - b)*q],   C = [[3||f||^2 - 2<f,b>, -1], [-1, 0]]

The shared machinery (max-shifted statistics, their merge, the validity flag of the
normaliser and the per-row terms) lives in :class:`NormalisedMapModel`; the two public
models only supply the shifted ``phi``, ``phi'`` and ``phi''``.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any, ClassVar

import numpy as np

from dsketch.errors import InvalidParameterError, ModelDomainError
from dsketch.models.base import FloatArray, Model, RowTerms, Scalars, Stats

REGIMES = ("weak", "strong")
READINGS = ("A", "B")


def _w2(w: FloatArray | None) -> FloatArray | float:
    """``w * w``, or 0 when the store has no row weights."""
    return 0.0 if w is None else w * w


def _empty_stats(n: int, bad: int) -> Stats:
    return {"n": n, "bad": bad, "m": -np.inf, "S0": 0.0, "S1": 0.0, "S2": 0.0, "Sa": 0.0}


class NormalisedMapModel(Model):
    r"""Shared maths of ``f = phi(Ax) / <phi(Ax), 1>`` models (docs/theory.md#the-normalised-family).

    Subclasses implement :meth:`_block_shift` (the shift ``m`` of one block) and
    :meth:`_shifted` (``e^{-m} phi(v)``, ``e^{-m} phi'(v)``, ``e^{-m} phi''(v)``). Every
    normalised quantity (``f``, ``q``, ``r``) is unchanged by the common factor ``e^{-m}``.

    Statistics of one block: ``n`` (rows), ``bad`` (rows with a non-finite ``A x``),
    ``m`` (the shift), ``S0 = sum u~``, ``S1 = sum u~^2``, ``S2 = sum u~ b`` and
    ``Sa = sum |u~|`` with ``u~ = e^{-m} phi(v)``. Merging rescales each side by
    ``e^{m_side - m}`` (``<= 1``; squared for ``S1``) as in an online log-sum-exp.

    Validity contract (the normaliser ``alpha = e^m S0`` must be safely non-zero):
    :meth:`scalars` never raises for a non-empty problem. It returns ``valid = 1.0`` when
    no row is non-finite and ``S0 > ALPHA_RTOL * Sa`` (``alpha`` positive and not lost to
    cancellation between its terms), otherwise ``valid = 0.0`` with ``ff``, ``fb``, ``fc``,
    ``s`` and ``log_alpha`` set to NaN. With ``valid == 0``, :meth:`loss_terms` returns
    ``+inf`` (so a line search rejects the trial step) while :meth:`row_terms` and
    :meth:`sample_targets` raise :class:`~dsketch.errors.ModelDomainError` with a message
    that says what is wrong and how to fix it (:meth:`check_scalars`).
    """

    rank: ClassVar[int] = 2
    uses_w: ClassVar[bool] = True
    #: Relative size ``alpha / sum |phi(v_i)|`` below which ``alpha`` is rejected: the
    #: summation error of ``alpha`` is about ``eps * log2(n) * sum |phi(v_i)|``, so this
    #: keeps at least ~6 correct digits in ``alpha`` (and hence in ``f``) for 1e8 rows.
    ALPHA_RTOL: ClassVar[float] = 1e-8

    # -- subclass hooks -------------------------------------------------------------
    @abstractmethod
    def _block_shift(self, eta: FloatArray) -> float:
        """Shift ``m`` of one block of finite ``eta`` (``-inf`` when all its sums are 0)."""

    @abstractmethod
    def _shifted(self, eta: FloatArray, m: float) -> tuple[FloatArray, FloatArray, FloatArray]:
        """``e^{-m} (phi(v), phi'(v), phi''(v))`` for ``v = eta <= m`` (no overflow)."""

    @abstractmethod
    def _alpha_text(self) -> str:
        """How ``alpha`` is defined, for error messages."""

    @abstractmethod
    def _domain_hint(self) -> str:
        """How to get back into the model's domain, for error messages."""

    # -- global statistics ----------------------------------------------------------
    def stats(self, eta: FloatArray, b: FloatArray, w: FloatArray | None) -> Stats:
        """Max-shifted sums ``n, bad, m, S0, S1, S2, Sa`` of one block (class docstring).

        Non-finite entries of ``eta`` do not raise here (a line-search trial may hold
        them); they are counted in ``bad`` and make the merged scalars invalid.
        """
        n = int(eta.size)
        if n == 0:
            return _empty_stats(0, 0)
        finite = np.isfinite(eta)
        if not finite.all():
            return _empty_stats(n, int(n - np.count_nonzero(finite)))
        m = self._block_shift(eta)
        if m == -np.inf:
            return _empty_stats(n, 0)
        u = self._shifted(eta, m)[0]
        return {
            "n": n,
            "bad": 0,
            "m": m,
            "S0": float(u.sum()),
            "S1": float(u @ u),
            "S2": float(u @ b),
            "Sa": float(np.abs(u).sum()),
        }

    def merge_stats(self, left: Stats, right: Stats) -> Stats:
        """Rescale both sides to the larger shift and add (associative and commutative)."""
        m = max(left["m"], right["m"])
        n, bad = left["n"] + right["n"], left["bad"] + right["bad"]
        if m == -np.inf:
            return _empty_stats(n, bad)
        out: Stats = {"n": n, "bad": bad, "m": m}
        with np.errstate(under="ignore"):
            sl = float(np.exp(left["m"] - m))  # exp(-inf) = 0 for an empty side
            sr = float(np.exp(right["m"] - m))
            out["S0"] = left["S0"] * sl + right["S0"] * sr
            out["S1"] = left["S1"] * sl * sl + right["S1"] * sr * sr
            out["S2"] = left["S2"] * sl + right["S2"] * sr
            out["Sa"] = left["Sa"] * sl + right["Sa"] * sr
        return out

    def scalars(self, stats: Stats) -> Scalars:
        """``n, bad, m, S0, Sa, valid, log_alpha, ff, fb, fc, s`` from merged statistics.

        ``valid`` is 1.0 or 0.0 (class docstring); when it is 0.0 the last five are NaN.

        Raises
        ------
        ModelDomainError
            Only if the statistics cover no rows.
        """
        if stats["n"] == 0:
            raise ModelDomainError(f"{self.name} scalars need at least one row; got n=0")
        S0, Sa, m = float(stats["S0"]), float(stats["Sa"]), float(stats["m"])
        out: Scalars = {
            "n": float(stats["n"]),
            "bad": float(stats["bad"]),
            "m": m,
            "S0": S0,
            "Sa": Sa,
        }
        if stats["bad"] == 0 and S0 > 0.0 and S0 > self.ALPHA_RTOL * Sa:
            ff = float(stats["S1"]) / (S0 * S0)
            fb = float(stats["S2"]) / S0
            out.update(valid=1.0, log_alpha=m + math.log(S0), ff=ff, fb=fb, fc=ff - fb,
                       s=3.0 * ff - 2.0 * fb)
        else:
            nan = float("nan")
            out.update(valid=0.0, log_alpha=nan, ff=nan, fb=nan, fc=nan, s=nan)
        return out

    def check_scalars(self, scalars: Scalars) -> None:
        """Raise :class:`ModelDomainError` (with the reason and a fix) if ``valid == 0``."""
        if scalars["valid"] != 0.0:
            return
        if scalars["bad"] > 0:
            raise ModelDomainError(
                f"{self.name} needs a finite linear predictor A x; {int(scalars['bad'])} of "
                f"{int(scalars['n'])} entries are NaN or infinite (check x and the design matrix)"
            )
        S0, Sa, m = scalars["S0"], scalars["Sa"], scalars["m"]
        alpha = self._fmt(S0, m)
        if S0 <= 0.0:
            raise ModelDomainError(f"{self._alpha_text()} = {alpha} <= 0; {self._domain_hint()}")
        raise ModelDomainError(
            f"{self._alpha_text()} = {alpha} is too close to 0 relative to its terms "
            f"(sum of absolute values {self._fmt(Sa, m)}; ratio below {self.ALPHA_RTOL:g}), "
            f"so f = phi(Ax)/alpha is dominated by rounding; {self._domain_hint()}"
        )

    @staticmethod
    def _fmt(S: float, m: float) -> str:
        """``S * e^m`` as text, without overflow."""
        if S == 0.0 or m == -np.inf:
            return "0"
        if m + math.log(abs(S)) < 700.0:
            return f"{S * math.exp(m):.6g}"
        return f"{S:.6g}*exp({m:.6g})"

    # -- per-row terms -------------------------------------------------------------
    def probabilities(self, eta: FloatArray, scalars: Scalars) -> FloatArray:
        """``f = phi(eta) / alpha``: the block's slice of the normalised vector."""
        self.check_scalars(scalars)
        with np.errstate(under="ignore"):
            return self._shifted(eta, scalars["m"])[0] / scalars["S0"]

    def loss_terms(
        self, eta: FloatArray, b: FloatArray, w: FloatArray | None, scalars: Scalars
    ) -> float:
        """``1/2 sum (f_i - b_i)^2 + 1/2 sum w_i^2 eta_i^2``; ``+inf`` when ``valid == 0``."""
        if scalars["valid"] == 0.0:
            return float("inf")
        c = self.probabilities(eta, scalars) - b
        reg = 0.0 if w is None else float(np.sum((w * eta) ** 2))
        return 0.5 * float(c @ c) + 0.5 * reg

    def row_terms(
        self, eta: FloatArray, b: FloatArray, w: FloatArray | None, scalars: Scalars
    ) -> RowTerms:
        """``r = q*c - <f,c> q + w^2 v``, ``D`` and ``U = [q, (2f - b)*q]`` (module docstring).

        Raises
        ------
        ModelDomainError
            If ``scalars["valid"] == 0`` (normaliser not safely positive, or non-finite ``A x``).
        """
        self.check_scalars(scalars)
        S0, fc = scalars["S0"], scalars["fc"]
        with np.errstate(under="ignore"):
            u, du, d2u = self._shifted(eta, scalars["m"])
        f, q, r = u / S0, du / S0, d2u / S0
        c = f - b
        w2 = _w2(w)
        return RowTerms(
            grad_weight=q * c - fc * q + w2 * eta,
            diag=q * q + (c - fc) * r + w2,
            lowrank=np.column_stack([q, (2.0 * f - b) * q]),
        )

    def core(self, scalars: Scalars) -> FloatArray:
        """``C = [[3||f||^2 - 2<f,b>, -1], [-1, 0]]``."""
        return np.array([[scalars["s"], -1.0], [-1.0, 0.0]])

    # -- data simulation -----------------------------------------------------------
    def sample_targets(
        self, eta: FloatArray, scalars: Scalars, rng: np.random.Generator, *, noise: float
    ) -> FloatArray:
        """Targets for a planted ``x``: ``b = f(eta) * (1 + noise * N(0, 1))``.

        ``scalars`` are those of the whole ``A x_planted`` (computed with ``b = 0``,
        ``w = None``). Raises :class:`ModelDomainError` if they are invalid.
        """
        f = self.probabilities(eta, scalars)
        return f * (1.0 + noise * rng.standard_normal(eta.size))

    @staticmethod
    def default_w(n_samples: int, regime: str, *, b_max: float = 1.0) -> float:
        """Constant row weight ``w`` for generated problems (same values as softmax).

        ``"weak"``: ``w = 0.3 / n_samples`` (docs/theory.md#regimes-of-the-row-weights). ``"strong"``:
        ``w^2 = 6 (1 + b_max) + 1``. For every model of this family (derived as in
        docs/theory.md#softmax-regression)::

            B >= -||c||_inf (1 + ||f||_1) (max_i |r_i| + 2 ||q||_2^2) I,

        which is ``-6 ||c||_inf >= -6 (1 + ||b||_inf)`` whenever ``f >= 0``,
        ``sum f = 1``, ``|r| <= 1`` and ``||q||_2 <= 1``. That holds at every ``x`` for
        softmax-ReLU reading A (``q = r = f * 1[v >= 0]``), so there the strong regime
        guarantees ``hess L >= sigma_min(A)^2 I`` off the kinks. For ResNet+softmax and
        reading B, ``q`` grows without bound as ``alpha -> 0``: no ``x``-uniform bound
        exists and the strong value is the softmax one, a heuristic.
        """
        if regime == "weak":
            return 0.3 / n_samples
        if regime == "strong":
            return float(np.sqrt(6.0 * (1.0 + abs(b_max)) + 1.0))
        raise InvalidParameterError(f"regime must be one of {REGIMES}; got {regime!r}")


class ResNetSoftmaxRegression(NormalisedMapModel):
    r"""ResNet+softmax regression (Song, Wang & Yin, arXiv 2309.13482; docs/theory.md#resnet-softmax-regression).

    ``phi(v) = e^v + v``, so ``q = (e^v + 1) / alpha`` and ``r = e^v / alpha``; objective,
    gradient and Gram-form Hessian are those of the module docstring (rank 2).

    ``f`` is not a probability vector (entries can be negative) and ``alpha`` can be zero
    or negative, since ``e^t + t < 0`` for ``t < -W(1) ~ -0.567``. Validity contract
    (see :class:`NormalisedMapModel`): ``scalars`` returns ``valid = 0.0`` when
    ``alpha <= 0``, when ``alpha < ALPHA_RTOL * sum_i |e^{v_i} + v_i|`` or when ``A x``
    is not finite; then ``loss_terms`` is ``+inf`` (a line search rejects the step) and
    ``row_terms`` / ``sample_targets`` raise :class:`~dsketch.errors.ModelDomainError`
    ("alpha(x) = sum(exp(Ax) + Ax) = ... <= 0; the ResNet-softmax model needs alpha > 0 ...").
    At ``x = 0``, ``alpha = n > 0``.

    Stable statistics (docs/theory.md#one-pass-for-the-loss-and-gradient): shift ``m = max(max v, 0)``,
    ``u~ = e^{v-m} + v e^{-m}``, ``u~' = e^{v-m} + e^{-m}``, ``u~'' = e^{v-m}``. Taking
    ``m >= 0`` (instead of ``max v``) keeps ``e^{-m} <= 1``, so a block whose ``v`` are
    all very negative does not overflow; any common shift leaves ``f, q, r`` unchanged.
    Merging rescales every sum, the ``v e^{-m}`` part included, by ``e^{m_side - m}``.

    Scalars: ``n, bad, m, S0, Sa, valid, log_alpha, ff, fb, fc, s`` (see
    :meth:`NormalisedMapModel.scalars`). No data-driven starting point (zeros).

    References
    ----------
    Z. Song, W. Wang, J. Yin. A unified scheme of ResNet and softmax. arXiv 2309.13482 (2023).
    """

    name: ClassVar[str] = "resnet-softmax"

    def __repr__(self) -> str:
        return "ResNetSoftmaxRegression()"

    def _block_shift(self, eta: FloatArray) -> float:
        return max(float(np.max(eta)), 0.0)

    def _shifted(self, eta: FloatArray, m: float) -> tuple[FloatArray, FloatArray, FloatArray]:
        with np.errstate(under="ignore"):
            e = np.exp(eta - m)
            s = math.exp(-m) if m < 745.0 else 0.0
            return e + eta * s, e + s, e

    def _alpha_text(self) -> str:
        return "alpha(x) = sum(exp(Ax) + Ax)"

    def _domain_hint(self) -> str:
        return ("the ResNet-softmax model needs alpha > 0: start closer to the data (x0) "
                "or rescale A")


class SoftmaxReluRegression(NormalisedMapModel):
    r"""Softmax-ReLU regression (Deng, Song & Xie, arXiv 2308.08358; docs/theory.md#softmax-relu-regression).

    The paper's exact loss is unconfirmed; two readings of docs/theory.md#softmax-relu-regression:

    * ``reading="A"`` (default): ``f = softmax(ReLU(A x))``, i.e. ``phi(v) = exp(ReLU(v))``,
      ``q = r = e^v 1[v >= 0] / alpha``. ``alpha >= n > 0`` always. Stable
      statistics shift by ``m = max(max v, 0)``: ``u~ = e^{ReLU(v) - m}``.
    * ``reading="B"``: normalised ReLU ``f = ReLU(A x) / <ReLU(A x), 1>``, ``q = 1[v >= 0] / alpha``,
      ``r = 0``. Needs some ``(A x)_i > 0``; the validity contract of
      :class:`NormalisedMapModel` applies (``valid = 0.0`` / ``+inf`` loss /
      ``ModelDomainError`` from ``row_terms``), so ``x = 0`` is not a valid start.
      Statistics are scaled by ``e^{-m} = 1 / max v``.

    Objective, gradient and Gram-form Hessian: module docstring (rank 2).

    Non-smoothness: ``phi`` has a kink at 0, so ``L`` is twice differentiable only off the
    hyperplanes ``(A x)_i = 0``; the Hessian jumps across them and is Lipschitz only while
    the sign pattern of ``A x`` is fixed. At ``v_i = 0`` exactly, ``phi'`` and ``phi''`` take
    their values from the right (``1[v >= 0]``). This matters at the default start ``x = 0``,
    where every ``v_i = 0``: the left convention would give ``q = 0`` and a zero gradient
    (a spurious stationary point); the right one gives softmax's gradient at 0 for reading A.
    Rows of ``A`` that are entirely zero are unaffected by the choice (they enter every
    reduction through ``A^T``).

    Reading B is scale invariant: ``f(t x) = f(x)`` for ``t > 0``. With ``w > 0`` the
    regulariser then drives ``x -> 0`` and the infimum is not attained; with ``w = 0`` the
    minimisers form rays and the Hessian is singular along ``x`` (``H x = -grad``).
    Its warm start (:meth:`init_terms`) regresses ``b`` on ``A`` over rows with ``b > 0``:
    for targets ``b = f(A x_p)`` this returns ``x_p / alpha(x_p)``, which has the same
    ``f`` and ``alpha = 1``. Reading A has no warm start (zeros): ``log b = ReLU(v) - log alpha``
    is not linear in ``x`` (its ``init_terms`` returns an empty dict; the engine still
    spends one pass, see :attr:`has_warm_start`).

    Parameters
    ----------
    reading : {"A", "B"}, default "A"
    """

    name: ClassVar[str] = "softmax-relu"
    #: The Hessian jumps across (A x)_i = 0: the solver also stops on convergence in loss value.
    smooth: ClassVar[bool] = False

    def __init__(self, reading: str = "A") -> None:
        if reading not in READINGS:
            raise InvalidParameterError(
                f"reading must be one of ('A', 'B', 'C'); got {reading!r} (reading C is dsketch.models.SoftmaxReluPaired)"
            )
        self.reading = reading

    def __repr__(self) -> str:
        return f"SoftmaxReluRegression(reading={self.reading!r})"

    def describe(self) -> dict[str, Any]:
        """``{"model": "softmax-relu", "reading": ...}``."""
        return {"model": self.name, "reading": self.reading}

    @property
    def has_warm_start(self) -> bool:
        """Whether :meth:`init_coef` can return something other than zeros (reading B)."""
        return self.reading == "B"

    def _block_shift(self, eta: FloatArray) -> float:
        top = float(np.max(eta))
        if self.reading == "A":
            return max(top, 0.0)
        return math.log(top) if top > 0.0 else -np.inf

    def _shifted(self, eta: FloatArray, m: float) -> tuple[FloatArray, FloatArray, FloatArray]:
        pos = eta >= 0.0  # right derivative at the kink (class docstring)
        if self.reading == "A":
            with np.errstate(under="ignore"):
                u = np.exp(np.where(pos, eta, 0.0) - m)
            du = np.where(pos, u, 0.0)
            return u, du, du
        s = math.exp(-m)
        du = np.where(pos, s, 0.0)
        return np.where(pos, eta * s, 0.0), du, np.zeros_like(eta)

    def _alpha_text(self) -> str:
        if self.reading == "A":
            return "alpha(x) = sum(exp(ReLU(Ax)))"
        return "alpha(x) = sum(ReLU(Ax))"

    def _domain_hint(self) -> str:
        return ("the normalised-ReLU reading (B) of softmax-relu needs alpha > 0, i.e. some "
                "(Ax)_i > 0: start from an x0 with A x0 not <= 0 (the default warm start does "
                "this when some targets are positive)")

    # -- starting point -----------------------------------------------------------
    def init_terms(self, A: Any, b: FloatArray, w: FloatArray | None) -> dict[str, Any]:
        """Reading B: normal equations of ``b ~ A x`` over rows with ``b > 0``; A: ``{}``."""
        if self.reading == "A":
            return {}
        pos = np.flatnonzero(b > 0)
        Av = A[pos]
        G = Av.T @ Av
        G = G.toarray() if hasattr(G, "toarray") else np.asarray(G)
        return {
            "G": np.asarray(G, dtype=np.float64),
            "t": np.asarray(Av.T @ b[pos], dtype=np.float64).ravel(),
            "m": float(pos.size),
        }

    def init_coef(self, total: dict[str, Any], n_features: int) -> FloatArray:
        """Reading B: solve the normal equations (ridge 1e-10 * mean diagonal); else zeros."""
        if self.reading == "A" or "G" not in total or total["m"] < 1:
            return np.zeros(n_features)
        G = np.array(total["G"], dtype=np.float64)
        G[np.diag_indices(n_features)] += 1e-10 * max(float(np.trace(G)) / n_features, 1e-300)
        return np.linalg.lstsq(G, total["t"], rcond=None)[0]
