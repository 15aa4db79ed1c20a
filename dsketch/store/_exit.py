"""A quiet exit under load: Zarr's I/O thread stopped before Zarr's own clean-up runs.

Zarr (3.x) runs its asynchronous I/O on an event loop in a thread and registers an
``atexit`` clean-up that stops the loop and waits 0.2 s for the thread. On a loaded machine
the thread can take longer; Zarr then logs "Thread did not finish cleanly" and closes the
still-running loop, which raises inside ``atexit``: a warning and an "Exception ignored in
atexit callback" traceback on standard error after a command's last line (in the command's
process and in each worker process that read or wrote a store). The handler here is
registered after Zarr's, so it runs first (``atexit`` runs handlers last in, first out):
it stops the loop and waits for the thread patiently; Zarr's clean-up then finds it
stopped and closes it quietly.
"""

from __future__ import annotations

import atexit
import contextlib

import zarr  # noqa: F401 - Zarr's atexit handler must be registered before this module's

#: Seconds to wait for Zarr's I/O thread to stop at exit.
STOP_TIMEOUT = 30.0


def stop_zarr_io(timeout: float = STOP_TIMEOUT) -> bool:
    """Stop Zarr's I/O event loop and wait up to ``timeout`` seconds for its thread; True
    when no such thread is running any more (or Zarr has none, or keeps it elsewhere)."""
    try:
        from zarr.core import sync
    except ImportError:  # another Zarr layout: nothing of ours to stop
        return True
    loop = getattr(sync, "loop", [None])[0]
    thread = getattr(sync, "iothread", [None])[0]
    if loop is None or thread is None or not thread.is_alive():
        return True
    with contextlib.suppress(RuntimeError):  # a loop already closed
        loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout)
    return not thread.is_alive()


atexit.register(stop_zarr_io)
