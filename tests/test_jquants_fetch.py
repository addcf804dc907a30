"""`fetch` against the fake v2 server: the fetched store equals the served one, re-runs are incremental,
interrupted runs resume without duplicates, and failures stop only the endpoint they hit."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from fake_jquants import FakeJQuants, FakeState, Fault, max_in_window, tiny_market, v2_rows_from_store
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from etl.sources import jquants, raw_store
from etl.sources.jquants import (
    EndpointResult,
    FetchOptions,
    FetchReport,
    Progress,
    failure_summary,
    fetch,
    plan_units,
    resolve_endpoints,
    weekly_dates,
)
from etl.sources.schema import ENDPOINTS
from train.cli import app

START, END = dt.date(2024, 1, 4), dt.date(2024, 2, 9)
TODAY = dt.date(2024, 6, 3)
ALL = list(jquants.QUERIES)


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> tuple[Path, dict]:
    source = tmp_path_factory.mktemp("served")
    tiny_market(source, START, END, seed=3)
    return source, v2_rows_from_store(source)


def _state(market, **kw) -> FakeState:
    return FakeState(rows=market[1], page_size=kw.pop("page_size", 3), **kw)


def _options(fake: FakeJQuants, **kw) -> FetchOptions:
    kw.setdefault("requests_per_minute", 100_000)
    kw.setdefault("rate_period_s", 1.0)
    kw.setdefault("statements_lookback_days", 0)  # the tiny market has no statements before START
    return FetchOptions(
        api_key="test-key", base_url=fake.base_url, timeout_s=2.0, max_attempts=4, backoff_s=0.01, **kw
    )


def _read(raw: Path, endpoint_id: str) -> pl.DataFrame | None:
    lf = raw_store.read_endpoint(raw, endpoint_id)
    return None if lf is None else lf.collect().sort(list(ENDPOINTS[endpoint_id].key), nulls_last=True)


def assert_same_store(got: Path, want: Path, endpoints: list[str] = ALL) -> None:
    for endpoint_id in endpoints:
        mine, theirs = _read(got, endpoint_id), _read(want, endpoint_id)
        assert mine is not None, endpoint_id
        try:
            assert_frame_equal(mine, theirs, check_exact=True)
        except AssertionError as err:
            raise AssertionError(f"{endpoint_id}: {err}") from None


def test_fetch_equals_served_store_and_a_rerun_requests_nothing(market, tmp_path):
    state = _state(market)
    with FakeJQuants(state) as fake:
        report = fetch(_options(fake), tmp_path, START, END, today=TODAY)
        assert not report.failed, report.failed
        assert_same_store(tmp_path, market[0])
        first = len(state.served())
        # 26 sessions x 6 daily endpoints + 6 weeks + 3 ranges x 1 year + 1 snapshot, plus extra pages
        assert first >= 26 * 6 + 6 + 3 + 1
        before = {p: p.read_bytes() for p in tmp_path.glob("*/*.parquet")}
        again = fetch(_options(fake), tmp_path, START, END, today=TODAY)
    assert len(state.served()) == first and sum(r.requests for r in again.results) == 0
    assert {p: p.read_bytes() for p in tmp_path.glob("*/*.parquet")} == before
    # the archive keeps every response, compressed
    archived = list((tmp_path / "_jquants").glob("*/*/*.json.gz"))
    assert len(archived) == sum(r.units_fetched for r in report.results)


def test_daily_margin_corrections_are_kept(market, tmp_path):
    with FakeJQuants(_state(market)) as fake:
        fetch(_options(fake), tmp_path, START, END, ["markets_daily_margin_interest"], today=TODAY)
    df = _read(tmp_path, "markets_daily_margin_interest")
    corrected = df.filter(pl.struct("Code", "ApplicationDate").is_duplicated())
    assert corrected.height >= 2  # the original and the later-published correction, both kept
    assert (
        corrected.group_by("Code", "ApplicationDate")
        .agg(pl.col("PublishedDate").n_unique() == 2)["PublishedDate"]
        .all()
    )


def test_extending_the_period_fetches_only_the_new_dates(market, tmp_path):
    mid = dt.date(2024, 1, 24)
    state = _state(market)
    with FakeJQuants(state) as fake:
        fetch(_options(fake), tmp_path, START, mid, today=TODAY)
        n = len(state.served())
        fetch(_options(fake), tmp_path, START, END, today=TODAY)
    assert_same_store(tmp_path, market[0])
    for request in state.served()[n:]:
        dates = [v for k, v in request.params.items() if k in ("date", "disc_date", "from")]
        assert dates and all(d > mid.isoformat() for d in dates), request


class StopAfter(Progress):
    """Raises KeyboardInterrupt (Ctrl-C) after `n` finished units."""

    def __init__(self, n: int) -> None:
        self.left = n

    def advance(self, endpoint_id: str, rows: int, requests: int) -> None:
        self.left -= 1
        if self.left == 0:
            raise KeyboardInterrupt


@pytest.mark.parametrize("stop_after", [1, 17, 40, 95])
def test_ctrl_c_then_rerun_gives_the_same_store_without_duplicates(market, tmp_path, stop_after):
    with FakeJQuants(_state(market)) as fake:
        with pytest.raises(KeyboardInterrupt):
            fetch(_options(fake), tmp_path, START, END, progress=StopAfter(stop_after), today=TODAY)
        # a torn temp file from a killed writer is never read as data
        (tmp_path / "prices_daily_quotes").mkdir(exist_ok=True)
        (tmp_path / "prices_daily_quotes" / ".jq-2024-01.parquet.999.tmp").write_bytes(b"torn")
        report = fetch(_options(fake), tmp_path, START, END, today=TODAY)
    assert not report.failed
    assert_same_store(tmp_path, market[0])


def test_part_missing_from_state_is_rebuilt(market, tmp_path):
    """A kill after a unit was archived but before its part was written: the next run writes the part."""
    with FakeJQuants(_state(market)) as fake:
        fetch(_options(fake), tmp_path, START, END, ["prices_daily_quotes"], today=TODAY)
        part = tmp_path / "prices_daily_quotes" / "jq-2024-02.parquet"
        part.unlink()
        state = tmp_path / "_jquants" / "prices_daily_quotes" / "state.json"
        state.write_text("{")  # torn as well
        n = len(fake.state.served())
        fetch(_options(fake), tmp_path, START, END, ["prices_daily_quotes"], today=TODAY)
        assert len(fake.state.served()) == n  # archived units are not requested again
    assert part.exists()
    assert_same_store(tmp_path, market[0], ["prices_daily_quotes"])


def test_transient_faults_do_not_change_the_result(market, tmp_path):
    faults = [
        Fault("429", retry_after="0.05", path="/markets/calendar"),
        Fault("429", path="/equities/bars/daily"),
        Fault("500", path="/fins/summary"),
        Fault("disconnect", path="/equities/master"),
        Fault("truncate", path="/markets/short-ratio"),
        Fault("slow", delay_s=2.5, path="/markets/margin-alert"),  # past the 2 s timeout
        Fault("500", path="/equities/bars/daily"),
    ]
    state = _state(market, faults=faults)
    with FakeJQuants(state) as fake:
        report = fetch(_options(fake), tmp_path, START, END, today=TODAY)
    assert not report.failed and not state.faults
    assert_same_store(tmp_path, market[0])
    assert len(state.served(429)) == 2 and len(state.served(500)) == 2


def test_network_loss_stops_the_endpoint_and_the_rerun_completes_it(market, tmp_path):
    state = _state(market, faults=[Fault("disconnect", path="/equities/bars/daily") for _ in range(4)])
    with FakeJQuants(state) as fake:
        first = fetch(_options(fake), tmp_path, START, END, today=TODAY)
        assert [r.endpoint_id for r in first.failed] == ["prices_daily_quotes"]
        assert "gave up after 4 attempts, last: connection problem" in first.failed[0].error
        again = fetch(_options(fake), tmp_path, START, END, today=TODAY)
    assert not again.failed
    assert [r.requests for r in again.results if r.endpoint_id != "prices_daily_quotes"] == [0] * (
        len(ALL) - 1
    )
    assert_same_store(tmp_path, market[0])


def test_plan_range_stops_each_dated_endpoint_with_the_window(market, tmp_path):
    state = _state(market, plan_window=("2024-01-15", "2026-01-14"))
    with FakeJQuants(state) as fake:
        report = fetch(_options(fake), tmp_path, START, END, today=TODAY)
    failed = {r.endpoint_id: r for r in report.failed}
    assert set(failed) == set(ALL) - {"fins_announcement"}  # the snapshot has no dates and goes on
    for result in failed.values():
        assert "outside your J-Quants plan, which covers 2024-01-15 ~ 2026-01-14" in result.error
        assert result.requests == 1  # never retried
    assert_same_store(tmp_path, market[0], ["fins_announcement"])


def test_endpoint_not_in_plan_stops_alone_and_calendar_falls_back_to_xtks(market, tmp_path):
    state = _state(market, forbidden={"/markets/margin-alert", "/markets/calendar"})
    with FakeJQuants(state) as fake:
        report = fetch(_options(fake), tmp_path, START, END, today=TODAY)
    failed = {r.endpoint_id: r.error for r in report.failed}
    assert set(failed) == {"markets_daily_margin_interest", "markets_trading_calendar"}
    assert "this endpoint is not in your plan" in failed["markets_daily_margin_interest"]
    assert any("XTKS" in note for note in report.notes)
    others = [e for e in ALL if e not in failed]
    assert_same_store(tmp_path, market[0], others)


def test_a_value_outside_the_schema_stops_only_its_endpoint(market, tmp_path):
    rows = dict(market[1])
    topix = list(rows["/indices/bars/daily/topix"])
    topix[3] = {**topix[3], "C": "n/a"}
    rows["/indices/bars/daily/topix"] = topix
    with FakeJQuants(FakeState(rows=rows, page_size=3)) as fake:
        report = fetch(
            _options(fake), tmp_path, START, END, ["indices_topix", "prices_daily_quotes"], today=TODAY
        )
    assert [(r.endpoint_id, r.error) for r in report.failed] == [
        ("indices_topix", "/indices/bars/daily/topix field Close: expected a number, got 'n/a'")
    ]
    assert_same_store(tmp_path, market[0], ["prices_daily_quotes", "markets_trading_calendar"])
    # the response stays archived for re-parsing once the schema or the mapping is fixed
    assert list((tmp_path / "_jquants" / "indices_topix").glob("2024/*.json.gz"))


def test_cli_fetch_and_its_one_line_errors(market, tmp_path, monkeypatch):
    runner = CliRunner()
    with FakeJQuants(_state(market)) as fake:

        def run(out: Path, endpoints: str):
            args = ["fetch", "--start", "2024-01-04", "--end", "2024-01-12", "--out", str(out)]
            return runner.invoke(app, [*args, "-e", endpoints, f"fetch.base_url={fake.base_url}"])

        monkeypatch.setenv("JQUANTS_API_KEY", "test-key")
        result = run(tmp_path / "a", "prices/daily_quotes,indices_topix")
        assert result.exit_code == 0, result.output
        assert "prices_daily_quotes: 6/6 units, 24 rows" in result.output
        monkeypatch.setenv("JQUANTS_API_KEY", "not-my-key")
        result = run(tmp_path / "b", "equities/bars/daily")
    assert result.exit_code == 2
    assert "the API key is invalid; check JQUANTS_API_KEY" in result.output
    flat = " ".join(result.output.split())
    stopped = "error: 2 of 2 endpoint(s) stopped (markets_trading_calendar, prices_daily_quotes)"
    assert f"{stopped}; nothing was fetched" in flat
    assert "Traceback" not in result.output
    bad = runner.invoke(app, ["fetch", "--start", "2024-13-01", "--end", "2024-01-12"])
    assert bad.exit_code == 2 and "--start '2024-13-01' is not a date (YYYY-MM-DD)" in bad.output


def test_unreachable_server_shows_each_retry_and_a_truthful_summary(tmp_path, monkeypatch):
    """No network (a closed port): every retry is a line with its wait, and the summary does not claim that
    anything was fetched."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again below: connections are refused
    monkeypatch.setenv("JQUANTS_API_KEY", "a-bad-key")
    args = ["fetch", "--start", "2024-01-04", "--end", "2024-01-12", "--out", str(tmp_path / "raw"), "-e"]
    overrides = [f"fetch.base_url=http://127.0.0.1:{port}/v2", "fetch.max_attempts=3", "fetch.backoff_s=0.01"]
    result = CliRunner().invoke(app, [*args, "indices_topix,markets_trades_spec", *overrides])
    flat = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    retries = re.findall(
        r"retry: (/\S+) \S+: connection problem \(ConnectError\); retry (\d) of 2 in [\d.]+ s", flat
    )
    paths = ("/indices/bars/daily/topix", "/equities/investor-types")
    assert retries == [(p, n) for p in paths for n in "12"]
    assert (
        "error: 2 of 2 endpoint(s) stopped (indices_topix, markets_trades_spec); nothing was fetched" in flat
    )
    assert "the others" not in flat and "Traceback" not in result.output


def test_failure_summary_says_what_was_kept():
    def result(eid, fetched, error=None):
        return EndpointResult(eid, units_total=3, units_fetched=fetched, error=error)

    report = FetchReport([result("a", 3), result("b", 2, "HTTP 500"), result("c", 0, "401")])
    assert failure_summary(report) == (
        "2 of 3 endpoint(s) stopped (b, c); the other 1 are complete; 2 unit(s) of the stopped ones were "
        "fetched and are kept: re-run to fetch the rest"
    )
    assert failure_summary(FetchReport([result("a", 3), result("c", 0, "401")])) == (
        "1 of 2 endpoint(s) stopped (c); the other 1 are complete"
    )


def test_killed_process_resumes(market, tmp_path):
    """SIGKILL the real `gogooku fetch` mid-run (no cleanup runs at all), then re-run: same store."""
    state = _state(market)
    script = Path(sys.executable).parent / "gogooku"
    with FakeJQuants(state) as fake:
        cmd = [str(script), "fetch", "--start", START.isoformat(), "--end", END.isoformat()]
        cmd += ["--out", str(tmp_path), f"fetch.base_url={fake.base_url}", "fetch.requests_per_minute=40"]
        cmd += ["fetch.rate_period_s=1.0", "fetch.statements_lookback_days=0"]
        env = {**os.environ, "JQUANTS_API_KEY": "test-key"}
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while len(state.served()) < 60 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert 60 <= len(state.served()) < 200, "the kill must land mid-run"
        assert max_in_window([r.at for r in state.served()], 0.9) <= 40  # 40 per 1 s, 10% jitter allowed
        report = fetch(_options(fake), tmp_path, START, END, today=jquants.jst_today())
    assert not report.failed
    assert_same_store(tmp_path, market[0])


def test_end_is_clipped_to_yesterday_in_tokyo(market, tmp_path):
    state = _state(market)
    with FakeJQuants(state) as fake:
        report = fetch(_options(fake), tmp_path, START, END, ["indices_topix"], today=END)
    assert report.notes == [
        f"end clipped to {END - dt.timedelta(days=1)} (data of today, {END} JST, is not final yet)"
    ]
    assert {(r.params["from"], r.params["to"]) for r in state.served()} == {(START.isoformat(), "2024-02-08")}
    assert jquants.jst_today(lambda: dt.datetime(2024, 1, 4, 20, 0, tzinfo=dt.UTC)) == dt.date(2024, 1, 5)


def test_refuses_to_mix_with_a_synthetic_store(market):
    with FakeJQuants(_state(market)) as fake:
        with pytest.raises(jquants.GogookuError, match="already holds data not written by fetch"):
            fetch(_options(fake), market[0], START, END, ["indices_topix"], today=TODAY)
        assert fake.state.served() == []


# ------------------------------------------------------------------------------------------ planning
def test_weekly_dates_use_the_last_session_of_the_week():
    sessions = [dt.date(2024, 4, 29) + dt.timedelta(days=i) for i in range(12)]
    # Golden Week 2024: Apr 29 (Mon), May 3 (Fri), May 6 (Mon) are holidays
    holidays = {dt.date(2024, 4, 29), dt.date(2024, 5, 3), dt.date(2024, 5, 6)}
    sessions = [d for d in sessions if d.weekday() < 5 and d not in holidays]
    got = weekly_dates(sessions, dt.date(2024, 4, 29), dt.date(2024, 5, 10))
    assert got == [dt.date(2024, 5, 2), dt.date(2024, 5, 10)]
    # a week whose Friday is after `end` is not complete yet
    assert weekly_dates(sessions, dt.date(2024, 4, 29), dt.date(2024, 5, 9)) == [dt.date(2024, 5, 2)]


def test_range_units_cover_only_what_is_missing():
    units = plan_units(
        "indices_topix", dt.date(2023, 11, 1), dt.date(2025, 2, 1), [], {"2024-01-01_2024-06-30"}, TODAY
    )
    assert [u.params for u in units] == [
        {"from": "2023-11-01", "to": "2023-12-31"},
        {"from": "2024-07-01", "to": "2024-12-31"},
        {"from": "2025-01-01", "to": "2025-02-01"},
    ]
    assert [u.part for u in units] == ["2023", "2024", "2025"]


def test_daily_units_skip_archived_days_and_use_the_endpoint_parameter():
    days = [dt.date(2024, 1, 4), dt.date(2024, 1, 5), dt.date(2024, 1, 9)]
    units = plan_units("markets_short_selling_positions", days[0], days[-1], days, {"2024-01-05"}, TODAY)
    assert [(u.params, u.part) for u in units] == [
        ({"disc_date": "2024-01-04"}, "2024-01"),
        ({"disc_date": "2024-01-09"}, "2024-01"),
    ]


def test_endpoint_names():
    assert resolve_endpoints(["prices/daily_quotes,/equities/master", "TOPIX"[:0] or "indices_topix"]) == [
        "prices_daily_quotes",
        "listed_info",
        "indices_topix",
    ]
    with pytest.raises(jquants.GogookuError, match="unknown endpoint 'prices'"):
        resolve_endpoints(["prices"])
