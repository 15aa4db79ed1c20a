"""Dask client set-up: an embedded local cluster by default, or a running scheduler.

The embedded cluster listens on 127.0.0.1 only. ``DSKETCH_SCHEDULER`` (or the
``scheduler=`` argument / ``--scheduler`` flag) joins an existing cluster instead.

TLS credentials for a ``tls://`` scheduler come from an explicit
:class:`distributed.Security` (``security=``) or, by default, from dask's configuration:
the ``distributed.comm.tls`` keys, e.g. the environment variables
``DASK_DISTRIBUTED__COMM__TLS__CA_FILE``, ``DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT``,
``DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY``, and
``DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION=True`` to refuse plain ``tcp://`` (the
command line's ``--tls-ca-file``, ``--tls-cert`` and ``--tls-key`` set those keys for one
command). Joining a scheduler gives up after ``timeout`` seconds (dask's
``distributed.comm.timeouts.connect``, 30 s by default) with a
:class:`~dsketch.errors.ClusterConnectionError`, never a hang. The dashboard address is
logged once connected.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import logging
import math
import os
import platform
import signal
import socket
import ssl
import struct
import time
from collections.abc import Iterator

import dask.config
from dask.utils import parse_timedelta
from distributed import Client, LocalCluster, WorkerPlugin
from distributed.security import Security

from dsketch.errors import ClusterConnectionError, InvalidParameterError

logger = logging.getLogger("dsketch")

SCHEDULER_ENV = "DSKETCH_SCHEDULER"
TIMEOUT_KEY = "distributed.comm.timeouts.connect"  # dask's own connect timeout, 30 s by default
ENCRYPTED_SCHEMES = ("tls", "wss")
TLS_HELP = (
    "pass --tls-ca-file CA.pem --tls-cert CLIENT.pem --tls-key CLIENT-KEY.pem "
    "(Python: security=distributed.Security(tls_ca_file=..., tls_client_cert=..., "
    "tls_client_key=...)) or set DASK_DISTRIBUTED__COMM__TLS__CA_FILE, "
    "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT and DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY"
)


#: glibc's ``mallopt`` parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: Allocations up to this size come from the heap, not a fresh ``mmap`` (glibc's maximum).
MMAP_THRESHOLD = 32 * 2**20
#: Freed memory at the top of the heap kept for reuse up to this size.
TRIM_THRESHOLD = 256 * 2**20


def tune_allocator(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Let this process's allocator reuse freed memory; return whether it applied (glibc only).

    Dask starts worker processes with ``MALLOC_TRIM_THRESHOLD_=65536`` (so that freed memory
    goes back to the operating system at once), which also turns off glibc's adaptive
    ``mmap`` threshold: every array over 128 KiB is then a fresh mapping whose pages fault in
    on first touch, and a pass allocates many (predictors, row weights, a ``d x d`` Gram per
    block). With arrays up to 32 MiB served from the heap, and up to 256 MiB of freed heap
    kept, a fused Newton step on a sparse 62,500 x 2000 block took 0.024 s instead of 0.030 s
    in a worker thread.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold))
                and libc.mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)))


class AllocatorTuning(WorkerPlugin):
    """Worker plugin running :func:`tune_allocator` in every worker process (also in the
    ones a nanny restarts). dsketch's embedded clusters carry it; on a cluster of your own:
    ``client.register_plugin(dsketch.AllocatorTuning())``."""

    name = "dsketch-allocator-tuning"

    def setup(self, worker: object) -> None:
        tune_allocator()


class DriverHandlesInterrupt(WorkerPlugin):
    """Worker plugin of dsketch's embedded clusters: the worker processes ignore SIGINT.

    Ctrl-C in a terminal reaches every process of the foreground group: without this, each
    worker process of an embedded cluster printed its own ``KeyboardInterrupt`` traceback
    (dozens of lines) while the driver was already stopping them. The driver catches the
    interrupt, closes the cluster and says where to resume.

    Unless ``DSKETCH_DEBUG`` is set, the workers also stop logging task failures and
    cancellations (``distributed.worker`` below CRITICAL; its memory warnings stay): the
    driver reports a failed task as one line of its own."""

    name = "dsketch-driver-handles-interrupt"

    def setup(self, worker: object) -> None:
        with contextlib.suppress(ValueError):  # not the main thread: nothing to change
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        if not os.environ.get("DSKETCH_DEBUG"):
            # A task that raises (bad targets, NaN in A, a corrupt chunk) is logged by the
            # worker as "Compute Failed" with the task, its arguments and a traceback, then
            # re-raised in the driver, which reports it as one line: the worker's copy only
            # repeats it. DSKETCH_DEBUG=1 keeps these logs.
            for name in ("distributed.worker", "distributed.worker.state_machine"):
                logging.getLogger(name).setLevel(logging.CRITICAL)
            # Memory warnings stay: a worker near its limit (spilling, pausing, unmanaged
            # memory) is news the driver does not repeat, and it explains a slow or stalled
            # fit and what to change (smaller blocks, fewer workers, more memory). The
            # nanny's restart of a worker over its budget (distributed.nanny) stays too.
            logging.getLogger("distributed.worker.memory").setLevel(logging.WARNING)


@contextlib.contextmanager
def _sigint_ignored_in_children() -> Iterator[None]:
    """Worker processes spawned in this block start with SIGINT ignored (a disposition that
    survives exec; Python then installs no KeyboardInterrupt handler), which covers the
    moments before :class:`DriverHandlesInterrupt` runs."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def start_local_cluster(
    *,
    n_workers: int = 2,
    threads_per_worker: int = 1,
    memory_limit: str | int = "auto",
    security: Security | None = None,
) -> LocalCluster:
    """Start a process-based :class:`distributed.LocalCluster` bound to 127.0.0.1.

    Worker processes run single-threaded BLAS (distributed's default environment), so a
    task's floating-point result does not depend on how many workers there are, and
    reuse freed memory (:class:`AllocatorTuning`). The
    scheduler, the workers and the dashboard listen on 127.0.0.1 only. ``security``, when
    given, must hold scheduler, worker and client certificates (e.g.
    :meth:`distributed.Security.temporary`); the cluster then speaks ``tls://``.
    """
    with _sigint_ignored_in_children():
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            memory_limit=memory_limit,
            security=security,
            plugins={AllocatorTuning(), DriverHandlesInterrupt()},
        )
    return cluster


def resolve_timeout(timeout: float | None = None) -> float:
    """The connection timeout in seconds: ``timeout``, else dask's
    ``distributed.comm.timeouts.connect`` (30 s by default; environment variable
    ``DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT``, ``dsketch --connect-timeout``)."""
    raw: object = timeout
    source = "timeout"
    if timeout is None:
        raw, source = dask.config.get(TIMEOUT_KEY), f"dask config {TIMEOUT_KEY}"
    try:
        value = float(parse_timedelta(raw, default="seconds"))
    except (TypeError, ValueError, KeyError):
        raise InvalidParameterError(f"{source} must be a duration such as 30 or '30s'; got {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise InvalidParameterError(f"{source} must be a positive number of seconds; got {raw!r}")
    return value


def _scheme(address: str) -> str:
    return address.split("://", 1)[0].lower() if "://" in address else "tcp"


def _is_file_ref(value: str) -> bool:
    """Security fields hold a file path or, as in Security.temporary(), the PEM text."""
    return "\n" not in value


def check_security(address: str, security: Security) -> None:
    """Raise :class:`ClusterConnectionError` if ``security`` cannot open ``address``.

    A ``tls://`` (or ``wss://``) scheduler needs a CA file and a client certificate with
    its key (the key may sit in the certificate file); every file named must exist. With
    ``require_encryption`` set, a plain ``tcp://`` address is refused.
    """
    scheme = _scheme(address)
    if scheme not in ENCRYPTED_SCHEMES:
        if security.require_encryption:
            raise ClusterConnectionError(
                f"encryption is required (TLS credentials given, or distributed.comm."
                f"require-encryption set) but the scheduler address {address} is not "
                f"tls://; use the scheduler's tls:// address"
            )
        return
    fields = {
        "CA file": security.tls_ca_file,
        "client certificate": security.tls_client_cert,
    }
    missing = [what for what, value in fields.items() if not value]
    for what, value in fields.items():
        if value and _is_file_ref(value) and not os.path.isfile(value):
            raise ClusterConnectionError(f"TLS {what} {value!r} does not exist (scheduler {address})")
    key = security.tls_client_key
    cert = security.tls_client_cert
    if key:
        if _is_file_ref(key) and not os.path.isfile(key):
            raise ClusterConnectionError(f"TLS client key {key!r} does not exist (scheduler {address})")
    elif cert and not _pem_has_key(cert):
        missing.append("client key")
    if missing:
        raise ClusterConnectionError(
            f"scheduler {address} uses TLS but the client has no {', no '.join(missing)}: {TLS_HELP}"
        )


def _pem_has_key(cert: str) -> bool:
    if not _is_file_ref(cert):
        return "PRIVATE KEY" in cert
    try:
        with open(cert, encoding="ascii", errors="replace") as f:
            return "PRIVATE KEY" in f.read()
    except OSError:
        return False


def dashboard_link(client: Client) -> str | None:
    """The scheduler's dashboard URL, or None when it runs without a dashboard."""
    try:
        return client.dashboard_link
    except (KeyError, AttributeError, ValueError):
        return None


def _reachable(url: str, *, timeout: float = 2.0) -> bool:
    """Whether an HTTP server answers at ``url`` (any status counts)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


#: Largest first message (bytes) a Dask scheduler's handshake plausibly has.
HANDSHAKE_MAX_BYTES = 1 << 20


def _host_port(address: str) -> tuple[str, int] | None:
    rest = address.split("://", 1)[-1]
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def probe_scheduler(address: str, timeout: float) -> None:
    """Check within ``timeout`` seconds that ``address`` speaks Dask's protocol.

    A Dask scheduler writes its handshake as soon as it accepts a connection, and
    ``distributed.Client`` waits for it without a time limit: a port that accepts and stays
    silent would hang the client for ever, and a service of another kind answers with bytes
    that Dask reads as a frame length of exabytes. This opens one connection (TLS without
    verifying anything for ``tls://``: only whether something answers), reads the first
    frame header, and raises :class:`ClusterConnectionError` in one line when nothing
    comes, or what comes is not a Dask frame header. Addresses other than ``tcp://`` and
    ``tls://`` (``inproc://``, ``ucx://``) are not probed.
    """
    scheme = _scheme(address)
    where = _host_port(address)
    if scheme not in ("tcp", "tls") or where is None:
        return
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection(where, timeout=timeout)
    except OSError:
        return  # unreachable: the client's own connect reports it, with its retries
    try:
        if scheme == "tls":
            sock = _tls_wrap(sock, where[0])
            if sock is None:
                return  # a refused client certificate: the client reports it
        header = _read_header(sock, min(deadline, time.monotonic() + QUIET_S))
        if header is None and scheme == "tcp" and _speaks_tls(where, min(QUIET_S, timeout)):
            raise ClusterConnectionError(
                f"cannot connect to the Dask scheduler at {address}: the service speaks TLS; use "
                f"tls://{where[0]}:{where[1]} with the cluster's certificates (--tls-ca-file, --tls-cert, --tls-key)"
            )
        if header is None:
            header = _read_header(sock, deadline)
        if header is None:
            raise ClusterConnectionError(
                f"the service at {address} accepted the connection but sent no Dask handshake within "
                f"{timeout:g} s: is it a Dask scheduler? (--connect-timeout sets the limit)"
            )
        if not header:
            return  # closed or reset: the client's connect reports it
        (nbytes,) = struct.unpack("<Q", header)
        if not 0 < nbytes <= HANDSHAKE_MAX_BYTES:
            raise ClusterConnectionError(
                f"the service at {address} does not speak Dask's protocol (its first bytes are "
                f"{header!r}); give the address of a Dask scheduler (tcp://host:port, usually port 8786)"
            )
    finally:
        with contextlib.suppress(OSError):
            sock.close()


#: Seconds a scheduler has to send its handshake before the probe also tries TLS on the port.
QUIET_S = 2.0


def _tls_wrap(sock: socket.socket, host: str) -> ssl.SSLSocket | None:
    """``sock`` after a TLS handshake that verifies nothing (None if the handshake failed)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        return ctx.wrap_socket(sock, server_hostname=host)
    except (ssl.SSLError, OSError):
        return None


def _read_header(sock: socket.socket, deadline: float) -> bytes | None:
    """The first 8 bytes the peer sends before ``deadline``; ``b""`` when it closed or
    reset the connection; None when it stayed silent."""
    header = b""
    while len(header) < 8:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(8 - len(header))
        except (TimeoutError, socket.timeout):
            return None
        except OSError:  # reset, or a TLS alert (a client certificate the scheduler wants)
            return b""
        if not chunk:
            return b""
        header += chunk
    return header


def _speaks_tls(where: tuple[str, int], timeout: float) -> bool:
    """Whether a TLS handshake with ``where`` gets an answer within ``timeout`` seconds."""
    try:
        raw = socket.create_connection(where, timeout=timeout)
    except OSError:
        return False
    raw.settimeout(timeout)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with ctx.wrap_socket(raw, server_hostname=where[0]):
            return True
    except ssl.SSLError as exc:  # an alert is an answer in TLS (e.g. certificate required)
        return "alert" in str(exc).lower() or "certificate" in str(exc).lower()
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            raw.close()


def wait_for_workers(client: Client, address: str, timeout: float) -> None:
    """Return once the scheduler has a worker, or raise :class:`ClusterConnectionError`
    after ``timeout`` seconds saying that none joined."""
    try:
        client.wait_for_workers(1, timeout=timeout)
    except TimeoutError:
        raise ClusterConnectionError(
            f"the Dask scheduler at {address} has no workers ({timeout:g} s waited): start some with "
            f"`dask worker {address}`, or leave out --scheduler for an embedded cluster"
        ) from None


def _open_client(address: str, security: Security, timeout: float) -> Client:
    try:
        return Client(address, security=security, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        reason = _one_line(exc)
        if "certificate" in reason.lower() or "ssl" in reason.lower():
            hint = ("the TLS handshake failed: use a client certificate signed by the cluster's CA, "
                    "and that CA as --tls-ca-file")
        else:
            hint = (f"check that the scheduler is running, reachable from here and speaks this protocol "
                    f"(tcp:// or tls://); the limit is {timeout:g} s (--connect-timeout, dask config "
                    f"{TIMEOUT_KEY})")
        raise ClusterConnectionError(f"cannot connect to the Dask scheduler at {address}: {reason}; {hint}") from exc


#: Worker processes of an embedded local cluster when none is named.
EMBEDDED_WORKERS = 2


def _join(address: str, sec: Security, wait: float) -> Client:
    """A client of the scheduler at ``address`` (credentials checked, the scheduler probed,
    a worker waited for), its dashboard logged; see :func:`connect`."""
    check_security(address, sec)
    probe_scheduler(address, wait)
    client = _open_client(address, sec, wait)
    try:
        wait_for_workers(client, address, wait)
    except BaseException:
        client.close()
        raise
    link = dashboard_link(client)
    if link is None:
        link = "none: the scheduler runs without one"
    elif not link.startswith(("http://", "https://")) or not _reachable(link):
        link += " - not reachable from this host (disabled, or forward its port: ssh -L)"
    logger.info("joined scheduler %s (dashboard: %s)", address, link)
    return client


def _embedded_security(sec: Security) -> Security | None:
    """The embedded cluster's TLS: temporary certificates where encryption is required."""
    if not sec.require_encryption:
        return None
    try:
        return Security.temporary()
    except ImportError as exc:
        raise ClusterConnectionError(
            "encryption is required but no scheduler is named, and the embedded cluster's "
            "temporary TLS certificates need the cryptography package: pip install "
            "cryptography, or pass a tls:// scheduler"
        ) from exc


def _start_embedded(n_workers: int, threads_per_worker: int, memory_limit: str | int,
                    cluster_security: Security | None) -> tuple[LocalCluster, Client]:
    """Start the embedded local cluster and its client (its dashboard logged); see :func:`connect`."""
    cluster = start_local_cluster(
        n_workers=n_workers, threads_per_worker=threads_per_worker, memory_limit=memory_limit,
        security=cluster_security,
    )
    try:
        client = Client(cluster, security=cluster_security, set_as_default=False)
    except BaseException:
        cluster.close()
        raise
    link = dashboard_link(client)
    if link and importlib.util.find_spec("bokeh") is None:
        link += " - its plots need bokeh>=3.1"
    logger.info(
        "started local cluster: %d workers on 127.0.0.1%s (dashboard: %s)",
        n_workers,
        " over TLS" if cluster_security is not None else "",
        link,
    )
    return cluster, client


@contextlib.contextmanager
def connect(
    scheduler: str | None = None,
    *,
    n_workers: int | None = EMBEDDED_WORKERS,
    threads_per_worker: int = 1,
    memory_limit: str | int = "auto",
    security: Security | None = None,
    timeout: float | None = None,
) -> Iterator[Client]:
    """Yield a :class:`distributed.Client`, closing whatever this call started.

    The dashboard address is logged (logger ``"dsketch"``, level INFO) once connected.

    Parameters
    ----------
    scheduler : str, optional
        Address of a running scheduler (``tcp://host:port``, ``tls://...``). When omitted,
        ``$DSKETCH_SCHEDULER`` is used, and when that is unset an embedded local cluster
        with ``n_workers`` worker processes is started on 127.0.0.1.
    n_workers, threads_per_worker, memory_limit
        Settings of the embedded cluster (ignored when joining a scheduler); ``n_workers``
        None: :data:`EMBEDDED_WORKERS`.
    security : distributed.Security, optional
        Client TLS credentials (``tls_ca_file``, ``tls_client_cert``, ``tls_client_key``).
        Default: ``distributed.Security()``, i.e. dask's ``distributed.comm.tls``
        configuration (``DASK_DISTRIBUTED__COMM__TLS__...`` environment variables). When
        encryption is required and no scheduler is named, the embedded cluster runs over
        TLS with temporary in-memory certificates.
    timeout : float, optional
        Seconds to wait for a scheduler before giving up (default: dask config
        ``distributed.comm.timeouts.connect``, 30 s unless set).

    Raises
    ------
    ClusterConnectionError
        The scheduler cannot be reached within ``timeout``, does not answer as a Dask
        scheduler (:func:`probe_scheduler`), has no worker within ``timeout``, refuses the
        TLS credentials, or needs credentials that are missing.
    ValueError
        ``timeout`` is not a positive number, or ``n_workers`` < 1 for an embedded cluster.
    """
    address = scheduler or os.environ.get(SCHEDULER_ENV) or None
    n_workers = EMBEDDED_WORKERS if n_workers is None else n_workers
    wait = resolve_timeout(timeout)
    sec = security if security is not None else Security()
    if not address and (isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1):
        raise InvalidParameterError(
            f"an embedded cluster needs at least one worker; got n_workers={n_workers!r} (--workers)"
        )
    if address:
        client = _join(address, sec, wait)
        try:
            yield client
        finally:
            client.close()
        return
    cluster, client = _start_embedded(n_workers, threads_per_worker, memory_limit, _embedded_security(sec))
    try:
        yield client
    finally:
        client.close()
        cluster.close()
