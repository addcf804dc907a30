"""The raw-store contract: atomic, schema-checked writes; readers see every part."""

import datetime as dt
import hashlib
import os

import polars as pl
import pytest

from etl.errors import GogookuError
from etl.sources.raw_store import (
    available_endpoints,
    check_frame,
    part_files,
    read_endpoint,
    read_frame,
    write_endpoint,
)
from etl.sources.schema import ENDPOINTS


def topix(days, close0=1000.0, start=dt.date(2024, 1, 4)):
    dates = [start + dt.timedelta(days=i) for i in range(days)]
    close = [close0 + i for i in range(days)]
    return pl.DataFrame(
        {"Date": dates, "Open": close, "High": close, "Low": close, "Close": close},
        schema=ENDPOINTS["indices_topix"].schema,
    )


def calendar():
    return pl.DataFrame(
        {"HolidayDivision": ["1", "0"], "Date": [dt.date(2024, 1, 4), dt.date(2024, 1, 6)]},
    )


def test_write_then_read_roundtrip_in_canonical_order(tmp_path):
    path = write_endpoint(tmp_path, "markets_trading_calendar", calendar())
    assert path == tmp_path / "markets_trading_calendar" / "data.parquet"
    out = read_endpoint(tmp_path, "markets_trading_calendar").collect()
    assert out.columns == ["Date", "HolidayDivision"]
    assert out["HolidayDivision"].to_list() == ["1", "0"]
    assert available_endpoints(tmp_path) == ["markets_trading_calendar"]


def test_missing_endpoint_reads_as_none(tmp_path):
    assert read_endpoint(tmp_path, "indices_topix") is None
    assert available_endpoints(tmp_path) == []


def test_unknown_endpoint_is_a_user_error(tmp_path):
    with pytest.raises(GogookuError, match="unknown raw endpoint 'prices'"):
        read_endpoint(tmp_path, "prices")


def test_parts_are_read_together_and_dedupe_keeps_the_later_part(tmp_path):
    write_endpoint(tmp_path, "indices_topix", topix(3), part="2024-01")
    write_endpoint(tmp_path, "indices_topix", topix(5, close0=2000.0), part="2024-02")
    assert [p.name for p in part_files(tmp_path, "indices_topix")] == ["2024-01.parquet", "2024-02.parquet"]
    assert read_endpoint(tmp_path, "indices_topix").collect().height == 8
    deduped = read_frame(tmp_path, "indices_topix").sort("Date")
    assert deduped.height == 5 and deduped["Close"].to_list() == [2000.0, 2001.0, 2002.0, 2003.0, 2004.0]
    write_endpoint(tmp_path, "indices_topix", topix(2, close0=3000.0), part="2024-03")  # a lone correction
    assert read_frame(tmp_path, "indices_topix").sort("Date")["Close"].to_list() == [
        3000.0,
        3001.0,
        2002.0,
        2003.0,
        2004.0,
    ]
    disjoint = tmp_path / "disjoint"  # no key repeats: every row, in part order
    write_endpoint(disjoint, "indices_topix", topix(3), part="2024-01")
    write_endpoint(disjoint, "indices_topix", topix(2, close0=5.0, start=dt.date(2024, 2, 1)), part="2024-02")
    assert read_frame(disjoint, "indices_topix")["Close"].to_list() == [1000.0, 1001.0, 1002.0, 5.0, 6.0]


def test_rewriting_a_part_replaces_it_and_leaves_no_temp_file(tmp_path):
    write_endpoint(tmp_path, "indices_topix", topix(3))
    write_endpoint(tmp_path, "indices_topix", topix(2))
    assert read_endpoint(tmp_path, "indices_topix").collect().height == 2
    assert os.listdir(tmp_path / "indices_topix") == ["data.parquet"]


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    write_endpoint(tmp_path, "indices_topix", topix(3))

    def boom(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", boom)
    with pytest.raises(OSError, match="disk full"):
        write_endpoint(tmp_path, "indices_topix", topix(5))
    monkeypatch.undo()
    assert read_endpoint(tmp_path, "indices_topix").collect().height == 3
    assert os.listdir(tmp_path / "indices_topix") == ["data.parquet"]


def test_equal_frames_give_identical_bytes(tmp_path):
    a = write_endpoint(tmp_path / "a", "indices_topix", topix(50))
    b = write_endpoint(tmp_path / "b", "indices_topix", topix(50))
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()


def test_schema_errors_name_endpoint_and_columns(tmp_path):
    df = topix(2).rename({"Close": "C"})
    with pytest.raises(GogookuError, match=r"indices_topix: .*missing columns Close; unexpected columns C"):
        write_endpoint(tmp_path, "indices_topix", df)
    df = topix(2).with_columns(pl.col("Close").cast(pl.String))
    with pytest.raises(
        GogookuError, match=r"indices_topix: wrong column types: Close is String \(expected Float64\)"
    ):
        write_endpoint(tmp_path, "indices_topix", df)
    assert read_endpoint(tmp_path, "indices_topix") is None


def test_codes_must_have_five_characters():
    ep = ENDPOINTS["markets_weekly_margin_interest"]
    row = {c: None for c in ep.columns} | {"Date": dt.date(2024, 1, 5), "Code": "8697", "IssueType": "2"}
    df = pl.DataFrame([row], schema=ep.schema)
    with pytest.raises(GogookuError, match="5-character codes .*'8697'"):
        check_frame(ep.endpoint_id, df)
    assert check_frame(ep.endpoint_id, df.with_columns(Code=pl.lit("86970"))).height == 1


def test_duplicate_keys_and_null_keys_are_refused():
    with pytest.raises(GogookuError, match=r"duplicate rows for the key \(Date\)"):
        check_frame("indices_topix", pl.concat([topix(2), topix(1)]))
    with pytest.raises(GogookuError, match="key columns Date contain nulls"):
        check_frame("indices_topix", topix(2).with_columns(Date=pl.lit(None, dtype=pl.Date)).head(1))


def test_all_null_columns_of_dtype_null_are_cast():
    ep = ENDPOINTS["fins_announcement"]
    df = pl.DataFrame({c: [None] for c in ep.columns}).with_columns(Code=pl.lit("13010"))
    out = check_frame(ep.endpoint_id, df)
    assert out.schema == ep.schema  # announcement Date may be null ("" = undecided)


def test_bad_part_name(tmp_path):
    with pytest.raises(GogookuError, match="part name"):
        write_endpoint(tmp_path, "indices_topix", topix(1), part="../x")
