"""Earnings-announcement events (FEATURES.md §4.11), derived from statements only [D24].

An event is the first earnings document per (Code, fiscal-year start, period type); its reaction session R is
the first session >= its effective date (a negative row before the grid), and R* (the latest R <= t) is
attached by scatter + running max. Returns and volatilities at R* are gathers from the core panels at that
row (NaN before the grid: no prices there). The expected next announcement
E^ is last year's disclosure of the next period type + 364 days (past information only); sessions towards
E^ are counted on the trading calendar, which is published a year ahead.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from etl.features.registry import FeatureContext, features
from etl.features.statements import prepare, prepared
from etl.panels.events import (
    EPS,
    HALT_DAY,
    STATEMENTS,
    EventCalendar,
    RecordSet,
    attach_records,
    event_calendar,
)
from etl.panels.panel import code_index

NEXT_PERIOD = {"1Q": "2Q", "2Q": "3Q", "3Q": "FY", "FY": "1Q", "4Q": "FY", "5Q": "FY"}
EXPECTED_LAG_DAYS = 364
REF_MAX_AGE_DAYS = 450
OVERDUE_SESSIONS = 20
SQRT252 = float(np.sqrt(252.0))
COLUMNS = [
    "days_since_earnings",
    "earnings_recent_5d",
    "days_to_earnings",
    "earnings_upcoming_5d",
    "earnings_day_return",
    "earnings_reaction_strength",
    "earnings_momentum_5d",
    "earnings_momentum_10d",
    "earnings_momentum_20d",
    "pead_strength",
    "pre_earnings_volatility",
    "post_earnings_volatility",
    "earnings_event_volatility",
]


def event_records(codes: Any, st: pl.DataFrame) -> tuple[RecordSet, RecordSet]:
    """(reaction sessions R per event, expected-announcement state per (Code, effective row))."""
    earn = st.filter(pl.col("_earn")).select(
        pl.col("LocalCode").alias("Code"),
        "_row",
        "_rank",
        "_disc",
        pl.col("TypeOfCurrentPeriod").cast(pl.String).alias("ptype"),
        pl.col("CurrentFiscalYearStartDate").alias("fy_start"),
    )
    first = earn.sort("_rank").unique(subset=["Code", "fy_start", "ptype"], keep="first", maintain_order=True)
    first = first.group_by("Code", "_row").agg(pl.len()).sort("Code", "_row")  # one R per (Code, session)
    r_row = first["_row"].to_numpy()
    reactions = RecordSet.plain(
        values={"_R": r_row.astype(np.float64)},
        row_R=r_row,
        code_R=code_index(codes, first["Code"]),
        eff_R=r_row,
    )
    # expected next announcement: A's next period type, its latest document effective by the event
    srt = earn.sort("_row", "_rank")
    events = earn.select("Code", "_row").unique().sort("_row")
    a = events.join_asof(srt.select("Code", "_row", "ptype"), on="_row", by="Code", check_sortedness=False)
    a = a.with_columns(
        pl.col("ptype").replace_strict(NEXT_PERIOD, default=None, return_dtype=pl.String).alias("nxt")
    )
    ref = srt.select("Code", "_row", pl.col("ptype").alias("nxt"), pl.col("_disc").alias("ref_disc"))
    a = a.join_asof(ref, on="_row", by=["Code", "nxt"], check_sortedness=False)
    row = a["_row"].to_numpy()
    ref_disc = a["ref_disc"].cast(pl.Float64).to_numpy()
    expected = RecordSet.plain(
        values={"_ref_disc": ref_disc, "_expected": ref_disc + EXPECTED_LAG_DAYS},
        row_R=row,
        code_R=code_index(codes, a["Code"]),
        eff_R=row,
    )
    return reactions, expected


def _at_rows(xp: Any, panel_TN: Any, row_TN: Any) -> Any:
    """panel[row_TN[t, i], i]; NaN where the row is NaN or < 0."""
    ok = ~xp.isnan(row_TN) & (row_TN >= 0)
    idx = xp.where(ok, row_TN, 0).astype(np.int64)
    return xp.where(ok, xp.take_along_axis(panel_TN, idx, axis=0), np.nan)


def from_records(
    xp: Any,
    cal: EventCalendar,
    reactions: RecordSet,
    expected: RecordSet,
    lo: int,
    hi: int,
    inputs: dict[str, Any],
) -> dict[str, Any]:
    """The 13 columns of stocks lo..hi-1 from their attached event state and the core panels in `inputs`
    ([T, n] each): returns_1d, mkt_ret_1d, volatility_5d, volatility_20d, Close."""
    R = attach_records(xp, cal, reactions, lo, hi)["_R"]
    ex = attach_records(xp, cal, expected, lo, hi)
    return columns(xp, cal, R, ex["_ref_disc"], ex["_expected"], inputs)


def columns(
    xp: Any, cal: EventCalendar, R: Any, ref_disc: Any, expected: Any, inputs: dict[str, Any]
) -> dict[str, Any]:
    """The 13 columns from R* (row of the latest reaction session, negative before the grid, NaN before the
    first event), the expected-date reference and E^ ([T, n] each)."""
    T = cal.T
    t_T1 = xp.arange(T, dtype=xp.float64)[:, None]
    ds = t_T1 - R
    out: dict[str, Any] = {"days_since_earnings": ds}
    recent = xp.where(xp.isnan(ds), 0.0, (ds <= 4).astype(xp.float64))
    out["earnings_recent_5d"] = recent
    # expected next announcement
    today = xp.asarray(cal.sessions.astype(np.float64))[:, None]
    e_hat = xp.where(today - ref_disc > REF_MAX_AGE_DAYS, np.nan, expected)
    ext = cal.business[cal.business != HALT_DAY.astype(np.int64)].astype(np.float64)  # sessions incl. future
    ext_x = xp.asarray(ext)
    e_fill = xp.where(xp.isnan(e_hat), 0.0, e_hat)
    upto_e = xp.searchsorted(ext_x, e_fill.ravel(), side="right").reshape(e_hat.shape).astype(xp.float64)
    upto_t = xp.asarray(
        np.searchsorted(ext, cal.sessions.astype(np.float64), side="right").astype(np.float64)
    )
    ahead = upto_e - upto_t[:, None]  # sess(t, E^) when E^ > t
    overdue = (t_T1 + 1.0) - cal.sessions_upto(e_fill, xp).astype(xp.float64)  # sess(E^, t) when E^ <= t
    days_to = xp.where(e_hat > today, ahead, xp.where(overdue <= OVERDUE_SESSIONS, 0.0, np.nan))
    days_to = xp.where(xp.isnan(e_hat), np.nan, days_to)
    out["days_to_earnings"] = days_to
    upcoming = xp.where(xp.isnan(days_to), 0.0, (days_to <= 5).astype(xp.float64))
    out["earnings_upcoming_5d"] = upcoming
    # reaction-session values
    r1 = _at_rows(xp, inputs["returns_1d"], R)
    m1 = _at_rows(xp, inputs["mkt_ret_1d"], R)
    vol_before = _at_rows(xp, inputs["volatility_20d"], R - 1)
    exr = r1 - m1
    out["earnings_day_return"] = r1
    out["earnings_reaction_strength"] = xp.abs(exr) / (vol_before / SQRT252 + EPS)
    drift = inputs["Close"] / _at_rows(xp, inputs["Close"], R) - 1.0
    for k in (5, 10, 20):
        out[f"earnings_momentum_{k}d"] = xp.where((ds >= 1) & (ds <= k), drift, np.nan)
    out["pead_strength"] = exr * xp.exp(-ds / 20.0)
    v5, v20 = inputs["volatility_5d"], inputs["volatility_20d"]
    out["pre_earnings_volatility"] = xp.where(upcoming == 1, v5, np.nan)
    out["post_earnings_volatility"] = xp.where(recent == 1, v5, np.nan)
    near = (upcoming == 1) | (recent == 1)
    out["earnings_event_volatility"] = xp.where(near, v5 / (v20 + EPS), 1.0)
    return {c: out[c] for c in COLUMNS}


def compute(
    xp: Any, cal: EventCalendar, codes: Any, st: pl.DataFrame | None, inputs: dict[str, Any]
) -> dict[str, Any]:
    """The 13 earnings columns as [T, N] panels: NaN without a statements source; an empty one has no
    events (the documented zeros)."""
    shape = (cal.T, len(codes))
    if st is None:
        return missing(xp, shape)
    if st.height == 0:
        return no_events(xp, cal, shape, inputs)
    reactions, expected = event_records(codes, prepare(cal, st))
    return from_records(xp, cal, reactions, expected, 0, len(codes), inputs)


def no_events(xp: Any, cal: EventCalendar, shape: tuple[int, int], inputs: dict[str, Any]) -> dict[str, Any]:
    """A statements source without documents: counters NaN, the two flags true zeros, the event volatility
    neutral 1 (where the volatilities exist)."""
    nan = xp.full(shape, np.nan)
    return columns(xp, cal, nan, nan, nan, inputs)


def missing(xp: Any, shape: tuple[int, int]) -> dict[str, Any]:
    """No statements source: nothing is known about events, every column NaN (§1.9)."""
    return {c: xp.full(shape, np.nan) for c in COLUMNS}


INPUTS = ("returns_1d", "mkt_ret_1d", "volatility_5d", "volatility_20d", "Close")


@features(COLUMNS)
def _earnings(ctx: FeatureContext) -> dict[str, Any]:
    if ctx.raw(STATEMENTS) is None:
        return missing(ctx.xp, ctx.shape)
    cal = event_calendar(ctx)
    st = prepared(ctx)
    inputs = {name: ctx[name] for name in INPUTS}
    if st is None:
        return no_events(ctx.xp, cal, ctx.shape, inputs)
    recs = ctx.full.cached("earnings.records", lambda: event_records(ctx.grid.codes, st))
    return from_records(ctx.xp, cal, *recs, ctx.cols.start, ctx.cols.stop, inputs)
