"""The trading calendar is XTKS plus the 2020-10-01 outage day, in the API's shape."""

import datetime as dt

import exchange_calendars as xc
import numpy as np
import pytest

from etl.errors import GogookuError
from etl.panels.calendar import business_days, next_business_day, trading_calendar


def test_business_days_equal_xtks_sessions_plus_the_outage_day():
    days = business_days("2019-01-01", "2021-12-31")
    xtks = (
        xc.get_calendar("XTKS")
        .sessions_in_range("2019-01-04", "2021-12-30")
        .to_numpy()
        .astype("datetime64[D]")
    )
    assert np.datetime64("2020-10-01") not in xtks  # exchange_calendars treats the outage as a holiday
    assert set(days.tolist()) == set(xtks.tolist()) | {dt.date(2020, 10, 1)}


def test_trading_calendar_rows_for_every_date_with_holiday_division():
    cal = trading_calendar("2019-12-28", "2020-01-07")
    assert cal.columns == ["Date", "HolidayDivision"]
    assert cal.height == 11
    div = dict(zip(cal["Date"].to_list(), cal["HolidayDivision"].to_list(), strict=True))
    # the year-end holidays Dec 31 - Jan 3 are closed, Jan 6 2020 (Monday) was the first session
    assert [div[dt.date(2019, 12, d)] for d in (28, 29, 30, 31)] == ["0", "0", "1", "0"]
    assert [div[dt.date(2020, 1, d)] for d in (1, 2, 3, 6, 7)] == ["0", "0", "0", "1", "1"]
    assert trading_calendar("2020-09-30", "2020-10-02")["HolidayDivision"].to_list() == ["1", "1", "1"]


def test_next_business_day():
    days = business_days("2020-01-01", "2020-01-31")
    out = next_business_day(days, np.array(["2020-01-03", "2020-01-06", "2020-01-31"], dtype="datetime64[D]"))
    assert out[0] == np.datetime64("2020-01-06") and out[1] == np.datetime64("2020-01-07")
    assert np.isnat(out[2])


def test_bad_dates_are_user_errors():
    with pytest.raises(GogookuError, match="not a date"):
        business_days("2020-13-01", "2021-01-01")
    with pytest.raises(GogookuError, match="after end"):
        business_days("2021-01-01", "2020-01-01")
