"""One sketch per output column: the block-diagonal curvature of a multi-output model.

A model with ``K`` outputs (``multinomial``) gives an ``n x K`` matrix of curvature weights
``D``; :class:`PerOutput` runs a sketch on each column, so the result's ``gram`` is the stack
``(K, d, d)`` of ``A^T diag(D_k) A``: the diagonal blocks of the ``dK x dK`` Hessian in the
ordering of the flattened ``d x K`` coefficients' classes. Every column is sketched with the
same context, hence the same sampled rows or embedding (randomness is keyed by the row, not
by the column), and the partials stay summable key by key.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from dsketch.errors import InvalidOptionError
from dsketch.sketch.base import Block, Partial, Sketch, SketchContext, SketchResult


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
        for k in range(self.n_outputs):
            for key, val in self.inner.block(A_b, np.ascontiguousarray(D_b[:, k]), r0, ctx).items():
                out[f"{k}/{key}"] = val
        return out

    def finish(self, total: Partial, ctx: SketchContext) -> SketchResult:
        parts = [self.inner.finish({key.split("/", 1)[1]: v for key, v in total.items()
                                    if key.split("/", 1)[0] == str(k)}, ctx) for k in range(self.n_outputs)]
        return SketchResult(gram=np.stack([p.gram for p in parts]), n_rows=parts[0].n_rows, kind=self.kind,
                            diagnostics={"per_output": [p.diagnostics for p in parts]})

    def size_for(self, eps: float, delta: float, n_features: int) -> int:
        return self.inner.size_for(eps, delta, n_features)

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()
