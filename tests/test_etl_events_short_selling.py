"""Short selling: sector ratios (SS) vs pandas and hand-worked numbers, positions (SP) as-of rules."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import polars as pl
import pytest
from test_etl_events_core import make_calendar, row_of

from etl.features import short_selling as ssm
from etl.panels.events import EventDataError
from etl.sources.schema import ENDPOINTS

SP_SCHEMA = ENDPOINTS["markets_short_selling_positions"].schema


def ss_frame(rows: list[tuple[str, str, float, float, float]]) -> pl.DataFrame:
    """Rows (Date, Sector33Code, X, W, WO)."""
    return pl.DataFrame(
        {
            "Date": [dt.date.fromisoformat(r[0]) for r in rows],
            "Sector33Code": [r[1] for r in rows],
            "SellingExcludingShortSellingTurnoverValue": [r[2] for r in rows],
            "ShortSellingWithRestrictionsTurnoverValue": [r[3] for r in rows],
            "ShortSellingWithoutRestrictionsTurnoverValue": [r[4] for r in rows],
        }
    )


def iso(cal, k: int) -> str:
    return str(cal.sessions[k].astype("datetime64[D]"))


def test_sector_attachment_staleness_and_market_values():
    cal, _ = make_calendar()
    T = cal.T
    ss = ss_frame(
        [
            ("2024-01-09", "0050", 800.0, 100.0, 100.0),
            ("2024-01-09", "1050", 600.0, 300.0, 100.0),
            ("2024-01-10", "0050", 700.0, 200.0, 100.0),
        ]
    )
    sid = np.zeros((T, 3))
    sid[:, 1] = 1
    sid[:, 2] = -1
    sid[row_of(cal, "2024-01-12") :, 1] = -1  # stock 1 leaves sector 1050
    nan = np.full((T, 3), np.nan)
    out = ssm.compute_ss(np, cal, ss, sid, nan, nan)
    r10, r11, r12 = row_of(cal, "2024-01-10"), row_of(cal, "2024-01-11"), row_of(cal, "2024-01-12")
    assert np.isnan(out["ss_sec33_short_share"][row_of(cal, "2024-01-09"), 0])
    assert out["ss_sec33_short_share"][r10, 0] == pytest.approx(0.2)  # Jan 9 row, effective Jan 10
    assert out["ss_sec33_restrict_share"][r10, 0] == pytest.approx(0.5)
    assert out["ss_sec33_short_turnover"][r10, 0] == 200.0
    assert out["ss_sec33_short_share"][r11, 0] == pytest.approx(0.3)
    assert out["ss_sec33_short_share_d1"][r11, 0] == pytest.approx(0.1)
    assert np.isnan(out["ss_sec33_short_share_d1"][r10, 0])
    assert out["ss_sec33_restrict_share_d1"][r11, 0] == pytest.approx(2 / 3 - 0.5)
    assert out["ss_sec33_short_share"][r10, 1] == pytest.approx(0.4)
    # market on Jan 9: short 600 / sell 2000; restricted 400 / 600
    assert out["ss_mkt_short_share"][r10, 2] == pytest.approx(0.3)
    assert out["ss_mkt_restrict_share"][r10, 0] == pytest.approx(400 / 600)
    assert out["ss_rel_short_share"][r10, 1] == pytest.approx(0.1)
    assert np.isnan(out["ss_rel_short_share"][r10, 2])  # stock without a sector
    # market on Jan 10 has one sector only
    assert out["ss_mkt_short_share"][r11, 0] == pytest.approx(0.3)
    # staleness 3: sector 0050's Jan 10 row (eff Jan 11) holds to sess = 3 (Jan 16), not Jan 17
    v = out["is_ss_valid"][:, 0]
    assert v[r10] == 1 and v[row_of(cal, "2024-01-16")] == 1 and v[row_of(cal, "2024-01-17")] == 0
    assert np.isnan(out["ss_mkt_short_share"][row_of(cal, "2024-01-17"), 0])
    assert out["is_ss_valid"][r11, 1] == 1 and out["is_ss_valid"][r12, 1] == 0  # left the sector
    assert (out["is_ss_valid"][:, 2] == 0).all()
    assert np.isnan(out["ss_mkt_short_breadth_q80"][r10, 0])  # no sector has 252 rows of history


def test_sector_windows_match_pandas():
    cal, _ = make_calendar("2022-01-03", "2024-06-28")
    rng = np.random.default_rng(5)
    n = 300
    rows = []
    series = {}
    for code in ("0050", "3050"):
        X = rng.uniform(5e8, 1e9, n)
        W = rng.uniform(1e7, 2e8, n)
        WO = rng.uniform(1e7, 1e8, n)
        series[code] = (X, W, WO)
        rows += [(iso(cal, k), code, X[k], W[k], WO[k]) for k in range(n)]
    T = cal.T
    sid = np.zeros((T, 2))
    sid[:, 1] = 3
    ret1 = rng.normal(0, 0.02, (T, 2))
    ret5 = rng.normal(0, 0.04, (T, 2))
    ret1[n - 50, 0] = np.nan
    out = ssm.compute_ss(np, cal, ss_frame(rows), sid, ret1, ret5)
    eff = np.arange(n) + 1  # each session's row is effective the next session
    above = {}
    for col, code in ((0, "0050"), (1, "3050")):
        X, W, WO = series[code]
        short = pd.Series(W + WO)
        share = short / (X + W + WO + 1e-12)
        rest = pd.Series(W) / (short + 1e-12)

        def z(s, w):
            return (s - s.rolling(w, min_periods=w).mean()) / (s.rolling(w, min_periods=w).std() + 1e-12)

        got = {k: out[k][eff, col] for k in ssm.SECTOR_COLUMNS}
        np.testing.assert_allclose(got["ss_sec33_short_share"], share, rtol=1e-12)
        np.testing.assert_allclose(got["ss_sec33_restrict_share_d1"], rest.diff(), rtol=1e-9, equal_nan=True)
        np.testing.assert_allclose(
            got["ss_sec33_short_mom5"],
            share - share.rolling(5, min_periods=5).mean(),
            rtol=1e-9,
            equal_nan=True,
        )
        np.testing.assert_allclose(
            got["ss_sec33_short_accel"], share.diff().diff(), rtol=1e-9, equal_nan=True
        )
        np.testing.assert_allclose(got["ss_sec33_short_share_z60"], z(share, 60), rtol=1e-9, equal_nan=True)
        np.testing.assert_allclose(
            got["ss_sec33_short_turnover_z252"], z(short, 252), rtol=1e-9, equal_nan=True
        )
        q80 = share.rolling(252, min_periods=252).quantile(0.8, interpolation="linear").shift(1)
        above[code] = np.where(q80.isna(), np.nan, (share > q80).astype(float))
        zz = z(share, 60).to_numpy()
        r1 = ret1[eff, col]
        ref = np.where(np.isnan(r1) | np.isnan(zz), np.nan, ((r1 < 0) & (zz > 1)).astype(float))
        np.testing.assert_array_equal(out["ss_cond_pressure"][eff, col], ref)
        r5 = ret5[eff, col]
        ref = np.where(np.isnan(r5) | np.isnan(zz), np.nan, ((r5 > 0) & (zz > 1)).astype(float))
        np.testing.assert_array_equal(out["ss_squeeze_setup"][eff, col], ref)
    breadth = pd.DataFrame(above).mean(axis=1).to_numpy()  # NaN-skipping mean, all-NaN -> NaN
    np.testing.assert_allclose(out["ss_mkt_short_breadth_q80"][eff, 0], breadth, equal_nan=True)
    assert np.isfinite(breadth[-1])


def sp_frame(rows: list[tuple[str, str, str, str, float, float]]) -> pl.DataFrame:
    """Rows (Code, holder, CalculatedDate, DisclosedDate, ratio, shares)."""
    recs = []
    for code, holder, calc, disc, ratio, shares in rows:
        rec = {c: "" for c in SP_SCHEMA}
        rec |= {
            "Code": code,
            "ShortSellerName": f" {holder} ",
            "CalculatedDate": dt.date.fromisoformat(calc),
            "DisclosedDate": dt.date.fromisoformat(disc),
            "ShortPositionsToSharesOutstandingRatio": ratio,
            "ShortPositionsInSharesNumber": shares,
            "ShortPositionsInTradingUnitsNumber": shares,
            "CalculationInPreviousReportingDate": None,
            "ShortPositionsInPreviousReportingRatio": None,
        }
        recs.append(rec)
    return pl.DataFrame(recs, schema=SP_SCHEMA)


def test_positions_asof_activity_and_priority():
    cal, _ = make_calendar()
    codes = np.array(["11110", "22220"])
    sp = sp_frame(
        [
            ("11110", "H1", "2024-01-10", "2024-01-11", 0.006, 600.0),  # eff Jan 12
            ("11110", "H2", "2024-01-12", "2024-01-15", 0.004, 400.0),  # eff Jan 16, below 0.5 %: inactive
            ("11110", "H1", "2024-01-17", "2024-01-18", 0.0045, 450.0),  # eff Jan 19: H1 inactive
            ("11110", "H2", "2024-01-11", "2024-01-22", 0.01, 1000.0),  # older calc date: never wins
            ("11110", "H3", "2024-01-22", "2024-01-24", 0.02, 2000.0),  # eff Jan 25
            ("11110", "H3", "2024-01-19", "2024-01-26", 0.001, 100.0),  # older calc: ignored
            ("11110", "H4", "2024-01-22", "2024-01-24", 0.007, 700.0),  # eff Jan 25 too
        ]
    )
    out = ssm.compute_positions(np, cal, codes, sp)
    r = lambda s: row_of(cal, s)  # noqa: E731
    for c in ssm.POSITION_COLUMNS:
        assert np.isnan(out[c][r("2024-01-11"), 1]), c  # before SP coverage
    ratio, bal, cnt, mx = (
        out[c][:, 0] for c in ("ss_balance_ratio", "ss_balance", "ss_pos_holder_cnt", "ss_pos_max_ratio")
    )
    assert (ratio[r("2024-01-12")], bal[r("2024-01-12")], cnt[r("2024-01-12")]) == (0.006, 600.0, 1.0)
    assert ratio[r("2024-01-16")] == 0.006 and cnt[r("2024-01-16")] == 1
    assert ratio[r("2024-01-19")] == 0.0 and cnt[r("2024-01-19")] == 0 and mx[r("2024-01-19")] == 0.0
    assert ratio[r("2024-01-23")] == 0.0  # H2's late report of an older calculation date does not apply
    assert ratio[r("2024-01-25")] == pytest.approx(0.027) and bal[r("2024-01-25")] == 2700.0
    assert cnt[r("2024-01-25")] == 2 and mx[r("2024-01-25")] == 0.02
    assert ratio[r("2024-01-29")] == pytest.approx(0.027)  # H3's older-calc report disclosed later is ignored
    # a stock without reports: true zeros once coverage began
    assert out["ss_balance_ratio"][r("2024-01-12"), 1] == 0.0 and out["ss_pos_holder_cnt"][-1, 1] == 0.0
    assert np.isnan(out["ss_pos_days_since_report"][-1, 1])
    ds = out["ss_pos_days_since_report"][:, 0]
    assert ds[r("2024-01-12")] == 0 and ds[r("2024-01-15")] == 1 and ds[r("2024-01-16")] == 0
    assert ds[r("2024-01-29")] == 0 and ds[r("2024-01-30")] == 1
    chg = out["ss_balance_change"][:, 0]
    k = r("2024-01-12")
    assert np.isnan(chg[k + 19]) and chg[k + 20] == pytest.approx(ratio[k + 20] - 0.006)


def test_missing_and_malformed():
    cal, _ = make_calendar()
    sid = np.zeros((cal.T, 1))
    out = ssm.compute_ss(np, cal, None, sid, sid, sid)
    assert (out["is_ss_valid"] == 0).all() and np.isnan(out["ss_mkt_short_share"]).all()
    assert np.isnan(ssm.compute_positions(np, cal, np.array(["11110"]), None)["ss_balance"]).all()
    with pytest.raises(EventDataError, match="markets_short_selling: Sector33Code must be"):
        ssm.compute_ss(np, cal, ss_frame([("2024-01-09", "1234", 1.0, 1.0, 1.0)]), sid, sid, sid)
    with pytest.raises(EventDataError, match="turnover values must be >= 0"):
        ssm.compute_ss(np, cal, ss_frame([("2024-01-09", "0050", -1.0, 1.0, 1.0)]), sid, sid, sid)
    bad = sp_frame([("11110", "H1", "2024-01-10", "2024-01-11", 5.0, 1.0)])
    with pytest.raises(EventDataError, match="markets_short_selling_positions: ShortPositionsToShares"):
        ssm.compute_positions(np, cal, np.array(["11110"]), bad)
