"""A sketch of the curvature restricted to a subset of the columns.

On a regularisation path most coefficients are zero and the strong rule says which may
become nonzero; the inner solve then needs only the block ``A_S^T diag(D) A_S`` of the
curvature on those columns ``S``. :class:`ColumnSubset` runs another sketch on the columns
``S`` of every row block, so the workers form, sum and send ``|S| x |S|`` partials instead
of ``d x d`` ones (for the exact Gram a fraction ``(|S| / d)^2`` of the work on dense
blocks, about as much on sparse ones with evenly spread entries). The rows a sampler keeps
are the same as without the restriction (its randomness is keyed by the row), so the result
is the ``S x S`` block of the unrestricted sketch.

For the exact Gram of CSR blocks the columns are not cut out of the block: the compiled
kernel reads each row's entries on ``S`` through a column map and adds their pairs into
the upper triangle only (:func:`~dsketch.sketch._sparse_gram.csr_weighted_gram_upper`),
and the driver mirrors the summed triangle once. On the one-hot flights design (262,144
rows a block, 6 entries a row) cutting the columns took as long as the Gram itself, and
mirroring every block's partial and then symmetrising the sum again as long once more.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from dsketch.errors import InvalidOptionError
from dsketch.sketch._sparse_gram import csr_weighted_gram_upper, mirror_upper
from dsketch.sketch.base import Block, Partial, Sketch, SketchContext, SketchResult, as_block, check_weights
from dsketch.sketch.rowsample import ExactGram


def select_columns(A: Block, cols: np.ndarray) -> Block:
    """The columns ``cols`` (sorted, unique) of a dense or CSR block, as a block of the same
    kind (a CSR result keeps scipy's canonical format: sorted indices, no duplicates)."""
    if sp.issparse(A):
        return sp.csr_matrix(A)[:, cols]
    return np.ascontiguousarray(A[:, cols])


class ColumnSubset(Sketch):
    """The sketch ``inner`` of ``A_S^T diag(D) A_S`` for the columns ``S = cols``.

    Parameters
    ----------
    inner : Sketch
        A sketch without preliminary stages (exact, uniform, the embeddings).
    cols : array of int
        The columns, sorted and unique, each in ``[0, n_features)``.

    Raises
    ------
    InvalidOptionError
        For a sketch with preliminary stages (leverage scores, row-norm sampling), whose
        context is built from all the columns.
    """

    refreshes_from_gram: ClassVar[bool] = False

    def __init__(self, inner: Sketch, cols: np.ndarray) -> None:
        if inner.n_pre_stages:
            raise InvalidOptionError(f"sketch {inner.kind!r} has preliminary stages over all the columns and cannot be "
                                     "restricted to some; use curvature 'exact' or 'uniform' for a restricted curvature")
        self.inner = inner
        self.cols = np.asarray(cols, dtype=np.int64)
        if self.cols.ndim != 1 or self.cols.size == 0 or np.any(np.diff(self.cols) <= 0) or self.cols[0] < 0:
            # internal: the solver passes a sorted, unique, non-empty subset
            raise ValueError("cols must be a non-empty sorted array of unique column indices")

    @property
    def kind(self) -> str:  # type: ignore[override]
        return self.inner.kind

    def _narrowed(self, ctx: SketchContext) -> SketchContext:
        return replace(ctx, n_features=int(self.cols.size))

    def block(self, A_b: Block, D_b: np.ndarray, r0: int, ctx: SketchContext) -> Partial:
        if isinstance(self.inner, ExactGram) and sp.issparse(A_b):  # the exact upper triangle, straight
            A_b = as_block(A_b)
            return {"upper": csr_weighted_gram_upper(A_b, check_weights(D_b, A_b.shape[0], r0), self.cols)}
        return self.inner.block(select_columns(A_b, self.cols), D_b, r0, self._narrowed(ctx))

    def finish(self, total: Partial, ctx: SketchContext) -> SketchResult:
        """The ``|S| x |S|`` estimate, in the order of ``cols``."""
        if "upper" in total:  # the exact Gram's upper triangle summed over the blocks
            out = SketchResult(gram=mirror_upper(np.array(total["upper"], dtype=np.float64)), n_rows=ctx.n_samples,
                               kind=self.kind)
        else:
            out = self.inner.finish(total, self._narrowed(ctx))
        return replace(out, diagnostics={**out.diagnostics, "columns": int(self.cols.size)})

    def size_for(self, eps: float, delta: float, n_features: int) -> int:
        return self.inner.size_for(eps, delta, n_features)

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()
