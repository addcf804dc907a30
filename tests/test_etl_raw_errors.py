"""Bad raw parts and bad paths or dates given to `gogooku etl`: one line naming the file, the endpoint and
what is wrong, exit status 2, never a traceback."""

from __future__ import annotations

import re

import polars as pl
import pytest
from test_etl_helpers import make_raw
from typer.testing import CliRunner

from etl.sources.raw_store import RawStoreError, read_endpoint, read_frame, write_endpoint
from train.cli import app

DQ = "prices_daily_quotes"


@pytest.fixture(scope="module")
def raw():
    return make_raw(n_stocks=4)


def _store(tmp_path, raw):
    for eid, df in raw.items():
        write_endpoint(tmp_path / "raw", eid, df)
    return tmp_path / "raw"


def _etl(*args: str) -> list[str]:
    result = CliRunner().invoke(app, ["etl", "--device", "cpu", *args])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines


def _parquet_bytes(df: pl.DataFrame, tmp_path) -> bytes:
    path = tmp_path / "scratch.parquet"
    df.write_parquet(path)
    return path.read_bytes()


def _bad_parts(raw, tmp_path):
    """(part file name, its bytes, what the message must say) for each kind of bad part."""
    dq = raw[DQ]
    good = _parquet_bytes(dq.head(50), tmp_path)
    return {
        "truncated": (good[: len(good) // 2], "not a readable Parquet file"),
        "empty": (b"", "the file is empty (0 bytes)"),
        "missing": (_parquet_bytes(dq.drop("Volume"), tmp_path), "missing columns Volume"),
        "extra": (
            _parquet_bytes(dq.with_columns(pl.lit(1).alias("Note")), tmp_path),
            "unexpected columns Note",
        ),
        "text": (
            _parquet_bytes(dq.with_columns(pl.col("Close").cast(pl.String)), tmp_path),
            "wrong column types: Close is String (expected Float64)",
        ),
    }


@pytest.mark.parametrize("kind", ["truncated", "empty", "missing", "extra", "text"])
def test_a_bad_part_is_one_line_naming_file_and_endpoint(tmp_path, raw, kind):
    data, message = _bad_parts(raw, tmp_path)[kind]
    store = _store(tmp_path, raw)
    part = store / DQ / "2022-09.parquet"
    part.write_bytes(data)
    with pytest.raises(RawStoreError, match=re.escape(message)) as err:
        read_frame(store, DQ)
    assert str(part) in str(err.value) and f"raw endpoint {DQ}" in str(err.value)
    with pytest.raises(RawStoreError, match=re.escape(message)):
        read_endpoint(store, DQ)  # the lazy scan checks each part's footer first
    (line,) = _etl("--raw", str(store), "--out", str(tmp_path / "feat"))
    assert str(part) in line and DQ in line and message in line
    assert not (tmp_path / "feat").exists()


def test_duplicate_keys_within_a_part_name_the_part_and_rows(tmp_path, raw):
    store = _store(tmp_path, raw)
    dq = raw[DQ]
    part = store / DQ / "2022-09.parquet"
    pl.concat([dq.slice(0, 5), dq.slice(2, 1)]).write_parquet(part)  # row 5 repeats row 2's key
    first = dq.row(2, named=True)
    (line,) = _etl("--raw", str(store), "--out", str(tmp_path / "feat"))
    assert str(part) in line and "duplicate rows for the key (Date, Code): 2 rows" in line
    assert f"row 2: Date={first['Date']}, Code={first['Code']}; row 5: Date={first['Date']}" in line
    # across parts the later part still wins, row by row
    part.unlink()
    write_endpoint(store, DQ, dq.slice(2, 1).with_columns(pl.lit(7.0).alias("Close")), part="zz")
    merged = read_frame(store, DQ)
    assert merged.height == dq.height
    key = (pl.col("Date") == first["Date"]) & (pl.col("Code") == first["Code"])
    assert merged.filter(key)["Close"].to_list() == [7.0]


def test_bad_paths_and_dates(tmp_path, raw):
    store = _store(tmp_path, raw)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    (line,) = _etl("--raw", str(a_file), "--out", str(tmp_path / "feat"))
    assert f"--raw {a_file} is a file" in line
    (line,) = _etl("--raw", str(tmp_path / "nope"), "--out", str(tmp_path / "feat"))
    assert "does not exist" in line
    (line,) = _etl("--raw", str(store), "--out", str(a_file))
    assert f"--out {a_file} is a file" in line and a_file.read_text() == "mine"
    (line,) = _etl("--raw", str(store), "--out", str(tmp_path / "feat"), "--start", "2023-13-01")
    assert "--start '2023-13-01' is not a date (YYYY-MM-DD)" in line
    (line,) = _etl("--raw", str(store), "--out", str(tmp_path / "feat"), "--end", "2023/01/01")
    assert "--end '2023/01/01' is not a date (YYYY-MM-DD)" in line
    for out in (store, tmp_path, store / "features"):
        (line,) = _etl("--raw", str(store), "--out", str(out))
        assert "overlap: the feature store must be a folder apart from the raw store" in line
    assert sorted(p.name for p in store.iterdir()) == sorted(raw)
