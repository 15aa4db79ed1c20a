"""Compiled per-row kernels of multinomial regression (:mod:`dsketch.models.multinomial`).

A pass of a first-order fit needs, per row ``i`` of the predictor ``E`` (``n x K``), the
loss term ``logsumexp(E_i) - E_{i, y_i}`` and the gradient weights ``c_i (p_i - e_{y_i})``
with ``p_i = softmax(E_i)`` and ``c_i = s_i / S``. Written with NumPy these take several
temporaries of ``n x K`` and two exponentials of every entry (one for the loss, one for the
probabilities): on a sparse design, where ``A X`` is cheap, that was about 85% of a pass.
Here each row is read once, its ``K`` exponentials taken once, and the loss, the weights and
(when asked) the diagonal blocks' curvature weights ``c_i p_ik (1 - p_ik)`` written from
them. The kernels release the GIL, so row blocks on threads run them in parallel. The row
losses are summed by NumPy's pairwise summation, not in the loop: near the optimum the line
search compares losses that differ in their last digits, and a running sum over 10^5 rows
loses about two more of them (a fit on 2e5 x 2000 stalled in backtracking at a relative
gradient of 1e-7 with one).

Weights: ``s`` of length ``n`` (a row with ``s_i <= 0`` contributes nothing and gets zero
weights), or of length 0 for unit weights; ``scale`` is ``1 / S``. Labels are the model's
float labels (integers ``0 .. K-1``, checked before a fit starts).

A row whose largest entry is not finite gives a NaN loss and NaN weights: the callers treat
a non-finite result as an overflow (the trial step is rejected, or the fit stops).
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _row_weight(s: Any, scale: float, i: int) -> float:  # pragma: no cover - compiled
    if s.size == 0:
        return scale
    return s[i] * scale if s[i] > 0.0 else 0.0


@numba.njit(cache=True, nogil=True)
def _row_max(E: Any, i: int) -> float:  # pragma: no cover - compiled
    m = E[i, 0]
    for j in range(1, E.shape[1]):
        m = max(m, E[i, j])
    return m


@numba.njit(cache=True, nogil=True)
def _exp_row(E: Any, i: int, out: Any) -> tuple[float, float]:  # pragma: no cover - compiled
    """``out[i] = exp(E[i] - m)`` with ``m = max E[i]``; returns ``(m, sum out[i])``."""
    m = _row_max(E, i)
    acc = 0.0
    for j in range(E.shape[1]):
        e = np.exp(E[i, j] - m)
        out[i, j] = e
        acc += e
    return m, acc


@numba.njit(cache=True, nogil=True)
def _loss_kernel(E: Any, y: Any, s: Any, scale: float, out: Any) -> None:  # pragma: no cover - compiled
    for i in range(E.shape[0]):
        c = _row_weight(s, scale, i)
        out[i] = 0.0
        if c != 0.0:
            m = _row_max(E, i)
            acc = 0.0
            for j in range(E.shape[1]):
                acc += np.exp(E[i, j] - m)
            out[i] = c * (m + np.log(acc) - E[i, int(y[i])])


@numba.njit(cache=True, nogil=True)
def _terms_kernel(E: Any, y: Any, s: Any, scale: float, out: Any, R: Any,
                  D: Any) -> None:  # pragma: no cover - compiled
    n, k = E.shape
    want_d = D.shape[0] == n
    for i in range(n):
        c = _row_weight(s, scale, i)
        out[i] = 0.0
        if c == 0.0:  # a row without weight: no terms, whatever its predictor
            R[i] = 0.0
            if want_d:
                D[i] = 0.0
            continue
        m, acc = _exp_row(E, i, R)
        label = int(y[i])
        out[i] = c * (m + np.log(acc) - E[i, label])
        for j in range(k):
            p = R[i, j] / acc
            R[i, j] = c * p
            if want_d:
                D[i, j] = c * p * (1.0 - p)
        R[i, label] -= c


@numba.njit(cache=True, nogil=True)
def _hessvec_kernel(E: Any, s: Any, scale: float, AV: Any, out: Any) -> None:  # pragma: no cover - compiled
    for i in range(E.shape[0]):
        c = _row_weight(s, scale, i)
        if c == 0.0:
            out[i] = 0.0
            continue
        acc = _exp_row(E, i, out)[1]
        mix = 0.0
        for j in range(E.shape[1]):
            out[i, j] /= acc
            mix += out[i, j] * AV[i, j]
        for j in range(E.shape[1]):
            out[i, j] = c * out[i, j] * (AV[i, j] - mix)


def _weights(s: np.ndarray | None) -> np.ndarray:
    return np.empty(0) if s is None else np.ascontiguousarray(s, dtype=np.float64)


def _c(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64)


def softmax_loss(E: np.ndarray, y: np.ndarray, s: np.ndarray | None, scale: float) -> float:
    """``scale * sum_i s_i (logsumexp(E_i) - E_{i, y_i})`` over the rows with ``s_i > 0``."""
    E = _c(E)
    rows = np.empty(E.shape[0])
    _loss_kernel(E, _c(y), _weights(s), float(scale), rows)
    return float(np.sum(rows))


def softmax_terms(E: np.ndarray, y: np.ndarray, s: np.ndarray | None, scale: float,
                  diag: bool) -> tuple[float, np.ndarray, np.ndarray | None]:
    """``(loss, R, D)``: the loss of :func:`softmax_loss`, ``R = diag(c) (P - Y)`` and, with
    ``diag``, ``D = diag(c) P (.) (1 - P)`` (else None); ``c = s * scale``."""
    E = _c(E)
    R = np.empty_like(E)
    D = np.empty_like(E) if diag else np.empty((0, E.shape[1]))
    rows = np.empty(E.shape[0])
    _terms_kernel(E, _c(y), _weights(s), float(scale), rows, R, D)
    return float(np.sum(rows)), R, (D if diag else None)


def softmax_hessvec(E: np.ndarray, s: np.ndarray | None, scale: float, AV: np.ndarray) -> np.ndarray:
    """``diag(c) [P (.) AV - P (.) rowsum(P (.) AV)]``, the rows of a Hessian-vector product."""
    E = _c(E)
    out = np.empty_like(E)
    _hessvec_kernel(E, _weights(s), float(scale), _c(AV), out)
    return out
