"""When statements, earnings events and TOPIX history reach the grid, through the real pipeline.

- TOPIX rows before the first quote date feed the market windows, up to the 600-session history (§1.12).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import polars as pl
from test_etl_helpers import START, make_raw

from etl import pipeline
from etl.features.registry import load_all
from etl.panels.calendar import trading_calendar

load_all()


def sessions_of(raw: dict) -> list[dt.date]:
    return raw["markets_trading_calendar"].filter(pl.col("HolidayDivision") == "1")["Date"].to_list()


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
