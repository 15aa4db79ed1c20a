"""The benchmark against the solvers a user would pick instead, and its problem generators;
not installed with dsketch: run from the repository root as ``python -m benchmarks.bench``."""
