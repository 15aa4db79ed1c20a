"""Plotting is an extra (``dsketch[plot]``): without matplotlib it fails with one line that
says what to install, and the rest of dsketch imports and runs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dsketch.errors import DSketchError, MissingDependencyError


class _History:
    history = {"loss": [2.0, 1.0], "grad_norm": [1.0, 0.1], "iteration": [0, 1], "seconds": [0.0, 0.5]}


def test_plot_without_matplotlib_names_the_extra(monkeypatch, tmp_path):
    from dsketch.plot import plot_convergence

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    with pytest.raises(MissingDependencyError) as exc:
        plot_convergence({"fit": _History()}, str(tmp_path / "c.png"))
    assert isinstance(exc.value, DSketchError) and isinstance(exc.value, ImportError)
    assert str(exc.value) == "plotting needs matplotlib: pip install 'dsketch[plot]'"
    assert not (tmp_path / "c.png").exists()


def test_plot_with_matplotlib_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    from dsketch.plot import plot_convergence

    plot_convergence({"fit": _History()}, str(tmp_path / "c.png"), title="t")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_package_imports_without_matplotlib_or_bokeh():
    code = ("import sys; sys.modules['matplotlib'] = None; sys.modules['bokeh'] = None\n"
            "import dsketch, dsketch.cli, dsketch.demo, dsketch.estimators, dsketch.plot\n"
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_demo_without_matplotlib_skips_only_its_plot(client, tmp_path, monkeypatch, capsys):
    """`pip install .` (no plot extra) then `dsketch demo`: the fits, results and tables are
    written; the plot is skipped with a one-line note naming the extra."""
    from dsketch.demo import run_demo

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    out = tmp_path / "demo"
    run_demo(str(out), n_samples=3000, n_features=6, density=0.5, scheduler=client.scheduler.address)
    assert (out / "demo.md").exists() and (out / "logistic_result.zarr").exists()
    assert not (out / "convergence.png").exists()
    text = capsys.readouterr().out
    assert "no convergence.png: plotting needs matplotlib: pip install 'dsketch[plot]'" in text
