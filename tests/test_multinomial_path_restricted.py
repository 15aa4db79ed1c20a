"""Multinomial elastic-net paths above ``dK = FULL_CURVATURE_MAX``: on the screened features
the curvature pass forms the whole Hessian (every class pair of each such feature), so the
proximal Newton steps couple the classes. Judged against scikit-learn's saga and the KKT
conditions on a gradient written out densely (tests/test_multinomial_elastic_net.py), and
against the block model's iteration count."""

from __future__ import annotations

import numpy as np
import pytest

import dsketch
import dsketch.path as path_mod
from dsketch.models.multinomial import FULL_CURVATURE_MAX
from dsketch.sketch.columns import ColumnSubset
from dsketch.solvers.proximal import ProximalCoordinateDescent
from tests.test_multinomial_elastic_net import _check, _data, _saga

K = 5
RATIO = 0.5
TIGHT = dsketch.Solver(tol=1e-10, max_iter=400)


@pytest.fixture(scope="module")
def problem():
    """3000 x 450 with 5 classes (dK = 451 x 5 = 2255 with the intercepts, above the
    threshold); three features carry the signal."""
    A, y = _data(n=3000, d=450, k=K, seed=11)
    assert (A.shape[1] + 1) * K > FULL_CURVATURE_MAX
    return A, y


def _restricted_grams(monkeypatch):
    """The shapes of the restricted curvatures the fits form."""
    shapes = []
    finish = ColumnSubset.finish

    def spy(self, total, ctx):
        out = finish(self, total, ctx)
        shapes.append(out.gram.shape)
        return out

    monkeypatch.setattr(ColumnSubset, "finish", spy)
    return shapes


def test_path_equals_saga_with_the_whole_hessian_on_the_screened_features(problem, monkeypatch):
    A, y = problem
    shapes = _restricted_grams(monkeypatch)
    path = dsketch.fit_path((A, y), "multinomial", l1_ratio=RATIO, n_alphas=7, eps=0.1, fit_intercept=True,
                            solver=TIGHT)
    assert path.success
    # the curvature was the whole Hessian on whole features (K x K class blocks), never the blocks
    assert shapes and all(len(s) == 2 and s[0] == s[1] and s[0] % K == 0 and s[0] <= FULL_CURVATURE_MAX
                          for s in shapes)
    assert max(s[0] for s in shapes) < 0.5 * A.shape[1] * K
    assert 0 < path.n_active[-1] < 0.1 * A.shape[1] * K
    for i in range(1, path.alphas.size):  # the first alpha's fit is all zeros
        alpha = float(path.alphas[i])
        ref = _saga(A, y, 1.0 / (alpha * y.size), RATIO)
        _check(A, y, path.coef[i], ref, alpha * RATIO, alpha * (1 - RATIO))


def test_far_fewer_iterations_than_the_block_model(problem):
    A, y = problem
    kw = dict(l1_ratio=RATIO, n_alphas=4, eps=0.3, fit_intercept=True, solver=TIGHT)
    full = dsketch.fit_path((A, y), "multinomial", **kw)
    block = dsketch.fit_path((A, y), "multinomial", model_params={"preconditioner": "block"}, **kw)
    assert full.success and block.success
    assert full.n_iter.sum() < 0.5 * block.n_iter.sum()
    assert full.n_iter.max() <= 8
    # the same minimisers: penalised coefficients (the intercepts are unique up to a common shift)
    d = A.shape[1]
    np.testing.assert_allclose(full.coef[:, : d * K], block.coef[:, : d * K], atol=1e-6)
    np.testing.assert_array_equal(full.coef[:, : d * K] != 0.0, block.coef[:, : d * K] != 0.0)


@pytest.mark.parametrize("kind,size", [("uniform", 800), ("countsketch", 1500)])
def test_sampled_restricted_curvature_reaches_the_exact_optimum(problem, kind, size, monkeypatch):
    """The whole Hessian on the screened features from sampled rows (or an embedding): the
    class-pair weights are negative off the diagonal, and the path still ends at saga's optimum."""
    A, y = problem
    shapes = _restricted_grams(monkeypatch)
    path = dsketch.fit_path((A, y), "multinomial", l1_ratio=RATIO, n_alphas=5, eps=0.2, fit_intercept=True,
                            curvature=dsketch.Curvature(kind, size=size), solver=TIGHT)
    assert path.success and shapes and all(len(s) == 2 for s in shapes)
    for i in (2, 4):
        alpha = float(path.alphas[i])
        _check(A, y, path.coef[i], _saga(A, y, 1.0 / (alpha * y.size), RATIO), alpha * RATIO, alpha * (1 - RATIO))


def test_a_feature_the_screen_wrongly_discards_comes_back(problem, monkeypatch):
    """A screen that leaves out every class of the feature with the largest gradient among
    those still zero: a class's KKT violation adds the feature to the restricted curvature,
    and every fit satisfies the KKT conditions."""
    A, y = problem
    screen = path_mod._screen
    dropped = []

    def too_aggressive(grad, x, threshold, n_unpenalized):
        keep = screen(grad, x, threshold, n_unpenalized)
        X, G = x[:-K].reshape(-1, K), np.abs(grad[:-K]).reshape(-1, K)
        zero = np.flatnonzero(~X.any(axis=1) & keep[:-K].reshape(-1, K).any(axis=1))
        if zero.size:
            j = zero[np.argmax(G[zero].max(axis=1))]
            keep[j * K : (j + 1) * K] = False
            dropped.append(j)
        return keep

    monkeypatch.setattr(path_mod, "_screen", too_aggressive)
    shapes = _restricted_grams(monkeypatch)
    path = dsketch.fit_path((A, y), "multinomial", l1_ratio=RATIO, n_alphas=5, eps=0.2, fit_intercept=True,
                            solver=TIGHT)
    assert path.success and dropped and path.readmitted.sum() > 0 and shapes
    back = [j for i, j in enumerate(dropped) if path.coef[i, j * K : (j + 1) * K].any()]
    assert back  # a discarded feature is nonzero in the fit that discarded it
    for i in range(1, path.alphas.size):
        alpha = float(path.alphas[i])
        _check(A, y, path.coef[i], _saga(A, y, 1.0 / (alpha * y.size), RATIO), alpha * RATIO, alpha * (1 - RATIO))


def test_resume_takes_the_same_restricted_steps(problem, tmp_path):
    """A restricted fit stopped after two iterations and resumed from its checkpoint ends
    where the uninterrupted fit ends, after as many iterations."""
    A, y = problem
    path = dsketch.fit_path((A, y), "multinomial", l1_ratio=RATIO, n_alphas=3, eps=0.3, fit_intercept=True,
                            solver=TIGHT)
    alpha, x0 = float(path.alphas[-1]) * 0.7, path.coef[-1]
    keep = path_mod._screen(path.results[-1].jac, x0, RATIO * (2 * alpha - path.alphas[-1]), K)

    def fit(**kw):
        inner = ProximalCoordinateDescent(screen=keep, restrict=path_mod.RESTRICT_SHARE)
        return dsketch.fit((A, y), "multinomial", model_params={"l1": alpha * RATIO, "l2": alpha * (1 - RATIO)},
                           fit_intercept=True, x0=x0, solver=dsketch.Solver("prox-newton", tol=1e-10, inner=inner),
                           **kw)

    whole = fit()
    ckpt = str(tmp_path / "run.checkpoint")

    def stop(state):
        if state.iteration == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(checkpoint=ckpt, callback=stop)
    resumed = fit(checkpoint=ckpt, resume=True)
    assert whole.success and resumed.success and whole.nit > 2
    assert resumed.nit == whole.nit
    np.testing.assert_allclose(resumed.x, whole.x, rtol=0, atol=1e-12)


def test_the_checkpointed_inner_state_keeps_the_needed_columns():
    """The columns a restricted fit has needed (a KKT violator's among them) survive a
    checkpoint: a resumed fit forms its curvature on the same ones, not on the screen's alone."""
    l1, screen, x = np.full(10, 0.1), np.zeros(10, dtype=bool), np.zeros(10)
    screen[0] = True
    grad = np.zeros(10)
    grad[3] = 0.5  # |g_3| > l1_3: a violator outside the screen
    before = ProximalCoordinateDescent(screen=screen, restrict=0.9)
    np.testing.assert_array_equal(before.curvature_columns(x, grad, l1), [0, 3])
    resumed = ProximalCoordinateDescent(screen=screen, restrict=0.9)
    resumed.load_state_dict(before.state_dict())
    np.testing.assert_array_equal(resumed.curvature_columns(x, None, l1), [0, 3])
    assert resumed.readmitted == 1
    fresh = ProximalCoordinateDescent(screen=screen, restrict=0.9)
    np.testing.assert_array_equal(fresh.curvature_columns(x, None, l1), [0])
