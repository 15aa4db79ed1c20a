"""The result of GLM inference: coefficients, their covariance and the tests built on it.

Computed by :func:`dsketch.inference.covariance` (which reads the store); kept here, beside
the fit's result types, so that a result store that holds one (:func:`dsketch.load_result`)
is read without the layers above.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

from dsketch.errors import InferenceError


class Inference:
    """Coefficients, their covariance and the tests built on it (normal distribution).

    Attributes
    ----------
    params : ndarray of shape (p,)
    cov_params : ndarray of shape (p, p)
    cov_type : str
    names : list of str
        One per coefficient; ``"intercept"`` for the intercept.
    nobs : int
        Rows with a positive sample weight.
    df_resid : int
        ``nobs - p`` (for a multinomial fit ``p`` counts the identified coefficients, ``K - 1``
        a row of ``X``: those of :meth:`class_contrasts`).
    scale : float
        The dispersion ``phi`` of ``"nonrobust"`` (1 for binomial and Poisson).
    n_groups : int or None
        Clusters of ``"cluster"``.
    alpha : float
        Level of :meth:`conf_int` and :meth:`summary` by default.
    n_classes : int or None
        ``K`` of a multinomial fit, whose ``params`` are its ``d x K`` coefficients row by row
        (names ``"x0:0", "x0:1", ...``); None otherwise.
    """

    def __init__(self, params: Any, cov_params: Any, cov_type: str, names: list[str], *, nobs: int,
                 scale: float, n_groups: int | None = None, groups: str | None = None, model: str = "",
                 alpha: float = 0.05, n_classes: int | None = None) -> None:
        self.params = np.asarray(params, dtype=np.float64)
        self.cov_params = np.asarray(cov_params, dtype=np.float64)
        self.cov_type = cov_type
        self.names = [str(n) for n in names]
        self.nobs = int(nobs)
        self.n_classes = None if n_classes is None else int(n_classes)
        k = self.n_classes or 1
        self.df_resid = self.nobs - self.params.size // k * max(k - 1, 1)
        self.scale = float(scale)
        self.n_groups = None if n_groups is None else int(n_groups)
        self.groups = groups
        self.model = model
        self.alpha = float(alpha)

    def __repr__(self) -> str:
        return f"Inference(model={self.model!r}, cov_type={self.cov_type!r}, p={self.params.size}, nobs={self.nobs})"

    @property
    def bse(self) -> np.ndarray:
        """Standard errors."""
        return np.sqrt(np.diag(self.cov_params))

    @property
    def zvalues(self) -> np.ndarray:
        """``params / bse``."""
        return self.params / self.bse

    tvalues = zvalues

    @property
    def pvalues(self) -> np.ndarray:
        """Two-sided p-values of ``params == 0`` from the normal distribution."""
        return 2.0 * stats.norm.sf(np.abs(self.zvalues))

    def conf_int(self, alpha: float | None = None) -> np.ndarray:
        """``(p, 2)`` normal confidence intervals of level ``1 - alpha``."""
        a = self.alpha if alpha is None else float(alpha)
        if not 0.0 < a < 1.0:
            raise InferenceError(f"alpha must be in (0, 1); got {alpha!r}")
        q = stats.norm.isf(a / 2.0)
        return np.column_stack([self.params - q * self.bse, self.params + q * self.bse])

    def summary(self, alpha: float | None = None) -> str:
        """The coefficient table as text: coef, std err, z, P>|z| and the interval."""
        a = self.alpha if alpha is None else float(alpha)
        ci = self.conf_int(a)
        lo, hi = f"[{a / 2:g}", f"{1 - a / 2:g}]"
        width = max([len(n) for n in self.names] + [9])
        head = [f"{self.model or 'GLM'} regression, covariance {self.cov_type}",
                f"observations {self.nobs}, coefficients {self.params.size}, residual df {self.df_resid}"]
        if self.cov_type == "nonrobust":
            head.append(f"dispersion {self.scale:.6g}")
        if self.n_groups is not None:
            head.append(f"clusters {self.n_groups} (groups member {self.groups!r})")
        if self.n_classes:
            head.append(f"{self.n_classes} classes: the data determine differences between classes; a single "
                        "coefficient's nonrobust error includes the penalty's share (see class_contrasts())")
        cols = f"{'':<{width}}  {'coef':>11}  {'std err':>11}  {'z':>8}  {'P>|z|':>7}  {lo:>11}  {hi:>11}"
        rule = "-" * len(cols)
        lines = [*head, rule, cols, rule]
        for j, name in enumerate(self.names):
            lines.append(f"{name:<{width}}  {self.params[j]:>11.5g}  {self.bse[j]:>11.5g}  {self.zvalues[j]:>8.3f}  "
                         f"{self.pvalues[j]:>7.3f}  {ci[j, 0]:>11.5g}  {ci[j, 1]:>11.5g}")
        lines.append(rule)
        return "\n".join(lines)

    def class_contrasts(self, reference: int = 0) -> Inference:
        """A multinomial fit's coefficients as differences from class ``reference``.

        Row ``j`` of the ``d x K`` coefficients gives ``K - 1`` contrasts ``X[j, k] -
        X[j, reference]`` (``k != reference``, named ``"x0:k-reference"``), with covariance
        ``L C L^T`` for that linear map ``L``. These are the parameters of a multinomial
        logit with a reference class (statsmodels' ``MNLogit``, class 0 the reference); unlike
        single coefficients they do not depend on the common vector that softmax ignores.

        Raises
        ------
        InferenceError
            Not a multinomial fit's inference, or ``reference`` is not a class.
        """
        k = self.n_classes
        if not k:
            raise InferenceError(f"class_contrasts is for a multinomial fit's inference; this one is of model "
                                 f"{self.model!r}")
        if isinstance(reference, bool) or reference not in range(k):
            raise InferenceError(f"reference must be a class 0..{k - 1}; got {reference!r}")
        m, others = self.params.size // k, [c for c in range(k) if c != reference]
        L = np.zeros((m * (k - 1), m * k))
        names = []
        for j in range(m):
            base = self.names[j * k].rsplit(":", 1)[0]
            for i, c in enumerate(others):
                L[j * (k - 1) + i, j * k + c], L[j * (k - 1) + i, j * k + reference] = 1.0, -1.0
                names.append(f"{base}:{c}-{reference}")
        return Inference(L @ self.params, L @ self.cov_params @ L.T, self.cov_type, names, nobs=self.nobs,
                         scale=self.scale, n_groups=self.n_groups, groups=self.groups, model=self.model,
                         alpha=self.alpha)

    # -- persistence (inside a result store) ----------------------------------------
    def to_store(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Arrays and JSON attributes for :func:`dsketch.save_result`."""
        attrs = {"cov_type": self.cov_type, "names": self.names, "nobs": self.nobs, "scale": self.scale,
                 "n_groups": self.n_groups, "groups": self.groups, "model": self.model, "alpha": self.alpha,
                 "n_classes": self.n_classes}
        return {"params": self.params, "cov_params": self.cov_params}, attrs

    @classmethod
    def from_store(cls, arrays: dict[str, Any], attrs: dict[str, Any]) -> Inference:
        """The inverse of :meth:`to_store`."""
        return cls(arrays["params"], arrays["cov_params"], attrs["cov_type"], list(attrs["names"]),
                   nobs=attrs["nobs"], scale=attrs["scale"], n_groups=attrs.get("n_groups"),
                   groups=attrs.get("groups"), model=attrs.get("model", ""), alpha=attrs.get("alpha", 0.05),
                   n_classes=attrs.get("n_classes"))
