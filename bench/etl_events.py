"""Benchmark the event/publication groups (flows, weekly/daily margin, statements, earnings, short selling).

Full-scale synthetic event tables (default 4,000 stocks x 2,450 sessions: ~2M weekly-margin records, 400
daily-margin stocks, 160k statement documents, 33-sector short selling, 100k position reports, 7-section
trades_spec) go through the same functions the pipeline calls: the per-record tables once, then the
attachment of every column for each 256-stock chunk. Beside it, the weekly-margin columns are also
attached the obvious way, a Polars `join_asof` of every (Code, Date) grid row onto the records, for the ratio.

    .venv/bin/python bench/etl_events.py [--stocks 4000] [--sessions 2450] [--chunk 256]
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import time

import numpy as np
import polars as pl

from etl.features import earnings, flows, margin_daily, margin_weekly, short_selling, statements
from etl.features.identifiers import SECTOR33_CODES
from etl.panels.events import EventCalendar, attach_records
from etl.sources.schema import ENDPOINTS


def frame(endpoint_id: str, cols: dict, n: int) -> pl.DataFrame:
    schema = ENDPOINTS[endpoint_id].schema
    return pl.DataFrame(
        {c: cols[c] if c in cols else pl.repeat(None, n, dtype=t, eager=True) for c, t in schema.items()}
    )


def synth(n_stocks: int, n_sessions: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    start = np.datetime64("2015-01-05")
    days = np.arange(start, start + int(n_sessions * 1.45) + 30)
    bdays = days[np.is_busday(days)][: n_sessions + 20]
    sessions = bdays[:n_sessions]
    codes = np.array([f"{1300 + i:04d}0" for i in range(n_stocks)])
    fridays = sessions[np.is_busday(sessions, weekmask="Fri")]
    n_w = fridays.size
    wm_codes = np.repeat(codes, n_w)
    wm_dates = np.tile(fridays, n_stocks)
    L = rng.integers(1e4, 1e6, wm_codes.size).astype(float)
    S = rng.integers(1e3, 1e5, wm_codes.size).astype(float)
    wm = frame(
        "markets_weekly_margin_interest",
        {
            "Date": pl.Series(wm_dates).cast(pl.Date),
            "Code": wm_codes,
            "LongMarginTradeVolume": L,
            "ShortMarginTradeVolume": S,
            "LongNegotiableMarginTradeVolume": 0.3 * L,
            "ShortNegotiableMarginTradeVolume": 0.3 * S,
            "LongStandardizedMarginTradeVolume": 0.7 * L,
            "ShortStandardizedMarginTradeVolume": 0.7 * S,
            "IssueType": rng.choice(["1", "2", "3"], wm_codes.size),
        },
        wm_codes.size,
    )
    dm_codes_u = codes[: max(1, n_stocks // 10)]
    app = np.tile(sessions[:-1], dm_codes_u.size)
    pub = np.tile(sessions[1:], dm_codes_u.size)
    n_dm = app.size
    dm_cols = {
        "PublishedDate": pl.Series(pub).cast(pl.Date),
        "Code": np.repeat(dm_codes_u, sessions.size - 1),
        "ApplicationDate": pl.Series(app).cast(pl.Date),
        "LongMarginOutstanding": rng.integers(1e4, 1e6, n_dm).astype(float),
        "ShortMarginOutstanding": rng.integers(1e3, 1e5, n_dm).astype(float),
        "DailyChangeLongMarginOutstanding": rng.integers(-999, 999, n_dm).astype(str),
        "DailyChangeShortMarginOutstanding": rng.integers(-999, 999, n_dm).astype(str),
        "TSEMarginBorrowingAndLendingRegulationClassification": rng.choice(["001", "002", ""], n_dm),
    }
    dm_cols |= {f"PublishReason.{r}": rng.choice(["0", "1"], n_dm) for r in margin_daily.PUBLISH_REASONS}
    dm = frame("markets_daily_margin_interest", dm_cols, n_dm)
    n_docs = 40
    st_codes = np.repeat(codes, n_docs)
    k = np.tile(np.arange(n_docs), n_stocks)
    disc = sessions[np.minimum((k + 1) * (n_sessions // (n_docs + 1)), n_sessions - 1)]
    periods = np.array(["1Q", "2Q", "3Q", "FY"])[k % 4]
    fy_start = [dt.date(2014 + int(q) // 4, 4, 1) for q in k]
    n_st = st_codes.size
    st_cols = {
        "DisclosedDate": pl.Series(disc).cast(pl.Date),
        "DisclosedTime": rng.choice(["11:00:00", "15:30:00"], n_st),
        "LocalCode": st_codes,
        "DisclosureNumber": np.char.add("D", np.arange(n_st).astype(str)),
        "TypeOfDocument": np.char.add(periods, "FinancialStatements_Consolidated_JP"),
        "TypeOfCurrentPeriod": periods,
        "CurrentFiscalYearStartDate": [d.isoformat() for d in fy_start],
        "CurrentFiscalYearEndDate": [dt.date(d.year + 1, 3, 31).isoformat() for d in fy_start],
        "CurrentPeriodEndDate": [dt.date(d.year + 1, 3, 31).isoformat() for d in fy_start],
    }
    for c in (
        "NetSales",
        "OperatingProfit",
        "Profit",
        "TotalAssets",
        "Equity",
        "ForecastNetSales",
        "ForecastProfit",
    ):
        st_cols[c] = rng.integers(1e3, 1e6, n_st).astype(str)
    st_cols = {c: (v if c == "DisclosedDate" else pl.Series(v, dtype=pl.String)) for c, v in st_cols.items()}
    schema = ENDPOINTS["fins_statements"].schema
    st = pl.DataFrame(
        {c: st_cols.get(c, pl.repeat("", n_st, dtype=pl.String, eager=True)) for c in schema}
    ).with_columns(pl.col("DisclosedDate").cast(pl.Date))
    ss_sec = np.repeat(np.array(SECTOR33_CODES), sessions.size)
    n_ss = ss_sec.size
    ss = frame(
        "markets_short_selling",
        {
            "Date": pl.Series(np.tile(sessions, len(SECTOR33_CODES))).cast(pl.Date),
            "Sector33Code": ss_sec,
            "SellingExcludingShortSellingTurnoverValue": rng.uniform(1e9, 2e9, n_ss),
            "ShortSellingWithRestrictionsTurnoverValue": rng.uniform(1e8, 3e8, n_ss),
            "ShortSellingWithoutRestrictionsTurnoverValue": rng.uniform(1e7, 9e7, n_ss),
        },
        n_ss,
    )
    n_sp = 100_000
    cd = rng.integers(0, n_sessions - 2, n_sp)
    sp = frame(
        "markets_short_selling_positions",
        {
            "DisclosedDate": pl.Series(sessions[cd + 1]).cast(pl.Date),
            "CalculatedDate": pl.Series(sessions[cd]).cast(pl.Date),
            "Code": rng.choice(codes[: n_stocks // 4], n_sp),
            "ShortSellerName": np.char.add("H", rng.integers(0, 40, n_sp).astype(str)),
            "DiscretionaryInvestmentContractorName": np.full(n_sp, ""),
            "InvestmentFundName": np.full(n_sp, ""),
            "ShortPositionsToSharesOutstandingRatio": rng.uniform(0.002, 0.03, n_sp),
            "ShortPositionsInSharesNumber": rng.integers(1e4, 1e6, n_sp).astype(float),
        },
        n_sp,
    ).unique(subset=list(ENDPOINTS["markets_short_selling_positions"].key))
    ts_secs = np.repeat(np.array(flows.SECTIONS), n_w)
    ends = np.tile(fridays, len(flows.SECTIONS))
    ts_cols = {
        "PublishedDate": pl.Series(ends + 6).cast(pl.Date),
        "StartDate": pl.Series(ends - 4).cast(pl.Date),
        "EndDate": pl.Series(ends).cast(pl.Date),
        "Section": ts_secs,
    }
    value_cols = [c for c in ENDPOINTS["markets_trades_spec"].columns if c.endswith(("Total", "Balance"))]
    ts_cols |= {c: rng.normal(1e6, 1e5, ends.size) for c in value_cols}
    ts = pl.DataFrame(ts_cols)
    ts = frame("markets_trades_spec", {c: ts[c] for c in ts.columns}, ts.height)
    cal = EventCalendar(sessions=sessions.astype(np.int64), business=bdays.astype(np.int64))
    return {"cal": cal, "codes": codes, "wm": wm, "dm": dm, "st": st, "ss": ss, "sp": sp, "ts": ts}


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stocks", type=int, default=4000)
    ap.add_argument("--sessions", type=int, default=2450)
    ap.add_argument("--chunk", type=int, default=256)
    args = ap.parse_args()
    t0 = time.perf_counter()
    d = synth(args.stocks, args.sessions)
    cal, codes = d["cal"], d["codes"]
    T, N = cal.T, codes.size
    print(f"synthetic event tables: {time.perf_counter() - t0:.1f}s  T={T} N={N}  WM={d['wm'].height:,} "
          f"DM={d['dm'].height:,} ST={d['st'].height:,} SS={d['ss'].height:,} SP={d['sp'].height:,} "
          f"TS={d['ts'].height:,}  peak RSS {rss_gib():.2f} GiB")  # fmt: skip
    rng = np.random.default_rng(1)
    adv = rng.uniform(1e4, 1e6, (T, N))
    af = np.ones((T, N))
    timings = {}

    def timed(name: str, fn):
        t = time.perf_counter()
        out = fn()
        timings[name] = time.perf_counter() - t
        return out

    wm_recs = timed("records: weekly margin", lambda: margin_weekly.records(cal, codes, d["wm"], adv))
    dm_recs = timed("records: daily margin", lambda: margin_daily.records(cal, codes, d["dm"], adv))
    st_recs = timed("records: statements", lambda: statements.build_records(cal, codes, d["st"], af))
    ev_recs = timed(
        "records: earnings", lambda: earnings.event_records(codes, statements.prepare(cal, d["st"]))
    )
    ss_recs = timed("records: short selling", lambda: short_selling.sector_records(cal, d["ss"]))
    sp_recs = timed("records: positions", lambda: short_selling.position_records(cal, codes, d["sp"]))
    ts_recs = timed("records: flows", lambda: flows.records(cal, d["ts"]))
    n_cols = 0
    t = time.perf_counter()
    for lo in range(0, N, args.chunk):
        hi = min(N, lo + args.chunk)
        n = hi - lo
        sid = np.broadcast_to(np.arange(n) % 33, (T, n)).astype(float)
        sec = np.broadcast_to(np.arange(n) % len(flows.SECTIONS), (T, n)).astype(float)
        panel = rng.uniform(0.1, 0.5, (T, n))
        inputs = {k: panel for k in earnings.INPUTS}
        outs = [
            attach_records(np, cal, wm_recs, lo, hi),
            attach_records(np, cal, dm_recs, lo, hi),
            statements.from_records(np, cal, st_recs, lo, hi, panel),
            earnings.from_records(np, cal, *ev_recs, lo, hi, inputs),
            short_selling.ss_from_records(np, cal, *ss_recs, sid, panel, panel),
            short_selling.positions_from_records(np, cal, *sp_recs, lo, hi),
            flows.from_records(np, cal, ts_recs, sec),
        ]
        n_cols = sum(len(o) for o in outs)
        del outs
    timings["attach: all columns, all chunks"] = time.perf_counter() - t
    total = sum(timings.values())
    for k, v in timings.items():
        print(f"{k:40s} {v:8.2f} s")
    rows = T * N
    print(f"{'total':40s} {total:8.2f} s  ({n_cols} columns, {rows:,} rows, {rows / total:,.0f} rows/s)")
    print(f"peak RSS {rss_gib():.2f} GiB")
    # comparison: weekly margin attached with a Polars join_asof over every (Code, Date) row
    t = time.perf_counter()
    wm = margin_weekly.prepare(d["wm"])
    day = wm["Date"].cast(pl.Int64).to_numpy()
    eff = cal.add_business(day, 3)
    rec = (
        wm.select("Code")
        .with_columns(pl.Series("eff", eff), *(pl.Series(k, v) for k, v in wm_recs.values.items()))
        .sort("eff")
    )
    grid = pl.DataFrame({"Code": np.repeat(codes, T), "day": np.tile(cal.sessions, N)}).sort("day")
    joined = grid.join_asof(rec, left_on="day", right_on="eff", by="Code", strategy="backward")
    upto = np.searchsorted(cal.sessions, joined["eff"].fill_null(0).to_numpy(), side="right")
    pos = np.searchsorted(cal.sessions, joined["day"].to_numpy())
    stale = (pos + 1 - upto) > margin_weekly.STALENESS
    joined = joined.with_columns(pl.when(pl.Series(stale)).then(None).otherwise(pl.col(c)).alias(c)
                                 for c in wm_recs.values)  # fmt: skip
    t_join = time.perf_counter() - t
    t = time.perf_counter()
    for lo in range(0, N, args.chunk):
        attach_records(np, cal, wm_recs, lo, min(N, lo + args.chunk))
    t_ours = time.perf_counter() - t
    print(f"weekly margin attach: scatter + running max {t_ours:.2f} s vs Polars join_asof {t_join:.2f} s "
          f"(x{t_join / t_ours:.1f})  [{joined.height:,} rows]")  # fmt: skip
    print(f"peak RSS {rss_gib():.2f} GiB")


if __name__ == "__main__":
    main()
