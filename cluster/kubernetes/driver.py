"""Run a dsketch fit on the DaskCluster of ``cluster/kubernetes/daskcluster.yaml``.

Two ways to reach the scheduler:

* From inside Kubernetes (a pod of the same image, e.g. ``kubectl run`` or a DaskJob, with
  the ``dsketch-data`` volume mounted at /data): find the cluster by name through the
  operator (``pip install dask-kubernetes``; the pod's service account must be allowed to
  read DaskCluster resources and services)::

      python driver.py --name dsketch --namespace default \\
          --data /data/problem.zarr --out /data/result.zarr --model logistic

  or name the scheduler service directly:
  ``--scheduler tcp://dsketch-scheduler.default.svc.cluster.local:8786``.

* From a workstation, through a port-forward of the scheduler service (comm port and
  dashboard)::

      kubectl port-forward svc/dsketch-scheduler 8786:8786 8787:8787 &
      python driver.py --scheduler tcp://127.0.0.1:8786 \\
          --data s3://bucket/problem.zarr --out result.zarr --model logistic

  The driver reads the store's metadata itself, so the store must be reachable from the
  workstation too: use object storage (the workers read it there as well). The dashboard
  is then at http://127.0.0.1:8787/status, and the fit prints it when it connects.

Versions of dask and distributed on the driver must match the image's (``dask worker``
warns otherwise); the simplest way is to run the driver from the same image.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--name", help="DaskCluster name (found with KubeCluster.from_name)")
    where.add_argument("--scheduler", help="scheduler address, e.g. tcp://127.0.0.1:8786 after a port-forward")
    p.add_argument("--namespace", default=None, help="namespace of the DaskCluster (with --name)")
    p.add_argument("--data", required=True, help="problem store (a path every worker sees, or a URL)")
    p.add_argument("--out", required=True, help="result store")
    p.add_argument("--model", default="logistic")
    p.add_argument("--sketch", default="leverage")
    p.add_argument("--sketch-size", type=int, default=None)
    p.add_argument("--tol", type=float, default=1e-8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--connect-timeout", type=float, default=60.0, help="seconds to wait for the scheduler")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import dsketch

    def run(client) -> dsketch.FitResult:
        return dsketch.fit(args.data, args.model,
                           curvature=dsketch.Curvature(args.sketch, size=args.sketch_size),
                           solver=dsketch.Solver(tol=args.tol), seed=args.seed, cluster=client)

    if args.scheduler:
        from dsketch.errors import DSketchError

        # connect() logs the dashboard address and fails with one clear line if the
        # scheduler (or the port-forward) is not there within the timeout
        try:
            with dsketch.connect(args.scheduler, timeout=args.connect_timeout) as client:
                result = run(client)
        except DSketchError as exc:
            print(f"driver: error: {exc}", file=sys.stderr)
            return 2
    else:
        from dask_kubernetes.operator import KubeCluster
        from distributed import Client

        cluster = KubeCluster.from_name(args.name, namespace=args.namespace)
        with Client(cluster, timeout=args.connect_timeout, set_as_default=False) as client:
            logging.getLogger("dsketch").info("joined DaskCluster %s (dashboard: %s)", args.name,
                                              client.dashboard_link)
            result = run(client)
    dsketch.save_result(result, args.out, overwrite=True)
    print(f"{result.message} nit={result.nit} loss={result.fun:.15e} -> {args.out}")
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
