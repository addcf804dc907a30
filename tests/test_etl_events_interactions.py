"""Interaction columns x_*: hand-worked values, the D27 null rules, pandas for the windowed inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from etl.features import interactions

NAN = np.nan


def inputs(T: int = 40, N: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.normal(0, 1, (T, N)) for name in interactions.INPUTS}


def test_every_column_is_produced():
    out = interactions.compute(np, inputs())
    assert list(out) == interactions.COLUMNS and len(out) == 24
    assert all(v.shape == (40, 3) for v in out.values())


def test_hand_worked_values():
    c = {k: np.full((1, 1), 0.0) for k in interactions.INPUTS}
    c |= {
        "ma_gap_5_20": np.array([[0.02]]),
        "mkt_gap_5_20": np.array([[0.5]]),
        "mkt_trend_up": np.array([[0.0]]),
        "returns_5d": np.array([[0.1]]),
        "returns_1d": np.array([[-0.01]]),
        "volatility_20d": np.array([[0.2]]),
        "beta_60d": np.array([[1.5]]),
        "mkt_ret_5d": np.array([[0.02]]),
        "volume_ratio_5": np.array([[3.0]]),
        "bb_position": np.array([[1.25]]),
        "bb_pct_b": np.array([[1.0]]),
        "dmi_short_to_adv20": np.array([[2.0]]),
        "rel_strength_5d": np.array([[-0.3]]),
        "stmt_rev_fore_op": np.array([[NAN]]),
        "stmt_progress_op": np.array([[0.5]]),
        "stmt_days_since_statement": np.array([[5.0]]),
        "mkt_high_vol": np.array([[NAN]]),
        "z_close_20": np.array([[-2.0]]),
        "dmi_impulse": np.array([[NAN]]),
    }
    out = {k: float(v[0, 0]) for k, v in interactions.compute(np, c).items()}
    assert out["x_trend_intensity"] == pytest.approx(0.01)
    assert out["x_trend_intensity_g"] == pytest.approx(-0.02)  # trend_up 0 -> gate -1
    assert out["x_mom_sh_5"] == pytest.approx(0.5)
    assert out["x_mom_sh_5_mktneu"] == pytest.approx((0.1 - 0.03) / 0.2)
    assert out["x_rvol5_dir"] == -3.0
    assert out["x_bbpos_rvol5"] == pytest.approx(0.75) and out["x_bbneg_rvol5"] == 0.0
    assert out["x_squeeze_pressure"] == 0.0  # hinge of a negative relative strength
    assert out["x_pead_effect"] == pytest.approx(0.5 * np.exp(-1))  # null revision counts as 0
    assert out["x_pead_times_mkt"] == pytest.approx(-0.5 * np.exp(-1))
    assert out["x_rev_gate"] == 0.0  # null high-vol gate counts as 0
    assert out["x_bo_gate"] == 1.0
    assert out["x_dmi_impulse_dir"] == 0.0  # null impulse counts as 0
    assert out["x_tri_align"] == 0.0  # sec_mom_20 = 0 -> 1[> 0] = 0


def test_null_rules():
    c = inputs(T=3, N=1)
    c["mkt_trend_up"][:] = NAN
    c["stmt_days_since_statement"][:] = NAN
    c["z_close_20"][0] = NAN
    c["ma_gap_5_20"][1] = NAN
    c["returns_1d"][2] = NAN
    c["sec_mom_20"][0] = NAN
    out = interactions.compute(np, c)
    assert np.isnan(out["x_trend_intensity_g"]).all()  # a null +-1 gate is NaN, never -1
    assert np.isnan(out["x_pead_effect"]).all() and np.isnan(out["x_pead_times_mkt"]).all()
    assert np.isnan(out["x_rev_gate"][0, 0]) and not np.isnan(out["x_rev_gate"][1, 0])
    assert np.isnan(out["x_bo_gate"][1, 0]) and not np.isnan(out["x_bo_gate"][0, 0])
    assert np.isnan(out["x_dmi_impulse_dir"][2, 0])
    assert np.isnan(out["x_tri_align"][0, 0]) and np.isnan(out["x_tri_align"][1, 0])


def test_windowed_inputs_match_pandas():
    c = inputs(T=60, N=2, seed=3)
    cr = c["dmi_credit_ratio"]
    cr[:10, 0] = NAN
    cr[20:50, 1] = NAN  # more than 26 sessions without a daily-margin value
    c["turnover_rate"] = np.abs(c["turnover_rate"])
    out = interactions.compute(np, c)
    cb = pd.DataFrame(cr - 1).rolling(26, min_periods=1).mean().to_numpy()
    ref = cb * np.maximum(-c["z_close_20"], 0)
    np.testing.assert_allclose(out["x_credit_rev_bias"], ref, rtol=1e-10, equal_nan=True)
    assert np.isnan(out["x_credit_rev_bias"][47, 1]) and not np.isnan(out["x_credit_rev_bias"][44, 1])
    tr = pd.DataFrame(c["turnover_rate"])
    shock = (tr / (tr.shift(1) + 1e-12) - 1).clip(-0.5, 0.5).to_numpy()
    np.testing.assert_allclose(
        out["x_liquidityshock_mom"], shock * c["returns_5d"], rtol=1e-12, equal_nan=True
    )
    assert np.isnan(out["x_liquidityshock_mom"][0]).all()


def test_a_gate_of_an_absent_source_is_unknown():
    c = inputs(T=4, N=2)
    c["dmi_impulse"][:] = NAN
    c["mkt_high_vol"][:] = NAN
    present = interactions.compute(np, c)
    absent = interactions.compute(np, c, absent=["dmi_impulse", "mkt_high_vol"])
    np.testing.assert_array_equal(present["x_dmi_impulse_dir"], 0.0 * c["returns_1d"])  # counts as 0
    for col in ("x_dmi_impulse_dir", "x_rev_gate", "x_bo_gate"):
        assert np.isnan(absent[col]).all(), col
    assert np.array_equal(present["x_mom_sh_5"], absent["x_mom_sh_5"])
