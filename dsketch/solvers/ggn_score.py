"""GGN-SCORE: regularised generalised Gauss-Newton with self-concordant smoothing.

Adeoye, Petersen & Bemporad (arXiv 2404.14875) and Adeoye & Bemporad (arXiv 2112.07344);
MODELS.md section 7. One step on a mini-batch with Jacobian ``J`` (k x p), residual
``r`` (k,) and ``Q = I_k / k``:

    g = tau h_mu'(theta),   H = diag(h_mu''(theta))   (or tau * diag(h_mu''), see below)
    d = -(J^T Q J + H)^{-1} (J^T r + g)
      = -H^{-1} Jb (I_{k+1} + Qb Jb^T H^{-1} Jb)^{-1} rb,    Jb = [J^T, g], rb = [r; 1],
                                                               Qb = blkdiag(Q, 0)
    eta = sqrt(g^T H^{-1} g),   M_g = M_h p^{(3 - nu)/2} mu^{nu/2 - 2}
    alpha_k = min(1, alpha / (1 + M_g eta)),   theta <- theta + alpha_k d

The second line (push-through identity) needs only a (k+1) x (k+1) solve: the p x p
matrix is never formed. ``scale_hessian_by_tau=False`` (default) follows the authors'
code for k + 1 <= p; ``True`` uses ``tau * diag(h'')``, the choice consistent with the
self-concordance of ``tau h`` (MODELS.md 7.2).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg as sla

from dsketch.models.twolayer_net import TwoLayerNet
from dsketch.store import ProblemSpec, read_block


def pseudo_huber_constant(nu: float) -> float:
    """Smallest ``M`` with ``|phi'''| <= M phi''^(nu/2)`` for ``phi(s) = sqrt(1 + s^2) - 1``.

    With ``phi'' = (1+s^2)^(-3/2)`` and ``phi''' = -3 s (1+s^2)^(-5/2)`` the ratio is
    ``3 |s| (1+s^2)^a``, ``a = 3 nu / 4 - 5/2``; for ``2 <= nu < 8/3`` its maximum is at
    ``s^2 = -1 / (1 + 2a)``; at ``nu = 8/3`` the supremum is 3 (as ``s -> inf``); beyond,
    no finite ``M`` exists. (The pair (2, 2.6) found in the literature's code is invalid:
    the smallest valid ``M`` at ``nu = 2.6`` is 2.537.)
    """
    if not 2.0 <= nu <= 8.0 / 3.0 + 1e-12:
        raise ValueError(f"pseudo-Huber is generalised self-concordant only for 2 <= nu <= 8/3; got {nu}")
    a = 0.75 * nu - 2.5
    if 1.0 + 2.0 * a >= -1e-12:
        return 3.0
    s2 = -1.0 / (1.0 + 2.0 * a)
    return 3.0 * math.sqrt(s2) * (1.0 + s2) ** a


@dataclass(frozen=True)
class PseudoHuber:
    """``h_mu(t) = sqrt(mu^2 + t^2) - mu`` with its valid GSC constant at ``nu``."""

    mu: float = 1.0
    nu: float = 2.6

    def __post_init__(self) -> None:
        if not (self.mu > 0 and math.isfinite(self.mu)):
            raise ValueError(f"mu must be a positive number; got {self.mu!r}")
        pseudo_huber_constant(self.nu)

    @property
    def M(self) -> float:
        """``M_h`` of the unit-scale smoother (the ``mu`` scaling enters the step rule)."""
        return pseudo_huber_constant(self.nu)

    def value(self, t: np.ndarray) -> np.ndarray:
        return np.sqrt(self.mu**2 + t * t) - self.mu

    def d1(self, t: np.ndarray) -> np.ndarray:
        return t / np.sqrt(self.mu**2 + t * t)

    def d2(self, t: np.ndarray) -> np.ndarray:
        return self.mu**2 * (self.mu**2 + t * t) ** -1.5


@dataclass(frozen=True)
class GGNScoreConfig:
    """Settings of GGN-SCORE (MODELS.md 7.2; defaults of the synthetic experiment)."""

    tau: float = 1e-4
    mu: float = 1.0
    nu: float = 2.6
    alpha: float = 0.95
    scale_hessian_by_tau: bool = False

    def __post_init__(self) -> None:
        if not (self.tau >= 0 and math.isfinite(self.tau)):
            raise ValueError(f"tau must be a finite number >= 0; got {self.tau!r}")
        if not 0 < self.alpha <= 1:
            raise ValueError(f"alpha must lie in (0, 1]; got {self.alpha!r}")


def ggn_score_direction(J: np.ndarray, r: np.ndarray, g: np.ndarray, h: np.ndarray) -> np.ndarray:
    """``-(J^T J / k + diag(h))^{-1} (J^T r + g)`` by the (k+1)-sized push-through solve."""
    k = J.shape[0]
    Jb = np.column_stack([J.T, g])  # (p, k+1)
    HinvJb = Jb / h[:, None]
    Qb = np.full(k + 1, 1.0 / k)
    Qb[-1] = 0.0
    S = np.eye(k + 1) + Qb[:, None] * (Jb.T @ HinvJb)
    rb = np.concatenate([r, [1.0]])
    return -HinvJb @ sla.solve(S, rb)


@dataclass
class GGNScoreResult:
    """Parameters and per-step history (loss, step size, seconds)."""

    theta: np.ndarray
    history: dict[str, list[float]] = field(default_factory=dict)


class GGNScore:
    """GGN-SCORE on the two-layer network, one step per mini-batch.

    Parameters
    ----------
    net : TwoLayerNet
    config : GGNScoreConfig
    """

    def __init__(self, net: TwoLayerNet, config: GGNScoreConfig) -> None:
        self.net = net
        self.config = config
        self.smoother = PseudoHuber(mu=config.mu, nu=config.nu)
        p, nu, mu = net.n_params, config.nu, config.mu
        self.M_g = self.smoother.M * p ** ((3.0 - nu) / 2.0) * mu ** (nu / 2.0 - 2.0)

    def objective(self, theta: np.ndarray, X: np.ndarray, Y: np.ndarray) -> float:
        """Loss plus ``tau * sum h_mu(theta)``."""
        return self.net.loss(theta, X, Y) + self.config.tau * float(np.sum(self.smoother.value(theta)))

    def step(self, theta: np.ndarray, X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, float]:
        """One GGN-SCORE step on the batch; returns the new parameters and ``alpha_k``."""
        cfg = self.config
        r, J = self.net.residual_jacobian(theta, X, Y)
        g = cfg.tau * self.smoother.d1(theta)
        h = self.smoother.d2(theta) * (cfg.tau if cfg.scale_hessian_by_tau else 1.0)
        d = ggn_score_direction(J, r, g, h)
        eta = math.sqrt(float(g @ (g / h)))
        a_k = min(1.0, cfg.alpha / (1.0 + self.M_g * eta))
        return theta + a_k * d, a_k

    def fit(
        self,
        X: np.ndarray,
        Y: np.ndarray,
        *,
        theta0: np.ndarray,
        epochs: int = 1,
        batch_size: int | None = None,
        rng: np.random.Generator | None = None,
    ) -> GGNScoreResult:
        """Epochs of shuffled mini-batch steps on in-memory data (full batch by default)."""
        m = X.shape[0]
        Y = np.asarray(Y, dtype=np.float64).reshape(m, self.net.n_outputs)
        bs = m if batch_size is None else int(batch_size)
        rng = rng or np.random.default_rng(0)
        theta = np.array(theta0, dtype=np.float64, copy=True)
        hist: dict[str, list[float]] = {"loss": [self.net.loss(theta, X, Y)], "step_size": [], "seconds": [0.0]}
        t0 = time.perf_counter()
        for _ in range(int(epochs)):
            order = rng.permutation(m) if bs < m else np.arange(m)
            for s in range(0, m, bs):
                idx = order[s : s + bs]
                theta, a_k = self.step(theta, X[idx], Y[idx])
                hist["step_size"].append(a_k)
            hist["loss"].append(self.net.loss(theta, X, Y))
            hist["seconds"].append(time.perf_counter() - t0)
        return GGNScoreResult(theta=theta, history=hist)


def fit_store(
    solver: GGNScore,
    problem: ProblemSpec,
    *,
    theta0: np.ndarray,
    target: str = "Y",
    epochs: int = 1,
    batch_size: int = 64,
    seed: int = 0,
) -> GGNScoreResult:
    """GGN-SCORE with mini-batches streamed from a problem store.

    ``A`` holds the inputs ``X`` (n x n0) and the row-aligned member ``target`` the outputs
    (n x ny; ``"b"`` for a single output). Each epoch visits the store in row windows of
    ``8 * batch_size`` rows in a random order, shuffles the rows inside a window and steps
    once per mini-batch, so at most one window is in memory. The recorded loss is the
    mean of the mini-batch losses seen during the epoch (no extra pass).
    """
    n = problem.n_samples
    window = 8 * int(batch_size)
    starts = np.arange(0, n, window)
    rng = np.random.default_rng(seed)
    theta = np.array(theta0, dtype=np.float64, copy=True)
    hist: dict[str, list[float]] = {"loss": [], "step_size": [], "seconds": []}
    members = () if target == "b" else (target,)
    t0 = time.perf_counter()
    for _ in range(int(epochs)):
        seen, total = 0, 0.0
        for r0 in rng.permutation(starts):
            blk = read_block(problem, int(r0), int(min(n, r0 + window)), members=members)
            X = blk.A.toarray() if hasattr(blk.A, "toarray") else blk.A
            Y = blk.b if target == "b" else blk.extra[target]
            Y = Y.reshape(X.shape[0], solver.net.n_outputs)
            order = rng.permutation(X.shape[0])
            for s in range(0, X.shape[0], int(batch_size)):
                idx = order[s : s + int(batch_size)]
                total += solver.net.loss(theta, X[idx], Y[idx]) * idx.size
                seen += idx.size
                theta, a_k = solver.step(theta, X[idx], Y[idx])
                hist["step_size"].append(a_k)
        hist["loss"].append(total / max(seen, 1))
        hist["seconds"].append(time.perf_counter() - t0)
    return GGNScoreResult(theta=theta, history=hist)
