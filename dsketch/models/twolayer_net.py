"""The two-layer network of the GGN-SCORE experiments (docs/theory.md#the-network).

``Phi(x; theta) = kappa * V pi(U x)`` with ``U`` (n1 x n0), ``V`` (ny x n1), no biases,
``pi`` in {ReLU, SiLU} and ``kappa = 1/sqrt(n1)``. The parameters are
``theta = [vec(U); vec(V)]`` in column-major (Fortran) order, ``p = n1 n0 + ny n1``.

On a batch ``X`` (m x n0) with targets ``Y`` (m x ny) the loss is half the mean squared
error ``R = (1 / (2 k)) sum (Phi(x_i)_j - Y_ij)^2`` with ``k = m ny``; its gradient is
``J^T r`` with ``r = vec(Yhat - Y) / k`` and its Gauss-Newton matrix ``J^T Q J`` with
``Q = I_k / k``. Rows of the Jacobian ``J`` (k x p) follow ``vec(Yhat)`` in column-major
order: output 1 of every sample, then output 2, and so on:

    dPhi_j(x) / dU_kl = kappa V_jk pi'(u_k . x) x_l,     dPhi_j(x) / dV_j'k = kappa [j = j'] pi(u_k . x).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit
from dsketch.errors import InvalidParameterError

ACTIVATIONS = ("relu", "silu")


def _act(z: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """``pi(z)`` and ``pi'(z)``."""
    if kind == "relu":
        return np.maximum(z, 0.0), (z > 0).astype(z.dtype)
    s = expit(z)
    return z * s, s * (1.0 + z * (1.0 - s))


@dataclass(frozen=True)
class TwoLayerNet:
    """Shapes and activation of the network; all maths is on explicit parameter vectors.

    Parameters
    ----------
    n_inputs : int
        ``n0``.
    n_hidden : int
        ``n1``.
    n_outputs : int
        ``ny``.
    activation : {"relu", "silu"}
    """

    n_inputs: int
    n_hidden: int
    n_outputs: int = 1
    activation: str = "silu"

    def __post_init__(self) -> None:
        for name in ("n_inputs", "n_hidden", "n_outputs"):
            val = getattr(self, name)
            if int(val) != val or val < 1:
                raise InvalidParameterError(f"{name} must be a positive integer; got {val!r}")
        if self.activation not in ACTIVATIONS:
            raise InvalidParameterError(f"activation must be one of {ACTIVATIONS}; got {self.activation!r}")

    @property
    def n_params(self) -> int:
        return self.n_hidden * self.n_inputs + self.n_outputs * self.n_hidden

    @property
    def kappa(self) -> float:
        return 1.0 / np.sqrt(self.n_hidden)

    def unpack(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(U, V)`` from ``theta`` (column-major blocks)."""
        theta = np.asarray(theta, dtype=np.float64)
        if theta.shape != (self.n_params,):
            raise InvalidParameterError(f"theta must have shape ({self.n_params},); got {theta.shape}")
        nu = self.n_hidden * self.n_inputs
        U = theta[:nu].reshape((self.n_hidden, self.n_inputs), order="F")
        V = theta[nu:].reshape((self.n_outputs, self.n_hidden), order="F")
        return U, V

    def pack(self, U: np.ndarray, V: np.ndarray) -> np.ndarray:
        return np.concatenate([np.asarray(U).ravel(order="F"), np.asarray(V).ravel(order="F")])

    def init_params(self, rng: np.random.Generator) -> np.ndarray:
        """``U ~ N(0, 1)``, ``V ~ U[0, 1)`` (the experiments' initialisation)."""
        U = rng.standard_normal((self.n_hidden, self.n_inputs))
        V = rng.random((self.n_outputs, self.n_hidden))
        return self.pack(U, V)

    def predict(self, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
        """``Yhat`` of shape (m, ny)."""
        U, V = self.unpack(theta)
        H, _ = _act(np.asarray(X, dtype=np.float64) @ U.T, self.activation)
        return self.kappa * H @ V.T

    def loss(self, theta: np.ndarray, X: np.ndarray, Y: np.ndarray) -> float:
        """Half mean squared error over all ``m * ny`` outputs."""
        E = self.predict(theta, X) - np.asarray(Y, dtype=np.float64).reshape(X.shape[0], self.n_outputs)
        return 0.5 * float(np.mean(E * E))

    def residual_jacobian(self, theta: np.ndarray, X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``r = vec(Yhat - Y) / k`` (k,) and ``J`` (k x p), rows in column-major ``vec`` order."""
        X = np.asarray(X, dtype=np.float64)
        m = X.shape[0]
        ny, n1, n0 = self.n_outputs, self.n_hidden, self.n_inputs
        U, V = self.unpack(theta)
        Z = X @ U.T  # (m, n1)
        H, Hp = _act(Z, self.activation)
        Yhat = self.kappa * H @ V.T
        k = m * ny
        r = (Yhat - np.asarray(Y, dtype=np.float64).reshape(m, ny)).ravel(order="F") / k
        J = np.zeros((k, self.n_params))
        for j in range(ny):
            rows = slice(j * m, (j + 1) * m)
            # dPhi_j / dU[a, l] = kappa V[j, a] pi'(z_a) x_l at column a + l*n1 (column-major U)
            G = self.kappa * (Hp * V[j][None, :])  # (m, n1)
            J[rows, : n1 * n0] = (G[:, :, None] * X[:, None, :]).reshape(m, n1 * n0, order="F")
            # dPhi_j / dV[j, a] = kappa pi(z_a) at column n1*n0 + j + a*ny (column-major V)
            J[rows, n1 * n0 + j :: ny] = self.kappa * H
        return r, J

    def jacobian_sq_norms(self, theta: np.ndarray, X: np.ndarray) -> np.ndarray:
        """Per sample, the squared Frobenius norm of its ``ny`` Jacobian rows, shape (m,).

        ``q_i = sum_j ||dPhi_j(x_i) / dtheta||^2
              = kappa^2 (||x_i||^2 sum_a pi'(z_ia)^2 sum_j V_ja^2 + ny sum_a pi(z_ia)^2)``,
        without forming ``J`` (O(m n1 n0) work).
        """
        X = np.asarray(X, dtype=np.float64)
        U, V = self.unpack(theta)
        H, Hp = _act(X @ U.T, self.activation)
        vcol = np.sum(V * V, axis=0)  # (n1,)
        xx = np.einsum("ij,ij->i", X, X)
        return self.kappa**2 * (xx * ((Hp * Hp) @ vcol) + self.n_outputs * np.einsum("ij,ij->i", H, H))

    def loss_gradient(self, theta: np.ndarray, X: np.ndarray, Y: np.ndarray) -> tuple[float, np.ndarray]:
        """Loss and gradient ``J^T r`` by back-propagation (no Jacobian is formed)."""
        X = np.asarray(X, dtype=np.float64)
        m = X.shape[0]
        U, V = self.unpack(theta)
        Z = X @ U.T
        H, Hp = _act(Z, self.activation)
        E = self.kappa * H @ V.T - np.asarray(Y, dtype=np.float64).reshape(m, self.n_outputs)
        k = m * self.n_outputs
        G = E / k
        dV = self.kappa * G.T @ H
        dU = self.kappa * ((G @ V) * Hp).T @ X
        return 0.5 * float(np.sum(E * E)) / k, self.pack(dU, dV)
