"""Group 4.4 market (TOPIX) features (FEATURES.md §4.4): computed once on the TOPIX series, same for all.

The series lives on the grid sessions ([T, 1] arrays, 2020-10-01 removed), preceded by the TOPIX rows
before the grid that the TX history reaches (§1.12); a grid session without a TOPIX row is NaN. Without the
indices_topix endpoint every column is NaN (and is_mkt_z_valid 0).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from etl import ops
from etl.features import technical as ta
from etl.features.registry import FeatureContext, feature
from etl.panels.panel import to_days

TOPIX = "indices_topix"
EPS = 1e-12
SQRT252 = float(np.sqrt(252.0))
MKT_COLUMNS = (
    "mkt_ret_1d",
    "mkt_ret_5d",
    "mkt_ret_10d",
    "mkt_ret_20d",
    "mkt_ema_5",
    "mkt_ema_20",
    "mkt_ema_60",
    "mkt_ema_200",
    "mkt_dev_20",
    "mkt_gap_5_20",
    "mkt_ema20_slope_3",
    "mkt_vol_20d",
    "mkt_atr_14",
    "mkt_natr_14",
    "mkt_bb_pct_b",
    "mkt_bb_bw",
    "mkt_dd_from_peak",
    "mkt_big_move_flag",
    "mkt_ret_1d_z",
    "mkt_vol_20d_z",
    "mkt_bb_bw_z",
    "mkt_dd_from_peak_z",
    "mkt_bull_200",
    "mkt_trend_up",
    "mkt_high_vol",
    "mkt_squeeze",
    "mkt_bull_20d",
    "mkt_high_vol_regime",
)


def _flag(xp: Any, cond: Any, *operands: Any) -> Any:
    """1[cond] as float, NaN where any operand is NaN (§1.9)."""
    bad = xp.zeros(cond.shape, dtype=bool)
    for o in operands:
        bad |= xp.isnan(o)
    return xp.where(bad, xp.nan, cond.astype(xp.float64))


def topix_ohlc(ctx: FeatureContext) -> tuple[dict[str, Any], int] | None:
    """TOPIX OHLC as [P + T, 1] arrays and P, None if the endpoint is missing.

    The series runs over the TOPIX sessions before the grid that the TX history still reaches (P of them:
    §1.12 takes 600 sessions before the dataset start, while the grid starts no earlier than the first
    quote), then over the grid sessions, where a session without a TOPIX row is NaN.
    """
    tx = ctx.raw(TOPIX)
    if tx is None:
        return None
    grid, params = ctx.grid, ctx.params
    days = to_days(tx["Date"])
    start = grid.dates[0] if params.dataset_start is None else params.dataset_start
    reach = max(params.history_sessions - int(np.searchsorted(grid.dates, start, side="left")), 0)
    earlier = np.unique(days[days < grid.dates[0]])
    earlier = earlier[earlier.size - min(reach, earlier.size) :]
    axis = np.concatenate([earlier, grid.dates])
    rows = np.minimum(np.searchsorted(axis, days), axis.size - 1)
    keep = axis[rows] == days
    out = {}
    for f in ("Open", "High", "Low", "Close"):
        v = np.full((axis.size, 1), np.nan)
        v[rows[keep], 0] = tx[f].cast(pl.Float64).to_numpy()[keep]
        out[f] = ctx.xp.asarray(v)
    return out, int(earlier.size)


def market_series(ohlc: dict[str, Any], xp: Any) -> dict[str, Any]:
    """All 28 market columns from TOPIX OHLC arrays ([T, 1] or [T, k]), as in FEATURES.md §4.4."""
    o, h, l, c = ohlc["Open"], ohlc["High"], ohlc["Low"], ohlc["Close"]
    s: dict[str, Any] = {}
    for k in (1, 5, 10, 20):
        s[f"mkt_ret_{k}d"] = c / ops.lag(c, k) - 1.0
    for n in (5, 20, 60, 200):
        s[f"mkt_ema_{n}"] = ops.ema(c, n)
    m = s["mkt_ret_1d"]
    s["mkt_dev_20"] = (c - s["mkt_ema_20"]) / (s["mkt_ema_20"] + EPS)
    s["mkt_gap_5_20"] = (s["mkt_ema_5"] - s["mkt_ema_20"]) / (s["mkt_ema_20"] + EPS)
    s["mkt_ema20_slope_3"] = s["mkt_ema_20"] / ops.lag(s["mkt_ema_20"], 3) - 1.0
    s["mkt_vol_20d"] = ops.rolling_std(m, 20, 20) * SQRT252
    s["mkt_atr_14"] = ta.atr(h, l, c, 14)
    s["mkt_natr_14"] = s["mkt_atr_14"] / c
    bb = ta.bollinger(c)
    s["mkt_bb_pct_b"] = xp.clip(bb["pct"], 0.0, 1.0)
    s["mkt_bb_bw"] = (bb["upper"] - bb["lower"]) / (bb["mid"] + EPS)
    s["mkt_dd_from_peak"] = c / ops.rolling_max(c, 252, 252) - 1.0
    sd60 = ops.rolling_std(m, 60, 60)
    s["mkt_big_move_flag"] = _flag(xp, xp.abs(m) >= 2.0 * sd60, m, sd60)
    s["mkt_ret_1d_z"] = ops.rolling_z(m, 252, 252)
    s["mkt_vol_20d_z"] = ops.rolling_z(s["mkt_vol_20d"], 252, 252)
    s["mkt_bb_bw_z"] = ops.rolling_z(s["mkt_bb_bw"], 252, 252)
    s["mkt_dd_from_peak_z"] = ops.rolling_z(s["mkt_dd_from_peak"], 252, 252)
    s["mkt_bull_200"] = _flag(xp, c > s["mkt_ema_200"], c, s["mkt_ema_200"])
    s["mkt_trend_up"] = _flag(xp, s["mkt_gap_5_20"] > 0, s["mkt_gap_5_20"])
    s["mkt_high_vol"] = _flag(xp, s["mkt_vol_20d_z"] > 1, s["mkt_vol_20d_z"])
    s["mkt_squeeze"] = _flag(xp, s["mkt_bb_bw_z"] < -1, s["mkt_bb_bw_z"])
    mean20 = ops.rolling_mean(m, 20, 20)
    s["mkt_bull_20d"] = _flag(xp, mean20 > 0, mean20)
    vmean60 = ops.rolling_mean(s["mkt_vol_20d"], 60, 60)
    s["mkt_high_vol_regime"] = _flag(xp, s["mkt_vol_20d"] > vmean60, s["mkt_vol_20d"], vmean60)
    del o
    return s


def market(ctx: FeatureContext) -> dict[str, Any]:
    """The market columns as [T, 1] arrays, computed once on the root context."""

    def compute() -> dict[str, Any]:
        root = ctx.full
        topix = topix_ohlc(root)
        if topix is None:
            nan = root.xp.full((root.grid.T, 1), np.nan)
            return {name: nan for name in MKT_COLUMNS}
        ohlc, before = topix
        return {name: col[before:] for name, col in market_series(ohlc, root.xp).items()}

    return ctx.full.cached("market_series", compute)


for _name in MKT_COLUMNS:
    feature(_name, group="market")(lambda ctx, name=_name: market(ctx)[name])
