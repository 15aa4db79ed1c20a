"""Paired models: the rows of ``A`` meet the columns of a second matrix ``A2`` (docs/theory.md#softmax-relu-regression, docs/theory.md#two-layer-model-with-a-softmax-layer).

Both models have ``A1 = A`` (n x d, the store's ``A``), ``A2`` (m x n) and ``m`` targets
``b``. The store keeps ``A2`` transposed, as the row-aligned member ``A2T`` (n x m, chunked
like the rows of ``A``), so one pass over a row block pairs row ``i`` of ``A`` with column
``i`` of ``A2``; the targets are the global member ``global/b`` (length m). The per-row
methods receive the block of ``A2T`` where other models receive the targets.

* :class:`TwoLayerSoftmax` (``two-layer``, docs/theory.md#two-layer-model-with-a-softmax-layer): ``f = softmax(A x)``,
  ``z = A2 f``, ``L(x) = 1/2 ||h(z) - b||^2 + 1/2 ||diag(w) A x||^2`` with an outer
  function ``h``. With ``c = h(z) - b``, ``g_z = h'(z) c``, ``g_f = A2^T g_z`` and
  ``gamma = <f, g_f> = <z, g_z>``::

      grad L = A^T (f g_f - gamma f + w^2 v)
      D      = f g_f - gamma f + w^2
      U      = [f, g_f f, G^T],   G^T row i = f_i (A2[:, i] - z)
      C      = blkdiag([[2 gamma, -1], [-1, 0]], diag(h'(z)^2 + h''(z) c))

  a diagonal part plus an exact rank-(m+2) part.
* :class:`SoftmaxReluPaired` (``softmax-relu`` with ``reading="C"``, docs/theory.md#softmax-relu-regression):
  ``y = A2 ReLU(A x)``, ``f = softmax(y)`` (length m),
  ``L(x) = 1/2 ||f - b||^2 + 1/2 ||diag(w) A x||^2``. With ``e = 1[v >= 0]``,
  ``c = f - b`` and ``g = f c - <f, c> f``::

      grad L = A^T (e (A2^T g) + w^2 v)
      D      = w^2,   U = diag(e) A2^T,   C = B_sm

  where ``B_sm`` (m x m) is the softmax Hessian of ``1/2 ||softmax(y) - b||^2`` in ``y``.

The global scalars are m-vectors (``z`` or ``y``) reduced over all row blocks; the data
term of the loss depends on them alone and enters through :meth:`Model.global_loss`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from dsketch.errors import DSketchTypeError, InvalidParameterError, ModelDomainError, StoreFormatError
from dsketch.models.base import FloatArray, Model, RowTerms, Scalars, Stats

Outer = Callable[[FloatArray], FloatArray]


def _tanh(z: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    t = np.tanh(z)
    d1 = 1.0 - t * t
    return t, d1, -2.0 * t * d1


def _softplus(z: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    s = 0.5 * (1.0 + np.tanh(0.5 * z))  # the logistic sigmoid, without overflow
    return np.logaddexp(0.0, z), s, s * (1.0 - s)


def _sigmoid(z: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    s = 0.5 * (1.0 + np.tanh(0.5 * z))
    d1 = s * (1.0 - s)
    return s, d1, d1 * (1.0 - 2.0 * s)


def _identity(z: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    return z.copy(), np.ones_like(z), np.zeros_like(z)


OUTER_FUNCTIONS: dict[str, Callable[[FloatArray], tuple[FloatArray, FloatArray, FloatArray]]] = {
    "tanh": _tanh,
    "softplus": _softplus,
    "sigmoid": _sigmoid,
    "identity": _identity,
}


def _w2(w: FloatArray | None, n: int) -> FloatArray:
    return np.zeros(n) if w is None else w * w


class PairedModel(Model):
    """Shared plumbing of the paired models: store members, global targets, validity.

    Parameters
    ----------
    targets : array-like of shape (m,), optional
        The m targets ``b``. Left out, :meth:`bind` reads them from the store's
        ``global/b``; in-memory use (``loss_gradient_hessian``) needs them here.
    """

    uses_w: ClassVar[bool] = True
    needs_b: ClassVar[bool] = False
    row_members: ClassVar[tuple[str, ...]] = ("A2T",)

    def __init__(self, targets: Any = None) -> None:
        self.targets = None if targets is None else self._check_targets_vector(targets)

    @staticmethod
    def _check_targets_vector(targets: Any) -> FloatArray:
        t = np.asarray(targets, dtype=np.float64)
        if t.ndim != 1 or t.size == 0:
            raise InvalidParameterError(f"targets must be a non-empty 1-D array (length m); got shape {t.shape}")
        if not np.isfinite(t).all():
            raise InvalidParameterError("targets hold NaN or infinite values")
        return t

    @property
    def rank(self) -> int:  # type: ignore[override]
        """Columns of ``U``: ``m + 2`` (two-layer) or ``m`` (softmax-relu C); 0 until bound."""
        return 0 if self.targets is None else self.targets.size + self._extra_rank

    _extra_rank: ClassVar[int] = 0

    def row_data(self, block: Any) -> Any:
        """The block's rows of ``A2^T`` (n_rows x m)."""
        return block.extra["A2T"]

    def bind(self, spec: Any) -> Model:
        """Check the store's ``A2T`` and ``global/b``; return a copy holding the targets."""
        super().bind(spec)
        if "b" not in spec.global_members:
            raise StoreFormatError(
                f"model {self.name!r} needs its m targets as the global member 'global/b'; store "
                f"{spec.path!r} has global members {list(spec.global_members)} (write it with "
                "dsketch.store.write_problem(..., b=None, extra={'A2T': A2.T}, global_arrays={'b': b}))"
            )
        targets = spec.global_array("b")
        shape = spec.member_shape("A2T")
        if targets.ndim != 1 or shape[1:] != (targets.size,):
            raise StoreFormatError(
                f"store {spec.path!r}: 'A2T' has shape {shape} but 'global/b' has shape {targets.shape}; "
                "A2T must be (n_samples, m) with m = len(global/b)"
            )
        bound = self._copy()
        bound.targets = targets
        return bound

    def _copy(self) -> PairedModel:
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        return clone

    def _b(self) -> FloatArray:
        if self.targets is None:
            raise InvalidParameterError(
                f"model {self.name!r} has no targets: pass targets= (length m) or fit it on a store "
                "with 'global/b'"
            )
        return self.targets

    def _check_block(self, P: FloatArray, eta: FloatArray) -> FloatArray:
        P = np.asarray(P, dtype=np.float64)
        m = self._b().size
        if P.ndim != 2 or P.shape != (eta.size, m):
            raise InvalidParameterError(
                f"model {self.name!r}: the rows of A2^T must have shape ({eta.size}, {m}); got {P.shape}"
            )
        return P

    @staticmethod
    def _invalid(sc: Scalars) -> bool:
        return not sc.get("valid", 0.0)

    def check_scalars(self, sc: Scalars) -> None:
        """Raise :class:`ModelDomainError` when the predictor ``A x`` was not finite."""
        if self._invalid(sc):
            raise ModelDomainError(
                f"model {self.name!r}: A x holds non-finite values ({int(sc['bad'])} rows); the "
                "coefficients have diverged — start closer to the solution or rescale A"
            )

    def loss_terms(self, eta: FloatArray, b: FloatArray, w: FloatArray | None, scalars: Scalars) -> float:
        """The block's share of the regulariser ``1/2 sum w^2 v^2`` (+inf when invalid)."""
        if self._invalid(scalars) or not np.isfinite(eta).all():
            return math.inf
        return 0.0 if w is None else 0.5 * float(np.sum((w * eta) ** 2))

    def global_loss(self, scalars: Scalars) -> float:
        """The data term ``1/2 ||c||^2`` (+inf when invalid)."""
        return math.inf if self._invalid(scalars) else float(scalars["data_loss"])

    # -- problem generation -------------------------------------------------------------
    #: Scale of the generated ``A2T`` entries as a power of ``n`` (subclasses), chosen so
    #: that the m-vector reduced over all rows (``z`` or ``y``) is of order one.
    _a2_power: ClassVar[float] = 0.0

    @classmethod
    def a2_scale(cls, n_samples: int) -> float:
        """Standard deviation of the generated entries of ``A2T`` for ``n_samples`` rows."""
        return float(n_samples) ** cls._a2_power

    _strong_power: ClassVar[float] = -0.25

    @classmethod
    def default_w(cls, n_samples: int, regime: str) -> float:
        """Constant row weight of generated problems.

        ``"weak"``: ``0.3 / n`` (docs/theory.md#regimes-of-the-row-weights: the data term decides ``x*``).
        ``"strong"``: two-layer ``n^(-1/4)``: with the generator's scaling (``z`` of order
        one, rows of ``A`` of unit norm) the diagonal part of ``B`` is of order ``n^(-1/2)``
        per row, so ``w^2 = n^(-1/2)`` makes ``D + w^2`` comparable to or larger than it and
        the regulariser's curvature ``w^2 A^T A ~ n^(1/2) / d`` dominates: the papers'
        large-``w`` regime (measured, not a bound that holds for every ``x``).
        softmax-relu reading C ``n^(-1/2)``: its diagonal part is ``w^2`` alone (never
        negative), and this makes the regulariser's curvature ``~ 1/d``, of the order of the
        data term's; larger ``w`` push ``x*`` onto the kinks at ``A x = 0``.
        """
        if regime == "weak":
            return 0.3 / n_samples
        if regime == "strong":
            return float(n_samples) ** cls._strong_power
        raise InvalidParameterError(f"regime must be 'weak' or 'strong'; got {regime!r}")

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.name}
        if self.targets is not None:
            out["m"] = int(self.targets.size)
        return out


class TwoLayerSoftmax(PairedModel):
    r"""Two-layer model with a softmax first layer (Li, Song, Wang & Yin, arXiv 2311.15390).

    ``L(x) = 1/2 ||h(A2 softmax(A x)) - b||^2 + 1/2 ||diag(w) A x||^2`` (module docstring;
    docs/theory.md#two-layer-model-with-a-softmax-layer). Statistics of one block are max-shifted like softmax's: the shift ``m``,
    ``S0 = sum e^{v - m}`` and ``Z = A2T^T e^{v - m}`` (an m-vector), merged as in an online
    log-sum-exp; then ``z = Z / S0``.

    Parameters
    ----------
    h : {"tanh", "softplus", "sigmoid", "identity"} or tuple of three callables, default "tanh"
        The outer function, or ``(h, h', h'')`` acting elementwise on NumPy arrays (they are
        shipped to the workers, so module-level functions or lambdas both work).
    targets : array-like of shape (m,), optional
        See :class:`PairedModel`.
    """

    name: ClassVar[str] = "two-layer"
    _extra_rank: ClassVar[int] = 2
    _a2_power: ClassVar[float] = 0.5

    def __init__(self, h: str | tuple[Outer, Outer, Outer] = "tanh", targets: Any = None) -> None:
        super().__init__(targets)
        if isinstance(h, str):
            if h not in OUTER_FUNCTIONS:
                raise InvalidParameterError(f"h must be one of {sorted(OUTER_FUNCTIONS)} or (h, h', h''); got {h!r}")
        elif not (isinstance(h, tuple) and len(h) == 3 and all(callable(f) for f in h)):
            raise DSketchTypeError("h must be a name or a tuple of three callables (h, h', h'')")
        self.h = h

    def __repr__(self) -> str:
        return f"TwoLayerSoftmax(h={self.h if isinstance(self.h, str) else 'custom'!r})"

    def describe(self) -> dict[str, Any]:
        """``{"model": "two-layer", "h": ..., "m": ...}``."""
        return {**super().describe(), "h": self.h if isinstance(self.h, str) else "custom"}

    def outer(self, z: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """``h(z), h'(z), h''(z)``."""
        if isinstance(self.h, str):
            return OUTER_FUNCTIONS[self.h](np.asarray(z, dtype=np.float64))
        return tuple(np.asarray(f(z), dtype=np.float64) for f in self.h)  # type: ignore[return-value]

    # -- statistics -------------------------------------------------------------------
    def stats(self, eta: FloatArray, b: FloatArray, w: FloatArray | None) -> Stats:
        P = self._check_block(b, eta)
        n = int(eta.size)
        fin = np.isfinite(eta)
        bad = int(n - fin.sum())
        if bad or n == 0:
            return {"n": n, "bad": bad, "m": -np.inf, "S0": 0.0, "Z": np.zeros(P.shape[1])}
        m = float(eta.max())
        e = np.exp(eta - m)
        return {"n": n, "bad": 0, "m": m, "S0": float(e.sum()), "Z": P.T @ e}

    def merge_stats(self, left: Stats, right: Stats) -> Stats:
        m = max(left["m"], right["m"])
        sl = 0.0 if left["m"] == -np.inf else math.exp(left["m"] - m)
        sr = 0.0 if right["m"] == -np.inf else math.exp(right["m"] - m)
        return {
            "n": left["n"] + right["n"],
            "bad": left["bad"] + right["bad"],
            "m": m,
            "S0": sl * left["S0"] + sr * right["S0"],
            "Z": sl * left["Z"] + sr * right["Z"],
        }

    def scalars(self, stats: Stats) -> Scalars:
        """``valid``, ``log_alpha``, ``z``, ``c``, ``gz = h'(z) c``, ``gamma = <z, gz>``,
        ``Gamma = h'(z)^2 + h''(z) c`` and ``data_loss = 1/2 ||c||^2``."""
        b = self._b()
        if stats["bad"] or not stats["S0"] > 0.0:
            nan = np.full(b.size, np.nan)
            return {"valid": 0.0, "bad": float(stats["bad"]), "log_alpha": np.nan, "z": nan, "c": nan,
                    "gz": nan, "gamma": np.nan, "Gamma": nan, "data_loss": np.nan}
        z = stats["Z"] / stats["S0"]
        hz, h1, h2 = self.outer(z)
        c = hz - b
        gz = h1 * c
        return {
            "valid": 1.0,
            "bad": 0.0,
            "log_alpha": stats["m"] + math.log(stats["S0"]),
            "z": z,
            "c": c,
            "gz": gz,
            "gamma": float(z @ gz),
            "Gamma": h1 * h1 + h2 * c,
            "data_loss": 0.5 * float(c @ c),
        }

    # -- per-row terms ------------------------------------------------------------------
    def row_terms(self, eta: FloatArray, b: FloatArray, w: FloatArray | None, scalars: Scalars) -> RowTerms:
        self.check_scalars(scalars)
        P = self._check_block(b, eta)
        f = np.exp(eta - scalars["log_alpha"])
        fg = f * (P @ scalars["gz"])
        gamma = scalars["gamma"]
        w2 = _w2(w, eta.size)
        U = np.empty((eta.size, P.shape[1] + 2))
        U[:, 0] = f
        U[:, 1] = fg
        np.multiply(f[:, None], P - scalars["z"][None, :], out=U[:, 2:])
        return RowTerms(grad_weight=fg - gamma * f + w2 * eta, diag=fg - gamma * f + w2, lowrank=U)

    def core(self, scalars: Scalars) -> FloatArray:
        m = scalars["z"].size
        C = np.zeros((m + 2, m + 2))
        C[0, 0] = 2.0 * scalars["gamma"]
        C[0, 1] = C[1, 0] = -1.0
        C[2:, 2:] = np.diag(scalars["Gamma"])
        return C

    # -- problem generation -------------------------------------------------------------
    def sample_targets(self, scalars: Scalars, rng: np.random.Generator, *, noise: float) -> FloatArray:
        """``h(z) + noise * std(h(z)) * N(0, 1)`` for the planted ``z`` (used by make-data)."""
        self.check_scalars(scalars)
        hz = scalars["c"] + self._b()
        scale = float(np.std(hz)) or 1.0
        return hz + noise * scale * rng.standard_normal(hz.size)


class SoftmaxReluPaired(PairedModel):
    r"""Softmax-ReLU regression, reading C (Deng, Song & Xie, arXiv 2308.08358; docs/theory.md#softmax-relu-regression).

    ``L(x) = 1/2 ||softmax(A2 ReLU(A x)) - b||^2 + 1/2 ||diag(w) A x||^2`` (module
    docstring). The statistic of a block is the plain sum ``Y = A2T^T ReLU(v)`` (an
    m-vector). ``ReLU'`` is taken from the right at 0 (``e = 1[v >= 0]``), as in readings A
    and B, so that ``x = 0`` is not a spurious stationary point. The Hessian exists only off
    the hyperplanes ``(A x)_i = 0`` and jumps across them.

    Parameters
    ----------
    targets : array-like of shape (m,), optional
        See :class:`PairedModel`.
    """

    name: ClassVar[str] = "softmax-relu"
    #: The Hessian jumps across (A x)_i = 0: the solver also stops on convergence in loss value.
    smooth: ClassVar[bool] = False
    _a2_power: ClassVar[float] = -0.5
    _strong_power: ClassVar[float] = -0.5

    def __repr__(self) -> str:
        return "SoftmaxReluPaired()"

    def describe(self) -> dict[str, Any]:
        """``{"model": "softmax-relu", "reading": "C", "m": ...}``."""
        return {**super().describe(), "reading": "C"}

    def stats(self, eta: FloatArray, b: FloatArray, w: FloatArray | None) -> Stats:
        P = self._check_block(b, eta)
        n = int(eta.size)
        bad = int(n - np.isfinite(eta).sum())
        if bad:
            return {"n": n, "bad": bad, "Y": np.zeros(P.shape[1])}
        return {"n": n, "bad": 0, "Y": P.T @ np.maximum(eta, 0.0)}

    def merge_stats(self, left: Stats, right: Stats) -> Stats:
        return {"n": left["n"] + right["n"], "bad": left["bad"] + right["bad"], "Y": left["Y"] + right["Y"]}

    def scalars(self, stats: Stats) -> Scalars:
        """``valid``, ``y``, ``f = softmax(y)``, ``c``, ``g = f c - <f,c> f``, the core
        ``B`` and ``data_loss``."""
        b = self._b()
        m = b.size
        if stats["bad"]:
            nan = np.full(m, np.nan)
            return {"valid": 0.0, "bad": float(stats["bad"]), "y": nan, "f": nan, "c": nan, "g": nan,
                    "B": np.full((m, m), np.nan), "data_loss": np.nan}
        y = stats["Y"]
        e = np.exp(y - y.max())
        f = e / e.sum()
        c = f - b
        fc = float(f @ c)
        U = np.column_stack([f, (2.0 * f - b) * f])
        core = np.array([[3.0 * float(f @ f) - 2.0 * float(f @ b), -1.0], [-1.0, 0.0]])
        B = np.diag(f * f + (c - fc) * f) + U @ core @ U.T
        return {"valid": 1.0, "bad": 0.0, "y": y, "f": f, "c": c, "g": f * c - fc * f,
                "B": 0.5 * (B + B.T), "data_loss": 0.5 * float(c @ c)}

    def row_terms(self, eta: FloatArray, b: FloatArray, w: FloatArray | None, scalars: Scalars) -> RowTerms:
        self.check_scalars(scalars)
        P = self._check_block(b, eta)
        e = (eta >= 0.0).astype(np.float64)
        w2 = _w2(w, eta.size)
        return RowTerms(grad_weight=e * (P @ scalars["g"]) + w2 * eta, diag=w2, lowrank=e[:, None] * P)

    def core(self, scalars: Scalars) -> FloatArray:
        return np.asarray(scalars["B"], dtype=np.float64)

    def sample_targets(self, scalars: Scalars, rng: np.random.Generator, *, noise: float) -> FloatArray:
        """A distribution near ``f = softmax(y)``: ``f * exp(noise * N(0, 1))``, renormalised."""
        self.check_scalars(scalars)
        t = scalars["f"] * np.exp(noise * rng.standard_normal(scalars["f"].size))
        return t / t.sum()
