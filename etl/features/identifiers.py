"""Group 4.1 identifiers and meta; the listed-info and shares-outstanding panels (FEATURES.md §1.2, §1.8).

Listed-info snapshots attach as-of by snapshot date (scatter + forward-fill, D37). The universe panel is
DQ row present & common stock (5th code character "0") & as-of MarketCode in the TSE equity markets [D1];
without a listed/info endpoint the market filter cannot be applied and every common stock with a DQ row is
in the universe (Section/MarketCode/sector columns are then null, ids -1).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from etl import ops
from etl.features.registry import FeatureContext, Labels, feature, panel_source
from etl.panels.events import STATEMENT_ORDER, event_calendar, statement_timing

LISTED_INFO = "listed_info"
STATEMENTS = "fins_statements"
UNIVERSE_MARKETS = ("0101", "0102", "0104", "0106", "0107", "0111", "0112", "0113")
SECTION_OF_MARKET = {
    "0101": "TSE1st",
    "0102": "TSE2nd",
    "0104": "TSEMothers",
    "0106": "TSEJASDAQ",
    "0107": "TSEJASDAQ",
    "0111": "TSEPrime",
    "0112": "TSEStandard",
    "0113": "TSEGrowth",
}
SECTOR33_CODES = (
    "0050",
    "1050",
    "2050",
    "3050",
    "3100",
    "3150",
    "3200",
    "3250",
    "3300",
    "3350",
    "3400",
    "3450",
    "3500",
    "3550",
    "3600",
    "3650",
    "3700",
    "3750",
    "3800",
    "4050",
    "5050",
    "5100",
    "5150",
    "5200",
    "5250",
    "6050",
    "6100",
    "7050",
    "7100",
    "7150",
    "7200",
    "8050",
    "9050",
)
N_SECTOR33 = 34  # the 33 ids plus 9999 (-> 33)
N_SECTOR17 = 18  # 0..16 plus 99 (-> 17)
LI_FIELDS = ("MarketCode", "Sector17Code", "Sector17CodeName", "Sector33Code", "Sector33CodeName")
EARNINGS_DOC = r"^(FY|1Q|2Q|3Q|OtherPeriod)FinancialStatements"


def sector17_id_expr() -> pl.Expr:
    code = pl.col("Sector17Code")
    num = code.cast(pl.Int64, strict=False)
    return (
        pl.when(num.is_between(1, 17)).then(num - 1).when(code == "99").then(17).otherwise(-1).cast(pl.Int64)
    )


def sector33_id_expr() -> pl.Expr:
    mapping = {c: i for i, c in enumerate(SECTOR33_CODES)} | {"9999": 33}
    return pl.col("Sector33Code").replace_strict(mapping, default=-1, return_dtype=pl.Int64)


@panel_source(*(f"li_{f}" for f in LI_FIELDS), "li_sector17_id", "li_sector33_id", full=True)
def _listed_info(ctx: FeatureContext) -> dict:
    """As-of listed-info attributes: string fields as category indices (`li_<field>`), ids as numbers."""
    xp, grid = ctx.xp, ctx.grid
    T, N = ctx.shape
    names = [f"li_{f}" for f in LI_FIELDS] + ["li_sector17_id", "li_sector33_id"]
    li = ctx.raw(LISTED_INFO)
    if li is None:
        out = {n: xp.full((T, N), np.nan) for n in names}
        out["li_sector17_id"] = xp.full((T, N), -1.0)
        out["li_sector33_id"] = xp.full((T, N), -1.0)
        ctx.cached("li_categories", lambda: {f: () for f in LI_FIELDS})
        return out
    li = li.with_columns(sector17_id_expr().alias("_s17"), sector33_id_expr().alias("_s33"))
    li = li.sort(["Date", "Code"])
    cats = {}
    vals = []
    for f in LI_FIELDS:
        col = li[f].fill_null("")
        cat = tuple(sorted(v for v in col.unique().to_list() if v != ""))
        cats[f] = cat
        # category index per row by a hash lookup in Polars ("" and unknown -> null -> NaN)
        lookup = {v: float(i) for i, v in enumerate(cat)}
        vals.append(col.replace_strict(lookup, default=None, return_dtype=pl.Float64).to_numpy())
    vals.append(li["_s17"].cast(pl.Float64).to_numpy())
    vals.append(li["_s33"].cast(pl.Float64).to_numpy())
    rows = grid.asof_index(li["Date"])
    cols = ctx.code_index(li["Code"])
    panels = ops.scatter_asof(T, N, rows, cols, np.stack(vals, axis=1), xp=xp)
    ctx.cached("li_categories", lambda: cats)
    out = dict(zip(names, panels, strict=True))
    out["li_sector17_id"] = xp.where(xp.isnan(out["li_sector17_id"]), -1.0, out["li_sector17_id"])
    out["li_sector33_id"] = xp.where(xp.isnan(out["li_sector33_id"]), -1.0, out["li_sector33_id"])
    return out


def li_categories(ctx: FeatureContext) -> dict:
    ctx.full.panel("li_MarketCode")
    return ctx.full.cached("li_categories", lambda: {f: () for f in LI_FIELDS})


@panel_source("universe", full=True)
def _universe(ctx: FeatureContext) -> object:
    xp = ctx.xp
    present = ctx.panel("dq_present")
    common = xp.asarray(np.array([len(c) == 5 and c[4] == "0" for c in ctx.codes.tolist()], dtype=bool))
    if ctx.raw(LISTED_INFO) is None:
        return present & common[None, :]
    cats = li_categories(ctx)["MarketCode"]
    ok_ids = [float(i) for i, c in enumerate(cats) if c in UNIVERSE_MARKETS]
    mc = ctx.panel("li_MarketCode")
    eligible = xp.isin(mc, xp.asarray(ok_ids)) if ok_ids else xp.zeros(mc.shape, dtype=bool)
    return present & common[None, :] & eligible


def _labels(ctx: FeatureContext, field: str) -> Labels:
    return Labels(ctx.panel(f"li_{field}"), li_categories(ctx)[field])


@feature("Section", group="identifiers", dtype="str", role="ID")
def _section(ctx: FeatureContext) -> Labels:
    mc = ctx.panel("li_MarketCode")
    cats = li_categories(ctx)["MarketCode"]
    sections = tuple(sorted(set(SECTION_OF_MARKET.values())))
    remap = np.array(
        [sections.index(SECTION_OF_MARKET[c]) if c in SECTION_OF_MARKET else np.nan for c in cats]
    )
    xp = ctx.xp
    if remap.size == 0:
        return Labels(ctx.nan(), sections)
    idx = xp.where(xp.isnan(mc), 0, mc).astype(np.int64)
    codes = xp.where(xp.isnan(mc), xp.nan, xp.asarray(remap)[idx])
    return Labels(codes, sections)


@feature("MarketCode", group="identifiers", dtype="str", role="ID")
def _market_code(ctx: FeatureContext) -> Labels:
    return _labels(ctx, "MarketCode")


@feature("sector17_code", group="identifiers", dtype="str", role="ID")
def _s17_code(ctx: FeatureContext) -> Labels:
    return _labels(ctx, "Sector17Code")


@feature("sector17_name", group="identifiers", dtype="str", role="ID")
def _s17_name(ctx: FeatureContext) -> Labels:
    return _labels(ctx, "Sector17CodeName")


@feature("sector17_id", group="identifiers", dtype="i8", role="C")
def _s17_id(ctx: FeatureContext) -> object:
    return ctx.panel("li_sector17_id")


@feature("sector33_code", group="identifiers", dtype="str", role="ID")
def _s33_code(ctx: FeatureContext) -> Labels:
    return _labels(ctx, "Sector33Code")


@feature("sector33_name", group="identifiers", dtype="str", role="ID")
def _s33_name(ctx: FeatureContext) -> Labels:
    return _labels(ctx, "Sector33CodeName")


@feature("sector33_id", group="identifiers", dtype="i8", role="C")
def _s33_id(ctx: FeatureContext) -> object:
    return ctx.panel("li_sector33_id")


@feature("row_idx", group="identifiers", dtype="i32", role="ID")
def _row_idx(ctx: FeatureContext) -> object:
    xp = ctx.xp
    present = ctx.panel("dq_present")
    return xp.where(present, xp.cumsum(present, axis=0) - 1.0, xp.nan)


# ---------------------------------------------------------------------------------------------- shares (§1.8)


def _num(col: str) -> pl.Expr:
    return pl.col(col).cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)


def _shares_docs(ctx: FeatureContext, st: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Earnings documents with an issued count, in as-of order: (effective row, grid column, [net, pe])."""
    issued = "NumberOfIssuedAndOutstandingSharesAtTheEndOfFiscalYearIncludingTreasuryStock"
    treasury = "NumberOfTreasuryStockAtTheEndOfFiscalYear"
    docs = st.filter(pl.col("TypeOfDocument").str.contains(EARNINGS_DOC)).with_columns(
        _num(issued).alias("_issued"),
        _num(treasury).fill_null(0.0).alias("_treasury"),
        pl.col("CurrentPeriodEndDate").cast(pl.String).str.to_date(strict=False).alias("_pe"),
    )
    docs = docs.filter(pl.col("_issued").is_not_null())
    # the statements' own effective dates and priority (§1.4, §4.10): one rule for every statement column
    docs = statement_timing(event_calendar(ctx), docs).sort(*STATEMENT_ORDER)
    pe_days = docs["_pe"].cast(pl.Int64).cast(pl.Float64).to_numpy()
    vals = np.stack([(docs["_issued"] - docs["_treasury"]).to_numpy(), pe_days], axis=1)
    row = np.maximum(docs["_row"].to_numpy(), 0)  # documents effective before the grid hold from row 0
    return row, ctx.grid.code_index(docs["LocalCode"]), vals


@panel_source("shares_net_asof", "shares_period_end_asof")
def _shares_asof(ctx: FeatureContext) -> dict:
    """(issued - treasury) of the latest earnings document with an issued count, and its period end."""
    xp = ctx.xp
    T, N = ctx.shape
    st = ctx.raw(STATEMENTS)
    if st is None:
        return {"shares_net_asof": ctx.nan(), "shares_period_end_asof": ctx.nan()}
    # the documents are prepared once on the root (all stocks); each context scatters only its own codes
    row_D, code_D, vals_DK = ctx.full.cached("shares_docs", lambda: _shares_docs(ctx.full, st))
    lo, hi = ctx.cols.start, ctx.cols.stop
    sel = np.flatnonzero((code_D >= lo) & (code_D < hi))
    net, period_end = ops.scatter_asof(T, N, row_D[sel], code_D[sel] - lo, vals_DK[sel], xp=xp)
    return {"shares_net_asof": net, "shares_period_end_asof": period_end}


@feature("shares_outstanding", group="identifiers", dtype="f64", role="A")
def _shares_outstanding(ctx: FeatureContext) -> object:
    """The document's shares over every later split factor up to t: S × P(pe) / P(t), P = cumprod(AF)."""
    xp = ctx.xp
    net = ctx.panel("shares_net_asof")
    pe = ctx.panel("shares_period_end_asof")
    af = ctx.panel("AdjustmentFactor")
    cum = xp.cumprod(xp.where(xp.isnan(af), 1.0, af), axis=0)
    grid_days = xp.asarray(ctx.grid.date_days())
    pe_row = xp.searchsorted(grid_days, xp.where(xp.isnan(pe), -1e18, pe), side="right") - 1
    cum_pe = xp.take_along_axis(cum, xp.maximum(pe_row, 0), axis=0)
    cum_pe = xp.where(pe_row >= 0, cum_pe, 1.0)
    return xp.where(xp.isnan(pe), xp.nan, net * cum_pe / cum)


@panel_source("mcap")
def _mcap(ctx: FeatureContext) -> object:
    """Market capitalisation C_raw × shares_outstanding (JPY), §1.8."""
    return ctx.panel("C_raw") * ctx["shares_outstanding"]
