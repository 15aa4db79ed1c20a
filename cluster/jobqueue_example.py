"""Fit with dsketch on a SLURM or PBS batch system through dask-jobqueue.

The driver (this script, run on a login node or inside a small job) starts a Dask
scheduler in its own process and submits batch jobs that each start dsketch workers
(``python -m distributed.cli.dask_worker <scheduler address> ...``); the fit then runs on
them and the jobs are cancelled when it ends. Every worker must see the problem store at
the same path (a shared filesystem) and have dsketch installed.

Examples::

    # look at the job script without submitting anything
    python cluster/jobqueue_example.py --system slurm --cores 16 --memory 64GiB --dry-run

    # 4 jobs of 16 single-threaded workers each, 2 hours, on the "compute" partition
    python cluster/jobqueue_example.py --system slurm --queue compute --account proj42 \\
        --jobs 4 --cores 16 --memory 64GiB --walltime 02:00:00 --interface ib0 \\
        --local-directory '$TMPDIR' --data /shared/problem.zarr --out /shared/result.zarr \\
        --model logistic --sketch leverage --sketch-size 20000

    # PBS Pro / Torque, with mutual TLS (certificates from cluster/make_certs.py in a
    # directory every node can read)
    python cluster/jobqueue_example.py --system pbs --queue workq --jobs 2 --cores 32 \\
        --memory 128GB --tls-dir /shared/dask-certs --data ... --out ... --model softmax

Options
-------
``--cores`` is the number of worker processes per job, one thread each (dsketch's block
kernels call BLAS; distributed's nanny already pins OMP/MKL/OpenBLAS threads to 1 per
worker, so results are bit-identical for any worker count). ``--memory`` is per job and is
split evenly between its workers (spilling goes to ``--local-directory``, node-local disk
is best). ``--walltime`` is the job's limit; a fit whose workers are killed by the batch
system is recomputed on the remaining or new workers (docs/user-guide.md, "Failures and
recovery"). ``--interface`` picks the network interface the scheduler and workers
bind to (``ib0`` for InfiniBand), ``--scheduler-host`` overrides the scheduler's address
alone. ``--worker-extra-arg`` passes flags to ``dask worker`` verbatim (repeatable,
e.g. ``--worker-extra-arg=--lifetime=55m --worker-extra-arg=--lifetime-stagger=2m`` for
jobs that end before their walltime). ``--prologue`` adds shell lines to the job script
before the worker starts (``module load ...``, ``source venv/bin/activate``).
``--tls-dir DIR`` switches to ``tls://`` with ``DIR/ca.pem``, ``DIR/{scheduler,worker,client}.pem``
and ``DIR/{scheduler,worker,client}-key.pem``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

SYSTEMS = ("slurm", "pbs")
TLS_FILES = ("ca.pem", "scheduler.pem", "scheduler-key.pem", "worker.pem", "worker-key.pem",
             "client.pem", "client-key.pem")

logger = logging.getLogger("dsketch")


def tls_security(cert_dir: str | os.PathLike[str]) -> Any:
    """A :class:`distributed.Security` for all three roles from ``cluster/make_certs.py`` output."""
    from distributed import Security

    base = os.path.abspath(os.fspath(cert_dir))  # the jobs start in another directory
    missing = [name for name in TLS_FILES if not os.path.isfile(os.path.join(base, name))]
    if missing:
        raise FileNotFoundError(
            f"TLS directory {base!r} lacks {', '.join(missing)}; make them with "
            f"python cluster/make_certs.py {base} --host <scheduler host>"
        )

    def path(name: str) -> str:
        return os.path.join(base, name)

    return Security(
        tls_ca_file=path("ca.pem"),
        tls_scheduler_cert=path("scheduler.pem"), tls_scheduler_key=path("scheduler-key.pem"),
        tls_worker_cert=path("worker.pem"), tls_worker_key=path("worker-key.pem"),
        tls_client_cert=path("client.pem"), tls_client_key=path("client-key.pem"),
        require_encryption=True,
    )


def make_cluster(
    system: str,
    *,
    cores: int = 8,
    memory: str = "32GiB",
    walltime: str = "01:00:00",
    queue: str | None = None,
    account: str | None = None,
    interface: str | None = None,
    scheduler_host: str | None = None,
    dashboard_address: str = ":8787",
    local_directory: str | None = None,
    log_directory: str | None = None,
    worker_extra_args: Sequence[str] = (),
    job_script_prologue: Sequence[str] = (),
    security: Any = None,
    python: str | None = None,
) -> Any:
    """Build a :class:`dask_jobqueue.SLURMCluster` or ``PBSCluster`` for dsketch workers.

    Each job runs ``cores`` single-threaded worker processes sharing ``memory``. Nothing is
    submitted until ``cluster.scale(jobs=n)``; ``cluster.job_script()`` shows the script.

    Parameters
    ----------
    system : {"slurm", "pbs"}
    cores : int
        CPU cores per job, one worker process (one thread) per core.
    memory : str
        Memory per job (``"64GiB"``), split evenly between its workers.
    walltime : str
        Job time limit, ``HH:MM:SS``.
    queue, account : str, optional
        Partition / queue and the account (project) to charge.
    interface : str, optional
        Network interface of the scheduler and the workers (``"ib0"``, ``"eth0"``).
    scheduler_host : str, optional
        Address the scheduler binds to and workers connect to (overrides ``interface``
        for the scheduler).
    dashboard_address : str
        Where the scheduler's dashboard listens (``":8787"``: every interface of the driver
        host; ``"127.0.0.1:8787"`` keeps it local, reach it with ``ssh -L``).
    local_directory : str, optional
        Worker scratch directory for spilled data (node-local disk; ``"$TMPDIR"`` is
        expanded in the job).
    log_directory : str, optional
        Where the batch system writes the jobs' output.
    worker_extra_args : sequence of str
        Extra ``dask worker`` flags, verbatim.
    job_script_prologue : sequence of str
        Shell lines run before the worker starts.
    security : distributed.Security, optional
        TLS for scheduler, workers and client (see :func:`tls_security`); the certificate
        files must be readable on every node.
    python : str, optional
        Python on the compute nodes (default: this interpreter).
    """
    if system not in SYSTEMS:
        raise ValueError(f"system must be one of {SYSTEMS}; got {system!r}")
    if cores < 1:
        raise ValueError(f"cores must be >= 1; got {cores}")
    try:
        import dask_jobqueue
    except ImportError as exc:
        raise ImportError("this example needs dask-jobqueue: pip install dask-jobqueue") from exc
    scheduler_options: dict[str, Any] = {"dashboard_address": dashboard_address}
    if scheduler_host is not None:
        scheduler_options["host"] = scheduler_host
    kwargs: dict[str, Any] = {
        "cores": cores,
        "processes": cores,  # single-threaded workers
        "memory": memory,
        "walltime": walltime,
        "queue": queue,
        "account": account,
        "interface": interface,
        "local_directory": local_directory,
        "log_directory": log_directory,
        "worker_extra_args": list(worker_extra_args),
        "job_script_prologue": list(job_script_prologue),
        "scheduler_options": scheduler_options,
        "job_name": "dsketch-worker",
        "python": python or sys.executable,
    }
    if security is not None:
        kwargs.update(security=security, protocol="tls://")
    cls = dask_jobqueue.SLURMCluster if system == "slurm" else dask_jobqueue.PBSCluster
    return cls(**kwargs)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--system", choices=SYSTEMS, required=True)
    p.add_argument("--jobs", type=int, default=1, help="batch jobs to submit (default 1)")
    p.add_argument("--cores", type=int, default=8, help="worker processes (cores) per job")
    p.add_argument("--memory", default="32GiB", help="memory per job")
    p.add_argument("--walltime", default="01:00:00")
    p.add_argument("--queue", default=None, help="partition (SLURM) or queue (PBS)")
    p.add_argument("--account", default=None)
    p.add_argument("--interface", default=None, help="network interface, e.g. ib0")
    p.add_argument("--scheduler-host", default=None, help="address the scheduler binds to")
    p.add_argument("--dashboard-address", default=":8787")
    p.add_argument("--local-directory", default=None, help="worker scratch directory (node-local)")
    p.add_argument("--log-directory", default=None, help="batch job output directory")
    p.add_argument("--worker-extra-arg", action="append", default=[], metavar="ARG",
                   help="extra dask worker flag (repeatable)")
    p.add_argument("--prologue", action="append", default=[], metavar="LINE",
                   help="shell line run before the worker (repeatable)")
    p.add_argument("--tls-dir", default=None, help="certificates from cluster/make_certs.py (shared path)")
    p.add_argument("--dry-run", action="store_true", help="print the job script and exit")
    p.add_argument("--data", help="problem store (same path on every node)")
    p.add_argument("--out", help="result store")
    p.add_argument("--model", default="logistic")
    p.add_argument("--sketch", default="leverage")
    p.add_argument("--sketch-size", type=int, default=None)
    p.add_argument("--tol", type=float, default=1e-8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--wait", type=float, default=600, help="seconds to wait for the first worker")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.dry_run and (args.data is None or args.out is None):
        build_parser().error("--data and --out are required unless --dry-run is given")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    security = tls_security(args.tls_dir) if args.tls_dir else None
    cluster = make_cluster(
        args.system, cores=args.cores, memory=args.memory, walltime=args.walltime, queue=args.queue,
        account=args.account, interface=args.interface, scheduler_host=args.scheduler_host,
        dashboard_address=args.dashboard_address, local_directory=args.local_directory,
        log_directory=args.log_directory, worker_extra_args=args.worker_extra_arg,
        job_script_prologue=args.prologue, security=security,
    )
    with cluster:
        if args.dry_run:
            print(cluster.job_script())
            return 0
        from distributed import Client

        import dsketch

        cluster.scale(jobs=args.jobs)
        with Client(cluster, security=security, set_as_default=False) as client:
            logger.info("scheduler %s, dashboard %s; waiting for workers", cluster.scheduler_address,
                        client.dashboard_link)
            client.wait_for_workers(1, timeout=args.wait)
            result = dsketch.fit(args.data, args.model,
                                 curvature=dsketch.Curvature(args.sketch, size=args.sketch_size),
                                 solver=dsketch.Solver(tol=args.tol), seed=args.seed, cluster=client)
        dsketch.save_result(result, args.out, overwrite=True)
    print(f"{result.message} nit={result.nit} loss={result.fun:.15e} -> {args.out}")
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
