"""Oblivious embeddings: CountSketch and Gaussian (plus the OSNAP map used by leverage scores).

Both embeddings estimate ``G = A^T diag(D) A`` as

    G~ = (S Y+)^T (S Y+) - (S Y-)^T (S Y-),    Y+ = sqrt(D+) A,  Y- = sqrt(D-) A,

with ``D+ = max(D, 0)`` and ``D- = max(-D, 0)``, so a signed ``D`` is handled without taking
the square root of a negative number, and ``E[S^T S] = I`` makes ``G~`` unbiased. The
columns of ``S`` that belong to rows ``[r0, r0 + n_b)`` are generated from
``(seed, iteration, stream, global row)``, hence ``S Y = sum_b S_b Y_b`` is a sum of
per-block partials that does not depend on the block split.

Partials (keys of ``block``): ``"pos"`` and ``"neg"``, each ``S_b Y+-_b`` of shape
``(sketch_size, n_features)`` float64, or the float ``0.0`` when the block has no positive
(negative) weight. No preliminary stage; ``ctx.info`` is not used.

References
----------
K. L. Clarkson, D. P. Woodruff. Low rank approximation and regression in input sparsity
time. STOC 2013 (J. ACM 63(6), 2017).
J. Nelson, H. L. Nguyen. OSNAP: faster numerical linear algebra algorithms via sparser
subspace embeddings. FOCS 2013.
X. Meng, M. W. Mahoney. Low-distortion subspace embeddings in input-sparsity time and
applications to robust linear regression. STOC 2013.
M. Pilanci, M. J. Wainwright. Newton sketch: a near linear-time optimization algorithm with
linear-quadratic convergence. SIAM J. Optim. 27(1), 2017.
D. P. Woodruff. Sketching as a tool for numerical linear algebra. FnT-TCS 10(1-2), 2014.
R. Vershynin. Introduction to the non-asymptotic analysis of random matrices. 2012.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from dsketch.sketch import random as crng
from dsketch.sketch.base import (
    Block,
    Partial,
    Sketch,
    SketchContext,
    SketchResult,
    as_block,
    check_eps_delta,
    check_n_features,
    check_param_int,
    check_weights,
    scale_rows,
    work_dtype,
)
from dsketch.errors import InvalidParameterError

BUCKET_STREAM = 2
SIGN_STREAM = 3
GAUSS_STREAM = 4
OSNAP_BUCKET_STREAM = 5
OSNAP_SIGN_STREAM = 6


def _dense(X: Any) -> np.ndarray:
    return np.asarray(X.toarray() if sp.issparse(X) else X)


def osnap_matrix(n_rows: int, r0: int, m: int, nnz: int, seed: int, iteration: int) -> sp.csr_matrix:
    """Columns ``[r0, r0 + n_rows)`` of an OSNAP sparse sign embedding, ``m x n_rows`` CSR.

    Block construction (Kane & Nelson 2014): the ``m`` rows are ``nnz`` groups of
    ``m // nnz``; column ``i`` has one entry ``+-1/sqrt(nnz)`` in each group, at a bucket
    and sign keyed by ``(seed, iteration, stream, i, group)``. ``m`` must be a multiple of
    ``nnz``.
    """
    if m % nnz:
        raise InvalidParameterError(f"m ({m}) must be a multiple of nnz ({nnz})")
    rows = np.arange(r0, r0 + n_rows, dtype=np.int64)
    width = m // nnz
    buckets = crng.integers_cols(seed, iteration, OSNAP_BUCKET_STREAM, rows, nnz, width)
    buckets += (np.arange(nnz) * width)[None, :]
    vals = crng.signs_cols(seed, iteration, OSNAP_SIGN_STREAM, rows, nnz) / math.sqrt(nnz)
    cols = np.repeat(np.arange(n_rows), nnz)
    return sp.csr_matrix((vals.ravel(), (buckets.ravel(), cols)), shape=(m, n_rows))


class _Embedding(Sketch):
    """An embedding ``S`` (``sketch_size x n``) whose block columns are generated on the fly."""

    def block(self, A_b: Block, D_b: np.ndarray, r0: int, ctx: SketchContext) -> Partial:
        A_b = as_block(A_b)
        D_b = check_weights(D_b, A_b.shape[0], r0)
        pos, neg = D_b > 0, D_b < 0
        Ys, keys = [], []
        if pos.any():  # sqrt only of the non-negative parts
            Ys.append(scale_rows(A_b, np.sqrt(np.where(pos, D_b, 0.0))))
            keys.append("pos")
        if neg.any():
            Ys.append(scale_rows(A_b, np.sqrt(np.where(neg, -D_b, 0.0))))
            keys.append("neg")
        out: Partial = {"pos": 0.0, "neg": 0.0}
        for key, val in zip(keys, self._embed(Ys, r0, ctx)):
            out[key] = val
        return out

    def finish(self, total: Partial, ctx: SketchContext) -> SketchResult:
        d = ctx.n_features
        G = np.zeros((d, d))
        for key, sign in (("pos", 1.0), ("neg", -1.0)):
            P = np.asarray(total[key], dtype=np.float64)
            if P.ndim == 2:
                G += sign * (P.T @ P)
        has_neg = np.asarray(total["neg"]).ndim == 2
        return SketchResult(
            gram=0.5 * (G + G.T), n_rows=ctx.sketch_size, kind=self.kind, diagnostics={"has_negative": has_neg}
        )

    def apply(self, Y_b: Any, r0: int, ctx: SketchContext) -> np.ndarray:
        """``S_b Y_b``: the block columns of ``S`` times ``Y_b`` (``sketch_size x d``, float64).

        ``Y_b`` holds the rows ``[r0, r0 + n_b)`` (dense or CSR). Matrix-free: ``S_b`` is
        generated on the fly.
        """
        return self._embed([as_block(Y_b)], r0, ctx)[0]

    @abstractmethod
    def _embed(self, Ys: list[Block], r0: int, ctx: SketchContext) -> list[np.ndarray]:
        """``[S_b Y for Y in Ys]`` for rows ``[r0, r0 + n_b)``, generating ``S_b`` once."""

    @abstractmethod
    def adjoint(self, Z: np.ndarray, r0: int, n_rows: int, ctx: SketchContext) -> np.ndarray:
        """``S_b^T Z`` (``n_rows x k``) for ``Z`` of shape ``(sketch_size, k)``."""

    @abstractmethod
    def matrix(self, ctx: SketchContext, r0: int = 0, n_rows: int | None = None) -> np.ndarray:
        """The explicit columns ``[r0, r0 + n_rows)`` of ``S`` (dense; tests, small problems)."""


class CountSketch(_Embedding):
    """CountSketch: row ``i`` is added, with sign ``sigma(i)``, to bucket ``h(i)`` of ``s``.

    ``S`` has one non-zero ``sigma(i) = +-1`` per column, in row ``h(i)``, both keyed by the
    global row ``i``. ``E[S^T S] = I``.

    Notes
    -----
    Documented size: ``s = ceil((d^2 + d) / (delta eps^2))``. For ``U`` with orthonormal
    columns spanning ``range(sqrt(D) A)`` (``D >= 0``), the second-moment bound
    ``E ||U^T S^T S U - I||_F^2 <= (d^2 + d) / s`` (Nelson & Nguyen 2013, Thm 3; Meng &
    Mahoney 2013, Thm 1; Woodruff 2014, Thm 2.6. Derivation: entry ``(j, k)`` of the error
    is ``sum_{i != i'} u_ij u_i'k sigma_i sigma_i' [h(i) = h(i')]``, whose second moment is
    ``sum_{i != i'} (u_ij^2 u_i'k^2 + u_ij u_ik u_i'j u_i'k) / s``; summed over ``j, k`` this is
    at most ``((sum_i ||u_i||^2)^2 + ||U^T U||_F^2) / s = (d^2 + d) / s``), and Markov's
    inequality with ``||.||_2 <= ||.||_F`` give
    ``||U^T S^T S U - I||_2 <= eps`` with probability ``>= 1 - delta``, i.e.
    ``(1 - eps) A^T D A <= G~ <= (1 + eps) A^T D A``. For signed ``D`` each part is
    embedded with the same guarantee relative to ``A^T D+- A``.

    Cost: ``O(nnz(A))`` per pass (sparse ``A`` is never densified); memory and
    communication ``2 s d`` floats per block partial; the driver forms the ``d x d``
    result in ``O(s d^2)``.

    References
    ----------
    K. L. Clarkson, D. P. Woodruff. Low rank approximation and regression in input sparsity
    time. STOC 2013.
    J. Nelson, H. L. Nguyen. OSNAP. FOCS 2013.
    D. P. Woodruff. Sketching as a tool for numerical linear algebra. FnT-TCS 10, 2014.
    """

    kind: ClassVar[str] = "countsketch"

    def _s_block(self, n_rows: int, r0: int, ctx: SketchContext, dtype: Any) -> sp.csr_matrix:
        rows = np.arange(r0, r0 + n_rows, dtype=np.int64)
        h = crng.integers(ctx.seed, ctx.iteration, BUCKET_STREAM, rows, ctx.sketch_size)
        sg = crng.signs(ctx.seed, ctx.iteration, SIGN_STREAM, rows).astype(dtype)
        return sp.csr_matrix((sg, (h, np.arange(n_rows))), shape=(ctx.sketch_size, n_rows))

    def _embed(self, Ys: list[Block], r0: int, ctx: SketchContext) -> list[np.ndarray]:
        if not Ys:
            return []
        S = self._s_block(Ys[0].shape[0], r0, ctx, work_dtype(Ys[0]))
        return [np.asarray(_dense(S @ Y), dtype=np.float64) for Y in Ys]

    def adjoint(self, Z: np.ndarray, r0: int, n_rows: int, ctx: SketchContext) -> np.ndarray:
        S = self._s_block(n_rows, r0, ctx, np.float64)
        return np.asarray(S.T @ np.asarray(Z, dtype=np.float64))

    def matrix(self, ctx: SketchContext, r0: int = 0, n_rows: int | None = None) -> np.ndarray:
        n_rows = ctx.n_samples - r0 if n_rows is None else n_rows
        rows = np.arange(r0, r0 + n_rows, dtype=np.int64)
        S = np.zeros((ctx.sketch_size, n_rows))
        h = crng.integers(ctx.seed, ctx.iteration, BUCKET_STREAM, rows, ctx.sketch_size)
        S[h, np.arange(n_rows)] = crng.signs(ctx.seed, ctx.iteration, SIGN_STREAM, rows)
        return S

    def size_for(self, eps: float, delta: float, n_features: int) -> int:
        """``ceil((d^2 + d) / (delta eps^2))`` (see Notes)."""
        check_eps_delta(eps, delta)
        d = check_n_features(n_features)
        return int(math.ceil((d * d + d) / (delta * eps**2)))


class GaussianSketch(_Embedding):
    """Dense Gaussian embedding: ``S_{ji} = g_{ij} / sqrt(s)``, ``g_{ij} ~ N(0, 1)`` keyed by
    (global row ``i``, sketch row ``j``), so ``E[S^T S] = I``.

    Parameters
    ----------
    max_chunk_bytes : int, default 64 MiB
        Bound on the memory used at a time to generate ``S_b``: the block's rows are
        processed in sub-chunks of ``max(1, max_chunk_bytes // (32 s))`` rows (the random
        bits, uniforms, normals and a working-dtype copy: 32 bytes per entry at most).

    Notes
    -----
    Documented size (Gordon's theorem with Gaussian concentration; Vershynin 2012,
    Cor. 5.35): for ``U`` ``n x d`` orthonormal, the singular values of ``S U`` lie in
    ``1 +- (sqrt(d) + t) / sqrt(s)`` with probability ``>= 1 - 2 exp(-t^2 / 2)``. Taking
    ``t = sqrt(2 ln(2/delta))`` and requiring the deviation to be at most
    ``sqrt(1 + eps) - 1`` (the tighter of the two sides) gives

        s = ceil(((sqrt(d) + sqrt(2 ln(2/delta))) / (sqrt(1 + eps) - 1))^2),

    and then ``(1 - eps) A^T D A <= G~ <= (1 + eps) A^T D A`` for ``D >= 0``.

    Cost: ``O(s nnz(A))`` flops per pass plus ``s n_b`` normals generated per block
    (counter-based, recomputed on every pass, never stored); memory ``O(s d)`` plus the
    ``max_chunk_bytes`` generation buffer; communication ``2 s d`` floats per block partial.
    The Newton sketch of Pilanci & Wainwright (2017) uses this ``S``.

    References
    ----------
    M. Pilanci, M. J. Wainwright. Newton sketch. SIAM J. Optim. 27(1), 2017.
    R. Vershynin. Introduction to the non-asymptotic analysis of random matrices. 2012.
    D. P. Woodruff. Sketching as a tool for numerical linear algebra. FnT-TCS 10, 2014.
    """

    kind: ClassVar[str] = "gaussian"
    _BYTES_PER_ENTRY: ClassVar[int] = 32

    def __init__(self, *, max_chunk_bytes: int = 64 * 2**20) -> None:
        self.max_chunk_bytes = check_param_int("max_chunk_bytes", max_chunk_bytes, 1024)

    def describe(self) -> dict[str, Any]:
        return {"sketch": self.kind, "max_chunk_bytes": self.max_chunk_bytes}

    def _chunk_rows(self, s: int) -> int:
        return max(1, self.max_chunk_bytes // (self._BYTES_PER_ENTRY * s))

    def _gauss(self, r0: int, n_rows: int, ctx: SketchContext) -> np.ndarray:
        rows = np.arange(r0, r0 + n_rows, dtype=np.int64)
        return crng.standard_normal(ctx.seed, ctx.iteration, GAUSS_STREAM, rows, ctx.sketch_size)

    def _embed(self, Ys: list[Block], r0: int, ctx: SketchContext) -> list[np.ndarray]:
        if not Ys:
            return []
        s, n_b, d = ctx.sketch_size, Ys[0].shape[0], Ys[0].shape[1]
        dt = work_dtype(Ys[0])
        outs = [np.zeros((s, d)) for _ in Ys]
        step = self._chunk_rows(s)
        for a in range(0, n_b, step):
            b = min(n_b, a + step)
            G = self._gauss(r0 + a, b - a, ctx).astype(dt, copy=False)  # (b - a, s)
            for out, Y in zip(outs, Ys):
                Yc = Y[a:b]
                out += (_dense(Yc.T @ G).T if sp.issparse(Yc) else G.T @ Yc)
        scale = 1.0 / math.sqrt(s)
        return [out * scale for out in outs]

    def adjoint(self, Z: np.ndarray, r0: int, n_rows: int, ctx: SketchContext) -> np.ndarray:
        Z = np.asarray(Z, dtype=np.float64)
        out = np.empty((n_rows,) + Z.shape[1:])
        step = self._chunk_rows(ctx.sketch_size)
        for a in range(0, n_rows, step):
            b = min(n_rows, a + step)
            out[a:b] = self._gauss(r0 + a, b - a, ctx) @ Z
        return out / math.sqrt(ctx.sketch_size)

    def matrix(self, ctx: SketchContext, r0: int = 0, n_rows: int | None = None) -> np.ndarray:
        n_rows = ctx.n_samples - r0 if n_rows is None else n_rows
        return self._gauss(r0, n_rows, ctx).T / math.sqrt(ctx.sketch_size)

    def size_for(self, eps: float, delta: float, n_features: int) -> int:
        """``ceil(((sqrt(d) + sqrt(2 ln(2/delta))) / (sqrt(1 + eps) - 1))^2)`` (see Notes)."""
        check_eps_delta(eps, delta)
        d = check_n_features(n_features)
        eta = math.sqrt(1.0 + eps) - 1.0
        return int(math.ceil(((math.sqrt(d) + math.sqrt(2.0 * math.log(2.0 / delta))) / eta) ** 2))
