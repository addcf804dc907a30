"""Earnings-announcement events from statements: reaction sessions, expected dates, gathers at R*."""

from __future__ import annotations

import numpy as np
import pytest
from test_etl_events_core import make_calendar, row_of
from test_etl_events_statements import doc, frame

from etl.features import earnings
from etl.panels.events import as_date

CODES = np.array(["11110", "22220"])
FY22 = {"CurrentFiscalYearStartDate": "2022-04-01", "CurrentFiscalYearEndDate": "2023-03-31"}
FY23 = {"CurrentFiscalYearStartDate": "2023-04-01", "CurrentFiscalYearEndDate": "2024-03-31"}


def earn(code, date, time, number, period, fy, kind=None):
    kind = kind or f"{period}FinancialStatements_Consolidated_JP"
    return doc(code, date, time, number, kind, period, **fy)


def docs() -> list[dict]:
    A, B = "11110", "22220"
    return [
        earn(A, "2022-08-10", "10:00:00", "1", "1Q", FY22),
        earn(A, "2022-11-10", "10:00:00", "2", "2Q", FY22),
        earn(A, "2023-02-10", "10:00:00", "3", "3Q", FY22),
        earn(A, "2023-05-12", "14:00:00", "4", "FY", FY22),
        earn(A, "2023-08-10", "15:00:00", "5", "1Q", FY23),  # effective Aug 11
        earn(A, "2023-08-21", "10:00:00", "6", "1Q", FY23),  # a re-filing: not a new event
        doc(A, "2023-09-01", "10:00:00", "7", "EarnForecastRevision", "FY", **FY23),  # not an earnings doc
        earn(A, "2023-11-10", "13:00:00", "8", "2Q", FY23),
        earn(B, "2022-06-01", "10:00:00", "9", "FY", FY22, kind="FYFinancialStatements_Consolidated_JP"),
        earn(B, "2022-08-05", "10:00:00", "10", "1Q", FY22),
        earn(B, "2022-09-01", "10:00:00", "11", "FY", FY22),
    ]


def inputs(cal, rng):
    T, N = cal.T, len(CODES)
    return {
        "returns_1d": rng.normal(0, 0.02, (T, N)),
        "mkt_ret_1d": np.broadcast_to(rng.normal(0, 0.01, (T, 1)), (T, N)),
        "volatility_5d": rng.uniform(0.1, 0.5, (T, N)),
        "volatility_20d": rng.uniform(0.1, 0.5, (T, N)),
        "Close": rng.uniform(100, 200, (T, N)),
    }


def sess_between(cal, a: int, b: int) -> int:
    """sess(a, b): grid sessions s with a < s <= b (day numbers)."""
    return int(np.sum((cal.sessions > a) & (cal.sessions <= b)))


def test_events_reaction_values_and_expected_dates():
    cal, _ = make_calendar("2022-01-03", "2024-12-30")
    rng = np.random.default_rng(11)
    inp = inputs(cal, rng)
    out = earnings.compute(np, cal, CODES, frame(docs()), inp)
    r = lambda s: row_of(cal, s)  # noqa: E731
    ds = out["days_since_earnings"][:, 0]
    R = r("2023-08-11")  # the 1Q doc at 15:00 reacts the next session
    assert ds[R - 1] == ds[r("2023-05-12")] + (R - 1 - r("2023-05-12"))
    assert ds[R] == 0 and ds[R + 3] == 3
    assert ds[r("2023-08-21")] == r("2023-08-21") - R  # the re-filing is not an event
    assert ds[r("2023-09-01")] == r("2023-09-01") - R  # nor is a forecast revision
    assert np.isnan(out["days_since_earnings"][r("2022-08-09"), 0])
    rec = out["earnings_recent_5d"][:, 0]
    assert list(rec[R : R + 6]) == [1, 1, 1, 1, 1, 0] and rec[r("2022-08-09")] == 0
    ret, mkt, v20, v5, close = (
        inp[k][:, 0] for k in ("returns_1d", "mkt_ret_1d", "volatility_20d", "volatility_5d", "Close")
    )
    assert out["earnings_day_return"][R + 2, 0] == ret[R]
    ex = ret[R] - mkt[R]
    assert out["earnings_reaction_strength"][R + 7, 0] == pytest.approx(
        abs(ex) / (v20[R - 1] / np.sqrt(252) + 1e-12)
    )
    assert out["pead_strength"][R + 7, 0] == pytest.approx(ex * np.exp(-7 / 20))
    mom5 = out["earnings_momentum_5d"][:, 0]
    assert (
        np.isnan(mom5[R])
        and mom5[R + 3] == pytest.approx(close[R + 3] / close[R] - 1)
        and np.isnan(mom5[R + 6])
    )
    assert out["earnings_momentum_10d"][R + 10, 0] == pytest.approx(close[R + 10] / close[R] - 1)
    assert np.isnan(out["earnings_momentum_10d"][R + 11, 0])
    assert out["earnings_momentum_20d"][R + 20, 0] == pytest.approx(close[R + 20] / close[R] - 1)
    assert out["post_earnings_volatility"][R + 4, 0] == v5[R + 4] and np.isnan(
        out["post_earnings_volatility"][R + 5, 0]
    )
    # expected dates: A = FY (May 12) -> next 1Q; last 1Q disclosed 2022-08-10 -> E^ = 2023-08-09
    e_hat = as_date("2022-08-10") + 364
    t = r("2023-07-03")
    assert out["days_to_earnings"][t, 0] == sess_between(cal, cal.sessions[t], e_hat)
    assert out["days_to_earnings"][r("2023-08-09"), 0] == 0  # due today
    assert out["days_to_earnings"][r("2023-08-10"), 0] == 0  # overdue by 1 session
    up = out["earnings_upcoming_5d"][:, 0]
    k = r("2023-08-09")
    assert up[k - 5] == 1 and up[k - 6] == 0
    assert out["pre_earnings_volatility"][k - 5, 0] == v5[k - 5] and np.isnan(
        out["pre_earnings_volatility"][k - 6, 0]
    )
    assert out["earnings_event_volatility"][k - 5, 0] == pytest.approx(v5[k - 5] / (v20[k - 5] + 1e-12))
    assert out["earnings_event_volatility"][k - 6, 0] == 1.0
    # after the 1Q (Aug 11): next 2Q, last 2Q disclosed 2022-11-10 -> E^ = 2023-11-09
    t = r("2023-10-02")
    assert out["days_to_earnings"][t, 0] == sess_between(cal, cal.sessions[t], as_date("2022-11-10") + 364)
    # code B: A = FY of 2022-09-01 -> next 1Q (2022-08-05) -> E^ = 2023-08-04; overdue > 20 sessions -> NaN
    e_b = as_date("2022-08-05") + 364
    t_ok = int(np.searchsorted(cal.sessions, e_b)) + 20
    assert out["days_to_earnings"][t_ok, 1] == 0 and np.isnan(out["days_to_earnings"][t_ok + 1, 1])
    assert out["earnings_upcoming_5d"][t_ok + 1, 1] == 0
    # the reference is older than 450 days -> undefined
    assert np.isnan(out["days_to_earnings"][r("2023-11-01"), 1])


def test_missing_statements():
    cal, _ = make_calendar()
    rng = np.random.default_rng(0)
    out = earnings.compute(np, cal, CODES, None, inputs(cal, rng))
    assert all(np.isnan(out[c]).all() for c in earnings.COLUMNS)  # no source: nothing is known
    # a source without documents: no events, the documented zeros and the neutral event volatility
    out = earnings.compute(np, cal, CODES, frame(docs()).clear(), inputs(cal, rng))
    assert np.isnan(out["days_since_earnings"]).all() and (out["earnings_recent_5d"] == 0).all()
    assert (out["earnings_upcoming_5d"] == 0).all() and (out["earnings_event_volatility"] == 1).all()
