"""A tiny raw market in the canonical raw-store schema for the ETL tests (a few stocks, ~150 sessions).

`make_raw()` returns {endpoint_id: DataFrame}. It includes what the rules must handle: a no-trade session
(null prices), a 1:2 split, an ETF (market 0109) and a preferred share (5th code character "5") outside the
universe, a stock listed late, a stock delisted early, a sector change, statements before/after 15:00.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from etl.features.identifiers import SECTOR33_CODES
from etl.panels.calendar import trading_calendar
from etl.sources.schema import ENDPOINTS

START = dt.date(2022, 1, 4)
END = dt.date(2022, 8, 31)
SECTORS = ("0050", "1050", "3050")  # three sectors so n >= 3 holds in some and not in others


def _frame(endpoint_id: str, data: dict) -> pl.DataFrame:
    ep = ENDPOINTS[endpoint_id]
    n = len(next(iter(data.values())))
    cols = {}
    for name, dtype in ep.columns.items():
        cols[name] = pl.Series(name, data.get(name, [None] * n), dtype=dtype, strict=False)
    return pl.DataFrame(cols)


def codes(n_stocks: int) -> list[str]:
    return [f"{1000 + 10 * i:04d}0" for i in range(n_stocks)]


def make_raw(n_stocks: int = 9, seed: int = 0, start: dt.date = START, end: dt.date = END) -> dict:
    rng = np.random.default_rng(seed)
    cal = trading_calendar(start, end)
    days = cal.filter(pl.col("HolidayDivision") == "1")["Date"].to_list()
    T = len(days)
    stock_codes = codes(n_stocks)
    extra = ["13060", "25935"]  # ETF (0109) and a preferred share: outside the universe
    all_codes = stock_codes + extra
    N = len(all_codes)
    mkt = rng.normal(0, 0.01, T)
    rets = 0.8 * mkt[:, None] + rng.normal(0, 0.015, (T, N))
    close = 1000.0 * np.exp(np.cumsum(rets, axis=0)) * (1 + np.arange(N))[None, :] / 3
    open_ = close * np.exp(rng.normal(0, 0.004, (T, N)))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.005, (T, N))))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.005, (T, N))))
    vol = np.round(rng.lognormal(10, 0.5, (T, N)))
    listed = np.ones((T, N), dtype=bool)
    listed[:30, 1] = False  # listed late
    listed[T - 20 :, 2] = False  # delisted early
    rows = []
    split_at = T // 2  # stock 3: 1:2 split, ex-date row carries AdjustmentFactor 0.5
    for j, code in enumerate(all_codes):
        factor_after = np.ones(T)
        if j == 3:
            factor_after[:split_at] = 0.5  # raw prices before the split are twice the adjusted ones
        for t, day in enumerate(days):
            if not listed[t, j]:
                continue
            if day == dt.date(2020, 10, 1):
                continue
            no_trade = j == 4 and t in (40, 41)
            raw_scale = 1.0 / factor_after[t]
            af = 0.5 if (j == 3 and t == split_at) else 1.0
            o, h, l, c, v = open_[t, j], high[t, j], low[t, j], close[t, j], vol[t, j]
            rows.append(
                {
                    "Date": day,
                    "Code": code,
                    "Open": None if no_trade else round(o * raw_scale, 1),
                    "High": None if no_trade else round(h * raw_scale, 1),
                    "Low": None if no_trade else round(l * raw_scale, 1),
                    "Close": None if no_trade else round(c * raw_scale, 1),
                    "UpperLimit": "0",
                    "LowerLimit": "0",
                    "Volume": None if no_trade else v / raw_scale,
                    "TurnoverValue": None if no_trade else round(v * c),
                    "AdjustmentFactor": af,
                    "AdjustmentOpen": None if no_trade else o,
                    "AdjustmentHigh": None if no_trade else h,
                    "AdjustmentLow": None if no_trade else l,
                    "AdjustmentClose": None if no_trade else c,
                    "AdjustmentVolume": None if no_trade else v,
                }
            )
    dq = _frame("prices_daily_quotes", {k: [r[k] for r in rows] for k in rows[0]})
    li_rows = []
    for j, code in enumerate(all_codes):
        s33 = SECTORS[j % 3]
        mcode = "0109" if code == "13060" else "0111"
        li_rows.append((days[0], code, s33, mcode, str(1 + j % 3)))
        if j == 5:  # a sector change halfway
            li_rows.append((days[T // 2], code, SECTORS[(j + 1) % 3], mcode, str(1 + (j + 1) % 3)))
    li = _frame(
        "listed_info",
        {
            "Date": [r[0] for r in li_rows],
            "Code": [r[1] for r in li_rows],
            "CompanyName": [f"co{r[1]}" for r in li_rows],
            "Sector17Code": [r[4] for r in li_rows],
            "Sector17CodeName": [f"s17-{r[4]}" for r in li_rows],
            "Sector33Code": [r[2] for r in li_rows],
            "Sector33CodeName": [f"s33-{r[2]}" for r in li_rows],
            "MarketCode": [r[3] for r in li_rows],
        },
    )
    tpx = 2000 * np.exp(np.cumsum(mkt))
    tx_open = tpx * np.exp(rng.normal(0, 0.002, T))
    topix = _frame(
        "indices_topix",
        {
            "Date": days,
            "Open": tx_open,
            "High": np.maximum(tx_open, tpx) * 1.003,
            "Low": np.minimum(tx_open, tpx) * 0.997,
            "Close": tpx,
        },
    )
    st_rows = []
    for j, code in enumerate(stock_codes):
        # FY results of the year ending 2021-12: shares 1e6 * (j + 1), 100 treasury shares
        st_rows.append(
            {
                "DisclosedDate": days[10],
                "DisclosedTime": "15:00:00" if j % 2 else "14:59:59",
                "LocalCode": code,
                "DisclosureNumber": f"2022{j:04d}",
                "TypeOfDocument": "FYFinancialStatements_Consolidated_JP",
                "TypeOfCurrentPeriod": "FY",
                "CurrentPeriodEndDate": "2021-12-31",
                "NumberOfIssuedAndOutstandingSharesAtTheEndOfFiscalYearIncludingTreasuryStock": str(
                    1_000_000 * (j + 1)
                ),
                "NumberOfTreasuryStockAtTheEndOfFiscalYear": "100",
            }
        )
    st = _frame("fins_statements", {k: [r[k] for r in st_rows] for k in st_rows[0]})
    return {
        "markets_trading_calendar": cal,
        "prices_daily_quotes": dq,
        "listed_info": li,
        "indices_topix": topix,
        "fins_statements": st,
    }


def test_fixture_fits_the_raw_schema():
    from etl.sources.raw_store import check_frame

    raw = make_raw()
    for endpoint_id, frame in raw.items():
        check_frame(endpoint_id, frame)
    assert set(raw["listed_info"]["Sector33Code"].to_list()) <= set(SECTOR33_CODES)
