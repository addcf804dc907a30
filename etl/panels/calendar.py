"""The JPX trading calendar, from exchange_calendars' XTKS, in the shape of /markets/trading_calendar.

J-Quants marks every calendar date with a HolidayDivision: "1" business day, "0" non-business day ("2"
half-day and "3" OSE holiday trading are not generated). XTKS treats 2020-10-01, the day
of the exchange-wide system outage, as an ad hoc holiday; J-Quants lists it as a business day with all-null
quotes, so the calendar here puts it back (`OUTAGE_DAYS`). Nothing else is added or removed.
"""

from __future__ import annotations

import datetime as dt
from functools import cache

import numpy as np
import polars as pl

from etl.errors import GogookuError

OUTAGE_DAYS = (dt.date(2020, 10, 1),)  # arrowhead outage: a business day on which nothing traded
XTKS_FIRST = dt.date(2000, 1, 4)


def parse_date(value: str | dt.date, what: str = "date") -> dt.date:
    """A YYYY-MM-DD date (the one rule for dates a user types); anything else is one GogookuError naming
    `what` (e.g. "--start") and the value."""
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(value)
    except (TypeError, ValueError):
        raise GogookuError(f"{what} {value!r} is not a date (YYYY-MM-DD)") from None


@cache
def _xtks(end_year: int):
    import exchange_calendars as xc

    return xc.get_calendar("XTKS", start=XTKS_FIRST.isoformat(), end=f"{end_year}-12-31")


def business_days(start: str | dt.date, end: str | dt.date) -> np.ndarray:
    """J-Quants business days in [start, end] as datetime64[D]: XTKS sessions plus the outage day(s)."""
    start, end = parse_date(start, "calendar start"), parse_date(end, "calendar end")
    if start > end:
        raise GogookuError(f"calendar start {start} is after end {end}")
    if start < XTKS_FIRST:
        raise GogookuError(f"calendar start {start} is before {XTKS_FIRST}, where the XTKS calendar begins")
    cal = _xtks(max(end.year, dt.date.today().year) + 1)
    sessions = cal.sessions_in_range(start.isoformat(), end.isoformat())
    days = sessions.to_numpy().astype("datetime64[D]")
    extra = np.array([d for d in OUTAGE_DAYS if start <= d <= end], dtype="datetime64[D]")
    return np.union1d(days, extra)


def trading_calendar(start: str | dt.date, end: str | dt.date) -> pl.DataFrame:
    """The /markets/trading_calendar rows for every calendar date in [start, end]."""
    start, end = parse_date(start, "calendar start"), parse_date(end, "calendar end")
    days = business_days(start, end)
    all_days = np.arange(np.datetime64(start, "D"), np.datetime64(end, "D") + 1)
    division = np.where(np.isin(all_days, days), "1", "0")
    return pl.DataFrame({"Date": all_days, "HolidayDivision": division}).with_columns(
        pl.col("Date").cast(pl.Date), pl.col("HolidayDivision").cast(pl.String)
    )


def next_business_day(days: np.ndarray, dates: np.ndarray) -> np.ndarray:
    """For each date, the first business day strictly after it (`nbd` of FEATURES.md §1.4).

    `days` are the sorted business days (datetime64[D]); a date past the last one gives NaT.
    """
    idx = np.searchsorted(days, dates.astype("datetime64[D]"), side="right")
    out = np.full(idx.shape, np.datetime64("NaT"), dtype="datetime64[D]")
    ok = idx < len(days)
    out[ok] = days[idx[ok]]
    return out
