"""Dense d x d linear algebra of the driver: the Newton system and its fallbacks."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg as sla

from dsketch.errors import NumericalWarning


def solve_newton_system(hess: np.ndarray, grad: np.ndarray, *, stacklevel: int = 4) -> tuple[np.ndarray, str]:
    """Return the Newton direction ``p = -H^{-1} g`` and how it was obtained.

    1. Cholesky of the symmetrised ``H`` (the normal case: ``"cholesky"``).
    2. If ``H`` is not numerically positive definite (a sketch with signed weights, or a
       non-convex model away from the optimum), ``H`` is replaced by ``V |Lambda| V^T``
       with eigenvalues floored at ``1e-10 * max|lambda|`` (``"eigen-modified"``), which
       is positive definite and keeps the curvature's scale in every direction.
    3. If the result is still not a descent direction (``g . p >= 0``, only possible with
       non-finite input), the scaled steepest-descent direction ``-g / ||H||_2`` is used
       (``"gradient"``).

    Cases 2 and 3 emit a :class:`~dsketch.errors.NumericalWarning`.
    """
    H = 0.5 * (hess + hess.T)
    method = "cholesky"
    try:
        c, low = sla.cho_factor(H, lower=True, check_finite=True)
        p = -sla.cho_solve((c, low), grad)
    except (np.linalg.LinAlgError, ValueError):
        lam, V = np.linalg.eigh(H)
        scale = float(np.max(np.abs(lam))) if lam.size else 0.0
        floor = max(scale * 1e-10, np.finfo(float).tiny)
        lam_mod = np.maximum(np.abs(lam), floor)
        p = -(V @ ((V.T @ grad) / lam_mod))
        method = "eigen-modified"
        warnings.warn(
            f"the Hessian estimate is not positive definite (smallest eigenvalue "
            f"{lam.min():.3e}, largest {lam.max():.3e}); solved with |eigenvalues| floored "
            f"at {floor:.3e} instead",
            NumericalWarning,
            stacklevel=stacklevel,
        )
    if not np.all(np.isfinite(p)) or float(grad @ p) >= 0.0:
        norm = float(np.linalg.norm(H, 2)) if np.all(np.isfinite(H)) else 0.0
        p = -grad / (norm if norm > 0 else 1.0)
        method = "gradient"
        warnings.warn(
            "the Newton system gave no descent direction; taking a scaled gradient step",
            NumericalWarning,
            stacklevel=stacklevel,
        )
    return p, method
