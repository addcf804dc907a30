"""Financial statements — stmt_* (FEATURES.md §4.10) and is_stmt_valid (§4.15).

A document is effective on its DisclosedDate when disclosed before 15:00:00, else on the next business day
(§1.4, `events.statement_timing`); documents are ordered by (eff, DisclosedDate, DisclosedTime,
DisclosureNumber). Three point-in-time tracks per Code [D21]: D (any document: impulse, days since), A
(latest earnings document, with P, its prior-year comparator, and G, the latest guidance for A's fiscal
year) and per guidance item the latest document carrying it (revision vs the previous guidance for the same
target year, split-adjusted for per-share items). Each track's state is evaluated once per (Code, effective
session) on the compact document table with as-of joins, then attached by scatter + running max.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from etl.features.identifiers import EARNINGS_DOC
from etl.features.registry import FeatureContext, features
from etl.ops import to_host
from etl.panels.events import (
    EPS,
    STATEMENT_ORDER,
    STATEMENTS,
    EventCalendar,
    RecordSet,
    attach_records,
    empty_columns,
    event_calendar,
    gather_host,
    malformed,
    parse_numbers,
    statement_timing,
)
from etl.panels.panel import code_index

ITEMS = ("NetSales", "OperatingProfit", "Profit", "EarningsPerShare", "DividendPerShareAnnual")
PER_SHARE = ("EarningsPerShare", "DividendPerShareAnnual")
ACTUALS = ("NetSales", "OperatingProfit", "Profit", "TotalAssets", "Equity")
DATES = (
    "CurrentPeriodEndDate",
    "CurrentFiscalYearStartDate",
    "CurrentFiscalYearEndDate",
    "NextFiscalYearEndDate",
)
REV_COLUMNS = {
    "NetSales": "stmt_rev_fore_sales",
    "OperatingProfit": "stmt_rev_fore_op",
    "Profit": "stmt_rev_fore_np",
    "EarningsPerShare": "stmt_rev_fore_eps",
    "DividendPerShareAnnual": "stmt_rev_div_fore",
}
STATE_COLUMNS = [
    "stmt_yoy_sales",
    "stmt_yoy_op",
    "stmt_yoy_np",
    "stmt_opm",
    "stmt_npm",
    "stmt_progress_sales",
    "stmt_progress_op",
    "stmt_progress_np",
    "stmt_roe",
    "stmt_roa",
    "stmt_equity_ratio",
    "stmt_change_in_est",
    "stmt_nc_flag",
]
COLUMNS = [
    "stmt_yoy_sales",
    "stmt_yoy_op",
    "stmt_yoy_np",
    "stmt_opm",
    "stmt_npm",
    "stmt_progress_sales",
    "stmt_progress_op",
    "stmt_progress_np",
    *REV_COLUMNS.values(),
    "stmt_roe",
    "stmt_roa",
    "stmt_equity_ratio",
    "stmt_ep_fore",
    "stmt_bp",
    "stmt_change_in_est",
    "stmt_nc_flag",
    "stmt_imp_statement",
    "stmt_days_since_statement",
]
VALIDITY = "is_stmt_valid"
TRUE = ("true", "1")


def prepare(cal: EventCalendar, st: pl.DataFrame) -> pl.DataFrame:
    """Parsed documents with `_eff` (day), `_row` (attachment row), `_rank` (global order) and `_earn`."""
    null_key = st.filter(
        pl.col("LocalCode").is_null()
        | pl.col("DisclosedDate").is_null()
        | pl.col("DisclosureNumber").is_null()
    )
    if null_key.height:
        raise malformed(
            STATEMENTS, "LocalCode, DisclosedDate and DisclosureNumber must be non-null", null_key
        )
    numbers = [*ACTUALS, *(f"Forecast{x}" for x in ITEMS), *(f"NextYearForecast{x}" for x in ITEMS)]
    st = parse_numbers(st, numbers, STATEMENTS)
    for c in DATES:
        text = st[c].cast(pl.String).str.strip_chars()
        parsed = text.str.to_date("%Y-%m-%d", strict=False)
        bad = text.is_not_null() & (text != "") & parsed.is_null()
        if bad.any():
            raise malformed(STATEMENTS, f"field {c} must be a date YYYY-MM-DD or empty", st.filter(bad))
        st = st.with_columns(parsed.alias(c))
    st = statement_timing(cal, st).with_columns(
        pl.col("TypeOfDocument").cast(pl.String).fill_null("").str.contains(EARNINGS_DOC).alias("_earn"),
    )
    st = st.sort(*STATEMENT_ORDER).with_row_index("_rank")
    return st.with_columns(pl.col("_rank").cast(pl.Int64))


def months_between(start: pl.Expr, end: pl.Expr) -> pl.Expr:
    """Whole months of the period [start, end] (3 for a quarter, 12 for a year)."""
    days = (end - start).dt.total_days() + 1
    return (days.cast(pl.Float64) / 30.4375).round(0)


def _clip(x: np.ndarray) -> np.ndarray:
    return np.clip(x, -100.0, 100.0)


def _ratio_change(new: np.ndarray, old: np.ndarray) -> np.ndarray:
    return _clip((new - old) / (np.abs(old) + EPS))


def guidance(st: pl.DataFrame) -> pl.DataFrame:
    """Long table (Code, item, F, row, rank, eff, g): one row per document and item with non-null guidance."""
    fy_doc = pl.col("TypeOfDocument").cast(pl.String).fill_null("").str.starts_with("FY")
    target = (
        pl.when(fy_doc)
        .then(
            pl.coalesce(
                pl.col("NextFiscalYearEndDate"), pl.col("CurrentFiscalYearEndDate").dt.offset_by("1y")
            )
        )
        .otherwise(pl.col("CurrentFiscalYearEndDate"))
    )
    parts = []
    for x in ITEMS:
        g = pl.when(fy_doc).then(pl.col(f"NextYearForecast{x}")).otherwise(pl.col(f"Forecast{x}"))
        parts.append(
            st.select(
                pl.col("LocalCode").alias("Code"),
                pl.lit(x).alias("item"),
                target.alias("F"),
                "_row",
                "_rank",
                "_eff",
                g.alias("g"),
            )
        )
    return (
        pl.concat(parts).filter(pl.col("g").is_not_null() & pl.col("F").is_not_null()).sort("_row", "_rank")
    )


def state_records(cal: EventCalendar, codes: Any, st: pl.DataFrame) -> RecordSet:
    """A / P / G state per (Code, effective row): the yoy, margin, progress, return and flag columns."""
    earn = (
        st.filter(pl.col("_earn"))
        .select(
            pl.col("LocalCode").alias("Code"),
            "_row",
            "_rank",
            *ACTUALS,
            pl.col("TypeOfCurrentPeriod").cast(pl.String).alias("ptype"),
            pl.col("CurrentFiscalYearStartDate").alias("fy_start"),
            pl.col("CurrentFiscalYearEndDate").alias("fy_end"),
            months_between(pl.col("CurrentFiscalYearStartDate"), pl.col("CurrentPeriodEndDate")).alias(
                "months"
            ),
            pl.col("ChangesInAccountingEstimates")
            .cast(pl.String)
            .str.strip_chars()
            .str.to_lowercase()
            .alias("_est"),
            pl.col("ChangesBasedOnRevisionsOfAccountingStandard")
            .cast(pl.String)
            .str.strip_chars()
            .str.to_lowercase()
            .alias("_rev"),
            pl.col("RetrospectiveRestatement")
            .cast(pl.String)
            .str.strip_chars()
            .str.to_lowercase()
            .alias("_retro"),
        )
        .sort("_row", "_rank")
    )
    events = st.select(pl.col("LocalCode").alias("Code"), "_row").unique().sort("_row")
    a = events.join_asof(earn, on="_row", by="Code", strategy="backward", check_sortedness=False)
    a = a.filter(pl.col("_rank").is_not_null()).with_row_index("_ev")
    # P: latest document effective by the event of A's period type, fiscal year starting 365 +- 31 d earlier
    cand = a.select(
        "_ev", "Code", "ptype", pl.col("_row").alias("_at"), pl.col("fy_start").alias("_a_start")
    ).join(earn.select("Code", "ptype", "_row", "_rank", "fy_start", *ACTUALS[:3]), on=["Code", "ptype"])
    lag = (pl.col("_a_start") - pl.col("fy_start")).dt.total_days()
    p = (
        cand.filter((pl.col("_row") <= pl.col("_at")) & lag.is_between(334, 396))
        .sort("_rank")
        .group_by("_ev")
        .agg(*(pl.col(c).last().alias(f"P_{c}") for c in ACTUALS[:3]))
    )
    a = a.join(p, on="_ev", how="left").sort("_row")
    g = guidance(st)
    for x in ACTUALS[:3]:
        gx = g.filter(pl.col("item") == x).select(
            "Code", pl.col("F").alias("fy_end"), "_row", pl.col("g").alias(f"G_{x}")
        )
        a = a.join_asof(gx, on="_row", by=["Code", "fy_end"], strategy="backward", check_sortedness=False)
    f = {c: a[c].cast(pl.Float64).to_numpy() for c in a.columns if a.schema[c].is_numeric()}
    sales, op, np_ = f["NetSales"], f["OperatingProfit"], f["Profit"]
    annual = 12.0 / np.where(f["months"] >= 1, f["months"], np.nan)

    def flag(*cols: str) -> np.ndarray:
        hit = np.zeros(a.height, dtype=bool)
        for c in cols:
            hit |= a[c].is_in(list(TRUE)).fill_null(False).to_numpy()
        return hit.astype(np.float64)

    values = {
        "stmt_yoy_sales": _ratio_change(sales, f["P_NetSales"]),
        "stmt_yoy_op": _ratio_change(op, f["P_OperatingProfit"]),
        "stmt_yoy_np": _ratio_change(np_, f["P_Profit"]),
        "stmt_opm": _clip(op / (sales + EPS)),
        "stmt_npm": _clip(np_ / (sales + EPS)),
        "stmt_progress_sales": _clip(sales / (f["G_NetSales"] + EPS)),
        "stmt_progress_op": _clip(op / (f["G_OperatingProfit"] + EPS)),
        "stmt_progress_np": _clip(np_ / (f["G_Profit"] + EPS)),
        "stmt_roe": _clip(np_ * annual / (f["Equity"] + EPS)),
        "stmt_roa": _clip(np_ * annual / (f["TotalAssets"] + EPS)),
        "stmt_equity_ratio": f["Equity"] / (f["TotalAssets"] + EPS),
        "stmt_change_in_est": flag("_est"),
        "stmt_nc_flag": flag("_rev", "_retro"),
        "_equity": f["Equity"],
    }
    row = a["_row"].to_numpy()
    return RecordSet.plain(
        values=values,
        row_R=row,
        code_R=code_index(codes, a["Code"]),
        eff_R=row,
    )


def revision_records(cal: EventCalendar, codes: Any, st: pl.DataFrame, af_TN: Any) -> dict[str, RecordSet]:
    """Per guidance item: the latest document carrying it, its revision vs the previous one, its value."""
    g = guidance(st).sort("Code", "item", "F", "_rank")
    g = g.with_columns(
        pl.col("g").shift(1).over("Code", "item", "F").alias("g_prev"),
        pl.col("_eff").shift(1).over("Code", "item", "F").alias("eff_prev"),
    )
    col = code_index(codes, g["Code"])
    factor = np.ones(g.height)
    if af_TN is not None:
        cum = cumulative_factor(af_TN)
        now = gather_host(cum, cal.last_row(g["_eff"].to_numpy()), col)
        prev_eff = g["eff_prev"].fill_null(np.iinfo(np.int64).min).to_numpy()
        before = gather_host(cum, cal.last_row(prev_eff), col)
        before = np.where(np.isnan(before) & (cal.last_row(prev_eff) < 0), 1.0, before)
        factor = np.where(np.isnan(now / before), 1.0, now / before)
    per_share = g["item"].is_in(list(PER_SHARE)).to_numpy()
    prev = g["g_prev"].to_numpy().astype(np.float64) * np.where(per_share, factor, 1.0)
    rev = _ratio_change(g["g"].to_numpy().astype(np.float64), prev)
    out = {}
    items = g["item"].to_numpy()
    for x in ITEMS:
        sel = items == x
        rank = g["_rank"].to_numpy()[sel]
        out[x] = RecordSet.plain(
            values={REV_COLUMNS[x]: rev[sel], "_g": g["g"].to_numpy().astype(np.float64)[sel]},
            row_R=g["_row"].to_numpy()[sel],
            code_R=col[sel],
            eff_R=rank,
        )
    return out


def cumulative_factor(af_TN: Any) -> np.ndarray:
    """Host [T, N] running product of AdjustmentFactor (missing -> 1): Π over (a, b] = cum[b] / cum[a]."""
    af = to_host(af_TN)
    return np.cumprod(np.where(np.isnan(af), 1.0, af), axis=0)


def document_records(codes: Any, st: pl.DataFrame) -> RecordSet:
    """Track D: every document, for the impulse, days-since and validity columns."""
    return RecordSet(
        values={},
        row_R=st["_row"].to_numpy(),
        code_R=code_index(codes, st["LocalCode"]),
        rank_R=st["_rank"].to_numpy(),
        eff_R=st["_eff"].to_numpy(),
        limit=None,
        since={"stmt_days_since_statement": st["_eff"].to_numpy()},
        impulse="stmt_imp_statement",
        validity=VALIDITY,
    )


def build_records(cal: EventCalendar, codes: Any, st: pl.DataFrame, af_TN: Any) -> dict[str, Any]:
    st = prepare(cal, st)
    return {
        "state": state_records(cal, codes, st),
        "revisions": revision_records(cal, codes, st, af_TN),
        "documents": document_records(codes, st),
    }


def from_records(
    xp: Any, cal: EventCalendar, recs: dict[str, Any], lo: int, hi: int, mcap_TN: Any
) -> dict[str, Any]:
    out = attach_records(xp, cal, recs["state"], lo, hi)
    equity = out.pop("_equity")
    for x, rs in recs["revisions"].items():
        part = attach_records(xp, cal, rs, lo, hi)
        out[REV_COLUMNS[x]] = part[REV_COLUMNS[x]]
        if x == "Profit":
            out["stmt_ep_fore"] = part["_g"] / (mcap_TN + EPS)
    out["stmt_bp"] = equity / (mcap_TN + EPS)
    out.update(attach_records(xp, cal, recs["documents"], lo, hi))
    return {c: out[c] for c in [*COLUMNS, VALIDITY]}


def compute(
    xp: Any, cal: EventCalendar, codes: Any, st: pl.DataFrame | None, af_TN: Any, mcap_TN: Any
) -> dict[str, Any]:
    """All stmt_* columns and is_stmt_valid as [T, N] float64 panels."""
    if st is None or st.height == 0:
        return empty_columns(xp, (cal.T, len(codes)), COLUMNS, VALIDITY)
    return from_records(xp, cal, build_records(cal, codes, st, af_TN), 0, len(codes), mcap_TN)


def prepared(ctx: FeatureContext) -> pl.DataFrame | None:
    """The parsed statement table of this build (memoised on the root; shared with the earnings group)."""

    def build() -> pl.DataFrame | None:
        st = ctx.raw(STATEMENTS)
        return None if st is None or st.height == 0 else prepare(event_calendar(ctx), st)

    return ctx.full.cached("statements.prepared", build)


@features([*COLUMNS, VALIDITY])
def _statements(ctx: FeatureContext) -> dict[str, Any]:
    cal = event_calendar(ctx)
    st = prepared(ctx)
    if st is None:
        return empty_columns(ctx.xp, ctx.shape, COLUMNS, VALIDITY)

    def build() -> dict[str, Any]:
        codes = ctx.grid.codes
        af = ctx.full.panel("AdjustmentFactor")
        return {
            "state": state_records(cal, codes, st),
            "revisions": revision_records(cal, codes, st, af),
            "documents": document_records(codes, st),
        }

    recs = ctx.full.cached("statements.records", build)
    return from_records(ctx.xp, cal, recs, ctx.cols.start, ctx.cols.stop, ctx.panel("mcap"))
