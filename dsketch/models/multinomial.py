"""Multinomial (softmax) logistic regression over K classes (docs/theory.md#multinomial-logistic-regression).

Coefficients are a ``d x K`` matrix ``X`` (one column per class), flattened row by row
(C order) into the solver's vector ``x``: ``x[j * K + k] = X[j, k]``, so the intercept row
of a fit with ``fit_intercept`` is the last ``K`` entries. With ``E = A X + O`` (``O`` the
``n x K`` offsets, zero by default), ``P = softmax(E)`` row by row, one-hot labels ``Y``,
sample weights ``s`` and ``S = sum_i s_i``::

    L(X) = (1/S) sum_i s_i (logsumexp(E_i) - E_{i, b_i}) + l2/2 ||X_p||^2 + l1 sum |X_p|

(``X_p``: the penalised rows of ``X``, all but the intercept row). This is the weighted-mean
form of the other GLMs: ``l2`` and ``l1`` mean what they mean for ``logistic``, and
scikit-learn's ``LogisticRegression(C=..., l1_ratio=r)`` (summed loss, penalty
``(1 - r)/(2C) ||X||^2 + r/C sum |X|``) has the same minimiser for ``l2 = (1 - r) / (C S)``,
``l1 = r / (C S)``.

Gradient ``A^T R + l2 X_p`` with ``R = diag(s / S) (P - Y)``. Hessian (``dK x dK``)::

    H = sum_i (s_i / S) (diag(p_i) - p_i p_i^T) kron a_i a_i^T + l2 I_p

never formed: a product ``H V`` is ``A^T [W (.) (A V) - W (.) rowsum(P (.) A V)]`` with
``W = diag(s / S) P`` (one pass over A, every class at once), and the curvature pass forms
the ``K`` diagonal blocks ``A^T diag(s p_k (1 - p_k) / S) A`` that precondition conjugate
gradients (:class:`~dsketch.solvers.inner.ConjugateGradient`).
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import numpy as np
from scipy.special import softmax

from dsketch.errors import InvalidParameterError, InvalidTargetError, StoreFormatError
from dsketch.models._softmax import softmax_hessvec, softmax_loss, softmax_terms
from dsketch.models.base import FloatArray, RowTerms, Scalars, Stats
from dsketch.models.glm import _GLM, check_sample_weight


#: Curvature the passes form for the Newton-CG preconditioner (and the proximal-Newton model
#: of an L1 fit): the K diagonal d x d blocks of the Hessian, or the whole dK x dK Hessian
#: (from the same exact or sampled rows); "auto" picks one when the problem's size is known.
PRECONDITIONERS = ("auto", "block", "full")

#: Largest ``dK`` (coefficients, intercepts included) for which ``preconditioner="auto"`` forms
#: the whole Hessian for an L1 fit: its ``(dK)^2`` doubles on the driver (32 MB at 2000) and the
#: coordinate descent on it; above, and without an L1 term, the diagonal blocks. On a screened
#: path the same bound applies to the coefficients of the features that may move.
FULL_CURVATURE_MAX = 2000


def split_multinomial(b: FloatArray, k: int) -> tuple[FloatArray, FloatArray | None, FloatArray | None]:
    """``(labels, sample weights or None, offsets (n, K) or None)`` of the model's row data."""
    if b.ndim == 1:
        return b, None, None
    return b[:, 0], b[:, 1], (b[:, 2 : 2 + k] if b.shape[1] > 2 else None)


class MultinomialRegression(_GLM):
    """L2- or elastic-net-penalised multinomial logistic regression, labels ``0 .. K-1``.

    Parameters
    ----------
    l2 : float, default 1e-4
        L2 penalty strength (``>= 0``) on every coefficient but the intercepts.
    n_classes : int or None, default None
        ``K``. None: found from the data by :func:`dsketch.fit` (the largest label plus one).
    n_unpenalized : int, default 0
        The last ``n_unpenalized`` rows of ``X`` (features) carry no penalty.
    l1 : float, default 0.0
        L1 penalty strength (``>= 0``): the objective gains ``l1 * sum |X_p|`` over the penalised
        rows (every class's coefficient of a feature, not the intercepts); fitted by proximal
        Newton (``Solver("prox-newton")``, what ``"auto"`` is then).

    Notes
    -----
    Softmax is unchanged when the same vector is added to every column of ``X``. With
    ``l2 > 0`` the penalty removes that freedom for the penalised rows and the optimum is
    unique (the penalised rows' columns sum to zero there), as in scikit-learn; the
    intercepts are unpenalised, so they are unique only up to a common constant: the fit
    returns the ones the solver reaches from the start (the log class frequencies), and
    the probabilities, the loss and the penalised coefficients are unique. With ``l2 = 0``
    the minimiser (if any: separable classes have none) is unique only up to that common
    vector; the probabilities still are, and the solver stops when the gradient is small.

    preconditioner : {"auto", "block", "full"}, default "auto"
        What the curvature pass forms for Newton-CG: the ``K`` diagonal ``d x d`` blocks of the
        Hessian (``K d^2`` numbers; memory and per-block work grow as ``K``), or the whole
        ``dK x dK`` Hessian from the same rows (``(dK)^2`` numbers, ``K (K+1) / 2`` Grams a
        pass: for small ``dK`` only; with exact curvature it is the Hessian itself and CG
        takes one product per step). With an L1 term the same matrix is the quadratic model
        of proximal Newton: the whole Hessian couples the classes, the blocks give a
        proximal quasi-Newton step (each class's coordinates alone; the line search on the
        true objective and the stopping rule on its exact subgradient keep the optimum
        exact, the convergence is slower). ``"auto"``: ``"full"`` for an L1 fit with ``dK <=
        FULL_CURVATURE_MAX`` (2000), else ``"block"``; resolved by :meth:`for_features`. On a
        screened path (:func:`dsketch.fit_path`), ``"auto"`` and ``"full"`` form the whole
        Hessian on the features that may move alone while they hold at most 2000 coefficients,
        whatever ``dK`` (:meth:`full_for`).

    Offsets are a row-aligned ``(n, K)`` member ``offset``; an offset of shape ``(n,)`` is
    refused (it adds the same number to every class of a row and has no effect).
    """

    name: ClassVar[str] = "multinomial"
    shift_invariant: ClassVar[bool] = True  # softmax ignores a vector added to every column
    has_deviance: ClassVar[bool] = False  # K outputs: no unit deviance of one linear predictor

    def __init__(self, l2: float = 1e-4, n_classes: int | None = None, n_unpenalized: int = 0,
                 preconditioner: str = "auto", l1: float = 0.0) -> None:
        super().__init__(l2=l2, n_unpenalized=n_unpenalized, l1=l1)
        if preconditioner not in PRECONDITIONERS:
            raise InvalidParameterError(f"preconditioner must be one of {PRECONDITIONERS}; got {preconditioner!r}")
        self.preconditioner = preconditioner
        #: Whether ``preconditioner`` is (or was resolved from) "auto": :meth:`full_for` may then
        #: choose the whole Hessian on a screened path's few features.
        self.auto_preconditioner = preconditioner == "auto"
        if n_classes is not None and (isinstance(n_classes, bool) or int(n_classes) != n_classes
                                      or n_classes < 2):
            raise InvalidParameterError(f"n_classes must be an integer >= 2 (or None: found from the labels); "
                                        f"got {n_classes!r}")
        self.n_classes = None if n_classes is None else int(n_classes)

    def __repr__(self) -> str:
        l1 = f", l1={self.l1!r}" if self.l1 else ""
        return (f"MultinomialRegression(l2={self.l2!r}{l1}, n_classes={self.n_classes!r}, "
                f"preconditioner={self.preconditioner!r})")

    @property
    def n_outputs(self) -> int:  # type: ignore[override]
        """``K``, the columns of the predictor ``A X`` (the coefficient matrix is d x K)."""
        if self.n_classes is None:
            # internal: fit() sets n_classes from the labels before the engine starts
            raise RuntimeError("n_classes is not known yet")
        return self.n_classes

    @property  # type: ignore[misc]
    def may_diverge(self) -> bool:  # type: ignore[override]
        return self.l2 == 0.0 or self.n_unpenalized > 0

    def with_classes(self, n_classes: int) -> MultinomialRegression:
        """A copy with ``n_classes`` set."""
        out = copy.copy(self)
        out.n_classes = int(n_classes)
        if out.n_classes < 2:
            raise InvalidTargetError(f"multinomial regression needs at least 2 classes; the labels give {n_classes}")
        return out

    def for_features(self, n_features: int) -> MultinomialRegression:
        """The model for ``n_features`` columns (intercept included) with ``preconditioner="auto"``
        resolved: ``"full"`` for an L1 fit whose ``n_features * K`` is at most
        :data:`FULL_CURVATURE_MAX`, else ``"block"`` (a copy; ``self`` is unchanged)."""
        if self.preconditioner != "auto":
            return self
        out = copy.copy(self)
        small = int(n_features) * self.n_outputs <= FULL_CURVATURE_MAX
        out.preconditioner = "full" if self.l1 > 0.0 and small else "block"
        return out

    def full_for(self, n_coef: int) -> MultinomialRegression | None:
        """The model whose curvature passes form the whole Hessian's class pairs
        (``preconditioner="full"``) for a curvature restricted to ``n_coef`` coefficients (the
        ``K`` classes of each of a screened path's features), or None where this model's own
        curvature stays: no L1 term, ``preconditioner="block"`` asked for, or ``n_coef`` above
        :data:`FULL_CURVATURE_MAX`. The loss and gradient are the same for both layouts."""
        wanted = self.preconditioner == "full" or self.auto_preconditioner
        if not (self.l1 > 0.0 and wanted and int(n_coef) <= FULL_CURVATURE_MAX):
            return None
        if self.preconditioner == "full":
            return self
        out = copy.copy(self)
        out.preconditioner = "full"
        return out

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "n_classes": self.n_classes, "preconditioner": self.preconditioner}

    # -- row data -------------------------------------------------------------------
    def row_data(self, block: Any) -> Any:
        """Labels, or with sample weights / offsets ``[labels, weights, offsets (K columns)]``."""
        if not self.row_members:
            return block.b
        n, k = block.b.shape[0], self.n_outputs
        s = block.extra.get("sample_weight")
        if s is not None:
            check_sample_weight(np.asarray(s, dtype=np.float64))
        o = block.extra.get("offset")
        if o is not None and np.shape(o)[1:] != (k,):
            raise StoreFormatError(
                f"multinomial regression takes offsets of shape (n, {k}), one a class; got {np.shape(o)} "
                "(an offset of shape (n,) adds the same number to every class and has no effect)")
        out = np.empty((n, 2 + (k if o is not None else 0)))
        out[:, 0] = block.b
        out[:, 1] = 1.0 if s is None else s
        if o is not None:
            out[:, 2:] = o
        return out

    def _split(self, b: FloatArray) -> tuple[FloatArray, FloatArray | None, FloatArray | None]:
        return split_multinomial(b, self.n_outputs)

    def check_targets(self, b: FloatArray) -> None:
        """Raise :class:`InvalidTargetError` unless every label is an integer in ``0 .. K-1``."""
        y = self._split(b)[0]
        bad = ~((y == np.round(y)) & (y >= 0) & (y < self.n_outputs))
        if bad.any():
            first = int(np.argmax(bad))
            raise InvalidTargetError(
                f"multinomial regression needs integer class labels 0..{self.n_outputs - 1}; {int(bad.sum())} of "
                f"{y.size} labels are not (first at row {first}: {float(y[first])!r}). Encode the classes as "
                "0..K-1 (the estimator LogisticRegression does this for any labels)")

    # -- per-row maths --------------------------------------------------------------
    def _eta(self, eta: FloatArray, o: FloatArray | None) -> FloatArray:
        return eta if o is None else eta + o

    def stats(self, eta: FloatArray, b: FloatArray, w: FloatArray | None) -> Stats:
        s = self._split(b)[1]
        n = int(eta.shape[0])
        return {"n": n, "s": float(n) if s is None else float(np.sum(s))}

    def _onehot(self, y: FloatArray) -> FloatArray:
        Y = np.zeros((y.size, self.n_outputs))
        Y[np.arange(y.size), y.astype(np.int64)] = 1.0
        return Y

    def loss_terms(self, eta: FloatArray, b: FloatArray, w: FloatArray | None, scalars: Scalars) -> float:
        """``(1/S) sum_block s_i (logsumexp(E_i) - E_{i, y_i})`` (compiled: one exponential an entry)."""
        y, s, o = self._split(b)
        return softmax_loss(self._eta(eta, o), y, s, 1.0 / scalars["n"])

    def _weighted_probs(self, eta: FloatArray, b: FloatArray, scalars: Scalars) -> tuple[FloatArray, FloatArray, FloatArray]:
        """``(P, W = diag(s/S) P, s/S)``."""
        y, s, o = self._split(b)
        P = softmax(self._eta(eta, o), axis=1)
        c = np.full(y.size, 1.0 / scalars["n"]) if s is None else np.where(s > 0.0, s, 0.0) / scalars["n"]
        return P, c[:, None] * P, c

    def row_terms(self, eta: FloatArray, b: FloatArray, w: FloatArray | None, scalars: Scalars) -> RowTerms:
        """``R = diag(s/S)(P - Y)`` (n x K) and the curvature weights: the diagonal blocks'
        ``s p_k (1 - p_k) / S`` (n x K), or with ``preconditioner="full"`` those of every class
        pair ``k <= l`` (``np.triu_indices(K)`` order), ``s (delta_kl p_k - p_k p_l) / S``."""
        return self.loss_row_terms(eta, b, w, scalars)[1]

    def loss_row_terms(self, eta: FloatArray, b: FloatArray, w: FloatArray | None, scalars: Scalars,
                       curvature: bool = True) -> tuple[float, RowTerms]:
        """:meth:`loss_terms` and :meth:`row_terms` from one compiled read of each row's
        exponentials; without ``curvature`` the curvature weights are not formed (``diag``
        None)."""
        y, s, o = self._split(b)
        E = self._eta(eta, o)
        full = curvature and self.preconditioner == "full"
        loss, R, D = softmax_terms(E, y, s, 1.0 / scalars["n"], diag=curvature and not full)
        if full:  # every class pair k <= l: (s/S)(delta_kl p_k - p_k p_l)
            P, W, _ = self._weighted_probs(eta, b, scalars)
            k, l = np.triu_indices(self.n_outputs)
            D = W[:, k] * ((k == l) - P[:, l])
        return loss, RowTerms(grad_weight=R, diag=D, lowrank=None)  # type: ignore[arg-type]

    def hessvec_rows(self, eta: FloatArray, b: FloatArray, w: FloatArray | None, scalars: Scalars,
                     av: FloatArray) -> FloatArray:
        """``W (.) AV - W (.) rowsum(P (.) AV)`` with ``W = diag(s/S) P``: ``H V = A^T`` of this (n x K)."""
        _, s, o = self._split(b)
        return softmax_hessvec(self._eta(eta, o), s, 1.0 / scalars["n"], av)

    # -- start: the log class frequencies as intercepts --------------------------------
    def init_terms(self, A: Any, b: FloatArray, w: FloatArray | None) -> dict[str, Any] | None:
        if not self.intercept:
            return None
        y, s, _ = self._split(b)
        s = np.ones_like(y) if s is None else s
        return {"counts": self._onehot(y).T @ s}

    def init_coef(self, total: dict[str, Any] | None, n_features: int) -> FloatArray:
        X = np.zeros((n_features, self.n_outputs))
        if self.intercept and total is not None and np.sum(total["counts"]) > 0:
            freq = np.maximum(total["counts"] / np.sum(total["counts"]), 1e-10)
            X[-1] = np.log(freq) - np.mean(np.log(freq))
        return X.ravel()

    def penalty(self, x: FloatArray) -> tuple[float, FloatArray, FloatArray]:
        """``(l2/2 ||X_p||^2, l2 X_p, l2 1_p)`` flattened; the last ``n_unpenalized`` rows are free."""
        k = self.n_outputs
        mask = np.full((x.size // k, k), self.l2)
        if self.n_unpenalized:
            mask[mask.shape[0] - self.n_unpenalized :] = 0.0
        m = mask.ravel()
        xp = m * x
        return 0.5 * float(x @ xp), xp, m

    def l1_weights(self, n_features: int) -> FloatArray:
        """The L1 strength of each entry of the flattened ``d x K`` coefficients
        (``n_features``: their number, ``dK``): ``l1``, but 0 on the last ``n_unpenalized``
        rows (``K`` entries each: the intercepts)."""
        w = np.full(n_features, self.l1)
        if self.n_unpenalized:
            w[n_features - self.n_unpenalized * self.n_outputs :] = 0.0
        return w

    # -- predictions ------------------------------------------------------------------
    def mean(self, eta: FloatArray) -> FloatArray:
        """Class probabilities ``softmax(E)`` row by row (n x K)."""
        out: FloatArray = softmax(eta, axis=1)
        return out

    def variance(self, mu: FloatArray) -> FloatArray:
        # internal: the dispersion is fixed and the link canonical, so inference never asks
        raise AssertionError("unreachable: the multinomial covariance is formed from inference_rows")

    def inference_rows(self, eta: FloatArray,
                       b: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray, np.ndarray]:
        """Per-row pieces of the covariance at ``E = A X`` (offsets not yet added).

        Returns ``(s (p - y), s (delta_kl p_k - p_k p_l), 0, s > 0)``: the ``n x K`` scores
        of the sum-form objective (row ``i``'s gradient is ``a_i kron`` its row), the upper
        triangles of the rows' ``K x K`` curvatures (``n x K (K+1) / 2``, ``np.triu_indices``
        order; the Hessian is ``sum_i a_i a_i^T kron`` these), no Pearson terms (the
        dispersion is fixed at 1) and which rows count (a zero sample weight drops its row).
        """
        self.check_targets(b)
        y, s, o = self._split(b)
        P = softmax(self._eta(eta, o), axis=1)
        keep = np.ones(y.size, dtype=bool) if s is None else s > 0.0
        c = keep.astype(np.float64) if s is None else np.where(keep, s, 0.0)
        k, l = np.triu_indices(self.n_outputs)
        curvature = c[:, None] * P[:, k] * ((k == l) - P[:, l])
        return c[:, None] * (P - self._onehot(y)), curvature, np.zeros(y.size), keep

    def _loss(self, eta: FloatArray, b: FloatArray) -> FloatArray:
        # internal: the multinomial loss is formed by loss_terms, not row by row
        raise AssertionError("unreachable: the multinomial loss is formed by loss_terms")

    def _d1_d2(self, eta: FloatArray, b: FloatArray) -> tuple[FloatArray, FloatArray]:
        # internal: the multinomial terms are formed by row_terms
        raise AssertionError("unreachable: the multinomial terms are formed by row_terms")

    def sample_targets(self, eta: FloatArray, scalars: Scalars, rng: np.random.Generator, *,
                       noise: float) -> FloatArray:
        """Labels drawn from ``softmax(eta)`` (``noise`` unused) as floats ``0 .. K-1``."""
        P = softmax(eta, axis=1)
        u = rng.random(eta.shape[0])[:, None]
        return np.minimum((np.cumsum(P, axis=1) < u).sum(axis=1), eta.shape[1] - 1).astype(np.float64)
