"""Atomic publication of directory stores: build beside the target, then rename.

Every writer in :mod:`dsketch.store` builds its store under a sibling temporary name
``<target>.partial-<hex>`` and publishes it with :func:`publish`. On Linux the swap with an
existing target is one ``renameat2(RENAME_EXCHANGE)`` call, so the target name always
refers to a complete store (the old one or the new one); elsewhere it falls back to two
renames, with the old store moved aside first and moved back if the second rename fails.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import shutil
import threading
import time
import uuid

from dsketch import interrupts
from dsketch.errors import StoreExistsError
from dsketch.store.outputs import CHECKPOINT, check_output, is_zarr_node

__all__ = ["absolute", "check_target", "discard", "is_zarr_node", "publish", "temp_sibling"]
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2


def _renameat2_fn() -> object | None:
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # not glibc >= 2.28, or not Linux
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_RENAMEAT2 = _renameat2_fn()


def _renameat2(src: str, dst: str, flags: int) -> bool:
    """Try ``renameat2``; False when unsupported here (then the caller falls back)."""
    if _RENAMEAT2 is None:
        return False
    rc = _RENAMEAT2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags)  # type: ignore[operator]
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EPERM, errno.ENOTSUP):
        return False  # filesystem or kernel without the flag
    if err == errno.EEXIST:
        raise StoreExistsError(f"{dst!r} appeared while it was being written; pass overwrite=True to replace it")
    # internal: a system call's errno, reported as the OSError it is
    raise OSError(err, os.strerror(err), dst)


def absolute(path: str | os.PathLike[str]) -> str:
    """The absolute, normalised form of a store path (no trailing separator)."""
    return os.path.abspath(os.fspath(path))


def check_target(target: str, overwrite: bool, kind: str | None = None) -> str:
    """Refuse an existing target unless ``overwrite``; only ever replace a store of ``kind``.

    See :func:`dsketch.store.outputs.check_output` (``kind=None``: any Zarr group but a
    problem store); an empty directory is replaced too.

    Returns
    -------
    str
        The real path to publish to (a symlink's target: the link is kept).

    Raises
    ------
    StoreExistsError
        The target exists and ``overwrite`` is False, or it exists but is of another kind
        (a plain directory, a file, another kind of store), which is never deleted, to
        protect against a wrong path.
    OutputPathError
        Its directory is not writable.
    """
    return check_output(target, kind, overwrite=overwrite)


def temp_sibling(target: str) -> str:
    """A fresh temporary name next to ``target``'s real path (created parents included)."""
    target = os.path.realpath(target)
    parent = os.path.dirname(target)
    if parent:
        os.makedirs(parent, exist_ok=True)
    return f"{target}.partial-{uuid.uuid4().hex[:12]}"


def _wait_for_zarr_io(timeout: float) -> None:
    """Wait until zarr's I/O loop has no task left (writes of a failed call keep running).

    When one chunk write of ``array[...] = values`` fails, zarr raises at once while the
    other writes of the call still run on its I/O thread and may recreate directories.
    """
    try:
        from zarr.core import sync as zsync
    except ImportError:  # pragma: no cover - another zarr layout
        return
    loop, thread = zsync.loop[0], zsync.iothread[0]
    if loop is None or not loop.is_running() or threading.current_thread() is thread:
        return

    async def idle() -> None:
        me = asyncio.current_task()
        while True:
            pending = [t for t in asyncio.all_tasks() if t is not me and not t.done()]
            if not pending:
                return
            await asyncio.wait(pending, timeout=0.5)

    future = asyncio.run_coroutine_threadsafe(idle(), loop)
    try:
        future.result(timeout)
    except Exception:  # noqa: BLE001 - best effort: removal below repeats anyway
        future.cancel()


#: Seconds a discarded temporary store must stay gone before :func:`discard` returns: a
#: block task still running on a worker when the write was interrupted can recreate it with
#: its chunk (seen with Ctrl-C during ``make-data``, where 0.1 s of absence was not enough).
QUIET_S = 1.0


def discard(tmp: str, *, timeout: float = 30.0) -> None:
    """Remove a temporary store once its writers have stopped (no error when it is gone).

    Waits for zarr's in-flight writes, removes ``tmp``, and removes it again should a late
    write have recreated it, until it has stayed gone for :data:`QUIET_S` seconds (or
    ``timeout`` seconds pass).
    """
    deadline = time.monotonic() + timeout
    _wait_for_zarr_io(timeout)
    seen = time.monotonic()
    while True:
        if os.path.islink(tmp):
            os.unlink(tmp)
        elif os.path.lexists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
            seen = time.monotonic()
        now = time.monotonic()
        if now - seen >= QUIET_S or now > deadline:
            return
        time.sleep(0.05)


def publish(tmp: str, target: str, *, overwrite: bool, kind: str | None = None) -> None:
    """Move the finished store ``tmp`` to ``target`` atomically.

    Parameters
    ----------
    tmp : str
        A complete store under a temporary sibling name.
    target : str
        The final name. When it exists, ``overwrite`` must be True and it must be of
        ``kind`` (see :func:`check_target`); a symlink is kept and its target replaced.
    overwrite : bool
    kind : str, optional

    Raises
    ------
    KeyboardInterrupt
        A Ctrl-C came during the command (:mod:`dsketch.interrupts`): nothing is published
        (but a checkpoint, which is what a resume needs).
    """
    if kind != CHECKPOINT:  # a checkpoint keeps the last finished iteration for a resume
        interrupts.check()  # a Ctrl-C, even one Python dropped, stops the store from appearing
    target = check_target(target, overwrite, kind)
    if not os.path.lexists(target):
        if _renameat2(tmp, target, _RENAME_NOREPLACE):
            return
        os.rename(tmp, target)  # pragma: no cover - non-Linux fallback
        return
    if _renameat2(tmp, target, _RENAME_EXCHANGE):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old store (no writers)
        return
    old = f"{target}.old-{uuid.uuid4().hex[:12]}"  # pragma: no cover - non-Linux fallback
    os.rename(target, old)  # pragma: no cover
    try:  # pragma: no cover
        os.rename(tmp, target)
    except BaseException:  # pragma: no cover
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)  # pragma: no cover
