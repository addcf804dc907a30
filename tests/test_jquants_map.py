"""v2 rows -> canonical frames: names, null tokens, numeric strings, nested objects (hand-worked values)."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from fake_jquants import frame_to_v2_rows
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from etl.sources.jquants_map import MappingError, rows_to_frame
from etl.sources.raw_store import check_frame
from etl.sources.schema import ENDPOINTS


def test_daily_quotes_numbers_strings_and_null_tokens():
    rows = [
        {
            "Date": "2024-01-05",
            "Code": "86970",
            "O": 2047.0,
            "H": "2069",
            "L": "",
            "C": "-",
            "UL": "0",
            "LL": "1",
            "Vo": "*",
            "Va": None,
            "AdjFactor": 1,
            "AdjO": 2047.5,
            "MO": 1.0,
        },  # fmt: skip
        {"Date": "20240109", "Code": "130A0"},
    ]
    df = rows_to_frame(ENDPOINTS["prices_daily_quotes"], rows)
    check_frame("prices_daily_quotes", df)
    assert df.columns == list(ENDPOINTS["prices_daily_quotes"].columns)  # "MO" (Premium) is not stored
    first, second = df.row(0, named=True), df.row(1, named=True)
    assert first["Date"] == dt.date(2024, 1, 5) and second["Date"] == dt.date(2024, 1, 9)
    assert (first["Open"], first["High"], first["Low"], first["Close"]) == (2047.0, 2069.0, None, None)
    assert (first["Volume"], first["TurnoverValue"], first["AdjustmentFactor"]) == (None, None, 1.0)
    assert (first["UpperLimit"], first["LowerLimit"], first["AdjustmentOpen"]) == ("0", "1", 2047.5)
    assert second["Code"] == "130A0" and second["Open"] is None


def test_daily_margin_nested_reason_and_mixed_text():
    rows = [
        {"PubDate": "2024-02-08", "Code": "13260", "AppDate": "2024-02-07",
         "PubReason": {"Restricted": "0", "PrecautionByJSF": "1"},
         "ShrtOut": 11.0, "ShrtOutChg": 0.0, "ShrtOutRatio": "*", "LongOut": "676", "LongOutChg": -20.0,
         "LongOutRatio": "-", "SLRatio": 1.6, "TSEMrgnRegCls": "001"},
    ]  # fmt: skip
    row = rows_to_frame(ENDPOINTS["markets_daily_margin_interest"], rows).row(0, named=True)
    assert row["PublishReason.Restricted"] == "0" and row["PublishReason.PrecautionByJSF"] == "1"
    assert row["PublishReason.Monitoring"] is None
    assert row["DailyChangeShortMarginOutstanding"] == "0.0"  # mixed N|S: the number's text
    assert row["DailyChangeLongMarginOutstanding"] == "-20.0"
    assert row["ShortMarginOutstandingListedShareRatio"] == "*"  # kept for the ETL, per the schema
    assert row["LongMarginOutstandingListedShareRatio"] == "-"
    assert row["LongMarginOutstanding"] == 676.0 and row["ShortLongRatio"] == 1.6


def test_statements_keep_published_text():
    rows = [{"DiscDate": "2023-01-30", "DiscTime": "12:00:00", "Code": "86970", "DiscNo": "20230127594871",
             "Sales": "100529000000", "OdP": "", "EPS": 66.76, "NxFNp": "1", "ChgAcEst": "true"}]  # fmt: skip
    row = rows_to_frame(ENDPOINTS["fins_statements"], rows).row(0, named=True)
    assert row["DisclosedDate"] == dt.date(2023, 1, 30) and row["LocalCode"] == "86970"
    assert row["NetSales"] == "100529000000" and row["OrdinaryProfit"] == ""
    assert row["EarningsPerShare"] == "66.76"  # a number sent where v1 sent text becomes the same text
    assert row["NextYearForecastProfit"] == "1" and row["ChangesInAccountingEstimates"] == "true"


def test_empty_dates_become_null():
    rows = [{"Date": "", "Code": "86970", "CoName": "日本取引所グループ"}]
    row = rows_to_frame(ENDPOINTS["fins_announcement"], rows).row(0, named=True)
    assert row["Date"] is None and row["CompanyName"] == "日本取引所グループ"


def test_no_rows_gives_the_empty_canonical_frame():
    df = rows_to_frame(ENDPOINTS["indices_topix"], [])
    assert df.height == 0 and df.schema == ENDPOINTS["indices_topix"].schema


@pytest.mark.parametrize(
    ("endpoint_id", "row", "message"),
    [
        ("indices_topix", {"Date": "2024-01-05", "C": "n/a"}, "field Close: expected a number, got 'n/a'"),
        ("indices_topix", {"Date": "05/01/2024"}, "field Date: expected a date YYYY-MM-DD, got '05/01/2024'"),
        ("indices_topix", {"Date": "2024-01-05", "O": True}, "field Open: expected a number, got True"),
    ],
)
def test_bad_values_name_the_field(endpoint_id, row, message):
    with pytest.raises(MappingError, match=message):
        rows_to_frame(ENDPOINTS[endpoint_id], [row])


_floats = st.none() | st.floats(-1e12, 1e12, allow_nan=False, allow_infinity=False)
_dates = st.none() | st.dates(dt.date(2008, 1, 1), dt.date(2030, 12, 31))
_texts = st.none() | st.sampled_from(["", "-", "*", "0", "1", "-20.0", "3.5", "100", "日本"])


def _frame(endpoint_id: str, n: int, draw) -> pl.DataFrame:
    ep = ENDPOINTS[endpoint_id]
    data = {}
    for col, dtype in ep.columns.items():
        strategy = {pl.Float64: _floats, pl.Date: _dates}.get(dtype, _texts)
        data[col] = pl.Series(col, [draw(strategy) for _ in range(n)], dtype=dtype)
    return pl.DataFrame(data)


@settings(max_examples=40, deadline=None)
@given(
    endpoint_id=st.sampled_from(["prices_daily_quotes", "markets_daily_margin_interest", "fins_statements"]),
    n=st.integers(0, 6),
    data=st.data(),
)
def test_fake_encoding_round_trips_through_the_client_mapping(endpoint_id, n, data):
    """Whatever quirky v2 form the fake sends for a canonical frame, the client maps it back exactly."""
    frame = _frame(endpoint_id, n, data.draw)
    ep = ENDPOINTS[endpoint_id]
    assert_frame_equal(rows_to_frame(ep, frame_to_v2_rows(ep, frame)), frame)
