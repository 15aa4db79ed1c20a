"""A client that runs the engine's tasks on threads of the driver, for in-memory problems.

:class:`ThreadClient` implements the part of :class:`distributed.Client` that
:class:`~dsketch.engine.core.Engine` uses (``submit``, ``map``, ``gather``, ``scatter``,
futures with ``result()``), so the same engine code runs without a scheduler, without
worker processes and without serialising anything: a task's arguments are the driver's
objects themselves. NumPy, SciPy and BLAS release the GIL in the block-sized kernels, so
blocks are processed in parallel on a :class:`concurrent.futures.ThreadPoolExecutor`;
with ``n_threads=1`` every task runs inline, when it is submitted (no pool, no
synchronisation: the right thing for a problem of one block or of tiny blocks).

The engine's results do not depend on the client: its reductions are fixed trees over
block indices, and a task computes the same bits on any thread or worker.

Ordering: tasks are queued first in, first out and a task's dependencies are always
submitted before it, so a pool thread that waits for a dependency waits for a task that
is already running or finished; the pool cannot deadlock.

BLAS threads: while a pool runs, the BLAS libraries loaded in the process are limited to
one thread each (:mod:`threadpoolctl`), as Dask's worker processes are. The parallelism is
over blocks; a multi-threaded BLAS call inside each of several pool threads would put
``n_threads**2`` threads on ``n_threads`` cores (measured: a dense 200,000 x 100 logistic
fit took 1.8 s that way against 0.4 s with one BLAS thread per block). The limits are
restored by :meth:`ThreadClient.close`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from concurrent.futures import Future as _PoolFuture
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from threadpoolctl import threadpool_limits
from dsketch.errors import InvalidParameterError


class ThreadFuture:
    """The result of a task of a :class:`ThreadClient` (``result()``, ``done()``)."""

    __slots__ = ("_future", "_value", "_error")

    def __init__(self, future: _PoolFuture | None = None, value: Any = None,
                 error: BaseException | None = None) -> None:
        self._future = future
        self._value = value
        self._error = error

    def result(self, timeout: float | None = None) -> Any:
        """The task's value; raises the task's exception."""
        if self._future is not None:
            return self._future.result(timeout)
        if self._error is not None:
            raise self._error
        return self._value

    def done(self) -> bool:
        return self._future is None or self._future.done()

    def __repr__(self) -> str:
        return f"<ThreadFuture {'finished' if self.done() else 'pending'}>"


def _resolve(args: Sequence[Any]) -> list[Any]:
    return [a.result() if isinstance(a, ThreadFuture) else a for a in args]


def _call(fn: Any, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    return fn(*_resolve(args), **kwargs)


class ThreadClient:
    """Run tasks on ``n_threads`` threads of this process (``1``: inline, no pool).

    A stand-in for :class:`distributed.Client` in :class:`~dsketch.engine.core.Engine`;
    use it as a context manager, or call :meth:`close`, to stop the pool's threads.
    """

    #: :func:`dsketch.api.fit` and the error handling read a client's status.
    status = "running"

    def __init__(self, n_threads: int | None = None) -> None:
        n = int(n_threads) if n_threads is not None else max(1, os.cpu_count() or 1)
        if n < 1:
            raise InvalidParameterError(f"n_threads must be a positive integer; got {n_threads!r}")
        self.n_threads = n
        self._pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="dsketch") if n > 1 else None
        # one BLAS thread per pool thread (see the module's notes); restored by close()
        self._blas_limits = threadpool_limits(limits=1, user_api="blas") if n > 1 else None

    def submit(self, fn: Any, *args: Any, pure: bool = False, key: str | None = None, **kwargs: Any) -> ThreadFuture:
        """Run ``fn(*args, **kwargs)`` (arguments that are futures replaced by their values;
        ``pure`` and ``key``, a Dask task's identity, mean nothing here)."""
        if self._pool is None:
            try:
                return ThreadFuture(value=_call(fn, args, kwargs))
            except Exception as exc:  # raised again by result(), as a Dask future would
                return ThreadFuture(error=exc)
        return ThreadFuture(self._pool.submit(_call, fn, args, kwargs))

    def map(self, fn: Any, *seqs: Iterable[Any], pure: bool = False, **kwargs: Any) -> list[ThreadFuture]:
        """``submit(fn, *items)`` for the items of the sequences taken together."""
        return [self.submit(fn, *items, **kwargs) for items in zip(*seqs, strict=True)]

    def gather(self, futures: Any) -> Any:
        """The values of a future or a list of them."""
        if isinstance(futures, ThreadFuture):
            return futures.result()
        return [f.result() if isinstance(f, ThreadFuture) else f for f in futures]

    def scatter(self, data: Any, **_: Any) -> Any:
        """Finished futures holding the values themselves (nothing is copied)."""
        if isinstance(data, list):
            return [ThreadFuture(value=v) for v in data]
        return ThreadFuture(value=data)

    def close(self) -> None:
        """Stop the pool's threads (after the tasks already submitted)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._blas_limits is not None:
            self._blas_limits.restore_original_limits()
            self._blas_limits = None
        self.status = "closed"

    def __enter__(self) -> ThreadClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ThreadClient threads={self.n_threads} {self.status}>"
