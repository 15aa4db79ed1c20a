"""``dsketch cv``: the elastic-net penalty of a GLM chosen by K-fold cross-validation on a
problem store (:func:`dsketch.cv_path`; the folds are row masks, the store is not copied)."""

from __future__ import annotations

import argparse
import csv
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

from dsketch.cli_path import _alphas, add_grid_args
from dsketch.errors import InvalidParameterError, OutputPathError

#: The table formats of ``dsketch cv --out``, by file suffix.
TABLE_SUFFIXES = (".csv", ".json")


def add_cv_parser(sub: Callable[..., argparse.ArgumentParser], add_cluster_args: Callable[[Any], None],
                  sketch_kinds: Sequence[str]) -> None:
    """The ``cv`` subcommand's options (``sub(name, help=...)`` makes the subparser)."""
    p = sub("cv", help="choose a GLM's elastic-net penalty by K-fold cross-validation: the path on each fold's "
                       "training rows, scored by the held-out deviance (row masks, no copies)")
    p.add_argument("--model", required=True,
                   help="a GLM: logistic, poisson, least-squares, gamma, inverse-gaussian, tweedie, "
                        "negative-binomial or glm (--param family=..., link=...)")
    p.add_argument("--data", required=True, metavar="STORE", help="problem store to cross-validate")
    p.add_argument("--out", default=None, metavar="TABLE",
                   help="also write the table to TABLE: .csv (one row per l1 ratio and alpha: mean, std and "
                        "standard error of the held-out deviance, each fold's, active count, chosen) or .json "
                        "(the same rows, the choice, the refit's coefficients and the folds' weights)")
    p.add_argument("--folds", type=int, default=5,
                   help="folds: row i's fold is a hash of i and --seed (sizes about n / FOLDS); every fold "
                        "is fitted at the alphas of the path on all rows")
    p.add_argument("--seed", type=int, default=0, help="key of the fold assignment and of the sketches' randomness")
    p.add_argument("--l1-ratio", default="1.0", metavar="R1,R2,...",
                   help="L1 share(s) of the penalty alpha to try, each in (0, 1], comma-separated")
    add_grid_args(p)
    p.add_argument("--solver", default="auto", choices=("auto", "prox-newton"),
                   help="the method of every fit (a path is fitted by proximal Newton; auto is the same)")
    p.add_argument("--sketch", default="auto", choices=("auto", *sketch_kinds),
                   help="curvature of A^T diag(D) A (auto: exact when cheap, else leverage sampling)")
    p.add_argument("--sketch-size", type=int, default=None, metavar="N",
                   help="sampled rows / embedding dimension of a named sketch (default: its documented size)")
    p.add_argument("--no-screening", dest="screening", action="store_false",
                   help="sweep every coordinate (the strong rule never changes the solution, only the work)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier file at TABLE")
    add_cluster_args(p)


def _ratios(text: str) -> list[float]:
    try:
        values = [float(r) for r in text.split(",") if r.strip()]
    except ValueError:
        raise InvalidParameterError(f"--l1-ratio takes comma-separated numbers in (0, 1], e.g. 0.5,1; "
                                    f"got {text!r}") from None
    if not values:
        raise InvalidParameterError("--l1-ratio needs at least one number in (0, 1]")
    return values


def _check_out(out: str | None, data: str, overwrite: bool) -> str | None:
    """Refuse an ``--out`` that is not a .csv or .json file that may be written (a new one,
    or an earlier file with ``overwrite``; never the data store or a path inside it)."""
    from dsketch.store import outputs

    if out is None:
        return None
    if not out.endswith(TABLE_SUFFIXES):
        raise OutputPathError(f"--out {out!r} must name a .csv or .json file (the suffix picks the format)")
    outputs.check_output(out, outputs.FILE, overwrite=overwrite, others={"--data": data}, option="--out",
                         make_parents=False)
    return out


def cv_rows(res: Any) -> list[dict[str, Any]]:
    """One row per (l1 ratio, alpha): mean, standard deviation (over folds, ``ddof=1``) and
    standard error of the held-out deviance, each fold's, the active count of the fit on all
    rows at the chosen l1 ratio (None at the others) and whether it is the choice."""
    std = res.deviance.std(axis=0, ddof=1)
    rows = []
    for i, ratio in enumerate(res.l1_ratios):
        active = res.path.n_active if ratio == res.l1_ratio else None
        for j, alpha in enumerate(res.alphas[i]):
            rows.append({"l1_ratio": float(ratio), "alpha": float(alpha),
                         "mean_deviance": float(res.mean_deviance[i, j]), "std_deviance": float(std[i, j]),
                         "se_deviance": float(res.se_deviance[i, j]),
                         **{f"fold_{f}": float(res.deviance[f, i, j]) for f in range(res.n_folds)},
                         "n_active": None if active is None else int(active[j]),
                         "chosen": bool(ratio == res.l1_ratio and alpha == res.alpha)})
    return rows


def _write_table(out: str, res: Any, rows: list[dict[str, Any]]) -> None:
    """The rows as CSV, or as JSON with the choice and the refit; written to a temporary
    file first and renamed, so a reader never sees half a table."""
    base, suffix = os.path.splitext(out)
    tmp = f"{base}.tmp-{os.getpid()}{suffix}"
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            if suffix == ".csv":
                writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
            else:
                json.dump({"l1_ratio": res.l1_ratio, "alpha": res.alpha, "alpha_1se": res.alpha_1se,
                           "n_folds": res.n_folds, "seed": res.seed, "success": bool(res.success),
                           "coef": res.coef.tolist(), "fold_weights": res.fold_weights.tolist(), "rows": rows},
                          fh, indent=1)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _print_table(res: Any, rows: list[dict[str, Any]]) -> None:
    print(f"{'l1_ratio':>8} {'alpha':>12} {'mean dev':>13} {'std dev':>11} {'std err':>11} {'active':>7}")
    for row in rows:
        active = "" if row["n_active"] is None else row["n_active"]
        mark = "  <- chosen" if row["chosen"] else ""
        if row["l1_ratio"] == res.l1_ratio and row["alpha"] == res.alpha_1se and not row["chosen"]:
            mark = "  <- 1-SE"
        print(f"{row['l1_ratio']:8.3g} {row['alpha']:12.4e} {row['mean_deviance']:13.6e} "
              f"{row['std_deviance']:11.4e} {row['se_deviance']:11.4e} {active:>7}{mark}")


def cmd_cv(args: argparse.Namespace, params: dict[str, Any]) -> int:
    """Cross-validate, print one row per (l1 ratio, alpha) and the choice, write the table;
    exit 0 when every fit converged."""
    from dsketch.config import Cluster, Curvature, Solver
    from dsketch.cv import cv_path

    curvature = Curvature(args.sketch, size=args.sketch_size)  # before any output is checked
    solver = Solver(args.solver, tol=args.tol, max_iter=args.max_iter)
    out = _check_out(args.out, args.data, args.overwrite)
    res = cv_path(args.data, args.model, l1_ratio=_ratios(args.l1_ratio), alphas=_alphas(args.alphas),
                  n_alphas=args.n_alphas, eps=args.eps, n_folds=args.folds, seed=args.seed, model_params=params,
                  fit_intercept=args.fit_intercept, curvature=curvature, solver=solver,
                  cluster=Cluster(args.scheduler, n_workers=args.workers), screening=args.screening)
    rows = cv_rows(res)
    _print_table(res, rows)
    if out is not None:
        _write_table(out, res, rows)
    n_fits = res.alphas.size * (res.n_folds + 1)
    print(f"{'all fits converged' if res.success else 'NOT every fit converged'}: chosen l1_ratio "
          f"{res.l1_ratio:g}, alpha {res.alpha:.6e} (1-SE alpha {res.alpha_1se:.6e}), {res.n_folds} folds, "
          f"{n_fits} fits, {res.wall_time:.2f}s" + (f" -> {out}" if out else ""))
    return 0 if res.success else 1
