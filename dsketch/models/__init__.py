"""Per-block model maths (pure NumPy/SciPy) and the model registry.

Registry names (``dsketch fit --model NAME``): ``softmax``, ``exp``, ``cosh``, ``sinh``,
``logistic``, ``multinomial`` (``n_classes``), ``poisson``, ``least-squares``, ``gamma``, ``inverse-gaussian``, ``tweedie``
(``power``), ``negative-binomial`` (``theta``), ``glm`` (glum's ``family`` and ``link``),
``resnet-softmax``, ``softmax-relu``
(``reading`` A, B or C) and ``two-layer``. Nothing in this package imports dask.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from dsketch.errors import DSketchTypeError, unknown_name
from dsketch.models.base import Model, RowTerms, loss_gradient_hessian
from dsketch.models.exp_regression import ExpRegression
from dsketch.models.glm import LeastSquares, LogisticRegression, PoissonRegression
from dsketch.models.multinomial import MultinomialRegression
from dsketch.models.glm_families import (
    GammaRegression,
    InverseGaussianRegression,
    NegativeBinomialRegression,
    TweedieRegression,
    glm,
    tweedie,
)
from dsketch.models.normalised import ResNetSoftmaxRegression, SoftmaxReluRegression
from dsketch.models.paired import SoftmaxReluPaired, TwoLayerSoftmax
from dsketch.models.softmax import SoftmaxRegression


def softmax_relu(reading: str = "A", targets: Any = None) -> Model:
    """Softmax-ReLU regression in one of its three readings (docs/theory.md#softmax-relu-regression).

    ``"A"`` and ``"B"`` are :class:`SoftmaxReluRegression` (one matrix, row-aligned ``b``);
    ``"C"`` is the paired :class:`SoftmaxReluPaired` (``A``, ``A2T`` and ``global/b``).
    ``targets`` (the m targets of reading C) is only valid with ``reading="C"``.
    """
    if reading == "C":
        return SoftmaxReluPaired(targets=targets)
    if targets is not None:
        raise DSketchTypeError("targets= is only taken by reading 'C' of softmax-relu; drop it, or pass reading='C'")
    return SoftmaxReluRegression(reading=reading)


MODELS: dict[str, Callable[..., Model]] = {
    "softmax": SoftmaxRegression,
    "exp": functools.partial(ExpRegression, phi="exp"),
    "cosh": functools.partial(ExpRegression, phi="cosh"),
    "sinh": functools.partial(ExpRegression, phi="sinh"),
    "logistic": LogisticRegression,
    "poisson": PoissonRegression,
    "least-squares": LeastSquares,
    "multinomial": MultinomialRegression,
    "gamma": GammaRegression,
    "inverse-gaussian": InverseGaussianRegression,
    "tweedie": tweedie,
    "negative-binomial": NegativeBinomialRegression,
    "glm": glm,
    "resnet-softmax": ResNetSoftmaxRegression,
    "softmax-relu": softmax_relu,
    "two-layer": TwoLayerSoftmax,
}


def get_model(name: str, **params: Any) -> Model:
    """Build a model from its registry name.

    Parameters
    ----------
    name : str
        A key of :data:`MODELS`.
    **params
        Constructor parameters (``l2`` for the GLMs, ``power`` for tweedie, ``theta`` for
        negative-binomial, ``family`` / ``link`` for glm; none for the others).

    Returns
    -------
    Model

    Raises
    ------
    ValueError
        Unknown name (:class:`~dsketch.errors.UnknownNameError`: the message suggests the
        closest names and lists the valid ones) or an invalid parameter value.
    TypeError
        A parameter the model does not take.
    """
    if name not in MODELS:
        raise unknown_name("model", name, MODELS)
    factory = MODELS[name]
    target = factory.func if isinstance(factory, functools.partial) else factory
    fixed = factory.keywords if isinstance(factory, functools.partial) else {}
    accepted = set(inspect.signature(target).parameters) - set(fixed)
    unknown = set(params) - accepted
    if unknown:
        raise DSketchTypeError(
            f"model {name!r} takes no parameter(s) {sorted(unknown)}; "
            f"accepted: {sorted(accepted) or 'none'}"
        )
    return factory(**params)


__all__ = [
    "MODELS",
    "ExpRegression",
    "GammaRegression",
    "InverseGaussianRegression",
    "LeastSquares",
    "LogisticRegression",
    "Model",
    "MultinomialRegression",
    "NegativeBinomialRegression",
    "PoissonRegression",
    "ResNetSoftmaxRegression",
    "RowTerms",
    "SoftmaxRegression",
    "SoftmaxReluPaired",
    "SoftmaxReluRegression",
    "TweedieRegression",
    "TwoLayerSoftmax",
    "get_model",
    "loss_gradient_hessian",
]
