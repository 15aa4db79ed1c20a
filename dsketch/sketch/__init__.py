"""Sketches of ``A^T diag(D) A``: per-block maths, counter-based randomness, registry.

The engine maps :meth:`Sketch.pre_block` / :meth:`Sketch.block` over row blocks and sums
their dict partials key by key; :func:`sketch_gram` is the same loop in memory (the
reference engine for tests and small problems).

Examples
--------
>>> import numpy as np
>>> from dsketch.sketch import make_sketch, sketch_gram
>>> rng = np.random.default_rng(0)
>>> A, D = rng.standard_normal((1000, 3)), rng.uniform(0.5, 1.5, 1000)
>>> res = sketch_gram(make_sketch("exact"), A, D, seed=0, sketch_size=1)
>>> bool(np.allclose(res.gram, A.T @ (D[:, None] * A)))
True
>>> sk = make_sketch("leverage")
>>> res = sketch_gram(sk, A, D, seed=1, sketch_size=sk.size_for(0.5, 0.1, 3), bounds=[0, 400, 1000])
>>> res.gram.shape
(3, 3)
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np

from dsketch.errors import ChunkLayoutError, DSketchTypeError, unknown_name
from dsketch.sketch.base import (
    Partial,
    Sketch,
    SketchContext,
    SketchResult,
    as_block,
    check_weights,
    row_norms2,
)
from dsketch.sketch.embed import CountSketch, GaussianSketch
from dsketch.sketch.leverage import LeverageSampler
from dsketch.sketch.rowsample import (
    ExactGram,
    RowNormSampler,
    SampledRows,
    Sampler,
    UniformSampler,
    leverage_size,
)

SKETCHES: dict[str, type[Sketch]] = {
    "exact": ExactGram,
    "uniform": UniformSampler,
    "rownorm": RowNormSampler,
    "leverage": LeverageSampler,
    "countsketch": CountSketch,
    "gaussian": GaussianSketch,
}


def make_sketch(kind: str | Sketch, **params: Any) -> Sketch:
    """Build a sketch from its registry name (a :class:`Sketch` instance is returned as is).

    Parameters
    ----------
    kind : str
        One of ``SKETCHES``: ``exact``, ``uniform``, ``rownorm``, ``leverage``,
        ``countsketch``, ``gaussian``.
    **params
        The sketch's keyword parameters (see its class).

    Raises
    ------
    ValueError
        Unknown kind (:class:`~dsketch.errors.UnknownNameError`: the message suggests the
        closest names and lists the valid ones) or a bad parameter value.
    TypeError
        A parameter the sketch does not take, or parameters given with an instance.
    """
    if isinstance(kind, Sketch):
        if params:
            raise DSketchTypeError(f"parameters {sorted(params)} are only valid when the sketch is given by name")
        return kind
    if not isinstance(kind, str):
        raise DSketchTypeError(f"kind must be a sketch name (str); got {type(kind).__name__}")
    if kind not in SKETCHES:
        raise unknown_name("sketch", kind, SKETCHES, "sketches")
    cls = SKETCHES[kind]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "args", "kwargs"}
    unknown = set(params) - accepted
    if unknown:
        raise DSketchTypeError(
            f"sketch {kind!r} takes no parameter(s) {sorted(unknown)}; accepted: {sorted(accepted) or 'none'}"
        )
    return cls(**params)


def block_bounds(bounds: Sequence[Any] | None, n_samples: int) -> list[tuple[int, int]]:
    """Row blocks ``[(r0, r1), ...]`` from pairs or from offsets ``[0, ..., n_samples]``.

    Raises
    ------
    ChunkLayoutError
        Blocks that are empty, overlap, leave gaps, or do not cover ``[0, n_samples)``.
    """
    if bounds is None:
        return [(0, n_samples)]
    arr = np.asarray(bounds)
    if arr.dtype.kind not in "iu" or arr.size == 0 or arr.ndim not in (1, 2) or (arr.ndim == 2 and arr.shape[1] != 2):
        raise ChunkLayoutError(
            "bounds must be offsets [0, ..., n] or (r0, r1) pairs of integers; "
            f"got an array of shape {arr.shape} and dtype {arr.dtype}"
        )
    pairs = list(zip(arr[:-1].tolist(), arr[1:].tolist())) if arr.ndim == 1 else [tuple(p) for p in arr.tolist()]
    expect = 0
    for r0, r1 in pairs:
        if r0 != expect or r1 <= r0:
            raise ChunkLayoutError(
                f"row blocks must be non-empty, contiguous and start at 0; block ({r0}, {r1}) follows row {expect}"
            )
        expect = r1
    if expect != n_samples:
        raise ChunkLayoutError(f"row blocks cover [0, {expect}) but A has {n_samples} rows")
    return pairs


def sum_partials(parts: Sequence[Partial]) -> Partial:
    """Sum partials key by key (what the engine's tree reduction does)."""
    keys = set(parts[0])
    for p in parts[1:]:
        if set(p) != keys:
            # internal: partials come from one sketch's own blocks
            raise ValueError(f"partials disagree on their keys: {sorted(keys)} vs {sorted(p)}")
    total: Partial = {}
    for k in parts[0]:
        acc = parts[0][k]
        for p in parts[1:]:
            acc = acc + p[k]
        total[k] = acc
    return total


def prepare_context(
    sketch: Sketch | str,
    A: Any,
    D: Any,
    *,
    seed: int,
    iteration: int = 0,
    sketch_size: int,
    bounds: Sequence[Any] | None = None,
) -> SketchContext:
    """Run a sketch's preliminary stages in memory; the context its final pass needs.

    Parameters are those of :func:`sketch_gram`.
    """
    sk = make_sketch(sketch)
    A = as_block(A)
    n, d = A.shape
    D = check_weights(D, n, 0)
    ctx = SketchContext(seed=seed, iteration=iteration, n_samples=n, n_features=d, sketch_size=sketch_size)
    blocks = block_bounds(bounds, n)
    norms = [row_norms2(A[a:b]) for a, b in blocks] if sk.n_pre_stages else []
    for stage in range(sk.n_pre_stages):
        reads = bool(sk.pre_stage_reads_A[stage])
        parts = [
            sk.pre_block(stage, A[a:b] if reads else None, D[a:b], nrm, a, ctx)
            for (a, b), nrm in zip(blocks, norms)
        ]
        ctx = sk.pre_finish(stage, sum_partials(parts), ctx)
    return ctx


def sketch_gram(
    sketch: Sketch | str,
    A: Any,
    D: Any,
    *,
    seed: int,
    iteration: int = 0,
    sketch_size: int,
    bounds: Sequence[Any] | None = None,
) -> SketchResult:
    """Run a sketch fully in memory over row blocks: the reference engine.

    Parameters
    ----------
    sketch : Sketch or str
        A sketch, or its registry name (default parameters).
    A : ndarray or scipy.sparse.csr_matrix of shape (n_samples, n_features)
    D : array_like of shape (n_samples,)
        Real weights, possibly negative.
    seed, iteration : int
        Key of the counter-based randomness.
    sketch_size : int
        Expected rows (samplers) or embedding dimension (>= 1; ignored by ``exact``).
    bounds : sequence, optional
        Row blocks, as offsets ``[0, r1, ..., n]`` or pairs ``[(0, r1), (r1, r2), ...]``;
        one block by default. The result does not depend on them (up to rounding).

    Returns
    -------
    SketchResult
        ``gram`` estimates ``A^T diag(D) A``.
    """
    sk = make_sketch(sketch)
    A = as_block(A)
    D = check_weights(D, A.shape[0], 0)
    ctx = prepare_context(sk, A, D, seed=seed, iteration=iteration, sketch_size=sketch_size, bounds=bounds)
    blocks = block_bounds(bounds, A.shape[0])
    return sk.finish(sum_partials([sk.block(A[a:b], D[a:b], a, ctx) for a, b in blocks]), ctx)


__all__ = [
    "SKETCHES",
    "CountSketch",
    "ExactGram",
    "GaussianSketch",
    "LeverageSampler",
    "RowNormSampler",
    "SampledRows",
    "Sampler",
    "Sketch",
    "SketchContext",
    "SketchResult",
    "UniformSampler",
    "block_bounds",
    "leverage_size",
    "make_sketch",
    "prepare_context",
    "sketch_gram",
    "sum_partials",
]
