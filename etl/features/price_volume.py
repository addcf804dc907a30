"""Group 4.2 price and volume, and the daily-quotes base panels (FEATURES.md §1.3, §3.9, §4.2).

Base panels (computed once at full width): `dq_present` (a DQ row exists), `traded` (AdjustmentClose
non-null), adjusted `Open/High/Low/Close/Volume`, `TurnoverValue`, raw `C_raw`/`V_raw`, `AdjustmentFactor`
and `adv_raw20` (§1.8). No-trade sessions follow D2: the close is carried, O = H = L = C, volume and
turnover are 0; rows before a stock's first trade stay NaN.
"""

from __future__ import annotations

import numpy as np

from etl import ops
from etl.features.registry import FeatureContext, feature, features, panel_source
from etl.panels.panel import pivot

DAILY_QUOTES = "prices_daily_quotes"
DQ_FIELDS = (
    "Close",
    "Volume",
    "TurnoverValue",
    "AdjustmentFactor",
    "AdjustmentOpen",
    "AdjustmentHigh",
    "AdjustmentLow",
    "AdjustmentClose",
    "AdjustmentVolume",
)
SQRT252 = float(np.sqrt(252.0))


DQ_PANELS = ("Open", "High", "Low", "Close", "Volume", "TurnoverValue", "C_raw", "V_raw", "AdjustmentFactor")


@panel_source("dq_present", "traded", *DQ_PANELS, full=True)
def _daily_quotes(ctx: FeatureContext) -> dict:
    xp = ctx.xp
    dq = ctx.raw(DAILY_QUOTES)
    if dq is None:
        nan = ctx.nan()
        none = xp.zeros(ctx.shape, dtype=bool)
        return {"dq_present": none, "traded": none} | {n: nan for n in DQ_PANELS}
    p, here = pivot(ctx.grid, dq, list(DQ_FIELDS), xp=xp)
    del dq
    ctx.release_raw(DAILY_QUOTES)  # the panels hold everything the features need
    nan = xp.nan
    traded = here & ~xp.isnan(p["AdjustmentClose"])
    close = xp.where(here, ops.ffill(xp.where(traded, p["AdjustmentClose"], nan)), nan)
    c_raw = xp.where(here, ops.ffill(xp.where(traded, p["Close"], nan)), nan)

    def price(field: str) -> object:
        v = p[field]
        return xp.where(here, xp.where(traded & ~xp.isnan(v), v, close), nan)

    def amount(field: str) -> object:
        v = p[field]
        return xp.where(here, xp.where(xp.isnan(v), 0.0, v), nan)

    af = xp.where(here, xp.where(xp.isnan(p["AdjustmentFactor"]), 1.0, p["AdjustmentFactor"]), nan)
    return {
        "dq_present": here,
        "traded": traded,
        "Open": price("AdjustmentOpen"),
        "High": price("AdjustmentHigh"),
        "Low": price("AdjustmentLow"),
        "Close": close,
        "Volume": amount("AdjustmentVolume"),
        "TurnoverValue": amount("TurnoverValue"),
        "C_raw": c_raw,
        "V_raw": amount("Volume"),
        "AdjustmentFactor": af,
    }


@panel_source("adv_raw20")
def _adv_raw20(ctx: FeatureContext) -> object:
    """ADVraw20: mean raw volume over the 20 sessions ending at t, mp 20 (§1.8)."""
    return ops.rolling_mean(ctx.panel("V_raw"), 20, 20)


@features(["Open", "High", "Low", "Close", "Volume", "TurnoverValue"], group="price_volume")
def _levels(ctx: FeatureContext) -> dict:
    return {n: ctx.panel(n) for n in ("Open", "High", "Low", "Close", "Volume", "TurnoverValue")}


def _ret(ctx: FeatureContext, k: int) -> object:
    c = ctx.panel("Close")
    return c / ops.lag(c, k) - 1.0


for _k in (1, 5, 10, 20, 60, 120):
    feature(f"returns_{_k}d", group="price_volume")(lambda ctx, k=_k: _ret(ctx, k))
for _k in (1, 5, 10, 20):
    feature(f"log_returns_{_k}d", group="price_volume")(
        lambda ctx, k=_k: ctx.xp.log(ctx.panel("Close") / ops.lag(ctx.panel("Close"), k))
    )
for _w in (5, 10, 20, 60):
    feature(f"volatility_{_w}d", group="price_volume")(
        lambda ctx, w=_w: ops.rolling_std(ctx["returns_1d"], w, w) * SQRT252
    )


def _log_terms(ctx: FeatureContext) -> dict:
    """Per-row range terms of §3.9: Parkinson pk, Rogers-Satchell rs, overnight o, open-to-close c."""

    def compute() -> dict:
        xp = ctx.xp
        o, h, l, c = (ctx.panel(n) for n in ("Open", "High", "Low", "Close"))
        return {
            "pk": xp.log(h / l) ** 2 / (4.0 * np.log(2.0)),
            "rs": xp.log(h / c) * xp.log(h / o) + xp.log(l / c) * xp.log(l / o),
            "o": xp.log(o / ops.lag(c, 1)),
            "c": xp.log(c / o),
        }

    return ctx.cached("log_terms", compute)


def _yz(ctx: FeatureContext, w: int) -> object:
    t = _log_terms(ctx)
    k = 0.34 / (1.34 + (w + 1.0) / (w - 1.0))
    var = (
        ops.rolling_var(t["o"], w, w)
        + k * ops.rolling_var(t["c"], w, w)
        + (1 - k) * ops.rolling_mean(t["rs"], w, w)
    )
    return ctx.xp.sqrt(252.0 * ctx.xp.maximum(var, 0.0))


@feature("realized_volatility", group="price_volume")
def _realized_vol(ctx: FeatureContext) -> object:
    return ctx.xp.sqrt(ops.rolling_sum(_log_terms(ctx)["pk"], 20, 20))


@feature("pk_vol_60", group="price_volume")
def _pk_vol_60(ctx: FeatureContext) -> object:
    return ctx.xp.sqrt(252.0 * ops.rolling_mean(_log_terms(ctx)["pk"], 60, 60))


for _w in (20, 60):
    feature(f"rs_vol_{_w}", group="price_volume")(
        lambda ctx, w=_w: ctx.xp.sqrt(
            252.0 * ctx.xp.maximum(ops.rolling_mean(_log_terms(ctx)["rs"], w, w), 0.0)
        )
    )
    feature(f"yz_vol_{_w}", group="price_volume")(lambda ctx, w=_w: _yz(ctx, w))
    feature(f"vov_{_w}", group="price_volume")(lambda ctx, w=_w: ops.rolling_std(ctx[f"yz_vol_{w}"], w, w))
for _w in (5, 10, 20, 60, 120):
    feature(f"sma_{_w}", group="price_volume")(lambda ctx, w=_w: ops.rolling_mean(ctx.panel("Close"), w, w))
for _n in (5, 10, 20, 60, 200):
    feature(f"ema_{_n}", group="price_volume")(lambda ctx, n=_n: ops.ema(ctx.panel("Close"), n))
for _w in (5, 20, 60):
    feature(f"price_to_sma{_w}", group="price_volume")(
        lambda ctx, w=_w: ctx.panel("Close") / (ctx[f"sma_{w}"] + ctx.eps)
    )


@feature("ma_gap_5_20", group="price_volume")
def _ma_gap_5_20(ctx: FeatureContext) -> object:
    return (ctx["ema_5"] - ctx["ema_20"]) / (ctx["ema_20"] + ctx.eps)


@feature("ma_gap_20_60", group="price_volume")
def _ma_gap_20_60(ctx: FeatureContext) -> object:
    return (ctx["ema_20"] - ctx["ema_60"]) / (ctx["ema_60"] + ctx.eps)


for _n in (5, 20, 60):
    feature(f"ema{_n}_slope", group="price_volume")(
        lambda ctx, n=_n: ctx[f"ema_{n}"] / ops.lag(ctx[f"ema_{n}"], 1) - 1.0
    )


@feature("dist_to_200ema", group="price_volume")
def _dist_200(ctx: FeatureContext) -> object:
    return (ctx.panel("Close") - ctx["ema_200"]) / (ctx["ema_200"] + ctx.eps)


@feature("z_close_20", group="price_volume")
def _z_close_20(ctx: FeatureContext) -> object:
    return ops.rolling_z(ctx.panel("Close"), 20, 20)


@feature("high_low_ratio", group="price_volume")
def _hl_ratio(ctx: FeatureContext) -> object:
    return ctx.panel("High") / (ctx.panel("Low") + ctx.eps)


@feature("close_to_high", group="price_volume")
def _close_to_high(ctx: FeatureContext) -> object:
    h, l, c = ctx.panel("High"), ctx.panel("Low"), ctx.panel("Close")
    return (h - c) / (h - l + ctx.eps)


@feature("close_to_low", group="price_volume")
def _close_to_low(ctx: FeatureContext) -> object:
    h, l, c = ctx.panel("High"), ctx.panel("Low"), ctx.panel("Close")
    return (c - l) / (h - l + ctx.eps)


@feature("overnight_gap", group="price_volume")
def _overnight_gap(ctx: FeatureContext) -> object:
    return ctx.panel("Open") / ops.lag(ctx.panel("Close"), 1) - 1.0


@feature("intraday_ret", group="price_volume")
def _intraday_ret(ctx: FeatureContext) -> object:
    return ctx.panel("Close") / ctx.panel("Open") - 1.0


for _w in (5, 20):
    feature(f"volume_ma_{_w}", group="price_volume")(
        lambda ctx, w=_w: ops.rolling_mean(ctx.panel("Volume"), w, w)
    )
    feature(f"volume_ratio_{_w}", group="price_volume")(
        lambda ctx, w=_w: ctx.panel("Volume") / (ctx[f"volume_ma_{w}"] + ctx.eps)
    )


@feature("volume_accel", group="price_volume")
def _volume_accel(ctx: FeatureContext) -> object:
    return ctx["volume_ma_5"] / (ctx["volume_ma_20"] + ctx.eps) - 1.0


@feature("turnover_rate", group="price_volume")
def _turnover_rate(ctx: FeatureContext) -> object:
    return ctx.panel("V_raw") / (ctx["shares_outstanding"] + ctx.eps)


@feature("dollar_volume", group="price_volume")
def _dollar_volume(ctx: FeatureContext) -> object:
    return ctx.panel("Close") * ctx.panel("Volume")


@feature("adv_jpy", group="price_volume")
def _adv_jpy(ctx: FeatureContext) -> object:
    return ops.rolling_mean(ctx.panel("TurnoverValue"), 20, 20)


@feature("amihud_20", group="price_volume")
def _amihud(ctx: FeatureContext) -> object:
    xp = ctx.xp
    tv = ctx.panel("TurnoverValue")
    pos = tv > 0
    illiq = xp.where(pos, xp.abs(ctx["returns_1d"]) / xp.where(pos, tv / 1e8, 1.0), xp.nan)
    return ops.rolling_mean(illiq, 20, 10)
