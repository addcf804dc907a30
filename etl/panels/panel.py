"""The [date x stock] grid and pivots of long raw frames onto it.

A `Grid` holds the grid sessions (FEATURES.md §1.4: trading-calendar business days minus 2020-10-01) and the
sorted stock codes. Every panel is an [T, N] array over it. Date helpers map calendar dates to row indices
for the as-of rules of §1.5: `asof_index` (first session >= date, "attachment"), `nbd_index` (first session
strictly after date, "next business day"), `bday_shift` (k business days later, for weekly margin).
All indices are NumPy int64 (host); `ops.scatter_*` move them to the device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

OUTAGE_DATE = np.datetime64("2020-10-01", "D")  # exchange-wide outage, removed from the grid [D1]
BUSINESS_DIVISIONS = ("1", "2")


def to_days(dates: Any) -> np.ndarray:
    """Dates (polars Series, list of str/date, numpy) -> datetime64[D] array (NaT for null)."""
    if isinstance(dates, pl.Series):
        dates = dates.cast(pl.Date).to_numpy()
    return np.asarray(dates, dtype="datetime64[D]")


@dataclass(frozen=True)
class Grid:
    """Grid sessions `dates` [T] (datetime64[D], sorted) and stock `codes` [N] (str, sorted).

    `business_days` is the full business-day calendar (2020-10-01 included, and running past the last grid
    session when the calendar does) so `bday_shift` can count business days exactly.
    """

    dates: np.ndarray
    codes: np.ndarray
    business_days: np.ndarray

    @property
    def T(self) -> int:
        return int(self.dates.shape[0])

    @property
    def N(self) -> int:
        return int(self.codes.shape[0])

    def date_index(self, dates: Any) -> np.ndarray:
        """Row of each date on the grid, -1 if the date is not a grid session."""
        d = to_days(dates)
        i = np.searchsorted(self.dates, d, side="left")
        ok = (i < self.T) & (self.dates[np.minimum(i, self.T - 1)] == d) if self.T else i < 0
        return np.where(ok, i, -1).astype(np.int64)

    def code_index(self, codes: Any) -> np.ndarray:
        """Column of each code (a Polars Series or a list/array), -1 if the code is not on the grid."""
        if not isinstance(codes, pl.Series):
            codes = pl.Series(np.asarray(codes, dtype=object).astype(str), dtype=pl.String)
        return code_index(self.codes, codes)

    def asof_index(self, dates: Any) -> np.ndarray:
        """Row of the first grid session >= date (attachment of an effective date); T if none (NaT -> T)."""
        return np.searchsorted(self.dates, to_days(dates), side="left").astype(np.int64)

    def nbd_index(self, dates: Any) -> np.ndarray:
        """Row of the first grid session strictly after each calendar date (nbd); T if none."""
        return np.searchsorted(self.dates, to_days(dates), side="right").astype(np.int64)

    def bday_shift(self, dates: Any, k: int) -> np.ndarray:
        """The k-th business day strictly after each date (k >= 1), NaT past the end of the calendar."""
        d = to_days(dates)
        i = np.searchsorted(self.business_days, d, side="right") + (k - 1)
        ok = (i < self.business_days.shape[0]) & ~np.isnat(d)
        out = self.business_days[np.minimum(i, self.business_days.shape[0] - 1)]
        return np.where(ok, out, np.datetime64("NaT", "D"))

    def date_days(self) -> np.ndarray:
        """Grid dates as float days since 1970-01-01 (for calendar-day arithmetic on panels)."""
        return self.dates.astype(np.int64).astype(np.float64)


def code_index(codes: Any, values: pl.Series) -> np.ndarray:
    """Position of each value in the code list `codes`, -1 for a code not in it (or null): a hash lookup in
    Polars, fast on millions of rows (a sorted search over NumPy strings is ~6x slower)."""
    lookup = {c: i for i, c in enumerate(np.asarray(codes).astype(str).tolist())}
    idx = values.cast(pl.String).replace_strict(lookup, default=-1, return_dtype=pl.Int64)
    return idx.fill_null(-1).to_numpy().astype(np.int64)


def business_days_from_calendar(calendar: pl.DataFrame) -> np.ndarray:
    """Business days (HolidayDivision 1 or 2) of a trading_calendar frame, sorted."""
    bd = calendar.filter(pl.col("HolidayDivision").cast(pl.String).is_in(BUSINESS_DIVISIONS))
    return np.unique(to_days(bd["Date"]))


def grid_sessions(business_days: np.ndarray) -> np.ndarray:
    """Grid sessions = business days minus the 2020-10-01 outage."""
    return business_days[business_days != OUTAGE_DATE]


def pivot(
    grid: Grid,
    frame: pl.DataFrame,
    columns: list[str],
    xp: Any = np,
    date_col: str = "Date",
    code_col: str = "Code",
) -> tuple[dict[str, Any], Any]:
    """Scatter a long frame with unique (date, code) keys onto [T, N] float64 panels (NaN elsewhere).

    Returns (panels by column, [T, N] bool mask of the cells the frame has a row for). Rows whose date is
    not a grid session or whose code is not on the grid are ignored; callers validate their inputs first
    (pipeline.validate) so nothing is dropped silently.
    """
    rows = grid.date_index(frame[date_col])
    cols = grid.code_index(frame[code_col])
    keep = (rows >= 0) & (cols >= 0)
    flat = rows[keep] * grid.N + cols[keep]  # one flat index for every column: a 1-D `np.put` each (3x
    mask = np.zeros(grid.T * grid.N, dtype=bool)  # faster than a 2-D fancy assignment at 9M rows)
    np.put(mask, flat, True)
    out = {}
    for name in columns:
        vals = frame[name].cast(pl.Float64).to_numpy()
        panel = np.full(grid.T * grid.N, np.nan)
        np.put(panel, flat, vals[keep])
        out[name] = xp.asarray(panel.reshape(grid.T, grid.N))
    return out, xp.asarray(mask.reshape(grid.T, grid.N))
