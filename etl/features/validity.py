"""Group 4.15 validity flags of the price, market, beta and sector blocks (FEATURES.md §4.15, D28).

Never null: 0/1. Row-count maturity thresholds use row_idx (a row without DQ data has none: 0). The flow,
margin, dmi, stmt and ss flags live with their groups; is_graph_valid with the graph.
"""

from __future__ import annotations

from typing import Any

from etl.features.registry import FeatureContext, feature

ROW_THRESHOLDS = {
    "is_rsi2_valid": 5,
    "is_ema5_valid": 15,
    "is_ema10_valid": 30,
    "is_ema20_valid": 60,
    "is_ema200_valid": 200,
    "is_valid_ma": 60,
}


def _rows_at_least(ctx: FeatureContext, k: int) -> Any:
    r = ctx["row_idx"]
    return ((r >= k) & ~ctx.xp.isnan(r)).astype(float)


for _name, _k in ROW_THRESHOLDS.items():
    feature(_name, group="validity")(lambda ctx, k=_k: _rows_at_least(ctx, k))


@feature("is_mkt_z_valid", group="validity")
def _is_mkt_z_valid(ctx: FeatureContext) -> Any:
    xp = ctx.xp
    ok = xp.ones((ctx.grid.T, 1), dtype=bool)
    for n in ("mkt_ret_1d_z", "mkt_vol_20d_z", "mkt_bb_bw_z", "mkt_dd_from_peak_z"):
        ok &= ~xp.isnan(ctx[n][:, :1])
    return ok.astype(float)


@feature("is_beta_valid", group="validity")
def _is_beta_valid(ctx: FeatureContext) -> Any:
    return (~ctx.xp.isnan(ctx["beta_60d"])).astype(float)


@feature("is_sec_valid", group="validity")
def _is_sec_valid(ctx: FeatureContext) -> Any:
    return (ctx["sec_member_cnt"] >= 3).astype(float)
