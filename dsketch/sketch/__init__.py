"""Sketches of ``A^T diag(D) A``: per-block maths, counter-based randomness, registry."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np

from dsketch.sketch.base import Sketch, SketchContext, SketchResult, row_norms2
from dsketch.sketch.embed import CountSketch, GaussianSketch
from dsketch.sketch.rowsample import ExactGram, LeverageSampler, RowNormSampler, UniformSampler, chernoff_rows

SKETCHES: dict[str, type[Sketch]] = {
    "exact": ExactGram,
    "uniform": UniformSampler,
    "rownorm": RowNormSampler,
    "leverage": LeverageSampler,
    "countsketch": CountSketch,
    "gaussian": GaussianSketch,
}


def make_sketch(kind: str, **params: Any) -> Sketch:
    """Build a sketch from its registry name.

    Raises
    ------
    ValueError
        Unknown kind (the message lists the valid ones) or a bad parameter value.
    TypeError
        A parameter the sketch does not take.
    """
    if kind not in SKETCHES:
        raise ValueError(f"unknown sketch {kind!r}; valid sketches: {', '.join(SKETCHES)}")
    cls = SKETCHES[kind]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = set(params) - accepted
    if unknown:
        raise TypeError(f"sketch {kind!r} takes no parameter(s) {sorted(unknown)}; accepted: {sorted(accepted) or 'none'}")
    return cls(**params)


def sketch_gram(
    sketch: Sketch,
    A: Any,
    D: np.ndarray,
    *,
    seed: int,
    sketch_size: int,
    iteration: int = 0,
    bounds: list[tuple[int, int]] | None = None,
) -> SketchResult:
    """Run a sketch in memory over row blocks (the reference engine for small problems)."""
    n, d = A.shape
    if int(sketch_size) != sketch_size or sketch_size < 1:
        raise ValueError(f"sketch_size must be a positive integer; got {sketch_size!r}")
    bounds = bounds or [(0, n)]
    D = np.asarray(D, dtype=np.float64)
    ctx = SketchContext(seed=seed, iteration=iteration, n_samples=n, n_features=d, sketch_size=int(sketch_size))

    def total(fn: Any) -> dict[str, Any]:
        parts = [fn(a, b) for a, b in bounds]
        return {k: sum(p[k] for p in parts[1:]) + parts[0][k] for k in parts[0]}

    for stage in range(sketch.n_pre_stages):
        reads = sketch.pre_stage_reads_A[stage]
        ctx_s = ctx
        t = total(lambda a, b, st=stage, c=ctx_s, r=reads: sketch.pre_block(
            st, A[a:b] if r else None, D[a:b], row_norms2(A[a:b]), a, c))
        ctx = sketch.pre_finish(stage, t, ctx)
    ctx_f = ctx
    return sketch.finish(total(lambda a, b: sketch.block(A[a:b], D[a:b], a, ctx_f)), ctx)


__all__ = [
    "SKETCHES",
    "CountSketch",
    "ExactGram",
    "GaussianSketch",
    "LeverageSampler",
    "RowNormSampler",
    "Sketch",
    "SketchContext",
    "SketchResult",
    "UniformSampler",
    "chernoff_rows",
    "make_sketch",
    "sketch_gram",
]
