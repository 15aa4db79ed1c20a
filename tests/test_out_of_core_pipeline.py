"""pipelines/out_of_core.py runs end to end at a small size (it once failed after its
streamed fit on a keyword the API had dropped): the streamed and persisted fits agree to
the last bit, as the benchmark page promises, and the covariance step reports."""

from __future__ import annotations

import os
import subprocess
import sys


ROOT = os.path.join(os.path.dirname(__file__), os.pardir)


def test_out_of_core_pipeline_small(tmp_path):
    out = tmp_path / "ooc"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "pipelines", "out_of_core.py"), "--rows", "20000", "--features", "8",
         "--limit", "1GiB", "--persist-limit", "1GiB", "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": os.path.abspath(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = (out / "out_of_core.md").read_text()
    assert "max |x_streamed - x_persisted| = 0\n" in text
    assert text.count("| True |") == 2  # both fits converged
    assert "Robust (HC1) covariance of the streamed fit" in text
