"""The ``dsketch`` command line: make-data, convert, info, fit, predict, demo."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from dsketch import interrupts
from dsketch.cli_args import SKETCH_KINDS
from dsketch.cli_args import add_cluster_args as _add_cluster_args
from dsketch.cli_args import check_model_name as _check_model_name
from dsketch.cli_args import parse_params as _parse_params
from dsketch.cli_cv import add_cv_parser, cmd_cv
from dsketch.cli_fit import add_fit_parser as _add_fit_parser
from dsketch.cli_fit import cmd_fit as _cmd_fit
from dsketch.cli_inference import add_inference_args, cmd_summary
from dsketch.cli_path import add_path_parser, cmd_path
from dsketch.errors import (
    DSketchError,
    InvalidParameterError,
)

logger = logging.getLogger("dsketch")

#: ``sub(name, help=...)``: makes a subcommand's parser (with ``--quiet``) in :func:`build_parser`.
_SubparserFactory = Callable[..., argparse.ArgumentParser]


def _setup_logging(quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False
    logging.captureWarnings(False)
    if not os.environ.get("DSKETCH_DEBUG"):
        # distributed logs lost connections with full tracebacks; the command reports them
        # as one line of its own (DSKETCH_DEBUG=1 shows everything)
        import distributed  # noqa: F401 - its logging set-up runs on import; override it after

        dist = logging.getLogger("distributed")
        dist.setLevel(logging.CRITICAL + 1)  # its CRITICAL lines too: a closed comm at shutdown
        # futures still pending when an interrupted command closes its client
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        for h in dist.handlers:  # child loggers (distributed.client, ...) have levels of their own
            h.setLevel(logging.CRITICAL + 1)


def _connection_config(args: argparse.Namespace) -> Any:
    """Scope --tls-ca-file/--tls-cert/--tls-key/--connect-timeout as dask config for the command.

    ``connect()`` builds the client's ``distributed.Security`` (TLS credentials win over the
    ``DASK_DISTRIBUTED__COMM__TLS__*`` environment; giving any of them requires encryption)
    and its timeout from this config when it joins the scheduler, so bad input is still
    reported before any connection is tried.
    """
    import dask.config

    config: dict[str, Any] = {}
    tls = {"distributed.comm.tls.ca-file": getattr(args, "tls_ca_file", None),
           "distributed.comm.tls.client.cert": getattr(args, "tls_cert", None),
           "distributed.comm.tls.client.key": getattr(args, "tls_key", None)}
    given = {key: path for key, path in tls.items() if path}
    if given:
        config.update(given)
        config["distributed.comm.require-encryption"] = True
    timeout = getattr(args, "connect_timeout", None)
    if timeout is not None:
        if not 0 < timeout < float("inf"):
            raise InvalidParameterError(f"--connect-timeout must be a positive number of seconds; got {timeout}")
        config["distributed.comm.timeouts.connect"] = f"{timeout}s"
    return dask.config.set(config)


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the text already says it or the
    option is a switch (off by default) or has no default value (the text says what then)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (not action.option_strings or "default" in text or default is None or isinstance(default, bool)
                or default is argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """An argument parser whose "invalid choice" errors suggest the nearest valid choice."""

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if action.choices is not None and value not in action.choices:
            from dsketch.errors import did_you_mean

            valid = ", ".join(map(str, action.choices))
            raise argparse.ArgumentError(
                action, f"invalid choice: {value!r}{did_you_mean(value, map(str, action.choices))}; "
                        f"choose from {valid}")
        super()._check_value(action, value)


def _add_quiet(p: argparse.ArgumentParser, default: Any = argparse.SUPPRESS) -> None:
    """``--quiet``, accepted before and after the command (the command's copy leaves the
    value alone unless given)."""
    p.add_argument("--quiet", action="store_true", default=default, help="only warnings and errors")


def build_parser() -> argparse.ArgumentParser:
    """The ``dsketch`` parser: one ``_add_*_parser`` function per subcommand, in the order of ``--help``."""
    parser = _Parser(
        prog="dsketch",
        description="Distributed sketched Newton methods on Zarr stores with Dask.",
        formatter_class=_HelpFormatter,
    )
    _add_quiet(parser, default=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def _sub(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, formatter_class=_HelpFormatter, **kwargs)
        _add_quiet(p)
        return p

    _add_make_data_parser(_sub)
    _add_convert_parser(_sub)
    _add_info_parser(_sub)
    _add_fit_parser(_sub)
    add_path_parser(_sub, _add_cluster_args)
    add_cv_parser(_sub, _add_cluster_args, SKETCH_KINDS)
    _add_summary_parser(_sub)
    _add_predict_parser(_sub)
    _add_demo_parser(_sub)
    return parser


def _add_make_data_parser(sub: _SubparserFactory) -> None:
    """The ``make-data`` subcommand's options."""
    p = sub("make-data", help="write a synthetic problem with a planted solution")
    p.add_argument("out", help="target problem store (Zarr directory)")
    p.add_argument("--model", required=True, help="model whose targets are generated")
    p.add_argument("--n-samples", type=int, required=True, help="rows of A")
    p.add_argument("--n-features", type=int, required=True, help="columns of A")
    p.add_argument("--density", type=float, default=None, help="non-zero fraction (sparse CSR store); dense if omitted")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and the planted solution")
    p.add_argument("--regime", choices=("weak", "strong"), default="weak", help="row weights w for softmax-type models")
    p.add_argument("--noise", type=float, default=0.05,
                   help="standard deviation of the Gaussian noise added to the targets (models with real targets)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="model parameter (repeatable)")
    p.add_argument("--outputs", type=int, default=8,
                   help="m, the number of targets of the paired models two-layer and softmax-relu "
                        "reading C")
    p.add_argument("--solve", action="store_true",
                   help="also compute the optimum x* (exact Newton, tol 1e-12) and record it in the metadata")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier problem store at OUT")
    _add_cluster_args(p)


def _add_convert_parser(sub: _SubparserFactory) -> None:
    """The ``convert`` subcommand's options."""
    p = sub("convert", help="convert .npy / .npz / svmlight / AnnData .zarr into a problem store")
    p.add_argument("source", help="input file or AnnData store (A for .npy; A and b for .npz)")
    p.add_argument("out", help="target problem store (Zarr directory)")
    p.add_argument("--format", dest="fmt", choices=("npy", "npz", "svmlight", "anndata"), default=None,
                   help="format of SOURCE (default: from its file name)")
    p.add_argument("--target", default=None, help=".npy file with b (for .npy / .npz sources)")
    p.add_argument("--weights", default=None,
                   help=".npy file (or AnnData obs column) with the softmax-type models' regularisation "
                        "weights w (not sample weights: the GLMs refuse a store with w)")
    p.add_argument("--sample-weight", default=None, metavar="NPY_OR_COLUMN",
                   help="the GLMs' sample weights (>= 0; scikit-learn's meaning), stored as 'sample_weight'")
    p.add_argument("--offset", default=None, metavar="NPY_OR_COLUMN",
                   help="the GLMs' offsets (eta = A x + offset, e.g. log exposure), stored as 'offset'; an "
                        "(n, K) .npy matrix: multinomial offsets, one a class")
    p.add_argument("--obs-column", default=None, help="AnnData obs column used as b")
    p.add_argument("--layer", default=None, help="AnnData layer instead of X")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier problem store at OUT")


def _add_info_parser(sub: _SubparserFactory) -> None:
    """The ``info`` subcommand's options."""
    p = sub("info", help="describe a problem store, a result store or a prediction store")
    p.add_argument("store", help="the store to describe")
    p.add_argument("--check", action="store_true", help="full validation: finite values, sorted in-range indices")
    p.add_argument("--json", action="store_true", help="print JSON")


def _add_summary_parser(sub: _SubparserFactory) -> None:
    """The ``summary`` subcommand's options."""
    p = sub("summary", help="coefficient table (standard errors, z, p-values) of a GLM result")
    p.add_argument("--result", required=True, metavar="RESULT", help="result store of 'dsketch fit'")
    p.add_argument("--data", default=None, metavar="STORE",
                   help="the store the model was fitted to (default: the one the result records)")
    p.add_argument("--block-rows", type=int, default=None, help="rows per streamed block")
    p.add_argument("--save", action="store_true", help="store the computed table in RESULT")
    add_inference_args(p)
    _add_cluster_args(p)


def _add_predict_parser(sub: _SubparserFactory) -> None:
    """The ``predict`` subcommand's options."""
    p = sub("predict", help="a fitted GLM's linear predictor and mean for every row of a problem store")
    p.add_argument("--result", required=True, metavar="RESULT", help="result store of 'dsketch fit' (a GLM)")
    p.add_argument("--data", required=True, metavar="STORE",
                   help="problem store with the fitted columns (its 'offset' member is added when present)")
    p.add_argument("--out", required=True, metavar="PRED",
                   help="prediction store to write: row-aligned arrays 'eta' and 'mean'")
    p.add_argument("--block-rows", type=int, default=None,
                   help="rows per task, rounded up to whole row chunks of the store (default: from its shape)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier prediction store at PRED")
    _add_cluster_args(p)


def _add_demo_parser(sub: _SubparserFactory) -> None:
    """The ``demo`` subcommand's options."""
    p = sub("demo", help="make a 2M-row sparse problem and fit softmax and logistic regression")
    p.add_argument("--out", required=True, metavar="DIR", help="directory of the stores, results, plot and report")
    p.add_argument("--n-samples", type=int, default=2_000_000, help="rows of each problem")
    p.add_argument("--n-features", type=int, default=200, help="columns of each problem")
    p.add_argument("--density", type=float, default=0.01, help="non-zero fraction of A")
    p.add_argument("--sketch", default="leverage", choices=SKETCH_KINDS,
                   help="curvature of both fits (the demo shows a sketch at a fixed size)")
    p.add_argument("--sketch-size", type=int, default=None, metavar="N",
                   help="sketch size (default: the size of the sketch's (1 +- 0.5) guarantee); "
                        "not with --sketch exact")
    p.add_argument("--seed", type=int, default=0, help="seed of the data and the sketches")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty DIR that holds more than an earlier demo's outputs "
                        "(only the demo's own stores, results, plot and report are replaced)")
    _add_cluster_args(p)


def _cmd_make_data(args: argparse.Namespace) -> int:
    from dsketch.engine.client import connect
    from dsketch.engine.datagen import make_problem
    from dsketch.store import outputs

    _check_model_name(args.model)  # before the cluster starts
    outputs.check_output(args.out, outputs.PROBLEM, overwrite=args.overwrite)
    with connect(args.scheduler, n_workers=args.workers) as client:
        spec = make_problem(
            args.out,
            model=args.model,
            n_samples=args.n_samples,
            n_features=args.n_features,
            density=args.density,
            seed=args.seed,
            regime=args.regime,
            noise=args.noise,
            model_params=_parse_params(args.param),
            overwrite=args.overwrite,
            client=client,
            n_outputs=args.outputs,
        )
        if args.solve:
            from dsketch.api import record_optimum

            spec = record_optimum(spec, args.model, model_params=_parse_params(args.param), client=client)
    print(f"wrote {spec.path}: {spec.n_samples} x {spec.n_features}, nnz={spec.nnz}")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from dsketch.store.convert import convert

    spec = convert(
        args.source,
        args.out,
        fmt=args.fmt,
        target=args.target,
        weights=args.weights,
        sample_weight=args.sample_weight,
        offset=args.offset,
        obs_column=args.obs_column,
        layer=args.layer,
        overwrite=args.overwrite,
    )
    print(f"wrote {spec.path}: {spec.n_samples} x {spec.n_features}, nnz={spec.nnz}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from dsketch.store import open_problem, outputs
    from dsketch.store.convert import describe

    kind = outputs.path_kind(args.store)
    if kind == outputs.RESULT:
        from dsketch.solvers.result import describe_result

        desc = describe_result(args.store)
    elif kind == outputs.PREDICTION:
        from dsketch.predict import describe_prediction

        desc = describe_prediction(args.store)
    else:
        desc = describe(open_problem(args.store, check="full" if args.check else "metadata"))
    if args.json:
        print(json.dumps(desc, indent=2, default=str))
        return 0
    width = max(len(k) for k in desc)
    for key, val in desc.items():
        print(f"{key:<{width}}  {val}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from dsketch.config import Cluster
    from dsketch.predict import predict

    path = predict(args.result, args.data, args.out, overwrite=args.overwrite,
                   cluster=Cluster(args.scheduler, n_workers=args.workers, block_rows=args.block_rows))
    import zarr

    rows = int(zarr.open_group(path, mode="r")["eta"].shape[0])
    print(f"wrote {args.out}: eta and mean for {rows} rows of {args.data} from {args.result}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from dsketch.config import Curvature
    from dsketch.demo import run_demo

    Curvature(args.sketch, size=args.sketch_size).check_for("newton")  # before the data are made
    run_demo(
        args.out,
        n_samples=args.n_samples,
        n_features=args.n_features,
        density=args.density,
        sketch=args.sketch,
        sketch_size=args.sketch_size,
        seed=args.seed,
        scheduler=args.scheduler,
        n_workers=args.workers,
        overwrite=args.overwrite,
    )
    return 0


COMMANDS = {
    "make-data": _cmd_make_data,
    "convert": _cmd_convert,
    "info": _cmd_info,
    "fit": _cmd_fit,
    "path": lambda args: cmd_path(args, _parse_params(args.param)),
    "cv": lambda args: cmd_cv(args, _parse_params(args.param)),
    "summary": cmd_summary,
    "predict": _cmd_predict,
    "demo": _cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.quiet)
    warnings.simplefilter("default")
    main_thread = threading.current_thread() is threading.main_thread()
    previous = interrupts.install() if main_thread else None  # a Ctrl-C is remembered (dsketch.interrupts)
    try:
        with _connection_config(args):
            return COMMANDS[args.command](args)
    except BrokenPipeError:
        # the reader went away (`dsketch info STORE | head`): nothing more to say to it
        with contextlib.suppress(OSError, AttributeError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print(f"dsketch {args.command}: error: output closed early (broken pipe)", file=sys.stderr)
        return 2
    except (DSketchError, ValueError, TypeError, OSError, MemoryError) as exc:
        if os.environ.get("DSKETCH_DEBUG"):
            raise
        print(f"dsketch {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        ckpt = getattr(args, "checkpoint_path", None)
        hint = ""
        if ckpt and os.path.exists(ckpt):
            hint = f"; the last finished iteration is in {ckpt}: rerun the same command with --resume to continue"
        print(f"dsketch {args.command}: interrupted{hint}", file=sys.stderr)
        return 130
    finally:
        if main_thread:
            interrupts.restore(previous)


def _one_line(exc: BaseException) -> str:
    """The error as one line (a system error's text names its errno; a MemoryError says
    that memory ran out)."""
    text = " ".join(str(exc).split())
    if isinstance(exc, MemoryError) and not isinstance(exc, DSketchError):  # not a refusal
        return f"out of memory: {text or 'an allocation failed'}"
    return text or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
