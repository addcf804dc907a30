"""Financial statements (stmt_*, is_stmt_valid): 15:00 rule, A/P/G tracks, revisions, splits — hand-worked."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
from test_etl_events_core import make_calendar, row_of

from etl.features import statements
from etl.panels.events import EventDataError
from etl.sources.schema import ENDPOINTS

SCHEMA = ENDPOINTS["fins_statements"].schema
CODES = np.array(["11110", "22220"])


def doc(code: str, date: str, time: str, number: str, kind: str, period: str, **fields: str) -> dict:
    rec = {c: "" for c in SCHEMA}
    rec |= {
        "LocalCode": code,
        "DisclosedDate": dt.date.fromisoformat(date),
        "DisclosedTime": time,
        "DisclosureNumber": number,
        "TypeOfDocument": kind,
        "TypeOfCurrentPeriod": period,
    }
    return rec | fields


def frame(docs: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(docs, schema=SCHEMA)


FY23 = {"CurrentFiscalYearStartDate": "2023-04-01", "CurrentFiscalYearEndDate": "2024-03-31"}
FY24 = {"CurrentFiscalYearStartDate": "2024-04-01", "CurrentFiscalYearEndDate": "2025-03-31"}


def scenario() -> list[dict]:
    A = "11110"
    return [
        doc(A, "2023-05-12", "14:00:00", "1", "FYFinancialStatements_Consolidated_JP", "FY",
            CurrentFiscalYearStartDate="2022-04-01", CurrentFiscalYearEndDate="2023-03-31",
            CurrentPeriodEndDate="2023-03-31", NextFiscalYearEndDate="2024-03-31",
            NetSales="1000", OperatingProfit="100", Profit="60", TotalAssets="2000", Equity="800",
            NextYearForecastNetSales="1200", NextYearForecastOperatingProfit="120",
            NextYearForecastProfit="70",
            NextYearForecastEarningsPerShare="50", NextYearForecastDividendPerShareAnnual="20"),
        doc(A, "2023-08-10", "15:00:00", "2", "1QFinancialStatements_Consolidated_JP", "1Q", **FY23,
            CurrentPeriodEndDate="2023-06-30", NetSales="300", OperatingProfit="30", Profit="15",
            TotalAssets="2100", Equity="810", ForecastNetSales="1250", ForecastOperatingProfit="120",
            ForecastProfit="70", ForecastEarningsPerShare="50", ForecastDividendPerShareAnnual="20",
            ChangesInAccountingEstimates="true"),
        doc(A, "2023-10-02", "16:00:00", "3", "EarnForecastRevision", "FY", **FY23,
            ForecastNetSales="1100", ForecastProfit="80"),
        doc(A, "2023-11-10", "13:00:00", "4", "2QFinancialStatements_Consolidated_JP", "2Q", **FY23,
            CurrentPeriodEndDate="2023-09-30", NetSales="650", OperatingProfit="60", Profit="35",
            TotalAssets="2200", Equity="820", ForecastEarningsPerShare="50", RetrospectiveRestatement="true"),
        doc(A, "2024-02-09", "14:30:00", "5", "3QFinancialStatements_Consolidated_JP", "3Q", **FY23,
            CurrentPeriodEndDate="2023-12-31", NetSales="950", OperatingProfit="90", Profit="50",
            TotalAssets="2300", Equity="830", ForecastEarningsPerShare="26",
            ForecastDividendPerShareAnnual="10"),
        doc(A, "2024-08-09", "10:00:00", "6", "1QFinancialStatements_Consolidated_JP", "1Q", **FY24,
            CurrentPeriodEndDate="2024-06-30", NetSales="330", OperatingProfit="27", Profit="-15",
            TotalAssets="2400", Equity="840"),
        # same session, same time: the higher DisclosureNumber is the later document
        doc(A, "2024-08-09", "10:00:00", "7", "EarnForecastRevision", "FY", **FY24, ForecastNetSales="1500"),
        doc(A, "2024-08-09", "10:00:00", "6b", "EarnForecastRevision", "FY", **FY24, ForecastNetSales="1400"),
        doc("22220", "2023-06-01", "14:59:59", "8", "EarnForecastRevision", "FY", **FY23, ForecastProfit="5"),
    ]  # fmt: skip


def run(docs, cal, split_day: str | None = "2023-12-01"):
    T = cal.T
    af = np.ones((T, len(CODES)))
    if split_day:
        af[row_of(cal, split_day), 0] = 0.5
    mcap = np.full((T, len(CODES)), 1e4)
    return statements.compute(np, cal, CODES, frame(docs), af, mcap)


def test_statement_tracks_hand_worked():
    cal, _ = make_calendar("2023-01-02", "2024-12-30")
    out = run(scenario(), cal)
    r = lambda s: row_of(cal, s)  # noqa: E731
    col = lambda name, s, c=0: out[name][r(s), c]  # noqa: E731
    # D track: validity, impulse, days since; 14:00 -> same day
    assert out["is_stmt_valid"][r("2023-05-11"), 0] == 0 and col("is_stmt_valid", "2023-05-12") == 1
    assert np.isnan(col("stmt_imp_statement", "2023-05-11"))
    assert col("stmt_imp_statement", "2023-05-12") == 1 and col("stmt_imp_statement", "2023-05-15") == 0
    assert col("stmt_days_since_statement", "2023-05-15") == 3
    # A = FY doc: margins, ROE over 12 months; no prior-year comparator yet
    assert col("stmt_opm", "2023-05-12") == pytest.approx(0.1)
    assert col("stmt_npm", "2023-05-12") == pytest.approx(0.06)
    assert col("stmt_roe", "2023-05-12") == pytest.approx(60 / 800)
    assert col("stmt_roa", "2023-05-12") == pytest.approx(60 / 2000)
    assert col("stmt_equity_ratio", "2023-05-12") == pytest.approx(0.4)
    assert np.isnan(col("stmt_yoy_sales", "2023-05-12"))
    assert col("stmt_change_in_est", "2023-05-12") == 0 and col("stmt_nc_flag", "2023-05-12") == 0
    # FY results' NextYearForecast targets FY ending 2024-03-31; the FY doc's own year has no guidance
    assert np.isnan(col("stmt_progress_sales", "2023-05-12"))
    assert col("stmt_ep_fore", "2023-05-12") == pytest.approx(70 / 1e4)
    assert col("stmt_bp", "2023-05-12") == pytest.approx(800 / 1e4)
    # 1Q at exactly 15:00:00 -> effective the next business day (Aug 11)
    assert col("stmt_opm", "2023-08-10") == pytest.approx(0.1) and col(
        "stmt_opm", "2023-08-11"
    ) == pytest.approx(0.1)
    assert col("stmt_roe", "2023-08-10") == pytest.approx(60 / 800)
    assert col("stmt_roe", "2023-08-11") == pytest.approx(15 * 4 / 810)
    assert col("stmt_progress_sales", "2023-08-11") == pytest.approx(300 / 1250)
    assert col("stmt_progress_op", "2023-08-11") == pytest.approx(30 / 120)
    assert col("stmt_rev_fore_sales", "2023-08-11") == pytest.approx(50 / 1200)
    assert col("stmt_rev_fore_op", "2023-08-11") == 0.0
    assert col("stmt_change_in_est", "2023-08-11") == 1
    # revision at 16:00 on Oct 2 -> Oct 3: guidance 1100 for A's year; OP guidance untouched
    assert col("stmt_progress_sales", "2023-10-02") == pytest.approx(300 / 1250)
    assert col("stmt_progress_sales", "2023-10-03") == pytest.approx(300 / 1100)
    assert col("stmt_rev_fore_sales", "2023-10-03") == pytest.approx(-150 / 1250)
    assert col("stmt_rev_fore_np", "2023-10-03") == pytest.approx(10 / 70)
    assert col("stmt_rev_fore_op", "2023-10-03") == 0.0
    assert col("stmt_ep_fore", "2023-10-03") == pytest.approx(80 / 1e4)
    assert col("stmt_change_in_est", "2023-10-03") == 1  # A is still the 1Q document
    # 2Q: progress against the revised guidance; nc flag from RetrospectiveRestatement
    assert col("stmt_progress_sales", "2023-11-10") == pytest.approx(650 / 1100)
    assert col("stmt_nc_flag", "2023-11-10") == 1 and col("stmt_change_in_est", "2023-11-10") == 0
    assert col("stmt_rev_fore_eps", "2023-11-10") == 0.0
    # 3Q after a 2:1 split on Dec 1: EPS guidance 26 vs 50 x 0.5 = 25; dividend 10 vs 20 x 0.5
    assert col("stmt_rev_fore_eps", "2024-02-09") == pytest.approx(0.04)
    assert col("stmt_rev_div_fore", "2024-02-09") == pytest.approx(0.0)
    assert col("stmt_roe", "2024-02-09") == pytest.approx(50 * 12 / 9 / 830)
    # next year's 1Q: prior-year comparator is last year's 1Q (start 366 days earlier)
    assert col("stmt_yoy_sales", "2024-08-09") == pytest.approx(0.1)
    assert col("stmt_yoy_op", "2024-08-09") == pytest.approx(-0.1)
    assert col("stmt_yoy_np", "2024-08-09") == pytest.approx(-2.0)
    # two revisions in the same minute: DisclosureNumber "7" > "6b" wins
    assert col("stmt_progress_sales", "2024-08-09") == pytest.approx(330 / 1500)
    assert col("stmt_rev_fore_sales", "2024-08-09") == pytest.approx(100 / 1400)
    # the other code: 14:59:59 is before the cut-off -> same day
    assert col("is_stmt_valid", "2023-05-31", 1) == 0 and col("is_stmt_valid", "2023-06-01", 1) == 1
    assert np.isnan(col("stmt_opm", "2023-06-01", 1))  # no earnings document: A track empty
    assert col("stmt_ep_fore", "2023-06-01", 1) == pytest.approx(5 / 1e4)


def test_no_split_no_adjustment_and_clip():
    cal, _ = make_calendar("2023-01-02", "2024-12-30")
    out = run(scenario(), cal, split_day=None)
    assert out["stmt_rev_fore_eps"][row_of(cal, "2024-02-09"), 0] == pytest.approx(-24 / 50)
    docs = [
        doc("11110", "2023-05-12", "09:00:00", "1", "FYFinancialStatements_Consolidated_JP", "FY",
            CurrentFiscalYearStartDate="2022-04-01", CurrentPeriodEndDate="2023-03-31", NetSales="0",
            OperatingProfit="5", Profit="1", Equity="1", TotalAssets="2"),
    ]  # fmt: skip
    out = run(docs, cal)
    assert out["stmt_opm"][row_of(cal, "2023-05-12"), 0] == 100.0  # 5 / (0 + EPS) clipped


def test_missing_and_malformed():
    cal, _ = make_calendar()
    out = statements.compute(np, cal, CODES, None, None, np.ones((cal.T, 2)))
    assert len(out) == 23 and (out["is_stmt_valid"] == 0).all()
    bad = [
        doc("11110", "2024-01-10", "09:00:00", "1", "EarnForecastRevision", "FY", ForecastNetSales="1,000")
    ]
    with pytest.raises(EventDataError, match="fins_statements: field ForecastNetSales must be a number"):
        run(bad, cal)
    bad = [doc("11110", "2024-01-10", "9am", "1", "EarnForecastRevision", "FY")]
    with pytest.raises(EventDataError, match="DisclosedTime must be"):
        run(bad, cal)
