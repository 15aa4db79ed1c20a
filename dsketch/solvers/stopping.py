"""Stopping tests of the Newton solver that look beyond the gradient: whether a model whose
infimum may lie at infinity (unpenalised logistic regression on separable classes) ended
with its loss and curvature both vanished."""

from __future__ import annotations

from typing import Any

import numpy as np

from dsketch.models.base import Model


def _trace(H: np.ndarray | None) -> float:
    return float(np.trace(H)) if isinstance(H, np.ndarray) and H.ndim == 2 else np.nan


#: Fraction of its first value below which a diverging model's loss and curvature count as
#: vanished (unpenalised logistic regression on separable classes: both go to zero).
VANISHED = 1e-6


def _vanished(model: Model, first: tuple[float, float], it: Any) -> bool:
    """Whether ``model`` (``may_diverge``) ended where its loss and the trace of its
    curvature both fell below :data:`VANISHED` of their first values: the infimum is at
    infinity, and the "converged" coefficients are only as large as the iterations made them.
    Where either end has no curvature (a first-order iteration: L-BFGS, gradient descent)
    the loss alone decides."""
    if not getattr(model, "may_diverge", False):
        return False
    loss0, trace0 = first
    trace1 = _trace(it.hess)
    if not (loss0 > 0 and it.loss <= VANISHED * loss0):
        return False
    if np.isnan(trace0) or np.isnan(trace1):
        return True
    return bool(trace0 > 0 and trace1 <= VANISHED * trace0)
