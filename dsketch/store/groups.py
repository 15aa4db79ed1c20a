"""Generic result groups: named arrays plus JSON attributes, written atomically.

Used for solver results and checkpoints (written again every iteration with
``overwrite=True``: the swap is atomic, so a reader or a crash never sees half a group).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import zarr

from dsketch.store import _atomic
from dsketch.store.problem import get_member, member_names, open_group
from dsketch.store.spec import check_value_dtype
from dsketch.errors import DSketchTypeError, InvalidParameterError


def write_group(
    path: str | os.PathLike[str],
    arrays: dict[str, Any],
    attrs: dict[str, Any],
    *,
    overwrite: bool = False,
    kind: str | None = None,
) -> None:
    """Write named numeric arrays and JSON attributes to a new Zarr group, atomically.

    Parameters
    ----------
    path : str or path-like
        Target group directory.
    arrays : dict of str to array-like
        Plain names (no ``/``) to numeric arrays (any shape, empty included), each stored
        as one chunk.
    attrs : dict
        JSON-serialisable attributes (NaN and infinities are kept).
    overwrite : bool
        Replace an existing group.
    kind : str, optional
        What the group is (:data:`~dsketch.store.outputs.RESULT`,
        :data:`~dsketch.store.outputs.CHECKPOINT`): ``overwrite`` replaces only a group of
        that kind. None: any Zarr group but a problem store.

    Raises
    ------
    StoreExistsError
        ``path`` exists and ``overwrite`` is False, or it is not a group of ``kind``.
    DTypeError
        An array is not numeric.
    TypeError
        ``attrs`` is not JSON-serialisable.
    """
    target = _atomic.absolute(path)
    _atomic.check_target(target, overwrite, kind)
    try:
        attrs_clean = json.loads(json.dumps(attrs))
    except TypeError as exc:
        raise DSketchTypeError(f"attrs for {target!r} must be JSON-serialisable: {exc}") from None
    clean = {}
    for name, value in arrays.items():
        if not name or "/" in name or name.startswith("."):
            raise InvalidParameterError(f"array name {name!r} is invalid; use a plain name without '/'")
        arr = np.asarray(value)
        check_value_dtype("input", name, arr.dtype)
        clean[name] = arr
    tmp = _atomic.temp_sibling(target)
    try:
        g = zarr.open_group(tmp, mode="w")
        g.attrs.update(attrs_clean)
        for name, arr in clean.items():
            z = g.create_array(name, shape=arr.shape, chunks=tuple(max(1, s) for s in arr.shape),
                               dtype=arr.dtype)
            if arr.size:
                z[...] = arr
        _atomic.publish(tmp, target, overwrite=overwrite, kind=kind)
    except BaseException:
        _atomic.discard(tmp)
        raise


def read_group(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read the arrays and attributes of a group written by :func:`write_group`.

    Returns
    -------
    arrays : dict of str to ndarray
        Every array directly inside the group (sub-groups are skipped).
    attrs : dict
        The group's attributes.

    Raises
    ------
    StoreNotFoundError
        No such path.
    StoreFormatError
        The path is not a Zarr group.
    """
    target = _atomic.absolute(path)
    g = open_group(target, what="Zarr group")
    arrays = {}
    for name in member_names(target):
        node = get_member(g, f"group {target!r}", name)
        if isinstance(node, zarr.Array):
            arrays[name] = np.asarray(node[...])
    return arrays, dict(g.attrs)
