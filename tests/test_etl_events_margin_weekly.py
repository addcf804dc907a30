"""Weekly margin (margin_*, is_margin_valid): hand-worked as-of timing, pandas references for windows."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import polars as pl
import pytest
from test_etl_events_core import make_calendar, row_of

from etl.features import margin_weekly
from etl.panels.events import EventDataError

CODES = np.array(["11110", "22220", "33330"])


def wm_frame(rows: list[tuple[str, str, float, float]], issue: str = "2") -> pl.DataFrame:
    """Rows (Code, Date, L, S); standardized = 60 % and negotiable = 40 % of each side."""
    return pl.DataFrame(
        {
            "Date": [dt.date.fromisoformat(r[1]) for r in rows],
            "Code": [r[0] for r in rows],
            "ShortMarginTradeVolume": [r[3] for r in rows],
            "LongMarginTradeVolume": [r[2] for r in rows],
            "ShortNegotiableMarginTradeVolume": [0.4 * r[3] for r in rows],
            "LongNegotiableMarginTradeVolume": [0.4 * r[2] for r in rows],
            "ShortStandardizedMarginTradeVolume": [0.6 * r[3] for r in rows],
            "LongStandardizedMarginTradeVolume": [0.6 * r[2] for r in rows],
            "IssueType": [issue] * len(rows),
        }
    )


def run(wm, cal, adv=None):
    adv = np.full((cal.T, len(CODES)), 1000.0) if adv is None else adv
    return margin_weekly.compute(np, cal, CODES, wm, adv)


def test_effective_three_business_days_after_application_and_staleness():
    cal, _ = make_calendar()
    wm = wm_frame(
        [
            ("11110", "2024-01-05", 1000.0, 250.0),  # Fri; Mon 8th holiday -> eff Thu 11th
            ("11110", "2024-01-12", 1100.0, 200.0),  # -> eff Wed 17th
            ("22220", "2024-02-02", 500.0, 500.0),  # -> eff Wed 7th, stale after 10 sessions
            ("33330", "2024-02-22", 10.0, 0.0),  # Thursday (Fri 23rd holiday) -> eff Wed 28th
        ]
    )
    out = run(wm, cal)
    L, a = out["margin_long_tot"], 0
    assert np.isnan(L[row_of(cal, "2024-01-10"), a])
    assert L[row_of(cal, "2024-01-11"), a] == 1000.0
    assert L[row_of(cal, "2024-01-16"), a] == 1000.0
    assert L[row_of(cal, "2024-01-17"), a] == 1100.0
    r = row_of(cal, "2024-01-11")
    assert out["margin_credit_ratio"][r, a] == pytest.approx(4.0)
    assert out["margin_imbalance"][r, a] == pytest.approx(750 / 1250)
    assert out["margin_std_share_long"][r, a] == pytest.approx(0.6)
    assert out["margin_neg_share_short"][r, a] == pytest.approx(0.4)
    assert out["margin_net"][r, a] == 750.0 and out["margin_total_gross"][r, a] == 1250.0
    np.testing.assert_array_equal(out["margin_impulse"][r : r + 3, a], [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(out["margin_days_since"][r : r + 3, a], [0.0, 1.0, 4.0])  # Thu, Fri, Mon
    assert out["margin_d_long_wow"][row_of(cal, "2024-01-17"), a] == 100.0
    assert out["margin_d_short_wow"][row_of(cal, "2024-01-17"), a] == -50.0
    assert out["margin_d_ratio_wow"][row_of(cal, "2024-01-17"), a] == pytest.approx(5.5 - 4.0)
    assert np.isnan(out["margin_d_long_wow"][r, a])  # no previous record
    # staleness: attached on Feb 7 and 10 more sessions (to Feb 22), gone on Feb 26
    b = 1
    v = out["is_margin_valid"][:, b]
    assert v[row_of(cal, "2024-02-06")] == 0 and v[row_of(cal, "2024-02-07")] == 1
    assert v[row_of(cal, "2024-02-22")] == 1 and v[row_of(cal, "2024-02-26")] == 0
    assert np.isnan(out["margin_long_tot"][row_of(cal, "2024-02-26"), b])
    assert out["margin_imbalance"][row_of(cal, "2024-02-07"), b] == 0.0
    c = 2
    assert np.isnan(L[row_of(cal, "2024-02-27"), c]) and L[row_of(cal, "2024-02-28"), c] == 10.0
    assert out["margin_credit_ratio"][row_of(cal, "2024-02-28"), c] == 1000.0  # clipped L / (0 + EPS)
    assert out["is_borrowable"][row_of(cal, "2024-02-28"), c] == 1.0
    assert out["margin_issue_type"][row_of(cal, "2024-02-28"), c] == 2.0
    assert set(np.unique(out["is_margin_valid"])) <= {0.0, 1.0}


def test_prev_record_must_be_within_14_days():
    cal, _ = make_calendar()
    wm = wm_frame([("11110", "2024-01-12", 100.0, 50.0), ("11110", "2024-02-09", 130.0, 40.0)])
    out = run(wm, cal)
    assert np.isnan(out["margin_d_long_wow"][row_of(cal, "2024-02-15"), 0])


def test_record_windows_match_pandas_and_adv_at_application_date():
    cal, _ = make_calendar("2023-01-02", "2024-12-30")
    rng = np.random.default_rng(1)
    fridays = pd.date_range("2023-01-06", "2024-11-29", freq="W-FRI")
    fridays = [f for f in fridays if f.strftime("%Y-%m-%d") not in ("2024-02-23",)]
    L = rng.uniform(1e4, 2e4, len(fridays))
    S = rng.uniform(1e3, 5e3, len(fridays))
    wm = wm_frame([("22220", f.strftime("%Y-%m-%d"), L[k], S[k]) for k, f in enumerate(fridays)])
    vraw = rng.uniform(1e3, 1e4, (cal.T, len(CODES)))
    vraw[:30] = np.nan
    adv = pd.DataFrame(vraw).rolling(20, min_periods=20).mean().to_numpy()
    out = run(wm, cal, adv)
    ref = pd.DataFrame({"L": L, "S": S})
    ref["gross"] = ref.L + ref.S
    ref["ratio"] = np.clip(ref.L / (ref.S + 1e-12), 0, 1000)

    def z(s):
        return (s - s.rolling(52, min_periods=52).mean()) / (s.rolling(52, min_periods=52).std() + 1e-12)

    days = pd.DatetimeIndex(fridays)
    eff_rows = np.array([row_of(cal, str(x)) for x in cal_add3(cal, days)])
    app_rows = (
        np.searchsorted(cal.sessions, days.values.astype("datetime64[D]").astype(np.int64), "right") - 1
    )
    col = 1
    np.testing.assert_allclose(out["long_z52"][eff_rows, col], z(ref.L), rtol=1e-9, equal_nan=True)
    np.testing.assert_allclose(out["short_z52"][eff_rows, col], z(ref.S), rtol=1e-9, equal_nan=True)
    np.testing.assert_allclose(
        out["margin_gross_z52"][eff_rows, col], z(ref.gross), rtol=1e-9, equal_nan=True
    )
    np.testing.assert_allclose(out["ratio_z52"][eff_rows, col], z(ref.ratio), rtol=1e-9, equal_nan=True)
    mom4 = ref.gross - ref.gross.rolling(4, min_periods=4).mean()
    np.testing.assert_allclose(out["margin_gross_mom4"][eff_rows, col], mom4, rtol=1e-9, equal_nan=True)
    adv_app = adv[app_rows, col]
    np.testing.assert_allclose(
        out["margin_long_to_adv20"][eff_rows, col], L / (adv_app + 1e-12), equal_nan=True
    )
    dl = ref.L.diff().to_numpy()
    gap = np.diff(days.values.astype("datetime64[D]").astype(int), prepend=-100) <= 14
    dl = np.where(gap, dl, np.nan)
    np.testing.assert_allclose(
        out["margin_d_long_to_adv20"][eff_rows, col], dl / (5 * adv_app + 1e-12), equal_nan=True
    )
    assert np.isnan(out["margin_long_to_adv20"][eff_rows[0], col])  # ADV immature at the first record
    assert np.isfinite(out["long_z52"][eff_rows[51], col]) and np.isnan(out["long_z52"][eff_rows[50], col])


def cal_add3(cal, days):
    from etl.panels.events import to_days

    return pd.to_datetime(cal.add_business(to_days(days.values), 3).astype("datetime64[D]")).strftime(
        "%Y-%m-%d"
    )


def test_missing_endpoint_gives_nan_and_validity_zero():
    cal, _ = make_calendar()
    out = run(None, cal)
    assert np.isnan(out["margin_long_tot"]).all() and (out["is_margin_valid"] == 0).all()
    assert len(out) == 28


def test_malformed_issue_type_is_an_error():
    cal, _ = make_calendar()
    with pytest.raises(EventDataError, match="markets_weekly_margin_interest: IssueType must be"):
        run(wm_frame([("11110", "2024-01-05", 1.0, 1.0)], issue="9"), cal)
