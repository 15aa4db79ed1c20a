"""The Python API for driver scripts: :func:`fit`."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
from distributed import Client

from dsketch.engine.client import SCHEDULER_ENV, connect
from dsketch.engine.core import Engine, auto_block_rows
from dsketch.engine.memory import client_limits, embedded_limits
from dsketch.engine.memory import plan_curvature as _memory_plan
from dsketch.engine.threads import ThreadClient
from dsketch.errors import DSketchError, StoreNotFoundError
from dsketch.models import Model, get_model
from dsketch.sketch import make_sketch
from dsketch.solvers.baselines import GradientOnly
from dsketch.solvers.checkpoint import FINGERPRINT_KEY, check_settings, load_checkpoint
from dsketch.solvers.newton import Callback, NewtonConfig, NewtonSolver
from dsketch.solvers.result import FitResult
from dsketch.store import ProblemSpec, open_problem, outputs
from dsketch.store.memory import MemoryProblem, in_memory

logger = logging.getLogger("dsketch")

SOLVERS = ("newton", "newton-cg", "gd")


#: Cost model of :func:`choose_curvature`, in multiply-adds of a dense Gram update, measured
#: on the reference machine (2 cores, blocks in worker memory, d = 500): reading a stored
#: entry in a pass (loss, gradient, ``A p``) costs as much as ``_PASS_COST`` of them, the
#: leverage scores' ``jl_dim``-column transform ``_SCORE_COST`` more per entry.
_PASS_COST = 160.0
_SCORE_COST = 100.0
#: Iterations to converge with the exact Hessian and with a sketch of the default size
#: (the benchmark problems: 5-6 and 10-12).
_EXACT_ITERS, _SKETCH_ITERS = 6.0, 12.0
#: Start of an adaptive sketch, in rows per feature (it grows when steps fall short).
ADAPTIVE_ROWS_PER_FEATURE = 100


def choose_curvature(spec: ProblemSpec, sketch_size: int | None = None) -> str:
    """``sketch="auto"``: the exact Gram when it is cheap, leverage sampling otherwise.

    With ``r = nnz / n`` stored entries a row, an exact iteration costs ``n r^2`` for the
    Gram ``A^T diag(D) A`` plus a pass, ``_PASS_COST * nnz``; a leverage-sketched one costs
    ``s r^2`` for the ``s`` sampled rows' Gram plus a pass with the scores,
    ``(_PASS_COST + _SCORE_COST) * nnz``, and needs about twice the iterations. Exact wins
    for short rows (``r`` below about 360: sparse data, narrow dense data) and when the
    sample would be a large part of the rows; leverage for long rows and ``n`` well above
    ``s`` (dense d = 500: from about ``7 s`` rows). ``s`` defaults to the adaptive start
    (:func:`default_sketch_size`); :func:`fit` passes the size it will sample.
    """
    n, d = spec.n_samples, spec.n_features
    r = spec.nnz / max(n, 1)
    s = default_sketch_size("leverage", n, d, adaptive=True) if sketch_size is None else int(sketch_size)
    exact = _EXACT_ITERS * (n * r**2 + _PASS_COST * spec.nnz)
    sketch = _SKETCH_ITERS * (min(s, n) * r**2 + (_PASS_COST + _SCORE_COST) * spec.nnz)
    return "exact" if exact <= sketch else "leverage"


def check_sketch_options(solver: str, sketch: Any, sketch_size: int | None,
                         sketch_params: dict[str, Any] | None, adaptive_sketch: bool | None) -> None:
    """Refuse unknown names and sketch options that would have no effect.

    Raises :class:`~dsketch.errors.UnknownNameError` for a misspelt solver or sketch (with
    the nearest names) and :class:`~dsketch.errors.UnusedOptionError` for ``sketch_size``,
    ``sketch_params`` or ``adaptive_sketch=True`` with the exact curvature or gradient
    descent, or a sketch named for gradient descent. Cheap: :func:`fit` and the command line
    call it before any data is read.
    """
    from dsketch.errors import UnusedOptionError, unknown_name
    from dsketch.sketch import SKETCHES

    if solver not in SOLVERS:
        raise unknown_name("solver", solver, SOLVERS)
    if isinstance(sketch, str) and sketch != "auto" and sketch not in SKETCHES:
        raise unknown_name("sketch", sketch, ("auto", *SKETCHES), "sketches")
    if solver == "gd":
        why = "solver='gd' (gradient descent) uses no curvature"
        if sketch != "auto":
            raise UnusedOptionError(f"sketch={sketch!r} has no effect: {why}; leave sketch at 'auto'")
    elif sketch == "exact":
        why = "sketch='exact' forms the exact Gram matrix, there is nothing to sample"
    else:
        return
    given = [name for name, value in (("sketch_size", sketch_size), ("sketch_params", sketch_params or None),
                                      ("adaptive_sketch", adaptive_sketch or None)) if value is not None]
    if given:
        raise UnusedOptionError(f"{' and '.join(given)} {'has' if len(given) == 1 else 'have'} no effect: {why}; "
                                "drop it or choose a sketch (e.g. sketch='auto' or 'leverage')")


def resolve_adaptive(solver: str, sketch: Any, sketch_size: int | None, adaptive_sketch: bool | None) -> bool:
    """``adaptive_sketch=None`` made explicit (before ``"auto"`` is resolved): adaptive for a
    sketch whose size is not fixed, ``"auto"`` (any ``sketch_size`` is the start) or a named
    sketch without ``sketch_size``; never for ``"exact"`` or gradient descent."""
    if adaptive_sketch is not None:
        return bool(adaptive_sketch)
    if solver == "gd" or sketch == "exact":
        return False
    return sketch == "auto" or sketch_size is None


def default_sketch_size(kind: str, n_samples: int, n_features: int, *, adaptive: bool = False) -> int:
    """The sketch size used when none is given.

    Fixed size: the documented size of the sketch's guarantee for eps = 0.5, delta = 0.1
    (capped at ``n_samples``). Adaptive: the smaller of that and
    :data:`ADAPTIVE_ROWS_PER_FEATURE` ``* n_features``, a start the adaptive rule grows
    when steps fall short of their prediction (the guarantee's constants are worst-case:
    at d = 500 the leverage bound asks for 221,000 rows where 50,000 converge as fast).
    """
    if kind == "exact":
        return n_samples
    sk = make_sketch(kind)
    size = int(sk.size_for(0.5, 0.1, n_features))
    if adaptive:
        size = min(size, ADAPTIVE_ROWS_PER_FEATURE * n_features)
    return int(max(1, min(size, n_samples)))


#: Stored entries of ``A`` (the intercept column included) from which an in-memory fit
#: runs its blocks on a pool of threads; below, every task runs inline on the calling
#: thread (a block's work is then shorter than handing it to another thread).
THREADS_MIN_NNZ = 2**20


def _problem(data: Any) -> ProblemSpec:
    """The problem of ``fit``'s ``data``: a spec (a store's or an in-memory one), an
    ``(A, b)`` pair kept in memory, or a store path opened."""
    if isinstance(data, ProblemSpec):
        return data
    if isinstance(data, tuple):
        if len(data) != 2:
            raise ValueError(f"in-memory data are a pair (A, b); got a tuple of {len(data)} items — for weights or "
                             "offsets pass dsketch.in_memory(A, b, sample_weight=..., offset=...)")
        return in_memory(*data)
    return open_problem(os.fspath(data))


def thread_count(spec: ProblemSpec, n_blocks: int) -> int:
    """Threads of an in-memory fit: one (inline) for a single block or fewer than
    :data:`THREADS_MIN_NNZ` stored entries, else up to one a block and a core."""
    if n_blocks <= 1 or spec.nnz < THREADS_MIN_NNZ:
        return 1
    return int(max(1, min(n_blocks, os.cpu_count() or 1)))


@contextlib.contextmanager
def _client_for(client: Client | None, scheduler: str | None, n_workers: int,
                spec: ProblemSpec | None = None, block_rows: int | None = None,
                bounds: list[tuple[int, int]] | None = None) -> Iterator[Any]:
    """The client of a fit: ``client``; else for an in-memory problem the driver's threads
    (unless ``scheduler`` names a cluster; as many as :func:`thread_count` gives for the
    engine's blocks, from ``block_rows`` or ``bounds``); else
    :func:`~dsketch.engine.client.connect`."""
    if client is not None:
        yield client
        return
    if isinstance(spec, MemoryProblem) and scheduler is None:
        rows = auto_block_rows(spec) if block_rows is None else max(int(block_rows), 1)
        n_blocks = len(bounds) if bounds is not None else -(-spec.n_samples // rows)
        with ThreadClient(thread_count(spec, n_blocks)) as t:
            yield t
        return
    with connect(scheduler, n_workers=n_workers) as c:
        yield c


def _raise_if_cluster_lost(client: Client, exc: BaseException, checkpoint: Any) -> None:
    """Turn the errors of a vanished scheduler into one :class:`ClusterConnectionError`.

    When the scheduler goes away the futures of the fit are cancelled (after the client's
    reconnection timeout) or its communications fail; the message then says what happened
    and where the last finished iteration is, instead of an empty ``CancelledError``.
    """
    import asyncio
    import concurrent.futures

    from distributed.comm.core import CommClosedError

    from dsketch.errors import ClusterConnectionError

    if isinstance(client, ThreadClient):  # no cluster to lose
        return
    lost = isinstance(exc, (concurrent.futures.CancelledError, asyncio.CancelledError, CommClosedError,
                            TimeoutError, OSError)) and not isinstance(exc, DSketchError)
    if not lost or client.status == "running" and not isinstance(exc, CommClosedError):
        return
    address = getattr(client.scheduler, "address", None) or "?"
    where = (f"the last finished iteration is in the checkpoint {os.fspath(checkpoint)!r}: restart the "
             "cluster and rerun with resume=True (dsketch fit ... --resume)") if checkpoint is not None else (
             "no checkpoint was requested, so the fit must start again (pass checkpoint= to keep progress)")
    detail = " ".join(str(exc).split()) or "futures cancelled"
    raise ClusterConnectionError(
        f"lost the Dask scheduler at {address} during the fit ({type(exc).__name__}: {detail}); {where}"
    ) from None


def fit(
    data: str | os.PathLike[str] | ProblemSpec | tuple[Any, Any],
    model: str | Model,
    *,
    model_params: dict[str, Any] | None = None,
    fit_intercept: bool = False,
    sketch: str = "auto",
    sketch_size: int | None = None,
    sketch_params: dict[str, Any] | None = None,
    solver: str = "newton",
    x0: np.ndarray | str = "auto",
    seed: int = 0,
    tol: float = 1e-8,
    max_iter: int = 50,
    ftol: float | None = None,
    adaptive_sketch: bool | None = None,
    fused: bool = True,
    client: Client | None = None,
    scheduler: str | None = None,
    n_workers: int = 2,
    block_rows: int | None = None,
    bounds: list[tuple[int, int]] | None = None,
    persist: bool = False,
    callback: Callback | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    resume: bool = False,
    memory_check: bool = True,
) -> FitResult:
    """Fit a model to a problem store with the (sketched) Newton method.

    Parameters
    ----------
    data : str, path, ProblemSpec, MemoryProblem or (A, b)
        A problem store (Zarr group with ``A``, ``b`` and optionally ``w``, or for the GLMs
        ``sample_weight`` and ``offset``: the fit uses every per-row member the store has,
        and refuses one the model cannot use), or a problem in the driver's memory: a pair
        ``(A, b)`` (ndarray or scipy.sparse ``A``) or :func:`dsketch.in_memory` (which
        also takes ``w``, ``sample_weight`` and ``offset``). An in-memory problem is not
        copied to a store: its row blocks are views of the arrays where possible, and it
        runs on threads of this process unless ``client`` or ``scheduler`` is given (then
        its blocks are sent to that cluster). The result is the same bits as a fit of the
        store :func:`dsketch.write_problem` would write from the same arrays.
    model : str or Model
        A registry name (``"softmax"``, ``"logistic"``, ...) or a model instance.
    model_params : dict, optional
        Parameters of the model when ``model`` is a name (e.g. ``{"l2": 1e-3}``).
    fit_intercept : bool, default False
        The GLMs only: an unpenalised intercept, the last entry of ``x`` (``n_features + 1``
        coefficients). The engine appends the column of ones to every block it reads; the
        store is not copied. ``x0="auto"`` starts the intercept at the intercept-only fit
        (one more pass).
    sketch : {"auto", "exact", "uniform", "rownorm", "leverage", "countsketch", "gaussian"}
        How ``A^T diag(D) A`` is estimated. ``"auto"`` (default) picks exact or leverage
        sampling by cost (:func:`choose_curvature`; small and sparse problems get exact);
        ``"exact"`` gives exact Newton. The same default as the estimators and ``dsketch fit``.
    sketch_size : int, optional
        Expected sampled rows / embedding dimension (default: the documented size for a
        (1 +- 0.5) approximation, capped at 100 rows per feature when the sketch is
        adaptive; see :func:`default_sketch_size`). With ``"auto"`` it is the size used if a
        sketch is chosen (and prices that choice). Refused with ``sketch="exact"`` and
        ``solver="gd"``, which have no sketch.
    sketch_params : dict, optional
        Extra parameters of the sketch (e.g. ``{"scores": "approx"}`` for leverage; with
        ``"auto"``, of leverage when it is chosen). Refused with ``"exact"`` and ``"gd"``.
    solver : {"newton", "newton-cg", "gd"}
        ``"newton"``: approximate Newton with the chosen curvature (``sketch="exact"``
        gives exact Newton). ``"newton-cg"``: exact Newton steps solved inexactly by
        conjugate gradients on exact Hessian-vector products (one pass over A each),
        preconditioned by the chosen sketch; no accuracy ceiling. ``"gd"``: gradient
        descent with Armijo backtracking on the same engine (a baseline without curvature:
        ``sketch`` other than ``"auto"``, ``sketch_size``, ``sketch_params`` and
        ``adaptive_sketch=True`` are refused).
    x0 : ndarray of shape (n_features,), "auto" or "zeros"
        Starting point. ``"auto"`` (default) uses the model's data-driven initialiser
        when it has one (softmax: the log-linear least-squares fit, one pass over A) and
        zeros otherwise.
    seed : int
        Key of the counter-based sketch randomness: the same seed gives the same fit
        for any storage chunking and any number of workers.
    tol : float
        Stop when ``||grad|| <= tol * ||grad_0||``.
    max_iter : int
    adaptive_sketch : bool, optional
        Grow / shrink the sketch size from each step's actual against predicted decrease
        (:class:`~dsketch.solvers.newton.NewtonConfig`); ``sketch_size`` is the start.
        ``None`` (default): adaptive when the curvature is a sketch and its size was not
        fixed, that is when ``sketch="auto"`` chooses a sketch (a ``sketch_size`` is then
        the start), or a sketch is named without a ``sketch_size``; a named sketch with a
        ``sketch_size`` keeps that size. ``True`` is refused with ``sketch="exact"`` and
        ``solver="gd"``; with ``"auto"`` it applies only if a sketch is chosen.
    ftol : float, optional
        Convergence in loss value (:class:`~dsketch.solvers.newton.NewtonConfig`); by
        default on (1e-12) only for the non-smooth ReLU models.
    fused : bool, default True
        For the GLMs (logistic, Poisson, least squares), whose global scalars do not depend
        on ``A x``: compute the line search's ``A p`` and the next iteration's loss, gradient
        and sketch in one pass over A (speculatively at the full step), so an iteration with
        a full Newton step costs one pass instead of two; leverage scores are then reused
        from the previous iterate. ``False``: the two-pass iteration. Other models ignore it.
    client : distributed.Client, optional
        Run on this client. Otherwise an in-memory problem runs on threads of this process
        (:class:`~dsketch.engine.threads.ThreadClient`; ``$DSKETCH_SCHEDULER`` is not
        consulted for it), unless ``scheduler`` names a cluster; for a store,
        ``scheduler`` / ``$DSKETCH_SCHEDULER`` is joined, or an embedded local cluster
        with ``n_workers`` processes is started and stopped.
    block_rows, bounds, persist
        Row blocking and streaming policy of the :class:`~dsketch.engine.core.Engine`
        (``block_rows=None``: :func:`~dsketch.engine.core.auto_block_rows`).
    callback : callable, optional
        ``callback(state)`` after every iteration; raise ``StopIteration`` to stop.
    checkpoint : str or path, optional
        A Zarr group rewritten (atomically) after every iteration with what is needed to
        continue the fit if the driver dies. It may replace only an earlier checkpoint
        (checked before the fit starts).
    resume : bool, default False
        Continue from ``checkpoint`` instead of starting afresh. The model, data,
        curvature, sketch size and seed must match the checkpointed fit; the resumed fit
        ends at the same ``x`` as an uninterrupted one (up to rounding).
    memory_check : bool, default True
        Before the first pass, estimate the driver's and each worker's peak memory
        (:func:`~dsketch.engine.memory.estimate_memory`) and refuse a fit that would not fit
        in the driver's available memory or a worker's memory limit (80% of either) with a
        :class:`~dsketch.errors.MemoryBudgetError` naming the ways out; with
        ``sketch="auto"`` the other curvature is taken when only it fits. ``False``: no check.

    Returns
    -------
    FitResult

    Raises
    ------
    MemoryBudgetError
        The fit's estimated memory exceeds what the driver or a worker has (``memory_check``).
    StoreChangedError
        The store at the data's path is not the one the fit opened: it was replaced while
        the fit ran (seen on the next block read; with ``persist=True``, whose blocks keep
        the data loaded, at the next checkpoint or at the end of the fit), or, with
        ``resume``, since the checkpoint was written (its settings record the store's
        :attr:`~dsketch.store.ProblemSpec.fingerprint`).
    """
    check_sketch_options(solver, sketch, sketch_size, sketch_params, adaptive_sketch)
    spec = _problem(data)
    if isinstance(model, Model):
        if model_params:
            raise TypeError("model_params is only valid when model is given by name")
        mdl = model
    else:
        mdl = get_model(model, **(model_params or {}))
    mdl = mdl.bind(spec)
    if fit_intercept:
        mdl, spec = mdl.with_intercept(), spec.with_intercept()
    adaptive_sketch = resolve_adaptive(solver, sketch, sketch_size, adaptive_sketch)
    auto = sketch == "auto" and solver != "gd"
    if auto:  # priced with the leverage size this fit would use
        sketch = choose_curvature(spec, sketch_size if sketch_size is not None else default_sketch_size(
            "leverage", spec.n_samples, spec.n_features, adaptive=adaptive_sketch))
        if sketch == "exact":  # the sketch's settings only apply when one is chosen
            sketch_params, adaptive_sketch = None, False
    elif solver == "gd":
        sketch = "exact"  # gradient descent reads no curvature; priced as the cheapest
    given = sketch

    def size_of(kind: str) -> int:
        if solver == "gd":
            return 1
        if sketch_size is None or kind != given:
            return default_sketch_size(kind, spec.n_samples, spec.n_features, adaptive=adaptive_sketch)
        return int(sketch_size)

    size = size_of(sketch)
    if size < 1:
        raise ValueError(f"sketch_size must be a positive integer; got {sketch_size!r}")
    # a scheduler joined inside _client_for: its workers' limits are known only then (an
    # in-memory problem runs on the driver's threads unless scheduler= names a cluster)
    remote = client is None and (bool(scheduler) or (
        not isinstance(spec, MemoryProblem) and bool(os.environ.get(SCHEDULER_ENV))))
    plan = dict(spec=spec, model=mdl, solver=solver, size_of=size_of, auto=auto, block_rows=block_rows,
                bounds=bounds, persist=persist, sketch_params=sketch_params)
    if memory_check and not remote:  # before a cluster starts: a refusal costs nothing
        limits = client_limits(client) if client is not None else embedded_limits(n_workers)
        sketch, size = _memory_plan(sketch, size, limits, **plan)
    sk = GradientOnly() if solver == "gd" else make_sketch(sketch, **(sketch_params or {}))
    config = (
        NewtonConfig(tol=tol, max_iter=max_iter, seed=seed, direction="gradient", max_halvings=60, ftol=ftol)
        if solver == "gd"
        else NewtonConfig(tol=tol, max_iter=max_iter, seed=seed, ftol=ftol, adaptive_sketch=adaptive_sketch,
                          fused=fused,
                          direction="newton-cg" if solver == "newton-cg" else "newton")
    )
    if isinstance(x0, str):
        if x0 not in ("auto", "zeros"):
            raise ValueError(f"x0 must be an array, 'auto' or 'zeros'; got {x0!r}")
        start = None if x0 == "auto" else np.zeros(spec.n_features)
    else:
        start = np.asarray(x0, dtype=np.float64)
    if start is not None and start.shape != (spec.n_features,):
        raise ValueError(
            f"x0 must have shape ({spec.n_features},) to match the store's {spec.n_features} "
            f"columns; got {start.shape}"
        )
    settings = {
        **mdl.describe(),
        "solver": solver,
        "sketch": "none" if solver == "gd" else sketch,
        "sketch_params": dict(sketch_params or {}),
        "sketch_size": size,
        "seed": seed,
        "data": spec.path,
        FINGERPRINT_KEY: spec.fingerprint,
        "block_rows": (auto_block_rows(spec) if block_rows is None else block_rows) if bounds is None
        else [list(b) for b in bounds],
        **({"adaptive_sketch": True} if adaptive_sketch else {}),
    }
    if checkpoint is not None and not resume:  # before the cluster: a bad path must not cost a fit
        outputs.check_output(checkpoint, outputs.CHECKPOINT, overwrite=True, others={"data": spec.path},
                             option="checkpoint")
    saved = None
    if resume:
        if checkpoint is None:
            raise ValueError("resume=True needs the checkpoint= path of the interrupted fit")
        ckpt_path = os.fspath(checkpoint)
        if not os.path.exists(ckpt_path):
            raise StoreNotFoundError(f"no checkpoint at {ckpt_path!r} to resume from; start the fit afresh")
        saved = load_checkpoint(ckpt_path)
        check_settings(saved.settings, settings, ckpt_path)
    with _client_for(client, scheduler, n_workers, spec, block_rows, bounds) as c:
        if memory_check and remote:
            chosen = _memory_plan(sketch, size, client_limits(c), **plan)
            if chosen != (sketch, size):  # sketch="auto" took the other curvature
                sketch, size = chosen
                sk = make_sketch(sketch, **(sketch_params or {}))
                settings.update(sketch=sketch, sketch_size=size)
        engine = Engine(spec, c, block_rows=block_rows, bounds=bounds, persist=persist,
                        members=mdl.row_members)
        try:
            result = NewtonSolver(
                engine, mdl, sk, sketch_size=size, config=config, callback=callback,
                checkpoint=None if checkpoint is None else os.fspath(checkpoint), settings=settings,
            ).run(start, resume=saved)
        except Exception as exc:
            _raise_if_cluster_lost(c, exc, checkpoint)
            raise
        finally:
            engine.close()
    result.info = {
        **mdl.describe(),
        "solver": solver,
        "sketch": "none" if solver == "gd" else sketch,
        "sketch_size": size if sketch != "exact" and solver != "gd" else None,
        "seed": seed,
        "tol": tol,
        "max_iter": max_iter,
        "data": spec.path,
        "n_samples": spec.n_samples,
        "n_features": spec.n_features,  # coefficients: the intercept column included
        "n_features_in": spec.stored_features,  # columns of the store (what predict needs)
        "n_blocks": len(engine.bounds),
        "persist": persist,
        "fit_intercept": bool(fit_intercept),
    }
    return result


def initial_point(
    data: str | os.PathLike[str] | ProblemSpec | tuple[Any, Any],
    model: str | Model,
    *,
    model_params: dict[str, Any] | None = None,
    client: Client | None = None,
    scheduler: str | None = None,
    n_workers: int = 2,
    block_rows: int | None = None,
) -> np.ndarray:
    """The starting point ``fit(..., x0="auto")`` uses: the model's data-driven initialiser
    (softmax: the log-linear least-squares fit; one pass over A), or zeros."""
    spec = _problem(data)
    mdl = model if isinstance(model, Model) else get_model(model, **(model_params or {}))
    with _client_for(client, scheduler, n_workers, spec, block_rows) as c:
        mdl = mdl.bind(spec)
        engine = Engine(spec, c, block_rows=block_rows, members=mdl.row_members)
        try:
            return engine.initial_coef(mdl)
        finally:
            engine.close()


def fit_network(
    data: str | os.PathLike[str] | ProblemSpec,
    *,
    hidden: int = 128,
    activation: str = "relu",
    target: str = "b",
    epochs: int = 1,
    batch_size: int = 64,
    tau: float = 1e-4,
    mu: float | None = None,
    nu: float | None = None,
    alpha: float = 1.0,
    scale_hessian_by_tau: bool = False,
    smoother: str = "pseudo-huber",
    sketch_size: int | None = None,
    seed: int = 0,
    client: Client | None = None,
    scheduler: str | None = None,
    n_workers: int = 2,
    block_rows: int = 2**16,
    persist: bool = False,
    backtracking: bool = False,
) -> FitResult:
    """Train the two-layer network of docs/theory.md#ggn-score with GGN-SCORE on a problem store.

    ``A`` holds the inputs and ``target`` (``"b"``, or a row-aligned member such as
    one-hot ``"Y"``) the outputs. Two modes:

    * ``sketch_size=None`` (default): mini-batch GGN-SCORE, mini-batches streamed from the
      store on the driver (the (k+1)-sized solve is per mini-batch, so there is nothing to
      distribute); the history has one row per epoch.
    * ``sketch_size=s`` (an int): full-data GGN-SCORE through the cluster
      (:class:`~dsketch.solvers.ggn_sketched.SketchedGGN`): exact loss and gradient, and
      ``J^T Q J`` estimated from about ``s`` rows sampled by their Jacobian norms
      (``s >= n`` gives the exact matrix). ``epochs`` full-data steps are taken, two passes
      each; the history has one row per iterate. ``batch_size`` is not used.

    Parameters
    ----------
    smoother : {"pseudo-huber", "ostrovskii-bach"}
        The self-concordant smoother of the l1 regulariser.
    nu : float, optional
        Its GSC exponent (default: 2.6 for pseudo-Huber, 3 for Ostrovskii-Bach).
    mu : float, optional
        Smoothing parameter, default ``sqrt(hidden)``.
    client, scheduler, n_workers, block_rows, persist
        Cluster and row blocking of the sketched mode, as in :func:`fit` (ignored when
        ``sketch_size`` is None).
    backtracking : bool
        Sketched mode: halve a step that raises the objective (small sketches need it).

    The result's ``x`` is ``theta = [vec(U); vec(V)]`` (column-major).
    """
    import time as _time

    from dsketch.models.twolayer_net import TwoLayerNet
    from dsketch.solvers.ggn_score import GGNScore, GGNScoreConfig, fit_store
    from dsketch.solvers.ggn_sketched import SketchedGGN
    from dsketch.solvers.result import HISTORY_COLUMNS, STATUS_MESSAGES, Status

    spec = data if isinstance(data, ProblemSpec) else open_problem(os.fspath(data))
    if target != "b" and target not in spec.members:
        raise ValueError(f"target {target!r} is not a member of {spec.path!r}; members: {['b', *spec.members]}")
    n_out = 1
    if target != "b":
        import zarr

        shape = zarr.open_group(spec.path, mode="r")[target].shape
        n_out = int(shape[1]) if len(shape) > 1 else 1
    net = TwoLayerNet(spec.n_features, hidden, n_out, activation)
    cfg = GGNScoreConfig(tau=tau, mu=float(np.sqrt(hidden)) if mu is None else mu, nu=nu, alpha=alpha,
                         scale_hessian_by_tau=scale_hessian_by_tau, smoother=smoother)
    theta0 = net.init_params(np.random.default_rng(seed))
    info = {"model": "ggn-score", "hidden": hidden, "activation": activation, "n_outputs": n_out,
            "target": target, "tau": tau, "mu": cfg.mu, "nu": cfg.nu, "alpha": alpha, "smoother": smoother,
            "scale_hessian_by_tau": scale_hessian_by_tau, "epochs": epochs, "seed": seed, "data": spec.path}
    t0 = _time.perf_counter()
    if sketch_size is not None:
        sk = SketchedGGN(net, cfg, sketch_size=sketch_size, seed=seed, target=target, block_rows=block_rows,
                         persist=persist, backtracking=backtracking)
        with _client_for(client, scheduler, n_workers) as c:
            sres = sk.fit_store(spec, c, theta0=theta0, iters=epochs)
        h = sres.history
        history = {k: np.asarray(h[k], dtype=np.float64) for k in HISTORY_COLUMNS if k != "loss"}
        history["loss"] = np.asarray(h["objective"], dtype=np.float64)
        return FitResult(
            x=sres.theta, fun=float(h["objective"][-1]), success=True, status=Status.COMPLETED,
            message=STATUS_MESSAGES[Status.COMPLETED], nit=int(epochs), n_passes=sres.n_passes,
            wall_time=_time.perf_counter() - t0, grad_norm=float(h["grad_norm"][-1]),
            history={k: history[k] for k in HISTORY_COLUMNS},
            info={**info, "solver": "ggn-score-sketched", "sketch_size": int(sketch_size),
                  "data_loss": float(h["loss"][-1]), "block_rows": block_rows, "persist": persist},
        )
    solver = GGNScore(net, cfg)
    res = fit_store(solver, spec, theta0=theta0, target=target, epochs=epochs, batch_size=batch_size, seed=seed)
    steps = len(res.history["step_size"])
    per_epoch = max(1, steps // max(1, epochs))
    history = {k: [] for k in HISTORY_COLUMNS}
    for e, (loss, sec) in enumerate(zip(res.history["loss"], res.history["seconds"], strict=True)):
        sizes = res.history["step_size"][e * per_epoch : (e + 1) * per_epoch]
        for k, v in (("iteration", e + 1), ("loss", loss), ("grad_norm", np.nan), ("newton_decrement", np.nan),
                     ("step_size", float(np.mean(sizes)) if sizes else np.nan), ("sketch_rows", batch_size),
                     ("passes", e + 1), ("seconds", sec)):
            history[k].append(float(v))
    return FitResult(
        x=res.theta, fun=float(res.history["loss"][-1]) if res.history["loss"] else float("nan"),
        success=True, status=Status.COMPLETED, message=STATUS_MESSAGES[Status.COMPLETED], nit=steps,
        n_passes=epochs, wall_time=_time.perf_counter() - t0, grad_norm=float("nan"),
        history={k: np.asarray(v) for k, v in history.items()},
        info={**info, "batch_size": batch_size},
    )
