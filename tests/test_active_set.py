"""Proximal Newton's inner solve and the column-restricted curvature of regularisation
paths, against independent references: a bound-constrained quasi-Newton solve of the same
quadratic model (scipy), dense Grams computed here, glum's and scikit-learn's paths, and the
KKT conditions on a dense gradient."""

import numpy as np
import pytest
from model_helpers import enet_logistic_kkt as _kkt_violation
from model_helpers import enet_logistic_objective as _objective
from model_helpers import restricted_gram_sizes as _restricted_sizes
from scipy.optimize import minimize

from dsketch.solvers.proximal import ProximalCoordinateDescent


def _model_by_lbfgsb(H, g, x, l1):
    """``argmin_p g.p + p^T H p / 2 + sum_j l1_j |x_j + p_j|`` with ``x + p = u - v``,
    ``u, v >= 0`` (a smooth bound-constrained problem), by scipy's L-BFGS-B."""
    d = x.size

    def fun(uv):
        p = uv[:d] - uv[d:] - x
        hp = H @ p
        val = g @ p + 0.5 * p @ hp + l1 @ (uv[:d] + uv[d:])
        grad = g + hp
        return val, np.r_[grad + l1, -grad + l1]

    start = np.r_[np.maximum(x, 0.0), np.maximum(-x, 0.0)]
    res = minimize(fun, start, jac=True, method="L-BFGS-B", bounds=[(0, None)] * (2 * d),
                   options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 20_000, "maxcor": 50})
    return res.x[:d] - res.x[d:] - x, res.fun


def _model_value(H, g, x, l1, p):
    return float(g @ p + 0.5 * p @ H @ p + l1 @ np.abs(x + p))


@pytest.mark.parametrize("seed", [0, 1])
def test_coordinate_descent_minimises_the_penalised_quadratic_model(seed):
    """The compiled active-set sweeps reach the minimiser of the inner problem, with an
    unpenalised coordinate and nonzero coordinates that the model sets to zero."""
    rng = np.random.default_rng(seed)
    d = 60
    B = rng.standard_normal((200, d)) * rng.uniform(0.2, 2.0, d)
    H = B.T @ B / 200 + 1e-3 * np.eye(d)
    x = np.where(rng.random(d) < 0.3, rng.standard_normal(d), 0.0)
    g = rng.standard_normal(d) * 0.5
    l1 = np.full(d, 0.3)
    l1[-1] = 0.0
    p = ProximalCoordinateDescent().minimise(H, g, x, l1, tol=1e-12)
    p_ref, f_ref = _model_by_lbfgsb(H, g, x, l1)
    f = _model_value(H, g, x, l1, p)
    assert f <= f_ref + 1e-9 * abs(f_ref)
    z, z_ref = x + p, x + p_ref
    assert 0 < np.count_nonzero(z) < d
    np.testing.assert_array_equal(z != 0.0, np.abs(z_ref) > 1e-7)
    np.testing.assert_allclose(z, z_ref, atol=1e-6)


def _nested_one_hot_model(seed, l1_value):
    """The quadratic model of a one-hot logistic fit whose columns are nearly collinear (60
    levels nested in 8 groups, as flights' tail numbers in carriers; a third categorical;
    an unpenalised intercept), where coordinate descent converges slowly."""
    rng = np.random.default_rng(seed)
    n, d = 3000, 81
    sub = rng.integers(0, 60, n)
    A = np.zeros((n, d))
    A[np.arange(n), sub] = 1.0
    A[np.arange(n), 60 + sub % 8] = 1.0
    A[np.arange(n), 68 + rng.integers(0, 12, n)] = 1.0
    A[:, -1] = 1.0
    D = rng.uniform(0.1, 0.25, n)
    H = A.T @ (D[:, None] * A) / n + 1e-4 * np.eye(d)
    x = np.where(rng.random(d) < 0.3, 0.3 * rng.standard_normal(d), 0.0)
    l1 = np.full(d, l1_value)
    l1[-1] = 0.0
    return H, 0.05 * rng.standard_normal(d), x, l1


@pytest.mark.parametrize("screened", [False, True])
def test_the_exact_solve_on_the_support_is_the_minimiser_of_the_model(screened, monkeypatch):
    """A model on which the sweeps converge slowly is minimised by the Cholesky solve on
    the support the first sweeps reach, grown by the coordinates that violate the model's
    KKT conditions off it (with a screen that leaves out half the coordinates, some of
    which must enter): L-BFGS-B's minimiser of the same model."""
    import dsketch.solvers.proximal as prox

    H, g, x, l1 = _nested_one_hot_model(0, 0.02)
    screen = (np.arange(x.size) % 2 == 0) | (l1 == 0.0) if screened else None
    solved = []
    on_support = prox.ProximalCoordinateDescent._on_support

    def spy(*args):
        out = on_support(*args)
        solved.append(out[0] is not None)
        return out

    monkeypatch.setattr(prox.ProximalCoordinateDescent, "_on_support", staticmethod(spy))
    p = ProximalCoordinateDescent(on_support=True).minimise(H, g, x, l1, tol=1e-10, screen=screen)
    assert solved and solved[-1]  # the direction is the solve's
    p_ref, f_ref = _model_by_lbfgsb(H, g, x, l1)
    assert _model_value(H, g, x, l1, p) <= f_ref + 1e-9 * abs(f_ref)
    z, z_ref = x + p, x + p_ref
    assert 0 < np.count_nonzero(z) < x.size
    if screened:
        assert np.any((z != 0.0) & ~screen)  # a coordinate the screen left out entered
    np.testing.assert_array_equal(z != 0.0, np.abs(z_ref) > 1e-7)
    np.testing.assert_allclose(z, z_ref, atol=1e-5)


# ------------------------------------------------------------------ restricted Gram
@pytest.mark.parametrize("kind", ["exact", "uniform"])
@pytest.mark.parametrize("sparse", [False, True])
def test_column_restricted_gram_is_the_dense_sub_block(sparse, kind):
    """The exact Gram on a column subset, two blocks summed, equals ``A_S^T diag(D) A_S``
    computed densely here (weights of both signs, an all-zero column in the subset); so
    does a uniform sample of every row (probability 1)."""
    import scipy.sparse as sp

    from dsketch.sketch import SketchContext, make_sketch
    from dsketch.sketch.columns import ColumnSubset

    rng = np.random.default_rng(3)
    n, d = 300, 40
    A = rng.standard_normal((n, d)) * (rng.random((n, d)) < (0.15 if sparse else 1.0))
    A[:, 7] = 0.0
    D = rng.uniform(-0.5, 2.0, n)
    cols = np.array([0, 3, 7, 8, 21, 39])
    sketch = ColumnSubset(make_sketch(kind), cols)
    ctx = SketchContext(seed=0, iteration=0, n_samples=n, n_features=d, sketch_size=n)
    blocks = [(0, 120), (120, n)]
    parts = [sketch.block(sp.csr_matrix(A[r0:r1]) if sparse else A[r0:r1], D[r0:r1], r0, ctx) for r0, r1 in blocks]
    total = {k: sum(p[k] for p in parts) for k in parts[0]}
    gram = sketch.finish(total, ctx).gram
    ref = A[:, cols].T @ (D[:, None] * A[:, cols])
    assert gram.shape == (cols.size, cols.size)
    np.testing.assert_allclose(gram, ref, rtol=1e-12, atol=1e-12)


def test_column_gram_kernel_reads_non_canonical_rows_and_fills_the_upper_triangle():
    """The column-map Gram kernel on a CSR block with unsorted and duplicate entries (and
    rows with no entry in the subset): the upper triangle of ``A_S^T diag(w) A_S`` computed
    densely here, the strict lower triangle left 0; mirrored, the whole matrix."""
    import scipy.sparse as sp

    from dsketch.sketch._sparse_gram import csr_weighted_gram_upper, mirror_upper

    rng = np.random.default_rng(11)
    n, d = 200, 30
    rows = np.repeat(np.arange(n), 5)
    cols_all = rng.integers(0, d, rows.size)  # duplicates within a row, in no order
    vals = rng.standard_normal(rows.size)
    A = sp.csr_matrix((vals, cols_all, np.arange(0, rows.size + 1, 5)), shape=(n, d))
    assert not A.has_canonical_format
    w = rng.uniform(-1.0, 2.0, n)
    w[::9] = 0.0
    cols = np.array([1, 2, 5, 13, 14, 29])
    dense = A.toarray()[:, cols]
    ref = dense.T @ (w[:, None] * dense)
    upper = csr_weighted_gram_upper(A, w, cols)
    np.testing.assert_allclose(np.triu(upper), np.triu(ref), rtol=1e-12, atol=1e-12)
    assert not np.tril(upper, -1).any()
    np.testing.assert_allclose(mirror_upper(upper), ref, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ paths
def _sparse_logistic(seed=4, n=2500, d=60, k=8):
    import scipy.sparse as sp
    from scipy.special import expit

    rng = np.random.default_rng(seed)
    A = sp.random(n, d, density=0.2, format="csr", random_state=rng, data_rvs=rng.standard_normal)
    beta = np.zeros(d)
    beta[:k] = rng.choice([-1.0, 1.0], k) * rng.uniform(0.8, 2.0, k)
    y = (rng.random(n) < expit(A @ beta - 0.2)).astype(float)
    return A, y


@pytest.mark.filterwarnings("ignore:alphas is deprecated:DeprecationWarning")  # this glum needs alphas=
@pytest.mark.parametrize("restricted", [True, False])
def test_path_with_and_without_restricted_curvature_equals_glum(restricted, monkeypatch):
    import glum

    import dsketch

    A, y = _sparse_logistic()
    sizes = _restricted_sizes(monkeypatch)
    path = dsketch.fit_path((A, y), "logistic", l1_ratio=0.8, n_alphas=8, eps=0.05, fit_intercept=True,
                            solver=dsketch.Solver(tol=1e-10), restricted_curvature=restricted)
    assert path.success
    assert (min(sizes) < 0.5 * A.shape[1]) if restricted else not sizes
    ref = glum.GeneralizedLinearRegressor(family="binomial", l1_ratio=0.8, alpha_search=True, alphas=path.alphas,
                                          gradient_tol=1e-12).fit(A, y)
    coef, icpt = np.asarray(ref.coef_path_), np.asarray(ref.intercept_path_)
    for k, alpha in enumerate(path.alphas):
        ours = _objective(A, y, path.coef[k, :-1], path.coef[k, -1], alpha, 0.8)
        theirs = _objective(A, y, coef[k], icpt[k], alpha, 0.8)
        assert abs(ours - theirs) <= 1e-6 * abs(theirs)
        assert _kkt_violation(A, y, path.coef[k, :-1], path.coef[k, -1], alpha, 0.8) <= 1e-7
    np.testing.assert_array_equal(path.coef[:, :-1] != 0.0, np.abs(coef) > 1e-10)
    assert 0 < path.n_active[-1] < A.shape[1]


@pytest.mark.parametrize("restricted", [True, False])
def test_a_column_the_screen_wrongly_discards_comes_back(restricted, monkeypatch):
    """A screen that leaves out the column with the largest gradient (which enters at the
    next alpha): the KKT check takes it back, and every fit satisfies the KKT conditions
    on a dense gradient computed here."""
    import dsketch
    import dsketch.path as path_mod

    A, y = _sparse_logistic(seed=5)
    screen = path_mod._screen
    dropped = []

    def too_aggressive(grad, x, threshold, n_unpenalized):
        keep = screen(grad, x, threshold, n_unpenalized)
        out = np.flatnonzero((x[:-1] == 0.0) & keep[:-1])
        if out.size:
            j = out[np.argmax(np.abs(grad[out]))]
            keep[j] = False
            dropped.append(j)
        return keep

    monkeypatch.setattr(path_mod, "_screen", too_aggressive)
    sizes = _restricted_sizes(monkeypatch)
    path = dsketch.fit_path((A, y), "logistic", l1_ratio=1.0, n_alphas=6, eps=0.1, fit_intercept=True,
                            solver=dsketch.Solver(tol=1e-10), restricted_curvature=restricted)
    assert path.success and dropped and path.readmitted.sum() > 0
    assert bool(sizes) == restricted
    back = [j for k, j in enumerate(dropped) if path.coef[k, j] != 0.0]
    assert back  # a discarded column is nonzero in the fit that discarded it
    for k, alpha in enumerate(path.alphas):
        assert _kkt_violation(A, y, path.coef[k, :-1], path.coef[k, -1], alpha, 1.0) <= 1e-7


def test_a_sketch_with_preliminary_passes_is_not_restricted():
    from dsketch.errors import DSketchError, InvalidOptionError
    from dsketch.sketch import make_sketch
    from dsketch.sketch.columns import ColumnSubset

    with pytest.raises(InvalidOptionError, match="preliminary") as info:
        ColumnSubset(make_sketch("leverage"), np.array([0, 2]))
    assert isinstance(info.value, DSketchError)
