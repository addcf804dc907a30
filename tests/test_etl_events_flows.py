"""Weekly investor flows (flow_*, is_flow_valid): intervals, vintages, era ratios, pandas windows."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import polars as pl
import pytest
from test_etl_events_core import make_calendar, row_of

from etl.features import flows
from etl.panels.events import EventDataError
from etl.sources.schema import ENDPOINTS

SCHEMA = ENDPOINTS["markets_trades_spec"].schema
PRIME, STANDARD, GROWTH = (flows.SECTIONS.index(s) for s in ("TSEPrime", "TSEStandard", "TSEGrowth"))


def ts_frame(rows: list[dict]) -> pl.DataFrame:
    """Rows with Section, Start, End, Pub and any value fields (others 0)."""
    out = []
    for r in rows:
        rec = {c: 0.0 for c in SCHEMA}
        rec |= {
            "Section": r["Section"],
            "StartDate": dt.date.fromisoformat(r["Start"]),
            "EndDate": dt.date.fromisoformat(r["End"]),
            "PublishedDate": dt.date.fromisoformat(r["Pub"]),
        }
        rec |= r.get("v", {})
        out.append(rec)
    return pl.DataFrame(out, schema=SCHEMA)


def v(fb, ft, ib, it, tt, **extra):
    return {"ForeignersBalance": fb, "ForeignersTotal": ft, "IndividualsBalance": ib, "IndividualsTotal": it,
            "TotalTotal": tt} | extra  # fmt: skip


def test_intervals_corrections_and_era_ratio():
    cal, _ = make_calendar()
    W1 = {"Start": "2024-01-09", "End": "2024-01-12"}
    W2 = {"Start": "2024-01-15", "End": "2024-01-19"}
    W3 = {"Start": "2024-01-22", "End": "2024-01-26"}
    rows = [
        {
            "Section": "TSEPrime",
            **W1,
            "Pub": "2024-01-18",
            "v": v(100, 1000, -50, 500, 4000, TrustBanksBalance=5),
        },
        {"Section": "TSEStandard", **W1, "Pub": "2024-01-18", "v": v(10, 100, 0, 50, 1000)},
        {"Section": "TSEGrowth", **W1, "Pub": "2024-01-18", "v": v(1, 10, 0, 5, 1000)},
        {"Section": "TSEPrime", **W2, "Pub": "2024-01-25", "v": v(300, 1500, -10, 400, 6000)},
        {"Section": "TSEStandard", **W2, "Pub": "2024-01-25", "v": v(10, 100, 0, 50, 1000)},
        # Growth's week 2 arrives late (after Prime's event of Jan 25): Prime's activity ratio is then NaN
        {"Section": "TSEGrowth", **W2, "Pub": "2024-02-01", "v": v(1, 10, 0, 5, 1000)},
        {"Section": "TSEPrime", **W1, "Pub": "2024-02-01", "v": v(200, 1000, -50, 500, 4000)},  # correction
        {"Section": "TSEPrime", **W3, "Pub": "2024-02-01", "v": v(0, 1000, 20, 500, 5000)},
        {"Section": "TokyoNagoya", **W1, "Pub": "2024-01-18", "v": v(1, 1, 1, 1, 1)},
    ]
    T = cal.T
    section = np.full((T, 3), np.nan)
    section[:, 0] = PRIME
    section[:, 1] = STANDARD
    out = flows.compute(np, cal, ts_frame(rows), section)
    r = lambda s: row_of(cal, s)  # noqa: E731
    f = out["flow_foreign_net_ratio"][:, 0]
    assert np.isnan(f[r("2024-01-18")]) and out["is_flow_valid"][r("2024-01-18"), 0] == 0
    assert f[r("2024-01-19")] == pytest.approx(0.1)  # published Thu 18th, effective Fri 19th
    assert f[r("2024-01-25")] == pytest.approx(0.1) and f[r("2024-01-26")] == pytest.approx(0.2)
    assert f[r("2024-02-02")] == 0.0  # week 3 (published with week 1's correction)
    assert out["flow_individual_net_ratio"][r("2024-01-19"), 0] == pytest.approx(-0.1)
    assert out["flow_trust_banks_net_ratio"][r("2024-01-19"), 0] == pytest.approx(5 / 1e-12)  # Tot 0 -> /EPS
    assert out["flow_foreign_share"][r("2024-01-19"), 0] == pytest.approx(0.25)
    assert out["flow_activity_ratio"][r("2024-01-19"), 0] == pytest.approx(4000 / 6000)
    assert out["flow_activity_ratio"][r("2024-01-19"), 1] == pytest.approx(1000 / 6000)
    assert np.isnan(out["flow_activity_ratio"][r("2024-01-26"), 0])  # Growth's week 2 not yet published
    # breadth: Foreigners > 0 and TrustBanks > 0 of six groups
    assert out["flow_breadth_pos"][r("2024-01-19"), 0] == pytest.approx(2 / 6)
    # wow at Jan 25's event: week 2 ratio 0.2 minus week 1 as then published (0.1), not the correction
    assert out["flow_foreign_net_ratio_wow"][r("2024-01-26"), 0] == pytest.approx(0.1)
    # at Feb 1's event: week 3 (0.0) minus week 2 (0.2)
    assert out["flow_foreign_net_ratio_wow"][r("2024-02-02"), 0] == pytest.approx(-0.2)
    assert np.isnan(out["flow_foreign_net_ratio_wow"][r("2024-01-19"), 0])
    np.testing.assert_array_equal(out["flow_impulse"][r("2024-01-19") : r("2024-01-19") + 3, 0], [1, 0, 0])
    assert out["flow_days_since"][r("2024-01-25"), 0] == 6.0
    assert np.isnan(out["flow_foreign_net_z"][r("2024-02-02"), 0])  # 52 weeks needed
    assert (out["is_flow_valid"][:, 2] == 0).all() and np.isnan(out["flow_foreign_net_ratio"][:, 2]).all()
    assert out["is_flow_valid"][-1, 0] == 1  # no staleness: the last event holds


def weekly_rows(cal_weeks: pd.DatetimeIndex, rng) -> tuple[list[dict], pd.DataFrame]:
    rows, recs = [], []
    for k, fri in enumerate(cal_weeks):
        end = fri.date()
        pub = end + dt.timedelta(days=6)
        vals = v(*rng.normal(0, 1e3, 1), 1e4, *rng.normal(0, 1e3, 1), 1e4, float(rng.uniform(1e5, 2e5)))
        rows.append({"Section": "TSEPrime", "Start": str(end - dt.timedelta(days=4)), "End": str(end),
                     "Pub": str(pub), "v": vals})  # fmt: skip
        recs.append({"end": pd.Timestamp(end), "pub": pd.Timestamp(pub), **vals})
        if k % 17 == 5:  # a correction of this week published three weeks later
            vals2 = dict(vals, ForeignersBalance=vals["ForeignersBalance"] + 5e3)
            pub2 = pub + dt.timedelta(days=21)
            rows.append({"Section": "TSEPrime", "Start": str(end - dt.timedelta(days=4)), "End": str(end),
                         "Pub": str(pub2), "v": vals2})  # fmt: skip
            recs.append({"end": pd.Timestamp(end), "pub": pd.Timestamp(pub2), **vals2})
    return rows, pd.DataFrame(recs)


def test_52_week_windows_follow_the_vintage_history():
    """Reference: for each publication, rebuild H_k in pandas and compute the z-scores on it."""
    cal, _ = make_calendar("2022-01-03", "2024-12-27")
    rng = np.random.default_rng(7)
    weeks = pd.date_range("2022-01-07", "2024-10-25", freq="W-FRI")
    rows, ref = weekly_rows(weeks, rng)
    section = np.full((cal.T, 1), float(PRIME))
    out = flows.compute(np, cal, ts_frame(rows), section)
    checked = 0
    for pub in sorted(ref.pub.unique())[60::7]:
        hist = ref[ref.pub <= pub].sort_values(["end", "pub"]).groupby("end").last().tail(52)
        if len(hist) < 52:
            continue

        def z(s):
            return (s.iloc[-1] - s.mean()) / (s.std() + 1e-12)

        fz, iz, az = z(hist.ForeignersBalance), z(hist.IndividualsBalance), z(hist.TotalTotal)
        eff = cal.nbd(np.array([pd.Timestamp(pub).to_datetime64().astype("datetime64[D]").astype(np.int64)]))
        row = int(np.searchsorted(cal.sessions, eff[0]))
        assert out["flow_foreign_net_z"][row, 0] == pytest.approx(fz, rel=1e-9)
        assert out["flow_individual_net_z"][row, 0] == pytest.approx(iz, rel=1e-9)
        assert out["flow_activity_z"][row, 0] == pytest.approx(az, rel=1e-9)
        assert out["flow_activity_rel52"][row, 0] == pytest.approx(
            hist.TotalTotal.iloc[-1] / hist.TotalTotal.mean()
        )
        smart = []
        for back in range(4):
            h = ref[ref.pub <= pub].sort_values(["end", "pub"]).groupby("end").last()
            h = h.iloc[: len(h) - back].tail(52)
            smart.append(z(h.ForeignersBalance) - z(h.IndividualsBalance))
        assert out["flow_smart_idx"][row, 0] == pytest.approx(smart[0], rel=1e-9)
        assert out["flow_smart_mom4"][row, 0] == pytest.approx(smart[0] - np.mean(smart), rel=1e-6, abs=1e-9)
        assert out["flow_smart_pos"][row, 0] == float(smart[0] > 0)
        assert out["flow_shock_flag"][row, 0] == float(abs(smart[0]) >= 2)
        assert out["flow_activity_high"][row, 0] == float(az > 1)
        checked += 1
    assert checked >= 5


def test_missing_and_malformed():
    cal, _ = make_calendar()
    section = np.zeros((cal.T, 1))
    out = flows.compute(np, cal, None, section)
    assert len(out) == 24 and (out["is_flow_valid"] == 0).all()
    bad = ts_frame([{"Section": "Nowhere", "Start": "2024-01-09", "End": "2024-01-12", "Pub": "2024-01-18"}])
    with pytest.raises(EventDataError, match="markets_trades_spec: Section must be one of"):
        flows.compute(np, cal, bad, section)
    early = ts_frame(
        [{"Section": "TSEPrime", "Start": "2024-01-09", "End": "2024-01-12", "Pub": "2024-01-11"}]
    )
    with pytest.raises(EventDataError, match="PublishedDate must be after"):
        flows.compute(np, cal, early, section)
