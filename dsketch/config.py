"""Grouped settings of :func:`dsketch.fit`: the curvature, the solver and the cluster.

Each group is a frozen dataclass checked when it is built, so a bad value fails before any
data is read::

    dsketch.fit("problem.zarr", "logistic", model_params={"l2": 1e-4},
                curvature=dsketch.Curvature("leverage", size=4000),
                solver=dsketch.Solver("newton", tol=1e-8, max_iter=50),
                cluster=dsketch.Cluster(n_workers=2))

``fit`` also takes the plain names (``curvature="exact"``, ``solver="gd"``) and, for the
cluster, a ``distributed.Client`` or a scheduler address.
"""

from __future__ import annotations

import functools
import inspect
import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from dsketch.errors import DSketchTypeError, InvalidOptionError, UnusedOptionError, unknown_name

#: The solver methods: the inner solve of the Newton iteration each one uses
#: (:mod:`dsketch.solvers.inner`).
METHODS = ("auto", "newton", "newton-cg", "lbfgs", "gd", "prox-newton")
#: The methods that form no curvature (every pass computes loss and gradient only).
FIRST_ORDER = ("lbfgs", "gd")


def _int_at_least(name: str, value: Any, low: int, *, none: bool = False) -> None:
    if value is None and none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise InvalidOptionError(f"{name} must be an integer >= {low}{' or None' if none else ''}; got {value!r}")


def _number_in(name: str, value: Any, low: float, high: float, *, none: bool = False,
               closed_high: bool = False) -> None:
    if value is None and none:
        return
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and low <= float(value) and (
        float(value) <= high if closed_high else float(value) < high)
    if not ok:
        bracket = "]" if closed_high else ")"
        raise InvalidOptionError(f"{name} must be a number in [{low}, {high}{bracket}"
                                 f"{' or None' if none else ''}; got {value!r}")


@dataclass(frozen=True)
class Curvature:
    """How the Hessian's large part ``A^T diag(D) A`` is estimated.

    Parameters
    ----------
    kind : {"auto", "exact", "uniform", "rownorm", "leverage", "countsketch", "gaussian"}
        ``"auto"`` (default) chooses exact or leverage sampling by cost
        (:func:`dsketch.plan.choose_curvature`); ``"exact"`` is exact Newton; the others name
        a sketch (:data:`dsketch.sketch.SKETCHES`).
    size : int, optional
        Expected sampled rows or embedding dimension (default: the documented size for a
        (1 +- 0.5) approximation, capped at 100 rows a feature when adaptive; see
        :func:`dsketch.plan.default_sketch_size`). With ``"auto"`` the size used if a sketch
        is chosen; with an adaptive sketch its starting size.
    params : mapping, optional
        Parameters of the sketch (e.g. ``{"scores": "approx"}`` for leverage).
    adaptive : bool, optional
        Grow or shrink the sketch size from each step's actual against predicted decrease.
        None (default): adaptive when the size is not fixed, that is with ``"auto"`` or a
        sketch named without ``size``.

    Raises
    ------
    UnknownNameError
        ``kind`` is not a sketch name (the message names the closest).
    InvalidOptionError
        ``size`` is not a positive integer, ``params`` not a mapping or ``adaptive`` not a bool.
    UnusedOptionError
        ``size``, ``params`` or ``adaptive=True`` with ``kind="exact"``, which samples nothing.
    """

    kind: str = "auto"
    size: int | None = None
    params: Mapping[str, Any] | None = field(default=None, hash=False)
    adaptive: bool | None = None

    def __post_init__(self) -> None:
        from dsketch.sketch import SKETCHES

        if not isinstance(self.kind, str) or self.kind != "auto" and self.kind not in SKETCHES:
            raise unknown_name("sketch", self.kind, ("auto", *SKETCHES), "sketches")
        _int_at_least("Curvature size", self.size, 1, none=True)
        if self.params is not None and not isinstance(self.params, Mapping):
            raise InvalidOptionError(f"Curvature params must be a mapping of sketch parameters; got {self.params!r}")
        if self.adaptive is not None and not isinstance(self.adaptive, bool):
            raise InvalidOptionError(f"Curvature adaptive must be True, False or None; got {self.adaptive!r}")
        if self.params is not None:
            object.__setattr__(self, "params", dict(self.params))
        if self.kind == "exact":
            self._refuse_options("kind='exact' forms the exact Gram matrix, there is nothing to sample")

    def given_options(self) -> list[str]:
        """The names of the options set beyond ``kind`` (an ``adaptive=False`` counts as unset)."""
        return [name for name, value in (("size", self.size), ("params", self.params or None),
                                         ("adaptive", self.adaptive or None)) if value is not None]

    def _refuse_options(self, why: str) -> None:
        given = self.given_options()
        if given:
            raise UnusedOptionError(f"Curvature {' and '.join(given)} {'has' if len(given) == 1 else 'have'} no "
                                    f"effect: {why}; drop it or choose a sketch (e.g. 'auto' or 'leverage')")

    def check_for(self, method: str) -> None:
        """Refuse a curvature that solver ``method`` would not use (gradient descent reads
        none: only the default ``Curvature()`` goes with ``"gd"``)."""
        if method in FIRST_ORDER and self.kind != "auto":
            raise UnusedOptionError(f"curvature={self.kind!r} has no effect: solver {method!r} uses no "
                                    "curvature; leave curvature at 'auto'")
        if method in FIRST_ORDER:
            self._refuse_options(f"solver {method!r} uses no curvature")

    def resolved_adaptive(self, method: str) -> bool:
        """``adaptive=None`` made explicit (before ``"auto"`` is resolved): adaptive for
        ``"auto"`` (any ``size`` is the start) or a sketch named without ``size``; never
        for ``"exact"`` or gradient descent."""
        if self.adaptive is not None:
            return bool(self.adaptive)
        if method in FIRST_ORDER or self.kind == "exact":
            return False
        return self.kind == "auto" or self.size is None


@dataclass(frozen=True)
class Solver:
    """The iteration: its inner solve, stopping rules and line search.

    Parameters
    ----------
    method : {"auto", "newton", "newton-cg", "lbfgs", "gd"}
        ``"auto"`` (the default): L-BFGS while the gradient contracts fast, then Newton
        steps with the chosen curvature once it does not
        (:class:`~dsketch.solvers.inner.QuasiNewtonThenNewton`): a well-conditioned problem
        is solved at the cost of gradient evaluations, an ill-conditioned one by Newton.
        It is ``"newton"`` for a model whose passes cannot be fused (the softmax-type
        models: ``Model.fixed_scalars`` false), for a non-smooth model, and when a curvature
        other than ``"auto"`` is named. ``"lbfgs"``: L-BFGS only
        (:class:`~dsketch.solvers.inner.QuasiNewton`; no curvature pass).
        ``"newton"``: approximate Newton, the reduced system solved by Cholesky
        (:class:`~dsketch.solvers.inner.CholeskySolve`). ``"newton-cg"``: exact Newton steps
        solved by conjugate gradients on exact Hessian-vector products (one pass over A
        each), preconditioned by the chosen curvature
        (:class:`~dsketch.solvers.inner.ConjugateGradient`). ``"gd"``: gradient descent
        with Armijo backtracking (:class:`~dsketch.solvers.inner.GradientStep`; no curvature
        pass). ``"prox-newton"``: proximal Newton for a model with an L1 term (``l1 > 0``,
        which ``"auto"`` resolves to and no other method accepts): each step minimises the
        quadratic model plus the L1 term by coordinate descent
        (:class:`~dsketch.solvers.proximal.ProximalCoordinateDescent`), the line search is on
        the objective with the L1 term, and the gradient norm in the stopping rules is
        the least-norm subgradient's.
    tol : float, default 1e-8
        Stop when ``||grad|| <= tol * ||grad_0||`` and half the squared Newton decrement is
        below ``tol * max(1, |loss|)``.
    max_iter : int, default 50
    ftol : float, optional
        Convergence in loss value: stop when an accepted step decreases the loss by at most
        ``ftol * |loss|``. None: ``1e-12`` for the non-smooth (ReLU) models, off for the others.
    armijo : float, default 1e-4
        Sufficient-decrease constant ``c`` in ``L(x + t p) <= L(x) + c t g.p``.
    max_halvings : int, optional
        Trial steps are ``1, 1/2, ..., 2**-max_halvings``. None: 30 for the Newton methods,
        60 for gradient descent (whose step length is only a guess).
    cg_max_iter : int, default 20
        ``"newton-cg"``: most Hessian-vector products (passes over A) a step.
    score_reuse : int, default 3
        With fused passes, leverage scores rebuilt from the sketched Gram every
        ``score_reuse`` iterations (1: every iteration).
    inner : InnerSolver, optional
        An inner solver of one's own (:class:`~dsketch.solvers.inner.InnerSolver`) in place
        of the method's; ``method`` still decides the curvature the fit computes (``"gd"``:
        none).

    Raises
    ------
    UnknownNameError
        ``method`` is not one of :data:`METHODS`.
    InvalidOptionError
        A value outside its range.
    """

    method: str = "auto"
    tol: float = 1e-8
    max_iter: int = 50
    ftol: float | None = None
    armijo: float = 1e-4
    max_halvings: int | None = None
    cg_max_iter: int = 20
    score_reuse: int = 3
    inner: Any = None

    def __post_init__(self) -> None:
        from dsketch.solvers.inner import InnerSolver

        if self.inner is not None and not isinstance(self.inner, InnerSolver):
            raise InvalidOptionError("Solver inner must be an InnerSolver: an object with needs_curvature, "
                                     f"second_order, adapts_sketch and solve(state, problem); got {self.inner!r}")
        if self.method not in METHODS:
            raise unknown_name("solver", self.method, METHODS)
        _number_in("Solver tol", self.tol, 0.0, float("inf"))
        _int_at_least("Solver max_iter", self.max_iter, 0)
        _number_in("Solver ftol", self.ftol, 0.0, 1.0, none=True)
        if not (isinstance(self.armijo, numbers.Real) and 0 < self.armijo < 0.5):
            raise InvalidOptionError(f"Solver armijo must lie in (0, 0.5); got {self.armijo!r}")
        _int_at_least("Solver max_halvings", self.max_halvings, 0, none=True)
        if self.max_halvings is not None and self.max_halvings > 60:
            raise InvalidOptionError(f"Solver max_halvings must lie in [0, 60]; got {self.max_halvings!r}")
        _int_at_least("Solver cg_max_iter", self.cg_max_iter, 1)
        _int_at_least("Solver score_reuse", self.score_reuse, 1)

    @property
    def halvings(self) -> int:
        """``max_halvings`` with its default resolved."""
        if self.max_halvings is not None:
            return int(self.max_halvings)
        return 60 if self.method == "gd" else 30


def _has_l1(model: Any) -> bool:
    return bool(getattr(model, "l1", 0.0))


def resolve_method(solver: Solver, curvature: Curvature, model: Any) -> Solver:
    """``Solver("auto")`` made concrete for ``model``: the quasi-Newton-then-Newton hybrid
    where a quasi-Newton iteration costs one fused pass (a smooth model with fixed global
    scalars, the GLMs) and the curvature is left to ``"auto"``; Newton otherwise. A model
    with an L1 term (``l1 > 0``, multinomial included) gets ``"prox-newton"``; any other
    method is refused for it. A model with several outputs (multinomial) without one gets
    the hybrid with Newton-CG steps, or Newton-CG (:func:`_multi_output_method`)."""
    if int(getattr(model, "n_outputs", 1)) > 1 and not _has_l1(model):
        return _multi_output_method(solver, curvature, model)
    if _has_l1(model):
        own = solver.inner is not None and not getattr(solver.inner, "handles_l1", False)
        if solver.method not in ("auto", "prox-newton") or own:
            what = "an inner solver of one's own" if solver.inner is not None else f"solver {solver.method!r}"
            raise InvalidOptionError(f"{what} cannot minimise an objective with an L1 penalty (l1 = {model.l1!r}); "
                                     "use solver 'auto' or 'prox-newton' (proximal Newton)")
        return replace(solver, method="prox-newton")
    if solver.method != "auto":
        return solver
    return solver if _hybrid(solver, curvature, model) else replace(solver, method="newton")


def _multi_output_method(solver: Solver, curvature: Curvature, model: Any) -> Solver:
    """A K-output model (multinomial) is fitted by L-BFGS then Newton-CG (``"auto"``, where
    the GLMs get the hybrid: :class:`~dsketch.solvers.inner.QuasiNewtonThenNewton` with
    Newton-CG steps), Newton-CG, L-BFGS or gradient descent: its ``dK x dK`` Hessian is
    never formed, so a Cholesky Newton step has none."""
    if solver.method == "newton" and solver.inner is None:
        raise InvalidOptionError("solver 'newton' factors the full Hessian, which the multinomial model never forms "
                                 "(it is dK x dK); use 'auto' (the default), 'newton-cg', 'lbfgs' or 'gd'")
    if solver.method != "auto":
        return solver
    return solver if _hybrid(solver, curvature, model) else replace(solver, method="newton-cg")


def _hybrid(solver: Solver, curvature: Curvature, model: Any) -> bool:
    """Whether ``Solver("auto")`` is the quasi-Newton-then-Newton hybrid for ``model``."""
    return (bool(getattr(model, "fixed_scalars", False)) and bool(getattr(model, "smooth", True))
            and curvature.kind == "auto" and solver.inner is None)


@dataclass(frozen=True)
class Cluster:
    """Where and how the passes over A run.

    Parameters
    ----------
    scheduler : str or distributed.Client, optional
        A scheduler address to join, or a client to run on. None: ``$DSKETCH_SCHEDULER`` is
        joined when set (for a store); else the fit runs embedded, on threads of this process
        (no scheduler, no worker process to start), or on a local cluster of ``n_workers``
        worker processes when ``n_workers`` is given.
    n_workers : int, optional
        Worker processes of an embedded local Dask cluster. None (the default): no cluster
        is started; the passes run on threads of this process (one a core, BLAS limited to
        one thread each), which costs nothing to start and sends nothing between processes
        (a process cluster took about 4.5 s to start and stop on 2 cores, longer than the
        fit of a 10^6 x 100 store). ``$DSKETCH_SCHEDULER`` or a scheduler given here
        still runs the fit on that cluster.
    block_rows : int, optional
        Rows of a block (None: :func:`~dsketch.engine.core.auto_block_rows`).
    bounds : list of (int, int), optional
        Explicit row blocks instead of ``block_rows``.
    fused : bool, default True
        For the GLMs, the line search's ``A p`` and the next iteration's loss, gradient and
        sketch in one pass over A (one pass an iteration with a full step). Other models
        ignore it.
    persist : bool, optional
        Keep the blocks in the workers' memory instead of streaming them every pass. None
        (the default): keep them when the fit's estimated memory with the blocks held
        (:func:`~dsketch.engine.memory.estimate_memory`) fits in half of what the driver
        and the workers have; the store is then read once, by the fit's first pass, and a
        replaced store is still reported (:class:`~dsketch.errors.StoreChangedError`, at
        the next checkpoint or at the end of the fit).
    memory_check : bool, default True
        Refuse, before the first pass, a fit whose estimated peak memory exceeds the
        driver's or a worker's (:class:`~dsketch.errors.MemoryBudgetError`).
    """

    scheduler: Any = None
    n_workers: int | None = None
    block_rows: int | None = None
    bounds: Any = field(default=None, hash=False)
    fused: bool = True
    persist: bool | None = None
    memory_check: bool = True

    def __post_init__(self) -> None:
        if self.scheduler is not None and not isinstance(self.scheduler, str) and not hasattr(
                self.scheduler, "submit"):
            raise InvalidOptionError("Cluster scheduler must be None, a scheduler address or a distributed.Client; "
                                     f"got {type(self.scheduler).__name__}")
        if self.n_workers is not None and (isinstance(self.n_workers, bool)
                                           or not isinstance(self.n_workers, numbers.Integral) or self.n_workers < 1):
            raise InvalidOptionError("an embedded cluster needs at least one worker: Cluster n_workers must be an "
                                     f"integer >= 1 (--workers); got {self.n_workers!r}")
        _int_at_least("Cluster block_rows", self.block_rows, 1, none=True)
        for name in ("fused", "persist", "memory_check"):
            if not isinstance(getattr(self, name), bool) and not (name == "persist" and self.persist is None):
                raise InvalidOptionError(f"Cluster {name} must be True or False{' or None' * (name == 'persist')}; "
                                         f"got {getattr(self, name)!r}")
        if self.bounds is not None and self.block_rows is not None:
            raise UnusedOptionError("Cluster block_rows has no effect with bounds (the blocks are given); "
                                    "pass one of them")

    @property
    def client(self) -> Any:
        """The client given as ``scheduler``, or None."""
        return None if self.scheduler is None or isinstance(self.scheduler, str) else self.scheduler

    @property
    def address(self) -> str | None:
        """The scheduler address given as ``scheduler``, or None."""
        return self.scheduler if isinstance(self.scheduler, str) else None


def _from_name(value: Any, cls: type, option: str, what: str) -> Any:
    """``value`` if it is a ``cls``, else ``cls(value)`` for a name."""
    if isinstance(value, cls):
        return value
    if isinstance(value, str):
        return cls(value)
    raise InvalidOptionError(f"{option} must be {what} or dsketch.{cls.__name__}(...); got {type(value).__name__}")


def as_curvature(value: Curvature | str) -> Curvature:
    """A :class:`Curvature` from itself or a kind name."""
    return _from_name(value, Curvature, "curvature", "a curvature name")


def as_solver(value: Solver | str) -> Solver:
    """A :class:`Solver` from itself or a method name."""
    return _from_name(value, Solver, "solver", "a method name")


def as_cluster(value: Any) -> Cluster:
    """A :class:`Cluster` from itself, None, a scheduler address or a client."""
    if isinstance(value, Cluster):
        return value
    return Cluster(scheduler=value)


#: Where each keyword that :func:`dsketch.fit` took before the grouped settings went.
MOVED = {
    "sketch": "curvature (a sketch name, or dsketch.Curvature(kind, ...))",
    "sketch_size": "dsketch.Curvature(kind, size=...)",
    "sketch_params": "dsketch.Curvature(kind, params=...)",
    "adaptive_sketch": "dsketch.Curvature(kind, adaptive=...)",
    "tol": "dsketch.Solver(method, tol=...)",
    "max_iter": "dsketch.Solver(method, max_iter=...)",
    "ftol": "dsketch.Solver(method, ftol=...)",
    "client": "cluster (a distributed.Client is accepted as is)",
    "scheduler": "cluster (a scheduler address is accepted as is)",
    "n_workers": "dsketch.Cluster(n_workers=...)",
    "block_rows": "dsketch.Cluster(block_rows=...)",
    "bounds": "dsketch.Cluster(bounds=...)",
    "persist": "dsketch.Cluster(persist=...)",
    "fused": "dsketch.Cluster(fused=...)",
    "memory_check": "dsketch.Cluster(memory_check=...)",
}


def refuse_moved(func: str, kwargs: Mapping[str, Any]) -> None:
    """Raise :class:`~dsketch.errors.RemovedOptionError` for keywords of ``func`` that moved
    into the grouped settings (naming where each went), or a plain ``TypeError`` for others."""
    from dsketch.errors import RemovedOptionError

    if not kwargs:
        return
    moved = [k for k in kwargs if k in MOVED]
    if moved:
        where = "; ".join(f"{k}= is now {MOVED[k]}" for k in moved)
        raise RemovedOptionError(f"{func}() no longer takes {', '.join(k + '=' for k in moved)}: {where}")
    raise DSketchTypeError(f"{func}() got unexpected keyword argument(s) {', '.join(map(repr, kwargs))}")


def refuses_moved(func: Any) -> Any:
    """Decorator: answer a keyword of ``func`` that moved into the grouped settings with a
    :class:`~dsketch.errors.RemovedOptionError` naming where it went."""

    own = set(inspect.signature(func).parameters)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        refuse_moved(func.__name__, {k: v for k, v in kwargs.items() if k in MOVED and k not in own})
        return func(*args, **kwargs)

    return wrapper


def streaming_cluster(value: Any, func: str) -> Cluster:
    """The :class:`Cluster` of a one-pass computation (``predict``, ``covariance``): where it
    runs and its ``block_rows``; the iteration's options (``persist``, ``fused``,
    ``bounds``, ``memory_check``) have no effect there and are refused."""
    clu = as_cluster(value)
    default = Cluster()
    given = [name for name in ("persist", "fused", "memory_check")
             if getattr(clu, name) != getattr(default, name)] + (["bounds"] if clu.bounds is not None else [])
    if given:
        raise UnusedOptionError(f"{func}() reads every block once: Cluster {' and '.join(given)} "
                                f"{'has' if len(given) == 1 else 'have'} no effect there; drop "
                                f"{'it' if len(given) == 1 else 'them'}")
    return clu
