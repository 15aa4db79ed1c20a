"""Argument helpers the ``dsketch`` subcommands share: ``--param`` items, the model name,
the cluster options and the sketch kinds."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from dsketch.errors import InvalidParameterError

SKETCH_KINDS = ("exact", "uniform", "rownorm", "leverage", "countsketch", "gaussian")


def parse_params(items: Sequence[str] | None) -> dict[str, Any]:
    """The ``--param KEY=VALUE`` items as a dict: each value parsed as JSON when it is, else
    kept as text; dashes in a key become underscores."""
    out: dict[str, Any] = {}
    for item in items or ():
        if "=" not in item:
            raise InvalidParameterError(f"--param expects KEY=VALUE; got {item!r}")
        key, val = item.split("=", 1)
        try:
            out[key.replace("-", "_")] = json.loads(val)
        except json.JSONDecodeError:
            out[key.replace("-", "_")] = val
    return out


def check_model_name(name: str, extra: Sequence[str] = ()) -> None:
    """Refuse an unknown model name (with the nearest names) before any work starts."""
    from dsketch.errors import unknown_name
    from dsketch.models import MODELS

    if name not in MODELS and name not in extra:
        raise unknown_name("model", name, [*MODELS, *extra])


def add_cluster_args(p: argparse.ArgumentParser) -> None:
    """The options that choose the cluster: a scheduler to join (TLS, timeout) or the embedded one."""
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        default=None,
        help="join a running Dask scheduler (tcp://host:port); default: $DSKETCH_SCHEDULER, "
        "else an embedded local cluster on 127.0.0.1",
    )
    p.add_argument("--workers", type=int, default=2, help="worker processes of the embedded cluster")
    p.add_argument("--connect-timeout", type=float, default=None, metavar="SECONDS",
                   help="give up joining the scheduler after SECONDS (default: dask config "
                        "distributed.comm.timeouts.connect, 30 s)")
    p.add_argument("--tls-ca-file", metavar="PEM", default=None,
                   help="CA certificate of a tls:// scheduler (default: dask config distributed.comm.tls.ca-file, "
                        "e.g. $DASK_DISTRIBUTED__COMM__TLS__CA_FILE)")
    p.add_argument("--tls-cert", metavar="PEM", default=None,
                   help="client certificate signed by that CA (default: distributed.comm.tls.client.cert)")
    p.add_argument("--tls-key", metavar="PEM", default=None,
                   help="key of the client certificate (default: distributed.comm.tls.client.key)")
