"""Daily margin interest — dmi_* (FEATURES.md §4.9) and is_dmi_valid (§4.15).

Each (Code, ApplicationDate, PublishedDate) row is one version, effective on the next business day after its
publication. The as-of record at t is the latest application date among versions effective by t, in its
latest version effective by t (corrections replace a value only from their own publication), attached for at
most 3 sessions [D20]. Record windows (z over 26 records, the previous record) run over application dates
with the versions known at the record's own publication, so a later correction never leaks backwards.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from etl import ops
from etl.features.registry import FeatureContext, features
from etl.panels.events import (
    DAILY_MARGIN,
    EPS,
    EventCalendar,
    RecordSet,
    VintageWindows,
    attach_records,
    chunk_columns,
    eff_row,
    empty_columns,
    gather_host,
    group_positions,
    malformed,
    parse_numbers,
    to_days,
    win_z,
)
from etl.panels.panel import code_index
from etl.sources.schema import DAILY_MARGIN_MIXED_COLUMNS, PUBLISH_REASONS

STALENESS = 3
REG_LEVELS = {"001": 1.0, "002": 2.0, "003": 3.0, "004": 4.0, "005": 5.0, "006": 6.0, "101": 7.0, "102": 8.0}
REASON_COLUMNS = [f"dmi_reason_{r.lower()}" for r in PUBLISH_REASONS]

COLUMNS = [
    "dmi_long",
    "dmi_short",
    "dmi_net",
    "dmi_total",
    "dmi_credit_ratio",
    "dmi_imbalance",
    "dmi_short_long_ratio",
    "dmi_std_share_long",
    "dmi_std_share_short",
    "dmi_neg_share_long",
    "dmi_neg_share_short",
    "dmi_d_long_1d",
    "dmi_d_short_1d",
    "dmi_d_net_1d",
    "dmi_d_ratio_1d",
    "dmi_z26_long",
    "dmi_z26_short",
    "dmi_z26_total",
    "dmi_z26_d_short_1d",
    "dmi_long_to_adv20",
    "dmi_short_to_adv20",
    "dmi_total_to_adv20",
    "dmi_d_long_to_adv1d",
    "dmi_d_short_to_adv1d",
    "dmi_d_net_to_adv1d",
    *REASON_COLUMNS,
    "dmi_reason_count",
    "dmi_tse_reg_level",
    "dmi_impulse",
    "dmi_days_since_pub",
    "dmi_days_since_app",
    "dmi_application_date",
    "dmi_published_date",
]
VALIDITY = "is_dmi_valid"
DATE_COLUMNS = ("dmi_application_date", "dmi_published_date")  # stored as day numbers since 1970-01-01


def prepare(dm: pl.DataFrame) -> pl.DataFrame:
    """Parsed versions sorted by (Code, ApplicationDate, PublishedDate); bad rows are a named error."""
    null_key = dm.filter(
        pl.col("Code").is_null() | pl.col("ApplicationDate").is_null() | pl.col("PublishedDate").is_null()
    )
    if null_key.height:
        raise malformed(DAILY_MARGIN, "Code, ApplicationDate and PublishedDate must be non-null", null_key)
    early = dm.filter(pl.col("PublishedDate") < pl.col("ApplicationDate"))
    if early.height:
        raise malformed(
            DAILY_MARGIN,
            "PublishedDate must not precede ApplicationDate",
            early.select("Code", "ApplicationDate", "PublishedDate"),
        )
    reasons = ["PublishReason." + r for r in PUBLISH_REASONS]
    for c in reasons:
        bad = dm.filter(pl.col(c).is_not_null() & ~pl.col(c).is_in(["0", "1", ""]))
        if bad.height:
            raise malformed(DAILY_MARGIN, f"{c} must be '0' or '1'", bad.select("Code", "ApplicationDate", c))
    dm = dm.unique(subset=["Code", "ApplicationDate", "PublishedDate"], keep="last", maintain_order=True)
    dm = parse_numbers(dm, list(DAILY_MARGIN_MIXED_COLUMNS), DAILY_MARGIN, nulls=("", "-", "*"))
    return dm.sort("Code", "ApplicationDate", "PublishedDate")


def record_values(
    dm: pl.DataFrame, cal: EventCalendar, adv_R: np.ndarray, xp: Any = np
) -> dict[str, np.ndarray]:
    """Per-version values of every dmi column (before attachment); `xp` runs the rolling windows."""

    def f(c: str) -> np.ndarray:
        return dm[c].cast(pl.Float64).to_numpy().astype(np.float64)

    Ld, Sd = f("LongMarginOutstanding"), f("ShortMarginOutstanding")
    dL, dS = f("DailyChangeLongMarginOutstanding"), f("DailyChangeShortMarginOutstanding")
    slr = f("ShortLongRatio")
    app, pub = to_days(dm["ApplicationDate"]), to_days(dm["PublishedDate"])
    group, item = group_positions(dm.select("Code", "ApplicationDate"), ["Code"], "ApplicationDate")

    windows = VintageWindows.build(group, item, pub, xp)

    def prev(values: np.ndarray) -> np.ndarray:
        return windows.apply(values, 2, lambda p: ops.lag(p, 1), lambda x: x[:, 1])

    def z26(values: np.ndarray) -> np.ndarray:
        return windows.apply(values, 26, lambda p: ops.rolling_z(p, 26, 26), lambda x: win_z(x, 26))

    ratio = np.clip(Ld / (Sd + EPS), 0.0, 1000.0)
    prev_app = prev(app.astype(np.float64))
    prev_bd = cal.business[np.maximum(np.searchsorted(cal.business, app, side="left") - 1, 0)]
    prev_ok = prev_app == prev_bd  # NaN compares False
    d_ratio = np.where(prev_ok, np.clip(ratio - prev(ratio), -1000.0, 1000.0), np.nan)
    flags = {
        name: (dm["PublishReason." + r].fill_null("0") == "1").cast(pl.Float64).to_numpy()
        for name, r in zip(REASON_COLUMNS, PUBLISH_REASONS, strict=True)
    }
    reg = dm["TSEMarginBorrowingAndLendingRegulationClassification"].replace_strict(
        REG_LEVELS, default=None, return_dtype=pl.Float64
    )
    return {
        "dmi_long": Ld,
        "dmi_short": Sd,
        "dmi_net": Ld - Sd,
        "dmi_total": Ld + Sd,
        "dmi_credit_ratio": ratio,
        "dmi_imbalance": (Ld - Sd) / (Ld + Sd + EPS),
        "dmi_short_long_ratio": np.where(np.isnan(slr), Sd / (Ld + EPS), slr / 100.0),
        "dmi_std_share_long": f("LongStandardizedMarginOutstanding") / (Ld + EPS),
        "dmi_std_share_short": f("ShortStandardizedMarginOutstanding") / (Sd + EPS),
        "dmi_neg_share_long": f("LongNegotiableMarginOutstanding") / (Ld + EPS),
        "dmi_neg_share_short": f("ShortNegotiableMarginOutstanding") / (Sd + EPS),
        "dmi_d_long_1d": dL,
        "dmi_d_short_1d": dS,
        "dmi_d_net_1d": dL - dS,
        "dmi_d_ratio_1d": d_ratio,
        "dmi_z26_long": z26(Ld),
        "dmi_z26_short": z26(Sd),
        "dmi_z26_total": z26(Ld + Sd),
        "dmi_z26_d_short_1d": z26(dS),
        "dmi_long_to_adv20": Ld / (adv_R + EPS),
        "dmi_short_to_adv20": Sd / (adv_R + EPS),
        "dmi_total_to_adv20": (Ld + Sd) / (adv_R + EPS),
        "dmi_d_long_to_adv1d": dL / (adv_R + EPS),
        "dmi_d_short_to_adv1d": dS / (adv_R + EPS),
        "dmi_d_net_to_adv1d": (dL - dS) / (adv_R + EPS),
        **flags,
        "dmi_reason_count": np.sum(np.stack(list(flags.values())), axis=0),
        "dmi_tse_reg_level": reg.to_numpy().astype(np.float64),
        "dmi_application_date": app.astype(np.float64),
        "dmi_published_date": pub.astype(np.float64),
    }


def records(cal: EventCalendar, codes: Any, dm: pl.DataFrame, adv20_TN: Any) -> RecordSet:
    """Every version of every stock's daily-margin records with its column values."""
    dm = prepare(dm)
    col = code_index(codes, dm["Code"])
    app, pub = to_days(dm["ApplicationDate"]), to_days(dm["PublishedDate"])
    adv_R = gather_host(adv20_TN, cal.last_row(app), col)
    eff = cal.nbd(pub)
    order = np.lexsort((pub, app))  # priority: later application date, then later publication
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return RecordSet(
        values=record_values(dm, cal, adv_R, ops.array_namespace(adv20_TN)),
        row_R=eff_row(cal, eff),
        code_R=col,
        rank_R=rank,
        eff_R=eff,
        limit=STALENESS,
        since={"dmi_days_since_pub": pub, "dmi_days_since_app": app},
        impulse="dmi_impulse",
        validity=VALIDITY,
    )


def compute(
    xp: Any, cal: EventCalendar, codes: Any, dm: pl.DataFrame | None, adv20_TN: Any
) -> dict[str, Any]:
    """All dmi_* columns and is_dmi_valid as [T, N] float64 panels (dates as day numbers)."""
    if dm is None or dm.height == 0:
        return empty_columns(xp, (cal.T, len(codes)), COLUMNS, VALIDITY)
    out = attach_records(xp, cal, records(cal, codes, dm, adv20_TN), 0, len(codes))
    return {c: out[c] for c in [*COLUMNS, VALIDITY]}


@features([*COLUMNS, VALIDITY])
def _margin_daily(ctx: FeatureContext) -> dict[str, Any]:
    def build(cal: EventCalendar) -> RecordSet | None:
        frame = ctx.raw(DAILY_MARGIN)
        if frame is None or frame.height == 0:
            return None
        return records(cal, ctx.grid.codes, frame, ctx.full.panel("adv_raw20"))

    return chunk_columns(ctx, "margin_daily.records", build, COLUMNS, VALIDITY)
