"""The curvature a fit uses: the ``auto`` choice between exact Newton and leverage sampling
by a cost model, the default sketch sizes, and :class:`CurvaturePlan`, the choice after the
memory check (:func:`dsketch.fit` resolves it before any data is read)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

from dsketch.config import FIRST_ORDER, Cluster, Curvature
from dsketch.engine.memory import plan_curvature as _memory_plan
from dsketch.errors import MemoryBudgetError
from dsketch.models import Model
from dsketch.sketch import make_sketch
from dsketch.store import ProblemSpec

logger = logging.getLogger("dsketch")

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


@dataclass(frozen=True)
class CurvaturePlan:
    """The curvature a fit uses, after the ``auto`` rules and the memory check.

    ``kind`` is ``"exact"`` or a sketch name (``"exact"`` for gradient descent too, which
    is priced as the cheapest and computes no curvature), ``size`` its size; ``given`` the
    kind chosen before the memory check and ``size_arg`` the size the user gave (it applies
    to ``given`` only).
    """

    method: str
    kind: str
    size: int
    params: dict[str, Any] | None
    adaptive: bool
    auto: bool
    given: str
    size_arg: int | None
    n_samples: int
    n_features: int

    def size_of(self, kind: str) -> int:
        """The size a fit with curvature ``kind`` samples."""
        if self.method in FIRST_ORDER:
            return 1
        if self.size_arg is None or kind != self.given:
            return default_sketch_size(kind, self.n_samples, self.n_features, adaptive=self.adaptive)
        return int(self.size_arg)

    def sketch(self) -> Any:
        """The sketch object (None for gradient descent, which reads no curvature)."""
        return None if self.method in FIRST_ORDER else make_sketch(self.kind, **(self.params or {}))

    def checked(self, limits: Any, spec: ProblemSpec, model: Model, cluster: Cluster) -> CurvaturePlan:
        """The plan after the memory check (:func:`~dsketch.engine.memory.plan_curvature`):
        the same, the other curvature when ``auto`` and only it fits, L-BFGS throughout for
        the ``"auto"`` solver when no curvature fits but L-BFGS does, or an error."""
        kw = {"spec": spec, "model": model, "block_rows": cluster.block_rows, "bounds": cluster.bounds,
              "persist": cluster.persist}
        try:
            kind, size = _memory_plan(self.kind, self.size, limits, solver=self.method, size_of=self.size_of,
                                      auto=self.auto, sketch_params=self.params, **kw)
        except MemoryBudgetError as exc:
            if self.method != "auto":
                raise
            quasi = replace(self, method="lbfgs", kind="exact", params=None, adaptive=False, auto=False)
            try:
                _memory_plan("exact", 1, limits, solver="lbfgs", size_of=quasi.size_of, auto=False,
                             sketch_params=None, **kw)
            except MemoryBudgetError:
                raise exc from None
            logger.info("solver 'auto': L-BFGS throughout, since no curvature fits in memory (%s)",
                        str(exc).split(" (", 1)[0].split(": ", 1)[-1])
            return replace(quasi, size=1)
        return replace(self, kind=kind, size=size)


def resolve_curvature(spec: ProblemSpec, curvature: Curvature, method: str, *,
                      multi_output: bool = False) -> CurvaturePlan:
    """The curvature of a fit of ``spec`` before the memory check: ``"auto"`` resolved
    (:func:`choose_curvature`, priced with the leverage size this fit would use; the sketch's
    settings only apply when a sketch is chosen) and the size defaulted. A multi-output
    model (multinomial) gets uniform sampling where leverage would be chosen (its classes
    cannot share the leverage scores' preliminary pass)."""
    adaptive = curvature.resolved_adaptive(method)
    kind, params = curvature.kind, curvature.params
    auto = kind == "auto" and method not in FIRST_ORDER
    n, d = spec.n_samples, spec.n_features
    if auto:
        kind = choose_curvature(spec, curvature.size if curvature.size is not None else default_sketch_size(
            "leverage", n, d, adaptive=adaptive))
        if kind == "leverage" and multi_output:
            kind = "uniform"
        if kind == "exact":
            params, adaptive = None, False
    elif method in FIRST_ORDER:
        kind = "exact"
    plan = CurvaturePlan(method=method, kind=kind, size=0, params=params, adaptive=adaptive, auto=auto, given=kind,
                         size_arg=curvature.size, n_samples=n, n_features=d)
    return replace(plan, size=plan.size_of(kind))
