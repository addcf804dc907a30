"""Benchmark the J-Quants client's own costs (the API's rate limit, not these, bounds a real backfill).

    .venv/bin/python bench/fetch.py                       # 4,400 codes, 20 trading days, page size 1,000
    .venv/bin/python bench/fetch.py --codes 1000 --days 5 # a quick look

1. map: v2 JSON rows of one full-market day of daily bars (with the API's text quirks) -> canonical frame,
   beside the naive `pl.DataFrame(rows).rename(...)` that handles no quirks (it only works on clean rows).
2. fetch: `fetch()` of daily bars for `--days` trading days from the local fake server (real HTTP, gzip,
   pagination), no rate limit: wall time, requests/s, rows/s, archive bytes per row; then a re-run (nothing
   missing: no requests).
3. plan: requests a 10-year backfill of all endpoints needs, and its duration at each plan's limit.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.fake_jquants

from etl.sources.jquants import FetchOptions, fetch, plan_units  # noqa: E402
from etl.sources.jquants_http import PLAN_REQUESTS_PER_MINUTE  # noqa: E402
from etl.sources.jquants_map import rows_to_frame  # noqa: E402
from etl.sources.schema import ENDPOINTS, v2_to_v1  # noqa: E402
from tests.fake_jquants import FakeJQuants, FakeState, _sessions, frame_to_v2_rows  # noqa: E402

EP = ENDPOINTS["prices_daily_quotes"]


def market_day(codes: list[str], day: dt.date, rng: random.Random) -> pl.DataFrame:
    rows = []
    for code in codes:
        close = rng.uniform(100, 10_000)
        traded = rng.random() > 0.02
        row = {c: (round(close * rng.uniform(0.97, 1.03), 1) if traded else None) for c in EP.columns}
        row |= {"Date": day, "Code": code, "UpperLimit": "0", "LowerLimit": "0", "AdjustmentFactor": 1.0}
        rows.append(row)
    return pl.DataFrame(rows, schema=EP.schema, orient="row")


def bench_map(codes: list[str], repeats: int) -> dict:
    rng = random.Random(0)
    frame = market_day(codes, dt.date(2024, 1, 5), rng)
    quirky = frame_to_v2_rows(EP, frame)  # numeric strings, "", "-", "*"
    v2_of = {v1: v2 for v2, v1 in EP.v2_names.items()}
    clean = frame.fill_null(0.0).with_columns(pl.col("Date").cast(pl.String)).rename(v2_of).to_dicts()

    def best(fn) -> float:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    ours = best(lambda: rows_to_frame(EP, quirky))
    ours_clean = best(lambda: rows_to_frame(EP, clean))
    naive = best(
        lambda: (
            pl.DataFrame(clean)
            .rename(v2_to_v1(EP.endpoint_id, list(clean[0])))
            .with_columns(pl.col("Date").str.to_date())
        )
    )
    assert rows_to_frame(EP, quirky).equals(frame)
    return {
        "rows": len(codes),
        "rows_to_frame_ms_quirky_rows": ours * 1e3,
        "rows_to_frame_ms_clean_rows": ours_clean * 1e3,
        "naive_polars_ms_clean_rows": naive * 1e3,
    }


def bench_fetch(codes: list[str], days: int, page_size: int) -> dict:
    rng = random.Random(1)
    start = dt.date(2024, 1, 4)
    sessions = _sessions(start, start + dt.timedelta(days=days * 2))[:days]
    frames = [market_day(codes, d, rng) for d in sessions]
    rows = [r for f in frames for r in frame_to_v2_rows(EP, f)]
    state = FakeState(rows={EP.v2_path: rows}, page_size=page_size, forbidden={"/markets/calendar"})
    with tempfile.TemporaryDirectory() as out, FakeJQuants(state) as fake:
        opts = FetchOptions(api_key="test-key", base_url=fake.base_url, requests_per_minute=10**9)
        t0 = time.perf_counter()
        report = fetch(
            opts, out, sessions[0], sessions[-1], ["prices_daily_quotes"], today=dt.date(2025, 1, 1)
        )
        wall = time.perf_counter() - t0
        t0 = time.perf_counter()
        fetch(opts, out, sessions[0], sessions[-1], ["prices_daily_quotes"], today=dt.date(2025, 1, 1))
        rerun = time.perf_counter() - t0
        archive = sum(p.stat().st_size for p in Path(out, "_jquants").rglob("*.json.gz"))
        store = sum(p.stat().st_size for p in Path(out, "prices_daily_quotes").glob("*.parquet"))
    result = next(r for r in report.results if r.endpoint_id == "prices_daily_quotes")
    server_s = sum(r.busy_s for r in state.served() if r.path == EP.v2_path)
    return {
        "days": days,
        "codes": len(codes),
        "page_size": page_size,
        "requests": result.requests,
        "rows": result.rows_fetched,
        "wall_s": wall,
        "requests_per_s": result.requests / wall,
        "rows_per_s": result.rows_fetched / wall,
        "fake_server_s": server_s,
        "client_s": wall - server_s,
        "client_ms_per_request": (wall - server_s) / result.requests * 1e3,
        "rerun_s": rerun,
        "archive_bytes_per_row": archive / result.rows_fetched,
        "store_bytes_per_row": store / result.rows_fetched,
    }


def backfill_plan(codes: int, page_size: int) -> dict:
    start, end = dt.date(2015, 10, 1), dt.date(2025, 9, 30)
    sessions = _sessions(start, end)
    per_endpoint = {}
    for endpoint_id in ENDPOINTS:
        units = plan_units(endpoint_id, start, end, sessions, set(), dt.date(2025, 10, 1))
        pages = -(-codes // page_size) if endpoint_id in ("prices_daily_quotes", "listed_info") else 1
        per_endpoint[endpoint_id] = len(units) * pages
    total = sum(per_endpoint.values())
    hours = {plan: round(total / rpm / 60, 1) for plan, rpm in PLAN_REQUESTS_PER_MINUTE.items()}
    return {"requests": total, "per_endpoint": per_endpoint, "hours_at_plan_limit": hours}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codes", type=int, default=4400)
    parser.add_argument("--days", type=int, default=20)
    parser.add_argument("--page-size", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    codes = [f"{1300 + i:04d}0" for i in range(args.codes)]
    out = {
        "machine": f"{platform.machine()} {platform.node()}",
        "date": dt.date.today().isoformat(),
        "map": bench_map(codes, args.repeats),
        "fetch": bench_fetch(codes, args.days, args.page_size),
        "backfill_10y": backfill_plan(args.codes, args.page_size),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
