"""The inference parts of the command line: ``fit --cov-type`` and ``summary``."""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from dsketch.errors import InvalidParameterError


def add_inference_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cov-type", default=None, metavar="TYPE",
                   help="GLMs: standard errors after the fit, one more pass over A: nonrobust, HC0, HC1 or "
                        "cluster (with --groups); the table is printed and stored in the result")
    p.add_argument("--groups", default=None, metavar="MEMBER",
                   help="row-aligned integer member of the store with the cluster ids (--cov-type cluster)")
    p.add_argument("--alpha", type=float, default=0.05, help="confidence intervals of level 1 - ALPHA (default 0.05)")
    p.add_argument("--contrasts", type=int, default=None, metavar="CLASS",
                   help="multinomial: print each class's coefficients less those of class CLASS (statsmodels "
                        "MNLogit's parameters, which the data determine) instead of the single coefficients")


def check_inference_args(args: argparse.Namespace, model: Any) -> None:
    """Refuse a bad --cov-type / --groups / --model combination before any work starts."""
    from dsketch.inference import check_cov_type, check_groups
    from dsketch.models.glm import _GLM
    from dsketch.store import open_problem

    args.cov_type = check_cov_type(args.cov_type, args.groups)
    if not 0.0 < args.alpha < 1.0:
        raise InvalidParameterError(f"--alpha must be in (0, 1); got {args.alpha}")
    from dsketch.errors import InferenceError

    if not isinstance(model, _GLM):
        raise InferenceError(f"--cov-type is for the GLMs (logistic, multinomial, poisson, least-squares, ...), "
                             f"not --model {args.model}")
    multinomial = getattr(model, "name", "") == "multinomial"
    if args.contrasts is not None and not multinomial:
        raise InferenceError(f"--contrasts is for --model multinomial, not --model {args.model}")
    if multinomial:
        from dsketch.inference import check_identified

        check_identified(model, model.n_unpenalized + 1)  # refuses l2 = 0 before the fit
    if args.groups:
        check_groups(open_problem(args.data), args.groups)


def fit_and_infer(args: argparse.Namespace, fit: Any, params: dict[str, Any], checkpoint: str,
                  client: Any) -> tuple[Any, Any]:
    """The fit, with its inference when asked and the fit succeeded; and the inference's error."""
    from dsketch.errors import InferenceError

    from dsketch.config import Cluster, Curvature, Solver

    cluster = Cluster(client if client is not None else args.scheduler, n_workers=args.workers,
                      block_rows=args.block_rows)
    result = fit(
        args.data,
        args.model,
        model_params=params,
        fit_intercept=args.fit_intercept,
        curvature=Curvature(args.sketch, size=args.sketch_size, adaptive=args.adaptive_sketch),
        solver=Solver(args.solver, tol=args.tol, max_iter=args.max_iter, ftol=args.ftol),
        cluster=replace(cluster, persist=args.persist, fused=args.fused,
                        memory_check=getattr(args, "memory_check", True)),
        seed=args.seed,
        checkpoint=checkpoint,
        resume=args.resume,
    )
    if args.cov_type is not None and result.success:
        from dsketch.inference import covariance

        try:
            covariance(result, args.data, cov_type=args.cov_type, groups=args.groups, alpha=args.alpha,
                       cluster=cluster)
        except InferenceError as exc:
            return result, exc
    return result, None


def inference_table(result: Any, args: argparse.Namespace) -> str:
    """The coefficient table to print: the result's, or with ``--contrasts`` its class contrasts."""
    if args.contrasts is None:
        return str(result.summary(args.alpha))
    return str(result.inference.class_contrasts(args.contrasts).summary(args.alpha))


def cmd_summary(args: argparse.Namespace) -> int:
    """``dsketch summary``: the stored table, or one computed now (the stored type by default)."""
    from dsketch.config import Cluster
    from dsketch.inference import check_cov_type, covariance
    from dsketch.solvers.result import load_result, save_result

    result = load_result(args.result)
    if args.cov_type is None and args.groups is None and result.inference is not None and not args.save:
        print(inference_table(result, args))
        return 0
    stored = result.inference
    groups = args.groups if args.cov_type or stored is None else stored.groups
    cov_type = check_cov_type(args.cov_type or (stored.cov_type if stored is not None else "nonrobust"), groups)
    covariance(result, args.data, cov_type=cov_type, groups=groups, alpha=args.alpha,
               cluster=Cluster(args.scheduler, n_workers=args.workers, block_rows=args.block_rows))
    if args.save:
        save_result(result, args.result, overwrite=True)
    print(inference_table(result, args))
    return 0
