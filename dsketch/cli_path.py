"""``dsketch path``: an elastic-net regularisation path of a GLM on a problem store."""

from __future__ import annotations

import argparse
import os
from typing import Any, Callable

from dsketch.errors import InvalidParameterError, OutputPathError

#: The arrays ``dsketch path --out`` writes (NumPy ``.npz``), by name.
PATH_ARRAYS = ("alphas", "coef", "n_iter", "n_passes", "n_active", "alpha_max", "l1_ratio")


def add_path_parser(sub: Callable[..., argparse.ArgumentParser], add_cluster_args: Callable[[Any], None]) -> None:
    """The ``path`` subcommand's options (``sub(name, help=...)`` makes the subparser)."""
    p = sub("path", help="elastic-net regularisation path of a GLM or multinomial regression: one proximal-Newton "
                         "fit per alpha, warm-started")
    p.add_argument("--model", required=True,
                   help="a GLM: logistic, poisson, least-squares, gamma, inverse-gaussian, tweedie, "
                        "negative-binomial or glm (--param family=..., link=...); or multinomial (labels 0..K-1)")
    p.add_argument("--data", required=True, metavar="STORE", help="problem store to fit")
    p.add_argument("--out", required=True, metavar="NPZ",
                   help=f"NumPy .npz file to write: {', '.join(PATH_ARRAYS)} (coef: one row per alpha, "
                        "the intercept last; multinomial: the d x K coefficients flattened row by row)")
    p.add_argument("--l1-ratio", type=float, default=1.0,
                   help="L1 share of the penalty alpha (l1_ratio |x|_1 + (1 - l1_ratio) |x|^2 / 2), in (0, 1]")
    add_grid_args(p)
    p.add_argument("--seed", type=int, default=0, help="key of the sketches' counter-based randomness")
    p.add_argument("--no-screening", dest="screening", action="store_false",
                   help="sweep every coordinate (the strong rule never changes the solution, only the work)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier file at NPZ")
    add_cluster_args(p)


def add_grid_args(p: argparse.ArgumentParser) -> None:
    """The options ``path`` and ``cv`` share: the alphas, the intercept, the model's other
    parameters and each fit's stopping rule."""
    p.add_argument("--alphas", default=None, metavar="A1,A2,...",
                   help="comma-separated alphas (default: --n-alphas from alpha_max, where every "
                        "coefficient is 0, down to --eps times it)")
    p.add_argument("--n-alphas", type=int, default=20, help="alphas of the default grid")
    p.add_argument("--eps", type=float, default=1e-3, help="smallest alpha of the default grid over alpha_max")
    p.add_argument("--fit-intercept", action="store_true", help="an unpenalised intercept, the last coefficient")
    p.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="other model parameters, e.g. power=1.5 (not l1 or l2: the path sets them)")
    p.add_argument("--tol", type=float, default=1e-8, help="each fit stops when its KKT measure <= TOL times its start")
    p.add_argument("--max-iter", type=int, default=50, help="most proximal-Newton iterations of each fit")


def _alphas(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(a) for a in text.split(",") if a.strip()]
    except ValueError:
        raise InvalidParameterError(f"--alphas takes comma-separated numbers, e.g. 0.1,0.01; got {text!r}") from None


def _check_out(out: str, data: str, overwrite: bool) -> str:
    """Refuse an ``--out`` that is not a new (or, with ``overwrite``, an existing) .npz file
    in an existing directory, or that is, lies inside or contains the data store (as
    ``fit --out`` is checked: :func:`dsketch.store.outputs.check_output`)."""
    from dsketch.store import outputs

    if not out.endswith(".npz"):
        raise OutputPathError(f"--out {out!r} must name a .npz file (NumPy writes that suffix)")
    outputs.check_output(out, outputs.FILE, overwrite=overwrite, others={"--data": data}, option="--out",
                         make_parents=False)
    return out


def cmd_path(args: argparse.Namespace, params: dict[str, Any]) -> int:
    """Fit the path, print one row per alpha, write the arrays; exit 0 when every fit converged."""
    import numpy as np

    from dsketch.config import Cluster, Solver
    from dsketch.path import fit_path

    out = _check_out(args.out, args.data, args.overwrite)
    res = fit_path(args.data, args.model, l1_ratio=args.l1_ratio, alphas=_alphas(args.alphas),
                   n_alphas=args.n_alphas, eps=args.eps, model_params=params, fit_intercept=args.fit_intercept,
                   solver=Solver("auto", tol=args.tol, max_iter=args.max_iter),
                   cluster=Cluster(args.scheduler, n_workers=args.workers), seed=args.seed,
                   screening=args.screening)
    print(f"{'alpha':>12} {'active':>7} {'iter':>5} {'passes':>7} {'objective':>24}  status")
    for k, r in enumerate(res.results):
        print(f"{res.alphas[k]:12.4e} {int(res.n_active[k]):7d} {r.nit:5d} {r.n_passes:7d} {r.fun:24.15e}  "
              f"{r.status.name}")
    arrays = {"alphas": res.alphas, "coef": res.coef, "n_iter": res.n_iter, "n_passes": res.n_passes,
              "n_active": res.n_active, "alpha_max": np.float64(res.alpha_max), "l1_ratio": np.float64(res.l1_ratio)}
    tmp = out[: -len(".npz")] + f".tmp-{os.getpid()}.npz"
    try:
        np.savez(tmp, **arrays)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    print(f"{'all fits converged' if res.success else 'NOT every fit converged'}: {len(res.alphas)} alphas "
          f"(alpha_max {res.alpha_max:.4e}), {int(res.n_passes.sum()) + res.n_passes_start} passes, "
          f"{res.wall_time:.2f}s -> {out}")
    return 0 if res.success else 1
