"""Tests of dsketch.store.convert: npy / npz / svmlight / AnnData sources, and describe."""

from __future__ import annotations

import glob
import gzip
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import zarr
from sklearn.datasets import dump_svmlight_file, load_svmlight_file

from dsketch.errors import (
    DTypeError,
    EncodingError,
    NonFiniteError,
    ShapeMismatchError,
    StoreExistsError,
    StoreFormatError,
    StoreNotFoundError,
)
from dsketch.store import builder as builder_mod
from dsketch.store import convert as convert_mod
from dsketch.store import open_problem, read_block, write_problem
from dsketch.store.convert import convert, describe, infer_format

anndata = pytest.importorskip("anndata")


def _same(spec, A, b, w=None):
    blk = read_block(spec, 0, spec.n_samples)
    if sp.issparse(A):
        assert sp.issparse(blk.A) and blk.A.shape == A.shape and abs(blk.A - A).max() == 0
    else:
        np.testing.assert_array_equal(blk.A, A)
    np.testing.assert_array_equal(blk.b, b)
    if w is not None:
        np.testing.assert_array_equal(blk.w, w)
    assert open_problem(spec.path, check="full") == spec


@pytest.fixture
def small_stream(monkeypatch):
    """Force many streamed blocks on small inputs."""
    monkeypatch.setattr(convert_mod, "STREAM_ENTRIES", 64)
    monkeypatch.setattr(convert_mod, "SVMLIGHT_BATCH_LINES", 7)


# ------------------------------------------------------------------------------ npy / npz
def test_npy(tmp_path, rng, small_stream):
    A, b, w = rng.normal(size=(103, 4)).astype(np.float32), rng.normal(size=103), rng.uniform(size=(103, 1))
    for name, arr in (("A", A), ("b", b), ("w", w)):
        np.save(tmp_path / f"{name}.npy", arr)
    spec = convert(tmp_path / "A.npy", tmp_path / "p.zarr", target=tmp_path / "b.npy", weights=tmp_path / "w.npy",
                   chunk_rows=8)
    assert spec.dtype == "float32" and spec.a_chunk_rows == 8 and spec.has_w
    assert spec.metadata["dsketch"]["format"] == "npy"
    _same(spec, A.astype(np.float64), b, w[:, 0])


def test_npy_errors(tmp_path, rng):
    np.save(tmp_path / "A.npy", rng.normal(size=(10, 2)))
    np.save(tmp_path / "b9.npy", np.zeros(9))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    np.save(tmp_path / "v.npy", np.zeros(10))
    with pytest.raises(ValueError, match="target"):
        convert(tmp_path / "A.npy", tmp_path / "p.zarr")
    with pytest.raises(ShapeMismatchError, match=r"shape \(9,\)"):
        convert(tmp_path / "A.npy", tmp_path / "p.zarr", target=tmp_path / "b9.npy")
    with pytest.raises(StoreNotFoundError, match="does not exist"):
        convert(tmp_path / "A.npy", tmp_path / "p.zarr", target=tmp_path / "nope.npy")
    with pytest.raises(DTypeError, match="unpickling"):
        convert(tmp_path / "obj.npy", tmp_path / "p.zarr", target=tmp_path / "v.npy")
    with pytest.raises(ShapeMismatchError, match="2-D"):
        convert(tmp_path / "v.npy", tmp_path / "p.zarr", target=tmp_path / "v.npy")
    with pytest.raises(ValueError, match="obs_column= applies only to AnnData"):
        convert(tmp_path / "A.npy", tmp_path / "p.zarr", target=tmp_path / "v.npy", obs_column="y")
    assert not glob.glob(str(tmp_path / "p.zarr*"))


def test_npz(tmp_path, rng):
    A = sp.random(60, 12, density=0.2, format="csc", random_state=np.random.default_rng(1))
    sp.save_npz(tmp_path / "A.npz", A)
    b = rng.integers(0, 4, 60).astype(float)
    np.save(tmp_path / "b.npy", b)
    spec = convert(tmp_path / "A.npz", tmp_path / "p.zarr", target=tmp_path / "b.npy")
    assert spec.sparse and spec.nnz == A.nnz
    _same(spec, A.tocsr(), b)
    np.savez(tmp_path / "dense.npz", a=np.ones(3))
    with pytest.raises(StoreFormatError, match="save_npz"):
        convert(tmp_path / "dense.npz", tmp_path / "q.zarr", target=tmp_path / "b.npy")


# ------------------------------------------------------------------------------ svmlight
@pytest.mark.parametrize(("zero_based", "suffix"), [(False, ".svm"), (True, ".libsvm"), (False, ".svm.gz")])
def test_svmlight(tmp_path, rng, small_stream, zero_based, suffix):
    X = sp.random(75, 11, density=0.3, format="csr", random_state=np.random.default_rng(2))
    keep = np.ones(75)
    keep[3] = 0.0  # an empty row
    X = sp.csr_matrix(sp.diags(keep) @ X)
    X.eliminate_zeros()
    y = rng.integers(0, 2, 75).astype(float)
    plain = tmp_path / "d.txt"
    dump_svmlight_file(X, y, str(plain), zero_based=zero_based, comment="made for a test")
    text = plain.read_bytes().replace(b"\n", b"\n\n", 5)  # blank lines shift rows across batches
    src = tmp_path / f"d{suffix}"
    (gzip.open if suffix.endswith(".gz") else open)(src, "wb").write(text)
    X_ref, y_ref = load_svmlight_file(str(src))
    spec = convert(src, tmp_path / "p.zarr", chunk_rows=4)
    assert spec.shape == X_ref.shape and spec.nnz == X_ref.nnz
    _same(spec, X_ref, y_ref)
    assert describe(spec)["models"][0] == "logistic"


def test_svmlight_errors(tmp_path):
    (tmp_path / "bad.svm").write_text("1 3:1 1:2\n")
    with pytest.raises(StoreFormatError, match="lines 1..1"):
        convert(tmp_path / "bad.svm", tmp_path / "p.zarr")
    (tmp_path / "ok.svm").write_text("1 1:2\n")
    with pytest.raises(ValueError, match="carry their labels"):
        convert(tmp_path / "ok.svm", tmp_path / "p.zarr", target=tmp_path / "b.npy")


# ------------------------------------------------------------------------------ AnnData
@pytest.fixture(params=[2, 3], ids=["zarr-v2", "zarr-v3"])
def adata_store(request, tmp_path, rng):
    n = 90
    X = sp.random(n, 13, density=0.25, format="csr", random_state=np.random.default_rng(3), dtype=np.float32)
    obs = pd.DataFrame(
        {
            "y": rng.normal(size=n),
            "label": pd.Categorical(rng.choice(["healthy", "tumour"], n)),
            "tissue": pd.Categorical(rng.choice(["lung", "liver", "skin"], n)),
            "count": rng.integers(0, 7, n),
            "flag": rng.uniform(size=n) > 0.5,
            "name": [f"cell{i}" for i in range(n)],
            "weight": rng.uniform(1, 2, n),
        },
        index=[f"c{i}" for i in range(n)],
    )
    adata = anndata.AnnData(X=X, obs=obs)
    adata.layers["dense"] = X.toarray() * 2
    path = tmp_path / "cells.zarr"
    with warnings.catch_warnings(), anndata.settings.override(zarr_write_format=request.param):
        warnings.simplefilter("ignore")
        adata.write_zarr(path)
    return path, adata


def test_anndata_csr_categorical(tmp_path, adata_store, small_stream):
    path, adata = adata_store
    spec = convert(path, tmp_path / "p.zarr", obs_column="label", weights="weight", chunk_rows=8)
    b = adata.obs["label"].cat.codes.to_numpy().astype(float)
    assert set(np.unique(b)) == {0.0, 1.0} and spec.dtype == "float32"
    _same(spec, adata.X.astype(np.float64), b, adata.obs["weight"].to_numpy())
    meta = spec.metadata["dsketch"]
    assert meta["target_categories"] == ["healthy", "tumour"] and meta["obs_column"] == "label"
    assert meta["format"] == "anndata" and meta["matrix"] == "X"
    assert describe(spec)["models"][0] == "logistic"


@pytest.mark.parametrize(("column", "expected"), [
    ("y", lambda o: o["y"].to_numpy()),
    ("count", lambda o: o["count"].to_numpy().astype(float)),
    ("flag", lambda o: o["flag"].to_numpy().astype(float)),
    ("tissue", lambda o: o["tissue"].cat.codes.to_numpy().astype(float)),
])
def test_anndata_columns_and_dense_layer(tmp_path, adata_store, column, expected):
    path, adata = adata_store
    spec = convert(path, tmp_path / "p.zarr", obs_column=column, layer="dense")
    assert not spec.sparse
    _same(spec, adata.layers["dense"].astype(np.float64), expected(adata.obs))


@pytest.mark.filterwarnings("ignore:Consolidated metadata")
def test_anndata_errors(tmp_path, adata_store):
    path, _ = adata_store
    out = tmp_path / "p.zarr"
    with pytest.raises(StoreNotFoundError, match=r"no obs column 'lable'.*available columns: \['y', 'label'"):
        convert(path, out, obs_column="lable")
    with pytest.raises(ValueError, match="obs_column"):
        convert(path, out)
    with pytest.raises(StoreNotFoundError, match=r"no layer 'raw'.*\['dense'\]"):
        convert(path, out, obs_column="y", layer="raw")
    g = zarr.open_group(path, mode="r+", use_consolidated=False)
    g["obs"].create_array("text", shape=(90,), dtype=str)[:] = np.array(["a"] * 90)
    g["obs"].attrs["column-order"] = [*g["obs"].attrs["column-order"], "text"]
    zarr.consolidate_metadata(path)
    with pytest.raises(DTypeError, match="categorical"):
        convert(path, out, obs_column="text")
    g["X"].attrs["encoding-type"] = "csc_matrix"
    zarr.consolidate_metadata(path)
    with pytest.raises(EncodingError, match="tocsr"):
        convert(path, out, obs_column="y")
    assert not glob.glob(str(out) + "*")


def test_anndata_dense_x_unsorted_and_missing(tmp_path, rng):
    X = sp.csr_matrix((np.array([1.0, 2.0, 3.0]), np.array([2, 0, 1]), np.array([0, 2, 3, 3])), shape=(3, 3))
    assert not X.has_sorted_indices
    obs = pd.DataFrame({"y": [1.0, 2.0, 3.0], "n": pd.array([1, None, 3], dtype="Int64")}, index=["a", "b", "c"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        anndata.AnnData(X=X, obs=obs).write_zarr(tmp_path / "u.zarr")
        anndata.AnnData(X=X.toarray(), obs=obs).write_zarr(tmp_path / "d.zarr")
    X.sort_indices()
    _same(convert(tmp_path / "u.zarr", tmp_path / "p.zarr", obs_column="y"), X, obs["y"].to_numpy())
    _same(convert(tmp_path / "d.zarr", tmp_path / "q.zarr", obs_column="y"), X.toarray(), obs["y"].to_numpy())
    with pytest.raises(NonFiniteError, match="missing value at row 1"):
        convert(tmp_path / "u.zarr", tmp_path / "r.zarr", obs_column="n")
    assert not glob.glob(str(tmp_path / "r.zarr*"))


# ------------------------------------------------------------------------------ generic
def test_convert_is_atomic(tmp_path, rng, monkeypatch):
    np.save(tmp_path / "A.npy", rng.normal(size=(30, 2)))
    np.save(tmp_path / "b.npy", np.zeros(30))
    out = str(tmp_path / "p.zarr")
    old = convert(tmp_path / "A.npy", out, target=tmp_path / "b.npy")
    with pytest.raises(StoreExistsError):
        convert(tmp_path / "A.npy", out, target=tmp_path / "b.npy")

    def boom(*args, **kwargs):
        raise RuntimeError("injected failure")

    monkeypatch.setattr(builder_mod.ProblemBuilder, "write_vector", boom)
    with pytest.raises(RuntimeError, match="injected"):
        convert(tmp_path / "A.npy", out, target=tmp_path / "b.npy", overwrite=True)
    assert open_problem(out) == old and not glob.glob(out + ".partial-*")


@pytest.mark.parametrize(("name", "fmt"), [("a.npy", "npy"), ("a.npz", "npz"), ("a.svm.gz", "svmlight"),
                                           ("a.libsvm", "svmlight"), ("cells.zarr/", "anndata")])
def test_infer_format(name, fmt):
    assert infer_format(name) == fmt


def test_format_errors(tmp_path):
    (tmp_path / "a.csv").write_text("1,2\n")
    (tmp_path / "a.h5ad").write_text("")
    with pytest.raises(ValueError, match="cannot infer the format"):
        convert(tmp_path / "a.csv", tmp_path / "p.zarr")
    with pytest.raises(StoreFormatError, match="write_zarr"):
        convert(tmp_path / "a.h5ad", tmp_path / "p.zarr")
    with pytest.raises(ValueError, match="unknown format"):
        convert(tmp_path / "a.csv", tmp_path / "p.zarr", fmt="parquet")
    with pytest.raises(StoreNotFoundError, match="does not exist"):
        convert(tmp_path / "missing.npy", tmp_path / "p.zarr")


# ------------------------------------------------------------------------------ describe
@pytest.mark.parametrize(("b", "first", "flags"), [
    (np.array([0.0, 1.0, 1.0, 0.0]), ["logistic", "poisson"], {"binary": True}),
    (np.array([0.0, 3.0, 7.0, 1.0]), ["poisson", "multinomial", "least-squares"], {"nonnegative_integer": True, "binary": False}),
    (np.array([0.1, 0.2, 0.3, 0.4]), ["softmax", "least-squares"], {"sums_to_one": True}),
    (np.array([-1.5, 0.2, 3.0, 0.4]), ["least-squares", "softmax", "exp", "cosh", "sinh"], {"nonnegative": False}),
])
def test_describe(tmp_path, b, first, flags):
    spec = write_problem(tmp_path / "p.zarr", sp.eye(4, 3, format="csr"), b, np.ones(4),
                         extra={"u": np.zeros((4, 2))}, attrs={"dsketch": {"x_planted": list(range(20))}})
    info = describe(spec)
    assert info["models"][: len(first)] == first
    assert {k: info["target"][k] for k in flags} == flags
    assert info["shape"] == [4, 3] and info["nnz"] == 3 and info["encoding"] == "csr" and info["has_w"]
    assert info["extra_members"] == ["u"] and set(info["chunks"]) == {"A/data", "A/indices", "A/indptr", "b", "w", "u"}
    assert info["density"] == pytest.approx(0.25) and info["metadata"]["dsketch"]["x_planted"] == "<list of 20>"
    assert info["target"]["min"] == b.min() and info["target"]["mean"] == pytest.approx(b.mean())
