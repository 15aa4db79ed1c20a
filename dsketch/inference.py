"""Inference for the GLMs: covariance matrices, standard errors and a coefficient table.

:func:`covariance` reads the store once more at the fitted coefficients (exactly, never a
sketch; blocks are streamed, ``A`` is never held whole) and sums, over the rows ``i`` with a
positive sample weight ``s_i``, with ``g_i = s_i l'(eta_i) a_i``:

* the sum-form Hessian ``H = sum_i s_i l''(eta_i) a_i a_i^T + S l2 P`` (``S = sum_i s_i``,
  ``P`` the diagonal 0/1 mask of the penalised coefficients): the Hessian of ``S L(x)``;
* the meat ``B = sum_i g_i g_i^T``, or per cluster ``B = sum_c G_c G_c^T`` with
  ``G_c = sum_{i in c} g_i``;
* Pearson's statistic ``X2 = sum_i s_i (y_i - mu_i)^2 / V(mu_i)``.

Covariance types (``n`` rows with a positive weight, ``p`` coefficients, intercept included):

``"nonrobust"``
    ``phi H^-1`` with ``phi = 1`` for the binomial and Poisson families and
    ``phi = X2 / (n - p)`` otherwise (least squares).
``"HC0"``
    ``H^-1 B H^-1`` (Huber-White sandwich).
``"HC1"``
    ``HC0 * n / (n - p)``. statsmodels' GLM gives its HC0 for ``cov_type="HC1"`` (no
    correction); this is the usual HC1 (statsmodels' OLS, Stata's ``robust``).
``"cluster"``
    ``c H^-1 B H^-1`` with ``B`` summed per cluster and ``c = G / (G - 1) * (n - 1) / (n - p)``
    for ``G`` clusters: the CRV1 correction, statsmodels' default for ``cov_type="cluster"``.

Sample weights are variance ("analytic") weights here, statsmodels' ``var_weights``: the
weight multiplies each row's log-likelihood and score, the residual degrees of freedom are
``n - p`` with ``n`` the rows (not the weights' sum), and the HC meat has ``s_i^2``. A row
with weight zero is dropped (not counted in ``n`` nor in ``G``). This is not the meaning of
``freq_weights`` (a weight of 2 as a row written twice), for which ``n`` would be ``S``.

With an L2 penalty the matrices use the penalised Hessian: ``phi H^-1`` is then the
inverse of the penalised observed information (the Bayesian posterior covariance of a
Gaussian prior with precision ``S l2``), and the sandwich is that of the penalised
estimating equation; neither accounts for the penalty's bias. Use ``l2=0`` for the classical
(statsmodels) covariances. P-values and intervals use the normal distribution.

The ``multinomial`` model (``K`` classes, ``d x K`` coefficients ``X`` taken row by row) has
row scores ``g_i = s_i a_i kron (p_i - y_i)`` and the ``dK x dK`` Hessian
``sum_i s_i a_i a_i^T kron (diag(p_i) - p_i p_i^T) + S l2 P``, both summed in the same pass as
``K (K + 1) / 2`` Gram matrices. Softmax does not change when one vector is added to every
column of ``X``; the likelihood therefore determines only differences between classes:

* ``l2 = 0`` leaves that common vector free and the Hessian singular: refused
  (:func:`check_identified`);
* with ``l2 > 0`` the penalty fixes it for the penalised rows: the covariance is the
  penalised one above, and the ``"nonrobust"`` variance of a single coefficient includes a
  term ``1 / (K S l2)`` from the common direction, which only the penalty informs (large for
  a small ``l2``; the sandwiches have none). Differences between classes do not have it:
  :meth:`Inference.class_contrasts` gives ``X[:, k] - X[:, 0]`` with ``L C L^T``,
  statsmodels ``MNLogit``'s parameters, and with a small ``l2`` its covariances;
* the unpenalised intercept row is reported centred (its entries sum to zero, the same
  probabilities) with the covariance on that subspace (:func:`free_basis`).

``p`` in the degrees of freedom (HC1, the cluster correction) is ``(K - 1)`` a row of ``X``,
the parameters of the contrasts.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from scipy.linalg import block_diag

from dsketch.config import refuses_moved, streaming_cluster
from dsketch.errors import DSketchError, InferenceError
from dsketch.solvers.inference_result import Inference

COV_TYPES = ("nonrobust", "HC0", "HC1", "cluster")
INTERCEPT_NAME = "intercept"


def check_cov_type(cov_type: str, groups: str | None = None) -> str:
    """The canonical spelling of ``cov_type`` (case-insensitive); checks ``groups`` goes
    with ``"cluster"`` and only with it.

    Raises
    ------
    InferenceError
        Unknown type, ``cluster`` without ``groups`` or ``groups`` with another type.
    """
    names = {c.lower(): c for c in COV_TYPES}
    canon = names.get(str(cov_type).lower())
    if canon is None:
        raise InferenceError(f"unknown cov_type {cov_type!r}; valid: {', '.join(COV_TYPES)}")
    if canon == "cluster" and not groups:
        raise InferenceError("cov_type 'cluster' needs groups: the name of a row-aligned integer member of the store")
    if canon != "cluster" and groups:
        raise InferenceError(f"groups={groups!r} is only used with cov_type 'cluster'; got cov_type {canon!r}")
    return canon


def check_groups(spec: Any, groups: str) -> None:
    """Raise :class:`InferenceError` unless ``groups`` is a 1-D integer row-aligned member."""
    from dsketch.store.problem import open_group

    if groups not in spec.members:
        raise InferenceError(
            f"groups member {groups!r} is not in store {spec.path!r} (row-aligned members: {list(spec.members)})"
        )
    arr = open_group(spec.path)[groups]
    if np.dtype(arr.dtype).kind not in "iu" or len(arr.shape) != 1:
        raise InferenceError(
            f"groups member {groups!r} of {spec.path!r} must be a 1-D integer array of cluster ids; it has "
            f"dtype {arr.dtype} and shape {tuple(arr.shape)}"
        )


def glm_for(result: Any) -> tuple[Any, bool]:
    """The (unbound) GLM of a fit result, with its family's parameters (Tweedie's power,
    the negative binomial's theta) and its intercept, and whether it has one."""
    from dsketch.models.glm import _GLM
    from dsketch.predict import model_from_info

    info = dict(result.info)
    name = info.get("model")
    try:
        model = model_from_info(info)
    except DSketchError:
        model = None
    if not isinstance(model, _GLM):
        raise InferenceError(
            f"standard errors are available for the GLMs (logistic, multinomial, poisson, least-squares, gamma, "
            f"inverse-gaussian, tweedie, negative-binomial, glm); this result is of model {name!r}"
        )
    if float(info.get("l1", 0.0) or 0.0) > 0.0:
        raise InferenceError(
            f"the fit has an L1 penalty (l1 = {info['l1']!r}): Wald standard errors of a lasso or elastic-net "
            "fit are not valid (the zeroed coefficients have none); refit without l1 for inference"
        )
    return model, bool(info.get("fit_intercept", False))


def check_identified(model: Any, n_rows: int) -> None:
    """Refuse a multinomial model none of whose ``n_rows`` coefficient rows is penalised.

    Raises
    ------
    InferenceError
        Adding one vector to every class's coefficients changes no probability: without a
        penalty on some row the Hessian is singular.
    """
    if model.l2 == 0.0 or model.n_unpenalized >= n_rows:
        raise InferenceError(
            "a multinomial fit without an L2 penalty on its coefficients (l2 = 0) is not identified: adding the "
            "same vector to every "
            "class's coefficients changes no probability, so the Hessian is singular and has no inverse. Refit "
            "with a small l2 > 0 (such as 1e-6: the covariance is then the penalised fit's) and read the class "
            "contrasts, Inference.class_contrasts() (statsmodels MNLogit's parameters), or fit K - 1 classes "
            "against a reference class"
        )


def free_basis(model: Any, n_rows: int) -> np.ndarray | None:
    """Orthonormal columns spanning the multinomial coefficients (``n_rows x K``, row by row)
    whose unpenalised rows (the intercepts) sum to zero over the classes; None when every
    row is penalised. The likelihood does not change along a common shift of such a row
    and nothing else fixes it, so the covariance is taken on this subspace."""
    k, u = model.n_outputs, model.n_unpenalized
    if u == 0:
        return None
    centred = np.linalg.svd(np.ones((1, k)))[2][1:].T  # K x (K - 1), orthogonal to the ones
    return block_diag(*([np.eye(k)] * (n_rows - u) + [centred] * u))


#: What else makes a multinomial Hessian singular (added to the error's message).
MULTINOMIAL_SINGULAR = ("; for a multinomial fit also an l2 so small that the common direction of the "
                        "classes, whose curvature is the penalty's alone, is lost in rounding: refit with a "
                        "larger l2 (1e-8 is ample)")


def _invert(H: np.ndarray, basis: np.ndarray | None = None, hint: str = "") -> np.ndarray:
    """``H^-1``, or with ``basis`` (orthonormal columns ``Q``) ``Q (Q^T H Q)^-1 Q^T``, the
    inverse on that subspace; ``hint`` extends the message of a singular ``H``."""
    if basis is None:
        return _invert_scaled(H, hint)
    return basis @ _invert_scaled(basis.T @ H @ basis, hint) @ basis.T


def _invert_scaled(H: np.ndarray, hint: str = "") -> np.ndarray:
    """``H^-1`` through the unit-diagonal scaling of ``H`` (so that columns of very different
    scales are not mistaken for collinear ones)."""
    diag = np.diag(H)
    C = None
    if np.all(np.isfinite(H)) and np.all(diag > 0.0):
        r = 1.0 / np.sqrt(diag)
        C = H * np.outer(r, r)
    if C is None or np.linalg.cond(C) > 1e12:
        raise InferenceError(
            "the Hessian at the fitted coefficients is singular (collinear or constant columns, a column "
            f"that duplicates the intercept, or an all-zero column); drop such columns or fit with l2 > 0{hint}"
        )
    Hi = np.linalg.inv(C) * np.outer(r, r)
    return 0.5 * (Hi + Hi.T)


def cov_from_sums(sums: dict[str, Any], model: Any, x: np.ndarray, cov_type: str, basis: np.ndarray | None = None,
                  n_params: int | None = None) -> tuple[np.ndarray, float, int | None]:
    """``(covariance, dispersion, clusters)`` from the summed pieces of one inference pass;
    with ``basis`` the Hessian is inverted on its columns' subspace (:func:`free_basis`), and
    ``n_params`` (default ``x.size``) is ``p`` of the degrees of freedom."""
    p, n = (x.size if n_params is None else n_params), int(sums["n"])
    if n - p <= 0:
        raise InferenceError(f"{n} rows with positive weight for {p} coefficients: no residual degrees of freedom")
    if not all(np.all(np.isfinite(sums[k])) for k in ("hess", "meat", "pearson")):
        raise InferenceError(
            "the likelihood's derivatives overflow at these coefficients (non-finite Hessian or scores); "
            "check that the result belongs to this store"
        )
    H = np.asarray(sums["hess"], dtype=np.float64) + float(sums["s"]) * np.diag(model.penalty(x)[2])
    Hi = _invert(H, basis, MULTINOMIAL_SINGULAR if getattr(model, "n_classes", None) else "")
    scale = 1.0 if model.fixed_dispersion else float(sums["pearson"]) / (n - p)
    if cov_type == "nonrobust":  # the expected information (equal to H for canonical links)
        if not model.canonical:
            Hi = _invert(np.asarray(sums["fisher"], dtype=np.float64)
                         + float(sums["s"]) * np.diag(model.penalty(x)[2]))
        return scale * Hi, scale, None
    if cov_type in ("HC0", "HC1"):
        cov = Hi @ np.asarray(sums["meat"]) @ Hi
        return (cov * n / (n - p) if cov_type == "HC1" else cov), scale, None
    G = np.asarray(sums["group_scores"])
    n_groups = G.shape[0]
    if n_groups < 2:
        raise InferenceError(f"cluster-robust covariance needs at least 2 clusters; the groups member has {n_groups}")
    corr = n_groups / (n_groups - 1.0) * (n - 1.0) / (n - p)
    return corr * (Hi @ (G.T @ G) @ Hi), scale, n_groups


def _coefficients(result: Any, spec: Any, model: Any, intercept: bool,
                  k: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The fit's coefficients checked against the store (``K`` a column of ``A``, intercept
    included), and for a multinomial fit the :func:`free_basis` with the coefficients on it
    (its unpenalised rows centred over the classes: the same probabilities)."""
    x = np.asarray(result.x, dtype=np.float64)
    if x.shape != (spec.n_features * k,):
        classes = f" for each of {k} classes" if k > 1 else ""
        raise InferenceError(
            f"the result has {x.size} coefficients but store {spec.path!r} gives {spec.n_features}{classes} "
            f"(intercept {'included' if intercept else 'not fitted'}): pass the store the model was fitted to"
        )
    if k == 1:
        return x, None
    check_identified(model, spec.n_features)
    basis = free_basis(model, spec.n_features)
    return (x, None) if basis is None else (basis @ (basis.T @ x), basis)


def _coef_names(d: int, feature_names: list[str] | None, intercept: bool, k: int) -> list[str]:
    """One name a coefficient: the columns' (default ``x0, x1, ...``), then ``"intercept"``;
    ``"name:class"`` for each of ``k > 1`` classes, row by row."""
    names = list(feature_names) if feature_names is not None else [f"x{j}" for j in range(d)]
    if len(names) != d:
        raise InferenceError(f"feature_names has {len(names)} names for {d} columns")
    names = names + [INTERCEPT_NAME] if intercept else names
    return names if k == 1 else [f"{name}:{c}" for name in names for c in range(k)]


@refuses_moved
def covariance(
    result: Any,
    data: str | os.PathLike[str] | Any = None,
    *,
    cov_type: str = "nonrobust",
    groups: str | None = None,
    alpha: float = 0.05,
    feature_names: list[str] | None = None,
    cluster: Any = None,
    attach: bool = True,
) -> Inference:
    """Standard errors of a GLM fit: one exact, streamed pass over the store (module docstring).

    Parameters
    ----------
    result : FitResult
        A successful fit of a GLM: ``logistic``, ``multinomial`` (with ``l2 > 0``: see the
        module docstring), ``poisson``, ``least-squares``, ... (with or without
        ``fit_intercept``: the column of ones is appended again as the blocks are read).
    data : str, path or ProblemSpec, optional
        The store the model was fitted to (default: the path recorded in ``result.info``).
    cov_type : {"nonrobust", "HC0", "HC1", "cluster"}
    groups : str, optional
        With ``"cluster"``: a row-aligned integer member of the store with each row's
        cluster id (clusters may span row blocks).
    alpha : float, default 0.05
        Default level of the intervals.
    feature_names : list of str, optional
        Names of the store's columns (default ``x0, x1, ...``); the intercept is
        ``"intercept"``. A multinomial coefficient is ``"name:k"`` for class ``k``.
    cluster : Cluster, distributed.Client, str or None
        Where the pass runs and its ``block_rows``, as in :func:`dsketch.fit` (blocks are
        always streamed: ``persist``, ``fused``, ``bounds`` and ``memory_check`` are
        refused).
    attach : bool, default True
        Also store the result on ``result.inference`` (kept by :func:`dsketch.save_result`;
        ``result.summary()`` prints it).

    Returns
    -------
    Inference

    Raises
    ------
    InferenceError
        Unknown ``cov_type``, a missing or non-integer ``groups`` member, a model that is not
        a GLM, a fit that did not succeed, coefficients that do not match the store, a
        multinomial fit without a penalty, or a singular Hessian.
    RemovedOptionError
        ``client=``, ``scheduler=``, ``n_workers=`` or ``block_rows=``: they are
        :class:`dsketch.Cluster`'s now.
    """
    from dsketch.session import client_for
    from dsketch.engine.core import Engine
    from dsketch.store import ProblemSpec, open_problem

    clu = streaming_cluster(cluster, "covariance")
    cov_type = check_cov_type(cov_type, groups)
    model, intercept = glm_for(result)
    if not result.success:
        raise InferenceError(
            f"the fit did not succeed ({result.message}); standard errors at a point that is not the optimum "
            "are meaningless: refit (more iterations, a looser tol) first"
        )
    if data is None:
        data = result.info.get("data")
        if data is None:
            raise InferenceError("the result does not record its store: pass data=")
    spec = data if isinstance(data, ProblemSpec) else open_problem(os.fspath(data))
    model = model.bind(spec)
    if groups is not None:
        check_groups(spec, groups)
    if intercept:
        model, spec = model.with_intercept(), spec.with_intercept()
    k = int(getattr(model, "n_classes", None) or 1)
    x, basis = _coefficients(result, spec, model, intercept, k)
    names = _coef_names(spec.stored_features, feature_names, intercept, k)
    members = (*model.row_members, *((groups,) if groups is not None else ()))
    with client_for(clu.client, clu.address, clu.n_workers, spec, clu.block_rows) as c:
        engine = Engine(spec, c, block_rows=clu.block_rows, persist=False, members=members)
        try:
            sums = engine.inference_sums(model, x, groups)
        finally:
            engine.close()
    cov, scale, n_groups = cov_from_sums(sums, model, x, cov_type, basis,
                                         spec.n_features * (k - 1) if k > 1 else None)
    inf = Inference(x, cov, cov_type, names, nobs=int(sums["n"]), scale=scale, n_groups=n_groups, groups=groups,
                    model=model.name, alpha=alpha, n_classes=k if k > 1 else None)
    if attach:
        result.attach_inference(inf)
    return inf
