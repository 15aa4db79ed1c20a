"""What is at an output path, and whether a writer may put its output there.

Every writer (problem stores, results, checkpoints, plots, the demo's directory) checks its
target with :func:`check_output` before any work starts, and again just before it
publishes. The rule: ``overwrite`` only ever replaces a path of the same kind (a result
store by a result, a problem store by a problem store, a plot file by a plot), never a
store of another kind, an unrelated directory or file, nor an input of the same command.
Paths are compared as resolved real paths, so a symlink is followed to what it names: the
writers replace the link's target and keep the link.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from dsketch.errors import OutputPathError, StoreExistsError

MISSING = "nothing"
PROBLEM = "problem store"
RESULT = "result store"
CHECKPOINT = "checkpoint"
PREDICTION = "prediction store"
ZARR = "Zarr store"  # a Zarr store that is neither of the above (an AnnData store, a plain group, ...)
EMPTY_DIR = "empty directory"
DIRECTORY = "directory that is not a Zarr store"
FILE = "file"
BROKEN_LINK = "broken symlink"
SPECIAL = "special file"

#: Group attributes that mark a dsketch result / checkpoint / prediction store.
RESULT_ATTR = "dsketch_result"
CHECKPOINT_ATTR = "dsketch_checkpoint"
PREDICTION_ATTR = "dsketch_prediction"

_ZARR_MARKERS = ("zarr.json", ".zgroup", ".zarray")


def is_zarr_node(path: str) -> bool:
    """Whether ``path`` is a directory holding Zarr (v2 or v3) metadata."""
    return os.path.isdir(path) and any(os.path.exists(os.path.join(path, m)) for m in _ZARR_MARKERS)


def _group_attrs(path: str) -> dict:
    """The attributes of the Zarr group at ``path`` (v3 ``zarr.json`` or v2 ``.zattrs``); {} if unreadable."""
    for name, key in (("zarr.json", "attributes"), (".zattrs", None)):
        try:
            with open(os.path.join(path, name), encoding="utf-8") as fh:
                meta = json.load(fh)
        except (OSError, ValueError):
            continue
        attrs = meta.get(key, {}) if key else meta
        if isinstance(attrs, dict):
            return attrs
    return {}


def path_kind(path: str | os.PathLike[str]) -> str:
    """What is at ``path`` (symlinks followed): one of the kind constants of this module."""
    p = os.fspath(path)
    if not os.path.lexists(p):
        return MISSING
    if not os.path.exists(p):
        return BROKEN_LINK
    if os.path.isdir(p):
        if is_zarr_node(p):
            attrs = _group_attrs(p)
            if RESULT_ATTR in attrs:
                return RESULT
            if CHECKPOINT_ATTR in attrs:
                return CHECKPOINT
            if PREDICTION_ATTR in attrs:
                return PREDICTION
            if is_zarr_node(os.path.join(p, "A")):
                return PROBLEM
            return ZARR
        try:
            return DIRECTORY if os.listdir(p) else EMPTY_DIR
        except OSError:
            return DIRECTORY
    return FILE if os.path.isfile(p) else SPECIAL


def _label(path: str | os.PathLike[str], option: str | None) -> str:
    return f"{option} {os.fspath(path)!r}" if option else repr(os.fspath(path))


def _check_directory(directory: str, label: str, *, make_parents: bool) -> None:
    """Refuse when ``directory`` (where the output goes) cannot be created or written."""
    probe = directory
    while not os.path.exists(probe):
        if not make_parents:
            raise OutputPathError(f"{label}: the directory {probe!r} does not exist; create it first")
        up = os.path.dirname(probe)
        if up == probe:
            break
        probe = up
    if not os.path.isdir(probe):
        raise OutputPathError(f"{label}: {probe!r} is a {path_kind(probe)}, not a directory; choose another path")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputPathError(f"{label}: the directory {probe!r} is not writable; choose another path")


def _overlap(a: str, b: str) -> str | None:
    """How path ``a`` relates to path ``b`` when they overlap (both real and absolute)."""
    if a == b:
        return "is the same path as"
    if a.startswith(b.rstrip(os.sep) + os.sep):
        return "lies inside"
    if b.startswith(a.rstrip(os.sep) + os.sep):
        return "contains"
    return None


def check_output(
    path: str | os.PathLike[str],
    kind: str | None,
    *,
    overwrite: bool,
    others: Mapping[str, str | os.PathLike[str] | None] | None = None,
    option: str | None = None,
    make_parents: bool = True,
) -> str:
    """Check that an output of ``kind`` may be written at ``path``; return its real path.

    Parameters
    ----------
    path : str or path-like
        The output path given by the user (a symlink is followed to what it names).
    kind : str or None
        :data:`PROBLEM`, :data:`RESULT`, :data:`CHECKPOINT`, :data:`PREDICTION` or
        :data:`FILE`: the only kind of existing path that ``overwrite`` replaces (an empty
        directory too, for stores).
        None: a generic Zarr group, which replaces any Zarr store but a problem store.
    overwrite : bool
        Replace an existing output of the same kind.
    others : mapping of str to path, optional
        The command's inputs and other outputs, by the name the message uses for them
        (``{"--data": ...}``); ``path`` must be none of them, nor lie inside one or contain
        one. None values and URLs are skipped.
    option : str, optional
        How the message names ``path`` (``"--out"``).
    make_parents : bool
        The writer creates missing parent directories (stores); otherwise the parent must
        exist (files).

    Returns
    -------
    str
        The resolved real path to write (the target of a symlink).

    Raises
    ------
    StoreExistsError
        Something is at ``path`` and ``overwrite`` is False, or it is of another kind and
        is never replaced, or ``path`` is one of ``others``.
    OutputPathError
        The directory of ``path`` is missing (``make_parents=False``) or not writable.
    """
    given = os.fspath(path)
    label = _label(path, option)
    if not given:
        raise OutputPathError(f"{option or 'the output path'} is empty; give a path to write")
    real = os.path.realpath(os.path.abspath(given))
    for name, other in (others or {}).items():
        if other is None or "://" in os.fspath(other) or "::" in os.fspath(other):
            continue
        how = _overlap(real, os.path.realpath(os.path.abspath(os.fspath(other))))
        if how:
            raise StoreExistsError(f"{label} {how} {name} {os.fspath(other)!r}; write the output to another path")
    found = path_kind(given)
    if found == MISSING:
        _check_directory(os.path.dirname(real), label, make_parents=make_parents)
        return real
    if found == BROKEN_LINK:
        raise StoreExistsError(
            f"{label} is a symlink to {os.readlink(given)!r}, which does not exist; "
            "remove the link or choose another path"
        )
    same = found == kind or (found == EMPTY_DIR and kind != FILE) or (
        kind is None and found in (RESULT, CHECKPOINT, PREDICTION, ZARR))
    if not same:
        want = "Zarr group" if kind is None else kind
        raise StoreExistsError(
            f"{label} is a {found}; dsketch will not replace it by a {want}, even with overwrite=True "
            "(--overwrite): remove it yourself or choose another path"
        )
    if not overwrite:
        raise StoreExistsError(
            f"{label} already exists (a {found}); pass overwrite=True (--overwrite) to replace it"
        )
    _check_directory(os.path.dirname(real), label, make_parents=False)
    return real


def check_output_dir(
    path: str | os.PathLike[str],
    entries: Mapping[str, str],
    *,
    overwrite: bool,
    what: str,
    option: str | None = None,
) -> list[str]:
    """Check a directory that a command fills with the named ``entries`` (name -> kind).

    A missing or empty directory, or one that holds only earlier outputs of the command
    (each entry of its kind), is accepted. Other entries make it refused unless
    ``overwrite``, which then writes beside them; an entry of the command's own name but
    of another kind is refused always (nothing but what an earlier run wrote is replaced).

    Returns
    -------
    list of str
        The names of earlier outputs that will be replaced.

    Raises
    ------
    StoreExistsError, OutputPathError
    """
    given = os.fspath(path)
    label = _label(path, option)
    if not given:
        raise OutputPathError(f"{option or 'the output directory'} is empty; give a directory to write")
    found = path_kind(given)
    real = os.path.realpath(os.path.abspath(given))
    if found == MISSING:
        _check_directory(os.path.dirname(real), label, make_parents=True)
        return []
    if found not in (EMPTY_DIR, DIRECTORY):
        raise StoreExistsError(f"{label} is a {found}, not a directory; choose another path")
    names = sorted(os.listdir(real))
    wrong = [n for n in names if n in entries and path_kind(os.path.join(real, n)) != entries[n]]
    if wrong:
        n = wrong[0]
        raise StoreExistsError(
            f"{label} holds {n!r}, a {path_kind(os.path.join(real, n))} that no earlier {what} wrote (it writes a "
            f"{entries[n]} there); dsketch will not replace it even with --overwrite: move it or choose another "
            "directory"
        )
    foreign = [n for n in names if n not in entries]
    if foreign and not overwrite:
        raise StoreExistsError(
            f"{label} is not empty and not the output of an earlier {what} (it holds {foreign[0]!r}"
            f"{f' and {len(foreign) - 1} more' if len(foreign) > 1 else ''}); choose an empty directory, or pass "
            f"--overwrite to write beside them (only an earlier {what}'s own outputs are replaced)"
        )
    _check_directory(real, label, make_parents=False)
    return [n for n in names if n in entries]
