"""Errors a user can trigger derive from DSketchError and say what to do.

Three kinds of checks: a walk over the package's source that refuses a bare built-in
exception (``raise ValueError(...)``) outside an explicit allow-list; representative bad
inputs through the Python API, the estimators and the command line, each giving the
dsketch error (still a ValueError or TypeError where scikit-learn expects one) whose
message names the fix; and a failing task on an embedded cluster, which the command line
reports as one line with no worker log (the worker's log returns with DSKETCH_DEBUG=1).
"""

from __future__ import annotations

import ast
import inspect
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import dsketch
from dsketch import errors
from dsketch.errors import (
    DSketchError,
    DSketchTypeError,
    InvalidParameterError,
    InvalidTargetError,
    NonFiniteError,
    UnknownNameError,
    UnusedOptionError,
)

PACKAGE = pathlib.Path(dsketch.__file__).parent
REPO = PACKAGE.parent

# Built-in exceptions a user-facing raise must not use bare: each has a DSketchError
# subclass that also derives from it (errors.py), so `except ValueError` keeps working.
BUILTINS = frozenset({
    "Exception", "ValueError", "TypeError", "RuntimeError", "KeyError", "IndexError",
    "LookupError", "FileNotFoundError", "FileExistsError", "OSError", "IOError",
    "PermissionError", "MemoryError", "ConnectionError", "TimeoutError", "AttributeError",
})

# A bare raise that no user input can reach carries this comment, with the reason after it
# (a broken invariant of the package, a system call's errno), on the line above the raise
# or on its first line.
INTERNAL_MARK = "# internal:"

# Files whose bare raises are not converted yet, each with the reason. An entry is removed
# once its file is converted (test_allow_list_is_not_stale says when).
ALLOWED_FILES: dict[str, str] = {}  # relative path -> why its bare raises are allowed (none now)


def _bare_raises(path: pathlib.Path) -> list[tuple[int, str]]:
    """(line, exception name) of each ``raise Builtin(...)`` in ``path`` not marked internal."""
    text = path.read_text()
    lines = text.splitlines()
    found = []
    for node in ast.walk(ast.parse(text, filename=str(path))):
        if not isinstance(node, ast.Raise) or node.exc is None:
            continue
        target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
        if isinstance(target, ast.Name) and target.id in BUILTINS:
            marked = [ln for ln in lines[max(node.lineno - 2, 0):node.lineno] if INTERNAL_MARK in ln]
            if marked:
                reason = marked[-1].split(INTERNAL_MARK, 1)[1].strip()
                assert reason, f"{path}:{node.lineno}: '{INTERNAL_MARK}' needs a reason after it"
                continue
            found.append((node.lineno, target.id))
    return found


def _sources() -> list[pathlib.Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_bare_builtin_raise_outside_allow_list():
    offenders = []
    for path in _sources():
        rel = path.relative_to(PACKAGE).as_posix()
        if rel in ALLOWED_FILES:
            continue
        offenders += [f"dsketch/{rel}:{line}: raise {name}(...)" for line, name in _bare_raises(path)]
    assert not offenders, (
        "raise a subclass of dsketch.errors.DSketchError (InvalidParameterError, DSketchTypeError, ...) "
        f"whose message says what to do, or mark an unreachable one '{INTERNAL_MARK} <why>':\n"
        + "\n".join(offenders)
    )


def test_allow_list_is_not_stale():
    """Each allowed file exists and still has a bare raise; drop the entry once it has none."""
    stale = [rel for rel in ALLOWED_FILES
             if not (PACKAGE / rel).exists() or not _bare_raises(PACKAGE / rel)]
    assert not stale, f"remove these from ALLOWED_FILES: {stale}"


def test_the_walk_finds_a_bare_raise(tmp_path):
    """The check itself: a bare raise is found, a marked one is not, a dsketch one is not."""
    src = tmp_path / "m.py"
    src.write_text(
        "def f(x):\n"
        "    if x < 0:\n"
        "        raise ValueError('x < 0')\n"
        "    if x == 1:\n"
        "        raise KeyError(x)  # internal: callers pass 0 or 2 only\n"
        "    if x == 2:\n"
        "        # internal: the caller checked x != 2\n"
        "        raise RuntimeError(x)\n"
        "    raise InvalidParameterError('no')\n"
    )
    assert _bare_raises(src) == [(3, "ValueError")]


def test_every_error_class_derives_from_dsketch_error():
    for name in errors.__all__:
        obj = getattr(errors, name)
        if inspect.isclass(obj) and issubclass(obj, BaseException) and not issubclass(obj, Warning):
            assert issubclass(obj, DSketchError), name
    # the classes for bad arguments stay catchable as the built-ins scikit-learn expects
    assert issubclass(InvalidParameterError, ValueError)
    assert issubclass(InvalidTargetError, ValueError)
    assert issubclass(DSketchTypeError, TypeError)


# -- behaviour: bad input through the API, the estimators and the command line ------------


def _logit_data(n=400, d=3, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, d))
    b = (rng.random(n) < 1.0 / (1.0 + np.exp(-A @ np.ones(d)))).astype(float)
    return A, b


def test_fit_with_labels_outside_0_1_names_the_row_and_the_fix(tmp_path):
    A, b = _logit_data()
    b[123] = 2.0
    path = str(tmp_path / "p.zarr")
    dsketch.write_problem(path, A, b)
    with pytest.raises(InvalidTargetError, match=r"row 123.*Recode the labels as 0/1") as info:
        dsketch.fit(path, "logistic")
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda: dsketch.models.get_model("logistic", l2=-1.0), InvalidParameterError, r"l2 must be a finite number >= 0"),
    (lambda: dsketch.models.get_model("logistic", power=2), DSketchTypeError, r"takes no parameter.*accepted"),
    (lambda: dsketch.models.get_model("tweedie"), InvalidParameterError, r"needs its power \(--param power=P"),
    (lambda: dsketch.models.get_model("tweedie", power=0.5), InvalidParameterError, r"use 0 for the normal"),
    (lambda: dsketch.sketch.make_sketch("countsketch", bogus=1), DSketchTypeError, r"accepted:"),
    (lambda: dsketch.sketch.make_sketch(3), DSketchTypeError, r"kind must be a sketch name"),
    (lambda: dsketch.store.open_problem(".", check="quick"), InvalidParameterError, r"'metadata' or 'full'"),
], ids=["l2", "unknown-param", "tweedie-power", "tweedie-gap", "sketch-param", "sketch-kind", "check"])
def test_bad_arguments_raise_dsketch_errors(call, error, match):
    with pytest.raises(error, match=match) as info:
        call()
    assert isinstance(info.value, DSketchError)


def test_write_and_convert_refuse_bad_options(tmp_path):
    from dsketch.store.convert import convert

    A, b = _logit_data()
    with pytest.raises(InvalidParameterError, match="floating dtype"):
        dsketch.store.ProblemBuilder.create(str(tmp_path / "i.zarr"), n_samples=4, n_features=2, sparse=False,
                                            dtype="int32")
    np.save(tmp_path / "A.npy", A)
    with pytest.raises(UnknownNameError, match="choose one of"):
        convert(str(tmp_path / "A.npy"), str(tmp_path / "o.zarr"), fmt="parquet")
    with pytest.raises(UnusedOptionError, match="applies only to AnnData"):
        convert(str(tmp_path / "A.npy"), str(tmp_path / "o.zarr"), fmt="npy", layer="x")


def test_estimators_raise_value_errors_that_are_dsketch_errors():
    from dsketch.estimators import LogisticRegression, PoissonRegressor

    A, b = _logit_data()
    with pytest.raises(InvalidParameterError, match="C must be a positive number"):
        LogisticRegression(C=-1.0).fit(A, b)
    with pytest.raises(InvalidTargetError, match="at least 2 classes"):
        LogisticRegression().fit(A, np.zeros(A.shape[0]))
    with pytest.raises(InvalidTargetError, match=r"Pass counts \(y >= 0\)"):
        PoissonRegressor().fit(A, b - 1.0)
    offset = np.zeros(A.shape[0])
    offset[5] = np.nan
    with pytest.raises(NonFiniteError, match="remove or impute them"):
        PoissonRegressor().fit(A, b, offset=offset)
    with pytest.raises(ValueError, match="max_iter must be a positive integer"):  # sklearn's contract
        PoissonRegressor(max_iter=0).fit(A, b)


@pytest.mark.parametrize(("argv", "match"), [
    (["fit", "--data", "x.zarr", "--model", "logistic", "--out", "r", "--param", "l2"], "--param expects KEY=VALUE"),
    (["fit", "--data", "x.zarr", "--model", "tweedie", "--out", "r"], "needs its power"),
], ids=["param", "tweedie"])
def test_cli_reports_bad_options_in_one_line(tmp_path, monkeypatch, capsys, argv, match):
    from dsketch.cli import main

    A, b = _logit_data()
    dsketch.write_problem(str(tmp_path / "x.zarr"), A, b)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DSKETCH_DEBUG", raising=False)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dsketch fit: error: ") and match in err[0]


# -- a task failing on an embedded cluster: one line, no worker log -----------------------


def _bad_store(kind: str, path: pathlib.Path) -> tuple[str, str]:
    """A store whose fit fails inside a task; the model and a fragment of the error."""
    A, b = _logit_data(n=2000, d=4)
    if kind == "label":
        b[1500] = 2.0
        dsketch.write_problem(str(path), A, b, chunk_rows=500)
        return "logistic", "Recode the labels as 0/1"
    if kind == "count":
        b[1700] = -3.0
        dsketch.write_problem(str(path), A, b, chunk_rows=500)
        return "poisson", "Poisson regression needs finite targets >= 0"
    if kind == "nan":
        import zarr

        dsketch.write_problem(str(path), A, b, chunk_rows=500)
        group = zarr.open_group(str(path), mode="r+")
        block = group["A"][1000:1500]
        block[7, 2] = np.nan
        group["A"][1000:1500] = block
        return "logistic", "holds NaN or infinite values"
    raise AssertionError(kind)


def _env(debug: bool = False) -> dict[str, str]:
    """This environment for a child Python: this checkout's dsketch, an embedded cluster."""
    env = {k: v for k, v in os.environ.items() if k not in ("DSKETCH_DEBUG", "DSKETCH_SCHEDULER")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    if debug:
        env["DSKETCH_DEBUG"] = "1"
    return env


def _run_cli(args: list[str], cwd: pathlib.Path, debug: bool) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dsketch.cli", *args], cwd=cwd, env=_env(debug),
                          capture_output=True, text=True, timeout=240)


@pytest.mark.parametrize("kind", [
    "label",
    pytest.param("count", marks=pytest.mark.slow),
    pytest.param("nan", marks=pytest.mark.slow),
])
def test_failing_task_ends_in_one_line_without_worker_logs(tmp_path, kind):
    model, fragment = _bad_store(kind, tmp_path / "bad.zarr")
    out = _run_cli(["fit", "--data", "bad.zarr", "--model", model, "--out", "r", "--workers", "2"],
                   tmp_path, debug=False)
    assert out.returncode == 2, out.stderr
    assert "Compute Failed" not in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert "distributed." not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("dsketch fit: error: ") and fragment in lines[0]


def test_debug_shows_the_worker_log(tmp_path):
    model, fragment = _bad_store("label", tmp_path / "bad.zarr")
    out = _run_cli(["fit", "--data", "bad.zarr", "--model", model, "--out", "r", "--workers", "2"],
                   tmp_path, debug=True)
    assert out.returncode != 0
    assert "distributed.worker - ERROR - Compute Failed" in out.stderr
    assert fragment in out.stderr and "Traceback" in out.stderr


def test_failing_task_through_the_api_raises_without_worker_logs(tmp_path):
    """``fit`` on an embedded cluster: the caller gets the dsketch error, stderr stays empty."""
    _bad_store("label", tmp_path / "bad.zarr")
    script = (
        "import dsketch\n"
        "if __name__ == '__main__':\n"
        "    try:\n"
        "        dsketch.fit('bad.zarr', 'logistic', cluster=dsketch.Cluster(n_workers=2))\n"
        "    except dsketch.errors.InvalidTargetError as exc:\n"
        "        print('raised:', exc)\n"
    )
    (tmp_path / "run.py").write_text(script)
    out = subprocess.run([sys.executable, "run.py"], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                         timeout=240)
    assert out.returncode == 0, out.stderr
    assert "raised:" in out.stdout and "Recode the labels as 0/1" in out.stdout
    assert "Compute Failed" not in out.stderr and "Traceback" not in out.stderr, out.stderr
