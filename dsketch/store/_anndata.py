"""Reading AnnData ``.zarr`` stores with zarr alone (the anndata package is not needed).

The layout read here is AnnData's on-disk encoding (zarr v2 or v3): the root group has
``encoding-type: "anndata"``; ``X`` and ``layers/<name>`` are dense arrays or
``csr_matrix`` groups (``data``, ``indices``, ``indptr``, attribute ``shape``); ``obs`` is a
``dataframe`` group whose attribute ``column-order`` lists its columns, each either an
array (numeric, bool or ``string-array``), a ``categorical`` group (``codes``,
``categories``) or a ``nullable-integer`` / ``nullable-boolean`` group (``values``,
``mask``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import zarr

from dsketch.errors import (
    DTypeError,
    EncodingError,
    NonFiniteError,
    ShapeMismatchError,
    StoreFormatError,
    StoreNotFoundError,
)
from dsketch.store.problem import get_member, member_names, open_group
from dsketch.store.spec import CSR_ENCODING, check_index_dtype, check_value_dtype


@dataclass(frozen=True)
class ObsColumn:
    """A lazily read ``obs`` column as float64; slicing checks for missing values.

    Attributes
    ----------
    where : str
        The column, for messages.
    values : zarr.Array
        Numbers, bools, or categorical codes.
    mask : zarr.Array or None
        Nullable columns: True where the value is missing.
    codes : bool
        Categorical codes (-1 means missing).
    """

    where: str
    values: Any
    mask: Any = None
    codes: bool = False

    def __getitem__(self, rows: slice) -> np.ndarray:
        start = rows.start or 0
        v = np.asarray(self.values[rows])
        missing = (v < 0) if self.codes else None
        if self.mask is not None:
            missing = np.asarray(self.mask[rows], dtype=bool)
        if missing is not None and missing.any():
            row = start + int(np.flatnonzero(missing)[0])
            raise NonFiniteError(
                f"{self.where} has a missing value at row {row}; drop or impute those rows first"
            )
        return v.astype(np.float64)


@dataclass
class AnnDataSource:
    """The matrix and the target columns of an AnnData store, read in row blocks."""

    path: str
    matrix: Any  # zarr.Array (dense) or dict of CSR zarr arrays
    n_samples: int
    n_features: int
    nnz: int | None
    dtype: np.dtype[Any]
    obs_columns: list[str]
    vectors: dict[str, ObsColumn] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)

    def rows(self, r0: int, r1: int) -> np.ndarray | sp.csr_matrix:
        """Rows ``[r0, r1)`` of the matrix (CSR with sorted indices, or dense)."""
        if self.nnz is None:
            return np.asarray(self.matrix[r0:r1])
        ip = np.asarray(self.matrix["indptr"][r0 : r1 + 1], dtype=np.int64)
        lo, hi = int(ip[0]), int(ip[-1])
        A = sp.csr_matrix(
            (np.asarray(self.matrix["data"][lo:hi]), np.asarray(self.matrix["indices"][lo:hi]), ip - lo),
            shape=(r1 - r0, self.n_features),
        )
        A.sort_indices()  # AnnData does not require sorted indices; a problem store does
        return A


def _matrix(g: zarr.Group, src: str, layer: str | None) -> tuple[Any, str]:
    names = member_names(src)
    if layer is not None:
        layers = member_names(os.path.join(src, "layers")) if "layers" in names else []
        if layer not in layers:
            raise StoreNotFoundError(f"AnnData store {src!r} has no layer {layer!r}; available layers: {layers}")
        return g["layers"][layer], f"layers/{layer}"
    if "X" not in names:
        layers = member_names(os.path.join(src, "layers")) if "layers" in names else []
        raise StoreNotFoundError(
            f"AnnData store {src!r} has no X; pass layer= (--layer) one of {layers}"
        )
    return g["X"], "X"


def _csr(node: zarr.Group, src: str, where: str) -> tuple[dict[str, Any], int, int, int, np.dtype[Any]]:
    enc = node.attrs.get("encoding-type")
    if enc != CSR_ENCODING:
        fix = "re-save it as CSR (adata.X = adata.X.tocsr(); adata.write_zarr(...))" if enc == "csc_matrix" else ""
        raise EncodingError(f"AnnData store {src!r}: {where} has encoding-type {enc!r}; dsketch reads "
                            f"{CSR_ENCODING!r} or dense arrays {fix}".rstrip())
    shape = node.attrs.get("shape")
    if not (isinstance(shape, list | tuple) and len(shape) == 2):
        raise StoreFormatError(f"AnnData store {src!r}: {where} has no valid 'shape' attribute (got {shape!r})")
    n, d = int(shape[0]), int(shape[1])
    arrs = {k: get_member(node, f"AnnData store {src!r}, {where}", k) for k in ("data", "indices", "indptr")}
    dtype = check_value_dtype(src, f"{where}/data", arrs["data"].dtype)
    check_index_dtype(src, f"{where}/indices", arrs["indices"].dtype)
    if arrs["indptr"].shape != (n + 1,) or arrs["indices"].shape != arrs["data"].shape:
        raise ShapeMismatchError(
            f"AnnData store {src!r}: {where} is inconsistent (shape {shape}, indptr {arrs['indptr'].shape}, "
            f"indices {arrs['indices'].shape}, data {arrs['data'].shape})"
        )
    ends = np.asarray(arrs["indptr"][np.array([0, n])], dtype=np.int64)
    if ends[0] != 0 or ends[1] != arrs["data"].shape[0]:
        raise ShapeMismatchError(
            f"AnnData store {src!r}: {where}/indptr must run from 0 to len(data) = {arrs['data'].shape[0]}; "
            f"got {ends[0]} .. {ends[1]}"
        )
    return arrs, n, d, int(ends[1]), dtype


def _obs_column(g: zarr.Group, src: str, name: str, n: int, role: str) -> tuple[ObsColumn, dict[str, Any]]:
    names = member_names(src)
    if "obs" not in names:
        raise StoreFormatError(f"AnnData store {src!r} has no 'obs' dataframe; pass target='b.npy' instead")
    obs = g["obs"]
    index = obs.attrs.get("_index", "_index")
    columns = [c for c in obs.attrs.get("column-order", member_names(os.path.join(src, "obs"))) if c != index]
    if name not in columns:
        raise StoreNotFoundError(
            f"AnnData store {src!r} has no obs column {name!r} for the {role}; available columns: {columns}"
        )
    node = get_member(obs, f"AnnData store {src!r}, obs", name)
    where = f"AnnData store {src!r}, obs column {name!r}"
    attrs: dict[str, Any] = {"obs_column": name} if role == "targets" else {"weights_column": name}
    enc = node.attrs.get("encoding-type")
    if isinstance(node, zarr.Array):
        if np.dtype(node.dtype).kind not in "biuf":
            raise DTypeError(
                f"{where} has dtype {node.dtype} ({enc}); the {role} must be a numeric, boolean or "
                "categorical column — make it categorical (adata.obs[col].astype('category'))"
            )
        col = ObsColumn(where, node)
    elif enc == "categorical":
        categories = [str(c) for c in np.asarray(node["categories"][:]).tolist()]
        col = ObsColumn(where, node["codes"], codes=True)
        key = "target_categories" if role == "targets" else "weights_categories"
        attrs[key] = categories  # value k stands for categories[k]
    elif enc in ("nullable-integer", "nullable-boolean", "nullable-float"):
        col = ObsColumn(where, node["values"], mask=node["mask"])
    else:
        raise EncodingError(f"{where} has encoding-type {enc!r}; use a numeric or categorical column")
    if col.values.shape != (n,):
        raise ShapeMismatchError(f"{where} has shape {col.values.shape}; X has {n} rows")
    return col, attrs


def anndata_source(
    src: str, *, layer: str | None, obs_column: str | None, weights: str | None,
    columns: dict[str, str] | None = None,
) -> AnnDataSource:
    """Open an AnnData ``.zarr`` store for conversion.

    Parameters
    ----------
    src : str
        The store.
    layer : str, optional
        Read ``layers/<layer>`` instead of ``X``.
    obs_column : str, optional
        ``obs`` column for ``b``.
    weights : str, optional
        ``obs`` column for ``w`` (ignored here when it names a ``.npy`` file).
    columns : dict of str to str, optional
        Further row-aligned members (``sample_weight``, ``offset``) to read from ``obs``
        columns (entries naming a ``.npy`` file are ignored here).

    Returns
    -------
    AnnDataSource
    """
    g = open_group(src, what="AnnData store")
    enc = g.attrs.get("encoding-type")
    if enc not in (None, "anndata"):
        raise StoreFormatError(f"{src!r} has encoding-type {enc!r}; expected an AnnData store ('anndata')")
    node, where = _matrix(g, src, layer)
    if isinstance(node, zarr.Group):
        matrix, n, d, nnz, dtype = _csr(node, src, where)
    else:
        dtype = check_value_dtype(src, where, node.dtype)
        if node.ndim != 2:
            raise ShapeMismatchError(f"AnnData store {src!r}: {where} must be 2-D; got shape {node.shape}")
        matrix, (n, d), nnz = node, node.shape, None
    obs_names: list[str] = []
    if "obs" in member_names(src):
        obs = g["obs"]
        obs_names = [c for c in obs.attrs.get("column-order", []) if c != obs.attrs.get("_index")]
    source = AnnDataSource(src, matrix, int(n), int(d), nnz, dtype, obs_names)
    source.attrs["matrix"] = where
    if obs_column is not None:
        source.vectors["b"], attrs = _obs_column(g, src, obs_column, n, "targets")
        source.attrs.update(attrs)
    if weights is not None and not str(weights).endswith(".npy"):
        source.vectors["w"], attrs = _obs_column(g, src, str(weights), n, "weights")
        source.attrs.update(attrs)
    for member, column in (columns or {}).items():
        if not str(column).endswith(".npy"):
            source.vectors[member], _ = _obs_column(g, src, str(column), n, member)
            source.attrs[f"{member}_column"] = str(column)
    return source
