"""Group 4.5 stock x market cross features (FEATURES.md §4.5): same-session (r_t, m_t) pairs [D9]."""

from __future__ import annotations

from typing import Any

from etl import ops
from etl.features.market import _flag
from etl.features.registry import FeatureContext, feature


def _m(ctx: FeatureContext, name: str) -> Any:
    return ctx.xp.broadcast_to(ctx[name], ctx.shape)


@feature("beta_60d", group="cross")
def _beta_60d(ctx: FeatureContext) -> Any:
    return ops.rolling_beta(ctx["returns_1d"], _m(ctx, "mkt_ret_1d"), 60, 60)


@feature("beta_20d_raw", group="cross")
def _beta_20d(ctx: FeatureContext) -> Any:
    return ops.rolling_beta(ctx["returns_1d"], _m(ctx, "mkt_ret_1d"), 20, 20)


@feature("beta_rolling", group="cross")
def _beta_rolling(ctx: FeatureContext) -> Any:
    b60 = ctx["beta_60d"]
    return ctx.xp.where(ctx.xp.isnan(b60), ctx["beta_20d_raw"], b60)


@feature("alpha_1d", group="cross")
def _alpha_1d(ctx: FeatureContext) -> Any:
    return ctx["returns_1d"] - ctx["beta_60d"] * ctx["mkt_ret_1d"]


@feature("alpha_5d", group="cross")
def _alpha_5d(ctx: FeatureContext) -> Any:
    return ctx["returns_5d"] - ctx["beta_60d"] * ctx["mkt_ret_5d"]


@feature("rel_strength_5d", group="cross")
def _rel_strength_5d(ctx: FeatureContext) -> Any:
    return ctx["returns_5d"] - ctx["mkt_ret_5d"]


@feature("idio_vol_ratio", group="cross")
def _idio_vol_ratio(ctx: FeatureContext) -> Any:
    return ctx["volatility_20d"] / (ctx["mkt_vol_20d"] + ctx.eps)


@feature("beta_stability_60d", group="cross")
def _beta_stability(ctx: FeatureContext) -> Any:
    return ctx.xp.minimum(1.0 / (ops.rolling_std(ctx["beta_60d"], 20, 20) + ctx.eps), 1e4)


@feature("trend_align_mkt", group="cross")
def _trend_align(ctx: FeatureContext) -> Any:
    xp = ctx.xp
    a, b = ctx["ma_gap_5_20"], _m(ctx, "mkt_gap_5_20")
    return _flag(xp, xp.sign(a) == xp.sign(b), a, b)


@feature("alpha_vs_regime", group="cross")
def _alpha_vs_regime(ctx: FeatureContext) -> Any:
    return ctx["alpha_1d"] * ctx["mkt_bull_200"]
