"""GGN-SCORE: regularised generalised Gauss-Newton with self-concordant smoothing.

Adeoye, Petersen & Bemporad (arXiv 2404.14875) and Adeoye & Bemporad (arXiv 2112.07344);
docs/theory.md#ggn-score. One step on a mini-batch with Jacobian ``J`` (k x p), residual
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
self-concordance of ``tau h`` (docs/theory.md#the-ggn-score-step).

Smoothers (:data:`SMOOTHERS`, docs/theory.md#smoothers-and-their-constants): pseudo-Huber (``nu`` in [2, 8/3], default 2.6
with its valid constant 2.537) and Ostrovskii-Bach (``(M_h, nu) = (2 sqrt 2, 3)``, for which
``M_g = M_h / sqrt(mu)`` does not grow with ``p``). For large ``n`` and few parameters,
:mod:`dsketch.solvers.ggn_sketched` takes full-data steps with ``J^T Q J`` sketched by row
sampling on a cluster, reusing :func:`regulariser_terms` and :func:`score_step_size`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import scipy.linalg as sla

from dsketch.errors import DSketchTypeError, InvalidParameterError, UnknownNameError
from dsketch.models.twolayer_net import TwoLayerNet
from dsketch.solvers.result import HISTORY_COLUMNS, STATUS_MESSAGES, FitResult, Status
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
        raise InvalidParameterError(f"pseudo-Huber is generalised self-concordant only for 2 <= nu <= 8/3; got {nu}")
    a = 0.75 * nu - 2.5
    if 1.0 + 2.0 * a >= -1e-12:
        return 3.0
    s2 = -1.0 / (1.0 + 2.0 * a)
    return 3.0 * math.sqrt(s2) * (1.0 + s2) ** a


def _check_mu(mu: float) -> None:
    if isinstance(mu, bool) or not isinstance(mu, (int, float, np.integer, np.floating)):
        raise DSketchTypeError(f"mu must be a positive number; got {type(mu).__name__} {mu!r}")
    if not (mu > 0 and math.isfinite(mu)):
        raise InvalidParameterError(f"mu must be a positive number; got {mu!r}")


@dataclass(frozen=True)
class PseudoHuber:
    """``h_mu(t) = sqrt(mu^2 + t^2) - mu`` with its valid GSC constant at ``nu``.

    ``h_mu(t) = mu phi(t / mu)`` with ``phi(s) = sqrt(1 + s^2) - 1``::

        h_mu'(t) = t / sqrt(mu^2 + t^2),      h_mu''(t) = mu^2 (mu^2 + t^2)^{-3/2},
        h_mu'''(t) = -3 mu^2 t (mu^2 + t^2)^{-5/2}.
    """

    mu: float = 1.0
    nu: float = 2.6
    name: ClassVar[str] = "pseudo-huber"
    default_nu: ClassVar[float] = 2.6

    def __post_init__(self) -> None:
        _check_mu(self.mu)
        pseudo_huber_constant(self.nu)

    @property
    def M(self) -> float:
        """``M_h`` of the unit-scale smoother (the ``mu`` scaling enters the step rule)."""
        return pseudo_huber_constant(self.nu)

    def value(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        # sqrt(mu^2 + t^2) - mu = t^2 / (sqrt(mu^2 + t^2) + mu): no cancellation at small |t|
        return t * (t / (np.hypot(self.mu, t) + self.mu))

    def d1(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        return t / np.hypot(self.mu, t)

    def d2(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        r = self.mu / np.hypot(self.mu, t)
        return r**3 / self.mu

    def d3(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        rho = np.hypot(self.mu, t)
        r = self.mu / rho
        return -3.0 * (t / rho) * r**3 / (self.mu * rho)


@dataclass(frozen=True)
class OstrovskiiBach:
    """The Ostrovskii-Bach smoother of ``|t|``, scaled: ``h_mu(t) = mu phi(t / mu)``.

    With ``s = s(u) = sqrt(1 + 4 u^2)`` (docs/theory.md#smoothers-and-their-constants; the package's two-logarithm form
    simplifies to the first line, since the product of its two log arguments is
    ``2 (s - 1) / u^2``)::

        phi(u)    = (s - 1) / 2 - log((1 + s) / 2) / 2,
        phi'(u)   = 2 u / (1 + s),
        phi''(u)  = 2 / (s (1 + s)),
        phi'''(u) = -8 u (1 + 2 s) / (s^3 (1 + s)^2),

    and ``h_mu' = phi'(t/mu)``, ``h_mu'' = phi''(t/mu) / mu``, ``h_mu''' = phi'''(t/mu) / mu^2``.
    ``phi`` is generalised self-concordant with ``(M_h, nu) = (2 sqrt 2, 3)``: the ratio
    ``|phi'''| / phi''^{3/2} = 2 sqrt 2 |u| (1 + 2 s) / (s^{3/2} (1 + s)^{1/2})`` increases
    to ``2 sqrt 2`` as ``|u| -> inf``, so the constant is the smallest valid one. The
    scaled smoother has ``M_mu = M_h mu^{nu/2 - 2} = 2 sqrt 2 / sqrt(mu)``.

    Every formula is evaluated through ``h = hypot(1/2, u) = s / 2`` and ratios bounded by
    one, so nothing overflows for large ``|t| / mu`` and nothing cancels for small ones.

    References
    ----------
    D. Ostrovskii, F. Bach. Finite-sample analysis of M-estimators using self-concordance.
    Electron. J. Statist. 15, 2021.
    T. Sun, Q. Tran-Dinh. Generalized self-concordant functions: a recipe for Newton-type
    methods. Math. Program. 178, 2019.
    """

    mu: float = 1.0
    nu: float = 3.0
    name: ClassVar[str] = "ostrovskii-bach"
    default_nu: ClassVar[float] = 3.0

    def __post_init__(self) -> None:
        _check_mu(self.mu)
        if self.nu != 3.0:
            raise InvalidParameterError(
                f"the Ostrovskii-Bach smoother is used with nu = 3 (M_h = 2 sqrt 2); got nu={self.nu!r}"
            )

    @property
    def M(self) -> float:
        """``M_h = 2 sqrt 2`` of the unit-scale smoother."""
        return 2.0 * math.sqrt(2.0)

    def _uh(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        u = np.asarray(t, dtype=np.float64) / self.mu
        return u, np.hypot(0.5, u)  # h = s / 2

    def value(self, t: np.ndarray) -> np.ndarray:
        u, h = self._uh(t)
        a = u * (u / (0.5 + h))  # (s - 1) / 2 = 2 u^2 / (1 + s) = u phi'(u)
        return self.mu * (a - 0.5 * np.log1p(a))  # log((1 + s) / 2) = log1p((s - 1) / 2)

    def d1(self, t: np.ndarray) -> np.ndarray:
        u, h = self._uh(t)
        return u / (0.5 + h)

    def d2(self, t: np.ndarray) -> np.ndarray:
        _, h = self._uh(t)
        return (0.5 / h) / (0.5 + h) / self.mu

    def d3(self, t: np.ndarray) -> np.ndarray:
        u, h = self._uh(t)
        # -8 u (1 + 2s) / (s^3 (1 + s)^2) = -u (1 + 4h) / (h^3 (1 + 2h)^2) with s = 2h,
        # written as products of bounded ratios
        ratio = (u / h) * ((1.0 + 4.0 * h) / (1.0 + 2.0 * h))
        return -ratio / h / h / (1.0 + 2.0 * h) / self.mu**2


Smoother = PseudoHuber | OstrovskiiBach

SMOOTHERS: dict[str, type[PseudoHuber | OstrovskiiBach]] = {
    PseudoHuber.name: PseudoHuber,
    OstrovskiiBach.name: OstrovskiiBach,
}


def make_smoother(name: str, *, mu: float, nu: float | None = None) -> Smoother:
    """The smoother registered as ``name``; ``nu=None`` takes its default exponent.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the valid ones), a non-positive ``mu`` or
        an exponent the smoother is not self-concordant with.
    """
    try:
        cls = SMOOTHERS[name]
    except (KeyError, TypeError):
        raise UnknownNameError(f"unknown smoother {name!r}; valid smoothers: {', '.join(SMOOTHERS)}") from None
    return cls(mu=mu, nu=cls.default_nu if nu is None else float(nu))


def score_constant(smoother: Smoother, n_params: int) -> float:
    """``M_g = M_h p^{(3 - nu)/2} mu^{nu/2 - 2}`` (docs/theory.md#the-ggn-score-step, ``0 < nu <= 3``).

    For ``nu = 3`` (Ostrovskii-Bach) the factor in ``p`` is one: ``M_g = M_h / sqrt(mu)``.
    """
    nu, mu = smoother.nu, smoother.mu
    return smoother.M * float(n_params) ** ((3.0 - nu) / 2.0) * mu ** (nu / 2.0 - 2.0)


def regulariser_terms(
    smoother: Smoother, theta: np.ndarray, *, tau: float, scale_hessian_by_tau: bool
) -> tuple[np.ndarray, np.ndarray]:
    """``g = tau h_mu'(theta)`` and the diagonal ``H``: ``h_mu''(theta)``, times ``tau`` if asked."""
    g = tau * smoother.d1(theta)
    h = smoother.d2(theta) * (tau if scale_hessian_by_tau else 1.0)
    return g, h


def score_step_size(g: np.ndarray, h: np.ndarray, *, M_g: float, alpha: float) -> float:
    """``alpha_k = min(1, alpha / (1 + M_g eta))`` with ``eta = sqrt(g^T H^{-1} g)``."""
    eta = math.sqrt(float(g @ (g / h)))
    return min(1.0, alpha / (1.0 + M_g * eta))


@dataclass(frozen=True)
class GGNScoreConfig:
    """Settings of GGN-SCORE (docs/theory.md#the-ggn-score-step; defaults of the synthetic experiment).

    Parameters
    ----------
    tau : float
        Weight of the regulariser ``tau sum_p h_mu(theta_p)``.
    mu : float
        Smoothing parameter.
    nu : float, optional
        GSC exponent. ``None`` takes the smoother's own (2.6 for pseudo-Huber, 3 for
        Ostrovskii-Bach); after construction the field holds the value in use.
    alpha : float
        User step in ``(0, 1]``.
    scale_hessian_by_tau : bool
        Use ``tau diag(h'')`` instead of the authors' ``diag(h'')``.
    smoother : {"pseudo-huber", "ostrovskii-bach"}
        The self-concordant smoother of ``|t|`` (:data:`SMOOTHERS`).
    """

    tau: float = 1e-4
    mu: float = 1.0
    nu: float | None = None
    alpha: float = 0.95
    scale_hessian_by_tau: bool = False
    smoother: str = "pseudo-huber"

    def __post_init__(self) -> None:
        if not (self.tau >= 0 and math.isfinite(self.tau)):
            raise InvalidParameterError(f"tau must be a finite number >= 0; got {self.tau!r}")
        if not 0 < self.alpha <= 1:
            raise InvalidParameterError(f"alpha must lie in (0, 1]; got {self.alpha!r}")
        sm = make_smoother(self.smoother, mu=self.mu, nu=self.nu)  # validates name, mu and nu
        object.__setattr__(self, "nu", sm.nu)

    def make_smoother(self) -> Smoother:
        """The configured smoother."""
        return make_smoother(self.smoother, mu=self.mu, nu=self.nu)


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


def epoch_result(theta: np.ndarray, losses: list[float], seconds: list[float], step_sizes: list[float], *,
                 first: int, batch_size: int, n_passes: int, wall_time: float) -> FitResult:
    """The :class:`~dsketch.solvers.result.FitResult` of a mini-batch GGN-SCORE run: one
    history row an epoch (``first`` is the number of the first row: 0 when the losses start
    with the initial point's), its step size the mean of that epoch's steps; every step
    size is kept in ``info["step_sizes"]``. The gradient is not computed (``jac`` None)."""
    n_rows = len(losses)
    per_epoch = max(1, len(step_sizes) // max(1, n_rows - (1 if first == 0 else 0)))
    history: dict[str, list[float]] = {k: [] for k in HISTORY_COLUMNS}
    for e, (loss, sec) in enumerate(zip(losses, seconds, strict=True)):
        sizes = step_sizes[e * per_epoch: (e + 1) * per_epoch]
        row = {"iteration": e + first, "loss": loss, "grad_norm": np.nan, "newton_decrement": np.nan,
               "step_size": float(np.mean(sizes)) if sizes else np.nan, "sketch_rows": batch_size,
               "passes": min(e + first, n_passes), "seconds": sec}
        for k in HISTORY_COLUMNS:
            history[k].append(float(row[k]))
    return FitResult(
        x=theta, fun=float(losses[-1]) if losses else float("nan"), success=True, status=Status.COMPLETED,
        message=STATUS_MESSAGES[Status.COMPLETED], nit=len(step_sizes), n_passes=n_passes, wall_time=wall_time,
        grad_norm=float("nan"), history={k: np.asarray(v) for k, v in history.items()},
        info={"step_sizes": [float(a) for a in step_sizes], "batch_size": int(batch_size)},
    )


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
        self.smoother = config.make_smoother()
        self.M_g = score_constant(self.smoother, net.n_params)

    def objective(self, theta: np.ndarray, X: np.ndarray, Y: np.ndarray) -> float:
        """Loss plus ``tau * sum h_mu(theta)``."""
        return self.net.loss(theta, X, Y) + self.config.tau * float(np.sum(self.smoother.value(theta)))

    def step(self, theta: np.ndarray, X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, float]:
        """One GGN-SCORE step on the batch; returns the new parameters and ``alpha_k``."""
        cfg = self.config
        r, J = self.net.residual_jacobian(theta, X, Y)
        g, h = regulariser_terms(self.smoother, theta, tau=cfg.tau, scale_hessian_by_tau=cfg.scale_hessian_by_tau)
        d = ggn_score_direction(J, r, g, h)
        a_k = score_step_size(g, h, M_g=self.M_g, alpha=cfg.alpha)
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
    ) -> FitResult:
        """Epochs of shuffled mini-batch steps on in-memory data (full batch by default).

        The history has a row for the start and one after each epoch (the loss over all
        rows); :func:`epoch_result`."""
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
        return epoch_result(theta, hist["loss"], hist["seconds"], hist["step_size"], first=0, batch_size=bs,
                            n_passes=int(epochs), wall_time=time.perf_counter() - t0)


def fit_store(
    solver: GGNScore,
    problem: ProblemSpec,
    *,
    theta0: np.ndarray,
    target: str = "Y",
    epochs: int = 1,
    batch_size: int = 64,
    seed: int = 0,
) -> FitResult:
    """GGN-SCORE with mini-batches streamed from a problem store.

    ``A`` holds the inputs ``X`` (n x n0) and the row-aligned member ``target`` the outputs
    (n x ny; ``"b"`` for a single output). Each epoch visits the store in row windows of
    ``8 * batch_size`` rows in a random order, shuffles the rows inside a window and steps
    once per mini-batch, so at most one window is in memory. The recorded loss is the
    mean of the mini-batch losses seen during the epoch (no extra pass); the history has a
    row per epoch, numbered from 1 (:func:`epoch_result`).
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
    return epoch_result(theta, hist["loss"], hist["seconds"], hist["step_size"], first=1,
                        batch_size=int(batch_size), n_passes=int(epochs), wall_time=time.perf_counter() - t0)
