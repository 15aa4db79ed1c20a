"""Standard errors of the multinomial model: class contrasts against statsmodels' MNLogit
(reference class 0), the whole covariance against a dense finite-difference Hessian and
sandwich, the refusal of an unidentified fit, and the command line."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import statsmodels.api as sm
from scipy.special import softmax

import dsketch
from dsketch.engine.threads import ThreadClient
from dsketch.errors import InferenceError
from dsketch.store import write_problem

K = 3
TIGHT = dsketch.Solver("auto", tol=1e-12, max_iter=200)


def _problem(n=600, d=2, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, d))
    P = softmax(A @ rng.standard_normal((d, K)) + rng.standard_normal(K), axis=1)
    y = np.minimum((np.cumsum(P, 1) < rng.random(n)[:, None]).sum(1), K - 1).astype(np.float64)
    return A, y, rng.integers(0, 20, n)


def _mnlogit(A, y, **kw):
    """statsmodels' MNLogit with the intercept last: params (d + 1) x (K - 1) against class 0."""
    return sm.MNLogit(y, sm.add_constant(A, prepend=False)).fit(disp=0, method="newton", tol=1e-14, maxiter=100,
                                                                 **kw)


@pytest.mark.parametrize("cov_type", ["nonrobust", "HC0", "cluster"])
def test_class_contrasts_match_statsmodels_mnlogit(tmp_path, cov_type):
    """A fit with a negligible l2 (1e-9): the contrasts coef_k - coef_0 and their standard
    errors (through L C L^T) are MNLogit's, whose parameters are exactly these contrasts."""
    A, y, g = _problem()
    spec = write_problem(tmp_path / "p.zarr", A, y, extra={"g": g}, chunk_rows=128)
    with ThreadClient(2) as client:
        res = dsketch.fit(spec, "multinomial", model_params={"l2": 1e-9}, fit_intercept=True, solver=TIGHT,
                          cluster=client)
        groups = "g" if cov_type == "cluster" else None
        inf = dsketch.covariance(res, spec, cov_type=cov_type, groups=groups, cluster=client)
    kw = {"cov_type": "cluster", "cov_kwds": {"groups": g}} if cov_type == "cluster" else {"cov_type": cov_type}
    ref = _mnlogit(A, y, **kw)
    con = inf.class_contrasts(reference=0)
    assert con.names[:2] == ["x0:1-0", "x0:2-0"] and con.names[-1] == "intercept:2-0"
    np.testing.assert_allclose(con.params.reshape(3, K - 1), ref.params, atol=1e-6)
    np.testing.assert_allclose(con.bse.reshape(3, K - 1), ref.bse, rtol=1e-6)
    assert con.df_resid == inf.df_resid == y.size - 3 * (K - 1)


def _dense_gradient(A1, y, s, O, l2, penalised):
    """The gradient of the sum-form ``sum_i s_i (logsumexp(E_i) - E_{i,y_i}) + S l2 / 2
    ||X_p||^2`` and its rows' scores ``s_i a_i kron (p_i - y_i)``, row by row from the
    definition (``penalised``: which rows of ``X`` carry the penalty)."""
    Y = np.eye(K)[y.astype(int)]
    mask = np.repeat(penalised, K).astype(float)

    def grad(x):
        E = A1 @ x.reshape(-1, K) + O
        scores = np.stack([s[i] * np.kron(A1[i], softmax(E[i]) - Y[i]) for i in range(y.size)])
        return scores.sum(0) + s.sum() * l2 * mask * x, scores

    return grad


@pytest.mark.parametrize(("sparse", "intercept"), [(False, True), (True, False)])
def test_covariance_equals_a_dense_finite_difference_hessian_and_sandwich(sparse, intercept):
    """Sample weights, per-class offsets, l2 = 0.05 on an in-memory problem: the covariance is
    the pseudo-inverse of the finite-difference Hessian of the dense objective (with an
    intercept its one null direction, a common shift of the intercepts, removed) and the
    sandwich with the rows' scores; HC1 is HC0 n / (n - p), p = (K - 1) a row of X."""
    rng = np.random.default_rng(5)
    A, y, _ = _problem(n=150, seed=5)
    s = rng.uniform(0.5, 2.0, y.size)
    s[:5] = 0.0  # dropped rows
    O = rng.standard_normal((y.size, K))
    A[rng.random(A.shape) < 0.3] = 0.0
    problem = dsketch.in_memory(sp.csr_matrix(A) if sparse else A, y, sample_weight=s, offset=O)
    res = dsketch.fit(problem, "multinomial", model_params={"l2": 0.05}, fit_intercept=intercept, solver=TIGHT)
    infs = {c: dsketch.covariance(res, problem, cov_type=c) for c in ("nonrobust", "HC0", "HC1")}
    x = infs["HC0"].params
    shift = x.reshape(-1, K) - res.x.reshape(-1, K)
    if intercept:  # the intercepts centred: the same probabilities
        np.testing.assert_allclose(x.reshape(-1, K)[-1].sum(), 0.0, atol=1e-12)
        np.testing.assert_allclose(shift[-1], shift[-1].mean(), atol=1e-12)
    np.testing.assert_array_equal(shift[:2], 0.0)
    A1 = np.column_stack([A, np.ones(y.size)]) if intercept else A
    grad = _dense_gradient(A1, y, s, O, 0.05, np.array([1, 1, 0][: A1.shape[1]]))
    h = 1e-5
    H = np.array([(grad(x + h * e)[0] - grad(x - h * e)[0]) / (2 * h) for e in np.eye(x.size)])
    H = 0.5 * (H + H.T)
    Hi = np.linalg.pinv(H, rcond=1e-10, hermitian=True)
    scores = grad(x)[1]
    sandwich = Hi @ (scores.T @ scores) @ Hi
    np.testing.assert_allclose(infs["nonrobust"].cov_params, Hi, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(infs["HC0"].cov_params, sandwich, rtol=1e-6, atol=1e-9)
    n, p = y.size - 5, A1.shape[1] * (K - 1)
    np.testing.assert_allclose(infs["HC1"].cov_params, sandwich * n / (n - p), rtol=1e-6, atol=1e-9)
    assert infs["HC0"].nobs == n


def test_cli_refuses_cov_type_without_penalty_and_contrasts_of_a_binary_model(tmp_path, capsys):
    """Before any fit starts (no result written)."""
    from dsketch.cli import main

    A, y, _ = _problem(n=50, seed=9)
    data, out = str(tmp_path / "p.zarr"), str(tmp_path / "r.zarr")
    write_problem(data, A, (y > 0).astype(float))
    assert main(["fit", "--model", "multinomial", "--data", data, "--out", out, "--param", "l2=0",
                 "--param", "n_classes=3", "--cov-type", "HC0"]) == 2
    assert "not identified" in capsys.readouterr().err
    assert main(["fit", "--model", "logistic", "--data", data, "--out", out, "--cov-type", "HC0",
                 "--contrasts", "0"]) == 2
    assert "--contrasts is for --model multinomial" in capsys.readouterr().err
    assert not (tmp_path / "r.zarr").exists()


def test_unpenalised_multinomial_is_refused(tmp_path):
    A, y, _ = _problem(n=200, seed=7)
    res = dsketch.fit((A, y), "multinomial", model_params={"l2": 0.0}, fit_intercept=True)
    with pytest.raises(InferenceError, match=r"not identified.*l2 > 0.*class_contrasts"):
        dsketch.covariance(res, dsketch.in_memory(A, y))
    res = dsketch.fit((A, y), "multinomial", model_params={"l2": 1e-15}, fit_intercept=True)
    with pytest.raises(InferenceError, match=r"singular.*common direction of the classes.*larger l2"):
        dsketch.covariance(res, dsketch.in_memory(A, y))
    binary = dsketch.fit((A, (y > 0).astype(float)), "logistic")
    with pytest.raises(InferenceError, match="multinomial fit's inference"):
        dsketch.covariance(binary, dsketch.in_memory(A, (y > 0).astype(float))).class_contrasts()


@pytest.mark.slow  # each command starts the CLI's embedded cluster (about 15 s each on shared cores)
def test_cli_fit_cov_type_summary_and_predict(tmp_path, capsys):
    """``dsketch fit --model multinomial --cov-type HC0``, ``summary --cov-type nonrobust
    --save`` and ``predict``: the stored tables' contrasts are MNLogit's, the prediction is
    softmax of the stored coefficients."""
    from dsketch.cli import main
    from dsketch.solvers.result import load_result

    A, y, _ = _problem(n=400, seed=8)
    write_problem(tmp_path / "p.zarr", A, y)
    data, out = str(tmp_path / "p.zarr"), str(tmp_path / "r.zarr")
    assert main(["fit", "--model", "multinomial", "--data", data, "--out", out, "--param", "l2=1e-9",
                 "--fit-intercept", "--tol", "1e-12", "--cov-type", "HC0", "--quiet"]) == 0
    hc0 = load_result(out).inference.class_contrasts()
    np.testing.assert_allclose(hc0.bse.reshape(3, K - 1), _mnlogit(A, y, cov_type="HC0").bse, rtol=1e-6)
    assert main(["summary", "--result", out, "--cov-type", "nonrobust", "--save", "--contrasts", "0"]) == 0
    assert "intercept:2-0" in capsys.readouterr().out
    loaded = load_result(out)
    ref = _mnlogit(A, y)
    np.testing.assert_allclose(loaded.inference.class_contrasts().bse.reshape(3, K - 1), ref.bse, rtol=1e-6)
    assert main(["predict", "--result", out, "--data", data, "--out", str(tmp_path / "pred.zarr")]) == 0
    import zarr

    X = loaded.x.reshape(-1, K)
    mean = zarr.open_group(str(tmp_path / "pred.zarr"), mode="r")["mean"][:]
    np.testing.assert_allclose(mean, softmax(A @ X[:-1] + X[-1], axis=1), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(mean, ref.predict(sm.add_constant(A, prepend=False)), atol=1e-6)
