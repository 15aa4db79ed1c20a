"""Where a store lives: a local directory or an fsspec URL (``file://``, ``s3://``, ...).

Readers go through these few functions, so a store addressed by a URL is opened, listed,
validated and read exactly like a local path (Zarr itself opens URLs through fsspec).
Writers stay local: results, checkpoints and generated stores are directories.
"""

from __future__ import annotations

import os
import posixpath
from typing import Any


def is_url(path: str) -> bool:
    """True for an fsspec URL (``scheme://...``, or a chained ``a::b://...``)."""
    return "://" in path or "::" in path


def _fs(path: str) -> tuple[Any, str]:
    import fsspec

    return fsspec.core.url_to_fs(path)


def exists(path: str) -> bool:
    """Whether ``path`` exists (a dangling local symlink counts, so it is reported)."""
    if not is_url(path):
        return os.path.lexists(path)
    fs, root = _fs(path)
    return bool(fs.exists(root))


def join(path: str, *parts: str) -> str:
    """``path/part/...`` for a local path or a URL."""
    return posixpath.join(path, *parts) if is_url(path) else os.path.join(path, *parts)


def listdir(path: str) -> list[str]:
    """Names of the entries directly inside ``path``."""
    if not is_url(path):
        return os.listdir(path)
    fs, root = _fs(path)
    return [posixpath.basename(p.rstrip("/")) for p in fs.ls(root, detail=False)]


def read_bytes(path: str) -> bytes | None:
    """The contents of the file at ``path``, or None when there is none."""
    try:
        if not is_url(path):
            with open(path, "rb") as f:
                return f.read()
        fs, root = _fs(path)
        return bytes(fs.cat_file(root))
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def identity(path: str) -> tuple[Any, ...]:
    """What changes when the store at ``path`` is replaced (cache key of opened arrays).

    Raises
    ------
    FileNotFoundError
        When nothing is at ``path``.
    """
    if not is_url(path):
        st = os.stat(path)
        return (st.st_ino, st.st_mtime_ns)
    fs, root = _fs(path)
    meta = root.rstrip("/") + "/zarr.json"
    target = meta if fs.exists(meta) else root.rstrip("/") + "/.zgroup"
    info = fs.info(target)
    return tuple(str(info.get(k)) for k in ("mtime", "LastModified", "ETag", "size", "ino"))


def absolute(path: str | os.PathLike[str]) -> str:
    """An absolute, normalised local path, or the URL unchanged (no trailing separator)."""
    path = os.fspath(path)
    return path.rstrip("/") if is_url(path) else os.path.abspath(path)
