"""The identity of a problem store's contents: a fingerprint recorded when it is opened.

Every store dsketch writes gets a fresh random token in its group attributes
(:data:`TOKEN_ATTR`) when it is committed, so a store rewritten at the same path, even with
the same shape, has another token. The fingerprint is a hash of the Zarr metadata
documents of the root group and of the nodes a fit reads (``A`` and its CSR arrays,
``b``, ``w``, the row-aligned members, the ``global`` arrays); the token is part of the
root's attributes and so of the hash. A store written by an older dsketch or by another
tool has no token: the identity of its directory (inode and modification time, or the
metadata file's for a URL) is hashed too, so replacing it is still seen.

It is computed from a few small metadata files, never from the chunks: a store whose chunks
are rewritten in place with the same metadata (not something dsketch's writers do: they
build a new directory and swap it in) keeps its fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from dsketch.store import _fs

#: Group attribute holding the random content-version token written by every commit.
TOKEN_ATTR = "dsketch_content_version"
_V3, _V2 = ("zarr.json",), (".zgroup", ".zarray", ".zattrs")


def nodes(
    *,
    sparse: bool,
    has_b: bool,
    has_w: bool,
    members: tuple[str, ...],
    global_members: tuple[str, ...],
) -> tuple[str, ...]:
    """The nodes (relative paths, ``""`` for the root) whose metadata the fingerprint hashes."""
    out = ["", "A"]
    if sparse:
        out += ["A/data", "A/indices", "A/indptr"]
    out += [*(["b"] if has_b else []), *(["w"] if has_w else []), *members]
    if global_members:
        out += ["global", *(f"global/{g}" for g in global_members)]
    return tuple(out)


def spec_nodes(spec: Any) -> tuple[str, ...]:
    """:func:`nodes` of a :class:`~dsketch.store.spec.ProblemSpec`."""
    return nodes(sparse=spec.sparse, has_b=spec.has_b, has_w=spec.has_w, members=tuple(spec.stored_members),
                 global_members=tuple(spec.global_members))


def token_of(root_docs: dict[str, bytes | None]) -> str | None:
    """The content-version token in the root's attributes (None when absent)."""
    raw = root_docs.get("zarr.json")
    try:
        if raw is not None:
            attrs = json.loads(raw).get("attributes") or {}
        else:
            raw = root_docs.get(".zattrs")
            attrs = json.loads(raw) if raw is not None else {}
    except (ValueError, AttributeError):
        return None
    token = attrs.get(TOKEN_ATTR) if isinstance(attrs, dict) else None
    return str(token) if token else None


def fingerprint(path: str, node_names: tuple[str, ...], ident: tuple[Any, ...] | None = None) -> str:
    """The fingerprint of the store at ``path`` (hex string).

    Parameters
    ----------
    path : str
        A local path or fsspec URL.
    node_names : tuple of str
        From :func:`nodes`.
    ident : tuple, optional
        The directory identity (:func:`dsketch.store._fs.identity`) already taken by the
        caller; used only for stores without a token.

    Raises
    ------
    FileNotFoundError
        When nothing is at ``path`` (and the store has no token).
    """
    root: dict[str, bytes | None] = {"zarr.json": _fs.read_bytes(_fs.join(path, "zarr.json"))}
    names = _V3 if root["zarr.json"] is not None else _V2
    h = hashlib.sha256()
    for node in node_names:
        for name in names:
            if node == "" and name in root:
                doc = root[name]
            else:
                doc = _fs.read_bytes(_fs.join(path, *node.split("/"), name))
                if node == "":
                    root[name] = doc
            h.update(f"{node}/{name}:{-1 if doc is None else len(doc)}:".encode())
            h.update(doc or b"")
    if token_of(root) is None:  # an older store: its directory's identity stands in for the token
        h.update(repr(_fs.identity(path) if ident is None else ident).encode())
    return h.hexdigest()[:32]
