"""Property-based tests: every bad input ends in a clear error, never a crash or a hang.

Stores are damaged at random (their Zarr metadata, their array contents) and the command
line is fed random arguments. The property: opening, fully validating and reading a store
either works or raises a :class:`~dsketch.errors.DSketchError` (or ``ValueError``) whose
message names the store; the command line exits 0 or 2 with a single line on stderr and no
traceback. Hypothesis shrinks any counterexample to a minimal damage.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsketch.cli import main
from dsketch.errors import DSketchError
from dsketch.store import open_problem, read_block, write_problem

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

_TEMPLATES: dict[str, str] = {}


def _template(root, sparse: bool) -> str:
    """A small valid store (written once per session and kind, copied per example)."""
    key = "csr" if sparse else "dense"
    if key not in _TEMPLATES:
        rng = np.random.default_rng(0)
        n, d = 40, 5
        A = sp.random(n, d, density=0.5, format="csr", random_state=rng) if sparse else rng.standard_normal((n, d))
        path = str(root / f"template-{key}.zarr")
        write_problem(path, A, rng.standard_normal(n), rng.uniform(size=n), extra={"E": rng.standard_normal((n, 2))},
                      chunk_rows=16)
        _TEMPLATES[key] = path
    return _TEMPLATES[key]


def _fresh(tmp_path_factory, sparse: bool) -> str:
    src = _template(tmp_path_factory.getbasetemp(), sparse)
    dst = str(tmp_path_factory.mktemp("damaged") / "p.zarr")
    shutil.copytree(src, dst)
    return dst


def _metadata_files(store: str) -> list[str]:
    return sorted(os.path.join(r, f) for r, _, fs in os.walk(store) for f in fs if f == "zarr.json")


def _chunk_files(store: str) -> list[str]:
    return sorted(os.path.join(r, f) for r, _, fs in os.walk(store) for f in fs if f != "zarr.json")


def _open_validate_read(store: str) -> None:
    """What a fit does with a store: open, validate fully, read every block with members."""
    spec = open_problem(store, check="full")
    for r0 in range(0, spec.n_samples, 16):
        read_block(spec, r0, min(spec.n_samples, r0 + 16), members=spec.members)


def _assert_clear(store: str) -> None:
    try:
        _open_validate_read(store)
    except (DSketchError, ValueError) as exc:
        msg = str(exc)
        assert msg and "\n" not in msg.strip()
        assert store in msg or os.path.basename(store) in msg or "member" in msg, msg


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**6) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
DTYPES = st.sampled_from(["float64", "float32", "int8", "uint64", "bool", "complex128", "string", "<U4",
                          "|O", "datetime64[s]", "nonsense"])


@SETTINGS
@given(sparse=st.booleans(), which=st.integers(0, 50), key=st.sampled_from(
    ["shape", "data_type", "chunk_grid", "fill_value", "node_type", "codecs", "attributes", "zarr_format"]),
    value=JSON_VALUES | DTYPES)
def test_damaged_metadata_gives_a_clear_error(tmp_path_factory, sparse, which, key, value):
    store = _fresh(tmp_path_factory, sparse)
    files = _metadata_files(store)
    target = files[which % len(files)]
    with open(target) as fh:
        meta = json.load(fh)
    meta[key] = value
    with open(target, "w") as fh:
        json.dump(meta, fh)
    _assert_clear(store)


@SETTINGS
@given(sparse=st.booleans(), which=st.integers(0, 50), action=st.sampled_from(["truncate", "garbage", "delete",
                                                                            "empty", "invalid-json"]),
       offset=st.integers(0, 200), junk=st.binary(min_size=1, max_size=64))
def test_damaged_files_give_a_clear_error(tmp_path_factory, sparse, which, action, offset, junk):
    store = _fresh(tmp_path_factory, sparse)
    files = _metadata_files(store) if action == "invalid-json" else _chunk_files(store) + _metadata_files(store)
    target = files[which % len(files)]
    if action == "delete":
        os.remove(target)
    elif action == "empty":
        open(target, "wb").close()
    elif action == "truncate":
        with open(target, "r+b") as fh:
            fh.truncate(min(offset, os.path.getsize(target) - 1))
    elif action == "invalid-json":
        with open(target, "wb") as fh:
            fh.write(b"{" + junk)
    else:
        with open(target, "r+b") as fh:
            fh.seek(min(offset, max(0, os.path.getsize(target) - 1)))
            fh.write(junk)
    _assert_clear(store)


@SETTINGS
@given(sparse=st.booleans(), row=st.integers(0, 39), col=st.integers(0, 4),
       value=st.sampled_from([np.nan, np.inf, -np.inf, 1e308, -0.0, 5e-324]),
       member=st.sampled_from(["A", "b", "w", "E", "A/indices", "A/indptr"]))
def test_bad_values_are_found_and_named(tmp_path_factory, sparse, row, col, value, member):
    import zarr

    store = _fresh(tmp_path_factory, sparse)
    g = zarr.open_group(store, mode="r+")
    if member.startswith("A/") and not sparse:
        member = "A"
    if member == "A" and sparse:
        member = "A/data"
    arr = g[member]
    idx = (row % arr.shape[0],) + ((col % arr.shape[1],) if arr.ndim == 2 else ())
    if arr.dtype.kind in "iu":
        arr[idx] = -1 if not np.isfinite(value) else 10**6
    else:
        arr[idx] = value
    bad = arr.dtype.kind in "iu" or not np.isfinite(value)
    if bad:
        with pytest.raises(DSketchError) as exc:
            _open_validate_read(store)
        assert store in str(exc.value)
    else:
        _open_validate_read(store)  # finite extremes are valid values


ARG_TOKENS = st.sampled_from(["--model", "--data", "--out", "--n-samples", "--n-features", "--density", "--param",
                              "--sketch", "--sketch-size", "--tol", "--max-iter", "--block-rows", "--seed",
                              "--outputs", "--regime", "--noise", "--resume", "--overwrite", "--json", "--check"])
ARG_VALUES = st.one_of(
    st.sampled_from(["logistic", "softmax", "two-layer", "ggn-score", "nope", "-1", "0", "1e400", "nan",
                     "l2=abc", "reading=Z", "h=relu", "=", "x", "", "leverage", "exact", "uniform"]),
    st.integers(-10, 10**7).map(str),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=10),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command=st.sampled_from(["fit", "make-data", "info", "convert"]),
       args=st.lists(st.one_of(ARG_TOKENS, ARG_VALUES), max_size=8))
def test_random_command_lines_fail_cleanly(tmp_path_factory, capsys, command, args):
    """No store exists at any of the generated paths, so nothing may start a cluster: every
    command either stops in argument parsing (exit 2, usage) or reports one clear line."""
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cli"))
    try:
        try:
            code = main([command, *args, "--scheduler", "tcp://127.0.0.1:1"])
        except SystemExit as exc:  # argparse: usage error or --help
            code = exc.code
    finally:
        os.chdir(cwd)
    out = capsys.readouterr()
    assert code in (0, 2), (code, out.err)
    assert "Traceback" not in out.err
    if code == 2 and not out.err.startswith("usage:"):
        assert len(out.err.strip().splitlines()) == 1, out.err
