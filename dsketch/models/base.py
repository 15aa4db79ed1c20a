"""The model contract: per-block maths on in-memory NumPy arrays.

Every model's objective has the form

    L(x) = sum over row blocks of loss_terms(eta_b)  +  penalty(x),      eta = A x,

and its Hessian (or Gauss-Newton matrix) the Gram form (docs/theory.md#the-gram-form-of-the-hessian)

    H(x) = A^T diag(D) A  +  (A^T U) C (A^T U)^T  +  diag(penalty_hess(x)),

with the gradient ``A^T r + penalty_grad(x)``. ``r`` (the gradient weights), ``D`` and
``U`` are per-row quantities that depend on ``eta`` and on a few *global scalars* (the
softmax normaliser, for example). The scalars come from :meth:`Model.stats`, a partial
result per block that :meth:`Model.merge_stats` combines with an associative, numerically
stable rule, and :meth:`Model.scalars` turns the merged result into plain floats.

Nothing here imports dask: the engine maps these methods over row blocks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from dsketch.errors import InvalidParameterError

Stats = dict[str, Any]

#: Row-aligned per-row data that changes a model's objective when a store holds it: a model
#: either reads each of them (:attr:`Model.optional_members`) or refuses the store.
ROW_DATA_MEMBERS = ("sample_weight", "offset")
Scalars = dict[str, float]
FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class RowTerms:
    """Per-row pieces of the gradient and the Hessian on one row block.

    Attributes
    ----------
    grad_weight : ndarray of shape (n_rows,)
        ``r``: the block's gradient contribution is ``A_b^T r``.
    diag : ndarray of shape (n_rows,)
        ``D``: the block's diagonal-part contribution is ``A_b^T diag(D) A_b``. May be
        negative in places.
    lowrank : ndarray of shape (n_rows, k) or None
        ``U``: the low-rank factors; ``None`` when the model has ``rank == 0``.
    """

    grad_weight: FloatArray
    diag: FloatArray
    lowrank: FloatArray | None


class Model(ABC):
    """Abstract base of every model. Subclasses are small, immutable parameter holders.

    Class attributes
    ----------------
    name : str
        Registry name (``dsketch fit --model NAME``).
    rank : int
        ``k``, the number of low-rank factor columns (0 for purely diagonal Hessians).
    uses_w : bool
        Whether the per-row regularisation weights ``w`` of the store enter the model.
    """

    name: ClassVar[str] = ""
    rank: ClassVar[int] = 0
    uses_w: ClassVar[bool] = False
    #: Row-aligned store members the model reads besides ``A``, ``b`` and ``w``.
    row_members: ClassVar[tuple[str, ...]] = ()
    #: Row-aligned per-row data (:data:`ROW_DATA_MEMBERS`) the model reads when a store has
    #: it; a store holding one the model cannot use is refused by :meth:`bind`.
    optional_members: ClassVar[tuple[str, ...]] = ()
    #: Whether the model needs the row-aligned targets ``b`` of the store.
    needs_b: ClassVar[bool] = True
    #: False when the Hessian jumps (ReLU kinks): the solver then also accepts convergence
    #: in loss value (``NewtonConfig.ftol``).
    smooth: ClassVar[bool] = True
    #: True for a model whose infimum may lie at infinity (unpenalised logistic regression on
    #: separable classes): the solver then checks whether the loss and the curvature both
    #: vanished by the end and reports ``Status.DIVERGED`` instead of a convergence.
    may_diverge: ClassVar[bool] = False
    #: True when the global scalars do not depend on ``eta`` (row-separable losses): a pass
    #: can then evaluate the curvature at a trial point without a reduction first, and the
    #: solver fuses the line search with the next iteration's curvature pass.
    fixed_scalars: ClassVar[bool] = False
    #: Columns of the predictor ``A X``: 1 for every model but ``multinomial`` (K), whose
    #: coefficients are a ``d x K`` matrix flattened row by row and whose per-row terms
    #: (``eta``, ``r``, ``D``) are ``n x K``.
    n_outputs: int = 1
    #: True when the loss is unchanged by adding the same vector to every column of a
    #: K-output model's coefficients (softmax): proximal Newton on block curvature then
    #: also takes the shift that minimises the penalty (:class:`~dsketch.solvers.proximal.ProximalCoordinateDescent`).
    shift_invariant: ClassVar[bool] = False

    # -- binding to a store -----------------------------------------------------------
    def row_data(self, block: Any) -> Any:
        """What the per-row methods receive as ``b`` for one :class:`~dsketch.store.Block`.

        The targets ``block.b`` for every model except the paired ones, which pair the rows
        of ``A`` with the rows of another row-aligned member.
        """
        return block.b

    def bind(self, spec: Any) -> Model:
        """Check that a problem store has what the model reads; return the model to fit it.

        Paired models load their global targets here (a new, bound model is returned).

        Raises
        ------
        StoreFormatError
            When the store lacks a member the model needs (the message names it).
        """
        from dsketch.errors import StoreFormatError

        if self.needs_b and not spec.has_b:
            raise StoreFormatError(
                f"model {self.name!r} needs row-aligned targets 'b', which store {spec.path!r} does not "
                f"have (its members: {list(spec.members)}, global: {list(spec.global_members)})"
            )
        missing = [m for m in self.row_members if m not in spec.members]
        if missing:
            raise StoreFormatError(
                f"model {self.name!r} reads the row-aligned member(s) {missing}, which store "
                f"{spec.path!r} does not have (its members: {list(spec.members)})"
            )
        self.check_unused(spec)
        return self

    def with_intercept(self) -> Model:
        """This model with an unpenalised intercept as the last coefficient (the engine reads
        ``A`` with a column of ones appended). Only the GLMs have one.

        Raises
        ------
        ValueError
            For models whose objective has no use for an intercept.
        """
        raise InvalidParameterError(
            f"model {self.name!r} has no intercept (fit_intercept is for the GLMs: logistic, poisson, "
            "least-squares, gamma, tweedie, ...); append a column of ones to A if you want one regardless"
        )

    def for_features(self, n_features: int) -> Model:
        """This model for a problem of ``n_features`` columns (the intercept's included), with
        any choice that depends on the size made (the multinomial model's curvature layout);
        default: the model itself."""
        return self

    def check_unused(self, spec: Any) -> None:
        """Refuse a store that holds per-row data this model would silently ignore.

        Row weights ``w`` are the softmax-type models' regularisation weights; sample weights
        and offsets (:data:`ROW_DATA_MEMBERS`) are read by the GLMs only.

        Raises
        ------
        StoreFormatError
            Naming the member and what to do instead.
        """
        from dsketch.errors import StoreFormatError

        if spec.has_w and not self.uses_w:
            raise StoreFormatError(
                f"store {spec.path!r} has row weights 'w', which model {self.name!r} does not use ('w' "
                "are the softmax-type models' regularisation weights). Sample weights of a GLM belong in "
                "the member 'sample_weight' (dsketch convert --sample-weight, write_problem(..., "
                "sample_weight=...)); rewrite the store without 'w'"
            )
        unused = [m for m in ROW_DATA_MEMBERS if m in spec.members and m not in self.optional_members]
        if unused:
            raise StoreFormatError(
                f"store {spec.path!r} has the row-aligned member(s) {unused}, which model {self.name!r} "
                "does not support (sample weights and offsets are read by the GLMs: logistic, poisson, "
                "least-squares, gamma, tweedie, ...); fit a GLM or rewrite the store without them"
            )

    def global_loss(self, scalars: Scalars) -> float:
        """The part of the objective that is a function of the global scalars alone (added
        once, not per block); 0 for row-separable losses."""
        return 0.0

    # -- global statistics ----------------------------------------------------------
    @abstractmethod
    def stats(self, eta: FloatArray, b: FloatArray, w: FloatArray | None) -> Stats:
        """Partial statistics of one block. Must contain ``"n"`` (the row count)."""

    @abstractmethod
    def merge_stats(self, left: Stats, right: Stats) -> Stats:
        """Combine two partial statistics (associative; stable for any magnitudes)."""

    @abstractmethod
    def scalars(self, stats: Stats) -> Scalars:
        """Global scalars from fully merged statistics."""

    # -- per-row terms -------------------------------------------------------------
    @abstractmethod
    def loss_terms(
        self, eta: FloatArray, b: FloatArray, w: FloatArray | None, scalars: Scalars
    ) -> float:
        """The block's contribution to the data part of the objective (a sum)."""

    @abstractmethod
    def row_terms(
        self, eta: FloatArray, b: FloatArray, w: FloatArray | None, scalars: Scalars
    ) -> RowTerms:
        """Gradient weights ``r``, diagonal ``D`` and low-rank factors ``U`` of a block."""

    def loss_row_terms(self, eta: FloatArray, b: FloatArray, w: FloatArray | None, scalars: Scalars,
                       curvature: bool = True) -> tuple[float, RowTerms]:
        """:meth:`loss_terms` and :meth:`row_terms` at the same ``eta``, for a pass that needs
        both. A model may share their work (one transcendental function a row) and, without
        ``curvature``, leave ``diag`` None (a first-order pass does not read it)."""
        return float(self.loss_terms(eta, b, w, scalars)), self.row_terms(eta, b, w, scalars)

    def hessvec_rows(self, eta: FloatArray, b: FloatArray, w: FloatArray | None, scalars: Scalars,
                     av: FloatArray) -> FloatArray:
        """The row weights of the diagonal part of ``H v``: ``A^T`` of the result is
        ``A^T diag(D) A v`` for ``av = A v`` (a multi-output model mixes its columns here)."""
        return self.row_terms(eta, b, w, scalars).diag * av

    def core(self, scalars: Scalars) -> FloatArray:
        """The ``k x k`` symmetric core ``C`` (empty when ``rank == 0``)."""
        return np.zeros((0, 0))

    # -- coefficient-space penalty ---------------------------------------------------
    def penalty(self, x: FloatArray) -> tuple[float, FloatArray, FloatArray]:
        """Value, gradient and Hessian diagonal of a penalty on ``x`` itself (default none)."""
        return 0.0, np.zeros_like(x), np.zeros_like(x)

    def nonsmooth(self, x: FloatArray) -> float:
        """A convex term of the objective without a gradient (an L1 penalty), evaluated on
        the driver; default none. Its coefficient-wise strengths are ``l1_weights``."""
        return 0.0

    def l1_weights(self, n_features: int) -> FloatArray:
        """The L1 strength of each coefficient (default: zeros, no L1 term)."""
        return np.zeros(n_features)

    # -- starting point ---------------------------------------------------------------
    def init_terms(self, A: Any, b: FloatArray, w: FloatArray | None) -> dict[str, Any] | None:
        """Partial sums (one block) of a data-driven starting point, or None for zeros."""
        return None

    def init_coef(self, total: dict[str, Any], n_features: int) -> FloatArray:
        """The starting point from the summed :meth:`init_terms` (default: zeros)."""
        return np.zeros(n_features)

    # -- validation -----------------------------------------------------------------
    def check_targets(self, b: FloatArray) -> None:
        """Raise ``ValueError`` when targets are outside the model's domain."""

    def describe(self) -> dict[str, Any]:
        """Name and parameters, for result metadata."""
        return {"model": self.name}


def _as_matrix(A: Any) -> Any:
    return A.tocsr() if sp.issparse(A) else np.asarray(A, dtype=np.float64)


def loss_gradient_hessian(
    model: Model,
    A: Any,
    b: FloatArray,
    x: FloatArray,
    w: FloatArray | None = None,
) -> tuple[float, FloatArray, FloatArray]:
    """Loss, gradient and dense Hessian of ``model`` at ``x`` on in-memory data.

    The whole of ``A`` is treated as one row block, so this is the small-data reference
    route: it assembles ``A^T diag(D) A + (A^T U) C (A^T U)^T + diag(penalty_hess)``.

    Parameters
    ----------
    model : Model
    A : ndarray or scipy.sparse matrix of shape (n_samples, n_features)
    b : ndarray of shape (n_samples,)
        The targets; for the paired models (``two-layer``, ``softmax-relu`` reading C) the
        matrix ``A2^T`` of shape (n_samples, m), with the m targets given to the model.
    x : ndarray of shape (n_features,)
    w : ndarray of shape (n_samples,), optional

    Returns
    -------
    loss : float
    grad : ndarray of shape (n_features,)
    hess : ndarray of shape (n_features, n_features)
    """
    A = _as_matrix(A)
    x = np.asarray(x, dtype=np.float64)
    b = np.asarray(b.toarray() if sp.issparse(b) else b, dtype=np.float64)
    w = None if w is None else np.asarray(w, dtype=np.float64)
    eta = np.asarray(A @ x, dtype=np.float64).ravel()
    sc = model.scalars(model.stats(eta, b, w))
    terms = model.row_terms(eta, b, w, sc)
    pv, pg, ph = model.penalty(x)
    loss = float(model.loss_terms(eta, b, w, sc)) + float(model.global_loss(sc)) + pv
    grad = np.asarray(A.T @ terms.grad_weight).ravel() + pg
    if sp.issparse(A):
        hess = np.asarray((A.T @ sp.diags(terms.diag) @ A).todense())
    else:
        hess = A.T @ (terms.diag[:, None] * A)
    if terms.lowrank is not None and terms.lowrank.shape[1] > 0:
        AU = np.asarray(A.T @ terms.lowrank)
        hess = hess + AU @ model.core(sc) @ AU.T
    hess = hess + np.diag(ph)
    return loss, grad, hess
