"""The sketch contract: per-block partial results that the engine sums, then a driver step.

A sketch estimates ``G = A^T diag(D) A`` (``A`` n x d, dense or CSR; ``D`` real and possibly
negative in places) from row blocks. For block ``b`` holding global rows ``[r0, r0 + n_b)``:

1. for each preliminary stage ``k < n_pre_stages`` (each one a pass over the blocks):
   ``pre_block(k, A_b, D_b, rownorm2_b, r0, ctx)`` returns a partial (``A_b`` is None when
   ``pre_stage_reads_A[k]`` is False); the engine sums the partials key by key and the
   driver calls ``ctx = pre_finish(k, total, ctx)``, which puts what the next pass needs
   into ``ctx.info`` (a normaliser, a ``d x k`` transform, ...) for broadcasting;
2. ``block(A_b, D_b, r0, ctx)`` returns the final partial, summed the same way;
3. ``finish(total, ctx)`` turns the sum into a :class:`SketchResult` on the driver.

A *partial* is a ``dict[str, ndarray | float]`` whose values add with ``+``; the Python
float ``0.0`` stands for an all-zero array (it broadcasts in the sum), which saves sending
zero matrices. Every block of one pass returns the same keys. Randomness comes from
:mod:`dsketch.sketch.random`, keyed by ``(ctx.seed, ctx.iteration, stream, global row)``, so
partials do not depend on the block split, the worker, or retries.

Dtypes: a float32 ``A`` stays float32 in the ``O(nnz)`` products (embedding, Gram of the
kept rows, ``A_b T``); every partial and every result is float64, and so is ``D``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Union

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from dsketch.errors import DSketchTypeError, DTypeError, InvalidParameterError, NonFiniteCurvatureError
from dsketch.sketch._sparse_gram import csr_weighted_gram, symmetric_part

Partial = dict[str, Any]
FloatArray = NDArray[np.floating[Any]]
Block = Union[np.ndarray, sp.csr_matrix]


def _check_int(name: str, val: Any, low: int | None) -> int:
    if isinstance(val, (bool, np.bool_)) or not isinstance(val, (int, np.integer)):
        raise DSketchTypeError(f"{name} must be an integer; got {type(val).__name__} {val!r}")
    if low is not None and val < low:
        raise InvalidParameterError(f"{name} must be >= {low}; got {val}")
    return int(val)


@dataclass(frozen=True)
class SketchContext:
    """What every block of one sketch needs to know (broadcast to the workers).

    Attributes
    ----------
    seed : int
        Key of the counter-based randomness (any integer, reduced modulo 2**64).
    iteration : int
        Solver iteration (>= 0); a new iteration draws fresh randomness.
    n_samples, n_features : int
        Shape ``(n, d)`` of ``A`` (both >= 1).
    sketch_size : int
        Expected number of rows sampled (samplers) or embedding dimension (>= 1);
        ignored by the exact sketch.
    info : dict
        Values computed on the driver by ``pre_finish`` (documented per sketch).
    n_kept : int, optional
        Rows of ``A`` that a row mask keeps (the others have ``D_i = 0`` by construction:
        :meth:`dsketch.store.ProblemSpec.with_row_mask`); None: all ``n_samples``. Uniform
        sampling spreads its size over these rows.
    """

    seed: int
    iteration: int
    n_samples: int
    n_features: int
    sketch_size: int
    info: dict[str, Any] = field(default_factory=dict)
    n_kept: int | None = None

    def __post_init__(self) -> None:
        _check_int("seed", self.seed, None)
        _check_int("iteration", self.iteration, 0)
        _check_int("n_samples", self.n_samples, 1)
        _check_int("n_features", self.n_features, 1)
        _check_int("sketch_size", self.sketch_size, 1)
        if self.n_kept is not None and not 0 <= _check_int("n_kept", self.n_kept, 0) <= self.n_samples:
            raise InvalidParameterError(f"n_kept must be in 0 .. n_samples={self.n_samples}; got {self.n_kept}")
        if not isinstance(self.info, dict):
            raise DSketchTypeError(f"info must be a dict; got {type(self.info).__name__}")

    @property
    def rows_kept(self) -> int:
        """``n_kept``, or ``n_samples`` without a row mask."""
        return self.n_samples if self.n_kept is None else self.n_kept

    def with_info(self, **values: Any) -> SketchContext:
        """A copy whose ``info`` is updated with ``values``."""
        return replace(self, info={**self.info, **values})


@dataclass(frozen=True)
class SketchResult:
    """A curvature estimate.

    Attributes
    ----------
    gram : ndarray of shape (n_features, n_features), float64
        Symmetric estimate of ``A^T diag(D) A``.
    n_rows : int
        Rows actually sampled (samplers), the embedding dimension (embeddings), or
        ``n_samples`` (exact).
    kind : str
        The sketch's registry name.
    diagnostics : dict
        Per-sketch extras, e.g. ``expected_rows`` (sum of the inclusion probabilities),
        ``rank`` and ``scores`` (leverage), ``has_negative`` (embeddings).
    """

    gram: np.ndarray
    n_rows: int
    kind: str = ""
    diagnostics: dict[str, Any] = field(default_factory=dict)


class Sketch(ABC):
    """Base class of every sketch of ``A^T diag(D) A`` (see the module docstring).

    Attributes
    ----------
    kind : str
        Registry name.
    n_pre_stages : int
        Number of preliminary reductions before the final pass.
    pre_stage_reads_A : tuple of bool
        Whether each preliminary stage needs ``A_b`` (a pass over A) or only ``D_b`` and
        the cached squared row norms.
    refreshes_from_gram : bool
        Whether :meth:`context_from_gram` can stand in for the preliminary stages.
    """

    kind: ClassVar[str] = ""
    n_pre_stages: int = 0
    pre_stage_reads_A: tuple[bool, ...] = ()
    #: Whether :meth:`context_from_gram` rebuilds the preliminary context (no pass needed).
    refreshes_from_gram: ClassVar[bool] = False

    def pre_block(
        self, stage: int, A_b: Block | None, D_b: np.ndarray, rownorm2_b: np.ndarray, r0: int, ctx: SketchContext
    ) -> Partial:
        """Partial sums of preliminary stage ``stage`` on one block."""
        # internal: the solver calls only the stages a sketch declares
        raise ValueError(f"sketch {self.kind!r} has no preliminary stage {stage!r} (it has {self.n_pre_stages})")

    def pre_finish(self, stage: int, total: Partial, ctx: SketchContext) -> SketchContext:
        """Driver step after preliminary stage ``stage``: the context for the next pass."""
        # internal: the solver calls only the stages a sketch declares
        raise ValueError(f"sketch {self.kind!r} has no preliminary stage {stage!r} (it has {self.n_pre_stages})")

    def context_from_gram(self, gram: np.ndarray, ctx: SketchContext,
                          ridge: np.ndarray | float = 0.0) -> SketchContext | None:
        """The context of the preliminary stages rebuilt from an estimate of ``A^T |D| A``
        (plus ``diag(ridge)``, the Hessian's penalty).

        Sketches whose preliminary pass estimates a ``d x d`` quantity (leverage scores)
        can take it from the previous iteration's sketched Gram instead of a pass over A;
        they return the new context. None (the default): not possible, run the stages.
        """
        return None

    @abstractmethod
    def block(self, A_b: Block, D_b: np.ndarray, r0: int, ctx: SketchContext) -> Partial:
        """Final partial sums on one block."""

    @abstractmethod
    def finish(self, total: Partial, ctx: SketchContext) -> SketchResult:
        """The estimate from the summed final partials."""

    @abstractmethod
    def size_for(self, eps: float, delta: float, n_features: int) -> int:
        """Documented sketch size for a (1 +- eps) guarantee with probability >= 1 - delta."""

    def describe(self) -> dict[str, Any]:
        """The sketch's name and parameters (JSON-able)."""
        return {"sketch": self.kind}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "sketch")
        return f"{type(self).__name__}({params})"


# ---------------------------------------------------------------- helpers shared by sketches
def as_block(A: Any) -> Block:
    """Validate a block of ``A``: a 2-D float ndarray (kept as float32/float64) or CSR.

    Integer and boolean arrays are converted to float64; other sparse formats to CSR.
    """
    if sp.issparse(A):
        A = A.tocsr() if A.format != "csr" else A
        if A.dtype.kind not in "fiub":
            raise DTypeError(f"A must hold real numbers; got sparse dtype {A.dtype}")
        return A if A.dtype.kind == "f" else A.astype(np.float64)
    A = np.asarray(A)
    if A.ndim != 2:
        raise InvalidParameterError(f"A block must be 2-D (rows x features); got shape {A.shape}")
    if A.dtype.kind not in "fiub":
        raise DTypeError(f"A must hold real numbers; got dtype {A.dtype} -- convert with A.astype(float)")
    return A if A.dtype.kind == "f" else A.astype(np.float64)


def check_weights(D_b: Any, n_rows: int, r0: int) -> np.ndarray:
    """``D_b`` as a finite float64 vector of length ``n_rows`` (errors name the rows)."""
    D = np.asarray(D_b, dtype=np.float64)
    if D.ndim != 1 or D.size != n_rows:
        raise InvalidParameterError(f"D for rows [{r0}, {r0 + n_rows}) must have shape ({n_rows},); got {D.shape}")
    if not np.isfinite(D).all():
        bad = int(np.flatnonzero(~np.isfinite(D))[0]) + r0
        raise NonFiniteCurvatureError(
            f"the curvature weights D are not finite at global row {bad}: the model's loss overflows at "
            "this point"
        )
    return D


def work_dtype(A: Block) -> np.dtype[Any]:
    """Dtype of the O(nnz) products: float32 stays float32, everything else float64."""
    return np.dtype(np.float32) if A.dtype == np.float32 else np.dtype(np.float64)


def scale_rows(A: Block, s: np.ndarray) -> Block:
    """``diag(s) A`` in ``A``'s working dtype, without densifying a CSR ``A``."""
    dt = work_dtype(A)
    s = np.asarray(s, dtype=dt)
    if sp.issparse(A):
        data = A.data.astype(dt, copy=False) * np.repeat(s, np.diff(A.indptr))
        return sp.csr_matrix((data, A.indices, A.indptr), shape=A.shape)
    return A.astype(dt, copy=False) * s[:, None]


def _self_gram(S: np.ndarray) -> np.ndarray:
    """``S^T S`` for a dense ``S``: NumPy's matmul of an array with its own transpose is a
    symmetric rank-k update (BLAS ``syrk``), half the multiply-adds of a general product."""
    S = np.ascontiguousarray(S)
    return S.T @ S


def weighted_gram(A: Block, weights: np.ndarray) -> np.ndarray:
    """``A^T diag(weights) A`` as a dense float64 array (products in ``A``'s working dtype).

    Dense ``A``: ``S^T S`` with ``S = diag(sqrt(w)) A`` (a symmetric rank-k update, half
    the work of ``A^T (w A)``); weights of both signs take one update per sign. CSR ``A``:
    the pairs of each row's entries added straight into the dense upper triangle
    (:mod:`dsketch.sketch._sparse_gram`; sums in float64).
    """
    d = A.shape[1]
    if A.shape[0] == 0:
        return np.zeros((d, d))
    if sp.issparse(A):
        return csr_weighted_gram(A, weights)
    w = np.asarray(weights, dtype=np.float64)
    G = np.asarray(_self_gram(scale_rows(A, np.sqrt(np.maximum(w, 0.0)))), dtype=np.float64)
    neg = w < 0.0
    if neg.any():
        G = G - _self_gram(scale_rows(A[neg], np.sqrt(-w[neg])))
    return 0.5 * (G + G.T)


def row_norms2(A: Block) -> np.ndarray:
    """Squared Euclidean norms of the rows of ``A`` (float64)."""
    if sp.issparse(A):
        A = A.tocsr()
        rows = np.repeat(np.arange(A.shape[0]), np.diff(A.indptr))
        return np.bincount(rows, weights=np.square(A.data, dtype=np.float64), minlength=A.shape[0])
    return np.einsum("ij,ij->i", A, A, dtype=np.float64)


def matmul_dense(A: Block, T: np.ndarray) -> np.ndarray:
    """``A @ T`` as a dense array in ``A``'s working dtype."""
    out = A @ T.astype(work_dtype(A), copy=False)
    return np.asarray(out.toarray() if sp.issparse(out) else out)


def sym(G: Any, d: int) -> np.ndarray:
    """A summed ``d x d`` partial (or the float 0.0) as a symmetric float64 array."""
    G = np.asarray(G, dtype=np.float64)
    if G.ndim == 0:
        return np.full((d, d), float(G))
    return symmetric_part(G)


def check_eps_delta(eps: float, delta: float) -> None:
    """``eps`` and ``delta`` must both lie in the open interval (0, 1)."""
    for name, val in (("eps", eps), ("delta", delta)):
        if isinstance(val, (bool, np.bool_)) or not isinstance(val, (int, float, np.integer, np.floating)):
            raise DSketchTypeError(f"{name} must be a real number; got {type(val).__name__} {val!r}")
        if not 0.0 < float(val) < 1.0:
            raise InvalidParameterError(f"{name} must lie in the open interval (0, 1); got {val!r}")


def check_n_features(n_features: Any) -> int:
    """``n_features`` as a positive int."""
    return _check_int("n_features", n_features, 1)


def check_param_int(name: str, val: Any, low: int = 1) -> int:
    """A constructor integer parameter, at least ``low``."""
    return _check_int(name, val, low)
