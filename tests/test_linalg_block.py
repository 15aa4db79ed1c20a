"""The block-eliminating Cholesky solve of one-hot Gram matrices against numpy's dense solve."""

import numpy as np
import pytest
import scipy.sparse as sp

from dsketch.errors import NumericalWarning
from dsketch.solvers.linalg import (MIN_DIAGONAL_BLOCK, cholesky_solver, diagonal_block, preconditioner,
                                    solve_newton_system)


def one_hot_gram(n=4000, levels=(400, 30, 12), seed=0):
    rng = np.random.default_rng(seed)
    cols = [rng.integers(0, k, n) + off for k, off in zip(levels, np.cumsum((0,) + levels[:-1]))]
    rows = np.repeat(np.arange(n), len(levels))
    A = sp.csr_matrix((np.ones(n * len(levels)), (rows, np.stack(cols, axis=1).ravel())),
                      shape=(n, sum(levels)))
    w = rng.uniform(0.05, 0.25, n)
    return (A.T @ sp.diags(w) @ A).toarray() + 1e-4 * np.eye(A.shape[1]), rng


def test_one_hot_block_found_and_solve_matches_dense_solve():
    H, rng = one_hot_gram()
    S = diagonal_block(H)
    assert S is not None and S.size >= 400
    off = H[np.ix_(S, S)] - np.diag(np.diag(H)[S])
    assert not off.any()
    r = rng.standard_normal((H.shape[0], 3))
    ref = np.linalg.solve(H, r)
    for solve in (cholesky_solver(H), preconditioner(H)):
        np.testing.assert_allclose(solve(r[:, 0]), ref[:, 0], rtol=1e-9, atol=1e-12)
    p, method = solve_newton_system(H, r[:, 1])
    assert method == "cholesky"
    np.testing.assert_allclose(p, -ref[:, 1], rtol=1e-9, atol=1e-12)


def test_dense_and_small_matrices_have_no_block():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((600, 300))
    assert diagonal_block(X.T @ X) is None
    assert diagonal_block(np.eye(MIN_DIAGONAL_BLOCK - 1)) is None


def test_not_positive_definite_one_hot_matrix_falls_back_to_eigen():
    H, rng = one_hot_gram(seed=2)
    S = diagonal_block(H)
    H[S[0], S[0]] = -1.0
    with pytest.raises(np.linalg.LinAlgError):
        cholesky_solver(H)
    g = rng.standard_normal(H.shape[0])
    with pytest.warns(NumericalWarning):
        p, method = solve_newton_system(H, g)
    assert method == "eigen-modified" and float(g @ p) < 0


def test_non_finite_matrix_raises_value_error():
    H, _ = one_hot_gram(seed=3)
    H[5, 7] = H[7, 5] = np.nan
    with pytest.raises(ValueError):
        cholesky_solver(H)


@pytest.mark.parametrize("d", [5, 64, 200, 333])
def test_symmetric_part_has_numpys_bits(d):
    from dsketch.sketch._sparse_gram import symmetric_part

    G = np.random.default_rng(d).standard_normal((d, d)) * 10.0 ** np.random.default_rng(d + 1).integers(-8, 8, (d, d))
    ref = 0.5 * (G + G.T)
    out = symmetric_part(G)
    assert out.tobytes() == ref.tobytes()
    assert symmetric_part(np.asfortranarray(G)).tobytes() == ref.tobytes()


@pytest.mark.parametrize("width", [1, 3, "block"])
def test_block_solve_of_a_matrix_right_hand_side_matches_dense_solve(width):
    """A 2-D right-hand side is solved column by column, as numpy's solve does (a right-hand
    side with as many columns as the diagonal block once broadcast silently against it)."""
    H, rng = one_hot_gram(seed=4)
    S = diagonal_block(H)
    r = rng.standard_normal((H.shape[0], S.size if width == "block" else width))
    ref = np.linalg.solve(H, r)  # H's condition number is ~7e5: agreement to ~1e-9 of the largest entry
    np.testing.assert_allclose(cholesky_solver(H)(r), ref, rtol=1e-7, atol=1e-9 * np.abs(ref).max())


@pytest.mark.parametrize("width", [1, 2, MIN_DIAGONAL_BLOCK + 44])
def test_diagonal_matrix_solve_of_a_matrix_right_hand_side_matches_dense_solve(width):
    rng = np.random.default_rng(5)
    H = np.diag(rng.uniform(0.5, 2.0, MIN_DIAGONAL_BLOCK + 44))
    r = rng.standard_normal((H.shape[0], width))
    np.testing.assert_allclose(cholesky_solver(H)(r), np.linalg.solve(H, r), rtol=1e-12)
    np.testing.assert_allclose(cholesky_solver(H)(r[:, 0]), np.linalg.solve(H, r[:, 0]), rtol=1e-12)
