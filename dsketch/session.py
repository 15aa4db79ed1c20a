"""Where a fit's passes run: the driver's threads, a joined scheduler or an embedded
cluster (:func:`client_for`), the engines that several fits of one problem share
(:func:`shared_engines`, :func:`engine_for`), and the one error a fit raises when its
cluster goes away (:func:`raise_if_cluster_lost`). Shared by :func:`dsketch.fit`, the
paths, cross-validation, predictions and covariances."""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from distributed import Client

from dsketch.engine.client import SCHEDULER_ENV, connect
from dsketch.engine.core import Engine, auto_block_rows
from dsketch.engine.memory import MemoryLimits, client_limits
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


@dataclass
class _Shared:
    """What the fits inside one :func:`shared_engines` block share: engines by problem,
    client and blocks, and each client's memory limits as the first fit saw them."""

    engines: dict[tuple[Any, ...], Engine] = field(default_factory=dict)
    limits: dict[int, MemoryLimits] = field(default_factory=dict)
    clients: list[Any] = field(default_factory=list)


_SHARED: contextvars.ContextVar[_Shared | None] = contextvars.ContextVar("dsketch_shared_engines", default=None)


@contextlib.contextmanager
def shared_engines() -> Iterator[None]:
    """Let the fits inside this block share their engines (the fits of a path).

    A fit of the same problem on the same client with the same blocks and row members as
    one before it runs on that fit's :class:`~dsketch.engine.core.Engine`: a store is read
    (and its blocks held, where the first fit held them) once, an in-memory problem cut
    into blocks once, and a fit that starts where the one before ended reads nothing to
    set up its cached rows (:meth:`~dsketch.engine.core.Engine.settle`). The memory limits
    are those the first fit on a client saw: the blocks it holds are not counted against
    the fits that reuse them. The engines are closed when the block ends.
    """
    shared = _Shared()
    token = _SHARED.set(shared)
    try:
        yield
    finally:
        _SHARED.reset(token)
        for engine in shared.engines.values():
            engine.close()


def limits_of(client: Any) -> MemoryLimits:
    """:func:`~dsketch.engine.memory.client_limits`, taken once per client inside
    :func:`shared_engines`."""
    shared = _SHARED.get()
    if shared is None:
        return client_limits(client)
    if id(client) not in shared.limits:
        shared.clients.append(client)  # kept alive, so that its id is not reused
        shared.limits[id(client)] = client_limits(client)
    return shared.limits[id(client)]


def _problem_key(spec: ProblemSpec) -> tuple[Any, ...]:
    """What identifies the data of ``spec``: its type and fields, the arrays of an in-memory
    problem (and any other unhashable field) by identity. Equal for the views a fit makes
    of one problem (:meth:`~dsketch.store.ProblemSpec.with_intercept` returns a new object
    each time); the engine that holds ``spec`` keeps those objects, and so their ids, alive."""
    out: list[Any] = [type(spec)]
    for f in fields(spec):
        value = getattr(spec, f.name)
        if f.compare and not isinstance(value, np.ndarray):
            try:
                hash(value)
            except TypeError:
                pass
            else:
                out.append(value)
                continue
        out.append(("id", id(value)))
    return tuple(out)


@contextlib.contextmanager
def engine_for(spec: ProblemSpec, client: Any, *, block_rows: int | None, bounds: Sequence[tuple[int, int]] | None,
               persist: bool, members: Sequence[str], count_load: bool) -> Iterator[Engine]:
    """The engine of one fit: a new one, closed at the end; inside :func:`shared_engines`,
    the one an earlier fit of the same problem, client, blocks and members made (its pass
    count started again; whether it holds the blocks is the first fit's choice)."""
    shared = _SHARED.get()
    key = (_problem_key(spec), id(client), block_rows, None if bounds is None else tuple(map(tuple, bounds)),
           tuple(members))
    engine = None if shared is None else shared.engines.get(key)
    if engine is None:
        engine = Engine(spec, client, block_rows=block_rows, bounds=bounds, persist=persist, members=members,
                        count_load=count_load)
        if shared is not None:
            shared.clients.append(client)
            shared.engines[key] = engine  # the engine keeps spec alive, so its id is not reused
    else:
        engine.reuse()
    try:
        yield engine
    except BaseException:
        engine.forget_rows()  # a fit that failed leaves no rows to start another on
        raise
    finally:
        if shared is None:
            engine.close()
