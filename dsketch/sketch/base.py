"""The sketch contract: per-block partial results that the engine sums, then a driver step.

A sketch estimates ``G = A^T diag(D) A`` (``A`` n x d, ``D`` real, possibly negative in
places) from row blocks. For block ``b`` with global rows ``[r0, r0 + n_b)``:

* ``pre_block(stage, A_b, D_b, rownorm2_b, r0, ctx)`` returns the partial sums of a
  preliminary reduction (``A_b`` is ``None`` when ``pre_stage_reads_A[stage]`` is False);
  ``pre_finish(stage, total, ctx)`` turns their sum into entries of ``ctx.info`` that are
  broadcast to the next stage (a normaliser, a ``d x k`` transform, ...);
* ``block(A_b, D_b, r0, ctx)`` returns the final partial sums, and
  ``finish(total, ctx)`` the :class:`SketchResult`.

Partial results are dicts of arrays / floats combined key by key with ``+``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

Partial = dict[str, Any]


@dataclass(frozen=True)
class SketchContext:
    """What every block of one sketch needs to know.

    Attributes
    ----------
    seed, iteration : int
        Key of the counter-based randomness (with the global row index).
    n_samples, n_features : int
        Shape of ``A``.
    sketch_size : int
        Expected rows sampled, or the embedding dimension.
    info : dict
        Values computed by preliminary stages on the driver.
    """

    seed: int
    iteration: int
    n_samples: int
    n_features: int
    sketch_size: int
    info: dict[str, Any] = field(default_factory=dict)

    def with_info(self, **values: Any) -> SketchContext:
        return replace(self, info={**self.info, **values})


@dataclass(frozen=True)
class SketchResult:
    """A curvature estimate.

    Attributes
    ----------
    gram : ndarray of shape (d, d)
        Symmetric estimate of ``A^T diag(D) A``.
    n_rows : int
        Rows sampled (samplers) or embedding dimension (embeddings); ``n`` for exact.
    """

    gram: np.ndarray
    n_rows: int


class Sketch(ABC):
    """Base class of every sketch."""

    kind: ClassVar[str] = ""
    n_pre_stages: ClassVar[int] = 0
    pre_stage_reads_A: ClassVar[tuple[bool, ...]] = ()

    def pre_block(
        self, stage: int, A_b: Any, D_b: np.ndarray, rownorm2_b: np.ndarray, r0: int, ctx: SketchContext
    ) -> Partial:
        """Partial sums of preliminary stage ``stage`` on one block."""
        raise IndexError(f"sketch {self.kind!r} has no preliminary stage {stage}")

    def pre_finish(self, stage: int, total: Partial, ctx: SketchContext) -> SketchContext:
        """Driver step after preliminary stage ``stage``."""
        raise IndexError(f"sketch {self.kind!r} has no preliminary stage {stage}")

    @abstractmethod
    def block(self, A_b: Any, D_b: np.ndarray, r0: int, ctx: SketchContext) -> Partial:
        """Final partial sums on one block."""

    @abstractmethod
    def finish(self, total: Partial, ctx: SketchContext) -> SketchResult:
        """The estimate from the summed partials."""

    @abstractmethod
    def size_for(self, eps: float, delta: float, n_features: int) -> int:
        """Sketch size giving a (1 +- eps) spectral approximation w.p. >= 1 - delta."""

    def describe(self) -> dict[str, Any]:
        return {"sketch": self.kind}


# ---------------------------------------------------------------- helpers shared by sketches
def weighted_gram(A: Any, weights: np.ndarray) -> np.ndarray:
    """``A^T diag(weights) A`` as a dense float64 array (A dense or CSR)."""
    if sp.issparse(A):
        return np.asarray((A.T @ A.multiply(weights[:, None]).tocsr()).toarray(), dtype=np.float64)
    return (A.T * weights) @ A


def row_norms2(A: Any) -> np.ndarray:
    """Squared Euclidean norms of the rows of ``A``."""
    if sp.issparse(A):
        return np.asarray(A.multiply(A).sum(axis=1), dtype=np.float64).ravel()
    return np.einsum("ij,ij->i", A, A, dtype=np.float64)


def scale_rows(A: Any, s: np.ndarray) -> Any:
    """``diag(s) A`` without densifying sparse ``A``."""
    if sp.issparse(A):
        return sp.csr_matrix(A.multiply(s[:, None]))
    return A * s[:, None]


def take_rows(A: Any, idx: np.ndarray) -> Any:
    return A[idx]


def check_eps_delta(eps: float, delta: float) -> None:
    if not 0.0 < eps < 1.0:
        raise ValueError(f"eps must lie in (0, 1); got {eps!r}")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must lie in (0, 1); got {delta!r}")
