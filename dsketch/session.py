"""Where a fit's passes run: the driver's threads, a joined scheduler or an embedded
cluster (:func:`client_for`), and the one error a fit raises when its cluster goes away
(:func:`raise_if_cluster_lost`). Shared by :func:`dsketch.fit`, the paths, cross-validation,
predictions and covariances."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from distributed import Client

from dsketch.engine.client import SCHEDULER_ENV, connect
from dsketch.engine.core import auto_block_rows
from dsketch.engine.threads import ThreadClient
from dsketch.errors import DSketchError
from dsketch.store import ProblemSpec
from dsketch.store.memory import MemoryProblem

#: Stored entries of ``A`` (the intercept column included) from which an in-memory fit
#: runs its blocks on a pool of threads; below, every task runs inline on the calling
#: thread (a block's work is then shorter than handing it to another thread).
THREADS_MIN_NNZ = 2**20


def thread_count(spec: ProblemSpec, n_blocks: int) -> int:
    """Threads of an in-memory fit: one (inline) for a single block or fewer than
    :data:`THREADS_MIN_NNZ` stored entries, else up to one a block and a core."""
    if n_blocks <= 1 or spec.nnz < THREADS_MIN_NNZ:
        return 1
    return int(max(1, min(n_blocks, os.cpu_count() or 1)))


def on_threads(spec: ProblemSpec | None, scheduler: str | None, n_workers: int | None) -> bool:
    """Whether a fit without a client runs on the driver's threads: an in-memory problem
    unless ``scheduler`` names a cluster; a store when no scheduler is named (nor
    ``$DSKETCH_SCHEDULER`` set) and no embedded process cluster is asked for
    (``n_workers``)."""
    if spec is None or scheduler is not None:
        return False
    return isinstance(spec, MemoryProblem) or (n_workers is None and not os.environ.get(SCHEDULER_ENV))


def n_threads(spec: ProblemSpec, block_rows: int | None, bounds: list[tuple[int, int]] | None) -> int:
    """The threads of a fit on the driver's threads (:func:`thread_count` for its blocks)."""
    rows = auto_block_rows(spec) if block_rows is None else max(int(block_rows), 1)
    n_blocks = len(bounds) if bounds is not None else -(-spec.n_samples // rows)
    return thread_count(spec, n_blocks)


@contextlib.contextmanager
def client_for(client: Client | None, scheduler: str | None, n_workers: int | None,
                spec: ProblemSpec | None = None, block_rows: int | None = None,
                bounds: list[tuple[int, int]] | None = None) -> Iterator[Any]:
    """The client of a fit: ``client``; else the driver's threads when :func:`on_threads`
    (as many as :func:`thread_count` gives for the engine's blocks, from ``block_rows`` or
    ``bounds``); else :func:`~dsketch.engine.client.connect`."""
    if client is not None:
        yield client
        return
    if spec is not None and on_threads(spec, scheduler, n_workers):
        with ThreadClient(n_threads(spec, block_rows, bounds)) as t:
            yield t
        return
    with connect(scheduler, n_workers=n_workers) as c:
        yield c


def raise_if_cluster_lost(client: Client, exc: BaseException, checkpoint: Any) -> None:
    """Turn the errors of a vanished scheduler into one :class:`ClusterConnectionError`.

    When the scheduler goes away the futures of the fit are cancelled (after the client's
    reconnection timeout) or its communications fail; the message then says what happened
    and where the last finished iteration is, instead of an empty ``CancelledError``.
    """
    import asyncio
    import concurrent.futures

    from distributed.comm.core import CommClosedError

    from dsketch.errors import ClusterConnectionError

    if isinstance(client, ThreadClient):  # no cluster to lose
        return
    lost = isinstance(exc, (concurrent.futures.CancelledError, asyncio.CancelledError, CommClosedError,
                            TimeoutError, OSError)) and not isinstance(exc, DSketchError)
    if not lost or client.status == "running" and not isinstance(exc, CommClosedError):
        return
    address = getattr(client.scheduler, "address", None) or "?"
    where = (f"the last finished iteration is in the checkpoint {os.fspath(checkpoint)!r}: restart the "
             "cluster and rerun with resume=True (dsketch fit ... --resume)") if checkpoint is not None else (
             "no checkpoint was requested, so the fit must start again (pass checkpoint= to keep progress)")
    detail = " ".join(str(exc).split()) or "futures cancelled"
    raise ClusterConnectionError(
        f"lost the Dask scheduler at {address} during the fit ({type(exc).__name__}: {detail}); {where}"
    ) from None
