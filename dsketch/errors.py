"""Exceptions and warnings raised by dsketch.

Every error a user can trigger with bad input derives from :class:`DSketchError` and from
the built-in exception a caller would naturally catch (``ValueError``, ``TypeError``,
``FileNotFoundError``). Messages name what is wrong and how to fix it.

Bad arguments raise :class:`InvalidParameterError` (a ``ValueError``) or
:class:`DSketchTypeError` (a ``TypeError``), so ``except ValueError`` and scikit-learn's
estimator checks keep working. A bare built-in exception is left only where no user input
can reach it, marked ``# internal: <why>`` (``tests/test_errors.py`` walks the source).
"""

from __future__ import annotations

from collections.abc import Iterable


class DSketchError(Exception):
    """Base class of every error raised by dsketch."""


class StoreNotFoundError(DSketchError, FileNotFoundError):
    """A store, or a member that must exist inside it, is missing."""


class StoreExistsError(DSketchError, FileExistsError):
    """The target of a write exists and ``overwrite=True`` was not given."""


class StoreFormatError(DSketchError, ValueError):
    """A store exists but its layout or metadata is not one dsketch can read."""


class EncodingError(StoreFormatError):
    """A matrix group has a missing or unsupported ``encoding-type``."""


class ShapeMismatchError(StoreFormatError):
    """Members of a problem store disagree on the number of rows (or other shapes)."""


class EmptyProblemError(StoreFormatError):
    """The design matrix has no rows, no columns, or no stored non-zeros."""


class InvalidIndicesError(StoreFormatError):
    """CSR column indices are unsorted within a row, or outside ``[0, n_features)``."""


class StoreChangedError(DSketchError, RuntimeError):
    """The store at a path is no longer the one a fit opened (it was replaced while the fit
    ran, or since the checkpoint being resumed was written)."""


class NonFiniteError(DSketchError, ValueError):
    """An array holds NaN or infinite values where finite numbers are required."""


class NonFiniteCurvatureError(NonFiniteError):
    """The curvature weights ``D`` of a model are not finite at some row: the model's loss
    overflowed at the current point (the solver stops with ``Status.NUMERICAL_ERROR``)."""


class DTypeError(DSketchError, TypeError):
    """An array has a non-numeric (or otherwise unsupported) dtype."""


class ChunkLayoutError(DSketchError, ValueError):
    """Row blocks or chunks are laid out in a way the engine cannot use."""


class ModelDomainError(DSketchError, ValueError):
    """A model is evaluated outside its domain (for example a normaliser alpha <= 0)."""


class ConvergenceWarning(UserWarning):
    """A solver stopped before meeting its convergence criterion."""


class NumericalWarning(UserWarning):
    """A numerical fallback was taken (failed Cholesky, non-descent direction, ...)."""


__all__ = [
    "ChunkLayoutError",
    "ConvergenceWarning",
    "DSketchError",
    "DTypeError",
    "EmptyProblemError",
    "EncodingError",
    "InvalidIndicesError",
    "ModelDomainError",
    "NonFiniteError",
    "NumericalWarning",
    "ShapeMismatchError",
    "StoreChangedError",
    "StoreExistsError",
    "StoreFormatError",
    "StoreNotFoundError",
]


class ClusterConnectionError(DSketchError, ConnectionError):
    """The Dask scheduler cannot be reached, or refuses this client (TLS settings)."""


__all__.append("ClusterConnectionError")


class OutputPathError(DSketchError, ValueError):
    """An output path cannot be written: its directory is missing or not writable."""


__all__.append("OutputPathError")


class InferenceError(DSketchError, ValueError):
    """Standard errors cannot be computed as asked: an unknown covariance type, a missing or
    non-integer groups member, a model without a likelihood (not a GLM), a fit that did not
    succeed, or inference that was never computed."""


__all__.append("InferenceError")


class PredictionError(DSketchError, ValueError):
    """A fitted result cannot predict for the given data: its model has no mean (not a GLM),
    or the store's columns are not the fitted coefficients."""


__all__.append("PredictionError")


class MemoryBudgetError(DSketchError, MemoryError):
    """A fit would need more memory than the driver or a worker has (estimated before the
    first pass by :func:`dsketch.engine.memory.check_memory`); the message gives the figure,
    the limit and the changes that would fit. ``estimate`` holds the
    :class:`~dsketch.engine.memory.MemoryEstimate`."""

    def __init__(self, message: str, *, estimate: object = None) -> None:
        super().__init__(message)
        self.estimate = estimate


__all__.append("MemoryBudgetError")


class UnknownNameError(DSketchError, ValueError):
    """A model, sketch or other registry name that does not exist (the message suggests the
    closest valid names)."""


__all__.append("UnknownNameError")


class UnusedOptionError(DSketchError, ValueError):
    """An option was given that would have no effect with the other settings (a sketch size
    for the exact curvature, for instance): refused rather than silently ignored."""


__all__.append("UnusedOptionError")


class InvalidParameterError(DSketchError, ValueError):
    """An argument outside its allowed range or set (the message gives both)."""


__all__.append("InvalidParameterError")


class DSketchTypeError(DSketchError, TypeError):
    """An argument of the wrong kind (a string where a number is needed, a keyword a
    function does not take): the message names the argument, what was given and what is
    accepted."""


__all__.append("DSketchTypeError")


class InvalidTargetError(DSketchError, ValueError):
    """Targets outside the model's support (a label other than 0/1 for logistic regression,
    a negative count for Poisson, ...): the message gives the first offending row."""


__all__.append("InvalidTargetError")


class CheckpointMismatchError(DSketchError, ValueError):
    """A checkpoint to resume was written by a fit with other settings (model, data,
    curvature or seed)."""


__all__.append("CheckpointMismatchError")


class InvalidOptionError(DSketchError, ValueError):
    """An option of a configuration object (:class:`dsketch.Solver`, :class:`dsketch.Curvature`,
    :class:`dsketch.Cluster`) has a value outside its range or of the wrong kind."""


__all__.append("InvalidOptionError")


class RemovedOptionError(DSketchError, TypeError):
    """A keyword that :func:`dsketch.fit` no longer takes on its own: it moved into one of the
    grouped configuration objects (the message names which)."""


__all__.append("RemovedOptionError")


class MissingDependencyError(DSketchError, ImportError):
    """An optional dependency (an extra such as ``dsketch[plot]``) is not installed."""


__all__.append("MissingDependencyError")


def did_you_mean(name: object, valid: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the valid names closest to ``name``, or ``""``."""
    import difflib

    close = difflib.get_close_matches(str(name), list(valid), n=2, cutoff=0.6)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"


def unknown_name(what: str, name: object, valid: Iterable[str], plural: str | None = None) -> UnknownNameError:
    """The error for an unknown ``what`` (``"model"``, ``"sketch"``): the name, the nearest
    valid ones and the full list (``valid <plural>: ...``)."""
    names = list(valid)
    return UnknownNameError(f"unknown {what} {name!r}{did_you_mean(name, names)}; "
                            f"valid {plural or what + 's'}: {', '.join(names)}")
