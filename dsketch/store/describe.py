"""Summaries of problem stores (``dsketch info``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr

from dsketch.store.blocks import row_blocks
from dsketch.store.problem import open_group
from dsketch.store.spec import ProblemSpec


def _target_summary(b: zarr.Array, step: int) -> dict[str, Any]:
    n = int(b.shape[0])
    lo, hi, total, total2, bad = np.inf, -np.inf, 0.0, 0.0, 0
    binary = nonneg_int = nonneg = True
    for r0, r1 in row_blocks(n, step):
        v = np.asarray(b[r0:r1], dtype=np.float64)
        fin = np.isfinite(v)
        bad += int(v.size - fin.sum())
        v = v[fin]
        if v.size:
            lo, hi = min(lo, float(v.min())), max(hi, float(v.max()))
            total, total2 = total + float(v.sum()), total2 + float(v @ v)
            nonneg = nonneg and bool(v.min() >= 0)
            binary = binary and bool(np.isin(v, (0.0, 1.0)).all())
            nonneg_int = nonneg_int and nonneg and bool((v == np.floor(v)).all())
    m = n - bad
    mean = total / m if m else float("nan")
    return {
        "min": lo, "max": hi, "mean": mean,
        "std": float(np.sqrt(max(total2 / m - mean**2, 0.0))) if m else float("nan"),
        "non_finite": bad, "binary": binary and m > 0, "nonnegative_integer": nonneg_int and m > 0,
        "nonnegative": nonneg and m > 0, "sums_to_one": bool(nonneg and m > 0 and abs(total - 1.0) <= 1e-6),
    }


def _short(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _short(v) for k, v in value.items()}
    if isinstance(value, list) and len(value) > 8:
        return f"<list of {len(value)}>"
    return value


#: The suggested models that read sample weights and offsets.
GLM_SUGGESTIONS = ("logistic", "multinomial", "poisson", "least-squares")


def _reading_members(models: list[str], spec: ProblemSpec, g: Any, target: dict[str, Any]) -> list[str]:
    """The suggestions that use the store's ``sample_weight`` and ``offset``: the GLMs; for
    an ``(n, K)`` offset the multinomial model alone (integer labels), for a vector of
    offsets the others."""
    if "offset" in spec.members and len(g["offset"].shape) == 2:
        return ["multinomial"] if target["nonnegative_integer"] else []
    if "offset" in spec.members:
        return [m for m in models if m in GLM_SUGGESTIONS and m != "multinomial"]
    if "sample_weight" in spec.members:
        return [m for m in models if m in GLM_SUGGESTIONS]
    return models


def describe(spec: ProblemSpec) -> dict[str, Any]:
    """Summarise a problem store (for ``dsketch info``).

    Reads the metadata and streams ``b`` once (``A`` is not read).

    Parameters
    ----------
    spec : ProblemSpec

    Returns
    -------
    dict
        ``path``, ``shape``, ``nnz``, ``density``, ``dtype``, ``encoding`` ("dense" or
        "csr"), ``index_dtype``, ``chunks`` (per member), ``has_w``, ``extra_members``,
        ``target`` (min / max / mean / std, count of non-finite values, and the flags
        ``binary``, ``nonnegative_integer``, ``nonnegative``, ``sums_to_one``),
        ``models`` and ``metadata`` (attributes, long lists abbreviated).

    Notes
    -----
    ``models`` is a heuristic on ``b`` alone, most specific first: "logistic" when ``b``
    is binary {0, 1}; "multinomial" first when ``b`` holds the codes of a categorical column
    of more than two categories (``convert --obs-column``), and after "poisson" for other
    non-negative integers (class labels or counts); "poisson" when it holds non-negative integers; "softmax" first of the
    rest when ``b`` is non-negative and sums to 1 (a distribution over rows); then
    "least-squares", "softmax", "exp", "cosh", "sinh", which accept any finite real
    targets. It is empty when ``b`` holds NaN or infinities. A store with sample weights or
    offsets keeps the GLMs only (the others refuse them); an ``(n, K)`` ``offset`` keeps
    "multinomial" alone (offsets one a class), a vector of offsets all but it.
    """
    g = open_group(spec.path)
    chunks: dict[str, list[int]] = {}
    if spec.sparse:
        for k in ("data", "indices", "indptr"):
            chunks[f"A/{k}"] = list(g["A"][k].chunks)
    else:
        chunks["A"] = list(g["A"].chunks)
    for name in (*(("b",) if spec.has_b else ()), *(("w",) if spec.has_w else ()), *spec.members):
        chunks[name] = list(g[name].chunks)
    models: list[str] = []
    if not spec.has_b:
        # a paired store: the m targets are global/b, the rows of A2 are A2T
        target = _target_summary(g["global"]["b"], 2**20) if "b" in spec.global_members else {}
        if "A2T" in spec.members and "b" in spec.global_members:
            models = ["two-layer", "softmax-relu (reading C)"]
    else:
        target = _target_summary(g["b"], max(spec.a_chunk_rows, 2**20 // spec.a_chunk_rows * spec.a_chunk_rows))
    if spec.has_b and target["non_finite"] == 0:
        categorical = len(spec.metadata.get("dsketch", {}).get("target_categories", ())) > 2
        models += ["multinomial"] if categorical else []
        models += ["logistic"] if target["binary"] else []
        models += ["poisson"] if target["nonnegative_integer"] else []
        many = target["nonnegative_integer"] and not target["binary"] and not categorical
        models += ["multinomial"] if many else []
        models += ["softmax"] if target["sums_to_one"] else []
        models += [m for m in ("least-squares", "softmax", "exp", "cosh", "sinh") if m not in models]
        models = _reading_members(models, spec, g, target)
    return {
        "path": spec.path,
        "shape": [spec.n_samples, spec.n_features],
        "nnz": spec.nnz,
        "density": spec.density,
        "dtype": spec.dtype,
        "encoding": "csr" if spec.sparse else "dense",
        "index_dtype": spec.index_dtype,
        "chunks": chunks,
        "has_w": spec.has_w,
        "extra_members": list(spec.members),
        "global_members": list(spec.global_members),
        "target": target,
        "models": models,
        "metadata": _short(spec.metadata),
    }
