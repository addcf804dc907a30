"""Event and publication sources on the [T, N] grid (FEATURES.md §1.4-1.5): as-of attachment, no row loops.

Every record of a published source (weekly/daily margin, trades_spec, statements, short selling) has an
effective date `eff`. Attaching it to the grid is a scatter of the record's id at (first session >= eff,
stock) followed by a running maximum along time: the maximum id at or before t is the as-of record, provided
ids are numbered in the source's priority order (later application date, later publication, ...). Staleness
limits and "days since" counters are then gathers of per-record numbers by that id.

Record-series statistics (z over the last 52 weekly records, say) are computed on the compact record table
with `window_values`, which also handles vintages: a window seen at publication p holds, for each earlier
item, the latest version published by p, so corrections enter history only from their own publication
date (D18).

Host-side index work (searchsorted over dates, sorting records) uses NumPy on the compact tables; the [T, N]
arrays are built with `xp` (NumPy or CuPy).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import polars as pl

from etl import ops
from etl.errors import GogookuError
from etl.panels import panel

EPS = 1e-12
HALT_DAY = np.datetime64(
    "2020-10-01", "D"
)  # exchange-wide outage: a business day but not a grid session [D1]

# Raw-store endpoint ids (etl/sources/schema.py) of the sources handled here.
TRADING_CALENDAR = "markets_trading_calendar"
TRADES_SPEC = "markets_trades_spec"
WEEKLY_MARGIN = "markets_weekly_margin_interest"
DAILY_MARGIN = "markets_daily_margin_interest"
STATEMENTS = "fins_statements"
SHORT_SELLING = "markets_short_selling"
SHORT_POSITIONS = "markets_short_selling_positions"


class EventDataError(GogookuError):
    """Raw event data that breaks a rule the as-of logic relies on."""


def malformed(endpoint_id: str, rule: str, rows: pl.DataFrame) -> EventDataError:
    """One-line error naming the endpoint, the rule and up to three example rows."""
    sample = "; ".join(str(r) for r in rows.head(3).to_dicts())
    return EventDataError(f"{endpoint_id}: {rule} ({rows.height} rows, e.g. {sample})")


def to_days(values: Any) -> np.ndarray:
    """Dates (Polars Series, datetime64 or date list) -> int64 days since 1970-01-01 (NaT -> INT64 min)."""
    return panel.to_days(values).astype(np.int64)


NAT_DAY = np.iinfo(np.int64).min


# ----------------------------------------------------------------------------------------------- calendar
@dataclass(frozen=True)
class EventCalendar:
    """Grid sessions and business days as int64 day numbers, with the date arithmetic of §1.4.

    Rows count calendar sessions (business days minus 2020-10-01) from the grid's first session: a record
    effective before the grid has a negative row, so its impulse, its age in sessions and its staleness are
    those of its true date (it is attached from row 0 onwards like any record effective by then).
    """

    sessions: np.ndarray  # [T] grid sessions, ascending
    business: np.ndarray  # [B] business days (HolidayDivision 1/2), ascending, a superset of sessions

    @property
    def T(self) -> int:
        return int(self.sessions.shape[0])

    @classmethod
    def build(cls, session_dates: Any, calendar: pl.DataFrame | None = None) -> EventCalendar:
        """From the grid's dates and the raw trading calendar (business = HolidayDivision in {1, 2}).

        Without a trading calendar the business days are the sessions plus 2020-10-01 when inside their span.
        """
        sessions = to_days(session_dates)
        if calendar is not None and calendar.height:
            bd = calendar.filter(pl.col("HolidayDivision").is_in(["1", "2"]))["Date"]
            business = np.union1d(to_days(bd), sessions)
        else:
            halt = HALT_DAY.astype(np.int64)
            extra = [halt] if sessions.size and sessions[0] <= halt <= sessions[-1] else []
            business = np.union1d(sessions, np.asarray(extra, dtype=np.int64))
        return cls(sessions=sessions, business=with_earlier_days(business))

    @classmethod
    def from_grid(cls, grid: Any) -> EventCalendar:
        """From an `etl.panels.panel.Grid` (its sessions and full business-day calendar)."""
        sessions = np.asarray(grid.dates, dtype="datetime64[D]").astype(np.int64)
        business = np.union1d(
            np.asarray(grid.business_days, dtype="datetime64[D]").astype(np.int64), sessions
        )
        return cls(sessions=sessions, business=with_earlier_days(business))

    @cached_property
    def before(self) -> np.ndarray:
        """Calendar sessions before the grid's first session (rows -len(before) .. -1)."""
        cal_sessions = self.business[self.business != HALT_DAY.astype(np.int64)]
        first = self.sessions[0] if self.T else np.iinfo(np.int64).max
        return cal_sessions[cal_sessions < first]

    def asof_row(self, day: np.ndarray) -> np.ndarray:
        """Row of the first session >= day: T when none, negative for a session before the grid."""
        d = np.asarray(day, dtype=np.int64)
        grid = np.searchsorted(self.sessions, d, side="left")
        return grid + np.searchsorted(self.before, d, side="left") - self.before.size

    def last_row(self, day: np.ndarray) -> np.ndarray:
        """Row of the last session <= day (-1 when none)."""
        return np.searchsorted(self.sessions, day, side="right") - 1

    def sessions_upto(self, day: Any, xp: Any = np) -> Any:
        """Sessions <= day counted like rows (`row + 1` on a session, <= 0 before the grid), so that
        `sess(a, t) = (t + 1) - sessions_upto(a)` (int64; `xp` for a day panel on the device)."""
        d = xp.asarray(day, dtype=xp.float64)
        flat = d.ravel()
        grid = xp.searchsorted(xp.asarray(self.sessions, dtype=xp.float64), flat, side="right")
        before = xp.searchsorted(xp.asarray(self.before, dtype=xp.float64), flat, side="right")
        return (grid + before - self.before.size).astype(xp.int64).reshape(d.shape)

    def add_business(self, day: np.ndarray, k: int) -> np.ndarray:
        """The k-th business day strictly after `day` (k >= 1); NAT_DAY past the calendar's end.

        `nbd(d) = add_business(d, 1)`; weekly margin `eff = add_business(Date, 3)` [D19].
        """
        pos = np.searchsorted(self.business, day, side="right") + (k - 1)
        out = np.full(np.shape(day), NAT_DAY, dtype=np.int64)
        ok = (pos < self.business.size) & (np.asarray(day) != NAT_DAY)
        out[ok] = self.business[pos[ok]]
        return out

    def nbd(self, day: np.ndarray) -> np.ndarray:
        return self.add_business(day, 1)


def with_earlier_days(business: np.ndarray) -> np.ndarray:
    """`business` with the XTKS business days before its first day in front (etl/panels/calendar.py, the
    calendar the fetch falls back on): statements reach back a year before the prices and the raw trading
    calendar, and their next business days and ages in sessions must be those of their true dates."""
    from etl.panels import calendar

    if business.size == 0:
        return business
    last = dt.date(1970, 1, 1) + dt.timedelta(days=int(business[0]) - 1)
    if last < calendar.XTKS_FIRST:
        return business
    earlier = to_days(calendar.business_days(calendar.XTKS_FIRST, last))
    return np.union1d(earlier, business)


def eff_row(cal: EventCalendar, eff_day: np.ndarray) -> np.ndarray:
    """Attachment row of each effective day (negative before the grid); T (never attached) for NAT_DAY."""
    row = cal.asof_row(eff_day)
    row[eff_day == NAT_DAY] = cal.T
    return row


def gather_host(panel_TN: Any, row_R: np.ndarray, col_R: np.ndarray) -> np.ndarray:
    """panel[row, col] for each record as host float64; NaN where row < 0 or col < 0 (or no panel)."""
    out = np.full(np.shape(row_R), np.nan)
    ok = (np.asarray(row_R) >= 0) & (np.asarray(col_R) >= 0)
    if panel_TN is not None and ok.any():
        xp = ops.array_namespace(panel_TN)  # index where the panel lives, copy the few values back
        out[ok] = ops.to_host(panel_TN[xp.asarray(row_R[ok]), xp.asarray(col_R[ok])])
    return out


# ----------------------------------------------------------------------------------------------- attachment
@dataclass
class Attached:
    """The as-of record of every (t, i): `rec_TN` indexes the record table (-1: none or stale)."""

    xp: Any
    rec_TN: Any  # xp int64 [T, N]
    row_R: np.ndarray  # attachment row of each record (negative: a session before the grid)

    @property
    def valid_TN(self) -> Any:
        return self.rec_TN >= 0

    def take(self, values_R: Any) -> Any:
        """[R] per-record values -> [T, N] float64 panel, NaN where nothing is attached."""
        xp = self.xp
        vals = xp.asarray(np.asarray(values_R, dtype=np.float64))
        if vals.shape[0] == 0:
            return xp.full(self.rec_TN.shape, np.nan)
        out = vals[xp.maximum(self.rec_TN, 0)]
        return xp.where(self.valid_TN, out, np.nan)

    def flag(self) -> Any:
        """Validity flag: 1.0 where a record is attached, else 0.0 (never NaN)."""
        return self.valid_TN.astype(self.xp.float64)

    def impulse(self) -> Any:
        """1 on the attachment session of the attached record, 0 on later sessions, NaN when none."""
        xp = self.xp
        t_T1 = xp.arange(self.rec_TN.shape[0])[:, None]
        row = self.take(self.row_R.astype(np.float64))
        return xp.where(xp.isnan(row), np.nan, (row == t_T1).astype(xp.float64))

    def days_since(self, day_R: np.ndarray, cal: EventCalendar) -> Any:
        """Calendar days from a per-record date to the row's session (`cal(d, Date)`)."""
        xp = self.xp
        session_T1 = xp.asarray(cal.sessions.astype(np.float64))[:, None]
        return session_T1 - self.take(day_R.astype(np.float64))


def running_max_axis0(xp: Any, a_TN: Any) -> Any:
    """Cumulative maximum along time (the forward-fill of record ids)."""
    if xp.__name__ == "numpy":
        return np.maximum.accumulate(a_TN, axis=0)
    # CuPy: log-step doubling scan (ceil(log2 T) elementwise maxima), no per-date Python loop over data
    out = a_TN.copy()
    shift = 1
    while shift < out.shape[0]:
        out[shift:] = xp.maximum(out[shift:], out[:-shift].copy())
        shift *= 2
    return out


def attach(
    xp: Any,
    cal: EventCalendar,
    n_codes: int,
    row_R: np.ndarray,
    col_R: np.ndarray,
    rank_R: np.ndarray,
    *,
    eff_day_R: np.ndarray | None = None,
    limit: int | None = None,
) -> Attached:
    """As-of attach records to the [T, N] grid.

    Record r lands on (row_R[r], col_R[r]) and stays attached until a record of higher `rank_R` lands in the
    same column (ties in rank are not allowed); a record with a negative row (effective before the grid)
    is attached from row 0. With `limit`, a record whose `sess(eff, t)` exceeds it is not attached
    (staleness, §1.5); `eff_day_R` gives eff.
    """
    row_R = np.asarray(row_R, dtype=np.int64)
    col_R = np.asarray(col_R, dtype=np.int64)
    R, T = row_R.shape[0], cal.T
    order = np.lexsort((np.asarray(rank_R),))  # record ids in rank order
    pos_of = np.empty(R, dtype=np.int64)
    pos_of[order] = np.arange(R)
    keep = (row_R < T) & (col_R >= 0) & (col_R < n_codes)
    lin = np.maximum(row_R[keep], 0) * n_codes + col_R[keep]
    pos = pos_of[keep]
    # one record per cell: the highest rank landing there
    srt = np.lexsort((pos, lin))
    lin, pos = lin[srt], pos[srt]
    last = np.ones(lin.shape[0], dtype=bool)
    last[:-1] = lin[1:] != lin[:-1]
    flat = xp.full(T * n_codes, -1, dtype=xp.int64)
    flat[xp.asarray(lin[last])] = xp.asarray(pos[last])
    pos_TN = running_max_axis0(xp, flat.reshape(T, n_codes))
    rec_TN = xp.where(pos_TN >= 0, xp.asarray(order)[xp.maximum(pos_TN, 0)], -1) if R else pos_TN
    if limit is not None:
        if eff_day_R is None:
            raise ValueError("a staleness limit needs eff_day_R")
        upto = cal.sessions_upto(np.asarray(eff_day_R, dtype=np.int64)).astype(np.float64)
        att = Attached(xp, rec_TN, row_R)
        t_T1 = xp.arange(T, dtype=xp.float64)[:, None]
        sess = (t_T1 + 1.0) - att.take(upto)
        rec_TN = xp.where(sess <= limit, rec_TN, -1)
    return Attached(xp, rec_TN, row_R)


@dataclass
class RecordSet:
    """A source's records, ready to attach: per-record column values plus where and when each applies.

    Built once for all stocks (host NumPy, compact); `attach_records` then makes the [T, n] panels of any
    stock range, so the pipeline's stock chunks each pay only for their own columns.
    """

    values: dict[str, np.ndarray]  # column name -> [R] value of each record
    row_R: np.ndarray  # attachment row (first session >= eff, negative before the grid; T = never)
    code_R: np.ndarray  # grid column of the record's code (-1 = not on the grid)
    rank_R: np.ndarray  # priority within a column (higher wins once attached)
    eff_R: np.ndarray  # effective day
    limit: int | None  # staleness limit in sessions (None = no limit)
    since: dict[str, np.ndarray]  # column name -> [R] day that `cal(day, Date)` counts from
    impulse: str | None  # name of the impulse column (1 on the attachment session)
    validity: str | None  # name of the validity flag column

    @classmethod
    def plain(cls, values: dict[str, np.ndarray], row_R: np.ndarray, code_R: np.ndarray, eff_R: np.ndarray):
        """Records that only carry values: the latest effective wins; no staleness, impulse or validity."""
        return cls(values, row_R, code_R, eff_R, eff_R, limit=None, since={}, impulse=None, validity=None)


def event_calendar(ctx: Any) -> EventCalendar:
    """The build's EventCalendar, memoised on the root feature context."""
    return ctx.full.cached("events.calendar", lambda: EventCalendar.from_grid(ctx.grid))


def chunk_columns(ctx: Any, key: str, build: Any, columns: list[str], validity: str | None) -> dict[str, Any]:
    """Registry glue: `build(cal)` -> RecordSet once per build (root memo), attached for this context.

    `build` returns None when the source is missing or empty: NaN columns and validity 0.
    """
    cal = event_calendar(ctx)
    recs = ctx.full.cached(key, lambda: build(cal))
    if recs is None:
        return empty_columns(ctx.xp, ctx.shape, columns, validity)
    return attach_records(ctx.xp, cal, recs, ctx.cols.start, ctx.cols.stop)


def attach_records(xp: Any, cal: EventCalendar, recs: RecordSet, lo: int, hi: int) -> dict[str, Any]:
    """[T, hi - lo] panels of every column of `recs` for the grid's stocks lo..hi-1."""
    # only this range's records: the sorts and gathers of a chunk scale with its own records, not all R
    sel = np.flatnonzero((recs.code_R >= lo) & (recs.code_R < hi))
    row, col = recs.row_R[sel], recs.code_R[sel] - lo
    att = attach(xp, cal, hi - lo, row, col, recs.rank_R[sel], eff_day_R=recs.eff_R[sel], limit=recs.limit)
    out = {name: att.take(np.asarray(v)[sel]) for name, v in recs.values.items()}
    for name, day in recs.since.items():
        out[name] = att.days_since(np.asarray(day)[sel], cal)
    if recs.impulse is not None:
        out[recs.impulse] = att.impulse()
    if recs.validity is not None:
        out[recs.validity] = att.flag()
    return out


def empty_columns(
    xp: Any, shape: tuple[int, int], columns: list[str], validity: str | None
) -> dict[str, Any]:
    """A missing source: every column NaN and its validity flag 0."""
    nan = xp.full(shape, np.nan)
    out = {c: nan for c in columns}
    if validity is not None:
        out[validity] = xp.zeros(shape)
    return out


# ----------------------------------------------------------------------------------------------- windows
def window_values(
    group_R: np.ndarray,
    item_R: np.ndarray,
    pub_R: np.ndarray,
    value_R: np.ndarray,
    q_group: np.ndarray,
    q_item: np.ndarray,
    q_pub: np.ndarray,
    w: int,
) -> np.ndarray:
    """[Q, w] windows over a record series, vintage-aware; column 0 = the current item, w-1 = the oldest.

    A series is identified by `group`; its items are numbered 0, 1, ... (`item`, e.g. the position of an
    application date or a week). Each version of an item has a publication key `pub`. Query q asks for the
    items `q_item - o` (o = 0..w-1) of `q_group` as known at `q_pub`: for each, the latest version with
    pub <= q_pub, NaN if none (or item < 0). Series without versions pass pub = 0 everywhere.
    """
    group_R = np.asarray(group_R, dtype=np.int64)
    item_R = np.asarray(item_R, dtype=np.int64)
    pub_R = np.asarray(pub_R, dtype=np.int64)
    value_R = np.asarray(value_R, dtype=np.float64)
    Q = np.asarray(q_group).shape[0]
    if group_R.size == 0 or Q == 0:
        return np.full((Q, w), np.nan)
    n_items = int(item_R.max()) + 2
    pmin = int(min(pub_R.min(), np.min(q_pub)))
    span = int(max(pub_R.max(), np.max(q_pub))) - pmin + 2
    slot_R = group_R * n_items + item_R
    key_R = slot_R * span + (pub_R - pmin)
    order = np.argsort(key_R, kind="stable")
    key_sorted = key_R[order]
    items = np.asarray(q_item, dtype=np.int64)[:, None] - np.arange(w)[None, :]
    slot_Q = np.asarray(q_group, dtype=np.int64)[:, None] * n_items + items
    q_key = slot_Q * span + (np.asarray(q_pub, dtype=np.int64)[:, None] - pmin)
    idx = np.searchsorted(key_sorted, q_key, side="right") - 1
    idx_c = np.maximum(idx, 0)
    hit = (idx >= 0) & (items >= 0) & (key_sorted[idx_c] // span == slot_Q)
    return np.where(hit, value_R[order][idx_c], np.nan)


@dataclass(frozen=True)
class RecordSeries:
    """Layout of plain record series (one record per (group, item)) as a [K, G] panel: item k of group g.

    Rolling statistics over records then become the panel operators of etl.ops along axis 0 (cumulative-sum
    and block-tree windows, O(K x G)), with no per-record search. `apply` runs them on `xp`'s device: on a
    GPU build the weekly and daily margin z-scores ([~520 x 4,000] panels, ~100 array passes each) would
    otherwise be seconds of host time, where copying the panel there and back costs milliseconds.
    """

    group_R: np.ndarray
    item_R: np.ndarray
    K: int
    G: int
    xp: Any = np

    @classmethod
    def build(cls, group_R: np.ndarray, item_R: np.ndarray, xp: Any = np) -> RecordSeries:
        group_R = np.asarray(group_R, dtype=np.int64)
        item_R = np.asarray(item_R, dtype=np.int64)
        K = int(item_R.max()) + 1 if item_R.size else 0
        G = int(group_R.max()) + 1 if group_R.size else 0
        return cls(group_R, item_R, K, G, xp)

    def panel(self, values_R: np.ndarray) -> np.ndarray:
        out = np.full((self.K, self.G), np.nan)
        out[self.item_R, self.group_R] = values_R
        return out

    def back(self, panel_KG: np.ndarray) -> np.ndarray:
        return panel_KG[self.item_R, self.group_R]

    def apply(self, values_R: np.ndarray, fn: Any) -> np.ndarray:
        """fn([K, G] panel on `xp`) -> [K, G], read back per record (host)."""
        return self.back(self.on_device(fn, self.panel(np.asarray(values_R, dtype=np.float64))))

    def on_device(self, fn: Any, panel_KG: np.ndarray) -> np.ndarray:
        """fn of a host [K, G] panel, run on `xp`, back on the host."""
        return ops.to_host(fn(self.xp.asarray(panel_KG)))


@dataclass(frozen=True)
class VintageWindows:
    """Record windows over versioned series (corrections), exact yet mostly on the fast panel path.

    Versions are sorted by (group, item, pub). The base series takes each item's latest version; a version's
    window equals the base window unless some item in it has a version published after the querying
    version (a later correction, or the version itself being superseded). Only those versions, found with a
    rolling max of each item's latest publication, are recomputed with the exact `window_reduce`.
    """

    group_R: np.ndarray
    item_R: np.ndarray
    pub_R: np.ndarray
    latest_R: np.ndarray  # index of each (group, item)'s latest version
    series: RecordSeries

    @classmethod
    def build(
        cls, group_R: np.ndarray, item_R: np.ndarray, pub_R: np.ndarray, xp: Any = np
    ) -> VintageWindows:
        """`xp`: where the base panel's function runs (`RecordSeries.apply`)."""
        group_R, item_R, pub_R = (np.asarray(a, dtype=np.int64) for a in (group_R, item_R, pub_R))
        order = np.lexsort((pub_R, item_R, group_R))
        g, i = group_R[order], item_R[order]
        last = np.ones(order.size, dtype=bool)
        last[:-1] = (g[1:] != g[:-1]) | (i[1:] != i[:-1])
        latest = order[last]
        return cls(group_R, item_R, pub_R, latest, RecordSeries.build(group_R[latest], item_R[latest], xp))

    def apply(self, values_R: np.ndarray, w: int, fn_panel: Any, fn_window: Any) -> np.ndarray:
        """Per version: `fn_panel` on the base [K, G] panel, `fn_window` on exact [q, w] windows if needed."""
        values_R = np.asarray(values_R, dtype=np.float64)
        s = self.series
        base = s.on_device(fn_panel, s.panel(values_R[self.latest_R]))[self.item_R, self.group_R]
        newest = s.panel(self.pub_R[self.latest_R].astype(np.float64))
        seen = ops_rolling_max(newest, w)[self.item_R, self.group_R]
        redo = np.flatnonzero(seen > self.pub_R)
        if redo.size:
            g, i, p = self.group_R, self.item_R, self.pub_R
            base[redo] = window_reduce(g, i, p, values_R, g[redo], i[redo], p[redo], w, fn_window)
        return base


def ops_rolling_max(x_KG: np.ndarray, w: int) -> np.ndarray:
    """Rolling max over the last w rows, NaN-skipping (NumPy host helper for the vintage check)."""
    return ops.rolling_max(x_KG, w, 1)


WINDOW_BLOCK = 1 << 16  # queries per block: bounds the [block, w] temporaries of long windows


def window_reduce(
    group_R: np.ndarray,
    item_R: np.ndarray,
    pub_R: np.ndarray,
    value_R: np.ndarray,
    q_group: np.ndarray,
    q_item: np.ndarray,
    q_pub: np.ndarray,
    w: int,
    fn: Any,
) -> np.ndarray:
    """`fn(window_values(...))` -> [Q], evaluated over blocks of queries so memory stays O(block x w)."""
    q_group, q_item, q_pub = (np.asarray(a, dtype=np.int64) for a in (q_group, q_item, q_pub))
    Q = q_group.shape[0]
    out = np.full(Q, np.nan)
    for lo in range(0, Q, WINDOW_BLOCK):  # blocks of 65,536 records, not a loop over rows
        hi = min(Q, lo + WINDOW_BLOCK)
        win = window_values(group_R, item_R, pub_R, value_R, q_group[lo:hi], q_item[lo:hi], q_pub[lo:hi], w)
        out[lo:hi] = fn(win)
    return out


def win_count(win_QW: np.ndarray) -> np.ndarray:
    return np.sum(~np.isnan(win_QW), axis=1)


def win_mean(win_QW: np.ndarray, mp: int) -> np.ndarray:
    """Mean of the non-null values; NaN when fewer than mp (pandas rolling semantics)."""
    n = win_count(win_QW)
    s = np.nansum(win_QW, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n >= max(mp, 1), s / np.maximum(n, 1), np.nan)


def win_z(win_QW: np.ndarray, mp: int) -> np.ndarray:
    """z of column 0 against its window: (x - mean) / (std_ddof1 + EPS); 0 on a flat window (§3); mp >= 2."""
    x = win_QW[:, 0]
    n = win_count(win_QW)
    mean = win_mean(win_QW, mp)
    dev = np.where(np.isnan(win_QW), 0.0, win_QW - mean[:, None])
    with np.errstate(invalid="ignore", divide="ignore"):
        std = np.sqrt(np.sum(dev * dev, axis=1) / (n - 1))
        hi = np.nanmax(np.where(n[:, None] > 0, win_QW, 0.0), axis=1)
        lo = np.nanmin(np.where(n[:, None] > 0, win_QW, 0.0), axis=1)
        z = (x - mean) / (std + EPS)
    z = np.where(hi == lo, 0.0, z)
    return np.where((n >= max(mp, 2)) & ~np.isnan(x), z, np.nan)


def group_positions(
    keys: pl.DataFrame, group_cols: list[str], order_col: str
) -> tuple[np.ndarray, np.ndarray]:
    """Integer (group id, item position) of each row: items are the distinct `order_col` values per group."""
    groups = keys.select(group_cols).unique().sort(group_cols).with_row_index("_g")
    df = keys.select([*group_cols, order_col]).with_row_index("_r").join(groups, on=group_cols, how="left")
    df = df.with_columns(pl.col(order_col).rank("dense").over("_g").cast(pl.Int64).alias("_i") - 1).sort("_r")
    return df["_g"].cast(pl.Int64).to_numpy(), df["_i"].to_numpy()


# ----------------------------------------------------------------------------------------------- parsing
def parse_numbers(
    df: pl.DataFrame, cols: list[str], endpoint_id: str, nulls: tuple[str, ...] = ("",)
) -> pl.DataFrame:
    """String columns -> Float64; the strings in `nulls` become null, anything else unparsable is an error."""
    exprs = []
    for c in cols:
        if df.schema[c] == pl.String:
            s = pl.col(c).str.strip_chars()
            exprs.append(
                pl.when(s.is_in(list(nulls))).then(None).otherwise(s).cast(pl.Float64, strict=False).alias(c)
            )
        else:
            exprs.append(pl.col(c).cast(pl.Float64))
    out = df.with_columns(exprs)
    for c in cols:
        if df.schema[c] != pl.String:
            continue
        text = df[c].str.strip_chars()
        bad_mask = text.is_not_null() & ~text.is_in(list(nulls)) & out[c].is_null()
        if bad_mask.any():
            raise malformed(
                endpoint_id, f"field {c} must be a number or one of {list(nulls)}", df.filter(bad_mask)
            )
    return out


def as_date(value: str) -> int:
    """ISO date -> day number."""
    return int(np.datetime64(dt.date.fromisoformat(value), "D").astype(np.int64))


# ----------------------------------------------------------------------------------------------- statements
STATEMENT_CUTOFF_S = 15 * 3600  # a statement disclosed before 15:00:00 is public the same session (§1.4)
STATEMENT_ORDER = ("_eff", "_disc", "_secs", "DisclosureNumber")  # priority of documents (§4.10)


def disclosed_seconds(st: pl.DataFrame) -> np.ndarray:
    """DisclosedTime ("HH:MM:SS", "HH:MM", "" or null) as seconds since midnight, NaN when missing.

    Anything else is an EventDataError: a time compared as text would put "15:00" before "15:00:00".
    """
    text = st["DisclosedTime"].cast(pl.String).fill_null("")
    bad = (text != "") & ~text.str.contains(r"^\d{2}:\d{2}(:\d{2})?$")
    if bad.any():
        raise malformed(STATEMENTS, "DisclosedTime must be HH:MM:SS, HH:MM or empty", st.filter(bad))

    def part(offset: int) -> pl.Series:
        return text.str.slice(offset, 2).cast(pl.Float64, strict=False)

    seconds = part(0) * 3600.0 + part(3) * 60.0 + part(6).fill_null(0.0)
    return seconds.fill_null(np.nan).to_numpy().astype(np.float64)


def public_same_session(seconds: np.ndarray) -> np.ndarray:
    """True where a statement is public on its disclosure session: a real time strictly before 15:00:00.

    A missing time counts as after the close (a late, never early, attachment).
    """
    with np.errstate(invalid="ignore"):
        return np.asarray(seconds) < STATEMENT_CUTOFF_S  # NaN compares False


def statement_timing(cal: EventCalendar, st: pl.DataFrame) -> pl.DataFrame:
    """`st` with the columns every statement consumer orders and attaches by: `_disc` (DisclosedDate),
    `_secs` (DisclosedTime in seconds, null when missing), `_eff` (DisclosedDate when public the same
    session, else its next business day) and `_row` (attachment row, negative before the grid)."""
    disclosed = to_days(st["DisclosedDate"])
    seconds = disclosed_seconds(st)
    eff = np.where(public_same_session(seconds), disclosed, cal.nbd(disclosed))
    return st.with_columns(
        pl.Series("_disc", disclosed),
        pl.Series("_secs", seconds).fill_nan(None),
        pl.Series("_eff", eff),
        pl.Series("_row", eff_row(cal, eff)),
    )
