"""The two splits of the Hessian of the normalised family, and what sketching each one costs.

For the normalised entrywise-map models (softmax, ResNet+softmax and softmax-ReLU readings
A and B; docs/theory.md#two-ways-to-split-the-hessian), with ``v = A x``, ``f = phi(v) / alpha``,
``c = f - b``, ``q = phi'(v) / alpha`` and ``r = phi''(v) / alpha``, the Hessian can be
written in two ways::

    split (a):  H = A^T diag(D) A  +  (A^T U) C (A^T U)^T
                D = q*q + s_d + w*w,   U = [q, (2f - b)*q],   C = [[3||f||^2 - 2<f,b>, -1], [-1, 0]]

    split (b):  H = A^T diag(w*w + s_d) A  +  (JA)^T (JA)  +  (A^T U_S) C_S (A^T U_S)^T
                s_d = (c - <f,c>)*r,   mu = A^T q,   JA = diag(q) A - f mu^T
                U_S = [q, c*q],   C_S = [[2<f,c>, -1], [-1, 0]]

Split (a) is the model contract of :mod:`dsketch.models.base` (``row_terms`` and ``core``).
Split (b) separates the Gauss-Newton part ``J^T J`` (whose rows are ``(JA)_i``) from the
second-order part ``S = sum_k c_k hess_v f_k``; near a good fit ``c ~ 0`` and ``S`` is
small. In both splits the first (per-row) part is sketched by leverage-score row sampling
and the rank-2 part is kept exact.

What is sketched, and the number that says how much the sketch error is amplified
---------------------------------------------------------------------------------
Row sampling keeps row index ``i`` with probability ``p_i`` and reweights it by ``1/p_i``.
With ``p_i >= min(1, 3 tau_i ln(2d/delta) / eps^2)``, ``tau_i`` the leverage scores of a
matrix ``Z`` whose Gram ``G = Z^T Z`` dominates the sampled terms row by row, the matrix
Chernoff bound gives ``-eps G <= H~ - H <= eps G`` with probability ``>= 1 - delta``
(docs/theory.md#leverage-score-sampling), hence::

    || H^{-1/2} (H~ - H) H^{-1/2} ||_2 <= eps * kappa,   kappa = lambda_max(H^{-1/2} G H^{-1/2}).

The ``G`` measured here is the Gram of the matrix whose leverage scores the sampler uses:

* split (a): ``Z = sqrt|D| A``, ``G_a = A^T diag(|D|) A`` (equal to ``A^T D A`` where
  ``D >= 0``);
* split (b): the stacked pair ``Z = [sqrt(w*w + |s_d|) A ; JA]`` (rows ``i`` and ``n + i``
  share the index ``i`` and one probability), ``G_b = A^T diag(w*w + |s_d|) A + (JA)^T (JA)``.
  Since ``w*w + |s_d| >= |w*w + s_d|``, this dominates the signed terms actually sampled;
  the tighter choice ``|w*w + s_d|`` could only lower ``kappa_b``.

Everything here works on in-memory NumPy inputs (``A`` dense or SciPy sparse) and is the
small-data reference for the reproduction ``pipelines/kappa_split.py``.

Notes
-----
``q``, ``f`` and the global scalars come from the models' own methods (``row_terms``,
``probabilities``, ``scalars``); ``s_d`` is recovered from the model's diagonal as
``s_d = D - q*q - w*w`` (exact algebra, docs/theory.md#the-normalised-family), so no model maths is repeated.
The ``(JA)^T diag(g) (JA)`` products are formed without materialising ``JA``::

    (JA)^T diag(g) (JA) = A^T diag(g q^2) A - t mu^T - mu t^T + (sum g f^2) mu mu^T,
    t = A^T (g * q * f),

so sparse ``A`` stays sparse. Cost per Hessian: ``O(nnz(A) d)`` for the exact one,
``O(#kept rows * d^2)`` plus ``O(nnz(A))`` reductions for a sampled one; leverage scores
cost one ``O(nnz(A) d)`` Gram, a ``d x d`` eigendecomposition and ``O(nnz(A) d)``.

References
----------
Y. Deng, Z. Li, Z. Song. Attention scheme inspired softmax regression. arXiv 2304.10411 (2023).
M. Pilanci, M. J. Wainwright. Newton sketch: a near linear-time optimization algorithm with
linear-quadratic convergence. SIAM J. Optim. 27(1), 2017.
J. A. Tropp. User-friendly tail bounds for sums of random matrices. Found. Comput. Math. 12, 2012.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from dsketch.errors import ModelDomainError
from dsketch.models.base import FloatArray, Model
from dsketch.models.normalised import NormalisedMapModel
from dsketch.models.softmax import SoftmaxRegression
from dsketch.sketch.base import weighted_gram

Split = Literal["a", "b"]
# Sampling each split and the approximate Newton iteration on it: research.split_sampling.
SPLITS: tuple[str, ...] = ("a", "b")
SeedLike = int | np.random.Generator | None

__all__ = [
    "SPLITS",
    "NormalisedPieces",
    "curvature_lowrank",
    "hessian_split_a",
    "hessian_split_b",
    "jacobian_rows",
    "kappa",
    "normalised_pieces",
    "sampling_gram",
    "spectral_error",
    "top_direction",
]


# ----------------------------------------------------------------------------------------
# per-row pieces
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NormalisedPieces:
    """Everything both splits need at one point ``x`` (all rows in one block).

    Attributes
    ----------
    eta : ndarray of shape (n_samples,)
        ``v = A x``.
    f : ndarray of shape (n_samples,)
        ``phi(v) / alpha``.
    c : ndarray of shape (n_samples,)
        ``f - b``.
    q : ndarray of shape (n_samples,)
        ``phi'(v) / alpha``.
    s_d : ndarray of shape (n_samples,)
        ``(c - <f,c>) * r``, the diagonal of the second-order part ``S``.
    w2 : ndarray of shape (n_samples,)
        ``w * w`` (zeros when ``w`` is None).
    fc : float
        ``<f, c>``.
    diag : ndarray of shape (n_samples,)
        Split (a)'s ``D = q*q + s_d + w*w`` (the model's ``row_terms(...).diag``).
    lowrank : ndarray of shape (n_samples, 2)
        Split (a)'s ``U = [q, (2f - b)*q]``.
    core : ndarray of shape (2, 2)
        Split (a)'s ``C``.
    mu : ndarray of shape (n_features,)
        ``A^T q``.
    loss : float
        ``L(x)``.
    grad : ndarray of shape (n_features,)
        ``grad L(x)``.
    """

    eta: FloatArray
    f: FloatArray
    c: FloatArray
    q: FloatArray
    s_d: FloatArray
    w2: FloatArray
    fc: float
    diag: FloatArray
    lowrank: FloatArray
    core: FloatArray
    mu: FloatArray
    loss: float
    grad: FloatArray

    @property
    def n_samples(self) -> int:
        """Number of rows ``n``."""
        return int(self.eta.size)


def _as_matrix(A: Any) -> Any:
    """``A`` as CSR (sparse input) or a float64 ndarray."""
    return A.tocsr() if sp.issparse(A) else np.asarray(A, dtype=np.float64)


def _check_model(model: Model) -> None:
    if not isinstance(model, (SoftmaxRegression, NormalisedMapModel)):
        raise TypeError(
            "the Hessian splits are defined for the normalised family only "
            "(softmax, resnet-softmax, softmax-relu readings A and B); "
            f"got {model!r} of type {type(model).__name__}"
        )


def normalised_pieces(
    model: Model, A: Any, b: FloatArray, x: FloatArray, *, w: FloatArray | None = None
) -> NormalisedPieces:
    """Compute ``f, c, q, s_d, <f,c>, mu = A^T q``, split (a)'s ``D, U, C``, loss and gradient.

    Parameters
    ----------
    model : SoftmaxRegression or NormalisedMapModel
        ``softmax``, ``resnet-softmax`` or ``softmax-relu`` (readings A and B).
    A : ndarray or scipy.sparse matrix of shape (n_samples, n_features)
    b : ndarray of shape (n_samples,)
    x : ndarray of shape (n_features,)
    w : ndarray of shape (n_samples,), optional
        Row weights of the regulariser; None means zero.

    Returns
    -------
    NormalisedPieces

    Raises
    ------
    TypeError
        If ``model`` is not of the normalised family.
    ModelDomainError
        If the model's normaliser is invalid at ``x`` (for example ``alpha <= 0`` for
        ResNet+softmax).

    Notes
    -----
    ``q`` is the first column of the model's low-rank factor ``U`` and ``s_d`` is
    ``D - q*q - w*w`` (both exact by docs/theory.md#the-normalised-family). One pass over ``A`` for ``A x`` and
    one for the reductions ``A^T r`` and ``A^T q``.
    """
    _check_model(model)
    A = _as_matrix(A)
    b = np.asarray(b, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    w = None if w is None else np.asarray(w, dtype=np.float64)
    eta = np.asarray(A @ x, dtype=np.float64).ravel()
    sc = model.scalars(model.stats(eta, b, w))
    terms = model.row_terms(eta, b, w, sc)
    if terms.lowrank is None:
        raise ModelDomainError(f"{model!r} returned no low-rank factors; the splits need U = [q, p]")
    f = np.asarray(model.probabilities(eta, sc), dtype=np.float64)
    q = np.ascontiguousarray(terms.lowrank[:, 0])
    w2 = np.zeros_like(eta) if w is None else w * w
    loss = float(model.loss_terms(eta, b, w, sc)) + float(model.global_loss(sc))
    return NormalisedPieces(
        eta=eta,
        f=f,
        c=f - b,
        q=q,
        s_d=terms.diag - q * q - w2,
        w2=w2,
        fc=float(sc["fc"]),
        diag=terms.diag,
        lowrank=terms.lowrank,
        core=model.core(sc),
        mu=np.asarray(A.T @ q, dtype=np.float64).ravel(),
        loss=loss,
        grad=np.asarray(A.T @ terms.grad_weight, dtype=np.float64).ravel(),
    )


def jacobian_rows(A: Any, pieces: NormalisedPieces) -> FloatArray:
    """Rows of ``JA = diag(q) A - f mu^T``: the Jacobian of ``f(Ax)`` with respect to ``x``.

    Parameters
    ----------
    A : ndarray or scipy.sparse matrix of shape (n_samples, n_features)
    pieces : NormalisedPieces
        From :func:`normalised_pieces` at the same ``A``.

    Returns
    -------
    ndarray of shape (n_samples, n_features)
        Dense (the rank-one correction ``f mu^T`` fills every entry), ``n * d`` floats.
    """
    A = _as_matrix(A)
    qA = A.multiply(pieces.q[:, None]).toarray() if sp.issparse(A) else pieces.q[:, None] * A
    return np.asarray(qA - np.outer(pieces.f, pieces.mu))


def curvature_lowrank(pieces: NormalisedPieces) -> tuple[FloatArray, FloatArray]:
    """Split (b)'s low-rank factors of ``S``: ``U_S = [q, c*q]`` and ``C_S = [[2<f,c>, -1], [-1, 0]]``.

    Parameters
    ----------
    pieces : NormalisedPieces

    Returns
    -------
    U_S : ndarray of shape (n_samples, 2)
    C_S : ndarray of shape (2, 2)
    """
    U_S = np.column_stack([pieces.q, pieces.c * pieces.q])
    C_S = np.array([[2.0 * pieces.fc, -1.0], [-1.0, 0.0]])
    return U_S, C_S


# ----------------------------------------------------------------------------------------
# Gram matrices and assembled Hessians
# ----------------------------------------------------------------------------------------
def _weighted_gram(A: Any, g: FloatArray, rows: FloatArray | None = None) -> FloatArray:
    """Compute the sandwich product ``A_R^T diag(g_R) A_R`` over the rows ``R`` (all by default)."""
    if rows is not None:
        A, g = A[rows], g[rows]
    return weighted_gram(A, g)


def _jacobian_gram(A: Any, pieces: NormalisedPieces, g: FloatArray, rows: FloatArray | None = None) -> FloatArray:
    """``(JA)_R^T diag(g_R) (JA)_R`` without forming ``JA`` (module Notes)."""
    q, f, mu = pieces.q, pieces.f, pieces.mu
    if rows is not None:
        A, g, q, f = A[rows], g[rows], q[rows], f[rows]
    t = np.asarray(A.T @ (g * q * f), dtype=np.float64).ravel()
    out = _weighted_gram(A, g * q * q) - np.outer(t, mu) - np.outer(mu, t)
    return out + float(g @ (f * f)) * np.outer(mu, mu)


def _lowrank_term(A: Any, U: FloatArray, C: FloatArray) -> FloatArray:
    AU = np.asarray(A.T @ U, dtype=np.float64)
    return AU @ C @ AU.T


def _sym(M: FloatArray) -> FloatArray:
    return 0.5 * (M + M.T)


def hessian_split_a(A: Any, pieces: NormalisedPieces) -> FloatArray:
    """``A^T diag(D) A + (A^T U) C (A^T U)^T``: the model-contract Hessian (split (a)).

    Parameters
    ----------
    A : ndarray or scipy.sparse matrix of shape (n_samples, n_features)
    pieces : NormalisedPieces

    Returns
    -------
    ndarray of shape (n_features, n_features)
    """
    A = _as_matrix(A)
    return _sym(_weighted_gram(A, pieces.diag) + _lowrank_term(A, pieces.lowrank, pieces.core))


def hessian_split_b(A: Any, pieces: NormalisedPieces) -> FloatArray:
    """``A^T diag(w*w + s_d) A + (JA)^T (JA) + (A^T U_S) C_S (A^T U_S)^T`` (split (b)).

    Parameters
    ----------
    A : ndarray or scipy.sparse matrix of shape (n_samples, n_features)
    pieces : NormalisedPieces

    Returns
    -------
    ndarray of shape (n_features, n_features)
        Equal to :func:`hessian_split_a` (and to the model's Hessian) up to rounding.
    """
    A = _as_matrix(A)
    ones = np.ones(pieces.n_samples)
    U_S, C_S = curvature_lowrank(pieces)
    H = _weighted_gram(A, pieces.w2 + pieces.s_d) + _jacobian_gram(A, pieces, ones)
    return _sym(H + _lowrank_term(A, U_S, C_S))


def sampling_gram(A: Any, pieces: NormalisedPieces, *, split: Split) -> FloatArray:
    """Gram ``G = Z^T Z`` of the matrix ``Z`` whose leverage scores drive the sampling.

    Split (a): ``G_a = A^T diag(|D|) A`` (``Z = sqrt|D| A``). Split (b):
    ``G_b = A^T diag(w*w + |s_d|) A + (JA)^T (JA)`` (``Z`` the stacked pair
    ``[sqrt(w*w + |s_d|) A ; JA]``). The sketch error of the split is bounded by
    ``eps * G`` (module docstring), so ``kappa(H, G)`` is its amplification.

    Parameters
    ----------
    A : ndarray or scipy.sparse matrix of shape (n_samples, n_features)
    pieces : NormalisedPieces
    split : {"a", "b"}

    Returns
    -------
    ndarray of shape (n_features, n_features)
    """
    A = _as_matrix(A)
    _check_split(split)
    if split == "a":
        return _sym(_weighted_gram(A, np.abs(pieces.diag)))
    ones = np.ones(pieces.n_samples)
    return _sym(_weighted_gram(A, pieces.w2 + np.abs(pieces.s_d)) + _jacobian_gram(A, pieces, ones))


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}")


# ----------------------------------------------------------------------------------------
# spectral measures
# ----------------------------------------------------------------------------------------
def _pencil(H: FloatArray, M: FloatArray, *, vectors: bool = False) -> Any:
    """Eigenvalues (ascending) of the pencil ``M v = lam H v``, i.e. of ``H^{-1/2} M H^{-1/2}``.

    With ``vectors=True`` also the eigenvectors, normalised to ``v^T H v = 1``.
    """
    H = np.asarray(H, dtype=np.float64)
    M = np.asarray(M, dtype=np.float64)
    if H.ndim != 2 or H.shape[0] != H.shape[1] or M.shape != H.shape:
        raise ValueError(f"H and M must be square and of the same shape; got {H.shape} and {M.shape}")
    # Scale both by the same factor so Cholesky sees O(1) numbers (weak-regime Hessians are ~1e-10).
    scale = float(np.max(np.abs(np.diag(H)))) or 1.0
    try:
        if not vectors:
            return np.asarray(scipy.linalg.eigh(_sym(M) / scale, _sym(H) / scale, eigvals_only=True))
        lam, V = scipy.linalg.eigh(_sym(M) / scale, _sym(H) / scale)
        return lam, V / math.sqrt(scale)
    except np.linalg.LinAlgError as exc:
        lam_min = float(np.linalg.eigvalsh(_sym(H))[0])
        raise ValueError(
            f"H must be positive definite to whiten by it; its smallest eigenvalue is {lam_min:.3e} "
            "(move x closer to the optimum or increase the row weights w)"
        ) from exc


def kappa(H: FloatArray, M: FloatArray) -> float:
    """``lambda_max(H^{-1/2} M H^{-1/2})``: how much a relative error in ``M`` is amplified in ``H``.

    Parameters
    ----------
    H : ndarray of shape (d, d)
        Symmetric positive definite (the Hessian).
    M : ndarray of shape (d, d)
        Symmetric (the sketched part, e.g. :func:`sampling_gram`).

    Returns
    -------
    float

    Raises
    ------
    ValueError
        If ``H`` is not positive definite or the shapes differ.

    Examples
    --------
    >>> import numpy as np
    >>> round(kappa(np.diag([1.0, 4.0]), np.diag([3.0, 4.0])), 12)
    3.0
    """
    return float(_pencil(H, M)[-1])


def top_direction(H: FloatArray, M: FloatArray) -> tuple[float, FloatArray]:
    """``kappa(H, M)`` and the direction that attains it.

    Parameters
    ----------
    H : ndarray of shape (d, d)
        Symmetric positive definite.
    M : ndarray of shape (d, d)
        Symmetric.

    Returns
    -------
    kappa : float
        ``max_v (v^T M v) / (v^T H v)``.
    v : ndarray of shape (d,)
        A maximiser, normalised to ``v^T H v = 1``.

    Notes
    -----
    For split (a) with ``D >= 0``, ``G_a - H = -(A^T U) C (A^T U)^T`` and ``C`` has one
    positive and one negative eigenvalue, so at most one direction has ``v^T G_a v > v^T H v``:
    the amplification ``kappa_a`` acts on that single direction only.
    """
    lam, V = _pencil(H, M, vectors=True)
    return float(lam[-1]), np.asarray(V[:, -1])


def spectral_error(H: FloatArray, H_sketch: FloatArray) -> float:
    """``|| H^{-1/2} (H_sketch - H) H^{-1/2} ||_2``: the ``eps0`` of docs/theory.md#the-approximate-newton-framework.

    Parameters
    ----------
    H : ndarray of shape (d, d)
        Symmetric positive definite.
    H_sketch : ndarray of shape (d, d)

    Returns
    -------
    float
    """
    lam = _pencil(H, np.asarray(H_sketch) - np.asarray(H))
    return float(np.max(np.abs(lam)))


# ----------------------------------------------------------------------------------------
# leverage-score sampling
# ----------------------------------------------------------------------------------------
