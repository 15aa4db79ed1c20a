"""The ``dsketch`` parser's full option set, frozen: every subcommand's option strings, dest,
action, default, type, choices, required, metavar, nargs and help.

``EXPECTED`` was printed once from the parser as it was before ``build_parser`` was split into
one function per subcommand (commit a333c5b) and is kept here as a literal, so the test does not
depend on the code it checks. A deliberate change of an option updates the literal in the same
commit (print the new value with ``_listing()``).
"""

from __future__ import annotations

import argparse
from typing import Any

from dsketch.cli import build_parser


def _describe(parser: argparse.ArgumentParser) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            rows.append(("<subcommands>", a.dest, a.required, a.metavar))
            continue
        rows.append((tuple(a.option_strings), a.dest, type(a).__name__, repr(a.default),
                     getattr(a.type, "__name__", repr(a.type)), None if a.choices is None else tuple(a.choices),
                     a.required, a.metavar, a.nargs, a.help))
    return rows


def _listing() -> dict[str, tuple[Any, ...]]:
    parser = build_parser()
    out: dict[str, tuple[Any, ...]] = {
        "": (parser.prog, parser.description, parser.formatter_class.__name__, _describe(parser))}
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in sub._choices_actions}
    for name, p in sub.choices.items():
        out[name] = (helps.get(name), p.formatter_class.__name__, _describe(p))
    return out


def test_parser_options_are_the_frozen_listing():
    got = _listing()
    assert list(got) == list(EXPECTED)  # the subcommands, in the order of --help
    for name, want in EXPECTED.items():
        assert got[name] == want, name


EXPECTED = {
    '': (
        'dsketch',
        'Distributed sketched Newton methods on Zarr stores with Dask.',
        '_HelpFormatter',
        [
            (('-h', '--help'), 'help', '_HelpAction', "'==SUPPRESS=='", 'None', None, False, None, 0,
             'show this help message and exit'),
            (('--quiet',), 'quiet', '_StoreTrueAction', 'False', 'None', None, False, None, 0,
             'only warnings and errors'),
            ('<subcommands>', 'command', True, 'COMMAND'),
        ],
    ),
    'make-data': (
        'write a synthetic problem with a planted solution',
        '_HelpFormatter',
        [
            (('-h', '--help'), 'help', '_HelpAction', "'==SUPPRESS=='", 'None', None, False, None, 0,
             'show this help message and exit'),
            (('--quiet',), 'quiet', '_StoreTrueAction', "'==SUPPRESS=='", 'None', None, False, None, 0,
             'only warnings and errors'),
            ((), 'out', '_StoreAction', 'None', 'None', None, True, None, None,
             'target problem store (Zarr directory)'),
            (('--model',), 'model', '_StoreAction', 'None', 'None', None, True, None, None,
             'model whose targets are generated'),
            (('--n-samples',), 'n_samples', '_StoreAction', 'None', 'int', None, True, None, None,
             'rows of A'),
            (('--n-features',), 'n_features', '_StoreAction', 'None', 'int', None, True, None, None,
             'columns of A'),
            (('--density',), 'density', '_StoreAction', 'None', 'float', None, False, None, None,
             'non-zero fraction (sparse CSR store); dense if omitted'),
            (('--seed',), 'seed', '_StoreAction', '0', 'int', None, False, None, None,
             'seed of the data and the planted solution'),
            (('--regime',), 'regime', '_StoreAction', "'weak'", 'None', ('weak', 'strong'), False, None, None,
             'row weights w for softmax-type models'),
            (('--noise',), 'noise', '_StoreAction', '0.05', 'float', None, False, None, None,
             'standard deviation of the Gaussian noise added to the targets (models with real targets)'),
            (('--param',), 'param', '_AppendAction', 'None', 'None', None, False, 'KEY=VALUE', None,
             'model parameter (repeatable)'),
            (('--outputs',), 'outputs', '_StoreAction', '8', 'int', None, False, None, None,
             'm, the number of targets of the paired models two-layer and softmax-relu reading C'),
            (('--solve',), 'solve', '_StoreTrueAction', 'False', 'None', None, False, None, 0,
             'also compute the optimum x* (exact Newton, tol 1e-12) and record it in the metadata'),
            (('--overwrite',), 'overwrite', '_StoreTrueAction', 'False', 'None', None, False, None, 0,
             'replace an earlier problem store at OUT'),
            (('--scheduler',), 'scheduler', '_StoreAction', 'None', 'None', None, False, 'ADDRESS', None,
             'join a running Dask scheduler (tcp://host:port); default: $DSKETCH_SCHEDULER, else an '
             'embedded local cluster on 127.0.0.1'),
            (('--workers',), 'workers', '_StoreAction', '2', 'int', None, False, None, None,
             'worker processes of the embedded cluster'),
            (('--connect-timeout',), 'connect_timeout', '_StoreAction', 'None', 'float',
             None, False, 'SECONDS', None,
             'give up joining the scheduler after SECONDS (default: dask config '
             'distributed.comm.timeouts.connect, 30 s)'),
            (('--tls-ca-file',), 'tls_ca_file', '_StoreAction', 'None', 'None', None, False, 'PEM', None,
             'CA certificate of a tls:// scheduler (default: dask config '
             'distributed.comm.tls.ca-file, e.g. $DASK_DISTRIBUTED__COMM__TLS__CA_FILE)'),
            (('--tls-cert',), 'tls_cert', '_StoreAction', 'None', 'None', None, False, 'PEM', None,
             'client certificate signed by that CA (default: distributed.comm.tls.client.cert)'),
            (('--tls-key',), 'tls_key', '_StoreAction', 'None', 'None', None, False, 'PEM', None,
             'key of the client certificate (default: distributed.comm.tls.client.key)'),
        ],
    ),
    'convert': (
        'convert .npy / .npz / svmlight / AnnData .zarr into a problem store',
        '_HelpFormatter',
        [
            (('-h', '--help'), 'help', '_HelpAction', "'==SUPPRESS=='", 'None', None, False, None, 0,
             'show this help message and exit'),
            (('--quiet',), 'quiet', '_StoreTrueAction', "'==SUPPRESS=='", 'None', None, False, None, 0,
             'only warnings and errors'),
            ((), 'source', '_StoreAction', 'None', 'None', None, True, None, None,
             'input file or AnnData store (A for .npy; A and b for .npz)'),
            ((), 'out', '_StoreAction', 'None', 'None', None, True, None, None,
             'target problem store (Zarr directory)'),
            (('--format',), 'fmt', '_StoreAction', 'None', 'None',
             ('npy', 'npz', 'svmlight', 'anndata'), False, None, None,
             'format of SOURCE (default: from its file name)'),
            (('--target',), 'target', '_StoreAction', 'None', 'None', None, False, None, None,
             '.npy file with b (for .npy / .npz sources)'),
            (('--weights',), 'weights', '_StoreAction', 'None', 'None', None, False, None, None,
             ".npy file (or AnnData obs column) with the softmax-type models' regularisation weights "
             'w (not sample weights: the GLMs refuse a store with w)'),
            (('--sample-weight',), 'sample_weight', '_StoreAction', 'None', 'None',
             None, False, 'NPY_OR_COLUMN', None,
             "the GLMs' sample weights (>= 0; scikit-learn's meaning), stored as 'sample_weight'"),
            (('--offset',), 'offset', '_StoreAction', 'None', 'None', None, False, 'NPY_OR_COLUMN', None,
             "the GLMs' offsets (eta = A x + offset, e.g. log exposure), stored as 'offset'"),
            (('--obs-column',), 'obs_column', '_StoreAction', 'None', 'None', None, False, None, None,
             'AnnData obs column used as b'),
            (('--layer',), 'layer', '_StoreAction', 'None', 'None', None, False, None, None,
             'AnnData layer instead of X'),
            (('--overwrite',), 'overwrite', '_StoreTrueAction', 'False', 'None', None, False, None, 0,
             'replace an earlier problem store at OUT'),
        ],
    ),
    'info': (
        'describe a problem store, a result store or a prediction store',
        '_HelpFormatter',
        [
            (('-h', '--help'), 'help', '_HelpAction', "'==SUPPRESS=='", 'None', None, False, None, 0,
             'show this help message and exit'),
            (('--quiet',), 'quiet', '_StoreTrueAction', "'==SUPPRESS=='", 'None', None, False, None, 0,
             'only warnings and errors'),
            ((), 'store', '_StoreAction', 'None', 'None', None, True, None, None,
             'the store to describe'),
            (('--check',), 'check', '_StoreTrueAction', 'False', 'None', None, False, None, 0,
             'full validation: finite values, sorted in-range indices'),
            (('--json',), 'json', '_StoreTrueAction', 'False', 'None', None, False, None, 0,
             'print JSON'),
        ],
    ),
    'fit': (
        'fit a model to a problem store',
        '_HelpFormatter',
        [
            (('-h', '--help'), 'help', '_HelpAction', "'==SUPPRESS=='", 'None', None, False, None, 0,
             'show this help message and exit'),
            (('--quiet',), 'quiet', '_StoreTrueAction', "'==SUPPRESS=='", 'None', None, False, None, 0,
             'only warnings and errors'),
            (('--model',), 'model', '_StoreAction', 'None', 'None', None, True, None, None,
             'softmax, resnet-softmax, softmax-relu (--param reading=A|B|C), two-layer (--param '
             'h=tanh|softplus|sigmoid|identity), exp, cosh, sinh, logistic, multinomial (labels '
             '0..K-1; --param n_classes=K, default from the labels; Newton-CG), poisson, '
             'least-squares, gamma, inverse-gaussian, tweedie (--param power=P: 0, 1, 1<P<2, 2, >2), '
             'negative-binomial (--param theta=, default 1), glm (--param '
             'family=normal|binomial|poisson|gamma|inverse.gaussian|tweedie|negative.binomial, '
             'link=identity|log|logit, power=, theta=), or ggn-score (two-layer network; --param '
             'hidden=, activation=, target=, epochs=, batch_size=, tau=, mu=, nu=, alpha=, '
             'scale_hessian_by_tau=, smoother=pseudo-huber|ostrovskii-bach; --sketch-size S: '
             'full-data GGN with S sampled rows)'),
            (('--data',), 'data', '_StoreAction', 'None', 'None', None, True, 'STORE', None,
             'problem store to fit'),
            (('--out',), 'out', '_StoreAction', 'None', 'None', None, True, 'RESULT', None,
             'result store (read with dsketch.load_result)'),
            (('--fit-intercept',), 'fit_intercept', '_StoreTrueAction', 'False', 'None', None, False, None, 0,
             'GLMs: an unpenalised intercept, the last coefficient (the store is not copied)'),
            (('--solver',), 'solver', '_StoreAction', "'auto'", 'None',
             ('auto', 'newton', 'newton-cg', 'lbfgs', 'gd', 'prox-newton'), False, None, None,
             'auto: L-BFGS while the gradient contracts fast, then (sketched) Newton (Newton from the'
             ' start for the softmax-type models or a named --sketch); newton: (sketched) Newton; '
             'newton-cg: exact Newton by conjugate gradients preconditioned by the sketch; lbfgs: '
             'L-BFGS only; gd: gradient-descent baseline; prox-newton: proximal Newton, what auto is '
             'with --l1 (the only method for an L1 term)'),
            (('--sketch',), 'sketch', '_StoreAction', "'auto'", 'None',
             ('auto', 'exact', 'uniform', 'rownorm', 'leverage', 'countsketch', 'gaussian'), False, None, None,
             'curvature of A^T diag(D) A (auto: exact when cheap, else leverage sampling; exact: exact Newton)'),
            (('--adaptive-sketch', '--no-adaptive-sketch'), 'adaptive_sketch', 'BooleanOptionalAction', 'None', 'None',
             None, False, None, 0,
             'grow/shrink the sketch size when steps miss/meet their predicted decrease (default: on '
             'for a sketch chosen by auto or named without --sketch-size)'),
            (('--sketch-size',), 'sketch_size', '_StoreAction', 'None', 'int', None, False, 'N', None,
             'sampled rows / embedding dimension of the sketch, the start when adaptive (default: 100'
             " rows per feature when adaptive, else the size of the sketch's (1 +- 0.5) guarantee); "
             'not with --sketch exact or --solver gd'),
            (('--seed',), 'seed', '_StoreAction', '0', 'int', None, False, None, None,
             "key of the sketches' counter-based randomness"),
            (('--tol',), 'tol', '_StoreAction', '1e-08', 'float', None, False, None, None,
             'stop when |grad| <= TOL * |grad_0|'),
            (('--max-iter',), 'max_iter', '_StoreAction', '50', 'int', None, False, None, None,
             'most iterations'),
            (('--ftol',), 'ftol', '_StoreAction', 'None', 'float', None, False, None, None,
             'also stop when a step decreases the loss by at most FTOL relative to it (default: 1e-12'
             ' for the non-smooth softmax-relu, off otherwise)'),
            (('--param',), 'param', '_AppendAction', 'None', 'None', None, False, 'KEY=VALUE', None,
             'model parameter, e.g. l2=1e-3 (repeatable)'),
            (('--l1',), 'l1', '_StoreAction', 'None', 'float', None, False, 'VALUE', None,
             'GLMs: L1 strength, adding VALUE * |x|_1 over the coefficients but the intercept (fitted'
             ' by proximal Newton; the same as --param l1=VALUE; default: none)'),
            (('--block-rows',), 'block_rows', '_StoreAction', 'None', 'int', None, False, None, None,
             "rows per block (default: from the store's shape, about 64 MiB a block)"),
            (('--persist',), 'persist', '_StoreTrueAction', 'False', 'None', None, False, None, 0,
             'keep row blocks in cluster memory'),
            (('--no-memory-check',), 'memory_check', '_StoreFalseAction', 'True', 'None', None, False, None, 0,
             "skip the up-front estimate of the driver's and the workers' memory (a fit that does not"
             ' fit is otherwise refused before its first pass)'),
            (('--no-fused',), 'fused', '_StoreFalseAction', 'True', 'None', None, False, None, 0,
             'GLMs: two passes per iteration instead of one fused pass (A p, trial losses and the '
             'next curvature together)'),
            (('--plot',), 'plot', '_StoreAction', 'None', 'None', None, False, 'PNG', None,
             'write a convergence plot'),
            (('--overwrite',), 'overwrite', '_StoreTrueAction', 'False', 'None', None, False, None, 0,
             'replace an earlier result store at RESULT'),
            (('--resume',), 'resume', '_StoreTrueAction', 'False', 'None', None, False, None, 0,
             'continue an interrupted fit from RESULT.checkpoint (written after every iteration)'),
            (('--cov-type',), 'cov_type', '_StoreAction', 'None', 'None', None, False, 'TYPE', None,
             'GLMs: standard errors after the fit, one more pass over A: nonrobust, HC0, HC1 or '
             'cluster (with --groups); the table is printed and stored in the result'),
            (('--groups',), 'groups', '_StoreAction', 'None', 'None', None, False, 'MEMBER', None,
             'row-aligned integer member of the store with the cluster ids (--cov-type cluster)'),
            (('--alpha',), 'alpha', '_StoreAction', '0.05', 'float', None, False, None, None,
             'confidence intervals of level 1 - ALPHA (default 0.05)'),
            (('--scheduler',), 'scheduler', '_StoreAction', 'None', 'None', None, False, 'ADDRESS', None,
             'join a running Dask scheduler (tcp://host:port); default: $DSKETCH_SCHEDULER, else an '
             'embedded local cluster on 127.0.0.1'),
            (('--workers',), 'workers', '_StoreAction', '2', 'int', None, False, None, None,
             'worker processes of the embedded cluster'),
            (('--connect-timeout',), 'connect_timeout', '_StoreAction', 'None', 'float',
             None, False, 'SECONDS', None,
             'give up joining the scheduler after SECONDS (default: dask config '
             'distributed.comm.timeouts.connect, 30 s)'),
            (('--tls-ca-file',), 'tls_ca_file', '_StoreAction', 'None', 'None', None, False, 'PEM', None,
             'CA certificate of a tls:// scheduler (default: dask config '
             'distributed.comm.tls.ca-file, e.g. $DASK_DISTRIBUTED__COMM__TLS__CA_FILE)'),
            (('--tls-cert',), 'tls_cert', '_StoreAction', 'None', 'None', None, False, 'PEM', None,
             'client certificate signed by that CA (default: distributed.comm.tls.client.cert)'),
            (('--tls-key',), 'tls_key', '_StoreAction', 'None', 'None', None, False, 'PEM', None,
             'key of the client certificate (default: distributed.comm.tls.client.key)'),
        ],
    ),
    'path': (
        'elastic-net regularisation path of a GLM: one proximal-Newton fit per alpha, warm-started',
        '_HelpFormatter',
        [
            (('-h', '--help'), 'help', '_HelpAction', "'==SUPPRESS=='", 'None', None, False, None, 0,
             'show this help message and exit'),
            (('--quiet',), 'quiet', '_StoreTrueAction', "'==SUPPRESS=='", 'None', None, False, None, 0,
             'only warnings and errors'),
            (('--model',), 'model', '_StoreAction', 'None', 'None', None, True, None, None,
             'a GLM: logistic, poisson, least-squares, gamma, inverse-gaussian, tweedie, '
             'negative-binomial or glm (--param family=..., link=...)'),
            (('--data',), 'data', '_StoreAction', 'None', 'None', None, True, 'STORE', None,
             'problem store to fit'),
            (('--out',), 'out', '_StoreAction', 'None', 'None', None, True, 'NPZ', None,
             'NumPy .npz file to write: alphas, coef, n_iter, n_passes, n_active, alpha_max, l1_ratio'
             ' (coef: one row per alpha, the intercept last)'),
            (('--l1-ratio',), 'l1_ratio', '_StoreAction', '1.0', 'float', None, False, None, None,
             'L1 share of the penalty alpha (l1_ratio |x|_1 + (1 - l1_ratio) |x|^2 / 2), in (0, 1]'),
            (('--alphas',), 'alphas', '_StoreAction', 'None', 'None', None, False, 'A1,A2,...', None,
             'comma-separated alphas (default: --n-alphas from alpha_max, where every coefficient is '
             '0, down to --eps times it)'),
            (('--n-alphas',), 'n_alphas', '_StoreAction', '20', 'int', None, False, None, None,
             'alphas of the default grid'),
            (('--eps',), 'eps', '_StoreAction', '0.001', 'float', None, False, None, None,
             'smallest alpha of the default grid over alpha_max'),
            (('--fit-intercept',), 'fit_intercept', '_StoreTrueAction', 'False', 'None', None, False, None, 0,
             'an unpenalised intercept, the last coefficient'),
            (('--param',), 'param', '_AppendAction', 'None', 'None', None, False, 'KEY=VALUE', None,
             'other model parameters, e.g. power=1.5 (not l1 or l2: the path sets them)'),
            (('--tol',), 'tol', '_StoreAction', '1e-08', 'float', None, False, None, None,
             'each fit stops when its KKT measure <= TOL times its start'),
            (('--max-iter',), 'max_iter', '_StoreAction', '50', 'int', None, False, None, None,
             'most proximal-Newton iterations of each fit'),
            (('--seed',), 'seed', '_StoreAction', '0', 'int', None, False, None, None,
             "key of the sketches' counter-based randomness"),
            (('--no-screening',), 'screening', '_StoreFalseAction', 'True', 'None', None, False, None, 0,
             'sweep every coordinate (the strong rule never changes the solution, only the work)'),
            (('--overwrite',), 'overwrite', '_StoreTrueAction', 'False', 'None', None, False, None, 0,
             'replace an earlier file at NPZ'),
            (('--scheduler',), 'scheduler', '_StoreAction', 'None', 'None', None, False, 'ADDRESS', None,
             'join a running Dask scheduler (tcp://host:port); default: $DSKETCH_SCHEDULER, else an '
             'embedded local cluster on 127.0.0.1'),
            (('--workers',), 'workers', '_StoreAction', '2', 'int', None, False, None, None,
             'worker processes of the embedded cluster'),
            (('--connect-timeout',), 'connect_timeout', '_StoreAction', 'None', 'float',
             None, False, 'SECONDS', None,
             'give up joining the scheduler after SECONDS (default: dask config '
             'distributed.comm.timeouts.connect, 30 s)'),
            (('--tls-ca-file',), 'tls_ca_file', '_StoreAction', 'None', 'None', None, False, 'PEM', None,
             'CA certificate of a tls:// scheduler (default: dask config '
             'distributed.comm.tls.ca-file, e.g. $DASK_DISTRIBUTED__COMM__TLS__CA_FILE)'),
            (('--tls-cert',), 'tls_cert', '_StoreAction', 'None', 'None', None, False, 'PEM', None,
             'client certificate signed by that CA (default: distributed.comm.tls.client.cert)'),
            (('--tls-key',), 'tls_key', '_StoreAction', 'None', 'None', None, False, 'PEM', None,
             'key of the client certificate (default: distributed.comm.tls.client.key)'),
        ],
    ),
    'summary': (
        'coefficient table (standard errors, z, p-values) of a GLM result',
        '_HelpFormatter',
        [
            (('-h', '--help'), 'help', '_HelpAction', "'==SUPPRESS=='", 'None', None, False, None, 0,
             'show this help message and exit'),
            (('--quiet',), 'quiet', '_StoreTrueAction', "'==SUPPRESS=='", 'None', None, False, None, 0,
             'only warnings and errors'),
            (('--result',), 'result', '_StoreAction', 'None', 'None', None, True, 'RESULT', None,
             "result store of 'dsketch fit'"),
            (('--data',), 'data', '_StoreAction', 'None', 'None', None, False, 'STORE', None,
             'the store the model was fitted to (default: the one the result records)'),
            (('--block-rows',), 'block_rows', '_StoreAction', 'None', 'int', None, False, None, None,
             'rows per streamed block'),
            (('--save',), 'save', '_StoreTrueAction', 'False', 'None', None, False, None, 0,
             'store the computed table in RESULT'),
            (('--cov-type',), 'cov_type', '_StoreAction', 'None', 'None', None, False, 'TYPE', None,
             'GLMs: standard errors after the fit, one more pass over A: nonrobust, HC0, HC1 or '
             'cluster (with --groups); the table is printed and stored in the result'),
            (('--groups',), 'groups', '_StoreAction', 'None', 'None', None, False, 'MEMBER', None,
             'row-aligned integer member of the store with the cluster ids (--cov-type cluster)'),
            (('--alpha',), 'alpha', '_StoreAction', '0.05', 'float', None, False, None, None,
             'confidence intervals of level 1 - ALPHA (default 0.05)'),
            (('--scheduler',), 'scheduler', '_StoreAction', 'None', 'None', None, False, 'ADDRESS', None,
             'join a running Dask scheduler (tcp://host:port); default: $DSKETCH_SCHEDULER, else an '
             'embedded local cluster on 127.0.0.1'),
            (('--workers',), 'workers', '_StoreAction', '2', 'int', None, False, None, None,
             'worker processes of the embedded cluster'),
            (('--connect-timeout',), 'connect_timeout', '_StoreAction', 'None', 'float',
             None, False, 'SECONDS', None,
             'give up joining the scheduler after SECONDS (default: dask config '
             'distributed.comm.timeouts.connect, 30 s)'),
            (('--tls-ca-file',), 'tls_ca_file', '_StoreAction', 'None', 'None', None, False, 'PEM', None,
             'CA certificate of a tls:// scheduler (default: dask config '
             'distributed.comm.tls.ca-file, e.g. $DASK_DISTRIBUTED__COMM__TLS__CA_FILE)'),
            (('--tls-cert',), 'tls_cert', '_StoreAction', 'None', 'None', None, False, 'PEM', None,
             'client certificate signed by that CA (default: distributed.comm.tls.client.cert)'),
            (('--tls-key',), 'tls_key', '_StoreAction', 'None', 'None', None, False, 'PEM', None,
             'key of the client certificate (default: distributed.comm.tls.client.key)'),
        ],
    ),
    'predict': (
        "a fitted GLM's linear predictor and mean for every row of a problem store",
        '_HelpFormatter',
        [
            (('-h', '--help'), 'help', '_HelpAction', "'==SUPPRESS=='", 'None', None, False, None, 0,
             'show this help message and exit'),
            (('--quiet',), 'quiet', '_StoreTrueAction', "'==SUPPRESS=='", 'None', None, False, None, 0,
             'only warnings and errors'),
            (('--result',), 'result', '_StoreAction', 'None', 'None', None, True, 'RESULT', None,
             "result store of 'dsketch fit' (a GLM)"),
            (('--data',), 'data', '_StoreAction', 'None', 'None', None, True, 'STORE', None,
             "problem store with the fitted columns (its 'offset' member is added when present)"),
            (('--out',), 'out', '_StoreAction', 'None', 'None', None, True, 'PRED', None,
             "prediction store to write: row-aligned arrays 'eta' and 'mean'"),
            (('--block-rows',), 'block_rows', '_StoreAction', 'None', 'int', None, False, None, None,
             'rows per task, rounded up to whole row chunks of the store (default: from its shape)'),
            (('--overwrite',), 'overwrite', '_StoreTrueAction', 'False', 'None', None, False, None, 0,
             'replace an earlier prediction store at PRED'),
            (('--scheduler',), 'scheduler', '_StoreAction', 'None', 'None', None, False, 'ADDRESS', None,
             'join a running Dask scheduler (tcp://host:port); default: $DSKETCH_SCHEDULER, else an '
             'embedded local cluster on 127.0.0.1'),
            (('--workers',), 'workers', '_StoreAction', '2', 'int', None, False, None, None,
             'worker processes of the embedded cluster'),
            (('--connect-timeout',), 'connect_timeout', '_StoreAction', 'None', 'float',
             None, False, 'SECONDS', None,
             'give up joining the scheduler after SECONDS (default: dask config '
             'distributed.comm.timeouts.connect, 30 s)'),
            (('--tls-ca-file',), 'tls_ca_file', '_StoreAction', 'None', 'None', None, False, 'PEM', None,
             'CA certificate of a tls:// scheduler (default: dask config '
             'distributed.comm.tls.ca-file, e.g. $DASK_DISTRIBUTED__COMM__TLS__CA_FILE)'),
            (('--tls-cert',), 'tls_cert', '_StoreAction', 'None', 'None', None, False, 'PEM', None,
             'client certificate signed by that CA (default: distributed.comm.tls.client.cert)'),
            (('--tls-key',), 'tls_key', '_StoreAction', 'None', 'None', None, False, 'PEM', None,
             'key of the client certificate (default: distributed.comm.tls.client.key)'),
        ],
    ),
    'demo': (
        'make a 2M-row sparse problem and fit softmax and logistic regression',
        '_HelpFormatter',
        [
            (('-h', '--help'), 'help', '_HelpAction', "'==SUPPRESS=='", 'None', None, False, None, 0,
             'show this help message and exit'),
            (('--quiet',), 'quiet', '_StoreTrueAction', "'==SUPPRESS=='", 'None', None, False, None, 0,
             'only warnings and errors'),
            (('--out',), 'out', '_StoreAction', 'None', 'None', None, True, 'DIR', None,
             'directory of the stores, results, plot and report'),
            (('--n-samples',), 'n_samples', '_StoreAction', '2000000', 'int', None, False, None, None,
             'rows of each problem'),
            (('--n-features',), 'n_features', '_StoreAction', '200', 'int', None, False, None, None,
             'columns of each problem'),
            (('--density',), 'density', '_StoreAction', '0.01', 'float', None, False, None, None,
             'non-zero fraction of A'),
            (('--sketch',), 'sketch', '_StoreAction', "'leverage'", 'None',
             ('exact', 'uniform', 'rownorm', 'leverage', 'countsketch', 'gaussian'), False, None, None,
             'curvature of both fits (the demo shows a sketch at a fixed size)'),
            (('--sketch-size',), 'sketch_size', '_StoreAction', 'None', 'int', None, False, 'N', None,
             "sketch size (default: the size of the sketch's (1 +- 0.5) guarantee); not with --sketch exact"),
            (('--seed',), 'seed', '_StoreAction', '0', 'int', None, False, None, None,
             'seed of the data and the sketches'),
            (('--overwrite',), 'overwrite', '_StoreTrueAction', 'False', 'None', None, False, None, 0,
             "write into a non-empty DIR that holds more than an earlier demo's outputs (only the "
             "demo's own stores, results, plot and report are replaced)"),
            (('--scheduler',), 'scheduler', '_StoreAction', 'None', 'None', None, False, 'ADDRESS', None,
             'join a running Dask scheduler (tcp://host:port); default: $DSKETCH_SCHEDULER, else an '
             'embedded local cluster on 127.0.0.1'),
            (('--workers',), 'workers', '_StoreAction', '2', 'int', None, False, None, None,
             'worker processes of the embedded cluster'),
            (('--connect-timeout',), 'connect_timeout', '_StoreAction', 'None', 'float',
             None, False, 'SECONDS', None,
             'give up joining the scheduler after SECONDS (default: dask config '
             'distributed.comm.timeouts.connect, 30 s)'),
            (('--tls-ca-file',), 'tls_ca_file', '_StoreAction', 'None', 'None', None, False, 'PEM', None,
             'CA certificate of a tls:// scheduler (default: dask config '
             'distributed.comm.tls.ca-file, e.g. $DASK_DISTRIBUTED__COMM__TLS__CA_FILE)'),
            (('--tls-cert',), 'tls_cert', '_StoreAction', 'None', 'None', None, False, 'PEM', None,
             'client certificate signed by that CA (default: distributed.comm.tls.client.cert)'),
            (('--tls-key',), 'tls_key', '_StoreAction', 'None', 'None', None, False, 'PEM', None,
             'key of the client certificate (default: distributed.comm.tls.client.key)'),
        ],
    ),
}
