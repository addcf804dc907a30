"""`gogooku etl` end to end: raw store -> feature store layout, catalog, missing endpoints, malformed data."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import polars as pl
import pytest
from test_etl_helpers import END, START, make_raw
from typer.testing import CliRunner

from etl.errors import GogookuError
from etl.features.registry import REGISTRY, load_all
from etl.sources.raw_store import write_endpoint
from etl.store import feature_store as store
from train.cli import app

runner = CliRunner()


def _flat(text: str) -> str:
    return " ".join(text.split())


def _write(raw_dir, raw, skip=()):
    for eid, df in raw.items():
        if eid not in skip:
            write_endpoint(raw_dir, eid, df)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("etl")
    raw = make_raw()
    _write(tmp / "raw", raw)
    result = runner.invoke(
        app, ["etl", "--raw", str(tmp / "raw"), "--out", str(tmp / "feat"), "--device", "cpu"]
    )
    return tmp, raw, result


def test_cli_builds_a_year_partitioned_store(built):
    tmp, raw, result = built
    assert result.exit_code == 0, result.output
    assert "rows" in result.output
    parts = sorted((tmp / "feat").glob("year=*/part-*.parquet"))
    assert [p.parent.name for p in parts] == ["year=2022"]
    df = store.scan(tmp / "feat").collect()
    load_all()
    expected = ["Code", "Date"] + [c for c in REGISTRY if c not in ("Code", "Date")]
    expected = [c for c in expected if c in df.columns or c in ("Code", "Date")]
    assert df.columns == expected
    assert df.equals(df.sort(["Code", "Date"]))
    assert "13060" not in df["Code"].to_list()  # ETF outside the universe
    assert df.select(pl.struct("Code", "Date").is_duplicated().any()).item() is False
    cat = json.loads((tmp / "feat" / "catalog.json").read_text())
    assert [c["name"] for c in cat["columns"]] == df.columns
    for c in cat["columns"]:
        assert df.schema[c["name"]] == store.POLARS_DTYPES[c["dtype"]], c["name"]
    assert cat["schema_hash"] == store.schema_hash(df.columns[2:])
    entry = next(c for c in cat["columns"] if c["name"] == "rsi_14")
    assert entry["group"] == "technical" and entry["role"] == "I" and entry["window"] and entry["doc"]


def test_missing_endpoints_warn_once_and_give_nan(tmp_path):
    raw = make_raw()
    _write(tmp_path / "raw", raw, skip=("indices_topix",))
    result = runner.invoke(
        app, ["etl", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "f"), "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    assert _flat(result.output).count("raw store lacks indices_topix") == 1
    df = store.scan(tmp_path / "f").collect()
    assert df["mkt_ret_1d"].null_count() == df.height and df["beta_60d"].null_count() == df.height
    assert (df["is_mkt_z_valid"] == 0).all() and (df["is_beta_valid"] == 0).all()
    assert df["returns_1d"].null_count() < df.height


def _with_dq(raw, dq):
    return {**raw, "prices_daily_quotes": dq}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda dq: pl.concat([dq, dq.head(2)]), "duplicate"),
        (
            lambda dq: dq.with_columns(
                pl.when(pl.col("Code") == "10100").then(-1.0).otherwise(pl.col("Close")).alias("Close")
            ),
            "non-positive prices",
        ),
        (
            lambda dq: pl.concat([dq, dq.head(1).with_columns(pl.lit(dt.date(2022, 1, 8)).alias("Date"))]),
            "dates off the trading calendar",
        ),
    ],
)
def test_malformed_raw_data_is_one_clear_error(tmp_path, mutate, message):
    from etl import pipeline

    raw = make_raw()
    bad = _with_dq(raw, mutate(raw["prices_daily_quotes"]))
    with pytest.raises(pipeline.EtlDataError, match=message) as err:
        pipeline.build_frame(bad)
    assert "prices_daily_quotes" in str(err.value) and "e.g. Date=" in str(err.value)
    if message != "duplicate":  # the raw store itself refuses duplicate keys
        _write(tmp_path / "raw", bad)
        result = runner.invoke(app, ["etl", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "f")])
        assert result.exit_code == 2 and message in _flat(result.output) and "Traceback" not in result.output


def test_missing_raw_store_is_a_user_error(tmp_path):
    result = runner.invoke(app, ["etl", "--raw", str(tmp_path / "nope"), "--out", str(tmp_path / "f")])
    assert result.exit_code == 2 and "does not exist" in _flat(result.output)


@pytest.mark.parametrize("flag", ["--chunk", "--workers"])
def test_zero_chunk_or_workers_is_a_user_error(tmp_path, flag):
    _write(tmp_path / "raw", make_raw())
    result = runner.invoke(
        app, ["etl", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "f"), flag, "0"]
    )
    assert result.exit_code == 2 and f"{flag} must be at least 1, got 0" in _flat(result.output)


def test_start_end_window_keeps_history_for_windows(tmp_path):
    from etl import pipeline

    raw = make_raw()
    full = pipeline.build_frame(raw)
    part = pipeline.build_frame(raw, start="2022-06-01", end="2022-06-30")
    assert part["Date"].min() >= dt.date(2022, 6, 1) and part["Date"].max() <= dt.date(2022, 6, 30)
    same = full.filter(pl.col("Date").is_between(dt.date(2022, 6, 1), dt.date(2022, 6, 30)))
    assert same.select("Code", "Date", "volatility_60d").equals(part.select("Code", "Date", "volatility_60d"))


def test_dates_beyond_the_data_and_short_history_are_said():
    """--start/--end beyond the price data are clipped with a note; history too short for the graph or the
    252-session windows is a warning, not a silent empty column. make_raw spans 2022-01-04..2022-08-31: 162
    sessions, 19 of them in January (the 10th is a holiday)."""
    from etl import pipeline

    raw = make_raw()
    longest, names = pipeline.longest_windows()
    assert longest == 252 and names[:3] == ["mkt_dd_from_peak", "mkt_ret_1d_z", "mkt_vol_20d_z"]
    shown = "mkt_dd_from_peak, mkt_ret_1d_z, mkt_vol_20d_z, ..."
    notes: list[str] = []
    df = pipeline.build_frame(raw, start="2021-01-01", end="2023-01-01", notify=notes.append)
    assert (df["Date"].min(), df["Date"].max(), df["Date"].n_unique()) == (START, END, 162)
    assert notes == [
        "--start 2021-01-01 is before the first price date 2022-01-04: the dataset starts there",
        "--end 2023-01-01 is after the last price date 2022-08-31: the dataset ends there",
        "the first 40 dataset sessions have no graph: 162 dataset sessions and 0 before them "
        "(graph.min_obs = 40)",
        f"162 dataset sessions and 0 before them: fewer than the 252 sessions that the longest windows need "
        f"({shown}); expect those columns to be null",
    ]
    assert all(df[c].null_count() == df.height for c in names)

    notes.clear()  # March 1 to April 22 (the 21st of March is a holiday): 22 + 16 sessions, no history
    short = pipeline.build_frame(raw, start="2022-03-01", end="2022-04-22", history=0, notify=notes.append)
    assert short["Date"].n_unique() == 38 and short["graph_degree"].null_count() == short.height
    assert notes[0] == (
        "no daily graphs: 38 dataset sessions and 0 before them, and a graph needs graph.min_obs = 40 "
        "returns in its 60-session window (0 edges; the graph columns are null)"
    )
    notes.clear()  # the first graph is at grid session 40, i.e. dataset session 40 - 19 = 21
    part = pipeline.build_frame(raw, start="2022-02-01", end="2022-04-22", notify=notes.append)
    first_graph = part.filter(pl.col("graph_degree").is_not_null())["Date"].min()
    assert part.filter(pl.col("Date") < first_graph)["Date"].n_unique() == 21
    assert notes[0] == (
        "the first 21 dataset sessions have no graph: 56 dataset sessions and 19 before them "
        "(graph.min_obs = 40)"
    )
    notes.clear()  # without --start/--end: nothing clipped, and the graph's first 40 sessions are expected
    pipeline.build_frame(raw, notify=notes.append)
    assert len(notes) == 1 and "fewer than the 252 sessions" in notes[0]


def test_to_series_casts_and_nulls():
    s = store.to_series("x", "i8", np.array([1.0, np.nan, 0.0]))
    assert s.dtype == pl.Int8 and s.to_list() == [1, None, 0]
    f = store.to_series("y", "f32", np.array([np.inf, 1.5, np.nan]))
    assert f.to_list() == [None, 1.5, None]
    # beyond the f32 range is ±inf in f32, so null too; a float32 input (cast on the device) is not mutated
    assert store.to_series("y", "f32", np.array([1e39, -1e39, 2.0])).to_list() == [None, None, 2.0]
    on_device = np.array([np.inf, 0.25], dtype=np.float32)
    assert store.to_series("y", "f32", on_device).to_list() == [None, 0.25] and np.isinf(on_device[0])
    # columns reach the host as blocks in (Code, Date) order: [T=2, n=2] panels, stock 0 kept on both dates
    a, b = np.array([[1e39, 1.0], [0.5, 2.0]]), np.array([[3.0, 4.0], [5.0, 6.0]])
    keep = np.array([[True, True], [False, True]])  # [n, T]
    block = store.select_block([a, b], keep)
    assert block.dtype == np.float32 and block.shape == (2, 3) and np.isinf(block[0, 0])
    np.testing.assert_array_equal(block[1], [3.0, 5.0, 6.0])
    wide = store.select_block([a, b.astype(bool)], keep, np.float64)
    np.testing.assert_array_equal(wide, [[1e39, 0.5, 2.0], [1.0, 1.0, 1.0]])
    t = store.to_series("s", "str", (np.array([1.0, np.nan]), ("a", "b")))
    assert t.to_list() == ["b", None]
    # a null first value (an empty Sector33 field on a chunk's first row) once failed: Object dtype
    first_null = store.to_series("s", "str", (np.array([np.nan, 0.0, 1.0]), ("a", "b")))
    assert first_null.dtype == pl.String and first_null.to_list() == [None, "a", "b"]
    assert store.to_series("s", "str", (np.array([np.nan, np.nan]), ())).to_list() == [None, None]
    big = store.to_series("n", "i16", np.array([np.nan, 2.5, 3.5, -np.inf, 30000.0]))
    assert big.dtype == pl.Int16 and big.to_list() == [None, 2, 4, None, 30000]  # half to even, as np.round
    with pytest.raises(pl.exceptions.InvalidOperationError):
        store.to_series("n", "i8", np.array([1.0, 300.0]))


def test_chunking_does_not_change_values(monkeypatch):
    """Stock chunks, chunk threads and chunked full-width columns give exactly the single-piece build."""
    from etl import pipeline
    from etl.features import registry

    raw = make_raw()
    widths = []
    by_chunks = registry.FeatureContext._by_chunks

    def spy(ctx, name):
        widths.append(ctx.params.full_width_chunk)
        return by_chunks(ctx, name)

    monkeypatch.setattr(registry.FeatureContext, "_by_chunks", spy)
    whole = pipeline.build_frame(raw, chunk_size=1000)
    assert widths == []  # the root is narrower than one piece
    monkeypatch.setattr(pipeline, "FULL_WIDTH_CHUNK", 2)  # root pieces: widened to the chunk size, 3
    pieces = pipeline.build_frame(raw, chunk_size=3, workers=3)
    assert widths and set(widths) == {3}
    assert whole.equals(pieces)


def test_graph_stage_in_the_callers_thread_gives_the_same_store(monkeypatch):
    """The GPU form of the graph stage (no background thread, metrics on one thread) equals the CPU form."""
    from etl import pipeline
    from etl.features import graph_columns

    raw = make_raw()
    threaded = pipeline.build_frame(raw, chunk_size=4, workers=2)
    start, calls = graph_columns.start_graph_stage, []

    def inline_stage(root, background):
        calls.append(background)
        return start(root, background=False)

    monkeypatch.setattr(graph_columns, "start_graph_stage", inline_stage)
    inline = pipeline.build_frame(raw, chunk_size=4)
    assert calls == [True]  # the CPU build asked for the background form and got the inline one
    assert inline.equals(threaded)
    assert inline["graph_degree"].null_count() < inline.height  # the graph columns were built


def test_write_and_graph_errors_reach_the_caller(tmp_path, monkeypatch):
    """The Parquet writer and the graph stage run in background threads: their errors still end the build."""
    from etl import pipeline
    from etl.graph import corr as graph_corr

    _write(tmp_path / "raw", make_raw())

    def disk_full(*args):
        raise OSError("No space left on device")

    monkeypatch.setattr(store, "write_chunk", disk_full)
    with pytest.raises(OSError, match="No space left"):
        pipeline.build_store(tmp_path / "raw", tmp_path / "feat", device="cpu", chunk_size=2)
    monkeypatch.undo()

    def broken(*args, **kwargs):
        raise MemoryError("graph stage out of memory")

    monkeypatch.setattr(graph_corr, "peer_table", broken)  # the correlations' background thread
    with pytest.raises(MemoryError, match="graph stage"):
        pipeline.build_store(tmp_path / "raw", tmp_path / "feat2", device="cpu", chunk_size=2)


def test_gpu_out_of_memory_is_a_one_line_error(tmp_path, monkeypatch):
    """CuPy's OutOfMemoryError (from a chunk or the graph thread) becomes a GogookuError naming --chunk."""
    from etl import pipeline

    oom = type("OutOfMemoryError", (MemoryError,), {"__module__": "cupy.cuda.memory"})

    def out_of_memory(*args, **kwargs):
        raise oom("Out of memory allocating 20,000,000,000 bytes")

    _write(tmp_path / "raw", make_raw())
    monkeypatch.setattr(pipeline, "run", out_of_memory)
    with pytest.raises(
        GogookuError, match=r"GPU ran out of memory with 8-stock chunks .* --chunk \(e.g. 4\)"
    ):
        pipeline.build_store(tmp_path / "raw", tmp_path / "feat", device="cpu", chunk_size=8)

    def host_memory(*args, **kwargs):
        raise MemoryError("host")

    monkeypatch.setattr(pipeline, "run", host_memory)
    with pytest.raises(MemoryError, match="host"):  # any other error is the build's own
        pipeline.build_store(tmp_path / "raw", tmp_path / "feat", device="cpu", chunk_size=8)


def test_without_listed_info_and_statements():
    """No listed/info: every common stock with quotes is in the universe, listed-info columns null/-1."""
    from etl import pipeline

    raw = {k: v for k, v in make_raw().items() if k not in ("listed_info", "fins_statements")}
    df = pipeline.build_frame(raw)
    assert "13060" in df["Code"].to_list()  # the ETF cannot be told apart without its MarketCode
    assert df["Section"].null_count() == df.height and (df["sector33_id"] == -1).all()
    assert (
        df["shares_outstanding"].null_count() == df.height and df["turnover_rate"].null_count() == df.height
    )
    assert (df["sec_member_cnt"] == 0).all() and (df["is_sec_valid"] == 0).all()
    assert df["returns_1d"].null_count() < df.height


def test_a_missing_store_says_where_a_relative_path_was_looked_for(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(GogookuError, match=f"relative to the current folder {tmp_path}"):
        store.read_catalog("data/features")
    with pytest.raises(GogookuError) as err:
        store.read_catalog(tmp_path / "features")
    assert "relative" not in str(err.value) and "run `gogooku etl` first" in str(err.value)
