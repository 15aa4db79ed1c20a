"""The Python API for driver scripts: :func:`fit`."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
from distributed import Client

from dsketch.engine.client import connect
from dsketch.engine.core import DEFAULT_BLOCK_ROWS, Engine
from dsketch.models import Model, get_model
from dsketch.sketch import make_sketch
from dsketch.errors import StoreNotFoundError
from dsketch.solvers.baselines import GradientOnly
from dsketch.solvers.checkpoint import check_settings, load_checkpoint
from dsketch.solvers.newton import Callback, NewtonConfig, NewtonSolver
from dsketch.solvers.result import FitResult
from dsketch.store import ProblemSpec, open_problem

logger = logging.getLogger("dsketch")

SOLVERS = ("newton", "gd")


def default_sketch_size(kind: str, n_samples: int, n_features: int) -> int:
    """The sketch size used when none is given: the documented size for eps = 0.5.

    Row samplers get the (1 +- 0.5) size of their guarantee at delta = 0.1 (capped at
    ``n_samples``); embeddings get their documented size as well.
    """
    if kind == "exact":
        return n_samples
    sk = make_sketch(kind)
    size = int(sk.size_for(0.5, 0.1, n_features))
    return int(max(1, min(size, n_samples)))


@contextlib.contextmanager
def _client_for(client: Client | None, scheduler: str | None, n_workers: int) -> Iterator[Client]:
    if client is not None:
        yield client
        return
    with connect(scheduler, n_workers=n_workers) as c:
        yield c


def fit(
    data: str | os.PathLike[str] | ProblemSpec,
    model: str | Model,
    *,
    model_params: dict[str, Any] | None = None,
    sketch: str = "exact",
    sketch_size: int | None = None,
    sketch_params: dict[str, Any] | None = None,
    solver: str = "newton",
    x0: np.ndarray | str = "auto",
    seed: int = 0,
    tol: float = 1e-8,
    max_iter: int = 50,
    client: Client | None = None,
    scheduler: str | None = None,
    n_workers: int = 2,
    block_rows: int = DEFAULT_BLOCK_ROWS,
    bounds: list[tuple[int, int]] | None = None,
    persist: bool = False,
    callback: Callback | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    resume: bool = False,
) -> FitResult:
    """Fit a model to a problem store with the (sketched) Newton method.

    Parameters
    ----------
    data : str, path or ProblemSpec
        A problem store (Zarr group with ``A``, ``b`` and optionally ``w``).
    model : str or Model
        A registry name (``"softmax"``, ``"logistic"``, ...) or a model instance.
    model_params : dict, optional
        Parameters of the model when ``model`` is a name (e.g. ``{"l2": 1e-3}``).
    sketch : {"exact", "uniform", "rownorm", "leverage", "countsketch", "gaussian"}
        How ``A^T diag(D) A`` is estimated; ``"exact"`` gives exact Newton.
    sketch_size : int, optional
        Expected sampled rows / embedding dimension (default: the documented size for a
        (1 +- 0.5) approximation, see :func:`default_sketch_size`).
    sketch_params : dict, optional
        Extra parameters of the sketch (e.g. ``{"scores": "approx"}`` for leverage).
    solver : {"newton", "gd"}
        ``"newton"``: approximate Newton with the chosen curvature (``sketch="exact"``
        gives exact Newton). ``"gd"``: gradient descent with Armijo backtracking on the
        same engine (a baseline; ``sketch`` is ignored).
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
    client : distributed.Client, optional
        Run on this client. Otherwise ``scheduler`` / ``$DSKETCH_SCHEDULER`` is joined, or
        an embedded local cluster with ``n_workers`` processes is started and stopped.
    block_rows, bounds, persist
        Row blocking and streaming policy of the :class:`~dsketch.engine.core.Engine`.
    callback : callable, optional
        ``callback(state)`` after every iteration; raise ``StopIteration`` to stop.
    checkpoint : str or path, optional
        A Zarr group rewritten (atomically) after every iteration with what is needed to
        continue the fit if the driver dies.
    resume : bool, default False
        Continue from ``checkpoint`` instead of starting afresh. The model, data,
        curvature, sketch size and seed must match the checkpointed fit; the resumed fit
        ends at the same ``x`` as an uninterrupted one (up to rounding).

    Returns
    -------
    FitResult
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; valid solvers: {', '.join(SOLVERS)}")
    spec = data if isinstance(data, ProblemSpec) else open_problem(os.fspath(data))
    if isinstance(model, Model):
        if model_params:
            raise TypeError("model_params is only valid when model is given by name")
        mdl = model
    else:
        mdl = get_model(model, **(model_params or {}))
    sk = GradientOnly() if solver == "gd" else make_sketch(sketch, **(sketch_params or {}))
    if solver == "gd":
        size = 1
    elif sketch_size is None:
        size = default_sketch_size(sketch, spec.n_samples, spec.n_features)
    else:
        size = int(sketch_size)
    if size < 1:
        raise ValueError(f"sketch_size must be a positive integer; got {sketch_size!r}")
    config = (
        NewtonConfig(tol=tol, max_iter=max_iter, seed=seed, direction="gradient", max_halvings=60)
        if solver == "gd"
        else NewtonConfig(tol=tol, max_iter=max_iter, seed=seed)
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
        "block_rows": block_rows if bounds is None else [list(b) for b in bounds],
    }
    saved = None
    if resume:
        if checkpoint is None:
            raise ValueError("resume=True needs the checkpoint= path of the interrupted fit")
        ckpt_path = os.fspath(checkpoint)
        if not os.path.exists(ckpt_path):
            raise StoreNotFoundError(f"no checkpoint at {ckpt_path!r} to resume from; start the fit afresh")
        saved = load_checkpoint(ckpt_path)
        check_settings(saved.settings, settings, ckpt_path)
    with _client_for(client, scheduler, n_workers) as c:
        engine = Engine(spec, c, block_rows=block_rows, bounds=bounds, persist=persist)
        try:
            result = NewtonSolver(
                engine, mdl, sk, sketch_size=size, config=config, callback=callback,
                checkpoint=None if checkpoint is None else os.fspath(checkpoint), settings=settings,
            ).run(start, resume=saved)
        finally:
            engine.close()
    result.info = {
        **mdl.describe(),
        "solver": solver,
        "sketch": "none" if solver == "gd" else sketch,
        "sketch_size": size if sketch != "exact" else None,
        "seed": seed,
        "tol": tol,
        "max_iter": max_iter,
        "data": spec.path,
        "n_samples": spec.n_samples,
        "n_features": spec.n_features,
        "n_blocks": len(engine.bounds),
        "persist": persist,
    }
    return result


def initial_point(
    data: str | os.PathLike[str] | ProblemSpec,
    model: str | Model,
    *,
    model_params: dict[str, Any] | None = None,
    client: Client | None = None,
    scheduler: str | None = None,
    n_workers: int = 2,
    block_rows: int = DEFAULT_BLOCK_ROWS,
) -> np.ndarray:
    """The starting point ``fit(..., x0="auto")`` uses: the model's data-driven initialiser
    (softmax: the log-linear least-squares fit; one pass over A), or zeros."""
    spec = data if isinstance(data, ProblemSpec) else open_problem(os.fspath(data))
    mdl = model if isinstance(model, Model) else get_model(model, **(model_params or {}))
    with _client_for(client, scheduler, n_workers) as c:
        engine = Engine(spec, c, block_rows=block_rows)
        try:
            return engine.initial_coef(mdl)
        finally:
            engine.close()
