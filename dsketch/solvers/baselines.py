"""Baselines on the same engine: gradient descent needs the loss and gradient only."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from dsketch.sketch.base import Partial, Sketch, SketchContext, SketchResult


class GradientOnly(Sketch):
    """A curvature "estimate" that computes nothing (for first-order baselines).

    The fused pass then computes just the loss and the gradient; ``finish`` returns a zero
    matrix that the gradient-descent direction ignores.
    """

    kind: ClassVar[str] = "none"

    def block(self, A_b: Any, D_b: np.ndarray, r0: int, ctx: SketchContext) -> Partial:
        return {}

    def finish(self, total: Partial, ctx: SketchContext) -> SketchResult:
        d = ctx.n_features
        return SketchResult(gram=np.zeros((d, d)), n_rows=0)

    def size_for(self, eps: float, delta: float, n_features: int, **_: Any) -> int:
        return 0
