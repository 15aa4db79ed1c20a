"""Proximal Newton's inner solve and the column-restricted curvature of regularisation
paths, against independent references: a bound-constrained quasi-Newton solve of the same
quadratic model (scipy), dense Grams computed here, glum's and scikit-learn's paths, and the
KKT conditions on a dense gradient."""

import numpy as np
import pytest
from scipy.optimize import minimize

from dsketch.solvers.inner import ProximalCoordinateDescent


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
