"""Elastic-net regularisation paths of the GLMs and multinomial regression: :func:`fit_path`.

A path fits the objective ``f(x) + alpha (l1_ratio ||x_p||_1 + (1 - l1_ratio)/2 ||x_p||^2)``
(``f`` the model's weighted mean loss, ``x_p`` the coefficients but the intercept; glum's
and glmnet's ``alpha`` and ``l1_ratio``) for a decreasing sequence of alphas, each fit by
proximal Newton (:class:`~dsketch.solvers.proximal.ProximalCoordinateDescent`) from the
solution at the alpha before, with the sequential strong rule screening the coordinates the
inner solve sweeps (docs/theory.md#regularisation-paths).
"""

from __future__ import annotations

import contextlib
import numbers
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from dsketch.api import _problem, fit
from dsketch.session import client_for, shared_engines
from dsketch.config import Cluster, Curvature, Solver, as_cluster, as_solver
from dsketch.errors import InvalidOptionError, InvalidParameterError
from dsketch.solvers.proximal import ProximalCoordinateDescent
from dsketch.solvers.result import FitResult

#: The L1 strength of the fit at the path's start: every penalised coefficient stays 0.
_ALL_ZERO = 1e300
#: The largest share of the columns on which a screened fit forms a restricted curvature.
RESTRICT_SHARE = 0.9

#: A path's fits reuse a curvature while each step divides the KKT measure by at least
#: ``1 / REUSE`` (:attr:`ProximalCoordinateDescent.reuse`).
REUSE = 0.03

#: An ``alpha_max`` at or below this is 0 up to rounding (scikit-learn's ``_alpha_grid``
#: uses the same floor): no default grid is built down from it.
ALPHA_MAX_FLOOR = float(np.finfo(np.float64).resolution)


@dataclass(frozen=True)
class PathResult:
    """The fits of a regularisation path, one per alpha (largest first).

    Attributes
    ----------
    alphas : ndarray of shape (n_alphas,)
    l1_ratio : float
    coef : ndarray of shape (n_alphas, n_features)
        The coefficients at each alpha (the intercept last, with ``fit_intercept``); for
        ``multinomial`` each row is the ``d x K`` matrix flattened row by row (``n_features =
        dK``, the ``K`` intercepts last).
    alpha_max : float
        The smallest alpha at which every penalised coefficient is 0 (from the gradient of
        the intercept-only model, or of the zero model without an intercept).
    n_iter, n_passes : ndarray of shape (n_alphas,)
        Newton iterations and passes over A of each alpha's fit (``n_passes_start``: of the
        fit that found ``alpha_max``; 0 at an alpha whose L1 weight is at least every
        penalised gradient of that fit's null model, which is then the solution as it is).
    n_active : ndarray of shape (n_alphas,)
        Nonzero penalised coefficients at each alpha.
    n_screened : ndarray of shape (n_alphas,)
        Penalised coordinates the strong rule kept in each fit's inner solves;
        ``readmitted``: how many left-out coordinates (by the rule, or zero inside the
        threshold at the start of an inner solve) the KKT check had to take back.
    success : bool
        Every fit converged.
    results : tuple of FitResult
    """

    alphas: np.ndarray
    l1_ratio: float
    coef: np.ndarray
    alpha_max: float
    n_iter: np.ndarray
    n_passes: np.ndarray
    n_passes_start: int
    n_active: np.ndarray
    n_screened: np.ndarray
    readmitted: np.ndarray
    success: bool
    results: tuple[FitResult, ...]
    wall_time: float


def alpha_grid(alpha_max: float, n_alphas: int = 20, eps: float = 1e-3) -> np.ndarray:
    """``n_alphas`` alphas from ``alpha_max`` down to ``eps * alpha_max``, evenly spaced in log."""
    if isinstance(n_alphas, bool) or not isinstance(n_alphas, numbers.Integral) or n_alphas < 1:
        raise InvalidOptionError(f"n_alphas must be an integer >= 1; got {n_alphas!r}")
    if not (isinstance(eps, numbers.Real) and 0 < eps < 1):
        raise InvalidOptionError(f"eps must be a number in (0, 1); got {eps!r}")
    return np.asarray(alpha_max * np.logspace(0.0, np.log10(eps), int(n_alphas)), dtype=np.float64)


def _checked(model: Any, model_params: dict[str, Any] | None, l1_ratio: Any, alphas: Any) -> np.ndarray | None:
    if not isinstance(model, str):
        raise InvalidOptionError(f"fit_path takes the model by name (a GLM: 'logistic', 'poisson', ...); got {model!r}")
    given = sorted({"l1", "l2"} & set(model_params or {}))
    if given:
        raise InvalidOptionError(f"model_params {' and '.join(given)} are set by the path from alpha and l1_ratio; "
                                 "drop them")
    if not (isinstance(l1_ratio, numbers.Real) and 0 < l1_ratio <= 1):
        raise InvalidParameterError(f"l1_ratio must be a number in (0, 1] (a path needs an L1 term); got {l1_ratio!r}")
    if alphas is None:
        return None
    out = np.asarray(alphas, dtype=np.float64).ravel()
    if out.size == 0 or not np.all(np.isfinite(out)) or np.any(out <= 0):
        raise InvalidParameterError("alphas must be a non-empty sequence of finite numbers > 0")
    return np.sort(out)[::-1]


def _grid(a_max: float, alphas: np.ndarray | None, n_alphas: int, eps: float) -> np.ndarray:
    """The given alphas, or the default grid down from ``a_max``; refused when ``a_max`` is
    0 up to rounding (or not finite), where that grid would be all zeros."""
    if alphas is not None:
        return alphas
    if not np.isfinite(a_max):
        raise InvalidParameterError(f"alpha_max is {a_max}: the gradient at the null model (intercept only, or "
                                    "all zeros) is not finite; check the data, or pass the alphas (alphas=..., "
                                    "--alphas)")
    if a_max <= ALPHA_MAX_FLOOR:
        raise InvalidParameterError(f"alpha_max is 0 (up to rounding: {a_max:.3g}): the gradient of every "
                                    "penalised coefficient vanishes at the null model (intercept only, or all "
                                    "zeros), which is the solution at every alpha, so there is no default grid "
                                    "down from it; check the data (targets that model fits exactly, all-zero "
                                    "columns) or pass the alphas to fit (alphas=..., --alphas)")
    return alpha_grid(a_max, n_alphas, eps)


def _screen(grad: np.ndarray, x: np.ndarray, threshold: float, n_unpenalized: int) -> np.ndarray:
    """The sequential strong rule: keep coordinate j when ``|grad_j| >= threshold`` (or it
    is nonzero, or unpenalised)."""
    keep = (np.abs(grad) >= threshold) | (x != 0.0)
    if n_unpenalized:
        keep[x.size - n_unpenalized :] = True
    return keep


def _intercept_only(n_features: int, model: str, fit_intercept: bool) -> np.ndarray | None:
    """The screen of the fit at the path's start, where every penalised coefficient stays 0:
    the intercept alone (its curvature is then its own ``1 x 1`` block, where the whole
    ``d x d`` Gram served nothing), or None (no intercept, or the ``K`` of a multinomial)."""
    if not fit_intercept or model == "multinomial":
        return None
    keep = np.zeros(n_features + 1, dtype=bool)
    keep[-1] = True
    return keep


def _null_fit(start: FitResult, alpha: float, l1_ratio: float) -> FitResult:
    """The fit at an alpha whose L1 weight is at least every penalised gradient of the null
    model ``start`` (the path's start, the first alphas of the grid): that model itself, its
    KKT conditions hold as they are (the gradient, hence the objective, does not depend on
    the penalty while the penalised coefficients are 0), with no pass and no iteration. A
    fit there would read ``A`` to recompute the same gradient, which rounding can put an ulp
    above the threshold, and move a coefficient to 1e-14 where the answer is 0."""
    info = {**start.info, "l1": alpha * l1_ratio, "l2": alpha * (1 - l1_ratio)}
    return replace(start, nit=0, n_passes=0, wall_time=0.0, info=info)


def fit_path(data: Any, model: str, *, l1_ratio: float = 1.0, alphas: Any = None, n_alphas: int = 20,
             eps: float = 1e-3, model_params: dict[str, Any] | None = None, fit_intercept: bool = False,
             curvature: str | Curvature = "auto", solver: str | Solver = "auto",
             cluster: Cluster | Any = None, seed: int = 0, screening: bool = True,
             restricted_curvature: bool = True) -> PathResult:
    """Fit a GLM (or multinomial regression) at each alpha of a regularisation path,
    warm-started from the alpha before.

    Parameters
    ----------
    data, curvature, cluster, seed
        As :func:`dsketch.fit` (a store's embedded cluster is started once for the path).
    model : str
        A GLM by name (``"logistic"``, ``"poisson"``, ``"least-squares"``, ``"glm"``, ...) or
        ``"multinomial"`` (each class's coefficient of a feature is one coordinate of the
        penalty, of the screening and of ``n_active``).
    l1_ratio : float in (0, 1], default 1.0
        The L1 share: ``l1 = alpha * l1_ratio``, ``l2 = alpha * (1 - l1_ratio)``.
    alphas : sequence of float, optional
        The alphas (fitted largest first). None: :func:`alpha_grid` of ``n_alphas`` from
        ``alpha_max`` down to ``eps * alpha_max``.
    model_params : dict, optional
        The model's other parameters (not ``l1`` / ``l2``, which the path sets).
    solver : str or Solver, default "auto"
        Its tolerances and limits apply to every fit; the method must be ``"auto"`` or
        ``"prox-newton"``.
    screening : bool, default True
        The sequential strong rule (coordinates with ``|g_j| < l1_ratio (2 alpha_k -
        alpha_{k-1})`` at the previous solution are left out of the coordinate descent until
        the model's KKT check re-admits them). It never changes the solution.
    restricted_curvature : bool, default True
        With ``screening``, form the curvature on the columns that may be nonzero only (the
        screened-in, unpenalised and nonzero ones, and any whose gradient violates the KKT
        conditions at an iterate) while they are at most ``RESTRICT_SHARE`` (90%) of all:
        the workers compute the ``|S| x |S|`` block of the Gram, not ``d x d``. A column
        left out whose gradient violates the KKT conditions is added and the curvature
        computed again, so it never changes the solution either. Curvatures with
        preliminary passes (leverage scores) are always formed whole.

    Returns
    -------
    PathResult

    Raises
    ------
    InvalidOptionError, InvalidParameterError
        A model not given by name, ``l1`` or ``l2`` in ``model_params``, ``l1_ratio`` outside
        (0, 1], non-positive alphas, a solver method other than proximal Newton; without
        ``alphas``, an ``alpha_max`` at or below :data:`ALPHA_MAX_FLOOR` (the null model is
        the solution at every alpha: the default grid would be all zeros) or not finite.
    """
    given = _checked(model, model_params, l1_ratio, alphas)
    sol, clu = as_solver(solver), as_cluster(cluster)
    if sol.method not in ("auto", "prox-newton"):
        raise InvalidOptionError(f"fit_path fits by proximal Newton; solver {sol.method!r} cannot "
                                 "(use 'auto' or 'prox-newton')")
    spec = _problem(data)
    t0 = time.perf_counter()
    with one_cluster(spec, clu, fit_intercept) as bound, shared_engines():
        return _run(spec, model, given, l1_ratio, n_alphas, eps, model_params, fit_intercept, curvature, sol,
                    bound, seed, (screening, restricted_curvature), t0)


@contextlib.contextmanager
def one_cluster(spec: Any, clu: Cluster, fit_intercept: bool = False) -> Iterator[Cluster]:
    """``clu`` bound to one client for many fits of ``spec``: the caller's client, or the
    one a fit of ``spec`` (with the intercept column when ``fit_intercept``) would make (the
    threads of this process, as many as such a fit takes, a joined scheduler or an embedded
    cluster), made once for all of them, so that they can share their engines
    (:func:`~dsketch.session.shared_engines`)."""
    if clu.client is not None:
        yield clu
        return
    fitted = spec.with_intercept() if fit_intercept else spec
    with client_for(None, clu.address, clu.n_workers, fitted, clu.block_rows, clu.bounds) as client:
        yield replace(clu, scheduler=client)


def _run(spec: Any, model: str, alphas: np.ndarray | None, l1_ratio: float, n_alphas: int, eps: float,
         model_params: dict[str, Any] | None, fit_intercept: bool, curvature: Any, sol: Solver, clu: Cluster,
         seed: int, screens: tuple[bool, bool], t0: float) -> PathResult:
    """The fits of :func:`fit_path` on a bound problem and cluster (``screens``: the
    ``screening`` and ``restricted_curvature`` flags)."""
    params = dict(model_params or {})
    screening, restricted = screens

    def one(l1: float, l2: float, x0: Any, screen: np.ndarray | None,
            tol: float = sol.tol) -> tuple[FitResult, ProximalCoordinateDescent]:
        inner = ProximalCoordinateDescent(screen=screen, restrict=RESTRICT_SHARE if restricted else 0.0,
                                          reuse=REUSE, on_support=True)
        res = fit(spec, model, model_params={**params, "l1": l1, "l2": l2}, fit_intercept=fit_intercept,
                  curvature=curvature, solver=replace(sol, method="prox-newton", inner=inner, tol=tol), cluster=clu,
                  x0=x0, seed=seed)
        return res, inner

    # the null model is the answer at alpha_max and above (_null_fit): as accurate as a fit
    # there, which would start where this one ends (at a relative gradient of tol), to tol
    start, _ = one(_ALL_ZERO, 0.0, "auto" if fit_intercept else "zeros",
                   _intercept_only(spec.n_features, model, fit_intercept) if screening and restricted else None,
                   sol.tol**2)
    d = start.x.size  # (columns + intercept) x classes: K entries a row for multinomial
    n_unpen = int(bool(fit_intercept)) * d // (spec.n_features + int(bool(fit_intercept)))
    assert start.jac is not None
    g_max = float(np.max(np.abs(start.jac[: d - n_unpen]), initial=0.0))
    a_max = g_max / l1_ratio
    if a_max * l1_ratio < g_max:  # rounded down: the smallest alpha whose L1 weight is g_max or more
        a_max = float(np.nextafter(a_max, np.inf))
    grid = _grid(a_max, alphas, n_alphas, eps)
    results, screened, readmitted = [], [], []
    x, grad, prev, at_null = start.x, start.jac, a_max, True
    for alpha in grid:
        keep = _screen(grad, x, l1_ratio * (2 * alpha - prev), n_unpen) if screening else None
        at_null = at_null and alpha * l1_ratio >= g_max  # the null model satisfies the KKT conditions
        if at_null:
            res, inner = _null_fit(start, alpha, l1_ratio), ProximalCoordinateDescent()
        else:
            res, inner = one(alpha * l1_ratio, alpha * (1 - l1_ratio), x, keep)
        results.append(res)
        screened.append(d - n_unpen if keep is None else int(keep[: d - n_unpen].sum()))
        readmitted.append(inner.readmitted)
        x, grad, prev = res.x, res.jac, float(alpha)
    coef = np.stack([r.x for r in results])
    return PathResult(
        alphas=np.asarray(grid), l1_ratio=float(l1_ratio), coef=coef, alpha_max=a_max,
        n_iter=np.array([r.nit for r in results]), n_passes=np.array([r.n_passes for r in results]),
        n_passes_start=int(start.n_passes), n_active=(coef[:, : d - n_unpen] != 0).sum(axis=1),
        n_screened=np.array(screened), readmitted=np.array(readmitted),
        success=bool(start.success and all(r.success for r in results)), results=tuple(results),
        wall_time=time.perf_counter() - t0,
    )
