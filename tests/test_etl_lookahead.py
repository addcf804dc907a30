"""No look-ahead: every registered column at rows <= t depends only on data public by the close of t.

The graph columns are included (a 10-session graph window, min_obs 8, so graphs exist early in the fixture).

Two builds per cut-off t are compared with the build on the full data, through the whole pipeline:
- perturbed: every raw value dated after t is changed (prices, volumes, TOPIX, listed info, statements...);
  rows <= t must be identical for every non-target column (all roles);
- truncated: every source cut at t, adjusted prices re-based to t as J-Quants would deliver them then
  (Adj / prod of later AdjustmentFactor); rows <= t must agree for every I/C column (FEATURES.md §1.10).
Targets are checked separately: they must change when the future changes (they are the forward columns).
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from test_etl_helpers import make_raw

from etl import pipeline
from etl.config import GraphConfig
from etl.features.registry import REGISTRY, load_all
from etl.sources.schema import ENDPOINTS

ADJ_PRICES = ("AdjustmentOpen", "AdjustmentHigh", "AdjustmentLow", "AdjustmentClose")
GRAPH = GraphConfig(window=10, min_obs=8)  # graph windows mature early in the ~165-session fixture


def _date_col(endpoint_id: str) -> str:
    ep = ENDPOINTS[endpoint_id]
    return "Date" if endpoint_id == "markets_trading_calendar" else ep.date_column


def perturb_after(raw: dict, t: np.datetime64, seed: int = 1) -> dict:
    """Change every value of rows dated after t (one factor per row keeps prices consistent, High >= Low)."""
    rng = np.random.default_rng(seed)
    out = {}
    cut = t.astype(object)
    other = {"Sector33Code": "9050", "Sector17Code": "17", "MarketCode": "0112"}
    for eid, df in raw.items():
        if eid == "markets_trading_calendar":  # published a year ahead: not future information
            out[eid] = df
            continue
        after = pl.col(_date_col(eid)) > cut
        factor = pl.Series(rng.uniform(0.7, 1.3, df.height))
        exprs = []
        for name, dtype in df.schema.items():
            if name in ENDPOINTS[eid].key or name == _date_col(eid):
                continue
            if dtype == pl.Float64:
                exprs.append(pl.when(after).then(pl.col(name) * factor).otherwise(pl.col(name)).alias(name))
            elif name in other:
                exprs.append(pl.when(after).then(pl.lit(other[name])).otherwise(pl.col(name)).alias(name))
            elif eid == "fins_statements" and name.startswith("NumberOf"):
                exprs.append(pl.when(after).then(pl.lit("123456789")).otherwise(pl.col(name)).alias(name))
        out[eid] = df.with_columns(exprs)
    return out


def truncate_at(raw: dict, t: np.datetime64) -> dict:
    """Every source cut at t; adjusted DQ fields re-based to t (the API recomputes them after each split)."""
    cut = t.astype(object)
    out = {eid: df.filter(pl.col(_date_col(eid)) <= cut) for eid, df in raw.items()}
    dq = raw["prices_daily_quotes"]
    later = (
        dq.filter(pl.col("Date") > cut)
        .group_by("Code")
        .agg(pl.col("AdjustmentFactor").fill_null(1.0).product().alias("_f"))
    )
    trunc = (
        out["prices_daily_quotes"]
        .join(later, on="Code", how="left")
        .with_columns(pl.col("_f").fill_null(1.0))
    )
    trunc = trunc.with_columns(
        [(pl.col(c) / pl.col("_f")).alias(c) for c in ADJ_PRICES]
        + [(pl.col("AdjustmentVolume") * pl.col("_f")).alias("AdjustmentVolume")]
    ).drop("_f")
    out["prices_daily_quotes"] = trunc
    return out


@pytest.fixture(scope="module")
def base():
    load_all()
    raw = make_raw(seed=3)
    full = pipeline.build_frame(raw, chunk_size=4, graph=GRAPH)
    days = np.unique(full["Date"].to_numpy().astype("datetime64[D]"))
    return raw, full, days


def _compare(a: pl.DataFrame, b: pl.DataFrame, names: list[str], rtol: float, atol: float) -> list[str]:
    bad = []
    assert a.select("Code", "Date").equals(b.select("Code", "Date"))
    for n in names:
        x, y = a[n], b[n]
        if x.dtype in (pl.String, pl.Date):
            if not x.equals(y):
                bad.append(n)
            continue
        xv, yv = x.cast(pl.Float64).to_numpy(), y.cast(pl.Float64).to_numpy()
        if not np.allclose(xv, yv, rtol=rtol, atol=atol, equal_nan=True):
            bad.append(n)
    return bad


@pytest.mark.parametrize("frac", [0.3, 0.49, 0.75])
def test_future_perturbation_leaves_the_past_identical(base, frac):
    raw, full, days = base
    t = days[int(frac * len(days))]
    pert = pipeline.build_frame(perturb_after(raw, t), chunk_size=4, graph=GRAPH)
    names = [c for c in full.columns if c not in ("Code", "Date") and REGISTRY[c].role != "T"]
    past = pl.col("Date") <= t.astype(object)
    bad = _compare(full.filter(past), pert.filter(past), names, rtol=0.0, atol=0.0)
    assert not bad, f"columns at rows <= {t} changed when only the future changed: {bad}"
    # the perturbation is real: the future rows and the targets near t do change
    future = pl.col("Date") > t.astype(object)
    assert not full.filter(future)["returns_1d"].equals(pert.filter(future)["returns_1d"])
    assert not full.filter(past)["target_10d"].equals(pert.filter(past)["target_10d"])
    # the graph columns are covered: mature before t, and moved by the perturbed future
    assert {"graph_pagerank", "peer_count", "is_graph_valid"} <= set(names)
    assert full.filter(past)["graph_pagerank"].drop_nulls().len() > 100
    assert not full.filter(future)["peer_corr_mean"].equals(pert.filter(future)["peer_corr_mean"])


@pytest.mark.parametrize("frac", [0.3, 0.49, 0.75])
def test_truncated_build_matches_on_inputs(base, frac):
    raw, full, days = base
    t = days[int(frac * len(days))]
    trunc = pipeline.build_frame(truncate_at(raw, t), chunk_size=4, graph=GRAPH)
    names = [c for c in full.columns if c not in ("Code", "Date") and REGISTRY[c].role in ("I", "C")]
    past = pl.col("Date") <= t.astype(object)
    bad = _compare(full.filter(past), trunc.filter(past), names, rtol=1e-6, atol=1e-9)
    assert not bad, f"I/C columns at rows <= {t} differ between truncated and full data: {bad}"
