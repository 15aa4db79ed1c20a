"""Peak memory of a fit, estimated from the problem's shape before anything is allocated.

:func:`estimate_memory` is arithmetic on the store's metadata (rows, columns, stored
entries, dtype), the row blocking, the curvature (sketch kind and size), the solver and the
model's rank: no block is read and no cluster is needed. It prices

* each worker process: the blocks its threads read at once (the stored values plus the
  float64 copy), the per-row vectors the engine keeps for its share of the rows, each
  task's temporaries (row terms, the scaled copy of the block a Gram or an embedding
  makes, the sketch's own buffers), the partial results its blocks return (the worker
  runs all of a pass's block tasks before the reduction tasks that consume them, so every
  partial of its blocks is held at once), and a reduction node's fan-in of partials;
  with ``persist=True`` also its share of the blocks;
* the driver: the reduced partial it receives, the ``d x d`` matrices of the Newton step
  (the sketch's result, its symmetrised copy, the Hessian, the factorisation, an
  eigendecomposition fallback with its LAPACK workspace), and the preliminary stage of a
  leverage sketch (``eigh`` of a ``d x d`` matrix, the SVD of an ``8d x d`` embedding of
  dense blocks, or the Cholesky factor of sparse blocks' exact Gram).

:func:`check_memory` compares the estimate with the driver's available memory and each
worker's memory limit and raises :class:`~dsketch.errors.MemoryBudgetError` before a pass
when it does not fit, naming the ways out that would.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import Any

from dsketch.store import ProblemSpec
from dsketch.store.blocks import row_blocks

logger = logging.getLogger("dsketch")

#: Fraction of a limit a fit may plan to use (the rest: interpreter, Dask, fragmentation).
MEMORY_MARGIN = 0.8

#: Fraction of the limits that ``Cluster(persist=None)`` lets a fit with its blocks held
#: plan to use: the rest stays free for the rest of the user's process and machine.
PERSIST_MARGIN = 0.5

F8 = 8  # bytes of a float64

#: Sketch kinds whose block partial is an ``s x d`` embedding (per sign of ``D``).
EMBEDDINGS = ("countsketch", "gaussian")
SAMPLERS = ("uniform", "rownorm", "leverage")


def human(n: float) -> str:
    """Bytes in binary units: ``'27.0 GiB'``."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024.0 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024.0
    return f"{n:.1f} PiB"  # pragma: no cover


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak memory of a fit.

    Attributes
    ----------
    driver_bytes : int
        Peak bytes the driver process allocates for the fit.
    worker_bytes : int
        Peak bytes one worker process allocates (the busiest: the most blocks).
    driver_parts, worker_parts : dict
        The terms of each peak, in bytes (what :meth:`describe` lists).
    sketch, sketch_size, solver : str, int, str
        The curvature priced.
    n_blocks, blocks_per_worker, threads : int
        The row blocking and the share of one worker.
    """

    driver_bytes: int
    worker_bytes: int
    driver_parts: dict[str, int] = field(default_factory=dict)
    worker_parts: dict[str, int] = field(default_factory=dict)
    sketch: str = "exact"
    sketch_size: int = 0
    solver: str = "newton"
    n_blocks: int = 1
    blocks_per_worker: int = 1
    threads: int = 1

    def describe(self) -> str:
        """A readable breakdown of both peaks."""
        def lines(parts: dict[str, int]) -> list[str]:
            return [f"    {name}: {human(b)}" for name, b in parts.items() if b > 0]

        head = (f"memory estimate ({self.solver}, sketch {self.sketch}"
                + (f" of size {self.sketch_size:,}" if self.sketch != "exact" else "")
                + f"; {self.n_blocks} blocks, {self.blocks_per_worker} on the busiest worker, "
                f"{self.threads} thread(s) each)")
        return "\n".join([head, f"  driver: {human(self.driver_bytes)}", *lines(self.driver_parts),
                          f"  each worker: {human(self.worker_bytes)}", *lines(self.worker_parts)])


def _nonnegative_curvature(model: Any) -> bool:
    """Whether the model's ``D`` is never negative (one embedding per block, not two)."""
    if model is None:
        return False
    from dsketch.models.glm import _GLM

    return isinstance(model, _GLM) and getattr(model, "preconditioner", "block") != "full"


def _leverage_mode(sketch_params: dict[str, Any] | None, d: int) -> str:
    from dsketch.sketch.leverage import LeverageSampler

    scores = (sketch_params or {}).get("scores", "auto")
    if scores == "auto":
        return "exact" if d <= LeverageSampler.AUTO_EXACT_MAX_FEATURES else "approx"
    return str(scores)


def _osnap_rows(sketch_params: dict[str, Any] | None, d: int) -> int:
    p = sketch_params or {}
    k = int(p.get("osnap_nnz", 4))
    return k * max(1, math.ceil(int(p.get("embed_factor", 8)) * d / k))


#: Driver bytes per row block for the Dask client's task records and messages (measured).
DRIVER_BYTES_PER_BLOCK = 160 * 1024


@dataclass(frozen=True)
class _Layout:
    """What every term of :func:`estimate_memory` is priced from: the row blocking, the share
    of the busiest worker, the curvature and the bytes of one block (see there)."""

    n: int
    d: int
    k: int
    sparse: bool
    n_blocks: int
    rows_b: int
    bpw: int
    inflight: int
    sketch: str
    s: int
    keys: int
    nnz_b: int
    block: int
    raw: int
    scaled: int
    vectors: int
    gram: int
    state: int
    outputs: int = 1


def _block_sizes(n: int, spec: ProblemSpec, block_rows: int | None,
                 bounds: list[tuple[int, int]] | None) -> list[int]:
    """Rows of each block: of ``bounds`` when given, else of the engine's blocking."""
    from dsketch.engine.core import auto_block_rows

    if bounds is not None:
        return [int(b) - int(a) for a, b in bounds]
    br = int(auto_block_rows(spec) if block_rows is None else block_rows)
    return [r1 - r0 for r0, r1 in row_blocks(n, br)]


def _block_bytes(spec: ProblemSpec, n: int, d: int, rows_b: int, n_blocks: int) -> tuple[int, int, int, int]:
    """One block's stored entries, its float64 bytes as read, the raw values it is cast from
    and its row-scaled copy."""
    if spec.sparse:
        nnz_b = math.ceil(spec.nnz / n * rows_b) if n_blocks > 1 else int(spec.nnz)
        idx = 8 if (spec.index_dtype or "int64").endswith("64") else 4
        block = nnz_b * (F8 + idx) + (rows_b + 1) * 8
        raw = nnz_b * (F8 + idx) if spec.dtype != "float64" or idx != 8 else 0
        scaled = nnz_b * F8  # a row-scaled copy of the values (indices shared)
    else:
        nnz_b = rows_b * d
        block = rows_b * d * F8
        raw = rows_b * d * (1 + (0 if spec.dtype == "float64" else 4))  # finiteness mask, float32 read
        scaled = rows_b * d * F8
    return nnz_b, block, raw, scaled


def _layout(spec: ProblemSpec, *, sketch: str, sketch_size: int | None, solver: str, block_rows: int | None,
            bounds: list[tuple[int, int]] | None, n_workers: int, threads: int, model: Any,
            rank: int | None) -> _Layout:
    """The :class:`_Layout` of a fit (arguments as :func:`estimate_memory`'s)."""
    n, d = max(int(spec.n_samples), 1), int(spec.n_features)
    k = int(rank if rank is not None else getattr(model, "rank", 0) or 0)
    sizes = _block_sizes(n, spec, block_rows, bounds)
    n_blocks, rows_b = len(sizes), max(sizes)
    n_workers, threads = max(int(n_workers), 1), max(int(threads), 1)
    bpw = math.ceil(n_blocks / n_workers)
    rows_w = min(n, bpw * rows_b)
    nnz_b, block, raw, scaled = _block_bytes(spec, n, d, rows_b, n_blocks)
    outputs = int(getattr(model, "n_outputs", 1) or 1)
    return _Layout(
        n=n, d=d, k=k, sparse=bool(spec.sparse), n_blocks=n_blocks, rows_b=rows_b, bpw=bpw, inflight=min(threads, bpw),
        sketch="none" if solver in ("gd", "lbfgs") else sketch,  # first-order: no curvature
        s=int(sketch_size or 1), keys=1 if _nonnegative_curvature(model) else 2,
        nnz_b=nnz_b, block=block, raw=raw, scaled=scaled,
        # eta, b, w, norms, r, D, trial losses, U and A^T-side copies (eta, r, D: n x K for K outputs)
        vectors=rows_b * F8 * (8 + 2 * k + 6 * (outputs - 1)),
        gram=d * d * F8 * _grams_per_output(model, outputs),
        state=rows_w * F8 * (6 + k),
        outputs=outputs,
    )


def _block_partial(L: _Layout, sketch_params: dict[str, Any] | None) -> tuple[int, int]:
    """The partial a block returns for the curvature pass, and what making it costs on top."""
    d, gram = L.d, L.gram
    if L.sketch in ("exact", *SAMPLERS):
        partial = gram
        kept = L.rows_b if L.sketch == "exact" else min(L.rows_b, math.ceil(L.s * L.rows_b / L.n) * 2 + 16)
        make = (2 * gram if not L.sparse else 0) + (kept * d * F8 if not L.sparse else kept * 12 * max(
            L.nnz_b // L.rows_b, 1))
        if L.sketch == "leverage":
            make += L.rows_b * F8 * min(d, int((sketch_params or {}).get("jl_dim", 32)) + 1)
    elif L.sketch in EMBEDDINGS:
        partial = L.keys * L.s * d * F8
        if L.sketch == "gaussian":  # the accumulator, one product and the scaled copy, per key
            chunk = min(64 * 2**20, L.rows_b * L.s * 32)
            make = L.keys * (L.scaled + L.s * d * F8) + chunk + L.s * d * F8
        else:  # CountSketch: S_b Y as a sparse matrix, then dense
            make = L.keys * (L.scaled + min(L.nnz_b, L.s * d) * 16)
    else:  # gradient only
        partial, make = 0, 0
    return partial + d * F8 * (2 + L.k), make  # gradient and A^T U


def _worker_phase(L: _Layout, part: int, make: int, gram_partial: bool, split_every: int) -> dict[str, int]:
    """A worker's terms during one pass whose blocks each return ``part`` bytes."""
    return {
        "blocks in flight (read + casts)": L.inflight * (L.block + L.raw),
        "per-row state": L.state,
        "task temporaries": L.inflight * (L.vectors + make),
        "partials held for the reduction": L.bpw * part,
        # a reduction node's inputs and running sum; with one block, the buffers of sending
        # its partial to the driver (measured: about two copies of a d x d Gram, half of one
        # for an embedding)
        "reduction fan-in / sending": (min(split_every, L.n_blocks) + 2) * part if L.n_blocks > 1
        else (2 * part if gram_partial else part // 2),
    }


def _worker_parts(L: _Layout, *, persist: bool, split_every: int,
                  sketch_params: dict[str, Any] | None) -> dict[str, int]:
    """The busiest worker's terms: the curvature pass, or a leverage sketch's preliminary
    pass for the scores when that is the larger; plus its share of persisted blocks."""
    partial, make = _block_partial(L, sketch_params)
    parts = _worker_phase(L, partial, make, L.sketch not in EMBEDDINGS, split_every)
    if L.sketch == "leverage":
        if _leverage_mode(sketch_params, L.d) == "exact" or L.sparse:  # sparse: the Gram either way
            pre = _worker_phase(L, L.gram, 0 if L.sparse else 2 * L.gram + L.scaled, True, split_every)
        else:
            m = _osnap_rows(sketch_params, L.d)
            pre = _worker_phase(L, m * L.d * F8, (min(4 * L.nnz_b, m * L.d) * 16) if L.sparse else 0, False,
                                split_every)
        if sum(pre.values()) > sum(parts.values()):
            parts = pre
    if persist:
        parts["persisted blocks"] = L.bpw * L.block
    return parts


#: Step and gradient-change pairs an L-BFGS fit keeps (the default memory of
#: :class:`~dsketch.solvers.lbfgs.LBFGSMemory`).
LBFGS_PAIRS = 10


def _driver_parts(L: _Layout, sketch_params: dict[str, Any] | None) -> dict[str, int]:
    """The driver's terms: the reduced partial, the Newton step's ``d x d`` matrices, the
    low-rank part, a leverage sketch's stage, vectors and the client's task records."""
    d, gram = L.d, L.gram
    parts: dict[str, int] = {}
    if L.sketch in EMBEDDINGS:
        parts["reduced embedding"] = L.keys * L.s * d * F8
        parts["curvature matrices (d x d)"] = 4 * gram
    elif L.sketch == "none":  # first-order: no d x d matrix; L-BFGS keeps its step and gradient pairs
        parts["L-BFGS pairs"] = 2 * LBFGS_PAIRS * d * L.outputs * F8
    else:
        parts["reduced Gram"] = gram
        # the sketch's result, the Hessian, its symmetrised copy, the factor; a fused pass keeps
        # the previous iterate's Hessian while it assembles the next
        parts["curvature matrices (d x d)"] = 4 * gram
    if L.k:
        parts["low-rank part"] = 2 * d * L.k * F8 + gram
    if L.sketch == "leverage":
        if _leverage_mode(sketch_params, d) == "exact":
            pre = 4 * gram
        elif L.sparse:
            pre = 3 * gram  # the reduced Gram, its ridged copy and the Cholesky factor
        else:
            m = _osnap_rows(sketch_params, d)
            pre = 3 * m * d * F8 + 2 * gram  # the embedding, SVD's copy and U, V^T and T
        parts["leverage scores' stage"] = max(0, pre - sum(parts.values()))
    parts["vectors"] = d * F8 * 16
    # the client's records of each block's tasks and their messages, whatever d is (measured
    # on a 20,000-row store in 20 blocks against one: 3.2 MiB more at d = 50, 200 and 400)
    parts["task bookkeeping"] = L.n_blocks * DRIVER_BYTES_PER_BLOCK
    return parts


def estimate_memory(
    spec: ProblemSpec,
    *,
    sketch: str = "exact",
    sketch_size: int | None = None,
    solver: str = "newton",
    block_rows: int | None = None,
    bounds: list[tuple[int, int]] | None = None,
    n_workers: int = 1,
    threads: int = 1,
    model: Any = None,
    rank: int | None = None,
    persist: bool = False,
    split_every: int = 8,
    sketch_params: dict[str, Any] | None = None,
) -> MemoryEstimate:
    """Estimate the driver's and each worker's peak memory for a fit (no I/O).

    Parameters
    ----------
    spec : ProblemSpec
        The store's metadata (with the intercept column when the fit adds one).
    sketch, sketch_size, solver
        As given to :func:`dsketch.fit` (``sketch`` already resolved from ``"auto"``).
    block_rows, bounds
        The row blocking (default :func:`~dsketch.engine.core.auto_block_rows`).
    n_workers, threads
        Worker processes and threads per worker.
    model : Model, optional
        The bound model (its ``rank`` and whether ``D`` can be negative); ``rank``
        overrides its rank.
    persist : bool
        Whether the blocks stay in the workers' memory.
    split_every : int
        Fan-in of the engine's reduction tree.
    """
    L = _layout(spec, sketch=sketch, sketch_size=sketch_size, solver=solver, block_rows=block_rows, bounds=bounds,
                n_workers=n_workers, threads=threads, model=model, rank=rank)
    parts_w = _worker_parts(L, persist=persist, split_every=split_every, sketch_params=sketch_params)
    parts_d = _driver_parts(L, sketch_params)
    return MemoryEstimate(driver_bytes=int(sum(parts_d.values())), worker_bytes=int(sum(parts_w.values())),
                          driver_parts=parts_d, worker_parts=parts_w, sketch=L.sketch, sketch_size=L.s, solver=solver,
                          n_blocks=L.n_blocks, blocks_per_worker=L.bpw, threads=max(int(threads), 1))


# ------------------------------------------------------------------ limits
@dataclass(frozen=True)
class MemoryLimits:
    """What a fit may use: the driver's available memory and the smallest worker's budget."""

    driver_bytes: int
    worker_bytes: int
    n_workers: int
    threads: int
    shared: bool = False  # workers on the driver's machine (an embedded cluster): one pool
    worker_source: str = "memory limit"


def driver_available() -> int:
    """Bytes the driver's machine can still give (``psutil.virtual_memory().available``)."""
    import psutil

    return int(psutil.virtual_memory().available)


def embedded_limits(n_workers: int, threads_per_worker: int = 1) -> MemoryLimits:
    """The limits of the local cluster :func:`dsketch.engine.client.connect` starts: Dask's
    ``memory_limit="auto"`` (the machine's memory shared out by threads), on this machine."""
    import psutil

    total = int(psutil.virtual_memory().total)
    avail = driver_available()
    from distributed.system import MEMORY_LIMIT

    limit = int(min(total, MEMORY_LIMIT) / max(n_workers, 1))  # LocalCluster's share per worker
    return MemoryLimits(driver_bytes=avail, worker_bytes=min(limit, avail), n_workers=n_workers,
                        threads=threads_per_worker, shared=True)


def thread_limits(n_threads: int) -> MemoryLimits:
    """The limits of a fit on ``n_threads`` threads of the driver
    (:class:`~dsketch.engine.threads.ThreadClient`): one "worker", the driver, with this
    machine's available memory, which the driver's own needs share (``shared``)."""
    avail = driver_available()
    return MemoryLimits(driver_bytes=avail, worker_bytes=avail, n_workers=1, threads=max(int(n_threads), 1),
                        shared=True, worker_source="available memory (the driver's threads)")


def holds_blocks(spec: ProblemSpec, limits: MemoryLimits, **kw: Any) -> bool:
    """Whether a fit may keep its blocks in memory (``Cluster(persist=None)``): its estimate
    with the blocks held (:func:`estimate_memory`, ``kw`` as there) fits in
    :data:`PERSIST_MARGIN` of ``limits`` (the driver's and the workers' needs added up when
    they share one machine)."""
    kw = {**kw, "n_workers": limits.n_workers, "threads": limits.threads, "persist": True}
    return fits(estimate_memory(spec, **kw), limits, margin=PERSIST_MARGIN)[0]


def client_limits(client: Any) -> MemoryLimits:
    """Limits from a running cluster: each worker's ``memory_limit`` less what it already
    holds (0 or None: no limit, so this machine's available memory). A client without a
    scheduler (:class:`~dsketch.engine.threads.ThreadClient`) runs the tasks on the driver's
    threads: one "worker", the driver, with this machine's available memory."""
    if not hasattr(client, "scheduler_info"):
        return thread_limits(int(getattr(client, "n_threads", 1) or 1))
    info = client.scheduler_info(n_workers=-1) if _takes_n_workers(client) else client.scheduler_info()
    workers = list(info.get("workers", {}).values())
    avail = driver_available()
    budgets, threads, source = [], 1, "memory limit"
    for w in workers:
        limit = w.get("memory_limit") or 0
        used = int((w.get("metrics") or {}).get("managed_bytes", 0) or 0)
        if limit:
            budgets.append(max(int(limit) - used, 0))
        else:
            budgets.append(avail)
            source = "available memory (no worker memory limit)"
        threads = max(threads, int(w.get("nthreads", 1) or 1))
    return MemoryLimits(driver_bytes=avail, worker_bytes=min(budgets) if budgets else avail,
                        n_workers=max(len(workers), 1), threads=threads, worker_source=source)


def _takes_n_workers(client: Any) -> bool:
    import inspect

    try:
        return "n_workers" in inspect.signature(client.scheduler_info).parameters
    except (TypeError, ValueError):  # pragma: no cover
        return False


# ------------------------------------------------------------------ the check
def fits(est: MemoryEstimate, limits: MemoryLimits, margin: float = MEMORY_MARGIN) -> tuple[bool, str]:
    """Whether an estimate fits the limits; when not, what exceeds what (a phrase)."""
    if est.driver_bytes > margin * limits.driver_bytes:
        return False, (f"the driver needs about {human(est.driver_bytes)} but {human(limits.driver_bytes)} "
                       "is available")
    if est.worker_bytes > margin * limits.worker_bytes:
        return False, (f"each worker needs about {human(est.worker_bytes)} but has "
                       f"{human(limits.worker_bytes)} ({limits.worker_source})")
    if limits.shared:
        total = est.driver_bytes + limits.n_workers * est.worker_bytes
        if total > margin * limits.driver_bytes:
            return False, (f"the driver and its {limits.n_workers} local workers need about {human(total)} "
                           f"together but {human(limits.driver_bytes)} is available")
    return True, ""


def _what(est: MemoryEstimate, spec: ProblemSpec) -> str:
    d = spec.n_features
    if est.sketch in EMBEDDINGS:
        return (f"a {est.sketch} embedding of {est.sketch_size:,} x {d:,} is "
                f"{human(est.sketch_size * d * F8)} per block partial")
    return f"every d x d matrix of {d:,} columns is {human(d * d * F8)}"


def max_columns(spec: ProblemSpec, limits: MemoryLimits, margin: float = MEMORY_MARGIN,
                **kw: Any) -> int:
    """The most columns whose fit (same rows, same entries per row) fits the limits."""
    def ok(d: int) -> bool:
        nnz = spec.nnz if not spec.sparse else min(spec.nnz, spec.n_samples * d)
        sub = replace(spec, n_features=d, nnz=nnz)
        return fits(estimate_memory(sub, **kw), limits, margin)[0]

    lo, hi = 0, int(spec.n_features)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def max_sketch_size(spec: ProblemSpec, limits: MemoryLimits, margin: float = MEMORY_MARGIN, **kw: Any) -> int:
    """The largest embedding dimension that fits (0: none)."""
    lo, hi = 0, max(int(kw.pop("sketch_size", 1) or 1), 1)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(estimate_memory(spec, sketch_size=mid, **kw), limits, margin)[0]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def ways_out(spec: ProblemSpec, limits: MemoryLimits, *, sketch: str, sketch_size: int, solver: str,
             default_size: Any, margin: float = MEMORY_MARGIN, **kw: Any) -> list[str]:
    """The changes to a fit that would make it fit the limits (phrases for the message)."""
    out: list[str] = []
    if sketch in EMBEDDINGS:
        s_max = max_sketch_size(spec, limits, margin, sketch=sketch, sketch_size=sketch_size, solver=solver, **kw)
        if s_max >= 1:
            out.append(f"a smaller --sketch-size (at most {s_max:,} for {sketch})")
    for alt in ("leverage", "uniform", "exact"):
        if alt == sketch:
            continue
        size = default_size(alt)
        if fits(estimate_memory(spec, sketch=alt, sketch_size=size, solver=solver, **kw), limits, margin)[0]:
            out.append(f"--sketch {alt}" + (f" (size {size:,})" if alt != "exact" else ""))
            if alt != "exact" and solver == "newton":
                out.append(f"--solver newton-cg with --sketch {alt} as its preconditioner (exact steps)")
            break
    if kw.get("persist"):
        kw2 = {**kw, "persist": False}
        if fits(estimate_memory(spec, sketch=sketch, sketch_size=sketch_size, solver=solver, **kw2),
                limits, margin)[0]:
            out.append("no --persist")
    d_max = max_columns(spec, limits, margin, sketch=sketch, sketch_size=sketch_size, solver=solver, **kw)
    if d_max < spec.n_features:
        out.append(f"fewer columns (at most about {d_max:,} of {spec.n_features:,} fit)" if d_max
                   else "fewer columns")
    out.append("a machine or workers with more memory")
    return out


def check_memory(spec: ProblemSpec, limits: MemoryLimits, *, sketch: str, sketch_size: int, solver: str,
                 default_size: Any, margin: float = MEMORY_MARGIN, **kw: Any) -> MemoryEstimate:
    """Raise :class:`~dsketch.errors.MemoryBudgetError` when the fit's estimate does not fit."""
    from dsketch.errors import MemoryBudgetError

    kw = {**kw, "n_workers": limits.n_workers, "threads": limits.threads}
    est = estimate_memory(spec, sketch=sketch, sketch_size=sketch_size, solver=solver, **kw)
    ok, why = fits(est, limits, margin)
    if not ok:
        outs = ways_out(spec, limits, sketch=sketch, sketch_size=sketch_size, solver=solver,
                        default_size=default_size, margin=margin, **kw)
        curv = f"solver {solver!r}" if solver in ("gd", "lbfgs") else (
            f"{solver} with the {sketch} curvature" + (f" of size {sketch_size:,}" if sketch != "exact" else ""))
        raise MemoryBudgetError(
            f"not enough memory for {curv}: {why} ({_what(est, spec)}); ways out: " + "; ".join(outs)
            + "; or Cluster(memory_check=False) (--no-memory-check) to try anyway",
            estimate=est,
        )
    return est


def _grams_per_output(model: Any, outputs: int) -> int:
    """``d x d`` matrices a curvature partial holds: 1, or for a K-output model (multinomial)
    its K diagonal blocks, or the K (K + 1) / 2 class pairs of its full preconditioner."""
    if outputs == 1:
        return 1
    return outputs * (outputs + 1) // 2 if getattr(model, "preconditioner", "block") == "full" else outputs


def plan_curvature(sketch: str, size: int, limits: MemoryLimits, *, spec: ProblemSpec, model: Any, solver: str,
                 size_of: Any, auto: bool, **kw: Any) -> tuple[str, int]:
    """The curvature and size to fit with: the given ones when their estimated memory fits
    ``limits``; with ``sketch="auto"`` the other of exact and leverage when only it fits;
    otherwise :class:`~dsketch.errors.MemoryBudgetError`."""
    from dsketch.errors import MemoryBudgetError

    try:
        est = check_memory(spec, limits, sketch=sketch, sketch_size=size, solver=solver, default_size=size_of,
                           model=model, **kw)
        logger.debug("%s", est.describe())
        return sketch, size
    except MemoryBudgetError as exc:
        if not auto or solver in ("gd", "lbfgs"):
            raise
        other = "leverage" if sketch == "exact" else "exact"
        try:
            est = check_memory(spec, limits, sketch=other, sketch_size=size_of(other), solver=solver,
                               default_size=size_of, model=model, **kw)
        except MemoryBudgetError:
            raise MemoryBudgetError(f"sketch='auto': neither exact nor leverage curvature fits; {exc}",
                                    estimate=exc.estimate) from None
        logger.info("sketch='auto': %s curvature instead of %s, which would not fit in memory (%s)", other,
                    sketch, str(exc).split(" (", 1)[0].split(": ", 1)[-1])
        logger.debug("%s", est.describe())
        return other, size_of(other)
