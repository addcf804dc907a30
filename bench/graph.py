"""Benchmark the graph stage at full market scale on random factor-model returns.

    .venv/bin/python bench/graph.py                      # 4,000 stocks x 2,450 dates, CPU
    .venv/bin/python bench/graph.py --device gpu         # the same on CuPy
    .venv/bin/python bench/graph.py --dates 245          # a tenth of the dates

Returns: a market factor, 33 sector factors and idiosyncratic noise with stock-specific loadings (daily vol
~2%), 1% missing values, 5% of stocks listed part-way. Prints one JSON line: wall seconds until the
correlation and the metrics stage finished (they overlap on CPU), the CPU seconds of each stage's thread (on
GPU both run in the caller's thread), total wall and CPU seconds, peak RSS, the 1-minute load average at the
end (the box is shared), nodes and edges.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

# `python bench/graph.py` puts bench/ first on sys.path, where bench/etl.py would shadow the etl package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn  # noqa: E402

from etl.backend import resolve_backend  # noqa: E402
from etl.config import GraphConfig  # noqa: E402
from etl.graph.build import build_graphs  # noqa: E402


def factor_returns(t_len: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """[T, N] returns (NaN = missing) and the universe row mask."""
    rng = np.random.default_rng(seed)
    sector = rng.integers(0, 33, size=n)
    market = rng.standard_normal((t_len, 1)).astype(np.float32) * 0.01
    sectors = rng.standard_normal((t_len, 33)).astype(np.float32) * 0.008
    beta = rng.uniform(0.3, 1.5, size=n).astype(np.float32)
    gamma = rng.uniform(0.2, 1.2, size=n).astype(np.float32)
    r = market * beta + sectors[:, sector] * gamma
    r += rng.standard_normal((t_len, n), dtype=np.float32) * 0.015
    r[rng.random((t_len, n), dtype=np.float32) < 0.01] = np.nan
    rows = np.ones((t_len, n), dtype=bool)
    late = rng.choice(n, size=n // 20, replace=False)
    start = rng.integers(0, t_len, size=late.size)
    rows[:, late] = np.arange(t_len)[:, None] >= start[None, :]
    r[~rows] = np.nan
    return r.astype(np.float64), rows


def compare(build: object, n_dates: int) -> dict[str, float]:
    """Seconds per date on the last `n_dates` dates (same graphs as the build, run after it):
    the stage's metrics vs NetworkX computing the same 16 metrics, and closeness distance sums by the bitset
    BFS vs SciPy's `shortest_path` (C, one BFS per source)."""
    import networkx as nx
    import scipy.sparse as sp
    from scipy.sparse.csgraph import shortest_path

    from etl.graph.metrics import csr, distance_sums_bitset, union_metrics

    e, valid = build.edges, build.is_graph_valid_TN
    t_len = valid.shape[0]
    timing = {"ours": 0.0, "networkx": 0.0, "bfs_bitset": 0.0, "bfs_scipy": 0.0}
    for t in range(t_len - n_dates, t_len):
        stocks = np.nonzero(valid[t])[0]
        pos = np.full(valid.shape[1], -1)
        pos[stocks] = np.arange(stocks.size)
        sel = e.t_E == t
        u, v, n = pos[e.i_E[sel]], pos[e.j_E[sel]], stocks.size
        clock = time.perf_counter()
        union_metrics(np, u, v, np.zeros(n, dtype=np.int64), np.arange(n), 1)
        timing["ours"] += time.perf_counter() - clock
        clock = time.perf_counter()
        g = nx.Graph()
        g.add_nodes_from(range(n))
        g.add_edges_from(zip(u.tolist(), v.tolist(), strict=True))
        nx.degree_centrality(g), nx.pagerank(g, weight=None), nx.clustering(g), nx.core_number(g)
        nx.average_neighbor_degree(g), nx.closeness_centrality(g), nx.triangles(g)
        [len(c) for c in nx.connected_components(g)]
        timing["networkx"] += time.perf_counter() - clock
        indptr, src, dst = csr(np, u, v, n)
        clock = time.perf_counter()
        ours = distance_sums_bitset(np, indptr, dst, np.arange(n))
        timing["bfs_bitset"] += time.perf_counter() - clock
        clock = time.perf_counter()
        dist = shortest_path(sp.csr_matrix((np.ones(src.size), (src, dst)), shape=(n, n)), unweighted=True)
        theirs = np.where(np.isfinite(dist), dist, 0).sum(axis=1)
        timing["bfs_scipy"] += time.perf_counter() - clock
        if not np.array_equal(ours, theirs):
            raise AssertionError(f"distance sums differ from SciPy on date {t}")
    return {f"per_date_{k}_s": round(v / n_dates, 3) for k, v in timing.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stocks", type=int, default=4000)
    ap.add_argument("--dates", type=int, default=2450)
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    ap.add_argument(
        "--block-mb", type=int, default=None, help="correlation block MB (default 16 CPU, 2048 GPU)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--compare-dates", type=int, default=2, help="last N dates timed against SciPy/NetworkX (0: skip)"
    )
    args = ap.parse_args()
    backend = resolve_backend(args.device)
    xp = backend.xp

    t0 = time.perf_counter()
    returns, rows = factor_returns(args.dates, args.stocks, args.seed)
    t_gen = time.perf_counter() - t0

    done_at: dict[str, float] = {}  # seconds from the start of the build to each stage's last chunk
    cpu_at: dict[str, float] = {}  # CPU seconds of the thread running each stage, at its last chunk
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} dates"),
    ]
    with Progress(*columns, TimeElapsedColumn(), TimeRemainingColumn(), transient=True) as bar:
        tasks = {s: bar.add_task(s, total=args.dates) for s in ("corr", "metrics")}

        def progress(stage: str, done: int) -> None:
            done_at[stage] = time.perf_counter() - start
            cpu_at[stage] = time.thread_time() - cpu_start.get(stage, 0.0)
            bar.advance(tasks[stage], done)

        start = time.perf_counter()
        cpu_start = {"metrics": time.thread_time()}  # the correlation thread starts at 0 CPU seconds
        if args.device == "gpu":
            returns_dev, rows_dev = xp.asarray(returns), xp.asarray(rows)
        else:
            returns_dev, rows_dev = returns, rows
        build = build_graphs(
            returns_dev,
            rows_dev,
            GraphConfig(),
            xp,
            dtype=args.dtype,
            block_bytes=args.block_mb << 20 if args.block_mb else None,  # default: the device's work_sizes
            progress=progress,
        )
        nodes = int(build.is_graph_valid_TN.sum())
        edges = int(build.edges.t_E.size)
        if args.device == "gpu":
            xp.cuda.Device().synchronize()
        total = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out = {
        "bench": "graph",
        "device": args.device,
        "machine": platform.processor() or platform.machine(),
        "stocks": args.stocks,
        "dates": args.dates,
        "dtype": args.dtype,
        "generate_s": round(t_gen, 1),
        "corr_done_s": round(done_at.get("corr", 0.0), 1),
        "metrics_done_s": round(done_at.get("metrics", 0.0), 1),
        "corr_cpu_s": round(cpu_at.get("corr", 0.0), 1),
        "metrics_cpu_s": round(cpu_at.get("metrics", 0.0), 1),
        "total_s": round(total, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_gib": round(usage.ru_maxrss / 2**20, 2),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "nodes": nodes,
        "edges": edges,
    }
    if args.compare_dates > 0 and args.device == "cpu":
        out.update(compare(build, args.compare_dates))
    if args.device == "gpu":
        out["gpu_pool_peak_gib"] = round(xp.get_default_memory_pool().total_bytes() / 2**30, 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
