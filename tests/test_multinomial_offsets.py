"""Multinomial offsets (one a row and class) through the public writers and the estimator,
and dsketch.predict of a multinomial fit, against a scipy fit of the objective written out
densely and against softmax computed from the coefficients."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import logsumexp, softmax

import dsketch
from dsketch.engine.threads import ThreadClient
from dsketch.errors import InvalidParameterError, ShapeMismatchError, StoreFormatError
from dsketch.estimators import LogisticRegression
from dsketch.store import read_block, write_problem

K = 3
TIGHT = dsketch.Solver("auto", tol=1e-11, max_iter=100)


def _problem(n=400, d=3, seed=0):
    """Rows, labels 0..K-1 drawn from softmax(A B + O) and the offsets O."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((n, d))
    O = rng.standard_normal((n, K))
    P = softmax(A @ rng.standard_normal((d, K)) + O, axis=1)
    y = np.minimum((np.cumsum(P, 1) < rng.random(n)[:, None]).sum(1), K - 1).astype(np.float64)
    return A, y, O


def _scipy_fit(A, y, O, C):
    """scikit-learn's objective ``C sum_i (logsumexp(E_i) - E_{i,y_i}) + ||W||^2 / 2`` with
    ``E = A W + c + O``, minimised by scipy's L-BFGS from its own dense gradient."""
    d = A.shape[1]
    Y = np.eye(K)[y.astype(int)]

    def f(theta):
        W, c = theta[: d * K].reshape(d, K), theta[d * K :]
        E = A @ W + c + O
        R = C * (softmax(E, axis=1) - Y)
        val = C * float(np.sum(logsumexp(E, axis=1) - np.sum(E * Y, axis=1))) + 0.5 * float(np.sum(W * W))
        return val, np.concatenate([(A.T @ R + W).ravel(), R.sum(0)])

    out = minimize(f, np.zeros((d + 1) * K), jac=True, method="L-BFGS-B",
                   options={"gtol": 1e-11, "ftol": 1e-16, "maxiter": 20000, "maxcor": 30})
    W, c = out.x[: d * K].reshape(d, K), out.x[d * K :]
    return W, c - c.mean()


def test_estimator_fits_per_class_offsets_like_a_dense_scipy_fit():
    A, y, O = _problem(seed=1)
    labels = np.array(["x", "y", "z"])[y.astype(int)]
    W, c = _scipy_fit(A, y, O, C=2.0)
    clf = LogisticRegression(C=2.0, tol=1e-11).fit(A, labels, offset=O)
    np.testing.assert_allclose(clf.coef_.T, W, atol=1e-6)
    np.testing.assert_allclose(clf.intercept_, c, atol=1e-6)
    np.testing.assert_allclose(clf.predict_proba(A, offset=O), softmax(A @ W + c + O, axis=1), atol=1e-7)


def test_writer_in_memory_and_convert_carry_class_offsets(tmp_path):
    """write_problem(offset=), in_memory(offset=) and convert --offset keep the (n, K)
    matrix; fits of the store and of the in-memory problem reach the scipy optimum."""
    from dsketch.cli import main
    from dsketch.store.convert import describe

    A, y, O = _problem(seed=2)
    np.save(tmp_path / "A.npy", A)
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "O.npy", O)
    assert main(["convert", str(tmp_path / "A.npy"), str(tmp_path / "c.zarr"), "--target", str(tmp_path / "y.npy"),
                 "--offset", str(tmp_path / "O.npy")]) == 0
    converted = dsketch.open_problem(str(tmp_path / "c.zarr"))
    np.testing.assert_array_equal(read_block(converted, 0, y.size, members=("offset",)).extra["offset"], O)
    assert describe(converted)["models"] == ["multinomial"]  # the one model reading these offsets
    vector = write_problem(tmp_path / "v.zarr", A, y, offset=O[:, 0])
    assert describe(vector)["models"] == ["poisson", "least-squares"]  # the models that read a vector
    W, c = _scipy_fit(A, y, O, C=1.0 / (1e-3 * y.size))
    stores = [write_problem(tmp_path / "p.zarr", A, y, offset=O, chunk_rows=64), dsketch.in_memory(A, y, offset=O)]
    with ThreadClient(1) as client:
        for spec in stores:
            res = dsketch.fit(spec, "multinomial", model_params={"l2": 1e-3}, fit_intercept=True, solver=TIGHT,
                              cluster=client)
            X = res.x.reshape(-1, K)
            np.testing.assert_allclose(X[:-1], W, atol=1e-6)
            np.testing.assert_allclose(X[-1] - X[-1].mean(), c, atol=1e-6)


def test_offset_shapes_are_checked():
    A, y, O = _problem(n=60, seed=3)
    binary = (y > 0).astype(np.float64)
    with pytest.raises(InvalidParameterError, match=r"offset must have shape \(60, 3\).*changes nothing"):
        LogisticRegression().fit(A, y, offset=O[:, 0])
    with pytest.raises(InvalidParameterError, match="offset must have 60 entries"):
        LogisticRegression().fit(A, binary, offset=O)
    with pytest.raises(ShapeMismatchError, match=r"\(60,\), one a row .* \(60, K\)"):
        dsketch.in_memory(A, y, offset=O[:, :1])
    with pytest.raises(StoreFormatError, match=r"model 'logistic' takes offsets of shape \(n,\)"):
        dsketch.fit(dsketch.in_memory(A, binary, offset=O), "logistic")
    with pytest.raises(StoreFormatError, match=r"offsets of shape \(n, 3\)"):
        dsketch.fit(dsketch.in_memory(A, y, offset=O[:, :2]), "multinomial")


def test_predict_gives_softmax_of_the_scores_with_offsets(tmp_path):
    """dsketch.predict of a multinomial fit: the scores A X + c + O and their softmax, in
    memory and written to a prediction store; the estimator's predict_proba agrees."""
    from dsketch.predict import describe_prediction

    A, y, O = _problem(n=300, seed=4)
    clf = LogisticRegression(C=3.0, tol=1e-10).fit(A, y, offset=O)
    data = write_problem(tmp_path / "p.zarr", A, np.zeros(y.size), offset=O, chunk_rows=32)
    res = clf.fit_result_
    X = res.x.reshape(-1, K)
    E = A @ X[:-1] + X[-1] + O
    with ThreadClient(2) as client:
        eta, mean = dsketch.predict(res, data, cluster=client)
        path = dsketch.predict(res, data, tmp_path / "pred.zarr", cluster=dsketch.Cluster(client, block_rows=64))
    np.testing.assert_allclose(eta, E, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(mean, softmax(E, axis=1), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(mean, clf.predict_proba(A, offset=O), rtol=1e-12, atol=1e-15)
    eta_mem, mean_mem = dsketch.predict(res, dsketch.in_memory(A, y, offset=O))
    np.testing.assert_allclose(eta_mem, E, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(mean_mem, softmax(E, axis=1), rtol=1e-12, atol=1e-15)
    import zarr

    g = zarr.open_group(path, mode="r")
    assert g["mean"].shape == (300, K) and g["mean"].chunks == (32, K)
    np.testing.assert_array_equal(g["mean"][:], mean)
    np.testing.assert_array_equal(g["eta"][:], eta)
    desc = describe_prediction(path)
    assert desc["n_classes"] == K and desc["offset"] is True and desc["model"]["model"] == "multinomial"


def test_predict_refuses_offsets_of_the_wrong_shape(tmp_path):
    A, y, O = _problem(n=80, seed=5)
    res = dsketch.fit((A, y), "multinomial", fit_intercept=True)
    data = write_problem(tmp_path / "p.zarr", A, y, offset=O[:, 0])
    with pytest.raises(StoreFormatError, match=r"takes offsets of shape \(n, 3\)"):
        dsketch.predict(res, data)
    binary = dsketch.fit((A, (y > 0).astype(np.float64)), "logistic")
    data = write_problem(tmp_path / "q.zarr", A, y, offset=O)
    with pytest.raises(StoreFormatError, match=r"takes offsets of shape \(n,\), one value a row"):
        dsketch.predict(binary, data)
