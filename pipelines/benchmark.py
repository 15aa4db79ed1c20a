"""The benchmark against scipy, scikit-learn and dask-ml (issue 4); same as ``dsketch bench``.

Usage::

    python pipelines/benchmark.py [--scale 1.0] [--problems ill-dense,sparse,well-dense,coherent]
        [--repeats 3] [--max-memory-gb 6] [--out results/benchmark]

dask-ml is an optional peer: ``pip install -e '.[bench]'``. See :mod:`dsketch.bench` for the
problems, solvers and what the table reports.
"""

from dsketch.bench import main

if __name__ == "__main__":
    raise SystemExit(main())
