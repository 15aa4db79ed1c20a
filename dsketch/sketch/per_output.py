"""One sketch per output column: the block-diagonal curvature of a multi-output model.

A model with ``K`` outputs (``multinomial``) gives an ``n x K`` matrix of curvature weights
``D``; :class:`PerOutput` runs a sketch on each column, so the result's ``gram`` is the stack
``(K, d, d)`` of ``A^T diag(D_k) A``: the diagonal blocks of the ``dK x dK`` Hessian in the
ordering of the flattened ``d x K`` coefficients' classes. Given the ``K (K + 1) / 2``
columns of every class pair, it assembles the whole ``dK x dK`` matrix instead. Every column is sketched with the
same context, hence the same sampled rows or embedding (randomness is keyed by the row, not
by the column), and the partials stay summable key by key.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from dsketch.errors import InvalidOptionError
from dsketch.sketch.base import Block, Partial, Sketch, SketchContext, SketchResult, weighted_gram


def assemble_pairs(grams: list[np.ndarray], k: int) -> np.ndarray:
    """The ``dK x dK`` matrix whose ``(j K + a, i K + b)`` entry is ``G_ab[j, i]``, from the
    Grams of the class pairs ``a <= b`` in ``np.triu_indices(k)`` order."""
    d = grams[0].shape[0]
    H = np.zeros((d, k, d, k))
    for G, a, b in zip(grams, *np.triu_indices(k), strict=True):
        H[:, a, :, b] = G
        H[:, b, :, a] = G.T
    return H.reshape(d * k, d * k)


def kron_gram(A: Block, weights: np.ndarray, k: int) -> np.ndarray:
    """``sum_i (a_i a_i^T) kron M_i`` (``dK x dK``, the row-major order of ``d x K``
    coefficients) for symmetric ``K x K`` matrices ``M_i`` given by their upper triangles:
    ``weights`` is ``n x K (K + 1) / 2`` in ``np.triu_indices(k)`` order. With ``k = 1`` it is
    :func:`~dsketch.sketch.base.weighted_gram` of the ``n`` weights."""
    if k == 1:
        return weighted_gram(A, np.ravel(weights))
    grams = [weighted_gram(A, np.ascontiguousarray(weights[:, c])) for c in range(weights.shape[1])]
    return assemble_pairs(grams, k)


def outer_triu(R: np.ndarray, k: int) -> np.ndarray:
    """The upper triangles of the rows' outer products ``r_i r_i^T`` (``n x K (K + 1) / 2``,
    :func:`kron_gram`'s weights); ``r_i^2`` for ``k = 1``."""
    if k == 1:
        return np.ravel(R) ** 2
    a, b = np.triu_indices(k)
    return R[:, a] * R[:, b]


class PerOutput(Sketch):
    """The sketch ``inner`` applied to each of ``n_outputs`` weight columns.

    Raises
    ------
    InvalidOptionError
        For a sketch with preliminary stages (leverage, row-norm sampling): their context
        depends on the weights, which differ from class to class.
    """

    refreshes_from_gram: ClassVar[bool] = False

    def __init__(self, inner: Sketch, n_outputs: int) -> None:
        if inner.n_pre_stages:
            raise InvalidOptionError(
                f"sketch {inner.kind!r} has preliminary stages, which a multi-output model (multinomial) cannot share "
                "between its classes; use curvature 'exact', 'uniform', 'countsketch' or 'gaussian'")
        self.inner = inner
        self.n_outputs = int(n_outputs)

    @property
    def kind(self) -> str:  # type: ignore[override]
        return self.inner.kind

    def block(self, A_b: Block, D_b: np.ndarray, r0: int, ctx: SketchContext) -> Partial:
        out: Partial = {}
        for k in range(D_b.shape[1]):  # K classes, or K (K + 1) / 2 class pairs
            for key, val in self.inner.block(A_b, np.ascontiguousarray(D_b[:, k]), r0, ctx).items():
                out[f"{k}/{key}"] = val
        return out

    def finish(self, total: Partial, ctx: SketchContext) -> SketchResult:
        """``(K, d, d)`` diagonal blocks from ``K`` weight columns; the assembled ``dK x dK``
        matrix (row-major ``d x K`` order) from ``K (K + 1) / 2`` columns of class pairs."""
        m = 1 + max(int(key.split("/", 1)[0]) for key in total)
        parts = [self.inner.finish({key.split("/", 1)[1]: v for key, v in total.items()
                                    if key.split("/", 1)[0] == str(j)}, ctx) for j in range(m)]
        grams = [p.gram for p in parts]
        gram = np.stack(grams) if m == self.n_outputs else assemble_pairs(grams, self.n_outputs)
        return SketchResult(gram=gram, n_rows=parts[0].n_rows, kind=self.kind,
                            diagnostics={"per_output": [p.diagnostics for p in parts]})

    def size_for(self, eps: float, delta: float, n_features: int) -> int:
        return self.inner.size_for(eps, delta, n_features)

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()
