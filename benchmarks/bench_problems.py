"""The benchmark's problems (:mod:`benchmarks.bench`), generated block by block on the workers.

* ``ill-dense``: dense, columns AR(1)-correlated (rho = 0.985), Hessian condition number
  of order 1e4;
* ``sparse``: CSR, 0.5% density, power-law column frequencies (as text or count data);
* ``well-dense``: dense, independent standard normal columns;
* ``coherent``: dense, a few rows a thousand times larger than the rest (high leverage);
* ``ill_dense_100``: dense 1e6 x 100, rows Gaussian with covariance ``Q diag(lambda) Q^T``
  (``lambda`` log-spaced from 1 to 1e-4, so condition number 1e4; ``Q`` a random rotation),
  and a nearly unregularised ``l2 = 1e-8``.

Targets are Bernoulli draws from the logistic model with standard normal true
coefficients. Every block's randomness is keyed by ``(seed, block, stream)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp


# ---------------------------------------------------------------------------- problems
@dataclass(frozen=True)
class ProblemDef:
    """A benchmark problem at full size (scaled by ``--scale``)."""

    name: str
    n: int
    d: int
    kind: str  # "ill", "sparse", "well", "coherent", "cov"
    density: float = 1.0
    l2: float = 1e-6


PROBLEMS = (
    ProblemDef("ill-dense", 2_000_000, 500, "ill"),
    ProblemDef("sparse", 5_000_000, 2000, "sparse", density=0.005),
    ProblemDef("well-dense", 2_000_000, 100, "well", l2=1e-4),
    ProblemDef("coherent", 2_000_000, 50, "coherent"),
    ProblemDef("ill_dense_100", 1_000_000, 100, "cov", l2=1e-8),
)

#: The covariance condition number of the ``cov`` kind.
COV_CONDITION = 1e4


def covariance_factor(d: int, seed: int) -> np.ndarray:
    """``F = diag(sqrt(lambda)) Q^T`` of the ``cov`` kind: rows ``z F`` with ``z ~ N(0, I)``
    have covariance ``Q diag(lambda) Q^T``, eigenvalues log-spaced from 1 to ``1 / COV_CONDITION``."""
    Q, R = np.linalg.qr(_rng(seed, 2**31, 1).standard_normal((d, d)))
    Q *= np.sign(np.diag(R))  # a uniformly random rotation
    lam = np.logspace(0.0, -np.log10(COV_CONDITION), d)
    return np.sqrt(lam)[:, None] * Q.T


def _rng(seed: int, k: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, k, stream])


def _block(pdef: ProblemDef, seed: int, k: int, n_rows: int, w_true: np.ndarray) -> tuple[Any, np.ndarray]:
    rng = _rng(seed, k, 1)
    d = pdef.d
    if pdef.kind == "sparse":
        p = 1.0 / np.arange(1, d + 1) ** 1.1
        p /= p.sum()
        counts = rng.poisson(pdef.density * d, size=n_rows).clip(1, d)
        rows = np.repeat(np.arange(n_rows), counts)
        cols = rng.choice(d, size=rows.size, p=p)
        vals = np.log1p(rng.poisson(2.0, size=rows.size) + 1.0)
        A = sp.csr_matrix((vals, (rows, cols)), shape=(n_rows, d))
        A.sum_duplicates()
        A.sort_indices()
    else:
        Z = rng.standard_normal((n_rows, d))
        if pdef.kind == "ill":
            rho, s = 0.985, np.sqrt(1 - 0.985**2)
            for j in range(1, d):
                Z[:, j] = rho * Z[:, j - 1] + s * Z[:, j]
        if pdef.kind == "cov":
            Z = Z @ covariance_factor(d, seed)
        if pdef.kind == "coherent":
            Z[_rng(seed, k, 3).random(n_rows) < 1e-4] *= 1e3
        A = Z / np.sqrt(d)
    eta = np.asarray(A @ w_true).ravel()
    y = (_rng(seed, k, 2).random(n_rows) < 1.0 / (1.0 + np.exp(-eta))).astype(np.float64)
    return A, y


def _write_task(builder: Any, pdef: ProblemDef, seed: int, k: int, r0: int, n_rows: int, w_true: np.ndarray,
                offset: int | None) -> Any:
    A, y = _block(pdef, seed, k, n_rows, w_true)
    builder.write_vector("b", r0, y)
    if sp.issparse(A):
        return builder.write_csr_rows(r0, A.indptr, A.indices, A.data, offset)
    builder.write_dense_rows(r0, A)
    return None


def _nnz_task(pdef: ProblemDef, seed: int, k: int, n_rows: int, w_true: np.ndarray) -> int:
    return int(_block(pdef, seed, k, n_rows, w_true)[0].nnz)


def write_benchmark_problem(path: str, pdef: ProblemDef, client: Any, *, seed: int = 0,
                            block_rows: int = 2**16) -> Any:
    """Generate ``pdef`` block by block on the workers and write it to ``path`` (atomic), in
    chunks of about 16 MiB (``default_chunk_rows``) that the generation blocks cover whole."""
    from dsketch.store import ProblemBuilder
    from dsketch.store.builder import default_chunk_rows

    density = pdef.density if pdef.kind == "sparse" else 1.0
    chunk_rows = min(block_rows, default_chunk_rows(pdef.d, n_samples=pdef.n, density=density))
    block_rows = max(block_rows // chunk_rows, 1) * chunk_rows
    w_true = _rng(seed, 2**31, 0).standard_normal(pdef.d)
    bounds = [(r0, min(r0 + block_rows, pdef.n)) for r0 in range(0, pdef.n, block_rows)]
    sparse = pdef.kind == "sparse"
    offsets = [0] * (len(bounds) + 1)
    if sparse:  # the blocks are generated twice: once to count, once to write (cheap next to a fit)
        counts = client.gather([client.submit(_nnz_task, pdef, seed, k, r1 - r0, w_true, pure=False)
                                for k, (r0, r1) in enumerate(bounds)])
        offsets = np.concatenate([[0], np.cumsum(counts)]).tolist()
    builder = ProblemBuilder.create(path, n_samples=pdef.n, n_features=pdef.d, sparse=sparse,
                                    nnz=int(offsets[-1]) if sparse else None, chunk_rows=chunk_rows, overwrite=True,
                                    attrs={"dsketch": {"generator": "benchmarks.bench", "problem": pdef.name,
                                                       "seed": seed}})
    try:
        edges = client.gather([client.submit(_write_task, builder, pdef, seed, k, r0, r1 - r0, w_true,
                                             int(offsets[k]) if sparse else None, pure=False)
                               for k, (r0, r1) in enumerate(bounds)])
        if sparse:
            builder.write_edges(edges)
        return builder.commit()
    except BaseException:
        builder.abort()
        raise
