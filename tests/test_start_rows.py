"""The first pass of a fit: the predictor at the starting point without a product where
at most one feature is nonzero, row norms only where a sketch reads them, and the
finiteness check of large inputs (checked a slice at a time)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import dsketch
from dsketch.engine import tasks
from dsketch.errors import NonFiniteError
from dsketch.store import Block
from dsketch.store.spec import FINITE_STEP, check_finite


def _design(sparse: bool, n: int = 500, d: int = 7) -> np.ndarray | sp.csr_matrix:
    rng = np.random.default_rng(0)
    if sparse:
        return sp.random(n, d, density=0.3, format="csr", random_state=1, data_rvs=rng.standard_normal)
    return rng.standard_normal((n, d))


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("nonzero", [(), (6,), (0,), (2, 5)])
def test_start_predictor_equals_the_product(sparse, k, nonzero):
    A = _design(sparse)
    X = np.zeros((A.shape[1], k))
    for j in nonzero:
        X[j] = np.linspace(-1.5, 2.0, k) + j
    expected = np.asarray(A @ X)  # NumPy / SciPy's own product
    got = tasks._start_matvec(A, X.ravel(), k)
    assert got.shape == ((A.shape[0],) if k == 1 else (A.shape[0], k))
    assert np.array_equal(got.reshape(A.shape[0], k), expected)


def test_row_norms_only_when_asked():
    A = _design(False)
    blk = Block(A=A, b=np.zeros(A.shape[0]), w=None, extra={})
    x = np.zeros(A.shape[1])
    assert tasks.init_rows(blk, 0, x, norms=False).rownorm2 is None
    np.testing.assert_allclose(tasks.init_rows(blk, 0, x).rownorm2, (A * A).sum(axis=1), rtol=1e-14)


def test_row_norm_sampling_fit_still_reads_the_norms():
    """A sketch with preliminary stages (row-norm sampling) gets the norms; the fit reaches
    the optimum of scikit-learn's L2 logistic regression."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(5)
    A = rng.standard_normal((4000, 6))
    y = (rng.random(4000) < 1 / (1 + np.exp(-A @ rng.standard_normal(6)))).astype(np.float64)
    l2 = 1e-2
    res = dsketch.fit((A, y), "logistic", model_params={"l2": l2}, solver=dsketch.Solver("newton", tol=1e-9),
                      curvature=dsketch.Curvature("rownorm", size=1500, adaptive=False))
    ref = LogisticRegression(C=1 / (l2 * A.shape[0]), fit_intercept=False, tol=1e-12, max_iter=10_000).fit(A, y)
    assert res.success
    np.testing.assert_allclose(res.x, ref.coef_.ravel(), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("where", [0, FINITE_STEP // 3 - 1, FINITE_STEP // 3 + 5, -1])
def test_finiteness_check_names_the_first_bad_row_past_a_slice(where):
    A = np.ones((FINITE_STEP // 3 * 3 + 11, 3))
    row = where % A.shape[0]
    A[row, 1] = np.inf
    A[-1, 2] = np.nan
    with pytest.raises(NonFiniteError, match=f"first at row {100 + row}"):
        check_finite("input", "A", A, 100)
    check_finite("input", "A", np.ones((FINITE_STEP + 3, 3)), 0)
