"""End to end: the fake v2 server serves the synthetic market; `gogooku fetch` must rebuild exactly the raw
store that `gogooku synth` writes directly, without exceeding the rate limit."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from fake_jquants import FakeJQuants, FakeState, max_in_window, v2_rows_from_store
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from etl.sources import raw_store
from etl.sources.schema import ENDPOINTS
from train.cli import app

RATE, PERIOD = 120, 1.0


def test_fetch_of_served_synthetic_market_equals_the_synthetic_store(tmp_path: Path, monkeypatch):
    start, end = "2024-01-01", "2024-04-26"  # ends on a Friday: the last margin week is complete
    synth = tmp_path / "synth"
    made = CliRunner().invoke(
        app, ["synth", "--stocks", "24", "--start", start, "--end", end, "--seed", "5", "--out", str(synth)]
    )
    assert made.exit_code == 0, made.output
    state = FakeState(rows=v2_rows_from_store(synth), page_size=7)
    fetched = tmp_path / "fetched"
    monkeypatch.setenv("JQUANTS_API_KEY", "test-key")
    with FakeJQuants(state) as fake:
        args = ["fetch", "--start", start, "--end", end, "--out", str(fetched)]
        args += [f"fetch.base_url={fake.base_url}", f"fetch.requests_per_minute={RATE}"]
        args += [f"fetch.rate_period_s={PERIOD}", "fetch.backoff_s=0.01"]
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output

    for endpoint_id, ep in ENDPOINTS.items():
        want = raw_store.read_endpoint(synth, endpoint_id)
        got = raw_store.read_endpoint(fetched, endpoint_id)
        assert want is not None and got is not None, endpoint_id
        key = list(ep.key)
        try:
            assert_frame_equal(
                got.collect().sort(key, nulls_last=True),
                want.collect().sort(key, nulls_last=True),
                check_exact=True,
            )
        except AssertionError as err:
            raise AssertionError(f"{endpoint_id}: {err}") from None
    assert raw_store.read_endpoint(fetched, "prices_daily_quotes").select(pl.len()).collect().item() > 1000

    arrivals = [r.at for r in state.served()]
    assert len(arrivals) > 2 * RATE  # long enough for the limiter to matter
    # The server thread shares the client's process (and GIL), so arrival stamps lag send times by up to
    # ~0.1 s under load (one run saw 121 in 0.9 s). Allow a quarter window of jitter: an unthrottled fetch
    # sends several hundred requests in that time, so this still catches a missing or broken limiter.
    assert max_in_window(arrivals, PERIOD * 0.75) <= RATE
