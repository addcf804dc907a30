"""The event groups through the real pipeline: registry glue, stock-chunk invariance and no look-ahead.

The tiny market of test_etl_helpers gets every event endpoint (weekly/daily margin with a correction,
trades_spec with a correction, sector short selling, position reports, statements with forecasts). The
truncation test rebuilds on raw data cut at t (each source by its publication date) and checks that every
row <= t of the event columns is unchanged.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
from test_etl_helpers import SECTORS, codes, make_raw

from etl import pipeline
from etl.features import earnings, flows, interactions, margin_daily, margin_weekly, short_selling, statements
from etl.features.registry import REGISTRY, load_all
from etl.sources.schema import ENDPOINTS

load_all()
EVENT_COLUMNS = [
    *flows.COLUMNS,
    flows.VALIDITY,
    *margin_weekly.COLUMNS,
    margin_weekly.VALIDITY,
    *margin_daily.COLUMNS,
    margin_daily.VALIDITY,
    *statements.COLUMNS,
    statements.VALIDITY,
    *earnings.COLUMNS,
    *short_selling.SS_COLUMNS,
    *short_selling.POSITION_COLUMNS,
    short_selling.VALIDITY,
    *interactions.COLUMNS,
]
PUBLISHED = {
    "prices_daily_quotes": "Date",
    "listed_info": "Date",
    "indices_topix": "Date",
    "fins_statements": "DisclosedDate",
    "markets_weekly_margin_interest": "Date",
    "markets_daily_margin_interest": "PublishedDate",
    "markets_trades_spec": "PublishedDate",
    "markets_short_selling": "Date",
    "markets_short_selling_positions": "DisclosedDate",
}


def frame(endpoint_id: str, rows: list[dict]) -> pl.DataFrame:
    schema = ENDPOINTS[endpoint_id].schema
    return pl.DataFrame([{c: r.get(c) for c in schema} for r in rows], schema=schema)


def event_raw(n_stocks: int = 9, seed: int = 1) -> dict:
    raw = make_raw(n_stocks)
    rng = np.random.default_rng(seed)
    days = raw["markets_trading_calendar"].filter(pl.col("HolidayDivision") == "1")["Date"].to_list()
    fridays = [d for d in days if d.weekday() == 4]
    stock_codes = codes(n_stocks)
    wm = [
        {"Date": f, "Code": c, "LongMarginTradeVolume": float(rng.integers(1e4, 2e4)),
         "ShortMarginTradeVolume": float(rng.integers(1e3, 9e3)), "LongNegotiableMarginTradeVolume": 100.0,
         "ShortNegotiableMarginTradeVolume": 50.0, "LongStandardizedMarginTradeVolume": 200.0,
         "ShortStandardizedMarginTradeVolume": 80.0, "IssueType": "2"}
        for f in fridays for c in stock_codes
    ]  # fmt: skip
    dm = []
    reasons = margin_daily.PUBLISH_REASONS
    for k in range(len(days) - 1):
        for c in stock_codes[:3]:
            rec = dict(PublishedDate=days[k + 1], Code=c, ApplicationDate=days[k])
            rec["LongMarginOutstanding"] = float(rng.integers(1e4, 2e4))
            rec["ShortMarginOutstanding"] = float(rng.integers(1e3, 9e3))
            rec["DailyChangeLongMarginOutstanding"] = "-" if k % 9 == 0 else str(float(rng.integers(-99, 99)))
            rec["DailyChangeShortMarginOutstanding"] = str(float(rng.integers(-99, 99)))
            rec["ShortLongRatio"] = None if k % 5 else 12.5
            rec["TSEMarginBorrowingAndLendingRegulationClassification"] = "002"
            rec |= {f"PublishReason.{r}": "1" if (k + i) % 7 == 0 else "0" for i, r in enumerate(reasons)}
            dm.append(rec)
        if k % 13 == 3:  # a correction three sessions later
            fix = dict(dm[-1], PublishedDate=days[min(k + 4, len(days) - 1)], LongMarginOutstanding=1.0)
            dm.append(fix)
    ts_groups = ["Foreigners", "Individuals", "Proprietary", "Brokerage", "TrustBanks", "InvestmentTrusts"]
    ts = []
    for f in fridays:
        pub = f + dt.timedelta(days=6)
        for sec in ("TSEPrime", "TSEStandard", "TSEGrowth"):
            rec = dict(PublishedDate=pub, StartDate=f - dt.timedelta(days=4), EndDate=f, Section=sec)
            rec |= {g + "Balance": float(rng.normal(0, 1e6)) for g in [*ts_groups, "BusinessCos"]}
            rec |= {g + "Total": float(rng.uniform(1e7, 2e7)) for g in [*ts_groups, "BusinessCos"]}
            rec["TotalTotal"] = float(rng.uniform(1e8, 2e8))
            ts.append(rec)
            if sec == "TSEPrime" and f.day < 8:  # monthly correction, published a week later
                ts.append(dict(rec, PublishedDate=pub + dt.timedelta(days=7), ForeignersBalance=5e6))
    ss = []
    for d in days:
        for s in (*SECTORS, "9050"):
            rec = dict(Date=d, Sector33Code=s)
            rec["SellingExcludingShortSellingTurnoverValue"] = float(rng.uniform(8e8, 1e9))
            rec["ShortSellingWithRestrictionsTurnoverValue"] = float(rng.uniform(1e8, 3e8))
            rec["ShortSellingWithoutRestrictionsTurnoverValue"] = float(rng.uniform(1e7, 5e7))
            ss.append(rec)
    sp = []
    for k in range(0, len(days) - 2, 6):
        rec = dict(DisclosedDate=days[k + 1], CalculatedDate=days[k], Code=stock_codes[k % 4])
        rec |= dict(
            ShortSellerName=f"H{k % 3}", DiscretionaryInvestmentContractorName="", InvestmentFundName=""
        )
        rec["ShortPositionsToSharesOutstandingRatio"] = float(rng.uniform(0.003, 0.02))
        rec["ShortPositionsInSharesNumber"] = float(rng.integers(1e4, 1e5))
        sp.append(rec)
    st = raw["fins_statements"].to_dicts()
    for j, c in enumerate(stock_codes):
        for q, (k, period) in enumerate(((60, "1Q"), (120, "2Q"))):
            rec = dict(
                DisclosedDate=days[k + j], DisclosedTime="15:30:00" if j % 2 else "11:00:00", LocalCode=c
            )
            rec |= dict(DisclosureNumber=f"2023{q}{j:04d}", TypeOfCurrentPeriod=period)
            rec["TypeOfDocument"] = f"{period}FinancialStatements_Consolidated_JP"
            rec["CurrentPeriodEndDate"] = "2022-03-31" if q == 0 else "2022-06-30"
            rec |= dict(CurrentFiscalYearStartDate="2022-01-01", CurrentFiscalYearEndDate="2022-12-31")
            rec |= dict(NetSales=str(1000 * (q + 1) + j), OperatingProfit=str(100 + j), Profit=str(50 + q))
            rec |= dict(TotalAssets="5000", Equity="2000", ForecastNetSales=str(4000 + 100 * q))
            rec |= dict(ForecastOperatingProfit="400", ForecastProfit=str(200 + 10 * q))
            rec |= dict(ForecastEarningsPerShare=str(20 + q), ForecastDividendPerShareAnnual="10")
            st.append(rec)
    raw["fins_statements"] = frame(
        "fins_statements", [{k: ("" if v is None else v) for k, v in r.items()} for r in st]
    )
    raw["fins_statements"] = raw["fins_statements"].with_columns(
        pl.Series("DisclosedDate", [r["DisclosedDate"] for r in st], dtype=pl.Date)
    )
    raw["markets_weekly_margin_interest"] = frame("markets_weekly_margin_interest", wm)
    raw["markets_daily_margin_interest"] = frame("markets_daily_margin_interest", dm)
    raw["markets_trades_spec"] = frame("markets_trades_spec", ts)
    raw["markets_short_selling"] = frame("markets_short_selling", ss)
    raw["markets_short_selling_positions"] = frame("markets_short_selling_positions", sp)
    return raw


def build(raw: dict, chunk_size: int = 256) -> pl.DataFrame:
    return pipeline.build_frame(raw, columns=EVENT_COLUMNS, chunk_size=chunk_size)


@pytest.fixture(scope="module")
def raw():
    return event_raw()


@pytest.fixture(scope="module")
def full(raw):
    return build(raw)


def test_every_event_column_is_registered_and_built(full):
    assert all(c in REGISTRY for c in EVENT_COLUMNS)
    assert full.columns == ["Code", "Date", *EVENT_COLUMNS]
    for flag in ("is_flow_valid", "is_margin_valid", "is_dmi_valid", "is_stmt_valid", "is_ss_valid"):
        values = set(full[flag].unique().to_list())
        assert values == {0, 1}, flag
    # every group produced real values somewhere
    for c in ("flow_foreign_net_ratio", "margin_credit_ratio", "dmi_long", "stmt_opm", "days_since_earnings",
              "ss_sec33_short_share", "ss_balance_ratio", "x_dmi_impulse_dir"):  # fmt: skip
        assert full[c].drop_nulls().drop_nans().len() > 0, c


def test_stock_chunks_give_the_same_rows(raw, full):
    chunked = build(raw, chunk_size=4)
    assert chunked.sort("Code", "Date").equals(full.sort("Code", "Date"))


def truncate(raw: dict, cut: dt.date) -> dict:
    out = {}
    for endpoint_id, df in raw.items():
        col = PUBLISHED.get(endpoint_id)
        out[endpoint_id] = df if col is None else df.filter(pl.col(col) <= cut)
    return out


@pytest.mark.parametrize("cut_index", [70, 125])
def test_no_look_ahead(raw, full, cut_index):
    dates = full["Date"].unique().sort()
    cut = dates[cut_index]
    part = build(truncate(raw, cut))
    inputs = [c for c in EVENT_COLUMNS if REGISTRY[c].role in ("I", "C")]
    a = full.filter(pl.col("Date") <= cut).sort("Code", "Date").select("Code", "Date", *inputs)
    b = part.sort("Code", "Date").select("Code", "Date", *inputs)
    assert a.height == b.height
    for c in inputs:
        x, y = a[c].cast(pl.Float64).to_numpy(), b[c].cast(pl.Float64).to_numpy()
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-9, equal_nan=True, err_msg=c)
    # and perturbing every event value published after the cut changes nothing up to it either
    noisy = {k: v for k, v in raw.items()}
    dm = raw["markets_daily_margin_interest"]
    noisy["markets_daily_margin_interest"] = dm.with_columns(
        pl.when(pl.col("PublishedDate") > cut)
        .then(pl.col("LongMarginOutstanding") * 3)
        .otherwise(pl.col("LongMarginOutstanding"))
    )
    ts = raw["markets_trades_spec"]
    noisy["markets_trades_spec"] = ts.with_columns(
        pl.when(pl.col("PublishedDate") > cut)
        .then(-pl.col("ForeignersBalance"))
        .otherwise(pl.col("ForeignersBalance"))
    )
    c = build(noisy).filter(pl.col("Date") <= cut).sort("Code", "Date").select("Code", "Date", *inputs)
    for col in inputs:
        np.testing.assert_allclose(
            a[col].cast(pl.Float64).to_numpy(),
            c[col].cast(pl.Float64).to_numpy(),
            equal_nan=True,
            err_msg=col,
        )


def test_core_lookahead_harness_on_event_data(raw, full):
    """The core perturbation (every role) and re-based truncation (I/C) harness on data with every source."""
    from test_etl_lookahead import perturb_after, truncate_at

    t = np.datetime64(full["Date"].unique().sort()[100], "D")
    cut = t.astype(object)
    past = full.filter(pl.col("Date") <= cut).sort("Code", "Date")
    moved = build(perturb_after(raw, t)).filter(pl.col("Date") <= cut).sort("Code", "Date")
    assert moved.height == past.height
    bad = [c for c in EVENT_COLUMNS if not _same(past[c], moved[c])]
    assert not bad, f"columns at rows <= {t} moved when the future changed: {bad}"
    inputs = [c for c in EVENT_COLUMNS if REGISTRY[c].role in ("I", "C")]
    trunc = build(truncate_at(raw, t)).sort("Code", "Date")
    bad = [c for c in inputs if not _same(past[c], trunc[c], rtol=1e-6)]
    assert not bad, f"I/C columns at rows <= {t} differ on truncated data: {bad}"


def _same(a: pl.Series, b: pl.Series, rtol: float = 0.0) -> bool:
    x, y = a.cast(pl.Float64).to_numpy(), b.cast(pl.Float64).to_numpy()
    return bool(np.allclose(x, y, rtol=rtol, atol=1e-12 if rtol else 0.0, equal_nan=True))
