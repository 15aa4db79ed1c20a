"""Helpers shared by the model tests: strict floating point, designs, finite differences."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator

import numpy as np
import scipy.sparse as sp


@contextlib.contextmanager
def strict_fp() -> Iterator[None]:
    """Every warning is an error and overflow / invalid / divide raise."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            yield


def design(rng: np.random.Generator, n: int, d: int, sparse: bool):
    """A (dense or CSR) and its dense copy, entries of order 1/sqrt(d)."""
    if sparse:
        A = sp.random(n, d, density=0.6, format="csr", random_state=rng,
                      data_rvs=rng.standard_normal)
        A = (A / np.sqrt(d)).tocsr()
        return A, A.toarray()
    A = rng.standard_normal((n, d)) / np.sqrt(d)
    return A, A


def fd(fun: Callable[[np.ndarray], np.ndarray | float], x: np.ndarray, h: float) -> np.ndarray:
    """Five-point central differences of ``fun`` along each coordinate (columns)."""
    cols = []
    for j in range(x.size):
        e = np.zeros_like(x)
        e[j] = h
        cols.append(
            (-np.asarray(fun(x + 2 * e)) + 8 * np.asarray(fun(x + e)) - 8 * np.asarray(fun(x - e))
             + np.asarray(fun(x - 2 * e))) / (12 * h)
        )
    return np.array(cols).T


def scalars_of(model, eta: np.ndarray, b: np.ndarray, w=None) -> dict[str, float]:
    """The model's global scalars with all rows in one block."""
    return model.scalars(model.stats(eta, b, w))


def poisson_offset_data(rng: np.random.Generator, n: int = 1200, d: int = 12, k: int = 4):
    """``(A, y, offset)``: Poisson counts with log-exposure offsets and ``k`` active features."""
    A = rng.standard_normal((n, d)) * 0.5
    beta = np.zeros(d)
    beta[:k] = rng.uniform(-0.7, 0.7, k)
    offset = np.log(rng.uniform(0.5, 2.0, n))
    y = rng.poisson(np.exp(A @ beta + 0.2 + offset)).astype(float)
    return A, y, offset


def enet_logistic_objective(A, y, coef, icpt, alpha, r) -> float:
    """The elastic-net logistic objective of a regularisation path (glum's ``alpha`` and
    ``l1_ratio`` ``r``; the intercept ``icpt`` unpenalised), computed densely."""
    eta = A @ coef + icpt
    return float(np.mean(np.logaddexp(0.0, eta) - y * eta)) + alpha * (
        r * np.abs(coef).sum() + 0.5 * (1 - r) * coef @ coef)


def enet_logistic_kkt(A, y, coef, icpt, alpha, r) -> float:
    """The largest violation of the KKT conditions of :func:`enet_logistic_objective`,
    from a dense gradient."""
    from scipy.special import expit

    resid = expit(A @ coef + icpt) - y
    g = np.asarray(A.T @ resid).ravel() / y.size + alpha * (1 - r) * coef
    l1 = alpha * r
    nz = coef != 0.0
    out = np.r_[np.abs(g[nz] + l1 * np.sign(coef[nz])), np.maximum(np.abs(g[~nz]) - l1, 0.0), abs(resid.mean())]
    return float(out.max())


def restricted_gram_sizes(monkeypatch) -> list[int]:
    """Record the number of columns of every restricted curvature formed (a list that the
    fits append to)."""
    from dsketch.sketch.columns import ColumnSubset

    sizes: list[int] = []
    finish = ColumnSubset.finish

    def spy(self, total, ctx):
        sizes.append(int(self.cols.size))
        return finish(self, total, ctx)

    monkeypatch.setattr(ColumnSubset, "finish", spy)
    return sizes
