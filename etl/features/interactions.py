"""Interaction features — x_* (FEATURES.md §4.14): products of other columns with the null rules of [D27].

Continuous x continuous propagates NaN; a 0/1 gate (mkt_high_vol, dmi_impulse) that is null counts as 0; a
+-1 gate (2 * mkt_trend_up - 1) that is null gives NaN (0 would wrongly mean -1). When a gate's source is
absent from the raw store the gate is unknown, not 0, and its products are NaN (§1.9). No x_* column uses a
target.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import numpy as np

from etl import ops
from etl.features.registry import FeatureContext, features

EPS = 1e-12
GATE_SOURCES = {"mkt_high_vol": "indices_topix", "dmi_impulse": "markets_daily_margin_interest"}
INPUTS = (
    "ma_gap_5_20",
    "mkt_gap_5_20",
    "mkt_trend_up",
    "rel_to_sec_5d",
    "sec_mom_20",
    "z_in_sec_ma_gap_5_20",
    "returns_1d",
    "returns_5d",
    "returns_10d",
    "volatility_20d",
    "beta_60d",
    "mkt_ret_5d",
    "volume_ratio_5",
    "bb_pct_b",
    "bb_position",
    "dmi_short_to_adv20",
    "rel_strength_5d",
    "dmi_credit_ratio",
    "z_close_20",
    "stmt_rev_fore_op",
    "stmt_progress_op",
    "stmt_days_since_statement",
    "mkt_high_vol",
    "alpha_1d",
    "beta_stability_60d",
    "flow_smart_idx",
    "flow_foreign_net_z",
    "flow_breadth_pos",
    "turnover_rate",
    "dmi_impulse",
)
COLUMNS = [
    "x_trend_intensity",
    "x_trend_intensity_g",
    "x_rel_sec_mom",
    "x_z_sec_gap_mom",
    "x_mom_sh_5",
    "x_mom_sh_10",
    "x_mom_sh_5_mktneu",
    "x_rvol5_dir",
    "x_rvol5_bb",
    "x_bbpos_rvol5",
    "x_bbneg_rvol5",
    "x_squeeze_pressure",
    "x_credit_rev_bias",
    "x_pead_effect",
    "x_pead_times_mkt",
    "x_rev_gate",
    "x_bo_gate",
    "x_alpha_meanrev_stable",
    "x_flow_smart_rel",
    "x_foreign_relsec",
    "x_breadth_rel",
    "x_tri_align",
    "x_liquidityshock_mom",
    "x_dmi_impulse_dir",
]


def compute(xp: Any, c: dict[str, Any], absent: Collection[str] = ()) -> dict[str, Any]:
    """Every x_* column from the [T, n] input columns `c` (names in INPUTS); `absent`: the gates (keys of
    GATE_SOURCES) whose source the raw store lacks."""

    def zero_if_null(x: Any) -> Any:
        return xp.where(xp.isnan(x), 0.0, x)

    def gate(name: str) -> Any:
        return c[name] if name in absent else zero_if_null(c[name])

    def hinge_pos(x: Any) -> Any:
        return xp.where(xp.isnan(x), np.nan, xp.maximum(x, 0.0))

    def hinge_neg(x: Any) -> Any:
        return xp.where(xp.isnan(x), np.nan, xp.maximum(-x, 0.0))

    def gt0(x: Any) -> Any:
        return xp.where(xp.isnan(x), np.nan, (x > 0).astype(xp.float64))

    def clip100(x: Any) -> Any:
        return xp.clip(x, -100.0, 100.0)

    trend_pm = 2.0 * c["mkt_trend_up"] - 1.0  # NaN stays NaN
    vol = c["volatility_20d"] + EPS
    rvol = c["volume_ratio_5"]
    high_vol = gate("mkt_high_vol")
    cb = ops.rolling_mean(c["dmi_credit_ratio"] - 1.0, 26, 1)
    pead_core = zero_if_null(c["stmt_rev_fore_op"]) + zero_if_null(c["stmt_progress_op"])
    pead = clip100(pead_core * xp.exp(-c["stmt_days_since_statement"] / 5.0))
    tr = c["turnover_rate"]
    shock = xp.clip(tr / (ops.lag(tr, 1) + EPS) - 1.0, -0.5, 0.5)
    out = {
        "x_trend_intensity": c["ma_gap_5_20"] * c["mkt_gap_5_20"],
        "x_trend_intensity_g": c["ma_gap_5_20"] * trend_pm,
        "x_rel_sec_mom": c["rel_to_sec_5d"] * c["sec_mom_20"],
        "x_z_sec_gap_mom": c["z_in_sec_ma_gap_5_20"] * c["sec_mom_20"],
        "x_mom_sh_5": c["returns_5d"] / vol,
        "x_mom_sh_10": c["returns_10d"] / vol,
        "x_mom_sh_5_mktneu": (c["returns_5d"] - c["beta_60d"] * c["mkt_ret_5d"]) / vol,
        "x_rvol5_dir": rvol * xp.sign(c["returns_1d"]),
        "x_rvol5_bb": rvol * c["bb_pct_b"],
        "x_bbpos_rvol5": hinge_pos(c["bb_position"] - 1.0) * rvol,
        "x_bbneg_rvol5": hinge_neg(c["bb_position"]) * rvol,
        "x_squeeze_pressure": c["dmi_short_to_adv20"] * hinge_pos(c["rel_strength_5d"]),
        "x_credit_rev_bias": cb * hinge_neg(c["z_close_20"]),
        "x_pead_effect": pead,
        "x_pead_times_mkt": clip100(pead * trend_pm),
        "x_rev_gate": high_vol * hinge_neg(c["z_close_20"]),
        "x_bo_gate": (1.0 - high_vol) * gt0(c["ma_gap_5_20"]),
        "x_alpha_meanrev_stable": -c["alpha_1d"] * c["beta_stability_60d"],
        "x_flow_smart_rel": c["flow_smart_idx"] * c["rel_strength_5d"],
        "x_foreign_relsec": c["flow_foreign_net_z"] * c["rel_to_sec_5d"],
        "x_breadth_rel": c["flow_breadth_pos"] * c["rel_strength_5d"],
        "x_tri_align": gt0(c["mkt_gap_5_20"]) * gt0(c["sec_mom_20"]) * c["ma_gap_5_20"],
        "x_liquidityshock_mom": shock * c["returns_5d"],
        "x_dmi_impulse_dir": gate("dmi_impulse") * c["returns_1d"],
    }
    return out


@features(COLUMNS)
def _interactions(ctx: FeatureContext) -> dict[str, Any]:
    absent = [name for name, endpoint in GATE_SOURCES.items() if ctx.raw(endpoint) is None]
    return compute(ctx.xp, {name: ctx[name] for name in INPUTS}, absent)
