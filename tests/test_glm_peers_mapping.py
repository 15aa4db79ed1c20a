"""The benchmark ``benchmarks/glm_peers.py`` maps one objective onto glum, scikit-learn and
scipy: on a small problem, every peer, called through the benchmark's own functions, reaches
the coefficients dsketch finds for ``mean log-loss + l2/2 ||x||^2``."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from benchmarks import glm_peers as gp

L2 = 1e-3
no_glum = pytest.mark.skipif(importlib.util.find_spec("glum") is None, reason="glum is not installed")


@pytest.fixture(scope="module")
def problem() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    A = rng.standard_normal((3000, 8))
    y = (rng.random(3000) < 1.0 / (1.0 + np.exp(-A @ rng.standard_normal(8)))).astype(np.float64)
    x = gp.fit_dsketch_estimator(A, y, L2, tol=1e-12).x
    return A, y, x


def test_dsketch_reaches_the_objectives_optimum(problem: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    A, y, x = problem
    f, g = gp.loss_and_grad(A, y, x, L2)
    assert f == pytest.approx(gp.objective(A, y, x, L2), rel=1e-14)
    assert np.linalg.norm(g) < 1e-9
    assert np.allclose(gp.polish(A, y, x, L2), x, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("fit", [
    pytest.param(lambda A, y: gp.fit_sklearn(A, y, L2, "newton-cholesky", 1e-12), id="sklearn-newton-cholesky"),
    pytest.param(lambda A, y: gp.fit_sklearn(A, y, L2, "lbfgs", 1e-12), id="sklearn-lbfgs"),
    pytest.param(lambda A, y: gp.fit_scipy(A, y, L2, 1e-12), id="scipy-lbfgs"),
    pytest.param(lambda A, y: gp.fit_glum(A, y, L2, "auto", 1e-12), id="glum-auto", marks=no_glum),
    pytest.param(lambda A, y: gp.fit_glum(A, y, L2, "lbfgs", 1e-12), id="glum-lbfgs", marks=no_glum),
])
def test_peer_reaches_dsketchs_optimum(problem: tuple[np.ndarray, np.ndarray, np.ndarray], fit) -> None:  # type: ignore[no-untyped-def]
    A, y, x = problem
    xp = fit(A, y).x
    assert np.linalg.norm(xp - x) <= 1e-6 * np.linalg.norm(x)


def test_mappings() -> None:
    assert gp.glum_alpha(2e-5) == 2e-5
    assert gp.sklearn_C(1e-4, 5000) == pytest.approx(2.0)
