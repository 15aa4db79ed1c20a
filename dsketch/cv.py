"""Cross-validated elastic-net paths of the GLMs: :func:`cv_path`.

The rows are split into folds by their global index (:func:`dsketch.store.folds.fold_ids`).
A fold's training fit is the path of :func:`dsketch.fit_path` on the same problem read
through a row mask (:meth:`~dsketch.store.ProblemSpec.with_row_mask`), which multiplies the
sample weights by 0 on the fold's rows as the blocks are read: the GLMs' objective is the
weighted mean of the rows' losses, so that is the fit of the training rows alone, and the
store is neither copied nor rewritten. The fold's held-out rows are scored the same way,
with the complementary mask, in one pass for all alphas: the weighted mean unit deviance
``sum_i s_i d(y_i, mu_i) / sum_i s_i`` over the held-out rows (glum's ``deviance_path_``).
"""

from __future__ import annotations

import numbers
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from dsketch.api import _bind, _problem
from dsketch.session import client_for
from dsketch.config import Cluster, Curvature, Solver, as_cluster
from dsketch.engine.core import Engine
from dsketch.errors import InvalidOptionError, InvalidParameterError, UnusedOptionError
from dsketch.models import get_model
from dsketch.path import PathResult, _checked, fit_path, one_cluster
from dsketch.solvers.result import FitResult
from dsketch.store import Block, ProblemSpec
from dsketch.store.folds import RowMask, RowSubset


@dataclass(frozen=True)
class CVResult:
    """Held-out deviances of elastic-net paths on every fold, the chosen penalty and the
    refit on all rows.

    Attributes
    ----------
    l1_ratios : ndarray of shape (n_l1_ratios,)
    alphas : ndarray of shape (n_l1_ratios, n_alphas)
        Each l1 ratio's alphas (largest first): those given, or the grid of the path on all
        rows (the same alphas for every fold, as glum's and glmnet's cross-validation).
    deviance : ndarray of shape (n_folds, n_l1_ratios, n_alphas)
        The held-out weighted mean unit deviance of each fold's fit.
    l1_ratio, alpha : float
        The pair of least mean held-out deviance (over folds).
    alpha_1se : float
        The largest alpha (at ``l1_ratio``) whose mean deviance is within one standard
        error (over folds) of the least: a sparser model that predicts about as well.
    coef : ndarray of shape (n_features,)
        The refit on all rows at ``(l1_ratio, alpha)`` (the intercept last, with
        ``fit_intercept``).
    path : PathResult
        The path on all rows at ``l1_ratio`` (``coef`` is its row at ``alpha``).
    fold_paths : tuple of tuple of PathResult
        Each l1 ratio's path on each fold's training rows.
    fold_weights : ndarray of shape (n_folds,)
        The sum of the sample weights of each fold's held-out rows (its row count without
        weights).
    n_folds, seed : int
    success : bool
        Every fit converged.
    wall_time : float
    """

    l1_ratios: np.ndarray
    alphas: np.ndarray
    deviance: np.ndarray
    l1_ratio: float
    alpha: float
    alpha_1se: float
    coef: np.ndarray
    path: PathResult
    fold_paths: tuple[tuple[PathResult, ...], ...]
    fold_weights: np.ndarray
    n_folds: int
    seed: int
    success: bool
    wall_time: float

    @property
    def mean_deviance(self) -> np.ndarray:
        """The mean held-out deviance over folds, shape (n_l1_ratios, n_alphas)."""
        return np.asarray(self.deviance.mean(axis=0))

    @property
    def se_deviance(self) -> np.ndarray:
        """Its standard error over folds (sample standard deviation / sqrt(n_folds))."""
        return np.asarray(self.deviance.std(axis=0, ddof=1) / np.sqrt(self.n_folds))

    @property
    def result(self) -> FitResult:
        """The :class:`FitResult` of the refit at ``(l1_ratio, alpha)``."""
        return self.path.results[int(np.flatnonzero(self.path.alphas == self.alpha)[0])]


def _ratios(l1_ratio: Any) -> list[float]:
    values = list(np.atleast_1d(np.asarray(l1_ratio, dtype=object)))
    if not values:
        raise InvalidParameterError("l1_ratio must be a number in (0, 1] or a non-empty list of them")
    return values


def _masks(n_folds: Any, splits: Any, seed: int, n_samples: int) -> list[tuple[Any, Any]]:
    """The (training, held-out) masks of each fold: the hashed folds of ``n_folds`` (default
    5), or the given ``(train, test)`` index pairs."""
    if splits is not None:
        if n_folds is not None:
            raise UnusedOptionError("n_folds has no effect with splits (their number is the number of folds); "
                                    "drop one")
        pairs = list(splits)
        if len(pairs) < 2 or any(len(p) != 2 for p in pairs):
            raise InvalidParameterError("splits must be at least 2 pairs (train indices, test indices)")
        return [(RowSubset.of(tr, n_samples), RowSubset.of(te, n_samples)) for tr, te in pairs]
    k = 5 if n_folds is None else n_folds
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 2 <= k <= n_samples:
        raise InvalidParameterError(f"n_folds must be an integer in 2 .. n_samples; got n_folds={k!r} with "
                                    f"n_samples={n_samples}")
    return [(RowMask(int(k), f, seed), RowMask(int(k), f, seed, held_out=True)) for f in range(int(k))]


def cv_path(data: Any, model: str, *, l1_ratio: Any = 1.0, alphas: Any = None, n_alphas: int = 20,
            eps: float = 1e-3, n_folds: int | None = None, splits: Any = None, seed: int = 0,
            model_params: dict[str, Any] | None = None, fit_intercept: bool = False,
            curvature: str | Curvature = "auto", solver: str | Solver = "auto", cluster: Cluster | Any = None,
            screening: bool = True) -> CVResult:
    """Choose a GLM's elastic-net penalty by K-fold cross-validation, without copying the data.

    For each ``l1_ratio``: the path on all rows (:func:`dsketch.fit_path`; its alphas are
    every fold's), then for each fold the path on the other folds' rows (a row mask) and the
    held-out deviance of each alpha's fit on the fold's rows (one pass). The pair of least
    mean held-out deviance is chosen and its fit on all rows returned.

    Parameters
    ----------
    data, model, alphas, n_alphas, eps, model_params, fit_intercept, curvature, solver, cluster, screening
        As :func:`dsketch.fit_path` (the model a GLM by name; a store's embedded cluster is
        started once for all fits).
    l1_ratio : float or sequence of float in (0, 1], default 1.0
        The L1 share(s) to try.
    n_folds : int, default 5
        Folds of :func:`dsketch.fold_ids` (row ``i``'s fold is a hash of ``i`` and ``seed``:
        sizes are about ``n / n_folds``, not exactly equal).
    splits : sequence of (train, test) index arrays, optional
        Given folds instead (a scikit-learn splitter's ``split``), as
        :class:`~dsketch.store.folds.RowSubset` masks: one byte a row, sent with every task
        to a cluster's workers; the hashed folds cost nothing to send.
    seed : int, default 0
        Key of the folds and of the sketches' randomness.

    Returns
    -------
    CVResult

    Raises
    ------
    InvalidOptionError, InvalidParameterError
        As :func:`dsketch.fit_path`; a model without a unit deviance (``multinomial``); fewer
        than 2 folds; a fold whose held-out rows all have weight 0. UnusedOptionError:
        ``n_folds`` with ``splits``.
    """
    ratios = _ratios(l1_ratio)
    for r in ratios:
        _checked(model, model_params, r, alphas)
    if not getattr(get_model(model, **(model_params or {})), "has_deviance", False):
        raise InvalidOptionError(f"cv_path scores folds by a GLM's held-out deviance; model {model!r} has none "
                                 "(use a single-output GLM: 'logistic', 'poisson', 'glm', ...)")
    spec = _problem(data)
    masks = _masks(n_folds, splits, seed, spec.n_samples)
    opts = {"model_params": model_params, "fit_intercept": fit_intercept, "curvature": curvature,
            "solver": solver, "seed": seed, "screening": screening}
    t0 = time.perf_counter()
    with one_cluster(spec, as_cluster(cluster), fit_intercept) as clu:
        paths = [_one_ratio(spec, model, float(r), alphas, n_alphas, eps, masks, opts, clu) for r in ratios]
    return _result(ratios, paths, len(masks), seed, t0)


def _one_ratio(spec: ProblemSpec, model: str, ratio: float, alphas: Any, n_alphas: int, eps: float,
               masks: list[tuple[Any, Any]], opts: dict[str, Any],
               clu: Cluster) -> tuple[PathResult, list[PathResult], np.ndarray, np.ndarray]:
    """The path on all rows, the folds' paths at its alphas, their held-out deviances
    ``(n_folds, n_alphas)`` and the held-out weights."""
    full = fit_path(spec, model, l1_ratio=ratio, alphas=alphas, n_alphas=n_alphas, eps=eps, cluster=clu, **opts)
    folds, dev, weights = [], np.empty((len(masks), full.alphas.size)), np.empty(len(masks))
    for f, (train, test) in enumerate(masks):
        folds.append(fit_path(spec.with_row_mask(train), model, l1_ratio=ratio, alphas=full.alphas, cluster=clu,
                              **opts))
        dev[f], weights[f] = heldout_deviance(spec.with_row_mask(test), model, folds[-1].coef,
                                              model_params=opts["model_params"],
                                              fit_intercept=opts["fit_intercept"], cluster=clu)
    return full, folds, dev, weights


def heldout_deviance(data: Any, model: str, coefs: np.ndarray, *, model_params: dict[str, Any] | None = None,
                     fit_intercept: bool = False, cluster: Cluster | Any = None) -> tuple[np.ndarray, float]:
    """The weighted mean unit deviance ``sum_i s_i d(y_i, mu_i) / sum_i s_i`` of each row of
    ``coefs`` (``m x n_features``, the intercept last with ``fit_intercept``) on a problem,
    in one pass; with a row mask, over the rows it keeps. Returns the ``m`` deviances and
    ``sum_i s_i``.

    Raises
    ------
    InvalidParameterError
        When no row has a positive weight.
    """
    clu = as_cluster(cluster)
    spec, mdl = _bind(data, model, model_params, fit_intercept)
    X = np.ascontiguousarray(np.atleast_2d(np.asarray(coefs, dtype=np.float64)))
    with client_for(clu.client, clu.address, clu.n_workers, spec, clu.block_rows, clu.bounds) as c:
        engine = Engine(spec, c, block_rows=clu.block_rows, bounds=clu.bounds, members=mdl.row_members)
        try:
            out = engine.map_reduce(_deviance_block, mdl, X)
        finally:
            engine.close()
    if not out["s"] > 0.0:
        mask = "" if spec.row_mask is None else f" kept by {spec.row_mask}"
        raise InvalidParameterError(f"no row{mask} has a positive sample weight: nothing to score (use fewer folds "
                                    "or another seed)")
    return np.asarray(out["dev"]) / out["s"], float(out["s"])


def _deviance_block(block: Block, r0: int, model: Any, X: np.ndarray) -> dict[str, Any]:
    """A block's weighted deviance sums for every row of ``X`` (the task of :func:`heldout_deviance`)."""
    data = np.asarray(model.row_data(block), dtype=np.float64)
    eta = np.asarray(block.A @ X.T, dtype=np.float64).reshape(block.n_rows, X.shape[0])
    model.check_targets(data)
    dev, s = model.deviance_sums(eta, data)
    return {"dev": dev, "s": s}


def _result(ratios: list[Any], paths: list[tuple[PathResult, list[PathResult], np.ndarray, np.ndarray]], k: int,
            seed: int, t0: float) -> CVResult:
    """The choice of least mean held-out deviance (glum's: the first of equals) and the 1-SE alpha."""
    alphas = np.stack([full.alphas for full, *_ in paths])
    dev = np.stack([d for *_, d, _w in paths], axis=1)
    mean = dev.mean(axis=0)
    i, j = np.unravel_index(int(np.argmin(mean)), mean.shape)
    se = dev[:, i, j].std(ddof=1) / np.sqrt(k)
    alpha_1se = float(alphas[i][mean[i] <= mean[i, j] + se].max())
    full = paths[i][0]
    ok = all(p[0].success and all(f.success for f in p[1]) for p in paths)
    return CVResult(l1_ratios=np.array([float(r) for r in ratios]), alphas=alphas, deviance=dev,
                    l1_ratio=float(ratios[i]), alpha=float(alphas[i, j]), alpha_1se=alpha_1se,
                    coef=full.coef[j].copy(), path=full, fold_paths=tuple(tuple(p[1]) for p in paths),
                    fold_weights=paths[0][3], n_folds=k, seed=int(seed), success=ok,
                    wall_time=time.perf_counter() - t0)
