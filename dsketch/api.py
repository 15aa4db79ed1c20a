"""The Python API for driver scripts: :func:`fit`."""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from typing import Any

import numpy as np
from distributed import Client

from dsketch.engine.client import EMBEDDED_WORKERS, SCHEDULER_ENV
from dsketch.engine.core import Engine, auto_block_rows
from dsketch.engine.memory import embedded_limits, holds_blocks, thread_limits
from dsketch.config import (
    FIRST_ORDER,
    Cluster,
    Curvature,
    Solver,
    as_cluster,
    as_curvature,
    as_solver,
    refuses_moved,
    resolve_method,
)
from dsketch.errors import (
    InvalidOptionError,
    InvalidParameterError,
    InvalidTargetError,
    StoreNotFoundError,
    UnusedOptionError,
)
from dsketch.models import Model, get_model
from dsketch.plan import (  # noqa: F401 - choose_curvature, default_sketch_size: re-exported
    ADAPTIVE_ROWS_PER_FEATURE,
    CurvaturePlan,
    choose_curvature,
    default_sketch_size,
    resolve_curvature,
)
from dsketch.solvers.checkpoint import FINGERPRINT_KEY, MASK_KEY, check_settings, load_checkpoint
from dsketch.solvers.inner import inner_solver
from dsketch.solvers.lbfgs import QuasiNewtonProbe, curvature_passes, multi_output_newton_cost, newton_cost
from dsketch.solvers.newton import Callback, NewtonConfig, NewtonSolver
from dsketch.solvers.result import FitResult
from dsketch.store import ProblemSpec, open_problem, outputs
from dsketch.session import client_for, engine_for, limits_of, n_threads, on_threads, raise_if_cluster_lost
from dsketch.store.memory import MemoryProblem, in_memory

logger = logging.getLogger("dsketch")

def _problem(data: Any) -> ProblemSpec:
    """The problem of ``fit``'s ``data``: a spec (a store's or an in-memory one), an
    ``(A, b)`` pair kept in memory, or a store path opened."""
    if isinstance(data, ProblemSpec):
        return data
    if isinstance(data, tuple):
        if len(data) != 2:
            raise InvalidParameterError(f"in-memory data are a pair (A, b); got a tuple of {len(data)} items — for weights or "
                             "offsets pass dsketch.in_memory(A, b, sample_weight=..., offset=...)")
        return in_memory(*data)
    return open_problem(os.fspath(data))


def _bind(data: Any, model: str | Model, model_params: dict[str, Any] | None,
          fit_intercept: bool) -> tuple[ProblemSpec, Model]:
    """The problem of ``data`` and the model bound to it (with the intercept column)."""
    spec = _problem(data)
    if isinstance(model, Model):
        if model_params:
            raise InvalidOptionError("model_params is only valid when model is given by name")
        mdl = model
    else:
        mdl = get_model(model, **(model_params or {}))
    mdl = mdl.bind(spec)
    if getattr(mdl, "n_classes", 0) is None:  # multinomial: K from the labels
        k = largest_label(spec) + 1
        if k > max(spec.n_samples, 2):
            raise InvalidTargetError(
                f"the largest label is {k - 1} with only {spec.n_samples} rows: multinomial labels are class codes "
                "0..K-1; encode the classes (the estimator LogisticRegression does) or pass n_classes")
        mdl = mdl.with_classes(k)  # type: ignore[attr-defined]
    if fit_intercept:
        mdl, spec = mdl.with_intercept(), spec.with_intercept()
    return spec, mdl.for_features(spec.n_features)


def largest_label(spec: ProblemSpec) -> int:
    """The largest target of ``spec`` as an integer (a multinomial model's ``K - 1``), read
    in slices; a label that is not a non-negative integer is left to the model's check."""
    if isinstance(spec, MemoryProblem):
        values = [np.asarray(spec.member("b"))]
    else:
        import zarr

        arr = zarr.open_group(spec.path, mode="r")["b"]
        values = (np.asarray(arr[a:b]) for a, b in _slices(spec.n_samples))
    top = max((float(np.max(v)) for v in values if v.size), default=1.0)
    return int(top) if np.isfinite(top) and top >= 1 else 1


def _slices(n: int, step: int = 2**20) -> list[tuple[int, int]]:
    return [(a, min(a + step, n)) for a in range(0, n, step)]


def _start(x0: np.ndarray | str, spec: ProblemSpec, n_outputs: int = 1) -> np.ndarray | None:
    """The starting point of ``x0`` (None: the model's initialiser); a K-output model's is the
    ``d x K`` matrix, flattened row by row (or given as that matrix)."""
    size = spec.n_features * n_outputs
    if isinstance(x0, str):
        if x0 not in ("auto", "zeros"):
            raise InvalidOptionError(f"x0 must be an array, 'auto' or 'zeros'; got {x0!r}")
        return None if x0 == "auto" else np.zeros(size)
    start = np.asarray(x0, dtype=np.float64)
    if n_outputs > 1 and start.shape == (spec.n_features, n_outputs):
        start = start.ravel()
    if start.shape != (size,):
        shape = f"({spec.n_features},)" if n_outputs == 1 else f"({spec.n_features}, {n_outputs}) or ({size},)"
        raise InvalidOptionError(f"x0 must have shape {shape} to match the store's {spec.n_features} "
                                 f"columns; got {start.shape}")
    return start


def _settings(model: Model, spec: ProblemSpec, plan: CurvaturePlan, cluster: Cluster, seed: int) -> dict[str, Any]:
    """What a checkpoint records of the fit (a resume must match it)."""
    bounds, block_rows = cluster.bounds, cluster.block_rows
    return {
        **model.describe(),
        "solver": plan.method,
        "sketch": "none" if plan.method in FIRST_ORDER else plan.kind,
        "sketch_params": dict(plan.params or {}),
        "sketch_size": plan.size,
        "seed": seed,
        "data": spec.path,
        FINGERPRINT_KEY: spec.fingerprint,
        "block_rows": (auto_block_rows(spec) if block_rows is None else block_rows) if bounds is None
        else [list(b) for b in bounds],
        **({"adaptive_sketch": True} if plan.adaptive else {}),
        **_mask_info(spec),
    }


def _mask_info(spec: ProblemSpec) -> dict[str, Any]:
    """The row mask of a masked problem (:meth:`ProblemSpec.with_row_mask`), for a fit's
    settings and info: a checkpoint resumes only the fit of the same rows."""
    return {} if spec.row_mask is None else {MASK_KEY: spec.row_mask.describe()}


def _saved(checkpoint: Any, resume: bool, spec: ProblemSpec, settings: dict[str, Any]) -> Any:
    """The checkpoint to resume from (None when starting afresh), checked against the fit's
    settings; a new checkpoint's path is checked before the cluster starts."""
    if checkpoint is not None and not resume:
        outputs.check_output(checkpoint, outputs.CHECKPOINT, overwrite=True, others={"data": spec.path},
                             option="checkpoint")
    if not resume:
        return None
    if checkpoint is None:
        raise InvalidOptionError("resume=True needs the checkpoint= path of the interrupted fit")
    path = os.fspath(checkpoint)
    if not os.path.exists(path):
        raise StoreNotFoundError(f"no checkpoint at {path!r} to resume from; start the fit afresh")
    saved = load_checkpoint(path)
    check_settings(saved.settings, settings, path)
    return saved


def _remote(spec: ProblemSpec, cluster: Cluster) -> bool:
    """Whether the fit joins a scheduler whose workers' limits are known only once joined
    (an in-memory problem runs on the driver's threads unless an address is given)."""
    return cluster.client is None and (bool(cluster.address) or (
        not isinstance(spec, MemoryProblem) and bool(os.environ.get(SCHEDULER_ENV))))


def _local_limits(spec: ProblemSpec, clu: Cluster) -> Any:
    """The memory limits of a fit that joins no scheduler, known before anything starts."""
    if clu.client is not None:
        return limits_of(clu.client)
    if on_threads(spec, clu.address, clu.n_workers):
        return thread_limits(n_threads(spec, clu.block_rows, clu.bounds))
    return embedded_limits(clu.n_workers or EMBEDDED_WORKERS)


def _persist(spec: ProblemSpec, model: Model, plan: CurvaturePlan, clu: Cluster, client: Any) -> bool:
    """Whether the fit keeps its blocks in memory: ``Cluster(persist=...)`` when given; for
    ``None``, a store whose fit with its blocks held fits the memory the fit runs on
    (:func:`~dsketch.engine.memory.holds_blocks`). An in-memory problem is held anyway."""
    if clu.persist is not None:
        return clu.persist
    if isinstance(spec, MemoryProblem):
        return False
    return holds_blocks(spec, limits_of(client), sketch=plan.kind, sketch_size=plan.size, solver=plan.method,
                        block_rows=clu.block_rows, bounds=clu.bounds, model=model, sketch_params=plan.params)


def _newton_solver(engine: Engine, model: Model, plan: CurvaturePlan, solver: Solver, cluster: Cluster, seed: int,
                   **kw: Any) -> NewtonSolver:
    """The Newton iteration of ``solver`` with the curvature of ``plan``."""
    config = NewtonConfig(tol=solver.tol, max_iter=solver.max_iter, seed=seed, ftol=solver.ftol, armijo=solver.armijo,
                          max_halvings=solver.halvings, score_reuse=solver.score_reuse,
                          adaptive_sketch=plan.adaptive and solver.method not in FIRST_ORDER, fused=cluster.fused)
    spec = engine.problem
    shape = (spec.n_samples, spec.n_features, int(getattr(spec, "nnz", 0) or 0), bool(spec.sparse))
    multi = model.n_outputs > 1  # Newton-CG steps with fresh block curvature, their finish priced
    probe = QuasiNewtonProbe(tol=solver.tol, max_iter=solver.max_iter,
                             newton_cost=(multi_output_newton_cost if multi else newton_cost)(*shape),
                             curvature_passes=None if multi else curvature_passes(*shape), extrapolate=multi)
    inner = (inner_solver(solver.method, solver.cg_max_iter, probe, multi_output=multi) if solver.inner is None
             else solver.inner)
    return NewtonSolver(engine, model, plan.sketch(), sketch_size=plan.size, config=config, inner=inner, **kw)


def _info(model: Model, spec: ProblemSpec, plan: CurvaturePlan, solver: Solver, cluster: Cluster, seed: int,
          n_blocks: int, fit_intercept: bool) -> dict[str, Any]:
    """The ``info`` of a fit's result."""
    gd = solver.method in FIRST_ORDER
    return {
        **model.describe(),
        "solver": solver.method,
        "sketch": "none" if gd else plan.kind,
        "sketch_size": plan.size if plan.kind != "exact" and not gd else None,
        "seed": seed,
        "tol": solver.tol,
        "max_iter": solver.max_iter,
        "data": spec.path,
        "n_samples": spec.n_samples,
        "n_features": spec.n_features,  # coefficients: the intercept column included
        "n_features_in": spec.stored_features,  # columns of the store (what predict needs)
        "n_blocks": n_blocks,
        "persist": cluster.persist,
        "fit_intercept": bool(fit_intercept),
        **_mask_info(spec),
    }


@refuses_moved
def fit(
    data: str | os.PathLike[str] | ProblemSpec | tuple[Any, Any],
    model: str | Model,
    *,
    model_params: dict[str, Any] | None = None,
    fit_intercept: bool = False,
    curvature: str | Curvature = "auto",
    solver: str | Solver = "auto",
    cluster: Cluster | Client | str | None = None,
    x0: np.ndarray | str = "auto",
    seed: int = 0,
    callback: Callback | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    resume: bool = False,
) -> FitResult:
    """Fit a model to a problem with the (sketched) Newton method.

    Parameters
    ----------
    data : str, path, ProblemSpec, MemoryProblem or (A, b)
        A problem store (Zarr group with ``A``, ``b`` and optionally ``w``, or for the GLMs
        ``sample_weight`` and ``offset``: the fit uses every per-row member the store has,
        and refuses one the model cannot use), or a problem in the driver's memory: a pair
        ``(A, b)`` (ndarray or scipy.sparse ``A``) or :func:`dsketch.in_memory` (which
        also takes ``w``, ``sample_weight`` and ``offset``). An in-memory problem is not
        copied to a store: its row blocks are views of the arrays where possible, and it
        runs on threads of this process unless ``cluster`` names a client or a scheduler
        (then its blocks are sent to that cluster). The result is the same bits as a fit of
        the store :func:`dsketch.write_problem` would write from the same arrays.
    model : str or Model
        A registry name (``"softmax"``, ``"logistic"``, ...) or a model instance.
    model_params : dict, optional
        Parameters of the model when ``model`` is a name (e.g. ``{"l2": 1e-3}``).
    fit_intercept : bool, default False
        The GLMs only: an unpenalised intercept, the last entry of ``x`` (``n_features + 1``
        coefficients). The engine appends the column of ones to every block it reads; the
        store is not copied. ``x0="auto"`` starts the intercept at the intercept-only fit
        (one more pass).
    curvature : str or Curvature, default "auto"
        How ``A^T diag(D) A`` is estimated (:class:`dsketch.Curvature`: kind, size, sketch
        parameters, adaptive size). ``"auto"`` picks exact or leverage sampling by cost
        (:func:`choose_curvature`; small and sparse problems get exact) and, when a sketch
        is chosen, adapts its size; ``"exact"`` gives exact Newton. The same default as the
        estimators and ``dsketch fit``.
    solver : str or Solver, default "newton"
        The iteration (:class:`dsketch.Solver`: method, tolerances, line search).
        ``"newton"``: approximate Newton with the chosen curvature, Cholesky inner solve.
        ``"newton-cg"``: exact Newton steps solved inexactly by conjugate gradients on exact
        Hessian-vector products (one pass over A each), preconditioned by the chosen
        curvature; no accuracy ceiling. ``"gd"``: gradient descent with Armijo backtracking
        on the same engine (no curvature is computed; a curvature other than the default
        is refused).
    cluster : Cluster, distributed.Client, str or None
        Where the passes run and how A is blocked and streamed (:class:`dsketch.Cluster`).
        None: an in-memory problem runs on threads of this process
        (:class:`~dsketch.engine.threads.ThreadClient`; ``$DSKETCH_SCHEDULER`` is not
        consulted for it); for a store, ``$DSKETCH_SCHEDULER`` is joined, or an embedded
        local cluster of two worker processes is started and stopped. A client runs the
        fit on it, an address string joins that scheduler.
    x0 : ndarray of shape (n_features,), "auto" or "zeros"
        Starting point. ``"auto"`` (default) uses the model's data-driven initialiser
        when it has one (softmax: the log-linear least-squares fit, one pass over A) and
        zeros otherwise.
    seed : int
        Key of the counter-based sketch randomness: the same seed gives the same fit
        for any storage chunking and any number of workers.
    callback : callable, optional
        ``callback(state)`` after every iteration (a :class:`~dsketch.NewtonState`); raise
        ``StopIteration`` to stop.
    checkpoint : str or path, optional
        A Zarr group rewritten (atomically) after every iteration with what is needed to
        continue the fit if the driver dies. It may replace only an earlier checkpoint
        (checked before the fit starts).
    resume : bool, default False
        Continue from ``checkpoint`` instead of starting afresh. The model, data (and its
        row mask, if any), curvature, sketch size and seed must match the checkpointed
        fit; the resumed fit ends at the same ``x`` as an uninterrupted one (up to
        rounding).

    Returns
    -------
    FitResult
        Immutable; ``x``, ``jac`` (the gradient at ``x``), ``status``, ``history``, ``info``.

    Raises
    ------
    RemovedOptionError
        A keyword of the flat signature before the grouped settings (``sketch=``,
        ``tol=``, ``client=``, ...); the message names the option that replaces it.
    UnusedOptionError
        A curvature option without effect (a size with ``"exact"``, a sketch with ``"gd"``).
    MemoryBudgetError
        The fit's estimated memory exceeds what the driver or a worker has
        (``Cluster(memory_check=True)``, the default; with ``"auto"`` the other curvature is
        taken when only it fits).
    StoreChangedError
        The store at the data's path is not the one the fit opened: it was replaced while
        the fit ran (seen on the next block read; with blocks held in memory,
        ``Cluster(persist=True)`` or the default ``None`` when they fit, which keep the data
        loaded, at the next checkpoint or at the end of the fit), or,
        with ``resume``, since the checkpoint was written (its settings record the store's
        :attr:`~dsketch.store.ProblemSpec.fingerprint`).
    """
    curv, sol, clu = as_curvature(curvature), as_solver(solver), as_cluster(cluster)
    curv.check_for(sol.method)
    spec, mdl = _bind(data, model, model_params, fit_intercept)
    sol = resolve_method(sol, curv, mdl)
    plan = resolve_curvature(spec, curv, sol.method, multi_output=mdl.n_outputs > 1)
    remote = _remote(spec, clu)
    if clu.memory_check and not remote:  # before a cluster starts: a refusal costs nothing
        plan = plan.checked(_local_limits(spec, clu), spec, mdl, clu)
        sol = replace(sol, method=plan.method)  # "auto" is L-BFGS where no curvature fits
    start = _start(x0, spec, mdl.n_outputs)
    settings = _settings(mdl, spec, plan, clu, seed)
    saved = _saved(checkpoint, resume, spec, settings)
    with client_for(clu.client, clu.address, clu.n_workers, spec, clu.block_rows, clu.bounds) as c:
        if clu.memory_check and remote:  # the joined scheduler's workers are known now
            chosen = plan.checked(limits_of(c), spec, mdl, clu)
            if (chosen.method, chosen.kind, chosen.size) != (plan.method, plan.kind, plan.size):
                # "auto" took the other curvature, or L-BFGS throughout
                plan, sol = chosen, replace(sol, method=chosen.method)
                new = _settings(mdl, spec, plan, clu, seed)
                for key in ("solver", "sketch", "sketch_size", "adaptive_sketch"):
                    if key in new:
                        settings[key] = new[key]
                    else:
                        settings.pop(key, None)
        with engine_for(spec, c, block_rows=clu.block_rows, bounds=clu.bounds,
                        persist=_persist(spec, mdl, plan, clu, c), members=mdl.row_members,
                        count_load=clu.persist is not None) as engine:
            clu = replace(clu, persist=engine.persist)
            try:
                result = _newton_solver(
                    engine, mdl, plan, sol, clu, seed, callback=callback, settings=settings,
                    checkpoint=None if checkpoint is None else os.fspath(checkpoint)).run(start, resume=saved)
            except Exception as exc:
                raise_if_cluster_lost(c, exc, checkpoint)
                raise
    return replace(result, info={**_info(mdl, spec, plan, sol, clu, seed, len(engine.bounds), fit_intercept),
                                 **result.info})


@refuses_moved
def initial_point(
    data: str | os.PathLike[str] | ProblemSpec | tuple[Any, Any],
    model: str | Model,
    *,
    model_params: dict[str, Any] | None = None,
    cluster: Cluster | Client | str | None = None,
) -> np.ndarray:
    """The starting point ``fit(..., x0="auto")`` uses: the model's data-driven initialiser
    (softmax: the log-linear least-squares fit; one pass over A), or zeros. ``cluster`` as
    in :func:`fit`."""
    spec = _problem(data)
    clu = as_cluster(cluster)
    mdl = model if isinstance(model, Model) else get_model(model, **(model_params or {}))
    with client_for(clu.client, clu.address, clu.n_workers, spec, clu.block_rows, clu.bounds) as c:
        mdl = mdl.bind(spec)
        engine = Engine(spec, c, block_rows=clu.block_rows, bounds=clu.bounds, members=mdl.row_members)
        try:
            return engine.initial_coef(mdl)
        finally:
            engine.close()


@refuses_moved
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
    cluster: Cluster | Client | str | None = None,
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
    cluster : Cluster, distributed.Client, str or None
        Where the sketched mode runs, as in :func:`fit` (its ``block_rows`` defaults to
        65536 here; ``fused`` does not apply). The mini-batch mode runs on the driver and
        refuses a cluster.
    backtracking : bool
        Sketched mode: halve a step that raises the objective (small sketches need it).

    The result's ``x`` is ``theta = [vec(U); vec(V)]`` (column-major).
    """
    from dsketch.models.twolayer_net import TwoLayerNet
    from dsketch.solvers.ggn_score import GGNScore, GGNScoreConfig, fit_store
    from dsketch.solvers.ggn_sketched import SketchedGGN

    spec = data if isinstance(data, ProblemSpec) else open_problem(os.fspath(data))
    if target != "b" and target not in spec.members:
        raise InvalidOptionError(f"target {target!r} is not a member of {spec.path!r}; "
                                 f"members: {['b', *spec.members]}")
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
    if sketch_size is None:
        if cluster is not None:
            raise UnusedOptionError("cluster has no effect in the mini-batch mode of fit_network (it runs on the "
                                    "driver); pass sketch_size= for the full-data mode on a cluster")
        res = fit_store(GGNScore(net, cfg), spec, theta0=theta0, target=target, epochs=epochs,
                        batch_size=batch_size, seed=seed)
        return replace(res, info={**info, **res.info})
    clu = as_cluster(cluster)
    block_rows = 2**16 if clu.block_rows is None else clu.block_rows
    sk = SketchedGGN(net, cfg, sketch_size=sketch_size, seed=seed, target=target, block_rows=block_rows,
                     bounds=clu.bounds, persist=clu.persist, backtracking=backtracking)
    with client_for(clu.client, clu.address, clu.n_workers) as c:
        res = sk.fit_store(spec, c, theta0=theta0, iters=epochs)
    return replace(res, info={**info, **res.info, "solver": "ggn-score-sketched", "sketch_size": int(sketch_size),
                              "block_rows": block_rows, "persist": clu.persist})


def record_optimum(
    spec: ProblemSpec,
    model: str,
    *,
    client: Client,
    model_params: dict[str, Any] | None = None,
    tol: float = 1e-12,
    max_iter: int = 100,
) -> ProblemSpec:
    """Solve a generated problem tightly (exact Newton) and record ``x_star`` in its metadata,
    so it has a known optimum besides the planted ``x`` (``dsketch make-data --solve``).

    Writes ``metadata["dsketch"]["x_star"]``, ``"x_star_grad_norm"`` (relative gradient
    norm reached) and ``"x_star_iterations"``; returns the reopened store.
    """
    import warnings

    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = fit(spec, model, model_params=model_params, curvature="exact",
                  solver=Solver(tol=tol, max_iter=max_iter), cluster=client)
    g = zarr.open_group(spec.path, mode="r+")
    meta = dict(g.attrs.get("dsketch", {}))
    g0 = float(res.history["grad_norm"][0]) if len(res.history.get("grad_norm", ())) else res.grad_norm
    meta.update(x_star=np.asarray(res.x).tolist(), x_star_grad_norm=float(res.grad_norm) / max(g0, 1e-300),
                x_star_iterations=int(res.nit), x_star_converged=bool(res.success))
    g.attrs["dsketch"] = meta
    logger.info("recorded x* of %s (%d exact Newton iterations, success=%s)", spec.path, res.nit, res.success)
    return open_problem(spec.path)
