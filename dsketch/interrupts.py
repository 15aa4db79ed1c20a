"""A Ctrl-C that is never lost.

Python delivers SIGINT as a ``KeyboardInterrupt`` raised wherever the main thread is. When
that is inside a garbage-collector callback (the embedded Dask scheduler registers one, to
report long collections) or an object's finaliser, Python drops the exception with an
"Exception ignored in ..." note, and the command goes on as if no Ctrl-C had come: a
``make-data`` interrupted in that instant would publish its store and exit with status 0.

The command line therefore installs :func:`handler`, which remembers the Ctrl-C before
raising, and the points where work becomes visible ask :func:`check` first: a store is
never published (:func:`dsketch.store._atomic.publish`) after a Ctrl-C, lost or not, and
the command line reports a command that ended after one as interrupted. Outside the
command line nothing is installed and :func:`check` never raises.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

_seen = threading.Event()


def handler(signum: int, frame: FrameType | None) -> None:
    """SIGINT: remember it, then raise ``KeyboardInterrupt`` as Python's default does."""
    _seen.set()
    raise KeyboardInterrupt


def install() -> object:
    """Install :func:`handler` for SIGINT (main thread only); returns the previous handler
    for :func:`restore`. A fresh command starts with no Ctrl-C seen."""
    _seen.clear()
    return signal.signal(signal.SIGINT, handler)


def restore(previous: object) -> None:
    """Put back the handler :func:`install` replaced (the default one where it was not
    installed from Python)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)  # type: ignore[arg-type]


def seen() -> bool:
    """Whether a Ctrl-C came since :func:`install` (even one Python dropped)."""
    return _seen.is_set()


def check() -> None:
    """Raise ``KeyboardInterrupt`` if a Ctrl-C came since :func:`install`."""
    if _seen.is_set():
        raise KeyboardInterrupt
