"""Daily margin (dmi_*, is_dmi_valid): publication timing, corrections, staleness, windows vs pandas."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import polars as pl
import pytest
from test_etl_events_core import make_calendar, row_of

from etl.features import margin_daily
from etl.panels.events import EventDataError, as_date
from etl.sources.schema import ENDPOINTS

CODES = np.array(["11110", "22220"])
SCHEMA = ENDPOINTS["markets_daily_margin_interest"].schema


def dm_frame(rows: list[dict]) -> pl.DataFrame:
    """Rows with Code, App, Pub, Ld, Sd and optional overrides; every other field gets a plain default."""
    out = []
    for r in rows:
        rec = {c: None for c in SCHEMA}
        rec |= {f"PublishReason.{x}": "0" for x in margin_daily.PUBLISH_REASONS}
        rec |= {
            "Code": r["Code"],
            "ApplicationDate": dt.date.fromisoformat(r["App"]),
            "PublishedDate": dt.date.fromisoformat(r["Pub"]),
            "LongMarginOutstanding": r["Ld"],
            "ShortMarginOutstanding": r["Sd"],
            "DailyChangeLongMarginOutstanding": r.get("dL", "-"),
            "DailyChangeShortMarginOutstanding": r.get("dS", "-"),
            "ShortLongRatio": r.get("slr"),
            "LongStandardizedMarginOutstanding": 0.7 * r["Ld"],
            "ShortStandardizedMarginOutstanding": 0.5 * r["Sd"],
            "LongNegotiableMarginOutstanding": 0.3 * r["Ld"],
            "ShortNegotiableMarginOutstanding": 0.5 * r["Sd"],
            "TSEMarginBorrowingAndLendingRegulationClassification": r.get("reg", "001"),
        }
        rec |= r.get("extra", {})
        out.append(rec)
    return pl.DataFrame(out, schema=SCHEMA)


def run(dm, cal, adv=None):
    adv = np.full((cal.T, len(CODES)), 100.0) if adv is None else adv
    return margin_daily.compute(np, cal, CODES, dm, adv)


def test_publication_timing_corrections_and_staleness():
    cal, _ = make_calendar()
    A = "11110"
    dm = dm_frame(
        [
            {"Code": A, "App": "2024-01-09", "Pub": "2024-01-10", "Ld": 1000.0, "Sd": 200.0, "slr": 20.0},
            {"Code": A, "App": "2024-01-10", "Pub": "2024-01-11", "Ld": 1100.0, "Sd": 250.0,
             "dL": "100", "dS": "50"},
            {"Code": A, "App": "2024-01-10", "Pub": "2024-01-15", "Ld": 1150.0, "Sd": 250.0},  # correction
            {"Code": A, "App": "2024-01-11", "Pub": "2024-01-12", "Ld": 1200.0, "Sd": 300.0,
             "extra": {"PublishReason.Restricted": "1", "PublishReason.Monitoring": "1"}, "reg": "101"},
            {"Code": A, "App": "2024-01-12", "Pub": "2024-01-16", "Ld": 1300.0, "Sd": 300.0, "reg": ""},
            {"Code": A, "App": "2024-01-12", "Pub": "2024-01-17", "Ld": 1310.0, "Sd": 300.0},  # correction
            {"Code": A, "App": "2024-01-16", "Pub": "2024-01-17", "Ld": 1400.0, "Sd": 350.0},
        ]
    )  # fmt: skip
    out = run(dm, cal)
    Ld = out["dmi_long"][:, 0]
    # eff = next business day after publication
    assert np.isnan(Ld[row_of(cal, "2024-01-10")])
    assert Ld[row_of(cal, "2024-01-11")] == 1000.0
    assert Ld[row_of(cal, "2024-01-12")] == 1100.0
    assert Ld[row_of(cal, "2024-01-15")] == 1200.0  # App 01-11 (pub Fri 12th) effective Mon 15th
    assert Ld[row_of(cal, "2024-01-16")] == 1200.0  # the correction of an older application date never wins
    assert Ld[row_of(cal, "2024-01-17")] == 1300.0
    assert (
        Ld[row_of(cal, "2024-01-18")] == 1400.0
    )  # App 01-16 outranks App 01-12's correction (both eff 18th)
    # staleness: the App 01-16 record (eff 18th) is attached for sess(eff, t) <= 3
    v = out["is_dmi_valid"][:, 0]
    assert list(v[row_of(cal, "2024-01-18") : row_of(cal, "2024-01-18") + 5]) == [1, 1, 1, 1, 0]
    r = row_of(cal, "2024-01-11")
    assert out["dmi_short_long_ratio"][r, 0] == pytest.approx(0.2)  # published ratio / 100
    assert np.isnan(out["dmi_d_long_1d"][r, 0])  # "-" is not published
    r = row_of(cal, "2024-01-12")
    assert out["dmi_short_long_ratio"][r, 0] == pytest.approx(250 / 1100)  # computed when not published
    assert out["dmi_d_long_1d"][r, 0] == 100.0 and out["dmi_d_net_1d"][r, 0] == 50.0
    assert out["dmi_d_long_to_adv1d"][r, 0] == pytest.approx(1.0)
    assert out["dmi_total_to_adv20"][r, 0] == pytest.approx(13.5)
    assert out["dmi_credit_ratio"][r, 0] == pytest.approx(4.4)
    assert out["dmi_std_share_long"][r, 0] == pytest.approx(0.7)
    assert out["dmi_neg_share_short"][r, 0] == pytest.approx(0.5)
    # d_ratio of App 01-11 uses App 01-10 as published by 01-12 (4.4), not its later correction (4.6)
    r = row_of(cal, "2024-01-15")
    assert out["dmi_d_ratio_1d"][r, 0] == pytest.approx(4.0 - 4.4)
    assert out["dmi_reason_restricted"][r, 0] == 1 and out["dmi_reason_monitoring"][r, 0] == 1
    assert out["dmi_reason_dailypublication"][r, 0] == 0 and out["dmi_reason_count"][r, 0] == 2
    assert out["dmi_tse_reg_level"][r, 0] == 7.0
    np.testing.assert_array_equal(out["dmi_impulse"][r : r + 2, 0], [1.0, 0.0])
    assert out["dmi_days_since_pub"][r, 0] == 3.0 and out["dmi_days_since_app"][r, 0] == 4.0
    assert out["dmi_application_date"][r, 0] == as_date("2024-01-11")
    assert out["dmi_published_date"][r, 0] == as_date("2024-01-12")
    assert np.isnan(out["dmi_tse_reg_level"][row_of(cal, "2024-01-17"), 0])  # "" -> NaN
    # App 01-16's previous record is App 01-12, not the previous business day (01-15): no d_ratio
    assert np.isnan(out["dmi_d_ratio_1d"][row_of(cal, "2024-01-18"), 0])
    # App 01-12 at 01-17 uses its first version; the correction shows from 01-18 only where it is the latest
    assert out["dmi_d_ratio_1d"][row_of(cal, "2024-01-17"), 0] == pytest.approx(1300 / 300 - 4.0)
    assert (np.isnan(out["dmi_long"][:, 1])).all() and (out["is_dmi_valid"][:, 1] == 0).all()


def test_z26_and_adv_match_pandas_on_a_daily_series():
    cal, _ = make_calendar()
    rng = np.random.default_rng(3)
    apps = cal.sessions[:-1]
    n = apps.size
    Ld, Sd, dS = rng.uniform(1e4, 2e4, n), rng.uniform(1e3, 9e3, n), rng.normal(0, 100, n)
    dS_text = [f"{x:.6f}" for x in dS]
    dS_text[7] = "-"
    iso = [str(x) for x in cal.sessions.astype("datetime64[D]")]
    rows = [
        {"Code": "22220", "App": iso[k], "Pub": iso[k + 1], "Ld": Ld[k], "Sd": Sd[k], "dS": dS_text[k]}
        for k in range(n)
    ]
    vraw = rng.uniform(1e3, 1e4, (cal.T, 2))
    adv = pd.DataFrame(vraw).rolling(20, min_periods=20).mean().to_numpy()
    out = run(dm_frame(rows), cal, adv)
    ref = pd.DataFrame({"L": Ld, "S": Sd, "dS": np.where(np.arange(n) == 7, np.nan, np.round(dS, 6))})

    def z(s):
        return (s - s.rolling(26, min_periods=26).mean()) / (s.rolling(26, min_periods=26).std() + 1e-12)

    eff_rows = np.arange(n) + 2  # published next session, effective the session after
    keep = eff_rows < cal.T
    got = out["dmi_z26_long"][eff_rows[keep], 1]
    np.testing.assert_allclose(got, z(ref.L)[keep], rtol=1e-9, equal_nan=True)
    np.testing.assert_allclose(
        out["dmi_z26_total"][eff_rows[keep], 1], z(ref.L + ref.S)[keep], rtol=1e-9, equal_nan=True
    )
    np.testing.assert_allclose(
        out["dmi_z26_d_short_1d"][eff_rows[keep], 1], z(ref.dS)[keep], rtol=1e-6, equal_nan=True
    )
    np.testing.assert_allclose(
        out["dmi_long_to_adv20"][eff_rows[keep], 1], (Ld / (adv[:n, 1] + 1e-12))[keep], equal_nan=True
    )
    ratio = np.clip(Ld / (Sd + 1e-12), 0, 1000)
    np.testing.assert_allclose(
        out["dmi_d_ratio_1d"][eff_rows[keep], 1][1:], np.diff(ratio)[keep[1:]], rtol=1e-9
    )
    assert (out["is_dmi_valid"][eff_rows[keep], 1] == 1).all()


def test_missing_and_malformed():
    cal, _ = make_calendar()
    out = run(None, cal)
    assert len(out) == 39 and (out["is_dmi_valid"] == 0).all() and np.isnan(out["dmi_long"]).all()
    bad = dm_frame(
        [{"Code": "11110", "App": "2024-01-09", "Pub": "2024-01-10", "Ld": 1.0, "Sd": 1.0, "dL": "abc"}]
    )
    with pytest.raises(
        EventDataError, match="markets_daily_margin_interest: field DailyChangeLongMarginOutstanding"
    ):
        run(bad, cal)
    early = dm_frame([{"Code": "11110", "App": "2024-01-09", "Pub": "2024-01-05", "Ld": 1.0, "Sd": 1.0}])
    with pytest.raises(EventDataError, match="PublishedDate must not precede ApplicationDate"):
        run(early, cal)
