"""Multinomial logistic regression: scikit-learn's coefficients, finite-difference gradients,
a dense Kronecker-form Hessian, refusals, and bit-identical fits across chunkings."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression as SkLogistic

import dsketch
from dsketch.engine.threads import ThreadClient
from dsketch.errors import InvalidOptionError, InvalidTargetError, StoreFormatError
from dsketch.models import MultinomialRegression
from dsketch.store import write_problem

TIGHT = dsketch.Solver("auto", tol=1e-11, max_iter=100)


def _problem(n=1500, d=5, k=4, seed=0, sparse=False):
    rng = np.random.default_rng(seed)
    A = sp.random(n, d, density=0.5, format="csr", random_state=rng, data_rvs=rng.standard_normal) if sparse \
        else rng.standard_normal((n, d))
    logits = np.asarray(A @ rng.standard_normal((d, k))) + rng.standard_normal(k)
    u = rng.random(n)[:, None]
    P = np.exp(logits - logits.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    y = np.minimum((np.cumsum(P, 1) < u).sum(1), k - 1).astype(np.float64)
    return A, y


def _sklearn(A, y, C, sw=None, fit_intercept=True):
    """scikit-learn's multinomial fit by its newton-cholesky solver (its lbfgs stops on scipy's
    relative loss decrease with gradients near 1e-5 whatever its tol: not a 1e-6 reference)."""
    return SkLogistic(C=C, tol=1e-14, max_iter=1000, fit_intercept=fit_intercept,
                      solver="newton-cholesky").fit(A, y, sample_weight=sw)


def _check_against(res, sk, d, k, fit_intercept=True):
    assert res.success, res.message
    X = res.x.reshape(-1, k)
    np.testing.assert_allclose(X[:d], sk.coef_.T, atol=1e-6, rtol=0)
    if fit_intercept:  # intercepts are unique up to a common constant (unpenalised)
        np.testing.assert_allclose(X[d] - X[d].mean(), sk.intercept_ - sk.intercept_.mean(), atol=1e-6, rtol=0)


@pytest.mark.parametrize("sparse", [False, True])
def test_matches_sklearn_multinomial(sparse):
    A, y = _problem(sparse=sparse)
    C = 0.3
    res = dsketch.fit((A, y), "multinomial", model_params={"l2": 1.0 / (C * y.size)}, fit_intercept=True,
                      solver=TIGHT)
    _check_against(res, _sklearn(A, y, C), 5, 4)
    assert res.info["n_classes"] == 4


def test_matches_sklearn_with_sample_weights_without_intercept():
    A, y = _problem(seed=3, k=3)
    sw = np.random.default_rng(1).uniform(0.0, 3.0, y.size)
    C = 2.0
    prob = dsketch.in_memory(A, y, sample_weight=sw)
    res = dsketch.fit(prob, "multinomial", model_params={"l2": 1.0 / (C * sw.sum())}, fit_intercept=False,
                      solver=TIGHT)
    _check_against(res, _sklearn(A, y, C, sw, fit_intercept=False), 5, 3, fit_intercept=False)


def test_matches_sklearn_on_a_store(tmp_path):
    A, y = _problem(n=1200, seed=5, sparse=True)
    write_problem(tmp_path / "p.zarr", A, y, chunk_rows=500)
    C = 1.0
    with ThreadClient(2) as c:
        res = dsketch.fit(str(tmp_path / "p.zarr"), "multinomial", model_params={"l2": 1.0 / (C * y.size)},
                          fit_intercept=True, solver=TIGHT, cluster=dsketch.Cluster(scheduler=c, block_rows=256))
    _check_against(res, _sklearn(A, y, C), 5, 4)


def _dense_loss(A, y, X, s, l2):
    E = A @ X
    m = E.max(1, keepdims=True)
    lse = (m[:, 0] + np.log(np.exp(E - m).sum(1)))
    return float(s @ (lse - E[np.arange(y.size), y.astype(int)])) / s.sum() + 0.5 * l2 * float(np.sum(X * X))


def _dense_hessian(A, X, s, l2):
    """sum_i (s_i/S) (diag(p_i) - p_i p_i^T) kron a_i a_i^T, in the row-major order of vec(X)."""
    E = A @ X
    P = np.exp(E - E.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    d, k = X.shape
    H = np.zeros((d * k, d * k))
    for i in range(A.shape[0]):
        H += s[i] * np.kron(np.outer(A[i], A[i]), np.diag(P[i]) - np.outer(P[i], P[i]))
    return H / s.sum() + l2 * np.eye(d * k)


def test_gradient_and_hessian_products_against_references():
    A, y = _problem(n=60, d=3, k=3, seed=2)
    s = np.random.default_rng(4).uniform(0.5, 2.0, y.size)
    l2 = 0.05
    X = np.random.default_rng(5).standard_normal((3, 3))
    model = MultinomialRegression(l2=l2, n_classes=3)
    data = np.column_stack([y, s])
    sc = model.scalars(model.stats(A @ X, data, None))
    terms = model.row_terms(A @ X, data, None, sc)
    grad = (A.T @ terms.grad_weight).ravel() + model.penalty(X.ravel())[1]
    h = 1e-6
    fd = np.array([(_dense_loss(A, y, (X.ravel() + h * e).reshape(3, 3), s, l2)
                    - _dense_loss(A, y, (X.ravel() - h * e).reshape(3, 3), s, l2)) / (2 * h) for e in np.eye(9)])
    np.testing.assert_allclose(grad, fd, atol=1e-8)
    assert model.loss_terms(A @ X, data, None, sc) + model.penalty(X.ravel())[0] == pytest.approx(
        _dense_loss(A, y, X, s, l2), rel=1e-13)
    H = _dense_hessian(A, X, s, l2)
    V = np.random.default_rng(6).standard_normal((3, 3))
    hv = (A.T @ model.hessvec_rows(A @ X, data, None, sc, A @ V)).ravel() + model.penalty(X.ravel())[2] * V.ravel()
    np.testing.assert_allclose(hv, H @ V.ravel(), atol=1e-12)
    blocks = [A.T @ (terms.diag[:, j, None] * A) + l2 * np.eye(3) for j in range(3)]
    for j in range(3):  # the preconditioner's blocks are the Hessian's diagonal blocks
        np.testing.assert_allclose(blocks[j], H[j::3, j::3], atol=1e-12)


def _curvature_at(A, y, X, model, threads, v=None):
    """The Newton state at ``X`` on an engine of 32-row blocks (exact curvature) and ``H v``."""
    from dsketch.engine.core import Engine
    from dsketch.solvers.newton import IterationState, NewtonConfig, NewtonSolver
    from dsketch.sketch import make_sketch
    from dsketch.store.memory import in_memory

    n = y.size
    with ThreadClient(threads) as c:
        eng = Engine(in_memory(A, y), c, block_rows=32)
        solver = NewtonSolver(eng, model, make_sketch("exact"), sketch_size=n, config=NewtonConfig())
        eng.init(X.ravel(), model)
        state = solver.update_gradient_hessian(IterationState(x=X.ravel(), scalars=eng.trial_scalars(model)[0],
                                                              sketch_size=n))
        return state, None if v is None else solver.hessvec(state, v)


def test_engine_hessvec_is_the_exact_product():
    """NewtonSolver.hessvec on the engine (several blocks) against the dense Kronecker form."""
    A, y = _problem(n=90, d=3, k=3, seed=8)
    X = np.random.default_rng(9).standard_normal((3, 3))
    V = np.random.default_rng(10).standard_normal(9)
    state, hv = _curvature_at(A, y, X, MultinomialRegression(l2=0.1, n_classes=3), 2, V)
    H = _dense_hessian(A, X, np.ones(y.size), 0.1)
    np.testing.assert_allclose(hv, H @ V, atol=1e-12)
    for j in range(3):
        np.testing.assert_allclose(state.hess[j], H[j::3, j::3], atol=1e-12)


def test_labels_are_checked():
    A, y = _problem(n=100)
    with pytest.raises(InvalidTargetError, match="integer class labels"):
        dsketch.fit((A, y + 0.5), "multinomial")
    with pytest.raises(InvalidTargetError, match="integer class labels 0..2"):
        dsketch.fit((A, y), "multinomial", model_params={"n_classes": 3})
    with pytest.raises(InvalidTargetError, match="class codes 0..K-1"):
        dsketch.fit((A, np.where(np.arange(y.size) == 7, 1e9, y)), "multinomial")
    with pytest.raises(InvalidTargetError, match=r"first at row \d+: -1.0"):
        dsketch.fit((A, y - 1.0), "multinomial")
    with pytest.raises(dsketch.errors.InvalidParameterError, match="n_classes must be an integer >= 2"):
        MultinomialRegression(n_classes=1)


def test_refusals():
    A, y = _problem(n=100)
    with pytest.raises(StoreFormatError, match=r"offsets of shape \(n, 4\)"):
        dsketch.fit(dsketch.in_memory(A, y, offset=np.ones(y.size)), "multinomial")
    with pytest.raises(InvalidOptionError, match="never forms"):
        dsketch.fit((A, y), "multinomial", solver="newton")
    with pytest.raises(InvalidOptionError, match="preliminary stages"):
        dsketch.fit((A, y), "multinomial", curvature="leverage")


def test_offsets_per_class_shift_the_predictor():
    """An (n, K) offset O: the fit equals the fit of the columns [A, 1] with O folded into
    the known part, checked by the optimality of the reference objective."""
    A, y = _problem(n=400, d=3, k=3, seed=12)
    O = np.random.default_rng(3).standard_normal((y.size, 3))
    res = dsketch.fit(dsketch.in_memory(A, y, extra={"offset": O}), "multinomial",
                      model_params={"l2": 0.01}, solver=TIGHT)
    X = res.x.reshape(3, 3)

    def loss(x):
        E = A @ x.reshape(3, 3) + O
        m = E.max(1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(E - m).sum(1))
        return float(np.mean(lse - E[np.arange(y.size), y.astype(int)])) + 0.005 * float(x @ x)

    h = 1e-6
    fd = np.array([(loss(X.ravel() + h * e) - loss(X.ravel() - h * e)) / (2 * h) for e in np.eye(9)])
    assert np.abs(fd).max() < 1e-7
    assert res.fun == pytest.approx(loss(X.ravel()), rel=1e-12)


def test_bit_identical_across_chunkings_and_workers(tmp_path):
    A, y = _problem(n=3000, d=4, k=3, seed=13)
    fit = {"model": "multinomial", "model_params": {"l2": 1e-3}, "seed": 3, "x0": "zeros",
           "curvature": dsketch.Curvature("uniform", size=400),
           "solver": dsketch.Solver("newton-cg", tol=1e-14, max_iter=3)}
    xs = []
    for i, chunks in enumerate((777, 3000)):
        write_problem(tmp_path / f"p{i}.zarr", A, y, chunk_rows=chunks)
        with ThreadClient(1 + i) as c:
            with pytest.warns(dsketch.errors.ConvergenceWarning):
                xs.append(dsketch.fit(str(tmp_path / f"p{i}.zarr"), cluster=c, **fit).x)
    with pytest.warns(dsketch.errors.ConvergenceWarning):
        xs.append(dsketch.fit((A, y), **fit).x)
    assert np.array_equal(xs[0], xs[1]) and np.array_equal(xs[0], xs[2])


@pytest.mark.parametrize("sparse", [False, True])
def test_estimator_matches_sklearn_multiclass(sparse):
    from dsketch import estimators as est

    A, y = _problem(n=1000, d=4, k=3, seed=21, sparse=sparse)
    labels = np.array(["ant", "bee", "cat"])[y.astype(int)]
    sw = np.random.default_rng(2).uniform(0.5, 2.0, y.size)
    ours = est.LogisticRegression(C=0.7, tol=1e-11).fit(A, labels, sample_weight=sw)
    ref = _sklearn(A, labels, 0.7, sw)
    assert list(ours.classes_) == ["ant", "bee", "cat"]
    assert ours.coef_.shape == (3, 4) and ours.intercept_.shape == (3,)
    np.testing.assert_allclose(ours.coef_, ref.coef_, atol=1e-6, rtol=0)
    np.testing.assert_allclose(ours.intercept_, ref.intercept_ - ref.intercept_.mean(), atol=1e-6, rtol=0)
    np.testing.assert_allclose(ours.predict_proba(A), ref.predict_proba(A), atol=1e-7)
    assert (ours.predict(A) == ref.predict(A)).all()


def test_estimator_multiclass_on_a_store(tmp_path):
    from dsketch import estimators as est

    A, y = _problem(n=800, d=4, k=5, seed=22)
    write_problem(tmp_path / "p.zarr", A, y)
    with ThreadClient(1) as c:
        ours = est.LogisticRegression(C=1.5, tol=1e-11, client=c).fit(str(tmp_path / "p.zarr"))
    ref = _sklearn(A, y, 1.5)
    np.testing.assert_array_equal(ours.classes_, np.arange(5.0))
    np.testing.assert_allclose(ours.coef_, ref.coef_, atol=1e-6, rtol=0)
    np.testing.assert_allclose(ours.predict_proba(A), ref.predict_proba(A), atol=1e-7)


def _converted(tmp_path):
    """An AnnData store with a 3-category obs column, converted by ``dsketch convert --obs-column``."""
    import warnings

    anndata = pytest.importorskip("anndata")
    import pandas as pd

    from dsketch.cli import main

    A, y = _problem(n=300, d=4, k=3, seed=30)
    names = np.array(["liver", "lung", "skin"])
    adata = anndata.AnnData(X=A, obs=pd.DataFrame({"tissue": pd.Categorical(names[y.astype(int)])},
                                                  index=[f"c{i}" for i in range(y.size)]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata.write_zarr(tmp_path / "cells.zarr")
    assert main(["convert", str(tmp_path / "cells.zarr"), str(tmp_path / "p.zarr"), "--obs-column", "tissue"]) == 0
    return A, y, names


def test_convert_categorical_obs_column_for_multinomial(tmp_path):
    """The codes 0, 1, 2 are the targets; describe suggests multinomial first."""
    from dsketch.store import read_block
    from dsketch.store.convert import describe

    A, y, names = _converted(tmp_path)
    spec = dsketch.open_problem(str(tmp_path / "p.zarr"))
    assert describe(spec)["models"][0] == "multinomial"
    assert spec.metadata["dsketch"]["target_categories"] == list(names)
    np.testing.assert_array_equal(read_block(spec, 0, spec.n_samples).b, y)


@pytest.mark.slow  # starts the embedded cluster of the CLI (about 5 s)
def test_cli_fit_multinomial(tmp_path, capsys):
    """``dsketch fit --model multinomial`` on the converted store: scikit-learn's coefficients."""
    from dsketch.cli import main
    from dsketch.solvers.result import load_result

    A, y, _ = _converted(tmp_path)
    code = main(["fit", "--model", "multinomial", "--data", str(tmp_path / "p.zarr"), "--out",
                 str(tmp_path / "r.zarr"), "--param", f"l2={1 / 300}", "--fit-intercept", "--workers", "1",
                 "--tol", "1e-11", "--quiet"])
    assert code == 0, capsys.readouterr()
    x = load_result(str(tmp_path / "r.zarr")).x.reshape(5, 3)
    ref = _sklearn(A, y, 1.0)
    np.testing.assert_allclose(x[:4], ref.coef_.T, atol=1e-6, rtol=0)


def test_full_preconditioner_is_the_exact_hessian():
    """preconditioner="full" with exact curvature: the reduced Hessian is the dense Kronecker
    form, so Newton-CG takes one product per step; the fit reaches scikit-learn's optimum."""
    A, y = _problem(n=90, d=3, k=4, seed=40)
    X = np.random.default_rng(41).standard_normal((3, 4))
    state, _ = _curvature_at(A, y, X, MultinomialRegression(l2=0.1, n_classes=4, preconditioner="full"), 1)
    np.testing.assert_allclose(state.hess, _dense_hessian(A, X, np.ones(y.size), 0.1), atol=1e-12)
    A, y = _problem(seed=42)
    res = dsketch.fit((A, y), "multinomial", model_params={"l2": 1.0 / (0.5 * y.size), "preconditioner": "full"},
                      fit_intercept=True, solver=TIGHT)
    _check_against(res, _sklearn(A, y, 0.5), 5, 4)


def test_memory_estimate_counts_the_class_grams():
    """The driver's curvature memory is K d x d blocks (block), K (K+1)/2 (full), not one."""
    from dsketch.engine.memory import estimate_memory
    from dsketch.store.memory import in_memory

    A, y = _problem(n=5000, d=300, k=10, seed=60)
    spec = in_memory(A, y)
    one = estimate_memory(spec, model=dsketch.models.LogisticRegression()).driver_bytes
    block = estimate_memory(spec, model=MultinomialRegression(n_classes=10)).driver_bytes
    full = estimate_memory(spec, model=MultinomialRegression(n_classes=10, preconditioner="full")).driver_bytes
    gram = 300 * 300 * 8
    assert block - one >= 9 * gram and full - block >= 45 * gram


def test_fused_passes_reach_the_same_optimum_in_fewer_passes():
    """The line search's A P and the next curvature share one pass (fixed scalars)."""
    A, y = _problem(seed=70)
    fits = [dsketch.fit((A, y), "multinomial", model_params={"l2": 1e-3}, solver=TIGHT,
                        cluster=dsketch.Cluster(fused=fused)) for fused in (True, False)]
    assert all(r.success for r in fits)
    np.testing.assert_allclose(fits[0].x, fits[1].x, atol=1e-8, rtol=0)
    assert fits[0].n_passes < fits[1].n_passes
