"""Weekly margin interest — margin_* (FEATURES.md §4.8) and is_margin_valid (§4.15).

The API gives no publication date, so a record for application date D is effective D + 3 business days
(published on the 2nd business day, attached from the next one) [D19], and stays attached for at most 10
sessions. Week-over-week changes and z-scores roll over the Code's weekly records, not over sessions.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from etl import ops
from etl.features.registry import FeatureContext, features
from etl.panels.events import (
    EPS,
    WEEKLY_MARGIN,
    EventCalendar,
    RecordSeries,
    RecordSet,
    attach_records,
    chunk_columns,
    eff_row,
    empty_columns,
    gather_host,
    group_positions,
    malformed,
    to_days,
)
from etl.panels.panel import code_index

STALENESS = 10
PREV_MAX_DAYS = 14

COLUMNS = [
    "margin_long_tot",
    "margin_short_tot",
    "margin_net",
    "margin_total_gross",
    "margin_credit_ratio",
    "margin_imbalance",
    "margin_std_share_long",
    "margin_std_share_short",
    "margin_neg_share_long",
    "margin_neg_share_short",
    "margin_d_long_wow",
    "margin_d_short_wow",
    "margin_d_net_wow",
    "margin_d_ratio_wow",
    "margin_gross_mom4",
    "long_z52",
    "short_z52",
    "margin_gross_z52",
    "ratio_z52",
    "margin_long_to_adv20",
    "margin_short_to_adv20",
    "margin_d_long_to_adv20",
    "margin_d_short_to_adv20",
    "margin_impulse",
    "margin_days_since",
    "margin_issue_type",
    "is_borrowable",
]
VALIDITY = "is_margin_valid"


def prepare(wm: pl.DataFrame) -> pl.DataFrame:
    """One row per (Code, Date): the last row of duplicates (§1.5), sorted by (Code, Date)."""
    null_key = wm.filter(pl.col("Code").is_null() | pl.col("Date").is_null())
    if null_key.height:
        raise malformed(WEEKLY_MARGIN, "Code and Date must be non-null", null_key)
    bad_type = wm.filter(pl.col("IssueType").is_not_null() & ~pl.col("IssueType").is_in(["1", "2", "3"]))
    if bad_type.height:
        raise malformed(
            WEEKLY_MARGIN, "IssueType must be '1', '2' or '3'", bad_type.select("Code", "Date", "IssueType")
        )
    return wm.unique(subset=["Code", "Date"], keep="last", maintain_order=True).sort("Code", "Date")


def record_values(wm: pl.DataFrame, adv_R: np.ndarray, xp: Any = np) -> dict[str, np.ndarray]:
    """Per-record values of every margin column (before attachment); `xp` runs the rolling windows."""
    L = wm["LongMarginTradeVolume"].to_numpy().astype(np.float64)
    S = wm["ShortMarginTradeVolume"].to_numpy().astype(np.float64)
    Lstd = wm["LongStandardizedMarginTradeVolume"].to_numpy().astype(np.float64)
    Sstd = wm["ShortStandardizedMarginTradeVolume"].to_numpy().astype(np.float64)
    Lneg = wm["LongNegotiableMarginTradeVolume"].to_numpy().astype(np.float64)
    Sneg = wm["ShortNegotiableMarginTradeVolume"].to_numpy().astype(np.float64)
    day = to_days(wm["Date"])
    group, item = group_positions(wm.select("Code", "Date"), ["Code"], "Date")
    series = RecordSeries.build(group, item, xp)

    def prev(x: np.ndarray) -> np.ndarray:
        return series.apply(x, lambda p: ops.lag(p, 1))

    def z52(x: np.ndarray) -> np.ndarray:
        return series.apply(x, lambda p: ops.rolling_z(p, 52, 52))

    net, gross = L - S, L + S
    ratio = np.clip(L / (S + EPS), 0.0, 1000.0)
    prev_ok = (day - prev(day.astype(np.float64))) <= PREV_MAX_DAYS  # NaN compares False

    def wow(x: np.ndarray) -> np.ndarray:
        return np.where(prev_ok, x - prev(x), np.nan)

    d_long, d_short = wow(L), wow(S)
    issue = wm["IssueType"].cast(pl.Float64, strict=False).to_numpy().astype(np.float64)
    return {
        "margin_long_tot": L,
        "margin_short_tot": S,
        "margin_net": net,
        "margin_total_gross": gross,
        "margin_credit_ratio": ratio,
        "margin_imbalance": net / (gross + EPS),
        "margin_std_share_long": Lstd / (L + EPS),
        "margin_std_share_short": Sstd / (S + EPS),
        "margin_neg_share_long": Lneg / (L + EPS),
        "margin_neg_share_short": Sneg / (S + EPS),
        "margin_d_long_wow": d_long,
        "margin_d_short_wow": d_short,
        "margin_d_net_wow": wow(net),
        "margin_d_ratio_wow": wow(ratio),
        "margin_gross_mom4": gross - series.apply(gross, lambda p: ops.rolling_mean(p, 4, 4)),
        "long_z52": z52(L),
        "short_z52": z52(S),
        "margin_gross_z52": z52(gross),
        "ratio_z52": z52(ratio),
        "margin_long_to_adv20": L / (adv_R + EPS),
        "margin_short_to_adv20": S / (adv_R + EPS),
        "margin_d_long_to_adv20": d_long / (5.0 * adv_R + EPS),
        "margin_d_short_to_adv20": d_short / (5.0 * adv_R + EPS),
        "margin_issue_type": issue,
        "is_borrowable": np.where(np.isnan(issue), np.nan, (issue == 2).astype(np.float64)),
    }


def records(cal: EventCalendar, codes: Any, wm: pl.DataFrame, adv20_TN: Any) -> RecordSet:
    """The weekly records of all stocks with their column values (`adv20_TN`: ADVraw20 on the full grid)."""
    wm = prepare(wm)
    col = code_index(codes, wm["Code"])
    day = to_days(wm["Date"])
    eff = cal.add_business(day, 3)
    adv_R = gather_host(adv20_TN, cal.last_row(day), col)
    return RecordSet(
        values=record_values(wm, adv_R, ops.array_namespace(adv20_TN)),
        row_R=eff_row(cal, eff),
        code_R=col,
        rank_R=day,
        eff_R=eff,
        limit=STALENESS,
        since={"margin_days_since": eff},
        impulse="margin_impulse",
        validity=VALIDITY,
    )


def compute(
    xp: Any, cal: EventCalendar, codes: Any, wm: pl.DataFrame | None, adv20_TN: Any
) -> dict[str, Any]:
    """All margin_* columns and is_margin_valid as [T, N] float64 panels.

    `adv20_TN`: ADVraw20, the 20-session mean of raw volume (mp 20), as an xp panel on the same grid.
    """
    if wm is None or wm.height == 0:
        return empty_columns(xp, (cal.T, len(codes)), COLUMNS, VALIDITY)
    out = attach_records(xp, cal, records(cal, codes, wm, adv20_TN), 0, len(codes))
    return {c: out[c] for c in [*COLUMNS, VALIDITY]}


@features([*COLUMNS, VALIDITY])
def _margin_weekly(ctx: FeatureContext) -> dict[str, Any]:
    def build(cal: EventCalendar) -> RecordSet | None:
        frame = ctx.raw(WEEKLY_MARGIN)
        if frame is None or frame.height == 0:
            return None
        return records(cal, ctx.grid.codes, frame, ctx.full.panel("adv_raw20"))

    return chunk_columns(ctx, "margin_weekly.records", build, COLUMNS, VALIDITY)
