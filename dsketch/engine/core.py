"""The engine: row blocks of a problem store mapped over a Dask cluster, tree-reduced.

The engine uses the futures API of ``dask.distributed``: iterative solvers keep per-block
state (the cached predictor ``A x``) in worker memory between passes, which futures
express directly. Every reduction is a fixed tree over *block indices* (``split_every``
children per node), so its floating-point result depends neither on the number of
workers nor on the order in which tasks finish. Row blocks are cut at multiples of
``block_rows`` (:func:`dsketch.store.blocks.row_blocks`) independently of the store's
chunks, so the storage chunking does not change the result either; the default
``block_rows`` (:func:`auto_block_rows`) depends on the problem's shape and value type
only, never on its chunks nor on the cluster.

Cost is counted in *passes over A*: every method that reads the design matrix adds one
to :attr:`Engine.n_passes`; reductions over the cached per-row vectors add nothing.
"""

from __future__ import annotations

import logging
import operator
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
from distributed import Client, Future

from dsketch.engine import tasks
from dsketch.engine.threads import ThreadClient
from dsketch.errors import ChunkLayoutError, InvalidParameterError
from dsketch.models.base import Model, Scalars, Stats
from dsketch.store import ProblemSpec
from dsketch.store.blocks import check_unchanged, row_blocks
from dsketch.store.memory import MemoryProblem

logger = logging.getLogger("dsketch")

#: Most rows a block gets from :func:`auto_block_rows` (the per-row vectors of such a block,
#: 8 MiB each, stay small beside its share of ``A``).
MAX_BLOCK_ROWS = 2**20

#: Bytes of stored ``A`` per block that :func:`auto_block_rows` aims at.
BLOCK_BYTES = 64 * 2**20
#: Blocks :func:`auto_block_rows` aims at for a small problem: enough for 8 worker threads
#: to get two each, so no thread idles while another finishes a block.
MIN_BLOCKS = 16


def _floor_pow2(x: float) -> int:
    return 1 << max(int(np.floor(np.log2(max(x, 1.0)))), 0)


def auto_block_rows(problem: ProblemSpec) -> int:
    """The default rows per block: a power of two (or, for the two blocks of the last rule
    below, a multiple of the longest default chunk), from the problem's shape and storage
    type alone (``n``, ``d``, ``nnz``, dtype).

    About :data:`BLOCK_BYTES` of stored ``A`` per block (dense: ``itemsize * d`` bytes a
    row; CSR: 12 bytes per stored entry) and, for small problems, at least
    :data:`MIN_BLOCKS` blocks. Every block also returns a dense ``d x d`` partial (the Gram
    or the sketch's share), which costs about as much to make, send and add as reading
    twice its bytes of ``A``: a block holds at least that much of ``A`` while two blocks
    remain (this matters for sparse rows and large ``d``: on the sparse benchmark problem,
    5e6 x 2000 with 8.5 entries a row, 524,288-row blocks fit in 12.6 s against 22.6 s
    with 131,072). Those two blocks are halves of the rows, rounded up to a multiple of
    ``n / 16`` taken down to a power of two (the longest chunk
    :func:`~dsketch.store.default_chunk_rows` gives), not the power of two at or above
    ``n / 2``: on the one-hot flights design (327,346 rows) that was 262,144 and 65,202 rows,
    and every pass waited for the long block while the other thread idled (a regularisation
    path 4.7 s, against 2.9 s with 163,840 and 163,506). At least 1024 rows and at most
    :data:`MAX_BLOCK_ROWS`.

    Neither the store's chunking nor the cluster enters the rule, so the block boundaries,
    hence the reduction tree and every rounding of a fit, are the same for one problem
    written with any chunks and fitted on any number of workers. A block may start inside
    a storage chunk (that chunk is then read by two blocks); the default chunking of
    :func:`~dsketch.store.default_chunk_rows` is a power of two no longer than these
    blocks, so a store written with it is read chunk-aligned.
    """
    n = max(int(problem.n_samples), 1)
    if problem.sparse:
        per_row = 12.0 * max(problem.nnz, 1) / n
    else:
        per_row = float(np.dtype(problem.dtype).itemsize) * problem.n_features
    per_row = max(per_row, 1e-9)
    rows = _floor_pow2(min(BLOCK_BYTES / per_row, n / MIN_BLOCKS))
    partial_rows = _floor_pow2(2.0 * 8.0 * problem.n_features**2 / per_row)
    grain = max(_floor_pow2(n / MIN_BLOCKS), 1024)  # the longest default chunk (n / 16, a power of two)
    halves = -(-((n + 1) // 2) // grain) * grain  # two blocks, the first at most a grain longer
    rows = max(rows, min(partial_rows, halves))
    return int(min(max(rows, 1024), MAX_BLOCK_ROWS))


def check_bounds(bounds: Sequence[tuple[int, int]], n_samples: int) -> list[tuple[int, int]]:
    """Validate explicit block boundaries: contiguous, non-empty, covering all rows."""
    out = [(int(a), int(b)) for a, b in bounds]
    if not out or out[0][0] != 0 or out[-1][1] != n_samples:
        raise ChunkLayoutError(
            f"row blocks must start at 0 and end at n_samples={n_samples}; got "
            f"{out[:1]}...{out[-1:]} — pass bounds covering every row once"
        )
    for (a0, a1), (b0, _) in zip(out, out[1:], strict=False):
        if a1 != b0:
            raise ChunkLayoutError(f"row blocks must be contiguous; block [{a0}, {a1}) is followed by one starting at {b0}")
    for a, b in out:
        if b <= a:
            raise ChunkLayoutError(f"row block [{a}, {b}) is empty; every block needs at least one row")
    return out


def rows_key(model: Model | None) -> Any:
    """What the rows :meth:`Engine.init` caches depend on of a model: its name and parameters
    but the penalty's (``l1``, ``l2``: the fits of a path differ only in those)."""
    if model is None:
        return None
    return tuple(sorted((k, repr(v)) for k, v in model.describe().items() if k not in ("l1", "l2")))


class Engine:
    """Map per-block maths over the row blocks of a problem and reduce the results.

    Parameters
    ----------
    problem : ProblemSpec
        An opened problem store (:func:`dsketch.store.open_problem`), or an in-memory
        problem (:func:`dsketch.store.memory.in_memory`).
    client : distributed.Client or ThreadClient
        The cluster to run on, or the driver's threads
        (:class:`~dsketch.engine.threads.ThreadClient`).
    block_rows : int, optional
        Rows per block (ignored when ``bounds`` is given); default
        :func:`auto_block_rows`.
    bounds : sequence of (start, stop), optional
        Explicit row blocks (contiguous, covering all rows).
    persist : bool, default False
        Load the blocks once into cluster memory instead of streaming them from the
        store on every pass. Faster when the data fit in the workers' memory. An in-memory
        problem (:class:`~dsketch.store.memory.MemoryProblem`) is always held as blocks.
    split_every : int, default 8
        Fan-in of the reduction tree.
    members : sequence of str
        Row-aligned store members read with every block (a model's ``row_members``).
    count_load : bool, default True
        Count the load of ``persist=True`` as a pass over A. False: the load is counted as
        the first pass that reads the loaded blocks (which waits for it; the store is read
        once either way), so a fit reports the same passes held or streamed (what
        ``Cluster(persist=None)`` reports when it holds the blocks).

    Notes
    -----
    Per-block state held on the workers: the predictor, ``b``, ``w`` and the squared row
    norms (4 floats per row), plus the blocks themselves when ``persist=True``.
    """

    def __init__(
        self,
        problem: ProblemSpec,
        client: Client,
        *,
        block_rows: int | None = None,
        bounds: Sequence[tuple[int, int]] | None = None,
        persist: bool = False,
        split_every: int = 8,
        members: Sequence[str] = (),
        count_load: bool = True,
    ) -> None:
        if split_every < 2:
            raise InvalidParameterError(f"split_every must be >= 2; got {split_every}")
        self.problem = problem
        self.client = client
        self.bounds = (
            check_bounds(bounds, problem.n_samples)
            if bounds is not None
            else row_blocks(problem.n_samples, auto_block_rows(problem) if block_rows is None else block_rows)
        )
        self.split_every = split_every
        self.persist = persist
        self.n_passes = 0
        self.members = tuple(members)
        self._sources: list[Any]
        if isinstance(problem, MemoryProblem):
            self._sources = self._memory_sources(problem)
        else:
            self._sources = [tasks.Source(problem, a, b, self.members) for a, b in self.bounds]
        if persist and not isinstance(problem, MemoryProblem):
            futs = client.map(tasks.load_source, self._sources, pure=False)
            self._sources = futs
            self.n_passes += int(count_load)
        self.rows: list[Future] | None = None
        #: ``(x, rows key)`` when :attr:`rows` are known to hold ``A x`` (set by :meth:`init`
        #: and :meth:`settle`, cleared by :meth:`advance`); ``_norms``: they hold row norms
        self._rows_at: tuple[np.ndarray, Any] | None = None
        self._norms = False

    # ------------------------------------------------------------------ helpers
    def _memory_sources(self, problem: MemoryProblem) -> list[Any]:
        """The blocks of an in-memory problem, made once (views of the caller's rows where
        possible): on a :class:`~dsketch.engine.threads.ThreadClient` the blocks themselves
        (made on its threads), on a Dask cluster futures of blocks scattered from the driver
        (the problem itself, holding all the arrays, is never sent). Not a pass over A: the
        data are in memory already, as for ``persist=True`` (whose load pass this replaces).
        """
        lo, hi = [a for a, _ in self.bounds], [b for _, b in self.bounds]
        members = [self.members] * len(lo)
        if isinstance(self.client, ThreadClient):
            return list(self.client.gather(self.client.map(problem.block, lo, hi, members)))
        blocks = [problem.block(a, b, self.members) for a, b in self.bounds]
        return list(self.client.scatter(blocks, hash=False))

    @property
    def n_blocks(self) -> int:
        return len(self.bounds)

    def _submit(self, fn: Any, *args: Any) -> Future:
        # keyed by the task's own name (not the wrapper's): the dashboard and the scheduler's
        # task prefixes show "curvature", "fused_step", ... as before
        key = f"{getattr(fn, '__name__', 'task')}-{uuid.uuid4().hex}"
        return self.client.submit(tasks.settled_call, fn, *args, pure=False, key=key)

    def _tree(self, futures: list[Future], combine: Any, *extra: Any) -> Any:
        """Reduce futures with ``combine(*extra, *group)`` over a fixed tree; return the value."""
        level = list(futures)
        while len(level) > 1:
            level = [
                self._submit(combine, *extra, *level[i : i + self.split_every])
                for i in range(0, len(level), self.split_every)
            ]
        return level[0].result()

    def _share(self, value: Any) -> Any:
        """Send an argument that every block's task reads (a vector, a sketch context) once.

        It becomes the result of a task that returns it, so the scheduler holds the value in
        the task's definition and can recompute it when the worker holding it dies; a
        ``scatter`` could not be recomputed, and a broadcast ``scatter`` replicates to a
        worker that died without the scheduler knowing yet and retries it for ever.
        """
        return self._submit(tasks.identity, value)

    # ------------------------------------------------------------------ passes
    def init(self, x: np.ndarray, model: Model | None = None, norms: bool = True) -> None:
        """Read every block once: cache ``A x``, the model's row data (``b``), ``w`` and,
        with ``norms`` (a sketch with preliminary stages needs them), the squared row norms
        (one pass).

        Nothing is read when the cached rows are those of this ``x`` already, for a model
        with the same row data (:func:`rows_key`) and with the norms if they are wanted:
        the next fit of a path starts where the fit before it ended (:meth:`settle`). Only
        on the driver's threads: on a Dask cluster the rows are computed again, or each fit's
        rows would descend from all the fits before, and the scheduler would keep every pass
        of the path to recompute them after a worker's loss.
        """
        x = np.asarray(x, dtype=np.float64)
        key = rows_key(model)
        at, self._rows_at = self._rows_at, None
        if (self.rows is not None and at is not None and at[1] == key and (self._norms or not norms)
                and at[0].shape == x.shape and np.array_equal(at[0], x)):
            self._rows_at = at
            return
        xs = self._share(x)
        self.rows = [
            self._submit(tasks.init_rows, src, r0, xs, model, bool(norms))
            for src, (r0, _) in zip(self._sources, self.bounds, strict=True)
        ]
        self._rows_at, self._norms = (x.copy(), key), bool(norms)
        self.n_passes += 1

    def settle(self, x: np.ndarray, model: Model | None) -> None:
        """Declare the cached rows to be those of ``x`` (the solver's last iterate, which every
        step reached by :meth:`advance`): the next :meth:`init` at ``x`` reads nothing."""
        if self.rows is not None and isinstance(self.client, ThreadClient):
            self._rows_at = (np.array(x, dtype=np.float64, copy=True), rows_key(model))

    def forget_rows(self) -> None:
        """Make the next :meth:`init` compute the rows (after a fit that failed)."""
        self._rows_at = None

    def reuse(self) -> None:
        """Start the count of passes again, for the next fit on this engine's blocks."""
        self.n_passes = 0

    def initial_coef(self, model: Model) -> np.ndarray:
        """The model's data-driven starting point (one pass), or zeros if it has none."""
        d = self.problem.n_features
        if type(model).init_terms is Model.init_terms or not getattr(model, "has_warm_start", True):
            return np.zeros(d * int(getattr(model, "n_outputs", 1)))
        parts = [self._submit(tasks.init_terms, model, src) for src in self._sources]
        total = self._tree(parts, tasks.sum_parts)
        self.n_passes += 1
        return model.init_coef(total, d)

    def matvec(self, p: np.ndarray, n_outputs: int = 1) -> list[Future]:
        """``A p`` as per-block futures (one pass); ``p`` holds ``d * n_outputs`` coefficients
        (a K-output model's, row-major ``d x K``)."""
        ps = self._share(np.asarray(p, dtype=np.float64))
        self.n_passes += 1
        return [self._submit(tasks.matvec, src, ps, int(n_outputs)) for src in self._sources]

    def advance(self, ap: list[Future], t: float) -> None:
        """Update the cached predictor to ``A (x + t p)`` without reading A."""
        assert self.rows is not None
        self._rows_at = None
        self.rows = [
            self._submit(tasks.advance, r, a, float(t)) for r, a in zip(self.rows, ap, strict=True)
        ]

    def trial_scalars(
        self, model: Model, ap: list[Future] | None = None, ts: Sequence[float] = (0.0,)
    ) -> list[Scalars]:
        """Global scalars of ``model`` at ``A(x + t p)`` for each ``t`` (no read of A)."""
        assert self.rows is not None
        ts = tuple(float(t) for t in ts)
        aps = ap if ap is not None else [None] * self.n_blocks
        parts = [
            self._submit(tasks.trial_stats, model, r, a, ts)
            for r, a in zip(self.rows, aps, strict=True)
        ]
        merged: list[Stats] = self._tree(parts, tasks.merge_trial_stats, model)
        return [model.scalars(s) for s in merged]

    def trial_losses(
        self,
        model: Model,
        scalars: list[Scalars],
        ap: list[Future] | None = None,
        ts: Sequence[float] = (0.0,),
    ) -> np.ndarray:
        """Data part of the objective at ``A(x + t p)`` for each ``t`` (no read of A)."""
        assert self.rows is not None
        ts = tuple(float(t) for t in ts)
        aps = ap if ap is not None else [None] * self.n_blocks
        parts = [
            self._submit(tasks.trial_losses, model, r, a, ts, scalars)
            for r, a in zip(self.rows, aps, strict=True)
        ]
        data = np.asarray(self._tree(parts, tasks.sum_parts), dtype=np.float64)
        return data + np.array([model.global_loss(sc) for sc in scalars], dtype=np.float64)

    def curvature(self, model: Model, sketch: Any, scalars: Scalars, ctx: Any, *,
                  pre_stages: bool = True) -> tuple[dict[str, Any], Any]:
        """Loss, gradient, ``A^T U`` and the sketch's result at the current point.

        Runs the sketch's preliminary stages first (each one a pass over A if it reads A;
        skipped with ``pre_stages=False``, when ``ctx`` already holds their result), then
        the fused curvature pass. Returns the reduced totals and the final context.
        ``sketch=None``: loss and gradient only (no curvature is computed).
        """
        assert self.rows is not None
        for stage in range(sketch.n_pre_stages if pre_stages and sketch is not None else 0):
            ctx = self.pre_stage(model, sketch, stage, scalars, ctx)
        ctx_f = self._share(ctx)
        parts = [
            self._submit(tasks.curvature, model, sketch, src, r, scalars, ctx_f)
            for src, r in zip(self._sources, self.rows, strict=True)
        ]
        total = self._tree(parts, tasks.sum_parts)
        total["loss"] = float(total["loss"]) + float(model.global_loss(scalars))
        self.n_passes += 1
        return total, ctx

    def pre_stage(self, model: Model, sketch: Any, stage: int, scalars: Scalars, ctx: Any) -> Any:
        """Run one preliminary stage of ``sketch`` at the current point; the updated context.

        A pass over A when ``sketch.pre_stage_reads_A[stage]``; otherwise a reduction over
        the cached per-row vectors only.
        """
        assert self.rows is not None
        reads = bool(sketch.pre_stage_reads_A[stage])
        ctx_f = self._share(ctx)
        parts = [
            self._submit(tasks.pre_stage, model, sketch, stage, src if reads else None, r, scalars, ctx_f)
            for src, r in zip(self._sources, self.rows, strict=True)
        ]
        total = self._tree(parts, tasks.sum_parts)
        if reads:
            self.n_passes += 1
        return sketch.pre_finish(stage, total, ctx)

    def fused_step(
        self, model: Model, sketch: Any, scalars: Scalars, p: np.ndarray, ts: Sequence[float], ctx: Any
    ) -> tuple[list[Future], dict[str, Any]]:
        """One pass for a whole iteration of a model whose scalars do not depend on ``A x``.

        Computes ``A p`` (returned as per-block futures, for :meth:`advance`) and the reduced
        partials of :func:`dsketch.engine.tasks.fused_step`: the losses at ``x + t p`` for
        every ``t`` in ``ts`` (``ts[0] == 1``), and loss, gradient, ``A^T U`` and the sketch
        (``ctx``) at ``x + p``. The cached predictor is not moved: call :meth:`advance` with
        the accepted step.
        """
        assert self.rows is not None
        ts = tuple(float(t) for t in ts)
        ps = self._share(np.asarray(p, dtype=np.float64))
        ctx_f = self._share(ctx)
        outs = [
            self._submit(tasks.fused_step, model, sketch, src, r, ps, ts, scalars, ctx_f)
            for src, r in zip(self._sources, self.rows, strict=True)
        ]
        ap = [self._submit(operator.getitem, o, 0) for o in outs]
        parts = [self._submit(operator.getitem, o, 1) for o in outs]
        total = self._tree(parts, tasks.sum_parts)
        self.n_passes += 1
        glob = float(model.global_loss(scalars))
        total["trial_losses"] = np.asarray(total["trial_losses"], dtype=np.float64) + glob
        total["loss"] = float(total["loss"]) + glob
        return ap, total

    def hessvec(self, model: Model, scalars: Scalars, v: np.ndarray) -> np.ndarray:
        """``A^T diag(D) A v`` at the current point, exactly (one pass over A)."""
        assert self.rows is not None
        vs = self._share(np.asarray(v, dtype=np.float64))
        parts = [
            self._submit(tasks.hessvec, model, src, r, scalars, vs)
            for src, r in zip(self._sources, self.rows, strict=True)
        ]
        self.n_passes += 1
        return np.asarray(self._tree(parts, tasks.sum_parts), dtype=np.float64)

    def inference_sums(self, model: Model, x: np.ndarray, groups: str | None = None) -> dict[str, Any]:
        """A GLM's covariance pieces at the coefficients ``x``, summed over the blocks (one
        pass over A, independent of the cached predictor): see
        :func:`dsketch.engine.tasks.inference_block`. ``groups`` must be among ``members``."""
        xs = self._share(np.asarray(x, dtype=np.float64))
        parts = [self._submit(tasks.inference_block, model, src, xs, groups) for src in self._sources]
        self.n_passes += 1
        return dict(self._tree(parts, tasks.merge_inference))

    def map_reduce(self, fn: Any, *args: Any, combine: Any = tasks.sum_parts) -> Any:
        """``fn(block, r0, *args)`` on every row block, reduced over the fixed tree (one pass).

        For per-block maths outside the model interface (the sketched GGN of
        :mod:`dsketch.solvers.ggn_sketched`): ``block`` is the :class:`~dsketch.store.Block`
        of rows ``[r0, r1)`` (read from the store, or held in memory with ``persist=True``),
        and ``combine(*partials)`` merges any number of partial results in the given order
        (default :func:`~dsketch.engine.tasks.sum_parts`: sums of arrays, floats, or dicts
        of them). NumPy arguments are sent to the cluster once, not once per block.
        """
        shared = tuple(self._share(a) if isinstance(a, np.ndarray) else a for a in args)
        parts = [
            self._submit(tasks.map_block, fn, src, r0, *shared)
            for src, (r0, _) in zip(self._sources, self.bounds, strict=True)
        ]
        self.n_passes += 1
        return self._tree(parts, combine)

    def check_targets(self, model: Model) -> None:
        """Check every block's targets against the model's domain (no read of A)."""
        assert self.rows is not None
        self.client.gather([self._submit(tasks.check_targets, model, r) for r in self.rows])

    def gather_eta(self) -> np.ndarray:
        """The cached predictor ``A x`` as one array (for tests and small problems)."""
        assert self.rows is not None
        return np.concatenate([r.eta for r in self.client.gather(self.rows)])

    def check_store(self) -> None:
        """Raise :class:`~dsketch.errors.StoreChangedError` when the store at the problem's
        path is no longer the one the engine was given (driver side, one ``stat``).

        Streamed passes check this in every block read already. With ``persist=True`` the
        blocks in worker memory keep the data that were loaded, whatever happens to the
        store; the solver calls this before each checkpoint and before returning a result,
        so neither is ever reported for a store that was replaced meanwhile. A store that
        was removed is not checked here (the data fitted are still the ones opened).
        """
        check_unchanged(self.problem, missing_ok=True)

    def close(self) -> None:
        """Release the futures this engine holds on the cluster."""
        self.rows = None
        self._rows_at = None
        self._sources = []
