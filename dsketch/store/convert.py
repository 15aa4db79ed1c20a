"""Converting common matrix formats into problem stores, and describing stores.

Supported sources (``fmt`` is inferred from the suffix when omitted):

=============  =========================  =============================================
``fmt``        suffixes                   ``A`` / ``b``
=============  =========================  =============================================
``npy``        ``.npy``                   dense ``A`` (memory-mapped, streamed);
                                          ``b`` from ``target`` (a ``.npy`` file)
``npz``        ``.npz``                   ``A`` from ``scipy.sparse.save_npz`` (loaded in
                                          memory); ``b`` from ``target``
``svmlight``   ``.svm .svmlight .libsvm   CSR ``A``, labels are ``b``; streamed in two
               .txt .dat`` (+ ``.gz`` /   passes (one to count, one to write), so memory
               ``.bz2``)                  stays bounded by one block of rows
``anndata``    ``.zarr``                  ``X`` (or ``layers/<layer>``) as CSR or dense,
                                          read with zarr (no anndata import);
                                          ``b = obs/<obs_column>`` or ``target``
=============  =========================  =============================================

``weights`` (the softmax-type models' regularisation weights ``w``), ``sample_weight`` and
``offset`` (the GLMs' sample weights and offsets) are ``.npy`` files (any format) or, for
AnnData, also ``obs`` column names.
All conversions are atomic, like the writers in :mod:`dsketch.store.builder`.
"""

from __future__ import annotations

import bz2
import gzip
import io
import itertools
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp

from dsketch.errors import (
    DTypeError,
    EmptyProblemError,
    InvalidParameterError,
    ShapeMismatchError,
    StoreFormatError,
    StoreNotFoundError,
    UnknownNameError,
    UnusedOptionError,
)
from dsketch.store import _atomic, outputs
from dsketch.store._anndata import anndata_source
from dsketch.store.blocks import row_blocks
from dsketch.store.builder import ProblemBuilder, default_chunk_rows, write_problem
from dsketch.store.describe import describe
from dsketch.store.spec import ProblemSpec, check_sample_weight_values, check_value_dtype

__all__ = ["FORMATS", "convert", "describe", "infer_format"]

_SUFFIXES = {
    ".npy": "npy",
    ".npz": "npz",
    ".svm": "svmlight",
    ".svmlight": "svmlight",
    ".libsvm": "svmlight",
    ".txt": "svmlight",
    ".dat": "svmlight",
    ".zarr": "anndata",
}
FORMATS = ("npy", "npz", "svmlight", "anndata")
#: The GLMs' optional row-aligned members a conversion can add (``convert(..., name=file)``).
ROW_VECTORS = ("sample_weight", "offset")
#: Stored entries per block streamed by the converters (about 64 MiB of float64).
STREAM_ENTRIES = 2**23
#: Lines per batch parsed by the svmlight reader.
SVMLIGHT_BATCH_LINES = 2**15

Blocks = Iterator[tuple[np.ndarray | sp.csr_matrix, dict[str, np.ndarray]]]


def infer_format(source: str) -> str:
    """The format of ``source`` from its suffix (``.gz`` / ``.bz2`` are looked through)."""
    base = source.rstrip("/" + os.sep)
    stem, suffix = os.path.splitext(base)
    if suffix in (".gz", ".bz2"):
        suffix = os.path.splitext(stem)[1]
    if suffix == ".h5ad":
        raise StoreFormatError(
            f"{source!r} is an AnnData .h5ad file; convert it to .zarr first "
            "(anndata.read_h5ad(path).write_zarr('data.zarr')) and pass the .zarr"
        )
    if suffix not in _SUFFIXES:
        raise InvalidParameterError(
            f"cannot infer the format of {source!r} from its suffix {suffix!r}; pass fmt= one of "
            f"{list(FORMATS)} (suffixes: {sorted(_SUFFIXES)})"
        )
    return _SUFFIXES[suffix]


def load_vector(path: str, n: int, name: str, *, columns: bool = False) -> np.ndarray:
    """Load a ``.npy`` vector of length ``n`` (shape ``(n,)`` or ``(n, 1)``), numeric only;
    with ``columns`` also an ``(n, K)`` matrix (``K >= 2``: the multinomial model's offsets)."""
    path = _atomic.absolute(path)
    if not os.path.exists(path):
        raise StoreNotFoundError(f"{name} file {path!r} does not exist")
    try:
        v = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise DTypeError(f"{name} file {path!r} cannot be read without unpickling ({exc}); save it numeric") from None
    if not isinstance(v, np.ndarray):
        raise StoreFormatError(f"{name} file {path!r} must be a .npy array, not an archive")
    check_value_dtype(path, name, v.dtype)
    if v.ndim == 2 and v.shape[1] == 1:
        v = v[:, 0]
    if columns and v.ndim == 2 and v.shape[0] == n and v.shape[1] >= 2:
        return v
    if v.shape != (n,):
        raise ShapeMismatchError(
            f"{name} from {path!r} has shape {v.shape}; the matrix has {n} rows, so it needs ({n},)"
        )
    return v


def _step(chunk_rows: int, per_row: float) -> int:
    return max(1, int(STREAM_ENTRIES / max(per_row, 1.0)) // chunk_rows) * chunk_rows


def write_stream(
    out: str,
    blocks: Blocks,
    *,
    n_samples: int,
    n_features: int,
    nnz: int | None,
    dtype: str,
    has_w: bool,
    chunk_rows: int,
    attrs: dict[str, Any],
    overwrite: bool,
    extra_vectors: dict[str, tuple[int, ...]] | None = None,
) -> ProblemSpec:
    """Write consecutive row blocks (each ``k * chunk_rows`` rows, the last shorter) atomically.

    ``blocks`` yields ``(A_rows, {"b": ..., "w": ..., <extra_vectors>: ...})``; CSR blocks
    go through :meth:`ProblemBuilder.write_csr_rows`, their edge pieces are written right
    away. ``extra_vectors`` maps further row-aligned float64 members (``sample_weight``,
    ``offset``) to the shape of a row (``()``; ``(K,)`` for per-class offsets).
    """
    builder = ProblemBuilder.create(
        out, n_samples=n_samples, n_features=n_features, sparse=nnz is not None, nnz=nnz,
        dtype=dtype, has_w=has_w, chunk_rows=chunk_rows, attrs=attrs, overwrite=overwrite,
        extra={name: (tail, "float64") for name, tail in (extra_vectors or {}).items()},
    )
    try:
        r0 = offset = 0
        for A_rows, vectors in blocks:
            if sp.issparse(A_rows):
                data = A_rows.data.astype(dtype, copy=False)
                builder.write_edges([builder.write_csr_rows(r0, A_rows.indptr, A_rows.indices, data, offset)])
                offset += A_rows.nnz
            else:
                builder.write_dense_rows(r0, np.asarray(A_rows, dtype=dtype))
            for name, values in vectors.items():
                values = np.asarray(values, dtype=np.float64)
                if name == "sample_weight":
                    check_sample_weight_values(f"store {out!r}", values, r0)
                builder.write_vector(name, r0, values)
            r0 += A_rows.shape[0]
        if r0 != n_samples or (nnz is not None and offset != nnz):
            raise ShapeMismatchError(
                f"the source yielded {r0} rows and {offset} entries; expected {n_samples} rows"
                + (f" and {nnz} entries" if nnz is not None else "")
                + " — was it modified during the conversion?"
            )
        return builder.commit()
    except BaseException:
        builder.abort()
        raise


def _value_dtype(dt: np.dtype[Any]) -> str:
    return "float32" if dt == np.float32 else "float64"


# ------------------------------------------------------------------------------ npy / npz
def _from_npy(src: str, out: str, opts: dict[str, Any]) -> ProblemSpec:
    try:
        A = np.load(src, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise DTypeError(f"{src!r} cannot be read without unpickling ({exc}); save a numeric array") from None
    if not isinstance(A, np.ndarray) or A.ndim != 2:
        raise ShapeMismatchError(f"{src!r} must hold a 2-D array (n_samples, n_features); got {getattr(A, 'shape', A)}")
    check_value_dtype(src, "A", A.dtype)
    n, d = A.shape
    if n == 0 or d == 0:
        raise EmptyProblemError(f"{src!r} holds an empty matrix of shape {A.shape}")
    vecs = _npy_vectors(opts, n, src)
    dtype = _value_dtype(A.dtype)
    rows = opts["chunk_rows"] or default_chunk_rows(d, n_samples=n, itemsize=np.dtype(dtype).itemsize)
    step = _step(rows, d)

    def blocks() -> Blocks:
        for r0, r1 in row_blocks(n, step):
            yield np.asarray(A[r0:r1]), {k: v[r0:r1] for k, v in vecs.items()}

    return write_stream(out, blocks(), n_samples=n, n_features=d, nnz=None, dtype=dtype, has_w="w" in vecs,
                        chunk_rows=rows, attrs=opts["attrs"], overwrite=opts["overwrite"],
                        extra_vectors=_extra_names(vecs))


def _extra_names(vecs: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The GLMs' members among ``vecs`` and the shape of one row of each."""
    return {name: tuple(np.shape(vecs[name])[1:]) for name in ROW_VECTORS if name in vecs}


def _load_row_vectors(opts: dict[str, Any], n: int, vecs: dict[str, Any]) -> dict[str, Any]:
    """``vecs`` with the ``sample_weight`` / ``offset`` ``.npy`` files of ``opts`` loaded."""
    for name in ROW_VECTORS:
        if opts[name] is not None and name not in vecs:
            vecs[name] = load_vector(opts[name], n, name, columns=name == "offset")
    return vecs


def _npy_vectors(opts: dict[str, Any], n: int, src: str) -> dict[str, np.ndarray]:
    if opts["target"] is None:
        raise InvalidParameterError(f"converting {src!r} needs the targets: pass target='b.npy' (--target)")
    vecs = {"b": load_vector(opts["target"], n, "target")}
    if opts["weights"] is not None:
        vecs["w"] = load_vector(opts["weights"], n, "weights")
    return _load_row_vectors(opts, n, vecs)


def _from_npz(src: str, out: str, opts: dict[str, Any]) -> ProblemSpec:
    try:
        A = sp.load_npz(src).tocsr()
    except (ValueError, KeyError, OSError) as exc:
        raise StoreFormatError(
            f"{src!r} is not a scipy.sparse.save_npz file ({exc}); for a dense np.savez archive, "
            "save the matrix with np.save (.npy) instead"
        ) from None
    vecs = _npy_vectors(opts, A.shape[0], src)
    return write_problem(out, A, vecs["b"], vecs.get("w"), attrs=opts["attrs"], chunk_rows=opts["chunk_rows"],
                         overwrite=opts["overwrite"], **{k: vecs[k] for k in _extra_names(vecs)})


# ------------------------------------------------------------------------------ svmlight
def _svm_batches(src: str) -> Iterator[tuple[sp.csr_matrix, np.ndarray]]:
    """Parse ``src`` in batches of lines with scikit-learn's parser (indices as written)."""
    from sklearn.datasets import load_svmlight_file

    opener: Callable[..., Any] = gzip.open if src.endswith(".gz") else bz2.open if src.endswith(".bz2") else open
    with opener(src, "rb") as f:
        for k in itertools.count():
            lines = list(itertools.islice(f, SVMLIGHT_BATCH_LINES))
            if not lines:
                return
            try:
                X, y = load_svmlight_file(io.BytesIO(b"".join(lines)), zero_based=True, dtype=np.float64)
            except ValueError as exc:
                first = k * SVMLIGHT_BATCH_LINES + 1
                raise StoreFormatError(
                    f"{src!r}: cannot parse lines {first}..{first + len(lines) - 1} as svmlight/libsvm "
                    f"({exc}); multi-label files are not supported"
                ) from None
            if X.shape[0]:
                yield X, y


def _from_svmlight(src: str, out: str, opts: dict[str, Any]) -> ProblemSpec:
    if opts["target"] is not None:
        raise UnusedOptionError("svmlight files carry their labels; target= does not apply (they become b)")
    n = nnz = 0
    lo, hi = np.iinfo(np.int64).max, -1
    for X, _ in _svm_batches(src):  # pass 1: shape, nnz and whether indices are one-based
        n, nnz = n + X.shape[0], nnz + X.nnz
        if X.nnz:
            lo, hi = min(lo, int(X.indices.min())), max(hi, int(X.indices.max()))
    if n == 0 or nnz == 0:
        raise EmptyProblemError(f"{src!r} holds no rows or no non-zero features ({n} rows, {nnz} entries)")
    shift = 1 if lo > 0 else 0  # scikit-learn's zero_based="auto" rule
    d = hi - shift + 1
    w = load_vector(opts["weights"], n, "weights") if opts["weights"] is not None else None
    others = _load_row_vectors(opts, n, {})
    rows = opts["chunk_rows"] or default_chunk_rows(d, n_samples=n, density=nnz / (n * d))
    step = _step(rows, nnz / n)

    def blocks() -> Blocks:  # pass 2: re-parse, re-batch into aligned blocks of `step` rows
        pend_X: list[sp.csr_matrix] = []
        pend_y: list[np.ndarray] = []
        r0 = 0
        for X, y in itertools.chain(_svm_batches(src), [(None, None)]):
            if X is not None:
                pend_X.append(sp.csr_matrix((X.data, X.indices - shift, X.indptr), shape=(X.shape[0], d)))
                pend_y.append(y)
            while pend_X and (sum(x.shape[0] for x in pend_X) >= step or X is None):
                Xa, ya = sp.vstack(pend_X, format="csr"), np.concatenate(pend_y)
                take = min(step, Xa.shape[0])
                vecs = {"b": ya[:take], **({"w": w[r0 : r0 + take]} if w is not None else {}),
                        **{k: v[r0 : r0 + take] for k, v in others.items()}}
                yield Xa[:take], vecs
                r0 += take
                pend_X = [Xa[take:]] if Xa.shape[0] > take else []
                pend_y = [ya[take:]] if Xa.shape[0] > take else []

    return write_stream(out, blocks(), n_samples=n, n_features=d, nnz=nnz, dtype="float64", has_w=w is not None,
                        chunk_rows=rows, attrs=opts["attrs"], overwrite=opts["overwrite"],
                        extra_vectors=_extra_names(others))


# ------------------------------------------------------------------------------ AnnData
def _from_anndata(src: str, out: str, opts: dict[str, Any]) -> ProblemSpec:
    source = anndata_source(src, layer=opts["layer"], obs_column=opts["obs_column"], weights=opts["weights"],
                            columns={k: opts[k] for k in ROW_VECTORS if opts[k] is not None})
    n, d = source.n_samples, source.n_features
    vecs: dict[str, Any] = dict(source.vectors)
    if opts["target"] is not None:
        if "b" in vecs:
            raise InvalidParameterError("pass either obs_column= or target=, not both")
        vecs["b"] = load_vector(opts["target"], n, "target")
    if "b" not in vecs:
        raise InvalidParameterError(
            f"converting {src!r} needs the targets: pass obs_column= (--obs-column) one of "
            f"{source.obs_columns}, or target='b.npy'"
        )
    if "w" not in vecs and opts["weights"] is not None:
        vecs["w"] = load_vector(opts["weights"], n, "weights")
    _load_row_vectors(opts, n, vecs)
    opts["attrs"]["dsketch"].update(source.attrs)
    dtype = _value_dtype(source.dtype)
    density = 1.0 if source.nnz is None else source.nnz / (n * d)
    rows = opts["chunk_rows"] or default_chunk_rows(d, n_samples=n, itemsize=np.dtype(dtype).itemsize, density=density)
    step = _step(rows, d * density)

    def blocks() -> Blocks:
        for r0, r1 in row_blocks(n, step):
            yield source.rows(r0, r1), {k: v[r0:r1] for k, v in vecs.items()}

    return write_stream(out, blocks(), n_samples=n, n_features=d, nnz=source.nnz, dtype=dtype, has_w="w" in vecs,
                        chunk_rows=rows, attrs=opts["attrs"], overwrite=opts["overwrite"],
                        extra_vectors=_extra_names(vecs))


_READERS: dict[str, Callable[[str, str, dict[str, Any]], ProblemSpec]] = {
    "npy": _from_npy,
    "npz": _from_npz,
    "svmlight": _from_svmlight,
    "anndata": _from_anndata,
}


def convert(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    fmt: str | None = None,
    target: str | os.PathLike[str] | None = None,
    weights: str | os.PathLike[str] | None = None,
    sample_weight: str | os.PathLike[str] | None = None,
    offset: str | os.PathLike[str] | None = None,
    obs_column: str | None = None,
    layer: str | None = None,
    overwrite: bool = False,
    chunk_rows: int | None = None,
) -> ProblemSpec:
    """Convert a matrix file into a problem store, atomically.

    Parameters
    ----------
    source : str or path-like
        ``.npy``, ``.npz`` (scipy sparse), svmlight/libsvm text, or an AnnData ``.zarr``.
    out : str or path-like
        The problem store to write.
    fmt : {"npy", "npz", "svmlight", "anndata"}, optional
        Inferred from ``source``'s suffix when omitted.
    target : str or path-like, optional
        ``.npy`` file with ``b`` (required for npy / npz; or instead of ``obs_column``).
    weights : str or path-like, optional
        ``.npy`` file with the softmax-type models' regularisation weights ``w``; for AnnData
        also an ``obs`` column name. Not sample weights: the GLMs refuse a store with ``w``.
    sample_weight : str or path-like, optional
        ``.npy`` file (or AnnData ``obs`` column) with the GLMs' sample weights (finite,
        ``>= 0``), stored as the member ``sample_weight``.
    offset : str or path-like, optional
        ``.npy`` file (or AnnData ``obs`` column) with the GLMs' offsets (``eta = A x +
        offset``, e.g. ``log(exposure)``), stored as the member ``offset``; an ``(n, K)``
        ``.npy`` matrix holds the ``multinomial`` model's offsets, one a class.
    obs_column : str, optional
        AnnData only: the ``obs`` column holding ``b``. Numeric and boolean columns are
        used as they are; a categorical column becomes its integer codes (0/1 when it has
        two categories), and the category names are recorded in the store's metadata.
    layer : str, optional
        AnnData only: read ``layers/<layer>`` instead of ``X``.
    overwrite : bool
        Replace an existing store at ``out``.
    chunk_rows : int, optional
        Rows per chunk (default: a power of two giving about 16 MiB chunks of ``A``).

    Returns
    -------
    ProblemSpec

    Raises
    ------
    StoreNotFoundError
        ``source`` / ``target`` / an ``obs`` column or layer does not exist.
    StoreExistsError
        ``out`` exists and ``overwrite`` is False.
    ValueError
        An option that does not apply to the format, or an unknown ``fmt``.
    StoreFormatError, EncodingError, ShapeMismatchError, DTypeError, NonFiniteError, EmptyProblemError
        For sources that cannot make a valid problem.
    """
    src, dst = _atomic.absolute(source), _atomic.absolute(out)
    if not os.path.exists(src):
        raise StoreNotFoundError(f"source {src!r} does not exist")
    fmt = fmt or infer_format(src)
    if fmt not in _READERS:
        raise UnknownNameError(f"unknown format {fmt!r}; choose one of {list(FORMATS)}")
    if fmt != "anndata":
        for name, value in (("obs_column", obs_column), ("layer", layer)):
            if value is not None:
                raise UnusedOptionError(f"{name}= applies only to AnnData sources, not fmt={fmt!r}")
    inputs = {"the source": src, "target": target, "weights": weights}  # weights may be an obs column name
    outputs.check_output(dst, outputs.PROBLEM, overwrite=overwrite,
                         others={k: v for k, v in inputs.items() if v is not None and os.path.lexists(v)})
    opts = {
        "target": None if target is None else os.fspath(target),
        "weights": None if weights is None else os.fspath(weights),
        "sample_weight": None if sample_weight is None else os.fspath(sample_weight),
        "offset": None if offset is None else os.fspath(offset),
        "obs_column": obs_column,
        "layer": layer,
        "overwrite": overwrite,
        "chunk_rows": chunk_rows,
        "attrs": {"dsketch": {"generator": "dsketch convert", "source": src, "format": fmt}},
    }
    return _READERS[fmt](src, dst, opts)
