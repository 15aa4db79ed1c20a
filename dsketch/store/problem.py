"""Opening and validating problem stores.

A problem store is one Zarr group (v3, or v2 as written by AnnData and older tools) with

* ``A``: a dense 2-D array ``(n, d)`` chunked by rows only, or a CSR group in AnnData's
  encoding (attributes ``encoding-type: "csr_matrix"``, ``encoding-version``,
  ``shape: [n, d]``; arrays ``data``, ``indices`` (int32/int64) and ``indptr`` (``n + 1``));
* ``b``: ``(n,)`` targets; optional ``w``: ``(n,)`` row weights;
* optional further arrays whose first axis has length ``n`` (row-aligned members);
* an optional group ``global`` of arrays that are not row-aligned. The paired models
  (``two-layer``, ``softmax-relu`` reading C) keep their m-vector of targets there as
  ``global/b`` together with the row-aligned ``A2T`` (the transpose of ``A2``, chunked like
  the rows of ``A``); such stores have no row-aligned ``b``;
* group attributes with free-form JSON metadata (``{"dsketch": {...}}``).

Values may be bool (read as 0/1), integer or floating point. Nothing here knows the maths.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from typing import Any, Literal

import numpy as np
import zarr

from dsketch.errors import (
    ChunkLayoutError,
    DTypeError,
    EmptyProblemError,
    EncodingError,
    InvalidParameterError,
    ShapeMismatchError,
    StoreFormatError,
    StoreNotFoundError,
)
from dsketch.store import _fs, _identity
from dsketch.store._fs import absolute
from dsketch.store.blocks import read_block, read_slice, row_blocks
from dsketch.store.spec import (
    CSR_ENCODING,
    GLOBAL_GROUP,
    RESERVED,
    ProblemSpec,
    check_index_dtype,
    check_indptr,
    check_value_dtype,
)

#: ``check="metadata"`` reads the whole ``indptr`` only up to this many entries (128 MiB);
#: beyond, only its end points (every block read still checks its own slice).
INDPTR_SCAN_LIMIT = 2**24
#: Entries (rows x columns, or stored non-zeros) per step of ``check="full"``.
FULL_CHECK_STEP = 2**23
_ARRAY_NOT_GROUP = tuple(
    getattr(zarr.errors, name)
    for name in ("ContainsArrayError", "NodeTypeValidationError")
    if hasattr(zarr.errors, name)
)


def open_group(path: str, *, what: str = "problem store") -> zarr.Group:
    """Open an existing Zarr group read-only, with specific errors when it is not one."""
    if not _fs.exists(path):
        raise StoreNotFoundError(
            f"no {what} at {path!r}; create one with 'dsketch make-data', 'dsketch convert' or "
            "dsketch.store.write_problem"
        )
    try:
        return zarr.open_group(path, mode="r")
    except _ARRAY_NOT_GROUP:
        raise StoreFormatError(
            f"{path!r} is a Zarr array, not a group; a {what} is a Zarr group (with members 'A' "
            "and 'b' for a problem)"
        ) from None
    except Exception as exc:  # unreadable or invalid group metadata, of any kind
        raise StoreFormatError(
            f"{path!r} exists but is not a Zarr group ({type(exc).__name__}: {exc}); a {what} is "
            "a Zarr group directory (with members 'A' and 'b' for a problem)"
        ) from None


def member_names(path: str) -> list[str]:
    """Names of the Zarr nodes directly inside the group directory ``path``.

    Listed from the directory rather than with ``Group.keys()``, which in zarr 3 parses every
    member's metadata and fails outright on one it cannot represent (pickled objects).
    """
    if _fs.is_url(path):
        # one listing per member is cheap locally but a request each remotely: list the
        # entries that carry Zarr metadata in one recursive-free pass per member
        entries = [n for n in _fs.listdir(path) if not n.startswith(".")]
        v3 = "zarr.json" in entries
        markers = ("zarr.json",) if v3 else (".zgroup", ".zarray")
        out = []
        for name in entries:
            if name in ("zarr.json", ".zgroup", ".zattrs", ".zmetadata"):
                continue
            try:
                inner = set(_fs.listdir(_fs.join(path, name)))
            except (FileNotFoundError, NotADirectoryError):
                continue
            if inner & set(markers):
                out.append(name)
        return sorted(out)
    v3 = os.path.exists(os.path.join(path, "zarr.json"))
    markers = ("zarr.json",) if v3 else (".zgroup", ".zarray")
    return sorted(
        name
        for name in os.listdir(path)
        if not name.startswith(".") and any(os.path.exists(os.path.join(path, name, m)) for m in markers)
    )


def get_member(group: zarr.Group, where: str, name: str, *, names: list[str] | None = None) -> Any:
    """``group[name]`` with errors naming the store and member."""
    try:
        return group[name]
    except KeyError:
        raise StoreNotFoundError(
            f"{where} has no member {name!r} (members: {names if names is not None else '?'}); a "
            "problem store needs 'A' (the matrix) and 'b' (the targets), optionally 'w'"
        ) from None
    except json.JSONDecodeError as exc:
        raise StoreFormatError(f"{where}: the metadata of member {name!r} is not valid JSON ({exc})") from None
    except ValueError as exc:  # zarr 3 cannot even represent the dtype (e.g. pickled objects)
        if "data type" not in str(exc):
            raise StoreFormatError(f"{where}: zarr cannot open member {name!r}: {exc}") from None
        raise DTypeError(
            f"{where}: member {name!r} has a dtype zarr cannot read ({exc}); stores hold numbers "
            "only (object/pickled arrays are never unpickled) — rewrite it as float64"
        ) from None
    except Exception as exc:  # any other metadata zarr cannot parse (wrong types, bad codecs)
        raise StoreFormatError(
            f"{where}: the metadata of member {name!r} is invalid ({type(exc).__name__}: {exc}); "
            "the store is damaged — rewrite it"
        ) from None


def _open_csr(a: zarr.Group, a_path: str, where: str, scan_limit: int) -> tuple[int, int, int, str, int, str]:
    enc = a.attrs.get("encoding-type")
    if enc != CSR_ENCODING:
        fix = (
            "store a CSC matrix as CSR (scipy: A.tocsr(); AnnData: adata.X = adata.X.tocsr())"
            if enc == "csc_matrix"
            else f"set encoding-type to {CSR_ENCODING!r} on a CSR group (data, indices, indptr)"
        )
        raise EncodingError(
            f"{where}: group 'A' has encoding-type {enc!r}; dsketch reads dense arrays or "
            f"{CSR_ENCODING!r} groups — {fix}"
        )
    shape = a.attrs.get("shape")
    if not (isinstance(shape, list | tuple) and len(shape) == 2 and all(isinstance(s, int) for s in shape)):
        raise StoreFormatError(
            f"{where}: CSR group 'A' needs a 'shape' attribute [n_samples, n_features]; got {shape!r}"
        )
    n, d = int(shape[0]), int(shape[1])
    store = a_path[: -len("A")].rstrip("/\\")
    names = member_names(a_path)
    arrs = {k: get_member(a, f"{where}, group 'A'", k, names=names) for k in ("data", "indices", "indptr")}
    for k, arr in arrs.items():
        if not isinstance(arr, zarr.Array) or arr.ndim != 1:
            raise StoreFormatError(f"{where}: CSR member 'A/{k}' must be a 1-D array; got {arr}")
    data, indices, indptr = arrs["data"], arrs["indices"], arrs["indptr"]
    dtype = check_value_dtype(where, "A/data", data.dtype)
    index_dtype = check_index_dtype(where, "A/indices", indices.dtype)
    check_index_dtype(where, "A/indptr", indptr.dtype)
    if indptr.shape[0] != n + 1:
        raise ShapeMismatchError(
            f"{where}: CSR 'shape' attribute says {n} rows but 'A/indptr' has {indptr.shape[0]} "
            f"entries (need n + 1 = {n + 1}); fix the 'shape' attribute or rewrite A"
        )
    nnz = int(data.shape[0])
    if indices.shape[0] != nnz:
        raise ShapeMismatchError(
            f"{where}: 'A/data' has {nnz} entries but 'A/indices' has {indices.shape[0]}; they "
            "must have the same length — rewrite A"
        )
    if n > 0:
        if n + 1 <= scan_limit:
            ends = np.asarray(read_slice(store, indptr, "A/indptr", 0, n + 1), dtype=np.int64)
            check_indptr(f"{where}, member 'A'", ends, 0)
        else:
            ends = np.asarray(read_slice(store, indptr, "A/indptr", np.array([0, n])), dtype=np.int64)
        if ends[0] != 0 or ends[-1] != nnz:
            raise ShapeMismatchError(
                f"{where}: CSR 'A/indptr' must start at 0 and end at len(A/data) = {nnz}; got "
                f"indptr[0] = {ends[0]}, indptr[{n}] = {ends[-1]} — rewrite A"
            )
    return n, d, nnz, str(dtype), int(indptr.chunks[0]), str(index_dtype)


def _open_dense(a: zarr.Array, where: str) -> tuple[int, int, int, str, int, None]:
    dtype = check_value_dtype(where, "A", a.dtype)
    if a.ndim != 2:
        raise ShapeMismatchError(f"{where}: dense 'A' must be 2-D (n_samples, n_features); got shape {a.shape}")
    n, d = (int(s) for s in a.shape)
    if d > 0 and a.chunks[1] < d:
        raise ChunkLayoutError(
            f"{where}: dense 'A' of shape {a.shape} has chunks {a.chunks}; it must be chunked by "
            f"rows only, chunks=(rows, {d}) — rewrite it with dsketch.store.write_problem, or with "
            f"zarr using chunks=({a.chunks[0]}, {d})"
        )
    return n, d, n * d, str(dtype), int(a.chunks[0]), None


def _check_rows(node: Any, where: str, name: str, n: int, *, vector: bool) -> None:
    if not isinstance(node, zarr.Array):
        raise StoreFormatError(f"{where}: member {name!r} must be an array; found a group")
    check_value_dtype(where, name, node.dtype)
    ok = node.shape == (n,) if vector else (node.ndim >= 1 and node.shape[0] == n)
    if not ok:
        need = f"shape ({n},)" if vector else f"{n} rows on its first axis"
        raise ShapeMismatchError(
            f"{where}: 'A' has {n} rows but member {name!r} has shape {node.shape}; it needs {need} "
            "— every member must be row-aligned with A"
        )


def _global_members(g: zarr.Group, where: str) -> tuple[str, ...]:
    """Names of the numeric arrays in the ``global`` subgroup (anything else is an error)."""
    node = g[GLOBAL_GROUP]
    if not isinstance(node, zarr.Group):
        raise StoreFormatError(
            f"{where}: member {GLOBAL_GROUP!r} must be a group of arrays that are not row-aligned; "
            "found an array"
        )
    names = []
    for name in sorted(node.array_keys()):
        check_value_dtype(where, f"{GLOBAL_GROUP}/{name}", node[name].dtype)
        names.append(name)
    return tuple(names)


def open_problem(path: str | os.PathLike[str], *, check: Literal["metadata", "full"] = "metadata") -> ProblemSpec:
    """Open a problem store and validate it.

    Parameters
    ----------
    path : str or path-like
        The store (a Zarr group directory).
    check : {"metadata", "full"}
        ``"metadata"`` checks the members, the CSR encoding, shapes, dtypes, the chunk
        layout of dense ``A`` and the CSR ``indptr`` (all of it up to ``2**24`` entries,
        else its end points). ``"full"`` also streams through every member chunk by chunk,
        checking that values are finite and that CSR indices are in ``[0, n_features)``
        and strictly increasing within each row. (Each block a fit reads is checked the
        same way, so a fit never proceeds on bad data either way.)

    Returns
    -------
    ProblemSpec

    Raises
    ------
    StoreNotFoundError
        No such path, or a required member (``A``, ``b``, CSR arrays) is missing.
    StoreFormatError
        The path is not a Zarr group, or a member is a group where an array is needed.
    EncodingError
        ``A`` is a group whose ``encoding-type`` is missing or not ``"csr_matrix"``.
    ShapeMismatchError
        Members disagree on the number of rows, or the CSR arrays are inconsistent.
    EmptyProblemError
        No rows, no columns, or no stored entries.
    DTypeError
        A member is not numeric (object, string, complex).
    ChunkLayoutError
        Dense ``A`` is chunked along its columns.
    NonFiniteError, InvalidIndicesError
        With ``check="full"``: NaN/inf values, bad CSR indices (message names the row).

    Notes
    -----
    The returned spec records the store's :attr:`~ProblemSpec.fingerprint` (its metadata
    and the content-version token of its last commit), which block reads and checkpoints
    check against the store then at the path.

    Every array member other than ``A``, ``b`` and ``w`` is a row-aligned extra and must
    have ``n_samples`` rows; sub-groups other than ``A`` are ignored. Boolean values are
    accepted and read as 0/1. Members are listed from the directory (local stores only).
    """
    if check not in ("metadata", "full"):
        raise InvalidParameterError(f"check must be 'metadata' or 'full'; got {check!r}")
    path = absolute(path)
    g = open_group(path)
    where = f"store {path!r}"
    names = member_names(path)
    a = get_member(g, where, "A", names=names)
    if isinstance(a, zarr.Group):
        n, d, nnz, dtype, chunk_rows, index_dtype = _open_csr(a, _fs.join(path, "A"), where, INDPTR_SCAN_LIMIT)
    else:
        n, d, nnz, dtype, chunk_rows, index_dtype = _open_dense(a, where)
    if n == 0 or d == 0 or nnz == 0:
        raise EmptyProblemError(
            f"{where}: the design matrix 'A' is empty (shape ({n}, {d}), {nnz} stored entries); a "
            "problem needs at least one row, one column and one stored entry"
        )
    has_b = "b" in names
    if has_b:
        _check_rows(get_member(g, where, "b", names=names), where, "b", n, vector=True)
    elif GLOBAL_GROUP not in names:
        get_member(g, where, "b", names=names)  # raises: a store needs targets somewhere
    globals_ = _global_members(g, where) if GLOBAL_GROUP in names else ()
    has_w = "w" in names
    if has_w:
        _check_rows(get_member(g, where, "w", names=names), where, "w", n, vector=True)
    members = []
    for name in names:
        if name in RESERVED:
            continue
        node = get_member(g, where, name, names=names)
        if isinstance(node, zarr.Array):
            _check_rows(node, where, name, n, vector=False)
            members.append(name)
    spec = ProblemSpec(
        path=path,
        n_samples=n,
        n_features=d,
        sparse=isinstance(a, zarr.Group),
        nnz=nnz,
        dtype=dtype,
        has_w=has_w,
        members=tuple(members),
        a_chunk_rows=chunk_rows,
        index_dtype=index_dtype,
        attrs=json.dumps({k: v for k, v in g.attrs.items() if k != _identity.TOKEN_ATTR}),
        has_b=has_b,
        global_members=globals_,
    )
    try:
        spec = replace(spec, fingerprint=_identity.fingerprint(path, _identity.spec_nodes(spec)))
    except FileNotFoundError:
        raise StoreNotFoundError(f"store {path!r} disappeared while it was being opened") from None
    if check == "full":
        _full_check(spec)
    return spec


def _full_check(spec: ProblemSpec) -> None:
    """Read every row block (aligned to A's row chunks) through the validating reader."""
    per_row = max(1.0, spec.nnz / spec.n_samples)
    step = max(1, int(FULL_CHECK_STEP / per_row) // spec.a_chunk_rows) * spec.a_chunk_rows
    for r0, r1 in row_blocks(spec.n_samples, step):
        read_block(spec, r0, r1, members=spec.members)
