"""Stylized facts, the oracle's skill and the graph's recovery of hidden peers on the default config (300
codes, 2019-2023, seed 0)."""

import json

import numpy as np
import polars as pl
import pytest
from scipy import stats

from etl.config import SynthConfig
from etl.sources.raw_store import read_endpoint
from etl.sources.synthetic import generate


@pytest.fixture(scope="module")
def default_market(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_default")
    m = generate(SynthConfig(), out)
    dq = read_endpoint(out, "prices_daily_quotes").collect()
    wide = dq.pivot(on="Code", index="Date", values="AdjustmentClose").sort("Date")
    close = wide.drop("Date").to_numpy()
    returns = close[1:] / close[:-1] - 1.0  # NaN across halts, the outage and outside listing
    return out, m, dq, wide.columns[1:], returns


def test_daily_returns_have_fat_tails(default_market):
    *_, returns = default_market
    assert stats.kurtosis(returns[np.isfinite(returns)]) > 1.0


def test_volatility_clusters(default_market):
    *_, returns = default_market
    acf = []
    for col in returns.T:
        a = np.abs(col)
        ok = np.isfinite(a[1:]) & np.isfinite(a[:-1])
        if ok.sum() > 250:
            acf.append(np.corrcoef(a[1:][ok], a[:-1][ok])[0, 1])
    assert np.mean(acf) > 0.1


def test_stocks_correlate_more_within_their_sector(default_market):
    out, _, _, codes, returns = default_market
    info = read_endpoint(out, "listed_info").collect().group_by("Code").agg(pl.col("Sector33Code").last())
    sector = dict(info.rows())
    keep = [j for j, c in enumerate(codes) if sector[c] != "9999" and np.isfinite(returns[:, j]).sum() > 500]
    r = pl.DataFrame(returns[:, keep]).to_pandas()
    corr = r.corr(min_periods=250).to_numpy()
    sec = np.array([sector[codes[j]] for j in keep])
    same = sec[:, None] == sec[None, :]
    off = ~np.eye(len(keep), dtype=bool) & np.isfinite(corr)
    within, across = corr[same & off].mean(), corr[~same & off].mean()
    assert within > across + 0.05


def test_oracle_rank_ic_at_one_day_is_in_the_documented_band(default_market):
    out, _, dq, _, _ = default_market
    oracle = pl.read_parquet(out / "oracle.parquet")
    fwd = (
        dq.select("Date", "Code", "AdjustmentClose")
        .sort("Code", "Date")
        .with_columns(fwd=pl.col("AdjustmentClose").shift(-1).over("Code") / pl.col("AdjustmentClose") - 1)
    )
    joined = oracle.join(fwd, on=["Date", "Code"]).drop_nulls("fwd").filter(pl.col("fwd").is_finite())
    ic = joined.group_by("Date").agg(pl.corr("expected_return_1d", "fwd", method="spearman").alias("ic"))
    mean_ic = ic["ic"].drop_nulls().mean()
    assert 0.05 <= mean_ic <= 0.15, mean_ic


def test_correlation_graph_finds_the_documented_share_of_hidden_peers(default_market):
    """docs/synthetic.md: 25-40% of the daily graph's edges are hidden-peer pairs (default graph config)."""
    out, *_ = default_market
    rec = json.loads((out / "synthetic.json").read_text())["graph_recovery"]
    assert rec["graph"] == {"window": 60, "min_obs": 40, "threshold": 0.3, "k": 4}
    assert 0.25 <= rec["edge_peer_share"] <= 0.40, rec
    assert rec["edge_peer_share"] > 10 * rec["edge_peer_share_random"], rec
    assert rec["dates_measured"] == 58 and rec["every_nth_session"] == 20


def test_default_market_ohlc_adjustments_and_calendar(default_market):
    out, m, dq, _, _ = default_market
    assert (m.adj_factor != 1.0).sum() >= 3  # splits happen in the default market
    px = dq.drop_nulls("Close").sort("Code", "Date")
    top = pl.max_horizontal("Open", "Close")
    bottom = pl.min_horizontal("Open", "Close")
    assert px.select(((pl.col("High") >= top) & (top >= bottom) & (bottom >= pl.col("Low"))).all()).item()
    later = (pl.col("AdjustmentFactor").log().reverse().cum_sum().reverse().over("Code")).exp()
    px = read_endpoint(out, "prices_daily_quotes").collect().sort("Code", "Date")
    px = px.with_columns(later=later / pl.col("AdjustmentFactor")).drop_nulls("Close")
    assert np.allclose(px["AdjustmentClose"], px["Close"] * px["later"], rtol=1e-9, atol=0.051)
    cal = read_endpoint(out, "markets_trading_calendar").collect()
    sessions = cal.filter(pl.col("HolidayDivision") == "1")["Date"].to_numpy().astype("datetime64[D]")
    assert np.array_equal(sessions, m.sessions)
    st = read_endpoint(out, "fins_statements").collect()
    assert all(st[c].dtype == pl.String for c in st.columns if c != "DisclosedDate")
