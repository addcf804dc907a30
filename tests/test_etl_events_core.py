"""As-of machinery of etl/panels/events.py: calendar arithmetic, scatter + running max,
vintages."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etl.panels.events import (
    EventCalendar,
    EventDataError,
    as_date,
    attach,
    disclosed_seconds,
    eff_row,
    parse_numbers,
    public_same_session,
    statement_timing,
    to_days,
    win_mean,
    win_z,
    window_values,
)

# Japanese holidays inside the test span (TC would mark them HolidayDivision 0).
HOLIDAYS = ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-08", "2024-02-12", "2024-02-23", "2024-03-20"]


def make_calendar(start: str = "2024-01-01", end: str = "2024-06-28") -> tuple[EventCalendar, pl.DataFrame]:
    """Weekday sessions minus the listed holidays, and the matching trading-calendar frame."""
    days = pd.date_range(start, end, freq="D")
    div = ["1" if d.weekday() < 5 and d.strftime("%Y-%m-%d") not in HOLIDAYS else "0" for d in days]
    tc = pl.DataFrame({"Date": list(days.date), "HolidayDivision": div})
    sessions = tc.filter(pl.col("HolidayDivision") == "1")["Date"]
    return EventCalendar.build(sessions, tc), tc


def d(s: str) -> int:
    return as_date(s)


def row_of(cal: EventCalendar, s: str) -> int:
    return int(np.searchsorted(cal.sessions, d(s)))


def test_calendar_business_day_arithmetic():
    cal, _ = make_calendar()
    # Friday 2024-01-05: Monday 8th is a holiday -> nbd is Tuesday 9th; +3 business days = Thursday 11th.
    assert cal.nbd(np.array([d("2024-01-05")]))[0] == d("2024-01-09")
    assert cal.add_business(np.array([d("2024-01-05")]), 3)[0] == d("2024-01-11")
    # a Saturday counts from the next business day
    assert cal.nbd(np.array([d("2024-01-06")]))[0] == d("2024-01-09")
    # Thursday 2024-02-22 (Friday 23rd is a holiday): +3 business days = Wednesday 28th
    assert cal.add_business(np.array([d("2024-02-22")]), 3)[0] == d("2024-02-28")
    # past the calendar's end: never effective
    assert eff_row(cal, cal.nbd(np.array([d("2024-06-28")])))[0] == cal.T


def test_halt_day_is_business_but_not_session():
    days = pd.bdate_range("2020-09-28", "2020-10-09")
    tc = pl.DataFrame({"Date": list(days.date), "HolidayDivision": ["1"] * len(days)})
    sessions = [x for x in days.date if str(x) != "2020-10-01"]
    cal = EventCalendar.build(sessions, tc)
    # nbd(2020-09-30) is the business day 2020-10-01, which attaches to the first session >= it: 10-02
    eff = cal.nbd(np.array([d("2020-09-30")]))
    assert eff[0] == d("2020-10-01")
    assert cal.sessions[eff_row(cal, eff)[0]] == d("2020-10-02")
    # without TC the halt day is still a business day
    cal2 = EventCalendar.build(sessions, None)
    assert cal2.add_business(np.array([d("2020-09-29")]), 3)[0] == d("2020-10-02")


def test_attach_asof_priority_and_staleness():
    cal, _ = make_calendar()
    T = cal.T
    # three records for column 0, one for column 1; record 2 is a late correction of an old item
    row = np.array([5, 10, 12, 3])
    col = np.array([0, 0, 0, 1])
    rank = np.array([1, 3, 2, 1])  # record 1 (rank 3) outranks record 2 (rank 2) although 2 lands later
    att = attach(np, cal, 2, row, col, rank)
    rec = att.rec_TN
    assert (rec[:5, 0] == -1).all() and (rec[5:10, 0] == 0).all() and (rec[10:, 0] == 1).all()
    assert (rec[:3, 1] == -1).all() and (rec[3:, 1] == 3).all()
    # staleness: eff on a session, limit 2 -> attached on eff row and the two following sessions only
    eff_day = cal.sessions[row]
    att = attach(np, cal, 2, row, col, rank, eff_day_R=eff_day, limit=2)
    assert list(att.rec_TN[3:7, 1]) == [3, 3, 3, -1]
    assert list(att.rec_TN[10:14, 0]) == [1, 1, 1, -1]
    assert att.rec_TN[T - 1, 0] == -1
    np.testing.assert_array_equal(att.impulse()[3:6, 1], [1.0, 0.0, 0.0])
    assert np.isnan(att.impulse()[0, 1])


def test_records_before_the_grid_have_negative_rows_and_true_ages():
    """The grid starts on 2024-02-01 while the calendar (and the records) reach back into January."""
    _, tc = make_calendar()
    sessions = tc.filter((pl.col("HolidayDivision") == "1") & (pl.col("Date") >= pl.date(2024, 2, 1)))["Date"]
    cal = EventCalendar.build(sessions, tc)
    # sessions in January 2024: 23 weekdays minus the holidays of Jan 1-3 and 8 -> 19
    assert int(np.sum(cal.before >= d("2024-01-01"))) == 19
    # Wed 2024-01-31 is the session just before the grid; Sat 2024-01-27 attaches to Mon 29th (row -3)
    assert list(cal.asof_row(np.array([d("2024-01-31"), d("2024-01-27"), d("2024-02-01")]))) == [-1, -3, 0]
    # sess(a, t) = (t + 1) - sessions_upto(a): from Mon 29th to the grid's row 0 (Feb 1st) is 3 sessions
    assert 1 - cal.sessions_upto(np.array([d("2024-01-29")]))[0] == 3
    assert cal.sessions_upto(np.array([d("2024-02-02")]))[0] == 2
    # a record effective on Jan 29th holds from row 0, is no impulse there, and is stale past 4 sessions
    eff = np.array([d("2024-01-29"), d("2024-01-31")])
    row = eff_row(cal, eff)
    att = attach(np, cal, 2, row, np.array([0, 1]), np.array([0, 1]), eff_day_R=eff, limit=4)
    assert list(att.rec_TN[:3, 0]) == [0, 0, -1] and list(att.rec_TN[:5, 1]) == [1, 1, 1, 1, -1]
    np.testing.assert_array_equal(att.impulse()[:2, 1], [0.0, 0.0])


def test_calendar_reaches_back_before_the_trading_calendar():
    """Dates before the raw trading calendar use XTKS: 2023-12-29 is the last session of 2023."""
    cal, _ = make_calendar()
    assert cal.nbd(np.array([d("2023-12-28")]))[0] == d("2023-12-29")
    assert cal.nbd(np.array([d("2023-12-29")]))[0] == d("2024-01-04")
    # sessions from Fri 2023-12-22 to the grid's first (Thu 2024-01-04): Dec 25-29 and Jan 4
    assert 1 - cal.sessions_upto(np.array([d("2023-12-22")]))[0] == 6


def test_disclosed_time_forms():
    st = pl.DataFrame({"DisclosedTime": ["15:00:00", "15:00", "14:59:59", "14:59", "", None, "09:05"]})
    secs = disclosed_seconds(st)
    np.testing.assert_array_equal(secs, [54000, 54000, 53999, 53940, np.nan, np.nan, 32700])
    assert list(public_same_session(secs)) == [False, False, True, True, False, False, True]
    for bad in ("3:00 pm", "1500", "15:00:00.5"):
        with pytest.raises(EventDataError, match="DisclosedTime"):
            disclosed_seconds(pl.DataFrame({"DisclosedTime": [bad]}))


def test_statement_timing_same_session_or_next_business_day():
    cal, _ = make_calendar()
    st = pl.DataFrame(
        {
            "DisclosedDate": [dt.date(2024, 1, 5)] * 4 + [dt.date(2024, 1, 6)],
            "DisclosedTime": ["14:59:59", "15:00", "", None, "10:00:00"],
        }
    )
    out = statement_timing(cal, st)
    # Friday 5th before 15:00 -> that day; later or missing -> Tuesday 9th (Monday 8th is a holiday);
    # a Saturday disclosure -> effective that day, attached from the next session (Tuesday 9th)
    assert list(out["_eff"]) == [d("2024-01-05")] + [d("2024-01-09")] * 3 + [d("2024-01-06")]
    assert list(out["_row"]) == [row_of(cal, "2024-01-05")] + [row_of(cal, "2024-01-09")] * 4
    assert out["_secs"].to_list() == [53999.0, 54000.0, None, None, 36000.0]


def test_attach_same_cell_keeps_highest_rank():
    cal, _ = make_calendar()
    att = attach(np, cal, 1, np.array([4, 4, 4]), np.array([0, 0, 0]), np.array([7, 9, 8]))
    assert att.rec_TN[4, 0] == 1 and att.rec_TN[3, 0] == -1
    np.testing.assert_array_equal(att.take(np.array([10.0, 20.0, 30.0]))[4:6, 0], [20.0, 20.0])


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 40), st.integers(0, 2)), min_size=1, max_size=25), st.integers(0, 45)
)
def test_attach_no_look_ahead(records, cut):
    """Dropping every record that attaches after `cut` leaves rows <= cut unchanged."""
    cal, _ = make_calendar()
    row = np.array([r for r, _ in records])
    col = np.array([c for _, c in records])
    rank = np.arange(len(records))
    full = attach(np, cal, 3, row, col, rank).take(rank.astype(float))
    keep = row <= cut
    part = attach(np, cal, 3, row[keep], col[keep], rank[keep]).take(rank[keep].astype(float))
    np.testing.assert_array_equal(full[: cut + 1], part[: cut + 1])


def test_window_values_plain_series_matches_pandas():
    rng = np.random.default_rng(0)
    x = rng.normal(size=30)
    x[[3, 17]] = np.nan
    g = np.zeros(30, dtype=np.int64)
    it = np.arange(30)
    win = window_values(g, it, g, x, g, it, g, 8)
    s = pd.Series(x)
    np.testing.assert_allclose(win_mean(win, 5), s.rolling(8, min_periods=5).mean(), equal_nan=True)
    ref = (s - s.rolling(8, min_periods=5).mean()) / (s.rolling(8, min_periods=5).std() + 1e-12)
    np.testing.assert_allclose(win_z(win, 5), ref, equal_nan=True, rtol=1e-10)


def test_win_z_flat_window_is_zero():
    win = np.array([[2.0, 2.0, 2.0, np.nan], [1.0, 2.0, 3.0, 4.0]])
    z = win_z(win, 3)
    assert z[0] == 0.0
    assert z[1] == pytest.approx((1 - 2.5) / (np.std([1, 2, 3, 4], ddof=1) + 1e-12))


def test_window_values_vintages():
    """Item 1 is corrected at pub 5: windows queried before 5 see the original, after it the correction."""
    g = np.zeros(4, dtype=np.int64)
    item = np.array([0, 1, 2, 1])
    pub = np.array([1, 2, 3, 5])
    val = np.array([10.0, 20.0, 30.0, 25.0])
    win = window_values(g, item, pub, val, np.zeros(3, np.int64), np.array([2, 2, 1]), np.array([3, 5, 2]), 3)
    np.testing.assert_array_equal(win[0], [30.0, 20.0, 10.0])
    np.testing.assert_array_equal(win[1], [30.0, 25.0, 10.0])
    np.testing.assert_array_equal(win[2][:2], [20.0, 10.0])
    assert np.isnan(win[2][2])
    # a query before an item's first publication sees nothing for it
    early = window_values(g, item, pub, val, np.zeros(1, np.int64), np.array([2]), np.array([2]), 1)
    assert np.isnan(early[0, 0])


def test_parse_numbers_rules():
    df = pl.DataFrame({"a": ["1.5", "", "-", " 2 "], "b": ["x", "1", "2", "3"]})
    out = parse_numbers(df, ["a"], "ep", nulls=("", "-"))
    assert out["a"].to_list() == [1.5, None, None, 2.0]
    with pytest.raises(EventDataError, match="ep: field b must be a number"):
        parse_numbers(df, ["b"], "ep")


def test_to_days_roundtrip():
    s = pl.Series([pd.Timestamp("2024-01-05").date()])
    assert to_days(s)[0] == d("2024-01-05")


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 2), st.integers(0, 12), st.integers(0, 6)), min_size=1, max_size=40),
    st.integers(2, 5),
)
def test_vintage_windows_equal_the_exact_windows(versions, w):
    """The fast panel path + selective recompute equals the exact vintage windows for every version."""
    from etl import ops
    from etl.panels.events import VintageWindows, window_reduce

    seen = {}
    for g, item, delay in versions:  # first publication after the item, corrections later
        seen.setdefault((g, item), []).append(item + delay + len(seen.get((g, item), [])))
    rows = [(g, i, p) for (g, i), pubs in seen.items() for p in sorted(set(pubs))]
    group = np.array([r[0] for r in rows])
    # items must be dense per group (positions of existing application dates)
    dense = {g: {v: k for k, v in enumerate(sorted({r[1] for r in rows if r[0] == g}))} for g in set(group)}
    item = np.array([dense[r[0]][r[1]] for r in rows])
    pub = np.array([r[2] for r in rows])
    vals = np.random.default_rng(len(rows)).normal(size=len(rows))
    fast = VintageWindows.build(group, item, pub).apply(
        vals, w, lambda p: ops.rolling_mean(p, w, 1), lambda x: win_mean(x, 1)
    )
    exact = window_reduce(group, item, pub, vals, group, item, pub, w, lambda x: win_mean(x, 1))
    np.testing.assert_allclose(fast, exact, rtol=1e-12, equal_nan=True)


def test_record_windows_run_on_the_given_namespace():
    """RecordSeries and VintageWindows hand their panel function `xp`'s array (the device's on a GPU build)
    and give back host values equal to the host path's."""
    from etl import ops
    from etl.panels.events import RecordSeries, VintageWindows

    class DeviceArray(np.ndarray):  # stands in for a device array
        pass

    class DeviceXp:
        @staticmethod
        def asarray(a):
            return np.asarray(a).view(DeviceArray)

    seen = []

    def mean2(p):
        seen.append(type(p))
        return ops.rolling_mean(p, 2, 1)

    group, item = np.array([0, 0, 0, 1, 1]), np.array([0, 1, 2, 0, 1])
    vals = np.array([1.0, 2.0, 4.0, 10.0, 20.0])
    on_host = RecordSeries.build(group, item).apply(vals, lambda p: ops.rolling_mean(p, 2, 1))
    np.testing.assert_array_equal(on_host, [1.0, 1.5, 3.0, 10.0, 15.0])
    moved = RecordSeries.build(group, item, DeviceXp).apply(vals, mean2)
    assert seen == [DeviceArray] and type(moved) is np.ndarray
    np.testing.assert_array_equal(moved, on_host)
    vintage = VintageWindows.build(group, item, item.copy(), DeviceXp).apply(vals, 2, mean2, lambda x: x)
    assert seen == [DeviceArray, DeviceArray]
    np.testing.assert_array_equal(vintage, on_host)
