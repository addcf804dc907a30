"""Benchmark `gogooku etl`: wall time, peak RSS and rows/s of the full build, plus ten representative features
computed on [T, N] panels vs the same ten as Polars `.over("Code")` expressions, in the same run.

    python bench/etl.py --raw data/raw --out /tmp/bench_features [--device cpu|gpu] [--chunk N] [--workers N]

Prints one JSON object. CPU seconds count every thread of the process (the graph stage and the Parquet
writer run beside the chunk loop); the load average is the box's at the end of the build (it is shared).
Peak RSS is the process maximum (`ru_maxrss`) read right after the build, before the comparison runs.
The Polars EMA is `ewm_mean(adjust=False)` without the SMA seed (the closest built-in); the other nine are
the same formulas.
"""

from __future__ import annotations

import argparse
import cProfile
import faulthandler
import json
import platform
import pstats
import resource
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

# run as a script, this file's folder comes first on sys.path and "etl" would name this file, not the package
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

TEN = (
    "returns_1d",
    "returns_20d",
    "log_returns_5d",
    "volatility_20d",
    "volatility_60d",
    "sma_20",
    "ema_20",
    "z_close_20",
    "volume_ratio_20",
    "adv_jpy",
)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux


def cpu_seconds() -> float:
    """User + system CPU seconds of this process, all threads (the build runs several)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def polars_ten(dq: pl.DataFrame) -> tuple[float, pl.DataFrame]:
    """The ten features as `.over("Code")` expressions on the long daily-quotes frame (D2 carry included)."""
    t0 = time.perf_counter()
    c = pl.col("C")
    r1 = c / c.shift(1).over("Code") - 1
    out = (
        dq.lazy()
        .sort("Code", "Date")
        .with_columns(
            pl.col("AdjustmentClose").forward_fill().over("Code").alias("C"),
            pl.col("AdjustmentVolume").fill_null(0.0).alias("V"),
            pl.col("TurnoverValue").fill_null(0.0).alias("TV"),
        )
        .with_columns(r1.alias("r1"))
        .select(
            "Code",
            "Date",
            pl.col("r1").alias("returns_1d"),
            (c / c.shift(20).over("Code") - 1).alias("returns_20d"),
            (c / c.shift(5).over("Code")).log().alias("log_returns_5d"),
            (pl.col("r1").rolling_std(20, min_samples=20).over("Code") * np.sqrt(252)).alias(
                "volatility_20d"
            ),
            (pl.col("r1").rolling_std(60, min_samples=60).over("Code") * np.sqrt(252)).alias(
                "volatility_60d"
            ),
            c.rolling_mean(20, min_samples=20).over("Code").alias("sma_20"),
            c.ewm_mean(span=20, adjust=False, min_samples=20).over("Code").alias("ema_20"),
            (
                (c - c.rolling_mean(20, min_samples=20).over("Code"))
                / (c.rolling_std(20, min_samples=20).over("Code") + 1e-12)
            ).alias("z_close_20"),
            (pl.col("V") / (pl.col("V").rolling_mean(20, min_samples=20).over("Code") + 1e-12)).alias(
                "volume_ratio_20"
            ),
            pl.col("TV").rolling_mean(20, min_samples=20).over("Code").alias("adv_jpy"),
        )
        .collect()
    )
    return time.perf_counter() - t0, out


def panel_ten(raw_dir: str, xp) -> tuple[float, float, dict]:
    """(pivot seconds, feature seconds, values) for the ten on full-width panels."""
    from etl import pipeline
    from etl.features import price_volume, registry  # noqa: F401  (registers the columns)
    from etl.ops import to_host

    source = pipeline.RawSource(loader=pipeline.store_loader(raw_dir))
    grid, params = pipeline.make_grid(source, None, None, history=0)
    ctx = registry.FeatureContext(xp, grid, source, params)
    t0 = time.perf_counter()
    ctx.panel("Close")
    t1 = time.perf_counter()
    values = {name: to_host(ctx[name]) for name in TEN}
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, values


def compare_ten(raw: str, backend) -> dict:
    """The ten features on panels vs as Polars `.over("Code")` expressions, in this run."""
    from etl.pipeline import store_loader

    dq = store_loader(raw)("prices_daily_quotes")
    pivot_s, panel_s, _ = panel_ten(raw, backend.xp)
    polars_s, _ = polars_ten(dq)
    return {
        "ten_features": list(TEN),
        "panel_pivot_seconds": round(pivot_s, 2),
        "panel_ten_seconds": round(panel_s, 2),
        "polars_over_ten_seconds": round(polars_s, 2),
        "polars_over_vs_panel_ratio": round(polars_s / panel_s, 2),
        "polars_over_vs_panel_incl_pivot_ratio": round(polars_s / (panel_s + pivot_s), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--raw", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--chunk", type=int, default=None, help="stocks per chunk (default: build_store's)")
    ap.add_argument("--workers", type=int, default=None, help="chunk threads (default: build_store's)")
    ap.add_argument("--skip-build", action="store_true", help="only the ten-feature comparison")
    ap.add_argument("--skip-compare", action="store_true", help="only the build")
    ap.add_argument(
        "--profile", help="write the build's cProfile top functions to this file, the raw stats to FILE.prof"
    )
    ap.add_argument("--stacks", type=float, help="dump every thread's stack to stderr every SECONDS (hangs)")
    args = ap.parse_args()
    if args.stacks:
        faulthandler.dump_traceback_later(args.stacks, repeat=True)

    from etl.backend import resolve_backend
    from etl.pipeline import build_store

    backend = resolve_backend(args.device)
    report: dict = {
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPUs",
        "device": backend.device,
        "raw": args.raw,
        "date": time.strftime("%Y-%m-%d"),
    }
    if not args.skip_build:
        cpu0 = cpu_seconds()
        profiler = cProfile.Profile() if args.profile else None
        if profiler is not None:
            profiler.enable()
        t0 = time.perf_counter()
        chunks_done: list[float] = []  # seconds from the start at which each stock chunk was handed over

        def progress(done: int, total: int) -> None:
            chunks_done.append(round(time.perf_counter() - t0, 1))
            print(f"chunk {done}/{total} done at {chunks_done[-1]} s", file=sys.stderr, flush=True)

        res = build_store(
            args.raw,
            args.out,
            device=args.device,
            chunk_size=args.chunk,
            workers=args.workers,
            progress=progress,
        )
        total_s = time.perf_counter() - t0
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile + ".prof")
            with open(args.profile, "w") as f:
                stats = pstats.Stats(profiler, stream=f)
                stats.sort_stats("cumulative").print_stats(80)
                stats.sort_stats("tottime").print_stats(50)
        report |= {
            "build_seconds": round(res.seconds, 1),
            "total_seconds": round(total_s, 1),  # with the last Parquet writes and the catalog
            "chunks_done_s": chunks_done,
            "build_cpu_seconds": round(cpu_seconds() - cpu0, 1),
            "load_avg_1m": round(__import__("os").getloadavg()[0], 2),
            "peak_rss_gb": round(peak_rss_gb(), 2),
            "rows": res.rows,
            "rows_per_s": round(res.rows / res.seconds),
            "stocks": res.stocks,
            "sessions": res.sessions,
            "columns": len(res.columns) + 2,
            "chunk": args.chunk,
            "workers": args.workers,
        }
    if not args.skip_compare:
        report |= compare_ten(args.raw, backend)
    print(json.dumps(report))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "bench_etl.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
