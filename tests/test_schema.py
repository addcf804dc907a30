"""The raw-store schema matches the API reference (../shared/jquants_api.md §2 and §3)."""

import polars as pl
import pytest

from etl.sources.schema import ENDPOINTS, STATEMENT_VALUE_COLUMNS, endpoint_id_of, v2_to_v1

STORED = [
    "listed_info",
    "prices_daily_quotes",
    "indices_topix",
    "markets_trades_spec",
    "fins_statements",
    "fins_announcement",
    "markets_weekly_margin_interest",
    "markets_daily_margin_interest",
    "markets_short_selling",
    "markets_short_selling_positions",
    "markets_trading_calendar",
]


def test_the_eleven_endpoints_are_stored_under_their_v1_path_ids():
    assert sorted(ENDPOINTS) == sorted(STORED)
    for eid, ep in ENDPOINTS.items():
        assert endpoint_id_of(ep.v1_path) == eid
        assert set(ep.key) <= set(ep.columns)
        assert ep.date_column in ep.columns and ep.columns[ep.date_column] == pl.Date


def test_field_counts_match_the_reference():
    counts = {
        "listed_info": 13,
        "prices_daily_quotes": 16,
        "indices_topix": 5,
        "markets_trades_spec": 4 + 13 * 4,
        "fins_statements": 107,
        "fins_announcement": 7,
        "markets_weekly_margin_interest": 9,
        "markets_daily_margin_interest": 3 + 6 + 16,
        "markets_short_selling": 5,
        "markets_short_selling_positions": 14,
        "markets_trading_calendar": 2,
    }
    assert {k: len(e.columns) for k, e in ENDPOINTS.items()} == counts


def test_every_v1_field_has_exactly_one_v2_name():
    for eid, ep in ENDPOINTS.items():
        assert sorted(ep.v2_names.values()) == sorted(ep.columns), eid
        assert len(set(ep.v2_names)) == len(ep.columns), eid


@pytest.mark.parametrize(
    ("eid", "v2", "v1"),
    [
        ("fins_statements", "NxFNp", "NextYearForecastProfit"),
        ("fins_statements", "NxFNCNP2Q", "NextYearForecastNonConsolidatedProfit2ndQuarter"),
        ("fins_statements", "Code", "LocalCode"),
        (
            "fins_statements",
            "ShOutFY",
            "NumberOfIssuedAndOutstandingSharesAtTheEndOfFiscalYearIncludingTreasuryStock",
        ),
        ("fins_statements", "FDivAnn", "ForecastDividendPerShareAnnual"),
        ("fins_statements", "NxFPayoutRatioAnn", "NextYearForecastPayoutRatioAnnual"),
        ("prices_daily_quotes", "AdjVo", "AdjustmentVolume"),
        ("prices_daily_quotes", "Va", "TurnoverValue"),
        ("markets_trades_spec", "FrgnBal", "ForeignersBalance"),
        ("markets_trades_spec", "TotTot", "TotalTotal"),
        ("markets_trades_spec", "Bank" + "Buy", "CityBKsRegionalBKsEtcPurchases"),
        ("markets_daily_margin_interest", "SLRatio", "ShortLongRatio"),
        ("markets_daily_margin_interest", "PubReason.Monitoring", "PublishReason.Monitoring"),
        ("markets_daily_margin_interest", "LongStdOutChg", "DailyChangeLongStandardizedMarginOutstanding"),
        ("markets_weekly_margin_interest", "IssType", "IssueType"),
        ("markets_short_selling", "S33", "Sector33Code"),
        ("markets_short_selling_positions", "PrevRptDate", "CalculationInPreviousReportingDate"),
        ("markets_trading_calendar", "HolDiv", "HolidayDivision"),
        ("listed_info", "Mkt", "MarketCode"),
        ("fins_announcement", "FQ", "FiscalQuarter"),
    ],
)
def test_v2_names_from_the_reference(eid, v2, v1):
    assert ENDPOINTS[eid].v2_names[v2] == v1


def test_v2_to_v1_renames_known_and_skips_unknown():
    assert v2_to_v1("indices_topix", ["Date", "O", "Extra"]) == {"Date": "Date", "O": "Open"}


def test_dtype_rule():
    dq = ENDPOINTS["prices_daily_quotes"].columns
    assert dq["Date"] == pl.Date and dq["Code"] == pl.String
    assert dq["UpperLimit"] == pl.String and dq["AdjustmentClose"] == pl.Float64
    st = ENDPOINTS["fins_statements"].columns
    assert st["DisclosedDate"] == pl.Date
    assert all(t == pl.String for c, t in st.items() if c != "DisclosedDate")
    assert "NetSales" in STATEMENT_VALUE_COLUMNS and "DisclosedTime" not in STATEMENT_VALUE_COLUMNS
    dm = ENDPOINTS["markets_daily_margin_interest"].columns
    assert dm["DailyChangeShortMarginOutstanding"] == pl.String  # "-" when not published the day before
    assert dm["ShortMarginOutstandingListedShareRatio"] == pl.String  # "*" for ETFs
    assert dm["ShortLongRatio"] == pl.Float64
    sp = ENDPOINTS["markets_short_selling_positions"].columns
    assert (
        sp["CalculationInPreviousReportingDate"] == pl.Date
        and sp["ShortPositionsInSharesNumber"] == pl.Float64
    )
    ts = ENDPOINTS["markets_trades_spec"].columns
    assert list(ts)[:4] == ["PublishedDate", "StartDate", "EndDate", "Section"]
    assert ts["ForeignersBalance"] == pl.Float64


def test_empty_frames_have_the_schema():
    for ep in ENDPOINTS.values():
        assert ep.empty().schema == ep.schema
