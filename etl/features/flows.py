"""Weekly investor flows — flow_* (FEATURES.md §4.7) and is_flow_valid (§4.15).

The unit is a trades_spec publication event k per Section (a distinct PublishedDate P_k). Its vintage history
H_k holds, for every week of the Section, the row with the latest PublishedDate <= P_k; the current week w_k
is the week of H_k with the largest EndDate. Levels come from w_k, 52/4-week windows are the last weeks of
H_k, so a correction enters history only from its own publication [D18]. Event k applies to every session of
[nbd(P_k), nbd(P_{k+1}) - 1 day] and reaches stocks through their era-correct Section (TokyoNagoya never).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from etl.features.identifiers import SECTION_OF_MARKET
from etl.features.registry import FeatureContext, Labels, features
from etl.panels.events import (
    EPS,
    TRADES_SPEC,
    EventCalendar,
    RecordSet,
    as_date,
    attach_records,
    eff_row,
    event_calendar,
    group_positions,
    malformed,
    to_days,
    win_mean,
    win_z,
    window_values,
)

SECTIONS = tuple(sorted(set(SECTION_OF_MARKET.values())))  # the Section column's categories
OLD_ERA = ("TSE1st", "TSE2nd", "TSEMothers", "TSEJASDAQ")
NEW_ERA = ("TSEPrime", "TSEStandard", "TSEGrowth")
NEW_ERA_START = as_date("2022-04-04")
NOT_JOINED = ("TokyoNagoya",)
BREADTH_GROUPS = ("Foreigners", "Individuals", "TrustBanks", "InvestmentTrusts", "Proprietary", "Brokerage")
RATIO_COLUMNS = {
    "flow_foreign_net_ratio": "Foreigners",
    "flow_individual_net_ratio": "Individuals",
    "flow_proprietary_net_ratio": "Proprietary",
    "flow_trust_banks_net_ratio": "TrustBanks",
    "flow_invest_trusts_net_ratio": "InvestmentTrusts",
    "flow_business_cos_net_ratio": "BusinessCos",
}
COLUMNS = [
    *RATIO_COLUMNS,
    "flow_foreign_share",
    "flow_activity_ratio",
    "flow_activity_rel52",
    "flow_breadth_pos",
    "flow_foreign_net_z",
    "flow_individual_net_z",
    "flow_activity_z",
    "flow_smart_idx",
    "flow_smart_mom4",
    "flow_smart_pos",
    "flow_shock_flag",
    "flow_foreign_net_pos",
    "flow_activity_high",
    "flow_activity_low",
    "flow_foreign_net_ratio_wow",
    "flow_impulse",
    "flow_days_since",
]
VALIDITY = "is_flow_valid"


def prepare(ts: pl.DataFrame) -> pl.DataFrame:
    """Rows of the joinable sections with a section id; unknown sections and bad dates are errors."""
    null_key = ts.filter(
        pl.col("PublishedDate").is_null() | pl.col("EndDate").is_null() | pl.col("Section").is_null()
    )
    if null_key.height:
        raise malformed(TRADES_SPEC, "PublishedDate, EndDate and Section must be non-null", null_key)
    unknown = ts.filter(~pl.col("Section").is_in([*SECTIONS, *NOT_JOINED]))
    if unknown.height:
        raise malformed(
            TRADES_SPEC,
            f"Section must be one of {[*SECTIONS, *NOT_JOINED]}",
            unknown.select("Section", "PublishedDate"),
        )
    early = ts.filter(pl.col("PublishedDate") <= pl.col("EndDate"))
    if early.height:
        raise malformed(
            TRADES_SPEC,
            "PublishedDate must be after the week's EndDate",
            early.select("Section", "EndDate", "PublishedDate"),
        )
    ts = ts.filter(pl.col("Section").is_in(SECTIONS))
    ts = ts.unique(subset=["Section", "EndDate", "PublishedDate"], keep="last", maintain_order=True)
    sid = {s: i for i, s in enumerate(SECTIONS)}
    return ts.with_columns(pl.col("Section").replace_strict(sid, return_dtype=pl.Int64).alias("_sid")).sort(
        "_sid", "PublishedDate", "EndDate"
    )


def records(cal: EventCalendar, ts: pl.DataFrame) -> RecordSet:
    """One record per (Section, PublishedDate) event with every flow column's value."""
    ts = prepare(ts)
    sid = ts["_sid"].to_numpy()
    pub = to_days(ts["PublishedDate"])
    end = to_days(ts["EndDate"])
    _, item = group_positions(ts.select("_sid", "EndDate"), ["_sid"], "EndDate")
    # events: distinct (section, pub); current week = the largest item published by P_k
    ev = (
        pl.DataFrame({"sid": sid, "pub": pub, "item": item, "end": end})
        .group_by("sid", "pub")
        .agg(pl.col("item").max(), pl.col("end").max())
        .sort("sid", "pub")
        .with_columns(pl.col("item").cum_max().over("sid"), pl.col("end").cum_max().over("sid"))
    )
    q_sid, q_pub, q_item, q_end = (ev[c].to_numpy() for c in ("sid", "pub", "item", "end"))

    def field(name: str) -> np.ndarray:
        return ts[name].cast(pl.Float64).to_numpy()

    def win(values: np.ndarray, w: int, back: int = 0) -> np.ndarray:
        return window_values(sid, item, pub, values, q_sid, q_item - back, q_pub, w)

    def cur(name: str) -> np.ndarray:
        return win(field(name), 1)[:, 0]

    total = field("TotalTotal")
    out: dict[str, np.ndarray] = {}
    for col, g in RATIO_COLUMNS.items():
        out[col] = cur(g + "Balance") / (cur(g + "Total") + EPS)
    tt = cur("TotalTotal")
    out["flow_foreign_share"] = cur("ForeignersTotal") / (tt + EPS)
    out["flow_activity_ratio"] = tt / (era_total(sid, end, pub, total, q_end, q_pub) + EPS)
    out["flow_activity_rel52"] = tt / (win_mean(win(total, 52), 52) + EPS)
    balances = np.stack([cur(g + "Balance") for g in BREADTH_GROUPS])
    out["flow_breadth_pos"] = np.mean(np.where(np.isnan(balances), 0.0, balances > 0), axis=0)

    def smart_parts(back: int) -> tuple[np.ndarray, np.ndarray]:
        fz = win_z(win(field("ForeignersBalance"), 52, back), 52)
        iz = win_z(win(field("IndividualsBalance"), 52, back), 52)
        return fz, iz

    fz, iz = smart_parts(0)
    az = win_z(win(total, 52), 52)
    smart = fz - iz
    smart_hist = np.stack([smart] + [np.subtract(*smart_parts(b)) for b in (1, 2, 3)], axis=1)
    out["flow_foreign_net_z"] = fz
    out["flow_individual_net_z"] = iz
    out["flow_activity_z"] = az
    out["flow_smart_idx"] = smart
    out["flow_smart_mom4"] = smart - win_mean(smart_hist, 4)
    out["flow_smart_pos"] = _ind(smart > 0, smart)
    out["flow_shock_flag"] = _ind(np.abs(smart) >= 2, smart)
    out["flow_foreign_net_pos"] = _ind(fz > 0, fz)
    out["flow_activity_high"] = _ind(az > 1, az)
    out["flow_activity_low"] = _ind(az < -1, az)
    ratio_f = field("ForeignersBalance") / (field("ForeignersTotal") + EPS)
    out["flow_foreign_net_ratio_wow"] = out["flow_foreign_net_ratio"] - win(ratio_f, 2)[:, 1]
    eff = cal.nbd(q_pub)
    return RecordSet(
        values=out,
        row_R=eff_row(cal, eff),
        code_R=q_sid,
        rank_R=q_pub,
        eff_R=eff,
        limit=None,
        since={"flow_days_since": eff},
        impulse="flow_impulse",
        validity=VALIDITY,
    )


def era_total(
    sid: np.ndarray, end: np.ndarray, pub: np.ndarray, total: np.ndarray, q_end: np.ndarray, q_pub: np.ndarray
) -> np.ndarray:
    """Sum of TotalTotal over every section of the week's era for that EndDate, as known at q_pub.

    NaN when a sibling has no row for the week published by q_pub.
    """
    span0 = int(min(end.min(), q_end.min()))
    item = end - span0
    q_item = q_end - span0
    new_era = q_end >= NEW_ERA_START
    acc = np.zeros(q_end.shape)
    for members, mask in ((OLD_ERA, ~new_era), (NEW_ERA, new_era)):
        part = np.zeros(q_end.shape)
        for name in members:  # at most four sections: a loop over sections, not rows
            s = SECTIONS.index(name)
            v = window_values(sid, item, pub, total, np.full(q_end.shape, s), q_item, q_pub, 1)[:, 0]
            part = part + v
        acc = np.where(mask, part, acc)
    return acc


def _ind(cond: np.ndarray, operand: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(operand), np.nan, cond.astype(np.float64))


def section_ids(xp: Any, section: Labels) -> Any:
    """The Section column's category codes re-indexed to SECTIONS (NaN = none)."""
    remap = np.array([SECTIONS.index(c) if c in SECTIONS else np.nan for c in section.categories] + [np.nan])
    codes = xp.asarray(section.codes)
    idx = xp.where(xp.isnan(codes), len(section.categories), codes).astype(np.int64)
    return xp.asarray(remap)[idx]


def from_records(xp: Any, cal: EventCalendar, recs: RecordSet, section_TN: Any) -> dict[str, Any]:
    """Attach section events and gather them by each stock's section id (`section_TN`, NaN = none)."""
    sec = attach_records(xp, cal, recs, 0, len(SECTIONS))
    sid = xp.where(xp.isnan(section_TN), -1, section_TN).astype(np.int64)
    out = {}
    for c in [*COLUMNS, VALIDITY]:
        v = xp.take_along_axis(sec[c], xp.maximum(sid, 0), axis=1)
        out[c] = xp.where(sid >= 0, v, np.nan)
    out[VALIDITY] = xp.where(xp.isnan(out[VALIDITY]), 0.0, out[VALIDITY])
    return out


def compute(xp: Any, cal: EventCalendar, ts: pl.DataFrame | None, section_TN: Any) -> dict[str, Any]:
    """Every flow column and is_flow_valid for stocks whose as-of section ids (into SECTIONS) are given."""
    if ts is None or ts.height == 0:
        return {c: xp.full(section_TN.shape, np.nan) for c in COLUMNS} | {
            VALIDITY: xp.zeros(section_TN.shape)
        }
    return from_records(xp, cal, records(cal, ts), section_TN)


@features([*COLUMNS, VALIDITY])
def _flows(ctx: FeatureContext) -> dict[str, Any]:
    cal = event_calendar(ctx)

    def build() -> RecordSet | None:
        ts = ctx.raw(TRADES_SPEC)
        return None if ts is None or ts.height == 0 else records(cal, ts)

    recs = ctx.full.cached("flows.records", build)
    section = section_ids(ctx.xp, ctx["Section"])
    if recs is None:
        return {c: ctx.nan() for c in COLUMNS} | {VALIDITY: ctx.xp.zeros(ctx.shape)}
    return from_records(ctx.xp, cal, recs, section)
