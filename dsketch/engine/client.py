"""Dask client set-up: an embedded local cluster by default, or a running scheduler.

The embedded cluster listens on 127.0.0.1 only. ``DSKETCH_SCHEDULER`` (or the
``scheduler=`` argument / ``--scheduler`` flag) joins an existing cluster instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from distributed import Client, LocalCluster

logger = logging.getLogger("dsketch")

SCHEDULER_ENV = "DSKETCH_SCHEDULER"


def start_local_cluster(
    *, n_workers: int = 2, threads_per_worker: int = 1, memory_limit: str | int = "auto"
) -> LocalCluster:
    """Start a process-based :class:`distributed.LocalCluster` bound to 127.0.0.1.

    Worker processes run single-threaded BLAS (distributed's default environment), so a
    task's floating-point result does not depend on how many workers there are.
    """
    cluster = LocalCluster(
        n_workers=n_workers,
        threads_per_worker=threads_per_worker,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        memory_limit=memory_limit,
    )
    return cluster


@contextlib.contextmanager
def connect(
    scheduler: str | None = None,
    *,
    n_workers: int = 2,
    threads_per_worker: int = 1,
    memory_limit: str | int = "auto",
    security: object | None = None,
) -> Iterator[Client]:
    """Yield a :class:`distributed.Client`, closing whatever this call started.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:port``, ``tls://...``). When omitted,
        ``$DSKETCH_SCHEDULER`` is used, and when that is unset an embedded local cluster
        with ``n_workers`` worker processes is started on 127.0.0.1.
    n_workers, threads_per_worker, memory_limit
        Settings of the embedded cluster (ignored when joining a scheduler).
    security : distributed.security.Security, optional
        TLS settings for ``tls://`` schedulers.
    """
    address = scheduler or os.environ.get(SCHEDULER_ENV) or None
    if address:
        client = Client(address, security=security, set_as_default=False)
        logger.info("joined scheduler %s (dashboard: %s)", address, client.dashboard_link)
        try:
            yield client
        finally:
            client.close()
        return
    cluster = start_local_cluster(
        n_workers=n_workers, threads_per_worker=threads_per_worker, memory_limit=memory_limit
    )
    client = Client(cluster, set_as_default=False)
    logger.info(
        "started local cluster: %d workers on 127.0.0.1 (dashboard: %s)",
        n_workers,
        client.dashboard_link,
    )
    try:
        yield client
    finally:
        client.close()
        cluster.close()
