"""The work a regularisation path saves, each saving checked against independent
references (glum, the KKT conditions on a dense gradient computed here, L-BFGS-B):
proximal Newton that keeps a curvature and reuses it (``ProximalCoordinateDescent(reuse=...)``,
on in paths) still reaches the exact optimum, its reusing passes form no Gram, and a resumed
fit takes the same steps; the fit at the path's start forms the intercept's curvature
alone; alphas at or above ``alpha_max`` take the null model without a fit."""

import numpy as np
import pytest
from model_helpers import enet_logistic_kkt as _kkt_violation
from model_helpers import enet_logistic_objective as _objective
from model_helpers import restricted_gram_sizes
import scipy.sparse as sp
from scipy.special import expit

import dsketch
import dsketch.path as path_mod
from dsketch.sketch.columns import ColumnSubset
from dsketch.sketch.rowsample import ExactGram
from dsketch.solvers.proximal import ProximalCoordinateDescent

RATIO = 0.5
#: glum's line search gives up at rounding level on the way to its tight tolerance, and
#: says so; its answer is still checked against the KKT conditions here
pytestmark = pytest.mark.filterwarnings("ignore:Line search failed:UserWarning",
                                        "ignore:IRLS failed to converge:UserWarning")


def _one_hot(seed=0, n=6000, levels=(40, 25, 12, 6)):
    """A one-hot CSR design of a few categoricals (each level a column but the first, the
    reference level, as in the flights benchmark) and logistic labels."""
    rng = np.random.default_rng(seed)
    blocks = []
    for k in levels:
        code = rng.integers(0, k, n)
        blocks.append(sp.csr_matrix((np.ones(n), code, np.arange(n + 1)), shape=(n, k))[:, 1:])
    A = sp.hstack(blocks, format="csr")
    beta = rng.standard_normal(A.shape[1]) * (rng.random(A.shape[1]) < 0.3)
    y = (rng.random(n) < expit(A @ beta - 0.3)).astype(float)
    return A, y


def _glum(A, y, alpha):
    import glum

    ref = glum.GeneralizedLinearRegressor(family="binomial", alpha=alpha, l1_ratio=RATIO, gradient_tol=1e-9)
    ref.fit(A, y)
    return np.asarray(ref.coef_), float(ref.intercept_)


def _grams(monkeypatch):
    """Count the exact Grams finished (whole or on a column subset)."""
    count = [0]
    for cls in (ColumnSubset, ExactGram):
        finish = cls.finish

        def spy(self, total, ctx, _finish=finish):
            count[0] += 1
            return _finish(self, total, ctx)

        monkeypatch.setattr(cls, "finish", spy)
    return count


def _fit(A, y, alpha, inner, **kw):
    return dsketch.fit((A, y), "logistic", model_params={"l1": alpha * RATIO, "l2": alpha * (1 - RATIO)},
                       fit_intercept=True, curvature="exact",
                       solver=dsketch.Solver("prox-newton", tol=1e-10, inner=inner), **kw)


@pytest.mark.parametrize("reuse", [0.9, 0.03])
def test_a_fit_that_reuses_its_curvature_reaches_the_optimum(reuse, monkeypatch):
    """From the null model, with the kept curvature reused even after slow steps (0.9) or
    only after fast ones (0.03): glum's objective and zero pattern, the KKT conditions to
    1e-9, and only the curvatures the solver says it formed were computed."""
    A, y = _one_hot()
    alpha = 0.004
    grams = _grams(monkeypatch)
    inner = ProximalCoordinateDescent(reuse=reuse)
    res = _fit(A, y, alpha, inner)
    assert res.success
    assert res.info["curvature_reused"] > 0
    assert grams[0] == res.info["curvatures_formed"]  # the reusing passes formed none
    coef, icpt = _glum(A, y, alpha)
    ours = _objective(A, y, res.x[:-1], res.x[-1], alpha, RATIO)
    assert abs(ours - _objective(A, y, coef, icpt, alpha, RATIO)) <= 1e-10 * abs(ours)
    assert _kkt_violation(A, y, res.x[:-1], res.x[-1], alpha, RATIO) <= 1e-9
    np.testing.assert_array_equal(res.x[:-1] != 0.0, np.abs(coef) > 1e-10)


@pytest.mark.filterwarnings("ignore:alphas is deprecated:DeprecationWarning")  # this glum needs alphas=
def test_a_path_on_one_hot_data_reuses_curvatures_and_equals_glum():
    """The path's fits reuse curvatures (fewer formed than iterations) and end at glum's
    path: objective, zero pattern and the KKT conditions at every alpha."""
    import glum

    A, y = _one_hot(seed=1)
    path = dsketch.fit_path((A, y), "logistic", l1_ratio=RATIO, n_alphas=10, eps=0.01, fit_intercept=True,
                            solver=dsketch.Solver(tol=1e-10))
    assert path.success
    formed = sum(r.info["curvatures_formed"] for r in path.results)
    assert sum(r.info["curvature_reused"] for r in path.results) > 0 and formed < path.n_iter.sum()
    ref = glum.GeneralizedLinearRegressor(family="binomial", l1_ratio=RATIO, alpha_search=True, alphas=path.alphas,
                                          gradient_tol=1e-9).fit(A, y)
    coef, icpt = np.asarray(ref.coef_path_), np.asarray(ref.intercept_path_)
    for k, alpha in enumerate(path.alphas):
        ours = _objective(A, y, path.coef[k, :-1], path.coef[k, -1], alpha, RATIO)
        assert abs(ours - _objective(A, y, coef[k], icpt[k], alpha, RATIO)) <= 1e-9 * abs(ours)
        assert _kkt_violation(A, y, path.coef[k, :-1], path.coef[k, -1], alpha, RATIO) <= 1e-10
    np.testing.assert_array_equal(path.coef[:, :-1] != 0.0, np.abs(coef) > 1e-10)


def test_a_kept_curvature_that_lacks_a_violating_column_is_formed_again():
    """A restricted fit whose screen leaves out most columns: the columns that come to
    violate the KKT conditions are not in the kept curvature, so it is formed again with
    them (readmissions counted), and the fit ends at glum's optimum over all columns."""
    A, y = _one_hot(seed=2)
    alpha = 0.003
    screen = np.zeros(A.shape[1] + 1, dtype=bool)
    screen[[0, 41, -1]] = True  # two columns and the intercept
    inner = ProximalCoordinateDescent(screen=screen, restrict=path_mod.RESTRICT_SHARE, reuse=0.9)
    res = _fit(A, y, alpha, inner)
    assert res.success and inner.readmitted > 0 and res.info["curvatures_formed"] >= 2
    assert res.info["curvature_reused"] > 0
    coef, icpt = _glum(A, y, alpha)
    assert _kkt_violation(A, y, res.x[:-1], res.x[-1], alpha, RATIO) <= 1e-9
    np.testing.assert_array_equal(res.x[:-1] != 0.0, np.abs(coef) > 1e-10)


@pytest.mark.parametrize("stop_at", [2, 3])
def test_resume_reuses_the_same_kept_curvature(stop_at, tmp_path):
    """A fit stopped after ``stop_at`` iterations (a reused curvature kept) and resumed from
    its checkpoint takes the same steps: the same iterations, curvatures formed and reused,
    and the same coefficients."""
    A, y = _one_hot(seed=3)
    alpha = 0.004

    def fit(**kw):
        return _fit(A, y, alpha, ProximalCoordinateDescent(reuse=0.9), **kw)

    whole = fit()
    assert whole.success and whole.nit > stop_at and whole.info["curvature_reused"] > 0
    ckpt = str(tmp_path / "run.checkpoint")

    def stop(state):
        if state.iteration == stop_at:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(checkpoint=ckpt, callback=stop)
    resumed = fit(checkpoint=ckpt, resume=True)
    assert resumed.success and resumed.nit == whole.nit
    assert resumed.info["curvatures_formed"] == whole.info["curvatures_formed"]
    assert resumed.info["curvature_reused"] == whole.info["curvature_reused"]
    np.testing.assert_allclose(resumed.x, whole.x, rtol=0, atol=1e-12)


def test_the_path_starts_with_the_intercept_curvature_alone(monkeypatch):
    """The fit at the path's start (every penalised coefficient 0) forms the ``1 x 1``
    curvature of the intercept, not the whole Gram, and still finds ``alpha_max`` of the
    intercept-only model: ``max_j |A_j^T (mean(y) - y)| / (n l1_ratio)``, computed here."""
    A, y = _one_hot(seed=4)
    sizes = restricted_gram_sizes(monkeypatch)
    grams = _grams(monkeypatch)
    path = dsketch.fit_path((A, y), "logistic", l1_ratio=RATIO, n_alphas=3, eps=0.3, fit_intercept=True)
    assert path.success and sizes[0] == 1 and grams[0] == len(sizes)  # no whole Gram at all
    expected = np.abs(A.T @ (y.mean() - y)).max() / (y.size * RATIO)
    assert path.alpha_max == pytest.approx(expected, rel=1e-10)


def test_alphas_at_or_above_alpha_max_take_the_null_model_without_a_pass():
    """At ``alpha_max`` and above (given alphas) every penalised coefficient is exactly 0 and
    the intercept is the intercept-only model's, ``logit(mean(y))``, with no pass over A;
    the KKT conditions hold on a dense gradient computed here. Below it the fits run."""
    A, y = _one_hot(seed=5)
    a_max = dsketch.fit_path((A, y), "logistic", l1_ratio=RATIO, n_alphas=1, fit_intercept=True).alpha_max
    alphas = [2.0 * a_max, a_max, 0.5 * a_max]
    path = dsketch.fit_path((A, y), "logistic", l1_ratio=RATIO, alphas=alphas, fit_intercept=True,
                            solver=dsketch.Solver(tol=1e-10))
    assert path.success and path.alpha_max == a_max
    assert path.n_passes.tolist()[:2] == [0, 0] and path.n_iter.tolist()[:2] == [0, 0] and path.n_passes[2] > 0
    for k, alpha in enumerate(path.alphas):
        assert _kkt_violation(A, y, path.coef[k, :-1], path.coef[k, -1], alpha, RATIO) <= 1e-9
    assert not path.coef[:2, :-1].any() and path.coef[2, :-1].any()
    np.testing.assert_allclose(path.coef[:2, -1], np.log(y.mean() / (1 - y.mean())), rtol=1e-9)
    assert path.results[1].info["l1"] == a_max * RATIO
