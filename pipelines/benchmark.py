"""The benchmark against scipy, scikit-learn and dask-ml (issue 4); run from the repository root of a checkout.

Usage::

    python -m pipelines.benchmark [--scale 1.0] [--problems ill-dense,sparse,well-dense,coherent]
        [--repeats 3] [--max-memory-gb 6] [--out results/benchmark]

dask-ml is an optional peer: ``pip install -e '.[bench]'``. See :mod:`benchmarks.bench` for the
problems, solvers and what the table reports.
"""

from benchmarks.bench import main

if __name__ == "__main__":
    raise SystemExit(main())
