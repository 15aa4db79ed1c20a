"""Sampling the two Hessian splits, and the approximate Newton iteration on each.

Leverage scores of the matrix each split samples from (:func:`leverage_scores`), the
inclusion probabilities and the sampled Hessian (:func:`sketched_hessian`), a tight exact
solve for ``x*`` (:func:`solve_exact`) and the unit-step approximate Newton iteration of
docs/theory.md#the-approximate-newton-framework with either split (:func:`approximate_newton`). The algebra of the splits
(their pieces, Hessians and kappa) is in :mod:`research.splits`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg

from dsketch.errors import ModelDomainError
from dsketch.models.base import FloatArray, Model, loss_gradient_hessian
from research.splits import (
    NormalisedPieces,
    SeedLike,
    Split,
    _as_matrix,
    _check_split,
    _jacobian_gram,
    _lowrank_term,
    _sym,
    _weighted_gram,
    curvature_lowrank,
    normalised_pieces,
    sampling_gram,
)

__all__ = [
    "NewtonTrace",
    "SketchedHessian",
    "approximate_newton",
    "inclusion_probabilities",
    "leverage_scores",
    "sketched_hessian",
    "solve_exact",
]


def _inverse_sqrt(G: FloatArray) -> tuple[FloatArray, int]:
    """``T`` (``d x r``) with ``T T^T = G^+`` on the numerical range of ``G``, and ``r``."""
    lam, V = np.linalg.eigh(_sym(G))
    top = float(lam[-1]) if lam.size else 0.0
    keep = lam > max(top, 0.0) * G.shape[0] * np.finfo(np.float64).eps
    if top <= 0.0:
        keep[:] = False
    return V[:, keep] / np.sqrt(lam[keep]), int(keep.sum())


def leverage_scores(A: Any, pieces: NormalisedPieces, *, split: Split) -> tuple[FloatArray, int]:
    """Leverage score of each row index of the split's sampling matrix ``Z``.

    Split (a): ``tau_i = |D_i| a_i^T G_a^+ a_i``. Split (b): the sum over the two rows of
    index ``i`` of the stacked pair,
    ``tau_i = (w*w + |s_d|)_i a_i^T G_b^+ a_i + (JA)_i G_b^+ (JA)_i^T``.

    Parameters
    ----------
    A : ndarray or scipy.sparse matrix of shape (n_samples, n_features)
    pieces : NormalisedPieces
    split : {"a", "b"}

    Returns
    -------
    tau : ndarray of shape (n_samples,)
        Scores in ``[0, 1]``; they sum to ``rank``.
    rank : int
        Numerical rank of ``G`` (of ``Z``).
    """
    A = _as_matrix(A)
    T, rank = _inverse_sqrt(sampling_gram(A, pieces, split=split))
    AT = np.asarray(A @ T, dtype=np.float64)
    if split == "a":
        return np.abs(pieces.diag) * np.einsum("ij,ij->i", AT, AT), rank
    JT = pieces.q[:, None] * AT - np.outer(pieces.f, pieces.mu @ T)
    tau = (pieces.w2 + np.abs(pieces.s_d)) * np.einsum("ij,ij->i", AT, AT) + np.einsum("ij,ij->i", JT, JT)
    return tau, rank


def inclusion_probabilities(tau: FloatArray, rank: int, sketch_size: float) -> FloatArray:
    """``p_i = min(1, sketch_size * tau_i / rank)``, so that ``E[#kept] = sum p_i <= sketch_size``.

    With ``sketch_size = 3 d ln(2d/delta) / eps^2`` and ``rank = d`` this is the matrix
    Chernoff choice ``p_i = min(1, 3 tau_i ln(2d/delta) / eps^2)`` of docs/theory.md#leverage-score-sampling.

    Parameters
    ----------
    tau : ndarray of shape (n_samples,)
    rank : int
    sketch_size : float
        Expected number of kept row indices (before capping at 1).

    Returns
    -------
    ndarray of shape (n_samples,)
    """
    if not sketch_size > 0:
        raise ValueError(f"sketch_size must be positive; got {sketch_size!r}")
    if rank <= 0:
        return np.zeros_like(tau)
    return np.minimum(1.0, float(sketch_size) * np.asarray(tau, dtype=np.float64) / rank)


@dataclass(frozen=True)
class SketchedHessian:
    """A Hessian whose per-row part was sampled.

    Attributes
    ----------
    hess : ndarray of shape (n_features, n_features)
        ``H~``: the sampled per-row part plus the exact rank-2 part of the split.
    n_rows : int
        Row indices kept.
    expected_rows : float
        ``sum_i p_i``.
    """

    hess: FloatArray
    n_rows: int
    expected_rows: float


def _rng(seed: SeedLike) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def sketched_hessian(
    A: Any, pieces: NormalisedPieces, *, split: Split, sketch_size: float, seed: SeedLike = None
) -> SketchedHessian:
    """Leverage-score row sampling of the split's per-row part; the rank-2 part stays exact.

    Each row index is kept independently with ``p_i`` (:func:`inclusion_probabilities`
    of :func:`leverage_scores`) and reweighted by ``g_i = 1/p_i``::

        split (a):  H~ = A^T diag(g D) A + (A^T U) C (A^T U)^T
        split (b):  H~ = A^T diag(g (w*w + s_d)) A + (JA)^T diag(g) (JA) + (A^T U_S) C_S (A^T U_S)^T

    with ``g_i = 0`` for dropped rows, so ``E[H~] = H``.

    Parameters
    ----------
    A : ndarray or scipy.sparse matrix of shape (n_samples, n_features)
    pieces : NormalisedPieces
    split : {"a", "b"}
    sketch_size : float
        Expected kept rows before capping (``3 d ln(2d/delta) / eps^2`` for the (1 +- eps)
        guarantee on ``G``).
    seed : int, numpy.random.Generator or None
        Source of the Bernoulli draws.

    Returns
    -------
    SketchedHessian
    """
    _check_split(split)
    A = _as_matrix(A)
    tau, rank = leverage_scores(A, pieces, split=split)
    p = inclusion_probabilities(tau, rank, sketch_size)
    kept = np.flatnonzero(_rng(seed).random(p.size) < p)
    g = np.zeros(p.size)
    g[kept] = 1.0 / p[kept]
    if split == "a":
        H = _weighted_gram(A, g * pieces.diag, kept) + _lowrank_term(A, pieces.lowrank, pieces.core)
    else:
        U_S, C_S = curvature_lowrank(pieces)
        H = (_weighted_gram(A, g * (pieces.w2 + pieces.s_d), kept) + _jacobian_gram(A, pieces, g, kept)
             + _lowrank_term(A, U_S, C_S))
    return SketchedHessian(hess=_sym(H), n_rows=int(kept.size), expected_rows=float(p.sum()))


# ----------------------------------------------------------------------------------------
# Newton iterations
# ----------------------------------------------------------------------------------------
def solve_exact(
    model: Model,
    A: Any,
    b: FloatArray,
    x0: FloatArray,
    *,
    w: FloatArray | None = None,
    max_iter: int = 100,
) -> FloatArray:
    """A tight reference optimum: exact Newton with backtracking, run to the rounding level.

    Uses the model's own dense Hessian (:func:`~dsketch.models.base.loss_gradient_hessian`).
    A step is halved (at most 30 times) until the loss does not increase by more than
    ``1e-12 |loss|`` (its summation noise); the loop ends when
    a full step has shrunk below ``4 eps ||x||`` twice in a row, or stops shrinking after
    the step fell below ``1e-12 ||x||`` (it is then at the rounding floor).

    Parameters
    ----------
    model : Model
    A : ndarray or scipy.sparse matrix of shape (n_samples, n_features)
    b : ndarray of shape (n_samples,)
    x0 : ndarray of shape (n_features,)
        A starting point where the Hessian is positive definite.
    w : ndarray of shape (n_samples,), optional
    max_iter : int, default 100

    Returns
    -------
    ndarray of shape (n_features,)

    Raises
    ------
    ValueError
        If the Hessian is not positive definite along the path, or no step decreases the loss.
    """
    x = np.asarray(x0, dtype=np.float64).copy()
    prev, small = np.inf, 0
    for _ in range(max_iter):
        loss, grad, hess = loss_gradient_hessian(model, A, b, x, w)
        try:
            step = -scipy.linalg.solve(hess, grad, assume_a="pos")
        except np.linalg.LinAlgError as exc:
            raise ValueError("the Hessian is not positive definite on the Newton path; start closer to x*") from exc
        size = float(np.linalg.norm(step))
        xnorm = max(float(np.linalg.norm(x)), 1e-300)
        # the summed loss is only known to a relative ~1e-14 (n terms of mixed signs); a
        # trial within that slack is accepted so the line search cannot stall at the floor
        slack = 1e-12 * abs(loss)
        t = 1.0
        if size > 1e-8 * xnorm:
            for _ in range(30):
                trial = loss_gradient_hessian(model, A, b, x + t * step, w)[0]
                if np.isfinite(trial) and trial <= loss + slack:
                    break
                t *= 0.5
            else:
                raise ValueError("no decrease of the loss along the Newton direction")
        x = x + t * step
        small = small + 1 if size <= 4.0 * np.finfo(np.float64).eps * xnorm else 0
        if small >= 2 or (size <= 1e-12 * xnorm and size >= 0.5 * prev):
            break
        prev = size
    return x


@dataclass(frozen=True)
class NewtonTrace:
    """Distances to a reference optimum along unit-step approximate Newton.

    Attributes
    ----------
    coef : ndarray of shape (n_features,)
        The last iterate.
    errors : ndarray of shape (n_iter + 1,)
        ``||x_t - x*||`` for ``t = 0 .. n_iter``.
    rows : ndarray of shape (n_iter,)
        Row indices kept by the sketch at each step.
    converged : bool
        Whether ``||x_t - x*|| <= tol ||x*||`` was reached.
    status : str
        ``"converged"``, ``"max_iter"``, ``"diverged"`` (error above ``1e3 ||x_0 - x*||`` or
        not finite), ``"singular"`` (the sketched system could not be solved) or
        ``"domain"`` (the model's normaliser became invalid).
    """

    coef: FloatArray
    errors: FloatArray
    rows: FloatArray
    converged: bool
    status: str

    @property
    def n_iter(self) -> int:
        """Steps taken."""
        return int(self.errors.size - 1)


def approximate_newton(
    model: Model,
    A: Any,
    b: FloatArray,
    x0: FloatArray,
    *,
    x_star: FloatArray,
    split: Split,
    sketch_size: float,
    w: FloatArray | None = None,
    tol: float = 1e-10,
    max_iter: int = 50,
    seed: SeedLike = None,
) -> NewtonTrace:
    """Unit-step approximate Newton ``x <- x - H~^{-1} grad L(x)`` (docs/theory.md#the-approximate-newton-framework) with one split.

    The gradient and the split's rank-2 part are exact; the per-row part is resampled at
    every step (:func:`sketched_hessian`) from one seeded generator. This is a measurement
    routine: it stops on the distance to a known optimum ``x_star``.

    Parameters
    ----------
    model : SoftmaxRegression or NormalisedMapModel
    A : ndarray or scipy.sparse matrix of shape (n_samples, n_features)
    b : ndarray of shape (n_samples,)
    x0 : ndarray of shape (n_features,)
    x_star : ndarray of shape (n_features,)
        The reference optimum (e.g. from :func:`solve_exact`).
    split : {"a", "b"}
    sketch_size : float
        Expected kept rows per step (see :func:`sketched_hessian`).
    w : ndarray of shape (n_samples,), optional
    tol : float, default 1e-10
        Stop when ``||x - x_star|| <= tol ||x_star||``.
    max_iter : int, default 50
    seed : int, numpy.random.Generator or None

    Returns
    -------
    NewtonTrace
    """
    _check_split(split)
    A = _as_matrix(A)
    rng = _rng(seed)
    x_star = np.asarray(x_star, dtype=np.float64)
    x = np.asarray(x0, dtype=np.float64).copy()
    target = tol * float(np.linalg.norm(x_star))
    errors = [float(np.linalg.norm(x - x_star))]
    rows: list[int] = []
    status = "max_iter"
    for _ in range(max_iter):
        if errors[-1] <= target:
            status = "converged"
            break
        try:
            pieces = normalised_pieces(model, A, b, x, w=w)
        except ModelDomainError:
            status = "domain"
            break
        sk = sketched_hessian(A, pieces, split=split, sketch_size=sketch_size, seed=rng)
        try:
            step = np.linalg.solve(sk.hess, pieces.grad)
        except np.linalg.LinAlgError:
            status = "singular"
            break
        x = x - step
        rows.append(sk.n_rows)
        errors.append(float(np.linalg.norm(x - x_star)))
        if not math.isfinite(errors[-1]) or errors[-1] > 1e3 * errors[0]:
            status = "diverged"
            break
    else:
        if errors[-1] <= target:
            status = "converged"
    return NewtonTrace(
        coef=x,
        errors=np.asarray(errors),
        rows=np.asarray(rows, dtype=np.float64),
        converged=status == "converged",
        status=status,
    )
