"""``dsketch fit``: its options and the command, a GLM-type fit (with an optional inference
pass) or a ggn-score network fit, written to a result store."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
from collections.abc import Callable
from typing import Any

from dsketch.cli_args import (
    SKETCH_KINDS,
    add_cluster_args,
    check_model_name,
    parse_params,
)
from dsketch.cli_inference import (
    add_inference_args,
    check_inference_args,
    fit_and_infer,
    inference_table,
)
from dsketch.errors import InvalidParameterError, StoreExistsError, StoreNotFoundError


def add_fit_parser(sub: Callable[..., argparse.ArgumentParser]) -> None:
    """The ``fit`` subcommand's options (the solver's and the run's in helpers of their own;
    ``sub(name, help=...)`` makes the subparser)."""
    p = sub("fit", help="fit a model to a problem store")
    p.add_argument("--model", required=True,
                   help="softmax, resnet-softmax, softmax-relu (--param reading=A|B|C), two-layer "
                   "(--param h=tanh|softplus|sigmoid|identity), exp, cosh, sinh, logistic, multinomial (labels 0..K-1; "
                   "--param n_classes=K, default from the labels; Newton-CG), poisson, least-squares, gamma, inverse-gaussian, tweedie (--param power=P: 0, 1, 1<P<2, 2, >2), "
                   "negative-binomial (--param theta=, default 1), glm (--param family=normal|binomial|poisson|"
                   "gamma|inverse.gaussian|tweedie|negative.binomial, link=identity|log|logit, power=, theta=), "
                   "or ggn-score (two-layer network; --param hidden=, activation=, "
                   "target=, epochs=, batch_size=, tau=, mu=, nu=, alpha=, scale_hessian_by_tau=, "
                   "smoother=pseudo-huber|ostrovskii-bach; --sketch-size S: full-data GGN with S sampled rows)")
    p.add_argument("--data", required=True, metavar="STORE", help="problem store to fit")
    p.add_argument("--out", required=True, metavar="RESULT", help="result store (read with dsketch.load_result)")
    p.add_argument("--fit-intercept", action="store_true",
                   help="GLMs: an unpenalised intercept, the last coefficient (the store is not copied)")
    _add_fit_solver_args(p)
    _add_fit_run_args(p)
    add_inference_args(p)
    add_cluster_args(p)


def _add_fit_solver_args(p: argparse.ArgumentParser) -> None:
    """``fit``: the method, the curvature and the stopping rule."""
    p.add_argument("--solver", default="auto", choices=("auto", "newton", "newton-cg", "lbfgs", "gd", "prox-newton"),
                   help="auto: L-BFGS while the gradient contracts fast, then (sketched) Newton (Newton "
                        "from the start for the softmax-type models or a named --sketch); newton: "
                        "(sketched) Newton; newton-cg: exact Newton by conjugate gradients "
                        "preconditioned by the sketch; lbfgs: L-BFGS only; gd: gradient-descent baseline; "
                        "prox-newton: proximal Newton, what auto is with --l1 (the only method for an L1 term)")
    p.add_argument("--sketch", default="auto", choices=("auto", *SKETCH_KINDS),
                   help="curvature of A^T diag(D) A (auto: exact when cheap, else leverage sampling; "
                        "exact: exact Newton)")
    p.add_argument("--adaptive-sketch", action=argparse.BooleanOptionalAction, default=None,
                   help="grow/shrink the sketch size when steps miss/meet their predicted decrease "
                        "(default: on for a sketch chosen by auto or named without --sketch-size)")
    p.add_argument("--sketch-size", type=int, default=None, metavar="N",
                   help="sampled rows / embedding dimension of the sketch, the start when adaptive "
                        "(default: 100 rows per feature when adaptive, else the size of the sketch's "
                        "(1 +- 0.5) guarantee); not with --sketch exact or --solver gd")
    p.add_argument("--seed", type=int, default=0, help="key of the sketches' counter-based randomness")
    p.add_argument("--tol", type=float, default=1e-8, help="stop when |grad| <= TOL * |grad_0|")
    p.add_argument("--max-iter", type=int, default=50, help="most iterations")
    p.add_argument("--ftol", type=float, default=None,
                   help="also stop when a step decreases the loss by at most FTOL relative to it "
                        "(default: 1e-12 for the non-smooth softmax-relu, off otherwise)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="model parameter, e.g. l2=1e-3 (repeatable)")
    p.add_argument("--l1", type=float, default=None, metavar="VALUE",
                   help="GLMs and multinomial: L1 strength, adding VALUE * |x|_1 over the coefficients but "
                        "the intercepts "
                        "(fitted by proximal Newton; the same as --param l1=VALUE; default: none)")


def _add_fit_run_args(p: argparse.ArgumentParser) -> None:
    """``fit``: blocking, memory check, fused passes and the outputs."""
    p.add_argument("--block-rows", type=int, default=None,
                   help="rows per block (default: from the store's shape, about 64 MiB a block)")
    p.add_argument("--persist", action="store_true", help="keep row blocks in cluster memory")
    p.add_argument("--no-memory-check", dest="memory_check", action="store_false",
                   help="skip the up-front estimate of the driver's and the workers' memory (a fit that "
                        "does not fit is otherwise refused before its first pass)")
    p.add_argument("--no-fused", dest="fused", action="store_false",
                   help="GLMs: two passes per iteration instead of one fused pass (A p, trial losses "
                        "and the next curvature together)")
    p.add_argument("--plot", default=None, metavar="PNG", help="write a convergence plot")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier result store at RESULT")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted fit from RESULT.checkpoint (written after every iteration)")


def fit_params(args: argparse.Namespace) -> dict[str, Any]:
    """The model parameters of ``dsketch fit``: ``--param`` items and ``--l1``."""
    out = parse_params(args.param)
    if args.l1 is not None:
        if "l1" in out:
            raise InvalidParameterError("give the L1 strength once: --l1 or --param l1=..., not both")
        out["l1"] = args.l1
    return out


def _check_fit_outputs(args: argparse.Namespace, checkpoint: str | None, plot: str | None) -> None:
    """Refuse every output path of ``fit`` that cannot be written, before any work starts."""
    from dsketch.store import outputs

    data = {"--data": args.data}
    outputs.check_output(args.out, outputs.RESULT, overwrite=args.overwrite, others=data, option="--out")
    if checkpoint is not None and not args.resume:  # a stale checkpoint of this --out is replaced
        outputs.check_output(checkpoint, outputs.CHECKPOINT, overwrite=True, others={**data, "--out": args.out},
                             option="checkpoint")
    if plot:  # a plot file is rewritten as before; never a directory or a store
        outputs.check_output(plot, outputs.FILE, overwrite=True, make_parents=False, option="--plot",
                             others={**data, "--out": args.out, "checkpoint": checkpoint})


def cmd_fit(args: argparse.Namespace) -> int:
    """Run ``dsketch fit``; 0 when the fit succeeded, 1 when it stopped without success."""
    from dsketch.config import Curvature, Solver

    check_model_name(args.model, ("ggn-score",))
    if args.model == "ggn-score":
        return _fit_network(args)
    # before any output is checked or a cluster started
    Curvature(args.sketch, size=args.sketch_size, adaptive=args.adaptive_sketch).check_for(Solver(args.solver).method)
    checkpoint = args.out.rstrip("/") + ".checkpoint"
    args.checkpoint_path = checkpoint  # named by main() when the fit is interrupted
    _check_fit_outputs(args, checkpoint, args.plot)
    if args.cov_type is not None:
        from dsketch.models import get_model

        check_inference_args(args, get_model(args.model, **fit_params(args)))
    _check_checkpoint(args, checkpoint)
    if args.resume:
        print(f"resuming from {checkpoint}")
    result = _run_fit(args, checkpoint)
    return _report_fit(args, result)


def _fit_network(args: argparse.Namespace) -> int:
    """``dsketch fit --model ggn-score``: the two-layer network, in memory or, with a sketch
    size, on the cluster; no checkpoint, no plot."""
    from dsketch.api import fit_network
    from dsketch.config import Cluster
    from dsketch.solvers.result import save_result

    if args.l1 is not None:
        raise InvalidParameterError("--l1 is for the GLMs; ggn-score has no L1 penalty")
    if args.fit_intercept:
        raise InvalidParameterError("--fit-intercept is for the GLMs; ggn-score's network has its own biases")
    if args.cov_type is not None:
        check_inference_args(args, None)
    _check_fit_outputs(args, None, None)  # no checkpoint, no plot
    params = parse_params(args.param)
    if args.sketch_size is not None:  # full-data sketched GGN-SCORE on the cluster
        params.setdefault("sketch_size", args.sketch_size)
    if params.get("sketch_size") is not None:
        placement = {k: params.pop(k) for k in ("block_rows", "persist") if k in params}
        params["cluster"] = Cluster(params.pop("scheduler", args.scheduler),
                                    n_workers=params.pop("n_workers", args.workers), **placement)
    result = fit_network(args.data, **params, seed=args.seed)
    save_result(result, args.out, overwrite=args.overwrite)
    print(result.history_table())
    print(f"{result.message} steps={result.nit} time={result.wall_time:.2f}s loss={result.fun:.6e} -> {args.out}")
    return 0


def _check_checkpoint(args: argparse.Namespace, checkpoint: str) -> None:
    """Refuse ``--resume`` without a checkpoint, and a fresh fit over an interrupted fit's
    checkpoint unless ``--overwrite`` replaces it."""
    if args.resume and not os.path.exists(checkpoint):
        raise StoreNotFoundError(f"no checkpoint {checkpoint!r} to resume; run without --resume")
    if not args.resume and os.path.exists(checkpoint) and not args.overwrite:
        raise StoreExistsError(
            f"an interrupted fit left the checkpoint {checkpoint!r}: add --resume to continue it, or "
            "--overwrite to start afresh (the checkpoint is then replaced)"
        )


def _run_fit(args: argparse.Namespace, checkpoint: str) -> Any:
    """Fit (and, with ``--cov-type``, infer on the same cluster), save the result and drop
    the checkpoint; a failed inference pass is raised after the fit is saved."""
    from dsketch.api import fit
    from dsketch.solvers.result import save_result

    with contextlib.ExitStack() as stack:
        client = None
        if args.cov_type is not None:  # one cluster for the fit and the inference pass
            from dsketch.engine.client import connect

            client = stack.enter_context(connect(args.scheduler, n_workers=args.workers))
        result, failed = fit_and_infer(args, fit, fit_params(args), checkpoint, client)
    save_result(result, args.out, overwrite=args.overwrite)
    if failed is not None:  # the fit is kept; the one-line error follows
        shutil.rmtree(checkpoint, ignore_errors=True)
        raise failed
    shutil.rmtree(checkpoint, ignore_errors=True)
    return result


def _report_fit(args: argparse.Namespace, result: Any) -> int:
    """The plot, the summary line and the inference table of a saved fit; its exit status."""
    if args.plot:
        from dsketch.plot import plot_convergence

        plot_convergence({f"{args.model} / {args.sketch}": result}, args.plot, title=args.data)
    print(f"{result.message} nit={result.nit} passes={result.n_passes} "
          f"time={result.wall_time:.2f}s loss={result.fun:.15e} -> {args.out}")
    if result.inference is not None:
        print(inference_table(result, args))
    elif args.cov_type is not None:
        print(f"dsketch fit: no standard errors: the fit did not succeed ({result.message})", file=sys.stderr)
    return 0 if result.success else 1
