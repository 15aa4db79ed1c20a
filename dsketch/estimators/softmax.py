"""Softmax regression over the rows of X (the engine model "softmax") as an estimator."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from sklearn.base import RegressorMixin

from dsketch.estimators._base import _EngineGLM
from dsketch.store import (
    ProblemSpec,
)
from dsketch.errors import InvalidParameterError, InvalidTargetError, NonFiniteError

_SUM_TOL = 1e-6


def _check_distribution(where: str, fix: str, *, n_non_finite: int, minimum: float, total: float) -> None:
    """Raise ValueError unless the summarised target is a finite distribution (>= 0, sum 1)."""
    what = "the target of SoftmaxRegression is a distribution over the rows of X (non-negative, summing to 1)"
    if n_non_finite:
        raise NonFiniteError(f"{where} holds {n_non_finite} NaN or infinite value(s); {what}: {fix}")
    if minimum < 0:
        raise InvalidTargetError(f"{where} has negative entries (minimum {minimum:.6g}); {what}: {fix}")
    if not abs(total - 1.0) <= _SUM_TOL:
        raise InvalidTargetError(f"{where} must sum to 1 (within {_SUM_TOL:g}) but sums to {total:.12g}; {what}: {fix}")


class SoftmaxRegression(RegressorMixin, _EngineGLM):
    r"""Softmax regression over the rows of ``X`` (Deng, Li & Song; the engine model "softmax").

    Fits a target distribution ``y`` over the ``n`` rows of ``X`` by the softmax of the
    linear predictor ``X coef``, with the row-weighted regulariser of the paper at a
    constant weight ``w_i = sqrt(alpha)``:

    .. math::

        \min_{x}\; \tfrac12 \lVert f(x) - y \rVert_2^2 + \tfrac{\alpha}{2} \lVert X x \rVert_2^2,
        \qquad f(x) = \frac{\exp(X x)}{\langle \exp(X x), 1_n \rangle},

    i.e. ``1/2 ||softmax(X x) - y||^2 + alpha/2 ||X x||^2``: the objective of
    :class:`dsketch.models.SoftmaxRegression` (docs/theory.md#softmax-regression) with ``w = sqrt(alpha) 1_n``.
    Its gradient is ``X^T (f*c - <f,c> f + alpha v)`` with ``v = X x``, ``c = f - y``; the
    Hessian is ``X^T (diag(D) + U C U^T) X`` (diagonal plus rank 2, see the model).

    Parameters
    ----------
    alpha : float >= 0 or {"weak", "strong"}, default "weak"
        The L2 weight on the linear predictor, in the model's own scale (``alpha = w^2``).
        Since ``f`` lies on the simplex its entries are O(1/n), the data term is O(1/n) and
        its curvature O(1/n^2) (docs/theory.md#regimes-of-the-row-weights): a fixed ``alpha`` of order one
        drives ``coef_`` to about 0 (the uniform distribution). The named regimes are those
        of :meth:`dsketch.models.SoftmaxRegression.default_w`, resolved at ``fit`` into
        ``alpha_``:

        * ``"weak"``: ``alpha = (0.3 / n)^2``, comparable to the data term's curvature, so
          the data decide the optimum;
        * ``"strong"``: the papers' regime ``alpha = 6 (1 + max(y)) + 1`` (between 7 and
          13), under which the Hessian is at least ``sigma_min(X)^2 I`` everywhere (see
          docs/theory.md#softmax-regression); the regulariser dominates and ``coef_`` is close to 0.

        ``alpha = 0`` (no regulariser) is allowed, but the minimiser then need not exist,
        nor be unique (it is not when a combination of the columns of ``X`` is constant,
        see Notes).
    tol : float, default 1e-4
        dsketch's relative gradient norm ``||g|| <= tol ||g_0||``, with ``g_0`` the gradient
        at the start ``coef = 0`` (the uniform distribution), as for the other estimators.
        (``dsketch.fit(..., x0="auto")``, the model's log-linear warm start, takes fewer
        iterations but measures ``tol`` against a gradient that is at rounding level when
        ``y`` is an exact softmax.)
    max_iter : int, default 100
    solver : {"newton", "newton-cg", "gd"}, default "newton"
    sketch : {"auto", "exact", "leverage", ...}, default "auto"
    sketch_size, random_state, client, scheduler, block_rows
        As in :func:`dsketch.fit`, with its defaults (``random_state`` is its ``seed``):
        with ``"auto"`` a chosen sketch adapts its size, ``sketch_size`` is where it starts;
        a named sketch with a ``sketch_size`` keeps that size.

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,)
    alpha_ : float
        The L2 weight used (``alpha`` itself, or its named regime resolved for the data).
    n_features_in_ : int
    n_iter_ : int
    n_passes_ : int
        Passes over the data of the fit.
    fit_result_ : dsketch.FitResult

    Notes
    -----
    ``fit(X, y)``: ``y`` must be a distribution over the rows of ``X``: finite,
    non-negative, and summing to 1 within ``1e-6`` (the tolerance of the ``sums_to_one``
    flag of ``dsketch info``); otherwise ``ValueError`` says what is wrong (pass
    ``y / y.sum()`` for non-negative weights that do not sum to 1). The estimator checks
    and does not normalise, as the engine model validates nothing and would fit any ``b``
    as given (``dsketch.fit(store, "softmax")`` remains for that). A store path is checked
    the same way (its ``b`` is streamed once) and is copied, block by block, with
    ``w = sqrt(alpha_)`` (its own ``w``, if any, is not used).

    There is no intercept: ``softmax(X x + c 1_n) = softmax(X x)`` for every ``c``, so a
    constant column is not identifiable by the data term (only the regulariser would
    pick its value). Likewise the distribution is over the rows of one ``X``: ``predict``
    on a subset of rows renormalises over that subset.

    The objective is not convex. From ``coef = 0`` the Hessian is often indefinite in the
    first iterations when ``alpha`` is small (the data term's diagonal ``(2f - y) f`` is
    negative on rows with ``y_i > 2/n``); the solver then takes its eigenvalue-floored
    Newton step and emits a ``dsketch.errors.NumericalWarning``. This is expected, and
    harmless when the fit converges (``fit_result_.success``; a scikit-learn
    ``ConvergenceWarning`` otherwise).

    ``score`` is R^2, ``1 - ||f - y||^2 / ||y - mean(y)||^2``. For a distribution
    ``mean(y) = 1/n`` is the uniform distribution, ``softmax(X 0)``: the score is the
    fraction of the squared error of the uniform prediction that the fit removes.

    References
    ----------
    Y. Deng, Z. Li, Z. Song. Attention scheme inspired softmax regression.
    arXiv 2304.10411 (2023).

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.special import softmax
    >>> from dsketch.estimators import SoftmaxRegression
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((500, 4))
    >>> y = softmax(X @ np.array([1.0, -0.5, 0.2, 0.0]))
    >>> est = SoftmaxRegression(alpha=0.0, tol=1e-10).fit(X, y)  # exact targets: no regulariser needed
    >>> est.coef_.round(6)
    array([ 1. , -0.5,  0.2,  0. ])
    >>> bool(np.isclose(est.predict(X).sum(), 1.0)), est.score(X, y) > 0.999999
    (True, True)
    """

    _model: ClassVar[str] = "softmax"

    def __init__(self, *, alpha: float | str = "weak", tol: float = 1e-4, max_iter: int = 100,
                 solver: str = "newton", sketch: str = "auto", sketch_size: int | None = None,
                 random_state: int = 0, client: Any = None, scheduler: str | None = None,
                 block_rows: int | None = None) -> None:
        # no super().__init__: it would set fit_intercept, which this estimator does not take
        self.alpha = alpha
        self.tol = tol
        self.max_iter = max_iter
        self.solver = solver
        self.sketch = sketch
        self.sketch_size = sketch_size
        self.random_state = random_state
        self.client = client
        self.scheduler = scheduler
        self.block_rows = block_rows

    @property
    def _has_intercept(self) -> bool:
        return False

    def _l2(self, n_samples: int) -> float:
        return 0.0  # the regulariser is the row weight w (_row_weight), not a coefficient penalty

    def _model_params(self, n_samples: int) -> dict[str, Any]:
        return {}

    def _row_weight(self) -> float | None:
        return float(np.sqrt(self.alpha_))

    def _resolve_alpha(self, n_samples: int, b_max: float) -> None:
        """Validate ``alpha`` and set ``alpha_`` for ``n_samples`` rows with ``max(y) = b_max``."""
        from dsketch.models.softmax import REGIMES
        from dsketch.models.softmax import SoftmaxRegression as SoftmaxModel

        if isinstance(self.alpha, str) and self.alpha in REGIMES:
            self.alpha_ = SoftmaxModel.default_w(n_samples, self.alpha, b_max=b_max) ** 2
            return
        number = isinstance(self.alpha, (int, float, np.integer, np.floating)) and not isinstance(self.alpha, bool)
        if not (number and np.isfinite(self.alpha) and self.alpha >= 0):
            raise InvalidParameterError(f"alpha must be a finite number >= 0 or one of {REGIMES}; got {self.alpha!r}")
        self.alpha_ = float(self.alpha)

    def _targets(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y, dtype=np.float64)
        finite = np.isfinite(y)
        _check_distribution("y", "pass y / y.sum() for non-negative weights", n_non_finite=int(y.size - finite.sum()),
                            minimum=float(y[finite].min(initial=np.inf)), total=float(y[finite].sum()))
        self._resolve_alpha(y.size, float(y.max()))
        return y

    def _check_store_targets(self, spec: ProblemSpec) -> None:
        from dsketch.store.describe import describe

        super()._check_store_targets(spec)
        t = describe(spec)["target"]
        n_finite = spec.n_samples - t["non_finite"]
        _check_distribution(f"the targets b of store {spec.path!r}",
                            "write a store whose b is divided by its sum (dsketch.write_problem)",
                            n_non_finite=t["non_finite"], minimum=t["min"],
                            total=t["mean"] * n_finite if n_finite else 0.0)
        self._resolve_alpha(spec.n_samples, t["max"])

    def fit(self, X: Any, y: Any = None) -> SoftmaxRegression:
        """Fit on an array, sparse matrix, dask array or problem store (then ``y=None``).

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_samples, n_features), dask array, or a store path
        y : array-like of shape (n_samples,), or None for a store
            The target distribution over the rows of ``X`` (finite, >= 0, summing to 1).

        Returns
        -------
        self : SoftmaxRegression

        Raises
        ------
        ValueError
            When ``y`` is not a distribution over the rows of ``X`` (the message says which
            condition fails and how to fix it), or ``alpha`` is invalid.
        """
        self.coef_ = self._fit_problem(X, y)
        return self

    def _coef_vector(self) -> np.ndarray:
        return self.coef_

    def _intercept_value(self) -> float:
        return 0.0

    def predict(self, X: Any) -> np.ndarray:
        """The fitted distribution over the rows of ``X``: ``softmax(X coef)``.

        Returns
        -------
        f : ndarray of shape (n_samples,)
            Non-negative and summing to 1 (computed with the max shift, without overflow).
        """
        from scipy.special import softmax

        return np.asarray(softmax(self._linear(X)))

    def predict_proba(self, X: Any) -> np.ndarray:
        """The same distribution as :meth:`predict`, ``softmax(X coef)`` of shape (n_samples,).

        It is one distribution over the rows, not per-row class probabilities of shape
        (n_samples, n_classes) as a classifier's ``predict_proba``: the row ``i`` is
        drawn with probability ``predict_proba(X)[i]``.
        """
        return self.predict(X)

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """R^2 of the fitted distribution: ``1 - ||f - y||^2 / ||y - mean(y)||^2``, ``f = predict(X)``.

        For a distribution ``y`` the reference ``mean(y) = 1/n`` is the uniform
        distribution (``coef = 0``): 1 is a perfect fit, 0 no better than uniform.
        """
        return float(super().score(X, y, sample_weight=sample_weight))

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.positive_only = True
        return tags
