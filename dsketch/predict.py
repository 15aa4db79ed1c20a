"""Predictions of a fitted GLM on a problem store, in memory or streamed to a Zarr store.

:func:`predict` computes, for every row of a problem store, the linear predictor
``eta = A x (+ intercept) + offset`` and the mean ``mu = g^-1(eta)`` of the fitted model
(the probability of label 1 for logistic regression, the rate for Poisson, ``eta`` for
least squares); for the ``multinomial`` model the ``n x K`` scores ``E = A X (+ intercepts)
+ offset`` and the class probabilities ``softmax(E)`` row by row. The row blocks are mapped
over the Dask cluster like the passes of a fit. With ``out`` each block's task writes its rows into a new Zarr group, built under a
temporary name and swapped in at the end (:mod:`dsketch.store._atomic`).
"""

from __future__ import annotations

import functools
import inspect
import os
from typing import Any

import numpy as np
import zarr
from distributed import Client, wait

from dsketch.session import client_for
from dsketch.config import Cluster, refuses_moved, streaming_cluster
from dsketch.engine import tasks
from dsketch.engine.core import auto_block_rows
from dsketch.errors import InvalidParameterError, PredictionError, StoreFormatError, StoreNotFoundError
from dsketch.models import MODELS, Model, get_model
from dsketch.solvers.result import FitResult, load_result
from dsketch.store import ProblemSpec, _atomic, open_problem, outputs
from dsketch.store.blocks import row_blocks

__all__ = ["PREDICTION_VERSION", "describe_prediction", "model_from_info", "predict"]

#: Version of the layout of a prediction store (its ``dsketch_prediction`` attribute).
PREDICTION_VERSION = 1
#: Row-aligned member of the data store added to ``eta`` when present.
OFFSET = "offset"


def model_from_info(info: dict[str, Any]) -> Model:
    """Rebuild the fitted model from a result's ``info`` (the model's ``describe()`` and the
    fit's settings): its registry name, the constructor parameters found in ``info``, and
    the intercept of ``fit_intercept``.

    Raises
    ------
    PredictionError
        ``info`` names no model, or one that is not in the registry (e.g. ``ggn-score``).
    """
    name = info.get("model")
    if not isinstance(name, str):
        raise PredictionError("the result records no model name (info['model']); it was not written by dsketch.fit")
    if name not in MODELS:
        raise PredictionError(
            f"the result's model {name!r} cannot make predictions here; predict takes the GLMs "
            "(logistic, multinomial, poisson, least-squares, gamma, tweedie, ...)"
        )
    factory = MODELS[name]
    target = factory.func if isinstance(factory, functools.partial) else factory
    fixed = factory.keywords if isinstance(factory, functools.partial) else {}
    accepted = set(inspect.signature(target).parameters) - set(fixed)
    params = {k: info[k] for k in accepted if k in info}
    intercept = bool(info.get("fit_intercept", False))
    if intercept and "n_unpenalized" in params:  # describe() counts the intercept in it
        params["n_unpenalized"] = int(params["n_unpenalized"]) - 1
    try:
        model = get_model(name, **params)
    except (TypeError, ValueError) as exc:
        raise PredictionError(f"cannot rebuild the result's model {name!r} from {params}: {exc}") from None
    if intercept and hasattr(model, "with_intercept"):
        model = model.with_intercept()
    return model


def _open_result(result: FitResult | str | os.PathLike[str]) -> tuple[FitResult, str | None]:
    if isinstance(result, FitResult):
        return result, None
    path = _atomic.absolute(result)
    if outputs.path_kind(path) == outputs.MISSING:
        raise StoreNotFoundError(f"no result store at {path!r}; write one with 'dsketch fit --out' or save_result")
    try:
        res = load_result(path)
    except KeyError as exc:
        raise StoreFormatError(f"result store {path!r} has no member {exc}; it is not a complete dsketch result") from None
    return res, path


def _layout(spec: ProblemSpec, block_rows: int | None) -> tuple[int, list[tuple[int, int]]]:
    """Rows per output chunk and the row blocks: whole chunks per block, so no two tasks
    ever write one chunk."""
    chunk = max(1, min(int(spec.a_chunk_rows or spec.n_samples), spec.n_samples))
    if block_rows is None:
        rows = auto_block_rows(spec)
    else:
        if isinstance(block_rows, bool) or int(block_rows) != block_rows or block_rows < 1:
            raise InvalidParameterError(f"block_rows must be a positive integer; got {block_rows!r}")
        rows = int(block_rows)
    rows = -(-rows // chunk) * chunk  # rounded up to whole output chunks
    return chunk, row_blocks(spec.n_samples, rows)


@refuses_moved
def predict(
    result: FitResult | str | os.PathLike[str],
    data: str | os.PathLike[str] | ProblemSpec,
    out: str | os.PathLike[str] | None = None,
    *,
    cluster: Cluster | Client | str | None = None,
    overwrite: bool = False,
) -> tuple[np.ndarray, np.ndarray] | str:
    """Linear predictor and mean of a fitted GLM for every row of a problem store.

    Parameters
    ----------
    result : FitResult, str or path
        A result of :func:`dsketch.fit` with a GLM (logistic, multinomial, poisson,
        least-squares, ...), or its result store (``dsketch fit --out``,
        :func:`dsketch.save_result`). For ``multinomial`` ``eta`` is the ``(n, K)`` scores
        ``A X (+ intercepts) (+ offset)`` and ``mean`` the class probabilities, their softmax.
    data : str, path or ProblemSpec
        A problem store, or an in-memory problem (:func:`dsketch.in_memory`), with the same
        columns as the one fitted (without the intercept
        column, which is appended as the blocks are read when the fit had one). Its
        targets ``b`` are not used, but the store layer needs a store to have them (any
        values will do, zeros for example); ``w`` and ``sample_weight`` are not used either.
        When the store has an ``offset`` member it is added to ``eta``, whether or not the
        fit had offsets; without one the offset is 0 (also for a model fitted with offsets:
        give the new rows theirs in the store to include them). It has the shape of
        ``eta``: ``(n,)``, or ``(n, K)`` for ``multinomial``.
    out : str or path, optional
        Write a prediction store there instead of returning arrays: a Zarr group with the
        row-aligned float64 arrays ``eta`` and ``mean`` (chunked by rows like the data
        store) and an attribute ``dsketch_prediction`` saying where it comes from. Each
        block's task writes its own rows; the group is built under a temporary name and
        swapped in when every block is written, and removed if any fails. ``out`` may
        replace only an earlier prediction store (``overwrite=True``), never the data
        store, the result store or any other path.
    cluster : Cluster, distributed.Client, str or None
        Where the pass runs, as in :func:`dsketch.fit` (None: ``$DSKETCH_SCHEDULER`` when set,
        else threads of this process; ``Cluster(n_workers=k)`` starts k worker processes). Its ``block_rows`` are the rows per task (default
        :func:`~dsketch.engine.core.auto_block_rows`), rounded up to a whole number of the
        data store's row chunks, which are also the chunks of the output; the iteration's
        options (``persist``, ``fused``, ``bounds``, ``memory_check``) are refused.
    overwrite : bool
        Replace an earlier prediction store at ``out``.

    Returns
    -------
    (eta, mean) : tuple of ndarray of shape (n_samples,), or (n_samples, K) for multinomial
        Without ``out`` (hold both in memory: for small data).
    str
        With ``out``: the real path of the prediction store written.

    Raises
    ------
    PredictionError
        The result's model is not a GLM, or the store's column count is not the fit's.
    StoreFormatError
        The store's ``offset`` does not have the shape of ``eta``.
    StoreExistsError, OutputPathError
        ``out`` cannot be written (checked before any work).
    RemovedOptionError
        ``client=``, ``scheduler=``, ``n_workers=`` or ``block_rows=``: they are
        :class:`dsketch.Cluster`'s now.
    """
    clu = streaming_cluster(cluster, "predict")
    res, result_path = _open_result(result)
    info, x, model = _fitted_glm(res)
    spec = data if isinstance(data, ProblemSpec) else open_problem(os.fspath(data))
    fit_intercept = _check_columns(spec, x.size // _outputs(model), info)
    target = None
    if out is not None:
        others = {"the data store": spec.path, "the result store": result_path}
        target = outputs.check_output(out, outputs.PREDICTION, overwrite=overwrite, others=others, option="the output")
    chunk, bounds = _layout(spec, clu.block_rows)
    read = spec.with_intercept() if fit_intercept else spec
    members = (OFFSET,) if OFFSET in spec.members else ()
    sources = [tasks.Source(read, r0, r1, members) for r0, r1 in bounds]

    with client_for(clu.client, clu.address, clu.n_workers, spec, bounds=bounds) as c:
        xs = c.submit(tasks.identity, x, pure=False)
        if target is None:
            futs = [c.submit(tasks.predict_block, model, src, xs, None, pure=False) for src in sources]
            parts = _gather_all(c, futs)
            return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
        attrs = {
            "kind": "prediction",
            "version": PREDICTION_VERSION,
            "result": result_path,
            "result_data": info.get("data"),
            "data": spec.path,
            "model": {k: info[k] for k in ("model", *_model_keys(info))},
            "fit_intercept": fit_intercept,
            "n_samples": spec.n_samples,
            "n_features": spec.n_features,
            **({"n_classes": _outputs(model)} if _outputs(model) > 1 else {}),
            "offset": bool(members),
            "chunk_rows": chunk,
            "block_rows": bounds[0][1] - bounds[0][0],
            "arrays": _arrays_doc(model),
        }
        _write_prediction(c, target, attrs, [(model, src, xs) for src in sources], overwrite=overwrite)
    return target


def _arrays_doc(model: Model) -> dict[str, Any]:
    """What the prediction store's arrays hold (its attribute ``arrays``)."""
    k = _outputs(model)
    if k == 1:
        return {"eta": "A x (+ intercept) (+ offset)", "mean": "the model's inverse link of eta"}
    return {"eta": f"n x {k} class scores A X (+ intercepts) (+ offset)",
            "mean": f"n x {k} class probabilities, softmax(eta) row by row"}


def _outputs(model: Model) -> int:
    """Columns of ``eta``: ``K`` for a multi-output model (multinomial), else 1."""
    return int(getattr(model, "n_classes", None) or 1)


def _fitted_glm(res: FitResult) -> tuple[dict[str, Any], np.ndarray, Model]:
    """The info, coefficients and model of a GLM's result (errors for anything else)."""
    info = dict(res.info or {})
    if getattr(res, "x", None) is None:
        raise StoreFormatError("the result has no coefficients x; pass the result of dsketch.fit")
    model = model_from_info(info)
    if not callable(getattr(model, "mean", None)):
        raise PredictionError(
            f"the result's model {info.get('model')!r} has no mean function: predict takes the GLMs "
            "(logistic, multinomial, poisson, least-squares, ...)"
        )
    return info, np.asarray(res.x, dtype=np.float64).ravel(), model


def _check_columns(spec: ProblemSpec, rows: int, info: dict[str, Any]) -> bool:
    """Whether the fit had an intercept; an error when the store's columns are not the fit's
    (``rows`` coefficients a class: a multinomial fit's ``x.size / K``)."""
    if spec.intercept:
        raise InvalidParameterError("pass the problem store itself, not its with_intercept() view")
    fit_intercept = bool(info.get("fit_intercept", False))
    n_coef = rows - int(fit_intercept)
    if spec.n_features != n_coef:
        extra = " plus the intercept" if fit_intercept else ""
        raise PredictionError(
            f"store {spec.path!r} has {spec.n_features} columns but the result has {n_coef} coefficients"
            f"{extra}; predict on a store with the columns of the fitted one"
        )
    return fit_intercept


def _write_prediction(client: Any, target: str, attrs: dict[str, Any], blocks: list[tuple[Any, ...]], *,
                      overwrite: bool) -> None:
    """Write the prediction store at ``target``: built under a temporary name, one task a
    block writing its own rows, swapped in when all are written, removed if any fails."""
    n_samples, chunk = attrs["n_samples"], attrs["chunk_rows"]
    tmp = _atomic.temp_sibling(target)
    try:
        g = zarr.open_group(tmp, mode="w")
        g.attrs.update({outputs.PREDICTION_ATTR: attrs})
        tail = (attrs["n_classes"],) if attrs.get("n_classes") else ()
        for name in ("eta", "mean"):
            g.create_array(name, shape=(n_samples, *tail), chunks=(chunk, *tail), dtype="f8")
        futs = [client.submit(tasks.predict_block, model, src, xs, tmp, pure=False) for model, src, xs in blocks]
        _gather_all(client, futs)
        _atomic.publish(tmp, target, overwrite=overwrite, kind=outputs.PREDICTION)
    except BaseException:
        _atomic.discard(tmp)
        raise


def _model_keys(info: dict[str, Any]) -> tuple[str, ...]:
    """The keys of ``info`` that the model's ``describe()`` wrote (parameters, members)."""
    keys = ["l2", "n_unpenalized", "n_classes", "fit_intercept", "sample_weight", "offset"]
    return tuple(k for k in keys if k in info)


def _gather_all(client: Client, futs: list[Any]) -> list[Any]:
    """Every block's result, in order; on a failure, wait until no task runs any more (none
    is left writing into the temporary store) and raise the first block's error."""
    try:
        return list(client.gather(futs))
    except BaseException:
        try:
            wait(futs)
        except Exception:  # noqa: BLE001 - the original error is the one to report
            pass
        raise


def describe_prediction(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Summarise a prediction store (for ``dsketch info``): its rows, where it comes from,
    the model, and the range of ``mean``.

    Raises
    ------
    StoreFormatError
        ``path`` is not a prediction store.
    """
    real = _atomic.absolute(path)
    if outputs.path_kind(real) != outputs.PREDICTION:
        raise StoreFormatError(f"{real!r} is not a prediction store (written by dsketch predict)")
    g = zarr.open_group(real, mode="r")
    meta = dict(g.attrs[outputs.PREDICTION_ATTR])
    out: dict[str, Any] = {"path": real, "kind": "prediction", "rows": int(g["eta"].shape[0])}
    for key in ("result", "data", "model", "fit_intercept", "offset", "n_classes", "chunk_rows"):
        out[key] = meta.get(key)
    out["arrays"] = sorted(g.array_keys())
    return out

