"""The layering contract of pyproject.toml ([tool.importlinter]) holds, and breaks when it should.

CI runs pytest only, so this test is what enforces the layers (docs/how-a-fit-runs.md): ``cli`` above
``estimators`` above ``api | predict | inference`` above ``solvers`` above ``engine`` above
``models | sketch`` above ``store`` above ``errors``; models never import the store or
Zarr; nothing below the engine imports Dask.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import importlinter  # noqa: F401  (in the test extra: a missing linter must fail, not skip)

ROOT = Path(__file__).resolve().parents[1]


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the ``dsketch`` package under ``root`` with the config there."""
    exe = Path(sys.executable).with_name("lint-imports")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "importlinter.cli"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([*cmd, "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_layering_contract_is_kept():
    out = _lint(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


def test_layering_contract_catches_a_model_that_reads_the_store(tmp_path):
    """The check is live: a copy of the package whose models import Zarr and the engine fails."""
    shutil.copytree(ROOT / "dsketch", tmp_path / "dsketch", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    base = tmp_path / "dsketch" / "models" / "base.py"
    base.write_text(base.read_text() + "\nimport zarr  # noqa\nimport dsketch.engine.core  # noqa\n")
    out = _lint(tmp_path)
    assert out.returncode != 0
    assert "dsketch.models is not allowed to import zarr" in out.stdout
    assert "dsketch.models is not allowed to import dsketch.engine" in out.stdout
