"""The benchmark's problems have the properties the issue asks for, and its bookkeeping
(time to a suboptimality level) is right. The end-to-end run is marked slow."""

from __future__ import annotations

import numpy as np
import pytest

from dsketch.bench import (
    PROBLEMS,
    ProblemDef,
    Run,
    _store_objective,
    _time_to,
    write_benchmark_problem,
)
from dsketch.store import read_block


def _small(name: str, n: int) -> ProblemDef:
    base = next(p for p in PROBLEMS if p.name == name)
    return ProblemDef(base.name, n, base.d, base.kind, base.density, base.l2)


def test_ill_conditioned_problem_has_a_hessian_condition_number_of_1e4(client, tmp_path):
    pdef = _small("ill-dense", 20_000)
    spec = write_benchmark_problem(str(tmp_path / "ill.zarr"), pdef, client, block_rows=4096)
    A = read_block(spec, 0, spec.n_samples).A
    # logistic Hessian at x = 0: A^T A / (4 n) + l2 I
    H = A.T @ A / (4 * spec.n_samples) + pdef.l2 * np.eye(pdef.d)
    ev = np.linalg.eigvalsh(H)
    assert ev[-1] / ev[0] >= 1e4


def test_sparse_problem_density_and_power_law_columns(client, tmp_path):
    pdef = _small("sparse", 20_000)
    spec = write_benchmark_problem(str(tmp_path / "sp.zarr"), pdef, client, block_rows=4096)
    assert spec.sparse
    assert 0.003 < spec.density < 0.006
    A = read_block(spec, 0, spec.n_samples).A
    freq = np.sort(np.bincount(A.indices, minlength=pdef.d))[::-1]
    assert freq[0] > 50 * max(freq[pdef.d // 2], 1)  # a few columns carry most entries


def test_time_to_level_and_objective(client, tmp_path):
    pdef = _small("well-dense", 3000)
    spec = write_benchmark_problem(str(tmp_path / "w.zarr"), pdef, client, block_rows=1024)
    blk = read_block(spec, 0, spec.n_samples)
    x = np.linspace(-0.1, 0.1, pdef.d)
    z = blk.A @ x
    ref = np.mean(np.logaddexp(0, z) - blk.b * z) + 0.5 * pdef.l2 * x @ x
    assert _store_objective(spec, x, pdef.l2) == pytest.approx(ref, rel=1e-13)
    run = Run("x", trace=[(1.0, 1.1, 3), (2.0, 1.0 + 1e-7, 5), (3.0, 1.0 + 1e-11, 7)])
    assert _time_to(run, 1.0, 1e-6) == (2.0, 5)
    assert _time_to(run, 1.0, 1e-10) == (3.0, 7)
    assert np.isnan(_time_to(run, 1.0, 1e-12)[0])


@pytest.mark.slow
def test_benchmark_end_to_end(tmp_path):
    from dsketch.bench import run_benchmark

    text = run_benchmark(str(tmp_path), scale=0.001, problems=("well-dense",), repeats=1)
    assert "dsketch exact Newton" in text and "scipy L-BFGS-B" in text
    assert (tmp_path / "benchmark.md").exists() and (tmp_path / "benchmark.png").exists()
