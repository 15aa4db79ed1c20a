"""Atomic publication of directory stores: build beside the target, then rename.

Every writer in :mod:`dsketch.store` builds its store under a sibling temporary name
``<target>.partial-<hex>`` and publishes it with :func:`publish`. On Linux the swap with an
existing target is one ``renameat2(RENAME_EXCHANGE)`` call, so the target name always
refers to a complete store (the old one or the new one); elsewhere it falls back to two
renames, with the old store moved aside first and moved back if the second rename fails.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import uuid

from dsketch.errors import StoreExistsError

_ZARR_MARKERS = ("zarr.json", ".zgroup", ".zarray")
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
    raise OSError(err, os.strerror(err), dst)


def absolute(path: str | os.PathLike[str]) -> str:
    """The absolute, normalised form of a store path (no trailing separator)."""
    return os.path.abspath(os.fspath(path))


def is_zarr_node(path: str) -> bool:
    """Whether ``path`` is a directory holding Zarr (v2 or v3) metadata."""
    return os.path.isdir(path) and any(os.path.exists(os.path.join(path, m)) for m in _ZARR_MARKERS)


def check_target(target: str, overwrite: bool) -> None:
    """Refuse an existing target unless ``overwrite``; never replace a non-Zarr path.

    Raises
    ------
    StoreExistsError
        The target exists and ``overwrite`` is False, or it exists but is not a Zarr store
        (or an empty directory), which is never deleted, to protect against a wrong path.
    """
    if not os.path.lexists(target):
        return
    if not overwrite:
        raise StoreExistsError(f"{target!r} already exists; pass overwrite=True (--overwrite) to replace it")
    if not (is_zarr_node(target) or (os.path.isdir(target) and not os.listdir(target))):
        raise StoreExistsError(
            f"{target!r} exists and is not a Zarr store; dsketch will not delete it even with "
            "overwrite=True — remove it yourself or choose another path"
        )


def temp_sibling(target: str) -> str:
    """A fresh temporary name next to ``target`` (created parents included)."""
    parent = os.path.dirname(target)
    if parent:
        os.makedirs(parent, exist_ok=True)
    return f"{target}.partial-{uuid.uuid4().hex[:12]}"


def discard(tmp: str) -> None:
    """Remove a temporary store (no error when it is already gone)."""
    shutil.rmtree(tmp, ignore_errors=True)


def publish(tmp: str, target: str, *, overwrite: bool) -> None:
    """Move the finished store ``tmp`` to ``target`` atomically.

    Parameters
    ----------
    tmp : str
        A complete store under a temporary sibling name.
    target : str
        The final name. When it exists, ``overwrite`` must be True and it is replaced.
    overwrite : bool
    """
    check_target(target, overwrite)
    if not os.path.lexists(target):
        if _renameat2(tmp, target, _RENAME_NOREPLACE):
            return
        os.rename(tmp, target)  # pragma: no cover - non-Linux fallback
        return
    if _renameat2(tmp, target, _RENAME_EXCHANGE):
        discard(tmp)  # tmp now holds the old store
        return
    old = f"{target}.old-{uuid.uuid4().hex[:12]}"  # pragma: no cover - non-Linux fallback
    os.rename(target, old)  # pragma: no cover
    try:  # pragma: no cover
        os.rename(tmp, target)
    except BaseException:  # pragma: no cover
        os.rename(old, target)
        raise
    discard(old)  # pragma: no cover
