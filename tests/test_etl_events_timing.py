"""When statements, earnings events and TOPIX history reach the grid, through the real pipeline.

- A statement is public on its disclosure session only when disclosed at a real time strictly before
  15:00:00, whatever form the time takes (HH:MM:SS, HH:MM, "" or null): with a later or missing time every
  column on the disclosure date, across all stocks, is what it would be without the document.
- Events disclosed before the first grid session keep their true age (sessions and calendar days counted
  with NumPy's business-day arithmetic over hand-listed exchange holidays).
- TOPIX rows before the first quote date feed the market windows, up to the 600-session history (§1.12).
- A source the raw store lacks gives NaN (unknown); a present source without events gives the zeros.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import polars as pl
import pytest
from test_etl_events_pipeline import event_raw, frame
from test_etl_helpers import START, codes, make_raw

from etl import pipeline
from etl.features import earnings
from etl.features.registry import REGISTRY, load_all
from etl.panels.calendar import trading_calendar

load_all()
# a real time strictly before 15:00:00 -> public the same session; anything else -> the next business day
TIME_FORMS = {None: False, "": False, "15:00": False, "15:00:00": False, "14:59:59": True, "14:59": True}
# exchange holidays on weekdays between 2021-11-15 and 2022-01-04 (Labour Thanksgiving, year end)
HOLIDAYS = ["2021-11-23", "2021-12-31", "2022-01-03"]


def sessions_between(a: str, b: str) -> int:
    """sess(a, b): sessions s with a < s <= b."""
    a1 = np.datetime64(a) + 1
    return int(np.busday_count(a1, np.datetime64(b) + 1, holidays=HOLIDAYS))


def add_statements(raw: dict, docs: list[dict]) -> dict:
    """`raw` with earnings documents of fiscal year 2022 (shares 2.5e6 - 100) added to fins_statements."""
    rows = []
    for k, d in enumerate(docs):
        rec = dict(LocalCode=d["code"], DisclosedDate=d["date"], DisclosedTime=d["time"])
        rec |= dict(DisclosureNumber=f"9{k:05d}", TypeOfCurrentPeriod=d["period"])
        rec["TypeOfDocument"] = f"{d['period']}FinancialStatements_Consolidated_JP"
        rec |= dict(CurrentPeriodEndDate=d["period_end"], CurrentFiscalYearStartDate=d["fy_start"])
        rec |= dict(CurrentFiscalYearEndDate=d["fy_end"], NetSales="3000", OperatingProfit="330")
        rec |= dict(Profit="150", TotalAssets="6000", Equity="2500", ForecastNetSales="4400")
        rec |= dict(ForecastOperatingProfit="450", ForecastProfit="230", ForecastEarningsPerShare="25")
        rec["NumberOfIssuedAndOutstandingSharesAtTheEndOfFiscalYearIncludingTreasuryStock"] = "2500000"
        rec["NumberOfTreasuryStockAtTheEndOfFiscalYear"] = "100"
        rows.append(rec)
    new = frame("fins_statements", rows).with_columns(
        pl.Series("DisclosedDate", [d["date"] for d in docs], dtype=pl.Date),
        pl.Series("DisclosedTime", [d["time"] for d in docs], dtype=pl.String),
    )
    return dict(raw, fins_statements=pl.concat([raw["fins_statements"], new]))


def sessions_of(raw: dict) -> list[dt.date]:
    return raw["markets_trading_calendar"].filter(pl.col("HolidayDivision") == "1")["Date"].to_list()


def changed(a: pl.DataFrame, b: pl.DataFrame, day: dt.date) -> list[str]:
    """Non-target columns whose values on `day` differ between two builds (all stocks; NaN equals NaN)."""
    a, b = (f.filter(pl.col("Date") == day).sort("Code") for f in (a, b))
    assert a.select("Code").equals(b.select("Code"))
    out = []
    for c in a.columns:
        if c in ("Code", "Date") or REGISTRY[c].role == "T":
            continue
        if a[c].dtype == pl.String:
            same = a[c].equals(b[c])
        else:
            x, y = a[c].cast(pl.Float64).to_numpy(), b[c].cast(pl.Float64).to_numpy()
            same = bool(np.array_equal(x, y, equal_nan=True))
        if not same:
            out.append(c)
    return out


@pytest.fixture(scope="module")
def timing_base():
    raw = event_raw()
    return raw, pipeline.build_frame(raw)


@pytest.mark.parametrize("time", list(TIME_FORMS))
def test_a_statement_is_public_on_its_day_only_before_15(timing_base, time):
    raw, without = timing_base
    days = sessions_of(raw)
    day, nxt = days[90], days[91]
    doc = dict(code=codes(1)[0], date=day, time=time, period="2Q", period_end="2022-06-30")
    doc |= dict(fy_start="2022-01-01", fy_end="2022-12-31")
    built = pipeline.build_frame(add_statements(raw, [doc]))
    live = {"shares_outstanding", "turnover_rate", "stmt_bp", "stmt_ep_fore", "stmt_imp_statement"}
    live |= {"stmt_opm", "days_since_earnings", "earnings_recent_5d", "x_pead_effect"}
    if TIME_FORMS[time]:
        assert live <= set(changed(without, built, day))
    else:
        assert changed(without, built, day) == []
        assert live <= set(changed(without, built, nxt))  # public from the next session
    # the share count (§1.8): the FY document's 1e6 - 100 until the new one is public, then 2.5e6 - 100
    shares = built.filter(pl.col("Code") == doc["code"]).sort("Date")
    at = {d: v for d, v in zip(shares["Date"].to_list(), shares["shares_outstanding"].to_list(), strict=True)}
    assert at[days[89]] == 999_900.0
    assert at[day] == (2_499_900.0 if TIME_FORMS[time] else 999_900.0)
    assert at[nxt] == 2_499_900.0


def test_events_before_the_first_session_keep_their_true_age():
    raw = make_raw()
    c = codes(7)  # stock 1 is listed late: not on the first session
    fy = dict(period="3Q", period_end="2021-09-30", fy_start="2021-01-01", fy_end="2021-12-31")
    docs = [
        dict(code=c[0], date=dt.date(2021, 11, 12), time="15:30:00", **fy),  # effective Mon 2021-11-15
        dict(code=c[5], date=dt.date(2021, 12, 30), time="16:00:00", **fy),  # effective 2022-01-04
        dict(code=c[2], date=dt.date(2021, 12, 30), time="10:00:00", **fy),  # effective 2021-12-30
        dict(code=c[4], date=dt.date(2021, 12, 27), time="", **fy),  # effective 2021-12-28
    ]
    out = pipeline.build_frame(add_statements(raw, docs)).sort("Code", "Date")
    first = out.filter(pl.col("Date") == START)
    second = out.filter(pl.col("Date") == sessions_of(raw)[1])

    def at(col: str, i: int, frame: pl.DataFrame = first) -> float:
        value = frame.filter(pl.col("Code") == c[i])[col].cast(pl.Float64).item()
        return np.nan if value is None else value  # a stored null (integer columns) is NaN

    day0 = str(START)
    assert at("days_since_earnings", 0) == sessions_between("2021-11-15", day0)
    assert at("stmt_imp_statement", 0) == 0 and at("earnings_recent_5d", 0) == 0
    assert at("stmt_days_since_statement", 0) == (START - dt.date(2021, 11, 15)).days
    # disclosed after the close of the last session before the grid: really public on the first session
    assert at("days_since_earnings", 5) == 0 and at("stmt_imp_statement", 5) == 1
    assert at("stmt_days_since_statement", 5) == 0
    assert at("days_since_earnings", 2) == sessions_between("2021-12-30", day0) == 1
    assert at("stmt_imp_statement", 2) == 0 and at("earnings_recent_5d", 2) == 1
    assert at("stmt_days_since_statement", 2) == (START - dt.date(2021, 12, 30)).days
    assert at("days_since_earnings", 4) == sessions_between("2021-12-28", day0) == 3
    assert at("stmt_days_since_statement", 4) == (START - dt.date(2021, 12, 28)).days
    # stock 6 has no document before the grid: nothing is attached on the first session
    assert np.isnan(at("days_since_earnings", 6)) and at("is_stmt_valid", 6) == 0
    # the reaction session of stock 2 lies before the grid: its close there is unknown, so no drift
    assert at("days_since_earnings", 2, second) == 2
    assert np.isnan(at("earnings_momentum_5d", 2, second))


def topix_with_history(raw: dict, n_before: int, seed: int = 5) -> dict:
    """`raw` with TOPIX (and the trading calendar) reaching `n_before` sessions before the first quote."""
    tc = trading_calendar(START - dt.timedelta(days=600), raw["markets_trading_calendar"]["Date"].max())
    before = [d for d in sessions_of({"markets_trading_calendar": tc}) if d < START][-n_before:]
    tx = raw["indices_topix"]
    rng = np.random.default_rng(seed)
    close = tx["Close"][0] * np.exp(np.cumsum(rng.normal(0, 0.01, len(before))[::-1]))[::-1]
    early = pl.DataFrame(
        {"Date": before, "Open": close * 1.001, "High": close * 1.004, "Low": close * 0.996, "Close": close},
        schema=tx.schema,
    )
    tc = tc.filter(pl.col("Date") >= (before[0] if before else START))
    return dict(raw, indices_topix=pl.concat([early, tx]), markets_trading_calendar=tc)


MARKET = ["mkt_ret_1d", "mkt_ret_1d_z", "mkt_vol_20d_z", "mkt_dd_from_peak", "mkt_ema_200", "is_mkt_z_valid"]


def test_topix_history_before_the_first_quote_feeds_the_market_windows():
    raw = topix_with_history(make_raw(), n_before=300)
    out = pipeline.build_frame(raw, columns=MARKET)
    mkt = out.group_by("Date").first().sort("Date")
    c = raw["indices_topix"].sort("Date").to_pandas().set_index("Date")["Close"]
    m = c.pct_change()
    z = (m - m.rolling(252).mean()) / (m.rolling(252).std() + 1e-12)
    vol = m.rolling(20).std() * np.sqrt(252)
    vol_z = (vol - vol.rolling(252).mean()) / (vol.rolling(252).std() + 1e-12)
    ref = pd.DataFrame({"mkt_ret_1d": m, "mkt_ret_1d_z": z, "mkt_vol_20d_z": vol_z})
    ref["mkt_dd_from_peak"] = c / c.rolling(252).max() - 1
    ref = ref.loc[pd.to_datetime(mkt["Date"].to_pandas())]
    for col in ref.columns:
        got = mkt[col].cast(pl.Float64).to_numpy()
        assert not np.isnan(got[0]), col  # mature on the first session: 300 earlier TOPIX sessions
        # stored as f32 (relative 2^-24) from float64 rolling sums (~1e-12)
        np.testing.assert_allclose(got, ref[col].to_numpy(), rtol=1e-6, atol=1e-7, err_msg=col)
    # the history reaches `history` sessions before the dataset start, no further (§1.12)
    capped = pipeline.build_frame(raw, columns=MARKET, history=50)
    tx = raw["indices_topix"]
    reach = tx.filter(pl.col("Date") < START)["Date"].sort()[-50]
    exact = dict(raw, indices_topix=tx.filter(pl.col("Date") >= reach))
    assert capped.equals(pipeline.build_frame(exact, columns=MARKET, history=50))
    assert not capped["mkt_ema_200"].equals(out["mkt_ema_200"])


def test_an_absent_statements_source_is_unknown_and_an_empty_one_has_no_events():
    raw = make_raw()
    cols = [*earnings.COLUMNS, "is_stmt_valid", "x_dmi_impulse_dir", "x_rev_gate", "x_bo_gate", "returns_1d"]
    absent = pipeline.build_frame({k: v for k, v in raw.items() if k != "fins_statements"}, columns=cols)
    for col in earnings.COLUMNS:
        assert absent[col].cast(pl.Float64).fill_nan(None).null_count() == absent.height, col
    assert (absent["is_stmt_valid"] == 0).all()
    empty = pipeline.build_frame(dict(raw, fins_statements=raw["fins_statements"].clear()), columns=cols)
    assert (empty["earnings_recent_5d"] == 0).all() and (empty["earnings_upcoming_5d"] == 0).all()
    assert (empty["earnings_event_volatility"] == 1.0).all()
    assert empty["days_since_earnings"].cast(pl.Float64).fill_nan(None).null_count() == empty.height
    # the daily-margin gate of x_dmi_impulse_dir: unknown without the source, 0 when present but empty
    ret = absent["returns_1d"].cast(pl.Float64).to_numpy()
    assert np.isnan(absent["x_dmi_impulse_dir"].cast(pl.Float64).to_numpy()).all()
    with_dm = dict(raw, markets_daily_margin_interest=frame("markets_daily_margin_interest", []))
    dm = pipeline.build_frame(with_dm, columns=cols)["x_dmi_impulse_dir"].cast(pl.Float64).to_numpy()
    np.testing.assert_array_equal(dm, np.where(np.isnan(ret), np.nan, 0.0))
    # the TOPIX gates of x_rev_gate and x_bo_gate: unknown without TOPIX
    no_tx = pipeline.build_frame({k: v for k, v in raw.items() if k != "indices_topix"}, columns=cols)
    for col in ("x_rev_gate", "x_bo_gate"):
        assert np.isnan(no_tx[col].cast(pl.Float64).to_numpy()).all(), col
    assert not np.isnan(absent["x_bo_gate"].cast(pl.Float64).to_numpy()).all()
