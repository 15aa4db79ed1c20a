"""Tests of research.splits: the two Hessian splits of the normalised family, kappa,
leverage-score sampling of each split and the unit-step approximate Newton iteration.

References first (the model's own dense Hessian and finite differences of a loss written
from scratch here), then invariants (exact sampling, kappa on known matrices, leverage scores
against a QR of the explicitly stacked matrix), then probabilistic properties.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from model_helpers import design, fd

from dsketch.models import (
    ExpRegression,
    ResNetSoftmaxRegression,
    SoftmaxRegression,
    SoftmaxReluRegression,
    loss_gradient_hessian,
)
from research.split_sampling import (
    approximate_newton,
    inclusion_probabilities,
    leverage_scores,
    sketched_hessian,
    solve_exact,
)
from research.splits import (
    curvature_lowrank,
    hessian_split_a,
    hessian_split_b,
    jacobian_rows,
    kappa,
    normalised_pieces,
    sampling_gram,
    spectral_error,
    top_direction,
)

MODELS = {"softmax": SoftmaxRegression, "resnet-softmax": ResNetSoftmaxRegression}


# -- from-scratch maths (independent of the package) -------------------------------------
def _phi(name: str, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """phi, phi', phi'' of the model, written directly."""
    e = np.exp(v)
    if name == "softmax":
        return e, e, e
    return e + v, e + 1.0, e


def _f(name: str, A: np.ndarray, x: np.ndarray) -> np.ndarray:
    u = _phi(name, A @ x)[0]
    return u / u.sum()


def _loss(name: str, A: np.ndarray, b: np.ndarray, w: np.ndarray, x: np.ndarray) -> float:
    v = A @ x
    return 0.5 * float(np.sum((_f(name, A, x) - b) ** 2)) + 0.5 * float(np.sum((w * v) ** 2))


def _problem(rng: np.random.Generator, name: str, n: int, d: int, sparse: bool, w: float = 0.3):
    A, Ad = design(rng, n, d, sparse)
    x = 0.5 * rng.standard_normal(d)
    b = rng.uniform(0.0, 2.0 / n, size=n)  # c = f - b far from 0, so S matters
    return A, Ad, b, np.full(n, w), x


def _rel(X: np.ndarray, Y: np.ndarray) -> float:
    return float(np.max(np.abs(X - Y)) / np.max(np.abs(Y)))


# -- (a) references ---------------------------------------------------------------------
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
@pytest.mark.parametrize("name", list(MODELS))
def test_split_b_hessian_equals_dense_and_finite_difference_hessian(name: str, sparse: bool) -> None:
    rng = np.random.default_rng(3)
    A, Ad, b, w, x = _problem(rng, name, 40, 5, sparse)
    model = MODELS[name]()
    pieces = normalised_pieces(model, A, b, x, w=w)
    H_b = hessian_split_b(A, pieces)
    _, grad_ref, H_ref = loss_gradient_hessian(model, A, b, x, w)
    assert _rel(H_b, H_ref) < 1e-12
    assert _rel(hessian_split_a(A, pieces), H_ref) < 1e-12
    assert _rel(pieces.grad, grad_ref) < 1e-12
    # Hessian of the from-scratch loss by nested five-point differences: truncation O(h^4)
    # and rounding ~ eps * L / h^2 ~ 1e-10 relative at h = 1e-3 (measured ~1e-9 here).
    H_fd = fd(lambda z: fd(lambda y: _loss(name, Ad, b, w, y), z, 1e-3), x, 1e-3)
    assert _rel(H_b, H_fd) < 1e-6
    assert pieces.loss == pytest.approx(_loss(name, Ad, b, w, x), rel=1e-13)


@pytest.mark.parametrize("reading", ["A", "B"])
def test_split_b_hessian_equals_dense_hessian_for_softmax_relu(reading: str) -> None:
    rng = np.random.default_rng(4)
    A, _, b, w, x = _problem(rng, "softmax", 60, 4, False)
    model = SoftmaxReluRegression(reading)
    pieces = normalised_pieces(model, A, b, x, w=w)
    assert _rel(hessian_split_b(A, pieces), loss_gradient_hessian(model, A, b, x, w)[2]) < 1e-12


@pytest.mark.parametrize("name", list(MODELS))
def test_pieces_match_independent_formulas(name: str) -> None:
    """q, s_d = (c - <f,c>) r, JA (the Jacobian of f(Ax)) and the x-space S, each on its own."""
    rng = np.random.default_rng(5)
    A, _, b, w, x = _problem(rng, name, 30, 4, False)
    pieces = normalised_pieces(MODELS[name](), A, b, x, w=w)
    u, du, d2u = _phi(name, A @ x)
    alpha = u.sum()
    f, q, r = u / alpha, du / alpha, d2u / alpha
    c = f - b
    np.testing.assert_allclose(pieces.q, q, rtol=1e-13)
    np.testing.assert_allclose(pieces.s_d, (c - f @ c) * r, rtol=1e-9, atol=1e-15 * np.abs(r).max())
    J_fd = fd(lambda y: _f(name, A, y), x, 1e-3)
    assert _rel(jacobian_rows(A, pieces), J_fd) < 1e-8
    # x-space second-order part A^T S A = sum_k c_k hess f_k, with c held fixed
    U_S, C_S = curvature_lowrank(pieces)
    S_x = A.T @ (pieces.s_d[:, None] * A) + (A.T @ U_S) @ C_S @ (A.T @ U_S).T
    S_fd = fd(lambda z: fd(lambda y: float(c @ _f(name, A, y)), z, 1e-3), x, 1e-3)
    assert _rel(S_x, S_fd) < 1e-6


# -- (b) kappa on matrices with known answers -------------------------------------------
def test_kappa_and_top_direction_known_values() -> None:
    rng = np.random.default_rng(6)
    d = 6
    B = rng.standard_normal((d, d))
    H = 1e-10 * (B @ B.T + d * np.eye(d))  # weak-regime magnitudes
    z = 1e-5 * rng.standard_normal(d)
    M = H + np.outer(z, z)
    expected = 1.0 + float(z @ np.linalg.solve(H, z))
    assert kappa(H, M) == pytest.approx(expected, rel=1e-10)
    assert kappa(H, H) == pytest.approx(1.0, abs=1e-12)
    assert kappa(H, 3.0 * H) == pytest.approx(3.0, rel=1e-12)
    value, v = top_direction(H, M)
    assert value == pytest.approx(expected, rel=1e-10)
    assert float(v @ H @ v) == pytest.approx(1.0, rel=1e-10)
    assert float(v @ M @ v) == pytest.approx(expected, rel=1e-10)
    assert spectral_error(H, M) == pytest.approx(expected - 1.0, rel=1e-8)
    with pytest.raises(ValueError, match="positive definite"):
        kappa(H - 2.0 * np.max(np.linalg.eigvalsh(H)) * np.eye(d), M)


def test_kappa_b_is_one_at_an_exact_fit_and_kappa_a_is_not() -> None:
    """With b = f(Ax): c = 0, so S = 0 and H = w^2 A^T A + (JA)^T JA = G_b exactly."""
    rng = np.random.default_rng(7)
    n, d = 200, 5
    A = rng.standard_normal((n, d))
    x = rng.standard_normal(d)
    b = _f("softmax", A, x)
    w = np.full(n, 0.01)
    pieces = normalised_pieces(SoftmaxRegression(), A, b, x, w=w)
    H = hessian_split_b(A, pieces)
    assert kappa(H, sampling_gram(A, pieces, split="b")) == pytest.approx(1.0, abs=1e-10)
    kappa_a = kappa(H, sampling_gram(A, pieces, split="a"))
    assert kappa_a > 1.5
    # split (a): D >= 0 here and G_a - H has rank 2 with one positive eigenvalue, so only
    # one generalised eigenvalue exceeds 1 (splits.top_direction Notes)
    assert np.all(pieces.diag >= 0)
    lam = np.sort(np.linalg.eigvals(np.linalg.solve(H, sampling_gram(A, pieces, split="a"))).real)
    assert lam[-2] <= 1.0 + 1e-9


# -- (c) exact sampling and leverage scores ----------------------------------------------
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
@pytest.mark.parametrize("split", ["a", "b"])
@pytest.mark.parametrize("name", list(MODELS))
def test_sampling_every_row_reproduces_the_hessian(name: str, split: str, sparse: bool) -> None:
    rng = np.random.default_rng(8)
    A, _, b, w, x = _problem(rng, name, 50, 4, sparse, w=1.0)  # w large: H positive definite
    pieces = normalised_pieces(MODELS[name](), A, b, x, w=w)
    H = hessian_split_b(A, pieces)
    sk = sketched_hessian(A, pieces, split=split, sketch_size=1e300, seed=0)
    # every row that carries weight is kept (empty CSR rows have tau = 0 in split (a))
    n_live = np.count_nonzero(leverage_scores(A, pieces, split=split)[0])
    assert n_live >= (50 if not sparse or split == "b" else 40)
    assert sk.n_rows == n_live and sk.expected_rows == n_live
    assert kappa(H, sk.hess) <= 1.0 + 1e-12
    assert spectral_error(H, sk.hess) <= 1e-12


@pytest.mark.parametrize("split", ["a", "b"])
@pytest.mark.parametrize("name", list(MODELS))
def test_leverage_scores_equal_those_of_the_explicitly_stacked_matrix(name: str, split: str) -> None:
    rng = np.random.default_rng(9)
    n, d = 80, 4
    A, _, b, w, x = _problem(rng, name, n, d, False, w=0.05)
    pieces = normalised_pieces(MODELS[name](), A, b, x, w=w)
    u, du, d2u = _phi(name, A @ x)
    f, q, r = u / u.sum(), du / u.sum(), d2u / u.sum()
    c = f - b
    if split == "a":
        D = q * q + (c - f @ c) * r + w * w
        Z = np.sqrt(np.abs(D))[:, None] * A
    else:
        JA = q[:, None] * A - np.outer(f, A.T @ q)
        Z = np.vstack([np.sqrt(w * w + np.abs((c - f @ c) * r))[:, None] * A, JA])
    Q = np.linalg.qr(Z)[0]
    t = np.einsum("ij,ij->i", Q, Q)
    expected = t if split == "a" else t[:n] + t[n:]
    tau, rank = leverage_scores(A, pieces, split=split)
    assert rank == d
    np.testing.assert_allclose(tau, expected, rtol=1e-9, atol=1e-14)
    assert tau.sum() == pytest.approx(d, rel=1e-12)
    p = inclusion_probabilities(tau, rank, 3 * d)
    np.testing.assert_allclose(p, np.minimum(1.0, 3 * tau))


# -- (e) probabilistic properties --------------------------------------------------------
@pytest.mark.parametrize("split", ["a", "b"])
def test_sampled_hessian_is_unbiased(split: str) -> None:
    rng = np.random.default_rng(10)
    A, _, b, w, x = _problem(rng, "softmax", 400, 4, False, w=0.05)
    pieces = normalised_pieces(SoftmaxRegression(), A, b, x, w=w)
    H = hessian_split_b(A, pieces)
    gen = np.random.default_rng(11)
    draws = [sketched_hessian(A, pieces, split=split, sketch_size=30, seed=gen).hess for _ in range(800)]
    single = np.median([spectral_error(H, Ht) for Ht in draws[:50]])
    mean_err = spectral_error(H, np.mean(draws, axis=0))
    # Simulated (20 repetitions of 800 draws): one draw errs by ~0.51, the mean of 800 by
    # 0.021 (median) and 0.028 (worst), about single / sqrt(800). Weights 1/sqrt(p) or no
    # reweighting bias the mean by O(1).
    assert single > 0.2
    assert mean_err < 0.06


@pytest.mark.parametrize("split", ["a", "b"])
def test_chernoff_size_gives_eps_relative_to_the_sampled_gram(split: str) -> None:
    """s = 3 d ln(2d/delta)/eps^2: error <= eps in G-whitened norm and <= eps kappa in H's."""
    rng = np.random.default_rng(12)
    n, d, eps, delta = 20_000, 5, 0.25, 0.1
    A = rng.standard_normal((n, d)) / math.sqrt(d) * np.abs(rng.standard_t(3, size=n))[:, None]
    x = rng.standard_normal(d)
    b = _f("softmax", A, x) * (1 + 0.05 * rng.standard_normal(n))
    w = np.full(n, 0.3 / n)
    pieces = normalised_pieces(SoftmaxRegression(), A, b, x, w=w)
    H = hessian_split_b(A, pieces)
    G = sampling_gram(A, pieces, split=split)
    k = kappa(H, G)
    size = 3 * d * math.log(2 * d / delta) / eps**2
    for seed in range(4):
        sk = sketched_hessian(A, pieces, split=split, sketch_size=size, seed=seed)
        assert sk.expected_rows <= size
        # P(error > eps) <= delta per draw; the constant is conservative (docs/theory.md#leverage-score-sampling
        # measured ~0.05 at eps = 0.25), so four fixed seeds pass with a wide margin
        assert spectral_error(G, G + sk.hess - H) <= eps
        assert spectral_error(H, sk.hess) <= eps * k


# -- (g) solver accuracy and determinism -------------------------------------------------
def _weak_problem(name: str, n: int = 3000, d: int = 5):
    rng = np.random.default_rng(13)
    A = rng.standard_normal((n, d)) / math.sqrt(d)
    x_p = rng.standard_normal(d)
    b = _f(name, A, x_p) * (1 + 0.05 * rng.standard_normal(n))
    w = np.full(n, 0.3 / n)
    model = MODELS[name]()
    x_star = solve_exact(model, A, b, x_p, w=w)
    return model, A, b, w, x_p, x_star


@pytest.mark.parametrize("name", list(MODELS))
def test_approximate_newton_converges_with_both_splits(name: str) -> None:
    model, A, b, w, x_p, x_star = _weak_problem(name)
    g0 = loss_gradient_hessian(model, A, b, x_p, w)[1]
    g_star = loss_gradient_hessian(model, A, b, x_star, w)[1]
    assert np.linalg.norm(g_star) <= 1e-9 * np.linalg.norm(g0)
    u = np.random.default_rng(14).standard_normal(x_star.size)
    x0 = x_star + 0.1 * np.linalg.norm(x_star) * u / np.linalg.norm(u)
    exact = approximate_newton(model, A, b, x0, x_star=x_star, split="b", sketch_size=1e300, w=w, seed=0)
    assert exact.converged and exact.n_iter <= 5  # quadratic convergence
    size = 3 * 5 * math.log(2 * 5 / 0.1) / 0.5**2
    for split in ("a", "b"):
        tr = approximate_newton(model, A, b, x0, x_star=x_star, split=split, sketch_size=size, w=w, seed=1)
        assert tr.converged, tr.status
        assert tr.errors[-1] <= 1e-10 * np.linalg.norm(x_star)
        assert np.all(tr.errors[1:] <= 0.6 * tr.errors[:-1])  # contraction, eps = 0.5
        again = approximate_newton(model, A, b, x0, x_star=x_star, split=split, sketch_size=size, w=w, seed=1)
        np.testing.assert_array_equal(again.errors, tr.errors)
        other = approximate_newton(model, A, b, x0, x_star=x_star, split=split, sketch_size=size, w=w, seed=2)
        assert not np.array_equal(other.errors, tr.errors)


# -- (h) behaviour -------------------------------------------------------------------------
def test_rejects_models_outside_the_family_and_unknown_splits() -> None:
    rng = np.random.default_rng(15)
    A, _, b, w, x = _problem(rng, "softmax", 20, 3, False)
    with pytest.raises(TypeError, match="normalised family"):
        normalised_pieces(ExpRegression(phi="exp"), A, b, x, w=w)
    pieces = normalised_pieces(SoftmaxRegression(), A, b, x, w=w)
    with pytest.raises(ValueError, match="split must be one of"):
        sketched_hessian(A, pieces, split="c", sketch_size=10)
    with pytest.raises(ValueError, match="sketch_size must be positive"):
        inclusion_probabilities(np.ones(3), 3, 0)
    assert sp.issparse(sp.csr_matrix(A))  # the CSR path is covered by the parametrised tests
