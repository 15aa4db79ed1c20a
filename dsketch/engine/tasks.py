"""Worker-side task functions: one row block in, a small summable result out.

These are plain functions of their arguments (no hidden state besides the store cache of
:func:`dsketch.store.read_block`), so a retried task recomputes exactly the same result.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from dask.sizeof import sizeof

from dsketch.errors import InvalidParameterError, StoreFormatError
from dsketch.models.base import Model, Scalars, Stats
from dsketch.store import Block, ProblemSpec, read_block
from dsketch.store.blocks import ALIGNMENT, aligned, blas_ready
from dsketch.store.memory import MemoryProblem

FloatArray = np.ndarray


@dataclass(frozen=True)
class Source:
    """Where a row block comes from: the store (streamed) and its global row range."""

    spec: ProblemSpec
    r0: int
    r1: int
    members: tuple[str, ...] = ()


@dataclass(frozen=True)
class RowState:
    """Per-block vectors kept in worker memory between passes.

    Attributes
    ----------
    r0 : int
        Global index of the block's first row.
    eta : ndarray of shape (n_rows,)
        The cached predictor ``A_b x``.
    b : ndarray of shape (n_rows,) or (n_rows, m)
        The model's per-row data (:meth:`Model.row_data`): the targets, or the rows of
        ``A2^T`` for the paired models.
    w : ndarray of shape (n_rows,) or None
        Regularisation weights.
    rownorm2 : ndarray of shape (n_rows,) or None
        Squared Euclidean norms of the rows of ``A_b``; None where the fit's sketch has no
        preliminary stage (the only readers of the norms).
    """

    r0: int
    eta: FloatArray
    b: FloatArray
    w: FloatArray | None
    rownorm2: FloatArray | None


@sizeof.register(Block)
def _sizeof_block(block: Block) -> int:
    """Bytes of a block held in worker memory.

    The scheduler places a task next to its largest inputs and weighs moving data against
    waiting; without this it would take a persisted block for a 56-byte object and move
    it between workers on every pass."""
    return int(sizeof(block.A) + sizeof(block.b) + sizeof(block.w) + sizeof(block.extra))


@sizeof.register(RowState)
def _sizeof_rows(rows: RowState) -> int:
    """Bytes of a block's cached per-row vectors."""
    return int(sizeof(rows.eta) + sizeof(rows.b) + sizeof(rows.w) + sizeof(rows.rownorm2))


def load(source: Source | Block) -> Block:
    """Return the block itself (persisted mode) or read it from the store (streaming; the
    rows of an in-memory problem, :class:`~dsketch.store.memory.MemoryProblem`, are taken
    from its arrays).

    A persisted block that was moved to another worker arrives at an arbitrary memory
    alignment; its dense arrays are re-aligned (:func:`dsketch.store.blocks.aligned`) so
    that BLAS sums in the same order as on a freshly read block, unless this process's BLAS
    sums in the same order at every alignment (:func:`dsketch.store.blocks.blas_ready`).
    """
    if isinstance(source, Source):
        if isinstance(source.spec, MemoryProblem):
            return source.spec.block(source.r0, source.r1, source.members)
        return read_block(source.spec, source.r0, source.r1, members=source.members)
    if isinstance(source.A, np.ndarray) and not blas_ready(source.A):
        source = Block(A=aligned(source.A), b=source.b, w=source.w, extra=source.extra)
    if any(v.ctypes.data % ALIGNMENT for v in source.extra.values()):
        source = Block(A=source.A, b=source.b, w=source.w,
                       extra={k: aligned(v) for k, v in source.extra.items()})
    return source


def load_source(source: Source) -> Block:
    """Read a block from the store (used to persist blocks in cluster memory)."""
    return read_block(source.spec, source.r0, source.r1, members=source.members)


def settled(value: Any) -> Any:
    """``value`` with every NumPy array in it that is not aligned to its dtype copied to an
    :data:`~dsketch.store.blocks.ALIGNMENT` boundary (in dicts, lists, tuples and dataclass
    fields too; memory order kept). Returned as is when nothing needed a copy.

    An argument that crossed the network can come out of its message frame at any byte
    offset. NumPy hands a product of such an array to its own loops instead of BLAS, which
    sum in another order: the sketch context's transform ``T`` at a 4-byte offset changed
    the last bits of a block's sampled Gram, so a fit differed from run to run on a cluster
    and from the same fit on the driver's threads.
    """
    if isinstance(value, np.ndarray):
        if value.flags.aligned or value.dtype.hasobject:
            return value
        if value.flags.f_contiguous and not value.flags.c_contiguous:
            return aligned(value.T, value.dtype).T
        return aligned(value, value.dtype)
    if isinstance(value, dict):
        items = {k: settled(v) for k, v in value.items()}
        return value if all(items[k] is value[k] for k in value) else type(value)(items)
    if isinstance(value, list | tuple):
        seq = [settled(v) for v in value]
        if all(a is b for a, b in zip(seq, value, strict=True)):
            return value
        return type(value)(*seq) if hasattr(value, "_fields") else type(value)(seq)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value) if f.init}
        new = {k: settled(v) for k, v in fields.items()}
        changed = {k: v for k, v in new.items() if v is not fields[k]}
        return dataclasses.replace(value, **changed) if changed else value
    return value


def settled_call(fn: Any, *args: Any) -> Any:
    """``fn(*args)`` with its arguments :func:`settled`: how the engine runs every task, so
    a block's result does not depend on where its inputs were sent from."""
    return fn(*(settled(a) for a in args))


def map_block(fn: Any, source: Source | Block, r0: int, *args: Any) -> Any:
    """``fn(block, r0, *args)`` on one row block (read from the store, or held): the task
    of :meth:`dsketch.engine.core.Engine.map_reduce`."""
    return fn(load(source), r0, *args)


def _outputs(model: Model | None) -> int:
    """Columns of a model's predictor (:attr:`Model.n_outputs`; 1 without a model)."""
    return 1 if model is None else int(getattr(model, "n_outputs", 1))


def _matvec(A: Any, x: FloatArray, n_outputs: int = 1) -> FloatArray:
    """``A x`` for ``d`` coefficients ``x``; for a model with ``n_outputs = K > 1`` its flat
    ``d * K`` coefficients give the ``n x K`` product ``A X`` with ``X = x.reshape(d, K)``
    (row-major, as :attr:`Model.n_outputs` documents). Any other length is refused."""
    d = A.shape[1]
    if x.ndim != 1 or x.size != d * n_outputs:
        raise InvalidParameterError(
            f"{x.size} coefficients (shape {x.shape}) do not fit a block of {d} columns and a model of "
            f"{n_outputs} output(s): pass a flat vector of {d * n_outputs} coefficients")
    if n_outputs > 1:
        return np.asarray(A @ x.reshape(d, n_outputs), dtype=np.float64)
    return np.asarray(A @ x, dtype=np.float64).ravel()


def _rmatvec(A: Any, r: FloatArray) -> FloatArray:
    """``A^T r`` flattened (row-major ``d x K`` for an ``n x K`` ``r``)."""
    return np.asarray(A.T @ r, dtype=np.float64).ravel()


def _row_norms2(A: Any) -> FloatArray:
    if sp.issparse(A):
        return np.asarray(A.multiply(A).sum(axis=1), dtype=np.float64).ravel()
    return np.einsum("ij,ij->i", A, A, dtype=np.float64)


def _start_matvec(A: Any, x: FloatArray, n_outputs: int) -> FloatArray:
    """``A x`` at a starting point: without a product where at most one feature (row of
    ``x.reshape(d, K)``) is nonzero, as at a zero start or an intercept-only one. The result
    is the same bits as the product, whose other terms are exact zeros."""
    d = A.shape[1]
    if x.ndim != 1 or x.size != d * n_outputs:
        return _matvec(A, x, n_outputs)  # refused there with the message
    X = x.reshape(d, n_outputs)
    nonzero = np.flatnonzero(np.any(X != 0.0, axis=1))
    if nonzero.size > 1:
        return _matvec(A, x, n_outputs)
    eta = np.zeros((A.shape[0], n_outputs))
    if nonzero.size == 1:
        j = int(nonzero[0])
        col = A[:, j].toarray() if sp.issparse(A) else A[:, j : j + 1]
        eta += np.asarray(col, dtype=np.float64).reshape(-1, 1) * X[j]
    return eta if n_outputs > 1 else eta.ravel()


def init_rows(source: Source | Block, r0: int, x: FloatArray, model: Model | None = None,
              norms: bool = True) -> RowState:
    """First pass: the predictor ``A_b x`` and (``norms``) the row norms, plus the model's
    row data and ``w``. At a start with at most one nonzero feature (zero, or the intercept
    only) the predictor needs no product with ``A``, and without ``norms`` a block held in
    memory is not read at all."""
    blk = load(source)
    data = blk.b if model is None else model.row_data(blk)
    return RowState(
        r0=r0,
        eta=_start_matvec(blk.A, x, _outputs(model)),
        b=None if data is None else np.asarray(data, dtype=np.float64),
        w=None if blk.w is None else np.asarray(blk.w, dtype=np.float64),
        rownorm2=_row_norms2(blk.A) if norms else None,
    )


def init_terms(model: Model, source: Source | Block) -> Any:
    """A block's share of the model's data-driven starting point."""
    blk = load(source)
    return model.init_terms(blk.A, np.asarray(model.row_data(blk), dtype=np.float64), blk.w)


def matvec(source: Source | Block, p: FloatArray, n_outputs: int = 1) -> FloatArray:
    """``A_b p`` (one pass over the block) for a model of ``n_outputs`` outputs."""
    return _matvec(load(source).A, p, n_outputs)


def advance(rows: RowState, ap: FloatArray, t: float) -> RowState:
    """Move the cached predictor along the step: ``eta + t * A_b p`` (no read of A)."""
    return RowState(
        r0=rows.r0, eta=rows.eta + t * ap, b=rows.b, w=rows.w, rownorm2=rows.rownorm2
    )


def trial_stats(
    model: Model, rows: RowState, ap: FloatArray | None, ts: tuple[float, ...]
) -> list[Stats]:
    """Model statistics at ``eta + t * ap`` for every trial step ``t``."""
    out = []
    for t in ts:
        eta = rows.eta if ap is None or t == 0.0 else rows.eta + t * ap
        out.append(model.stats(eta, rows.b, rows.w))
    return out


def merge_trial_stats(model: Model, *parts: list[Stats]) -> list[Stats]:
    """Merge lists of statistics position by position (in the given, fixed order)."""
    merged = list(parts[0])
    for part in parts[1:]:
        merged = [model.merge_stats(a, b) for a, b in zip(merged, part, strict=True)]
    return merged


def trial_losses(
    model: Model,
    rows: RowState,
    ap: FloatArray | None,
    ts: tuple[float, ...],
    scalars: list[Scalars],
) -> FloatArray:
    """Data part of the objective at every trial step (block sums)."""
    vals = np.empty(len(ts))
    with np.errstate(over="ignore", invalid="ignore"):
        for j, (t, sc) in enumerate(zip(ts, scalars, strict=True)):
            eta = rows.eta if ap is None or t == 0.0 else rows.eta + t * ap
            vals[j] = model.loss_terms(eta, rows.b, rows.w, sc)
    return vals


def identity(value: Any) -> Any:
    """Return the value: a task whose result is an argument shared by many tasks."""
    return value


def sum_parts(*parts: Any) -> Any:
    """Sum partial results: arrays, floats, or dicts of them (key by key)."""
    first = parts[0]
    if isinstance(first, dict):
        return {k: sum_parts(*(p[k] for p in parts)) for k in first}
    total = first
    for p in parts[1:]:
        total = total + p
    return total


def pre_stage(
    model: Model,
    sketch: Any,
    stage: int,
    source: Source | Block | None,
    rows: RowState,
    scalars: Scalars,
    ctx: Any,
) -> dict[str, Any]:
    """A sketch's preliminary reduction on one block (reads A only if the stage needs it)."""
    terms = model.row_terms(rows.eta, rows.b, rows.w, scalars)
    A = None if source is None else load(source).A
    return sketch.pre_block(stage, A, terms.diag, rows.rownorm2, rows.r0, ctx)


def _finite_terms(r: FloatArray, D: FloatArray | None, U: FloatArray | None) -> bool:
    return bool(np.all(np.isfinite(r)) and (D is None or np.all(np.isfinite(D)))
                and (U is None or np.all(np.isfinite(U))))


def _zero_terms(r: FloatArray, D: FloatArray | None,
                U: FloatArray | None) -> tuple[FloatArray, FloatArray | None, FloatArray | None]:
    """Zero row terms in place of a block's non-finite ones (same shapes)."""
    return np.zeros_like(r), (None if D is None else np.zeros_like(D)), (None if U is None else np.zeros_like(U))


def curvature(
    model: Model,
    sketch: Any,
    source: Source | Block,
    rows: RowState,
    scalars: Scalars,
    ctx: Any,
) -> dict[str, Any]:
    """The fused curvature pass on one block.

    Returns the block's loss term, gradient part ``A_b^T r``, low-rank reduction
    ``A_b^T U`` (d x k) and the sketch's partial result (keys prefixed ``sketch:``);
    with ``sketch=None`` the loss and gradient only.
    """
    A = load(source).A
    with np.errstate(over="ignore", invalid="ignore"):
        loss, terms = model.loss_row_terms(rows.eta, rows.b, rows.w, scalars, curvature=sketch is not None)
    r, D, U = terms.grad_weight, terms.diag, terms.lowrank
    if not (np.isfinite(loss) and _finite_terms(r, D, U)):
        # the model overflowed here: the point is unusable. Report an infinite loss (the
        # solver stops with a numerical error) without sums of infinities of both signs.
        loss = np.inf
        r, D, U = _zero_terms(r, D, U)
    out: dict[str, Any] = {"loss": loss, "grad": _rmatvec(A, r)}
    if sketch is None:  # loss and gradient only (a first-order solver)
        return out
    if U is not None and U.shape[1] > 0:
        out["AU"] = np.asarray(A.T @ U, dtype=np.float64)
    for key, val in sketch.block(A, D, rows.r0, ctx).items():
        out["sketch:" + key] = val
    return out


#: Bytes of dense rows per slice of :func:`_first_order_step`: a slice's ``A_s p`` and
#: ``A_s^T r_s`` then read it from the core's cache, not from memory twice. (Smaller
#: slices fit a smaller cache, but each costs some Python work under the GIL, which the
#: threads of an in-memory fit share.)
SLICE_BYTES = 2**19


def _slice_rows(d: int) -> int:
    """Rows per slice of a dense block with ``d`` columns (at least 32)."""
    return max(32, SLICE_BYTES // (8 * max(d, 1)))


def _row_slice(v: FloatArray | None, lo: int, hi: int) -> FloatArray | None:
    return None if v is None else v[lo:hi]


def _first_order_step(model: Model, A: FloatArray, rows: RowState, p: FloatArray, ts: tuple[float, ...],
                      scalars: Scalars) -> tuple[FloatArray, dict[str, Any]]:
    """:func:`fused_step` without a sketch on a dense block, a slice of rows at a time.

    Both products of a first-order pass, ``A p`` and ``A^T r``, are memory-bound on a dense
    block: done slice by slice (:data:`SLICE_BYTES`), the second reads the rows from the
    cache, and the pass reads ``A`` from memory once instead of twice (the row terms are
    row-separable for the models with fixed scalars that take fused passes). The slices are
    fixed by the block's rows, so the result does not depend on where the block came from.
    The loss sums over the slices pairwise; a non-finite row weight makes the gradient
    non-finite (``A`` is finite), so the block is checked once, at the end."""
    n, k = A.shape[0], _outputs(model)
    P = p.reshape(A.shape[1], k) if k > 1 else p
    ap = np.empty((n, k) if k > 1 else n)
    grad = np.zeros(P.shape)
    step = _slice_rows(A.shape[1])
    losses = np.empty((len(ts), -(-n // step)))
    with np.errstate(over="ignore", invalid="ignore"):
        for i, lo in enumerate(range(0, n, step)):
            hi = min(n, lo + step)
            As, aps = A[lo:hi], ap[lo:hi]
            np.matmul(As, P, out=aps)
            eta, b, w = rows.eta[lo:hi], _row_slice(rows.b, lo, hi), _row_slice(rows.w, lo, hi)
            losses[0, i], terms = model.loss_row_terms(eta + aps, b, w, scalars, curvature=False)
            for j, t in enumerate(ts[1:], start=1):
                losses[j, i] = model.loss_terms(eta + t * aps, b, w, scalars)
            grad += As.T @ terms.grad_weight
    vals = np.sum(losses, axis=1)
    bad = not (np.isfinite(vals[0]) and np.all(np.isfinite(grad)))
    out = {"trial_losses": vals, "loss": 0.0 if bad else float(vals[0]),
           "grad": np.zeros(grad.size) if bad else grad.ravel(), "curvature_bad": float(bad)}
    return ap, out


def fused_step(
    model: Model,
    sketch: Any,
    source: Source | Block,
    rows: RowState,
    p: FloatArray,
    ts: tuple[float, ...],
    scalars: Scalars,
    ctx: Any,
) -> tuple[FloatArray, dict[str, Any]]:
    """One read of the block for a whole Newton iteration of a model with fixed scalars.

    With ``ap = A_b p`` it returns ``ap`` (kept on the worker for the line search) and a
    partial with the data losses at ``eta + t ap`` for every trial ``t`` (``"trial_losses"``;
    ``ts[0]`` must be 1) and, speculatively at the full step ``eta1 = eta + ap``, everything
    :func:`curvature` returns there: ``"loss"``, ``"grad"``, ``"AU"``, the sketch's partial
    (``"sketch:"`` keys, sampled with ``ctx``) and, for a sketch whose first preliminary
    stage reads A and that cannot rebuild its context from the sketched Gram
    (``Sketch.refreshes_from_gram``), that stage's partial at ``eta1`` (``"pre:"`` keys),
    from which the driver refreshes the sketch's context for the next iteration.

    The model's scalars must not depend on ``eta`` (``Model.fixed_scalars``): they are the
    same at every trial point. Where the full step leaves the model's domain (non-finite
    weights) the curvature part is computed with zero weights and ``"curvature_bad"``
    counts the block, so the driver knows to discard it.
    """
    if ts[0] != 1.0:
        # internal: the solver always puts the full step first
        raise ValueError(f"the first trial step of a fused pass must be 1; got {ts[0]!r}")
    A = load(source).A
    if sketch is None and isinstance(A, np.ndarray) and A.shape[0] > 2 * _slice_rows(A.shape[1]):
        return _first_order_step(model, A, rows, p, ts, scalars)  # loss and gradient only, A read once
    ap = _matvec(A, p, _outputs(model))
    vals = np.empty(len(ts))
    with np.errstate(over="ignore", invalid="ignore"):
        vals[0], terms = model.loss_row_terms(rows.eta + ap, rows.b, rows.w, scalars, curvature=sketch is not None)
        for j, t in enumerate(ts[1:], start=1):
            vals[j] = model.loss_terms(rows.eta + t * ap, rows.b, rows.w, scalars)
    r, D, U = terms.grad_weight, terms.diag, terms.lowrank
    bad = not (np.isfinite(vals[0]) and _finite_terms(r, D, U))
    if bad:
        r, D, U = _zero_terms(r, D, U)
    out: dict[str, Any] = {
        "trial_losses": vals,
        "loss": 0.0 if bad else float(vals[0]),
        "grad": _rmatvec(A, r),
        "curvature_bad": float(bad),
    }
    if sketch is None:  # loss and gradient only (a first-order solver)
        return ap, out
    if U is not None and U.shape[1] > 0:
        out["AU"] = np.asarray(A.T @ U, dtype=np.float64)
    for key, val in sketch.block(A, D, rows.r0, ctx).items():
        out["sketch:" + key] = val
    if sketch.n_pre_stages and sketch.pre_stage_reads_A[0] and not sketch.refreshes_from_gram:
        for key, val in sketch.pre_block(0, A, D, rows.rownorm2, rows.r0, ctx).items():
            out["pre:" + key] = val
    return ap, out


def check_targets(model: Model, rows: RowState) -> int:
    """Validate the block's targets against the model's domain; return the row count."""
    try:
        model.check_targets(rows.b)
    except ValueError as exc:
        raise type(exc)(f"rows [{rows.r0}, {rows.r0 + rows.eta.size}): {exc}") from None
    return int(rows.eta.size)


def hessvec(model: Model, source: Source | Block, rows: RowState, scalars: Scalars, v: FloatArray) -> FloatArray:
    """``A_b^T (D * (A_b v))``: the block's share of the diagonal part of ``H v`` (one read of A)."""
    A = load(source).A
    return _rmatvec(A, model.hessvec_rows(rows.eta, rows.b, rows.w, scalars, _matvec(A, v, _outputs(model))))


def inference_block(model: Model, source: Source | Block, x: FloatArray, groups: str | None) -> dict[str, Any]:
    """One block's share of a GLM's covariance at the coefficients ``x`` (one read of A).

    With ``g_i = s_i l'_i a_i`` (:meth:`~dsketch.models.glm._GLM.inference_rows`) it returns
    the sum-form Hessian part ``"hess"`` ``= A_b^T diag(s l'') A_b``, the heteroscedasticity
    meat ``"meat"`` ``= sum_i g_i g_i^T``, the Pearson sum ``"pearson"``, the rows that
    count ``"n"`` and their weight ``"s"``; with ``groups`` (a row-aligned integer member)
    also ``"group_ids"`` (sorted) and ``"group_scores"``, the sum of ``g_i`` over the
    block's rows of each group (groups may continue in other blocks: see
    :func:`merge_inference`). A model with ``K`` outputs (multinomial) gives per row the
    ``K`` scores ``r_i`` (``g_i = a_i kron r_i``) and the upper triangle of its ``K x K``
    curvature ``M_i``, and the matrices are ``dK x dK``
    (:func:`~dsketch.sketch.per_output.kron_gram`).
    """
    from dsketch.sketch.base import weighted_gram
    from dsketch.sketch.per_output import kron_gram, outer_triu

    blk = load(source)
    A = blk.A
    k = int(getattr(model, "n_outputs", 1))
    data = np.asarray(model.row_data(blk), dtype=np.float64)
    eta = _matvec(A, x, _outputs(model))
    d1, d2, pearson, keep = model.inference_rows(eta, data)  # type: ignore[attr-defined]
    out: dict[str, Any] = {
        "hess": kron_gram(A, d2, k),
        # the model-based covariance's expected information (another Gram only where the
        # link is not canonical: there it differs from the curvature d2)
        "fisher": weighted_gram(A, model.fisher_rows(eta, data)) if not model.canonical else 0.0,  # type: ignore[attr-defined]
        "meat": kron_gram(A, outer_triu(d1, k), k),
        "pearson": float(np.sum(pearson)),
        "n": int(np.count_nonzero(keep)),
        "s": float(model.stats(eta, data, None)["s"]),
    }
    if groups is not None:
        out["group_ids"], out["group_scores"] = _group_scores(A, np.asarray(blk.extra[groups]), d1, keep)
    return out


def _group_scores(A: Any, groups: np.ndarray, d1: FloatArray, keep: np.ndarray) -> tuple[np.ndarray, FloatArray]:
    """The block's group ids (sorted) and, for each, the sum of the scores ``a_i kron r_i``
    of its rows that count (``G x dK``; ``r_i = d1[i]``, ``K`` values a row or one)."""
    g = groups.astype(np.int64)[keep]
    rows = np.flatnonzero(keep)
    ids, inv = np.unique(g, return_inverse=True)
    R = d1.reshape(d1.shape[0], -1)
    parts = []
    for c in range(R.shape[1]):
        indicator = sp.csr_matrix((R[rows, c], (inv, rows)), shape=(ids.size, keep.size))
        parts.append(np.asarray((indicator @ A).toarray() if sp.issparse(A) else indicator @ A,
                                dtype=np.float64).reshape(ids.size, A.shape[1]))
    return ids, np.stack(parts, axis=2).reshape(ids.size, -1)


def merge_inference(*parts: dict[str, Any]) -> dict[str, Any]:
    """Add partials of :func:`inference_block`; per-group score sums are added by group id."""
    out = sum_parts(*({k: v for k, v in p.items() if not k.startswith("group_")} for p in parts))
    if "group_ids" in parts[0]:
        ids_all = np.concatenate([p["group_ids"] for p in parts])
        ids, inv = np.unique(ids_all, return_inverse=True)
        scores = np.zeros((ids.size, parts[0]["group_scores"].shape[1]))
        np.add.at(scores, inv, np.concatenate([p["group_scores"] for p in parts]))
        out["group_ids"], out["group_scores"] = ids, scores
    return out


def predict_block(model: Model, source: Source, x: FloatArray, out: str | None) -> Any:
    """A fitted GLM's predictions for one block: ``eta = A_b x (+ offset)`` (the intercept is
    the column of ones of an intercept view of the store; ``n x K`` for a K-output model)
    and ``mean = model.mean(eta)``.

    With ``out`` (the path of a Zarr group with row-aligned arrays ``eta`` and ``mean``,
    chunked so that the block covers whole chunks) the rows are written there and the
    block's row count is returned; otherwise the pair of arrays.
    """
    import zarr

    blk = load(source)
    eta = _matvec(blk.A, x, _outputs(model))
    offset = blk.extra.get("offset")
    if offset is not None:
        o = np.asarray(offset, dtype=np.float64)
        if o.shape != eta.shape and not (eta.ndim == 1 and o.size == eta.size):
            one = "(n,), one value a row" if eta.ndim == 1 else f"(n, {eta.shape[1]}), one value a row and class"
            raise StoreFormatError(
                f"store {source.spec.path!r}: member 'offset' has shape {o.shape} in a block of {eta.shape[0]} "
                f"rows, but the fitted model takes offsets of shape {one}: write the store with offsets of that "
                "shape, or without any"
            )
        eta = eta + o.reshape(eta.shape)
    mean = np.asarray(model.mean(eta), dtype=np.float64)  # type: ignore[attr-defined]
    if out is None:
        return eta, mean
    g = zarr.open_group(out, mode="r+")
    g["eta"][source.r0 : source.r1] = eta
    g["mean"][source.r0 : source.r1] = mean
    return int(eta.size)
