"""What a pass over a problem store costs, by codec, and a fit's iteration against it.

For the dense ill-conditioned logistic problem of ``glm_peers`` (``dense_ill``) at d = 100
and d = 500, written once with each codec (zarr's own default Zstandard level 0, Blosc LZ4
with byte shuffle, none), on the driver's threads (what ``dsketch.fit`` runs a store on
when no cluster is given), medians over ``--repeats`` runs:

* the store: bytes of ``A`` stored (over its float64 bytes) and seconds to write it;
* its parts of a pass: reading and decoding every chunk of ``A`` on one thread, and the
  product ``A x`` of the array in memory on one thread (BLAS);
* a bare pass ``A x`` over the engine's blocks (read, multiply, reduce to a scalar),
  streamed from the store, and over blocks held in memory (``persist``);
* a fused Newton iteration (one pass: ``A p``, the trial losses, the next loss, gradient
  and Gram), from a fit's own per-iteration clock, streamed and held, and its ratio to the
  bare streamed pass;
* a whole ``dsketch.fit`` of the store with the defaults (``Cluster()``).

Usage::

    python -m benchmarks.store_passes [--bytes 400e6] [--repeats 3] [--out docs/reproductions/store_passes.md]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
import warnings
from typing import Any
from unittest import mock

import numpy as np
import zarr

import dsketch
from benchmarks.glm_peers import commit, dense_ill
from benchmarks.passes import bare_pass_times
from dsketch.engine.threads import ThreadClient
from dsketch.store import layout

L2 = 1e-8


def codecs() -> dict[str, Any]:
    from zarr.codecs import ZstdCodec

    return {"zstd level 0 (zarr's default)": (ZstdCodec(level=0),),
            "blosc lz4 shuffle (dsketch's default)": layout.default_compressors(),
            "none": ()}


def read_time(path: str) -> float:
    """Seconds to read and decode every chunk of ``A`` on this thread."""
    z = zarr.open_group(path, mode="r")["A"]
    step = z.chunks[0]
    t0 = time.perf_counter()
    for a in range(0, z.shape[0], step):
        z[a:a + step]
    return time.perf_counter() - t0


def blas_time(A: np.ndarray, x: np.ndarray) -> float:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        t0 = time.perf_counter()
        float(np.sum(A @ x))
        return time.perf_counter() - t0


def fit(path: str, cluster: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dsketch.fit(path, "logistic", model_params={"l2": L2}, x0="zeros",
                           solver=dsketch.Solver(tol=1e-10, max_iter=100), cluster=cluster)


def iteration_time(path: str, client: Any, persist: bool) -> float:
    """Median seconds of an iteration of a fit (its own clock; one fused pass each)."""
    res = fit(path, dsketch.Cluster(client, persist=persist))
    return float(np.median(np.diff(np.asarray(res.history["seconds"]))[1:]))


def measure(path: str, A: np.ndarray) -> dict[str, float]:
    """One sample of every timing of the store at ``path`` (``A``: its array in memory)."""
    spec = dsketch.open_problem(path)
    x = np.ones(A.shape[1]) / np.sqrt(A.shape[1])
    out = {"read": read_time(path), "blas": blas_time(A, x)}
    with ThreadClient(os.cpu_count() or 1) as c:
        out["bare"] = bare_pass_times(spec, c, x, 1)[0]
        out["bare held"] = bare_pass_times(spec, c, x, 1, persist=True)[0]
        out["iter"] = iteration_time(path, c, False)
        out["iter held"] = iteration_time(path, c, True)
    t0 = time.perf_counter()
    res = fit(path, None)
    out["fit"], out["passes"] = time.perf_counter() - t0, res.n_passes
    return out


def write(path: str, A: Any, y: np.ndarray, comp: Any) -> float:
    """Seconds to write the problem ``(A, y)`` at ``path`` with the codec ``comp``."""
    with mock.patch.object(layout, "default_compressors", lambda: comp):
        t0 = time.perf_counter()
        dsketch.write_problem(path, A, y)
        return time.perf_counter() - t0


def dense_written(path: str, A: np.ndarray, y: np.ndarray, comp: Any) -> dict[str, float]:
    seconds = write(path, A, y, comp)
    return {"write": seconds, "ratio": zarr.open_group(path, mode="r")["A"].nbytes_stored() / A.nbytes}


def run(d: int, n_bytes: float, repeats: int, tmp: str) -> list[tuple[str, int, int, dict[str, float]]]:
    """Every codec's store of the problem at ``d``, timed in ``repeats`` rounds (each round
    every codec once, the order rotated, so that the machine's other work falls on all);
    the medians."""
    n = int(n_bytes / (8 * d))
    A, y = dense_ill(n, d)
    names = list(codecs())
    paths = {name: os.path.join(tmp, f"d{d}_{i}.zarr") for i, name in enumerate(names)}
    stored = {name: dense_written(paths[name], A, y, comp) for name, comp in codecs().items()}
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            samples[name].append(measure(paths[name], A))
            print(d, name, {k: round(v, 3) for k, v in samples[name][-1].items()}, flush=True)
    return [(name, n, d, {**stored[name], **{k: statistics.median(s[k] for s in samples[name])
                                             for k in samples[name][0]}}) for name in names]


def sparse_table(n: int, d: int, repeats: int, tmp: str) -> str:
    """Bytes stored and seconds to read and decode the CSR arrays of ``glm_peers``'
    ``sparse_well`` problem (1% density) with each codec."""
    from benchmarks.glm_peers import sparse_well

    A, y = sparse_well(n, d)
    raw = A.data.nbytes + A.indices.nbytes + A.indptr.nbytes
    lines = [f"CSR {n:,} × {d}, 1%: data, indices and indptr", "",
             "| codec | stored / raw | read+decode s (1 thread) |", "|---|---:|---:|"]
    for i, (name, comp) in enumerate(codecs().items()):
        path = os.path.join(tmp, f"sparse_{i}.zarr")
        write(path, A, y, comp)
        g = zarr.open_group(path, mode="r")["A"]
        stored = sum(g[k].nbytes_stored() for k in ("data", "indices", "indptr"))
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for k in ("data", "indices", "indptr"):
                g[k][...]
            times.append(time.perf_counter() - t0)
        lines.append(f"| {name} | {stored / raw:.3f} | {statistics.median(times):.3f} |")
    return "\n".join(lines)


def table(rows: list[tuple[str, int, int, dict[str, float]]]) -> str:
    head = ("| codec | n × d | stored / raw | write s | read+decode s (1 thread) | A·x in memory s (1 thread) "
            "| bare pass s streamed | bare pass s held | fused iteration s streamed | iteration / bare pass "
            "| fused iteration s held | held iteration / bare streamed pass | fit s (defaults) | passes |")
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, n, d, o in rows:
        lines.append(f"| {name} | {n:,} × {d} | {o['ratio']:.3f} | {o['write']:.2f} | {o['read']:.3f} | "
                     f"{o['blas']:.3f} | {o['bare']:.3f} | {o['bare held']:.3f} | {o['iter']:.3f} | "
                     f"{o['iter'] / o['bare']:.2f} | {o['iter held']:.3f} | {o['iter held'] / o['bare']:.2f} | "
                     f"{o['fit']:.2f} | {int(o['passes'])} |")
    return "\n".join(lines)


def publish(md: str, out: str) -> None:
    """Print a report and write it to ``out`` (its folder made as needed)."""
    print(md)
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w") as fh:
        fh.write(md)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--bytes", type=float, default=400e6, help="float64 bytes of A for each d")
    ap.add_argument("--features", type=int, nargs="*", default=[100, 500], help="dense problems' d (none: skip)")
    ap.add_argument("--sparse", type=int, nargs=2, default=None, metavar=("N", "D"),
                    help="also the stored bytes and read time of a sparse problem's CSR arrays")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=os.path.join("docs", "reproductions", "store_passes.md"))
    args = ap.parse_args(argv)
    rows, sparse = [], ""
    with tempfile.TemporaryDirectory() as tmp:
        for d in args.features:
            rows += run(d, args.bytes, args.repeats, tmp)
        if args.sparse:
            sparse = "\n\n" + sparse_table(*args.sparse, args.repeats, tmp)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cmd = "python -m benchmarks.store_passes " + " ".join(argv if argv is not None else sys.argv[1:])
    md = (f"# What a pass over a store costs, by codec\n\nDate: {now}. Commit: `{commit()}`. Machine: "
          f"{os.cpu_count()} cores. Command: `{cmd.strip()}`. Medians of {args.repeats} runs. Problem: "
          f"glm_peers' dense ill-conditioned logistic (l2 = {L2:g}), on the driver's threads.\n\n{table(rows) if rows else ''}{sparse}\n")
    publish(md, args.out)


if __name__ == "__main__":
    main()
