"""Benchmark the graph stage at full market scale on random factor-model returns.

    .venv/bin/python bench/graph.py                      # 4,000 stocks x 2,450 dates, CPU
    .venv/bin/python bench/graph.py --device gpu         # the same on CuPy
    .venv/bin/python bench/graph.py --stocks 4000 --dates 120   # a quick look

Returns: a market factor, 33 sector factors and idiosyncratic noise with stock-specific loadings (daily vol
~2%), 1% missing values, 5% of stocks listed part-way. Prints one JSON line: wall seconds until the
correlation and the metrics stage finished (they overlap on CPU), total wall and CPU seconds, peak RSS, the
1-minute load average at the end (the box is shared), nodes and edges.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time

import numpy as np
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from etl.backend import resolve_backend
from etl.graph import build_graphs
from train.config import GraphConfig


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stocks", type=int, default=4000)
    ap.add_argument("--dates", type=int, default=2450)
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    ap.add_argument(
        "--block-mb", type=int, default=None, help="correlation block budget (default 16 CPU, 2048 GPU)"
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    backend = resolve_backend(args.device)
    xp = backend.xp
    block_mb = args.block_mb or (2048 if args.device == "gpu" else 16)

    t0 = time.perf_counter()
    returns, rows = factor_returns(args.dates, args.stocks, args.seed)
    t_gen = time.perf_counter() - t0

    done_at: dict[str, float] = {}  # seconds from the start of the build to each stage's last chunk
    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} dates"),
    ]
    with Progress(*columns, TimeElapsedColumn(), TimeRemainingColumn(), transient=True) as bar:
        tasks = {s: bar.add_task(s, total=args.dates) for s in ("corr", "metrics")}

        def progress(stage: str, done: int) -> None:
            done_at[stage] = time.perf_counter() - start
            bar.advance(tasks[stage], done)

        start = time.perf_counter()
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
            block_bytes=block_mb << 20,
            nodes_per_chunk=(1 << 22) if args.device == "gpu" else (1 << 18),
            bfs_budget=(4 << 30) if args.device == "gpu" else (16 << 20),
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
        "total_s": round(total, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_gib": round(usage.ru_maxrss / 2**20, 2),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "nodes": nodes,
        "edges": edges,
    }
    if args.device == "gpu":
        out["gpu_pool_peak_gib"] = round(xp.get_default_memory_pool().total_bytes() / 2**30, 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
