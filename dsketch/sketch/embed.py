"""Oblivious embeddings: CountSketch and Gaussian.

Both estimate ``A^T diag(D) A`` as ``(S Y+)^T (S Y+) - (S Y-)^T (S Y-)`` with
``Y+- = sqrt(D+-) A`` (``D+ = max(D, 0)``, ``D- = max(-D, 0)``), so signed weights are
handled without taking the square root of a negative number. The columns of ``S`` that
belong to a row block are generated from (seed, iteration, global row), so
``S Y = sum_b S_b Y_b`` is a sum over blocks.

References
----------
K. L. Clarkson, D. P. Woodruff. Low rank approximation and regression in input sparsity
time. STOC 2013.
J. Nelson, H. L. Nguyen. OSNAP: faster numerical linear algebra algorithms via sparser
subspace embeddings. FOCS 2013.
M. Pilanci, M. J. Wainwright. Newton sketch. SIAM J. Optim. 27(1), 2017.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from dsketch.sketch import random as crng
from dsketch.sketch.base import Partial, Sketch, SketchContext, SketchResult, check_eps_delta, scale_rows

BUCKET_STREAM = 2
SIGN_STREAM = 3
GAUSS_STREAM = 4


class _Embedding(Sketch):
    def block(self, A_b: Any, D_b: np.ndarray, r0: int, ctx: SketchContext) -> Partial:
        out = {}
        for key, part in (("pos", np.maximum(D_b, 0.0)), ("neg", np.maximum(-D_b, 0.0))):
            if np.any(part > 0):
                out[key] = self.apply(A_b, np.sqrt(part), r0, ctx)
            else:
                out[key] = np.zeros((ctx.sketch_size, ctx.n_features))
        return out

    def apply(self, A_b: Any, scale: np.ndarray, r0: int, ctx: SketchContext) -> np.ndarray:
        """``S_b diag(scale) A_b``: this block's share of the embedding (``s x d``)."""
        return self._embed(scale_rows(A_b, scale), r0, ctx)

    @abstractmethod
    def _embed(self, Y: Any, r0: int, ctx: SketchContext) -> np.ndarray:
        """``S_b Y`` for the rows ``[r0, r0 + len(Y))``."""

    def matrix(self, n_rows: int, ctx: SketchContext) -> np.ndarray:
        """The explicit ``s x n_rows`` matrix ``S`` (for tests and small problems)."""
        return self._embed(np.eye(n_rows), 0, ctx)

    def finish(self, total: Partial, ctx: SketchContext) -> SketchResult:
        P, N = np.asarray(total["pos"]), np.asarray(total["neg"])
        g = P.T @ P - N.T @ N
        return SketchResult(gram=0.5 * (g + g.T), n_rows=ctx.sketch_size)


class CountSketch(_Embedding):
    """CountSketch: row ``i`` goes to bucket ``h(i)`` with sign ``sigma(i)``.

    Notes
    -----
    Documented size: ``s = ceil((d^2 + d) / (delta eps^2))`` gives
    ``||U^T S^T S U - I||_2 <= eps`` with probability ``>= 1 - delta`` for any orthonormal
    ``U`` (second-moment bound, Nelson & Nguyen 2013; Woodruff 2014, Thm 2.9), hence a
    (1 +- eps) approximation of ``A^T D A`` for ``D >= 0``. Cost ``O(nnz(A))`` per pass;
    each block sends two ``s x d`` partials, so communication is ``2 s d`` floats per block.
    """

    kind: ClassVar[str] = "countsketch"

    def _embed(self, Y: Any, r0: int, ctx: SketchContext) -> np.ndarray:
        n_b = Y.shape[0]
        rows = np.arange(r0, r0 + n_b, dtype=np.int64)
        h = crng.integers(ctx.seed, ctx.iteration, BUCKET_STREAM, rows, ctx.sketch_size)
        sg = crng.signs(ctx.seed, ctx.iteration, SIGN_STREAM, rows)
        S = sp.csr_matrix((sg, (h, np.arange(n_b))), shape=(ctx.sketch_size, n_b))
        out = S @ Y
        return out.toarray() if sp.issparse(out) else np.asarray(out)

    def size_for(self, eps: float, delta: float, n_features: int) -> int:
        check_eps_delta(eps, delta)
        d = int(n_features)
        return int(math.ceil((d * d + d) / (delta * eps**2)))


class GaussianSketch(_Embedding):
    """Dense Gaussian embedding ``S`` with i.i.d. ``N(0, 1/s)`` entries keyed by (row, column).

    Parameters
    ----------
    max_chunk_bytes : int
        Memory bound for the slab of ``S`` generated at a time (default 64 MiB).

    Notes
    -----
    Documented size (Gordon's theorem / Davidson-Szarek): the singular values of
    ``S U`` lie in ``1 +- eta`` with ``eta = (sqrt(d) + t)/sqrt(s)`` w.p. ``>= 1 - 2 e^(-t^2/2)``,
    so ``s = ceil(((sqrt(d) + sqrt(2 ln(2/delta))) / (sqrt(1 + eps) - 1))^2)`` gives
    ``||U^T S^T S U - I|| <= eps``. Cost ``O(s nnz(A))`` per pass plus generating ``s n``
    normals; communication ``2 s d`` floats per block.
    """

    kind: ClassVar[str] = "gaussian"

    def __init__(self, max_chunk_bytes: int = 64 * 2**20) -> None:
        if int(max_chunk_bytes) != max_chunk_bytes or max_chunk_bytes < 1024:
            raise ValueError(f"max_chunk_bytes must be an integer >= 1024; got {max_chunk_bytes!r}")
        self.max_chunk_bytes = int(max_chunk_bytes)

    def _embed(self, Y: Any, r0: int, ctx: SketchContext) -> np.ndarray:
        s, n_b = ctx.sketch_size, Y.shape[0]
        step = max(1, self.max_chunk_bytes // (8 * s))
        out = np.zeros((s, Y.shape[1]))
        for a in range(0, n_b, step):
            b = min(n_b, a + step)
            rows = np.arange(r0 + a, r0 + b, dtype=np.int64)
            G = crng.standard_normal(ctx.seed, ctx.iteration, GAUSS_STREAM, rows, s)  # (b-a, s)
            out += np.asarray((Y[a:b].T @ G).T) / math.sqrt(s)
        return out

    def size_for(self, eps: float, delta: float, n_features: int) -> int:
        check_eps_delta(eps, delta)
        eta = math.sqrt(1.0 + eps) - 1.0
        return int(math.ceil(((math.sqrt(n_features) + math.sqrt(2.0 * math.log(2.0 / delta))) / eta) ** 2))
