"""Solver state, result objects and their persistence."""

from __future__ import annotations

import enum
import json
import os
import sys
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from dsketch.errors import DSketchTypeError
from dsketch.store import outputs, read_group, write_group

def outside_stacklevel() -> int:
    """The ``stacklevel`` for a ``warnings.warn`` in the calling function that attributes the
    warning to the first frame outside the dsketch package (the user's call of ``fit`` or of
    a solver), however many of dsketch's own frames lie between."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    return level


HISTORY_COLUMNS = (
    "iteration",  # int: iteration index (0 = the starting point)
    "loss",  # objective value at the iterate
    "grad_norm",  # Euclidean norm of the gradient at the iterate
    "newton_decrement",  # sqrt(g^T H~^-1 g) with the (sketched) Hessian; NaN when not computed
    "step_size",  # line-search step taken from this iterate (NaN on the last row)
    "sketch_rows",  # rows sampled / embedding dimension of the curvature estimate
    "passes",  # cumulative passes over A when this row was recorded
    "seconds",  # wall time since the start of the fit when the iterate's loss and gradient were known
)


class Status(enum.IntEnum):
    """Why a solver stopped."""

    CONVERGED_GRADIENT = 0
    CONVERGED_DECREMENT = 1
    MAX_ITER = 2
    LINE_SEARCH_FAILED = 3
    CALLBACK_STOP = 4
    NUMERICAL_ERROR = 5
    COMPLETED = 6
    CONVERGED_LOSS = 7
    DIVERGED = 8


STATUS_MESSAGES = {
    Status.CONVERGED_GRADIENT: (
        "Converged: gradient norm below tol relative to its initial value, and the Newton "
        "decrement below tol relative to the loss."
    ),
    Status.CONVERGED_DECREMENT: (
        "Converged: the Newton decrement is at the rounding level of the loss; "
        "no further decrease can be measured."
    ),
    Status.MAX_ITER: "Stopped: max_iter reached before convergence.",
    Status.LINE_SEARCH_FAILED: "Stopped: the line search found no step that decreases the loss.",
    Status.CALLBACK_STOP: "Stopped: the callback raised StopIteration.",
    Status.NUMERICAL_ERROR: "Stopped: non-finite loss or gradient.",
    Status.COMPLETED: "Finished: ran the requested number of epochs.",
    Status.CONVERGED_LOSS: (
        "Converged in loss value: the last step decreased the loss by less than ftol relative "
        "to it (the convergence notion of the non-smooth models)."
    ),
    Status.DIVERGED: (
        "Stopped: no optimum. The loss went to zero with the curvature while the coefficients "
        "grew: the classes are separable, and without a penalty the coefficients diverge; "
        "fit with an L2 penalty (l2 > 0)."
    ),
}

SUCCESS = {Status.CONVERGED_GRADIENT, Status.CONVERGED_DECREMENT, Status.COMPLETED, Status.CONVERGED_LOSS}


@dataclass(frozen=True)
class NewtonState:
    """Snapshot of an approximate-Newton run after one iteration (passed to callbacks)."""

    iteration: int  # iterations completed
    coef: np.ndarray  # (n_features,) float64, the current iterate
    loss: float  # objective at coef
    grad_norm: float  # ||grad L(coef)||_2
    newton_decrement: float  # sqrt(g^T H~^-1 g) at the previous iterate
    step_size: float  # line-search step that produced coef
    n_passes: int  # cumulative passes over A
    sketch_rows: int  # size of the last curvature estimate
    seconds: float  # wall time since the start


class FrozenDict(dict):
    """A ``dict`` that refuses changes (the ``history`` and ``info`` of a :class:`FitResult`);
    it copies, pickles and serialises like a ``dict``."""

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise DSketchTypeError("a FitResult is immutable: copy its history or info (dict(...)) to change them")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse  # type: ignore[assignment]
    __ior__ = _refuse  # type: ignore[assignment]

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenDict, (dict(self),))


def _read_only(a: Any) -> Any:
    """A read-only float array copy of ``a`` (None stays None)."""
    if a is None:
        return None
    out = np.array(a, copy=True)
    out.flags.writeable = False
    return out


@dataclass(frozen=True)
class FitResult:
    """Result of a fit, the same for every solver, in scipy's vocabulary plus cost accounting.

    Immutable once returned: the fields cannot be assigned, the arrays are read-only and the
    ``history`` and ``info`` mappings refuse changes (use :func:`dataclasses.replace` for a
    changed copy). Only :meth:`attach_inference` adds to it, once.

    Attributes
    ----------
    x : ndarray of shape (n_features,)
        The solution.
    fun : float
        Objective value at ``x`` (also :attr:`loss`).
    success : bool
    status : Status
    message : str
    nit : int
        Iterations performed (also :attr:`n_iter`).
    n_passes : int
        Passes over the design matrix A.
    wall_time : float
        Seconds.
    grad_norm : float
        Gradient norm at ``x`` (NaN where a solver does not compute it).
    jac : ndarray of shape (n_features,) or None
        The gradient of the objective at ``x``; None where it was not computed (mini-batch
        GGN-SCORE, results saved before it was recorded).
    history : dict of str to ndarray
        One column per entry of :data:`HISTORY_COLUMNS`, one row per recorded iterate.
    info : dict
        Model, solver and curvature settings, problem shape; solver-specific entries.
    inference : dsketch.inference.Inference or None
        Standard errors and tests of a GLM fit, when computed (:func:`dsketch.covariance`,
        ``dsketch fit --cov-type``); :meth:`summary` prints them.
    """

    x: np.ndarray
    fun: float
    success: bool
    status: Status
    message: str
    nit: int
    n_passes: int
    wall_time: float
    grad_norm: float
    jac: np.ndarray | None = None
    history: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    inference: Any = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "x", _read_only(np.asarray(self.x, dtype=np.float64)))
        set_(self, "jac", _read_only(None if self.jac is None else np.asarray(self.jac, dtype=np.float64)))
        set_(self, "history", FrozenDict({k: _read_only(np.asarray(v)) for k, v in self.history.items()}))
        set_(self, "info", FrozenDict(self.info))

    @property
    def loss(self) -> float:
        """The objective value at ``x`` (the same as :attr:`fun`)."""
        return self.fun

    @property
    def n_iter(self) -> int:
        """Iterations performed (the same as :attr:`nit`)."""
        return self.nit

    def attach_inference(self, inference: Any) -> None:
        """Record the standard errors computed for this fit (:func:`dsketch.covariance`)."""
        object.__setattr__(self, "inference", inference)

    def __repr__(self) -> str:
        return (
            f"FitResult(success={self.success}, status={self.status.name}, nit={self.nit}, "
            f"fun={self.fun:.12g}, grad_norm={self.grad_norm:.3e}, n_passes={self.n_passes}, "
            f"wall_time={self.wall_time:.2f}s)"
        )

    def summary(self, alpha: float | None = None) -> str:
        """The coefficient table (coef, std err, z, P>|z|, interval) of :attr:`inference`.

        Raises
        ------
        InferenceError
            When no inference was computed for this result.
        """
        if self.inference is None:
            from dsketch.errors import InferenceError

            raise InferenceError(
                "no standard errors were computed for this result: call dsketch.covariance(result, data, "
                "cov_type=...) or fit with --cov-type (dsketch summary --result R --cov-type ... for a saved one)"
            )
        return str(self.inference.summary(alpha))

    def history_table(self) -> str:
        """The per-iteration history as a fixed-width text table."""
        return format_history(self.history)


def _count(value: float) -> str:
    """A count of the table: the integer, or ``nan`` where none was recorded (the sampled
    rows on the last row of a GGN-SCORE history)."""
    return str(int(value)) if np.isfinite(value) else "nan"


def format_row(row: dict[str, float]) -> str:
    """One line of the iteration table."""
    return (
        f"{_count(row['iteration']):>4s}  {row['loss']:>22.15e}  {row['grad_norm']:>10.3e}  "
        f"{row['newton_decrement']:>10.3e}  {row['step_size']:>6.3g}  "
        f"{_count(row['sketch_rows']):>9s}  {_count(row['passes']):>6s}  {row['seconds']:>8.2f}"
    )


TABLE_HEADER = (
    f"{'iter':>4s}  {'loss':>22s}  {'|grad|':>10s}  {'decrement':>10s}  {'step':>6s}  "
    f"{'sketch':>9s}  {'passes':>6s}  {'seconds':>8s}"
)


def format_history(history: dict[str, np.ndarray]) -> str:
    lines = [TABLE_HEADER]
    n = len(history.get("iteration", []))
    for i in range(n):
        lines.append(format_row({k: float(history[k][i]) for k in HISTORY_COLUMNS}))
    return "\n".join(lines)


def save_result(result: FitResult, path: str, *, overwrite: bool = False) -> None:
    """Write a result to a Zarr group (atomically). Read it back with :func:`load_result`.

    ``overwrite=True`` replaces only an earlier result store, never a problem store or
    another path (:func:`dsketch.store.outputs.check_output`).
    """
    arrays = {"x": np.asarray(result.x, dtype=np.float64)}
    if result.jac is not None:
        arrays["jac"] = np.asarray(result.jac, dtype=np.float64)
    for k, v in result.history.items():
        arrays[f"history__{k}"] = np.asarray(v, dtype=np.float64)
    meta: dict[str, Any] = {
        f.name: getattr(result, f.name) for f in fields(result) if f.name not in ("x", "jac", "history", "inference")
    }
    meta["info"] = dict(result.info)
    if result.inference is not None:
        inf_arrays, meta["inference"] = result.inference.to_store()
        arrays.update({f"inference__{k}": np.asarray(v, dtype=np.float64) for k, v in inf_arrays.items()})
    meta["status"] = result.status.name
    attrs = {"dsketch_result": json.loads(json.dumps(meta, default=_jsonable))}
    write_group(path, arrays, attrs, overwrite=overwrite, kind=outputs.RESULT)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, enum.Enum):
        return obj.name
    return str(obj)


def load_result(path: str) -> FitResult:
    """Read a result written by :func:`save_result` (or ``dsketch fit --out``)."""
    arrays, attrs = read_group(path)
    if "dsketch_result" not in attrs:
        from dsketch.errors import StoreFormatError

        raise StoreFormatError(
            f"{path!r} is a Zarr group but not a dsketch result (no 'dsketch_result' attribute); "
            "pass the --out store of 'dsketch fit'"
        )
    meta = dict(attrs["dsketch_result"])
    history = {
        k.split("__", 1)[1]: np.asarray(v) for k, v in arrays.items() if k.startswith("history__")
    }
    inference = None
    if "inference" in meta:
        from dsketch.solvers.inference_result import Inference

        inference = Inference.from_store(
            {k.split("__", 1)[1]: np.asarray(v) for k, v in arrays.items() if k.startswith("inference__")},
            dict(meta["inference"]))
    return FitResult(
        x=np.asarray(arrays["x"]),
        jac=np.asarray(arrays["jac"]) if "jac" in arrays else None,  # None: saved before jac was recorded
        fun=float(meta["fun"]),
        success=bool(meta["success"]),
        status=Status[meta["status"]],
        message=str(meta["message"]),
        nit=int(meta["nit"]),
        n_passes=int(meta["n_passes"]),
        wall_time=float(meta["wall_time"]),
        grad_norm=float(meta["grad_norm"]),
        history=history,
        info=dict(meta.get("info", {})),
        inference=inference,
    )


def describe_result(path: str) -> dict:
    """Summarise a result store (for ``dsketch info``): the model, how the fit ended, the
    coefficient count and whether the last coefficient is an intercept."""
    import os

    res = load_result(path)
    info = res.info
    return {
        "path": os.path.abspath(path),
        "kind": "result",
        "model": info.get("model"),
        "success": res.success,
        "status": res.status.name,
        "iterations": res.nit,
        "passes": res.n_passes,
        "loss": res.fun,
        "grad_norm": res.grad_norm,
        "coefficients": int(np.asarray(res.x).size),
        "fit_intercept": bool(info.get("fit_intercept", False)),
        "solver": info.get("solver"),
        "sketch": info.get("sketch"),
        "data": info.get("data"),
    }
