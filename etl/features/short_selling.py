"""Short selling — sector ratios (SS) and reported positions (SP), FEATURES.md §4.12, and is_ss_valid (§4.15).

SS is a daily series per Sector33 code, effective the next business day and attached for at most 3 sessions
to every stock whose as-of sector it is; its windows count the sector's own rows. SP holds >= 0.5 % position
reports per (Code, holder): a holder's state at t is its latest report (by CalculatedDate, DisclosedDate)
effective by t; the per-stock aggregates over active holders are evaluated once per report day and carried
forward (true zeros once SP coverage has begun, NaN before) [D25].
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from etl import ops
from etl.features.identifiers import SECTOR33_CODES
from etl.features.registry import FeatureContext, features
from etl.panels.events import (
    EPS,
    SHORT_POSITIONS,
    SHORT_SELLING,
    EventCalendar,
    RecordSeries,
    RecordSet,
    attach_records,
    eff_row,
    event_calendar,
    group_positions,
    malformed,
    to_days,
)
from etl.panels.panel import code_index

STALENESS = 3
ACTIVE_RATIO = 0.005
N_SECTOR_IDS = 34  # 33 sectors plus 9999 (-> 33), as sector33_id
SECTOR_COLUMNS = [
    "ss_sec33_short_share",
    "ss_sec33_restrict_share",
    "ss_sec33_short_turnover",
    "ss_sec33_short_share_d1",
    "ss_sec33_restrict_share_d1",
    "ss_sec33_short_mom5",
    "ss_sec33_short_accel",
    "ss_sec33_short_share_z60",
    "ss_sec33_short_turnover_z252",
]
MARKET_COLUMNS = ["ss_mkt_short_share", "ss_mkt_restrict_share", "ss_mkt_short_breadth_q80"]
DERIVED_COLUMNS = ["ss_rel_short_share", "ss_rel_restrict_share", "ss_cond_pressure", "ss_squeeze_setup"]
POSITION_COLUMNS = [
    "ss_balance_ratio",
    "ss_balance",
    "ss_balance_change",
    "ss_pos_holder_cnt",
    "ss_pos_max_ratio",
    "ss_pos_days_since_report",
]
VALIDITY = "is_ss_valid"
SS_COLUMNS = [*SECTOR_COLUMNS, *MARKET_COLUMNS, *DERIVED_COLUMNS]
HOLDER = ["ShortSellerName", "DiscretionaryInvestmentContractorName", "InvestmentFundName"]


# ----------------------------------------------------------------------------------------------- SS
def sector_ids(codes: pl.Series) -> np.ndarray:
    mapping = {c: i for i, c in enumerate(SECTOR33_CODES)} | {"9999": 33}
    return codes.replace_strict(mapping, default=-1, return_dtype=pl.Int64).to_numpy()


def prepare_ss(ss: pl.DataFrame) -> pl.DataFrame:
    null_key = ss.filter(pl.col("Date").is_null() | pl.col("Sector33Code").is_null())
    if null_key.height:
        raise malformed(SHORT_SELLING, "Date and Sector33Code must be non-null", null_key)
    ss = ss.with_columns(pl.Series("_sid", sector_ids(ss["Sector33Code"])))
    unknown = ss.filter(pl.col("_sid") < 0)
    if unknown.height:
        raise malformed(SHORT_SELLING, "Sector33Code must be one of the 33 sector codes or 9999", unknown)
    values = [
        "SellingExcludingShortSellingTurnoverValue",
        "ShortSellingWithRestrictionsTurnoverValue",
        "ShortSellingWithoutRestrictionsTurnoverValue",
    ]
    negative = ss.filter(pl.any_horizontal(pl.col(c) < 0 for c in values))
    if negative.height:
        raise malformed(SHORT_SELLING, "turnover values must be >= 0", negative)
    dup = ss.filter(pl.struct("Date", "Sector33Code").is_duplicated())
    if dup.height:
        raise malformed(SHORT_SELLING, "one row per (Sector33Code, Date)", dup)
    return ss.sort("_sid", "Date")


def sector_records(cal: EventCalendar, ss: pl.DataFrame) -> tuple[RecordSet, RecordSet]:
    """Per-(sector, date) and per-date market records of the SS columns, effective nbd(Date)."""
    ss = prepare_ss(ss)
    X = ss["SellingExcludingShortSellingTurnoverValue"].to_numpy().astype(np.float64)
    W = ss["ShortSellingWithRestrictionsTurnoverValue"].to_numpy().astype(np.float64)
    WO = ss["ShortSellingWithoutRestrictionsTurnoverValue"].to_numpy().astype(np.float64)
    sid = ss["_sid"].to_numpy()
    day = to_days(ss["Date"])
    short, sell = W + WO, X + W + WO
    share = short / (sell + EPS)
    restrict = W / (short + EPS)
    group, item = group_positions(ss.select("_sid", "Date"), ["_sid"], "Date")
    series = RecordSeries.build(group, item)

    def lag1(v: np.ndarray) -> np.ndarray:
        return series.apply(v, lambda p: ops.lag(p, 1))

    d1 = share - lag1(share)
    accel = d1 - lag1(d1)
    q80 = series.apply(share, _q80_before)
    above = np.where(np.isnan(q80), np.nan, (share > q80).astype(np.float64))
    eff = cal.nbd(day)
    sector = RecordSet(
        values={
            "ss_sec33_short_share": share,
            "ss_sec33_restrict_share": restrict,
            "ss_sec33_short_turnover": short,
            "ss_sec33_short_share_d1": d1,
            "ss_sec33_restrict_share_d1": restrict - lag1(restrict),
            "ss_sec33_short_mom5": share - series.apply(share, lambda p: ops.rolling_mean(p, 5, 5)),
            "ss_sec33_short_accel": accel,
            "ss_sec33_short_share_z60": series.apply(share, lambda p: ops.rolling_z(p, 60, 60)),
            "ss_sec33_short_turnover_z252": series.apply(short, lambda p: ops.rolling_z(p, 252, 252)),
        },
        row_R=eff_row(cal, eff),
        code_R=sid,
        rank_R=day,
        eff_R=eff,
        limit=STALENESS,
        since={},
        impulse=None,
        validity=VALIDITY,
    )
    mkt = (
        pl.DataFrame({"day": day, "short": short, "sell": sell, "W": W, "above": above})
        .group_by("day")
        .agg(
            pl.col("short").sum(),
            pl.col("sell").sum(),
            pl.col("W").sum(),
            pl.col("above").fill_nan(None).mean(),  # mean over sectors that have a q80
        )
        .sort("day")
    )
    mday = mkt["day"].to_numpy()
    meff = cal.nbd(mday)
    m_short, m_sell = mkt["short"].to_numpy(), mkt["sell"].to_numpy()
    market = RecordSet(
        values={
            "ss_mkt_short_share": m_short / (m_sell + EPS),
            "ss_mkt_restrict_share": mkt["W"].to_numpy() / (m_short + EPS),
            "ss_mkt_short_breadth_q80": mkt["above"].cast(pl.Float64).fill_null(np.nan).to_numpy(),
        },
        row_R=eff_row(cal, meff),
        code_R=np.zeros(mday.shape, dtype=np.int64),
        rank_R=mday,
        eff_R=meff,
        limit=STALENESS,
        since={},
        impulse=None,
        validity=None,
    )
    return sector, market


def _q80_before(share_KG: np.ndarray) -> np.ndarray:
    """Per record: 80th percentile (linear) of the sector's 252 rows before it; NaN unless all 252 exist."""
    K, G = share_KG.shape
    out = np.full((K, G), np.nan)
    if K <= 252:
        return out
    win = np.lib.stride_tricks.sliding_window_view(
        share_KG[:-1], 252, axis=0
    )  # [K-252, G, 252], rows k-252..k-1
    full = ~np.isnan(win).any(axis=2)
    q = np.full(full.shape, np.nan)
    if full.any():
        q[full] = np.percentile(win[full], 80, axis=1, method="linear")
    out[252:] = q
    return out


def gather_sector(xp: Any, val_TG: Any, sid_TN: Any) -> Any:
    """[T, G] sector series -> [T, N] by each stock's as-of sector id (-1 -> NaN)."""
    sid = xp.asarray(sid_TN)
    sid = xp.where(xp.isnan(sid), -1, sid).astype(np.int64)
    out = xp.take_along_axis(val_TG, xp.maximum(sid, 0), axis=1)
    return xp.where(sid >= 0, out, np.nan)


def indicator(xp: Any, cond: Any, *operands: Any) -> Any:
    """1.0/0.0 where every operand is non-null, else NaN (§1.9)."""
    ok = ~xp.isnan(operands[0])
    for o in operands[1:]:
        ok &= ~xp.isnan(o)
    return xp.where(ok, cond.astype(xp.float64), np.nan)


def compute_ss(
    xp: Any, cal: EventCalendar, ss: pl.DataFrame | None, sid_TN: Any, ret1_TN: Any, ret5_TN: Any
) -> dict[str, Any]:
    """The SS columns and is_ss_valid for stocks with as-of sector ids `sid_TN` [T, n]."""
    shape = sid_TN.shape
    if ss is None or ss.height == 0:
        return {c: xp.full(shape, np.nan) for c in SS_COLUMNS} | {VALIDITY: xp.zeros(shape)}
    sector, market = sector_records(cal, ss)
    return ss_from_records(xp, cal, sector, market, sid_TN, ret1_TN, ret5_TN)


def ss_from_records(
    xp: Any, cal: EventCalendar, sector: RecordSet, market: RecordSet, sid_TN: Any, ret1: Any, ret5: Any
) -> dict[str, Any]:
    sec_TG = attach_records(xp, cal, sector, 0, N_SECTOR_IDS)
    mkt_T1 = attach_records(xp, cal, market, 0, 1)
    out = {c: gather_sector(xp, sec_TG[c], sid_TN) for c in SECTOR_COLUMNS}
    valid = gather_sector(xp, sec_TG[VALIDITY], sid_TN)
    out[VALIDITY] = xp.where(xp.isnan(valid), 0.0, valid)
    for c in MARKET_COLUMNS:
        out[c] = xp.broadcast_to(mkt_T1[c], sid_TN.shape).copy()
    out["ss_rel_short_share"] = out["ss_sec33_short_share"] - out["ss_mkt_short_share"]
    out["ss_rel_restrict_share"] = out["ss_sec33_restrict_share"] - out["ss_mkt_restrict_share"]
    z60 = out["ss_sec33_short_share_z60"]
    out["ss_cond_pressure"] = indicator(xp, (ret1 < 0) & (z60 > 1), ret1, z60)
    out["ss_squeeze_setup"] = indicator(xp, (ret5 > 0) & (z60 > 1), ret5, z60)
    return out


# ----------------------------------------------------------------------------------------------- SP
def prepare_sp(sp: pl.DataFrame) -> pl.DataFrame:
    null_key = sp.filter(
        pl.col("Code").is_null() | pl.col("DisclosedDate").is_null() | pl.col("CalculatedDate").is_null()
    )
    if null_key.height:
        raise malformed(SHORT_POSITIONS, "Code, DisclosedDate and CalculatedDate must be non-null", null_key)
    bad = sp.filter(
        pl.col("ShortPositionsToSharesOutstandingRatio").is_null()
        | (pl.col("ShortPositionsToSharesOutstandingRatio") < 0)
        | (pl.col("ShortPositionsToSharesOutstandingRatio") > 1)
    )
    if bad.height:
        raise malformed(
            SHORT_POSITIONS, "ShortPositionsToSharesOutstandingRatio must be a fraction in [0, 1]", bad
        )
    holder = pl.concat_str([pl.col(c).fill_null("").str.strip_chars() for c in HOLDER], separator="\x1f")
    return sp.with_columns(holder.alias("_holder"))


def position_records(cal: EventCalendar, codes: Any, sp: pl.DataFrame) -> tuple[RecordSet, RecordSet, int]:
    """Per-(Code, report day) aggregates over active holders, the latest-report record and coverage row."""
    sp = prepare_sp(sp)
    eff = cal.nbd(to_days(sp["DisclosedDate"]))
    sp = sp.with_columns(
        pl.Series("_row", eff_row(cal, eff)),
        pl.Series("_eff", eff),
        (pl.col("CalculatedDate").cast(pl.Int64) * 100_000 + pl.col("DisclosedDate").cast(pl.Int64)).alias(
            "_prio"
        ),
        pl.col("ShortPositionsToSharesOutstandingRatio").alias("_ratio"),
        pl.col("ShortPositionsInSharesNumber").alias("_shares"),
    )
    coverage = int(sp["_row"].min())
    # a holder's state after each of its report days: the report of highest priority so far
    pair = (
        sp.sort("Code", "_holder", "_row", "_prio")
        .with_columns(pl.col("_prio").cum_max().over("Code", "_holder").alias("_best"))
        .group_by("Code", "_holder", "_row", maintain_order=True)
        .agg(pl.col("_best").last())
    )
    by_prio = sp.select("Code", "_holder", "_prio", "_ratio", "_shares").unique(
        subset=["Code", "_holder", "_prio"], keep="last", maintain_order=True
    )
    pair = pair.join(
        by_prio, left_on=["Code", "_holder", "_best"], right_on=["Code", "_holder", "_prio"], how="left"
    ).sort("_row")
    days = pair.select("Code", "_row").unique().sort("_row")
    holders = pair.select("Code", "_holder").unique()
    grid = days.join(holders, on="Code").sort("_row")
    state = grid.join_asof(
        pair, on="_row", by=["Code", "_holder"], strategy="backward", check_sortedness=False
    )
    active = pl.col("_ratio") >= ACTIVE_RATIO
    agg = (
        state.group_by("Code", "_row")
        .agg(
            pl.col("_ratio").filter(active).sum().alias("ratio"),
            pl.col("_shares").filter(active).sum().alias("shares"),
            active.sum().cast(pl.Float64).alias("count"),
            pl.col("_ratio").filter(active).max().fill_null(0.0).alias("max"),
        )
        .sort("Code", "_row")
    )
    row = agg["_row"].to_numpy()
    col = code_index(codes, agg["Code"])
    aggregates = RecordSet(
        values={
            "ss_balance_ratio": agg["ratio"].to_numpy().astype(np.float64),
            "ss_balance": agg["shares"].to_numpy().astype(np.float64),
            "ss_pos_holder_cnt": agg["count"].to_numpy(),
            "ss_pos_max_ratio": agg["max"].to_numpy().astype(np.float64),
        },
        row_R=row,
        code_R=col,
        rank_R=row,
        eff_R=row,  # read only by a staleness limit: none here
        limit=None,
        since={},
        impulse=None,
        validity=None,
    )
    latest = RecordSet.plain(
        values={"_upto": cal.sessions_upto(eff).astype(np.float64)},
        row_R=eff_row(cal, eff),
        code_R=code_index(codes, sp["Code"]),
        eff_R=eff,
    )
    return aggregates, latest, coverage


def positions_from_records(
    xp: Any, cal: EventCalendar, aggregates: RecordSet, latest: RecordSet, coverage: int, lo: int, hi: int
) -> dict[str, Any]:
    T = cal.T
    agg = attach_records(xp, cal, aggregates, lo, hi)
    covered_T1 = (xp.arange(T) >= coverage)[:, None]
    out = {}
    for c in ("ss_balance_ratio", "ss_balance", "ss_pos_holder_cnt", "ss_pos_max_ratio"):
        v = agg[c]
        out[c] = xp.where(covered_T1, xp.where(xp.isnan(v), 0.0, v), np.nan)
    ratio = out["ss_balance_ratio"]
    lag = xp.full(ratio.shape, np.nan)
    if T > 20:
        lag[20:] = ratio[:-20]
    out["ss_balance_change"] = ratio - lag
    upto = attach_records(xp, cal, latest, lo, hi)["_upto"]
    t_T1 = xp.arange(T, dtype=xp.float64)[:, None]
    out["ss_pos_days_since_report"] = (t_T1 + 1.0) - upto
    return {c: out[c] for c in POSITION_COLUMNS}


def compute_positions(xp: Any, cal: EventCalendar, codes: Any, sp: pl.DataFrame | None) -> dict[str, Any]:
    """The six SP position columns for `codes`."""
    if sp is None or sp.height == 0:
        return {c: xp.full((cal.T, len(codes)), np.nan) for c in POSITION_COLUMNS}
    aggregates, latest, coverage = position_records(cal, codes, sp)
    return positions_from_records(xp, cal, aggregates, latest, coverage, 0, len(codes))


# ----------------------------------------------------------------------------------------------- registry
@features([*SS_COLUMNS, VALIDITY])
def _short_selling(ctx: FeatureContext) -> dict[str, Any]:
    cal = event_calendar(ctx)
    sid = ctx.panel("li_sector33_id")

    def build() -> tuple[RecordSet, RecordSet] | None:
        ss = ctx.raw(SHORT_SELLING)
        return None if ss is None or ss.height == 0 else sector_records(cal, ss)

    recs = ctx.full.cached("short_selling.sector_records", build)
    if recs is None:
        return {c: ctx.nan() for c in SS_COLUMNS} | {VALIDITY: ctx.xp.zeros(ctx.shape)}
    return ss_from_records(ctx.xp, cal, *recs, sid, ctx["returns_1d"], ctx["returns_5d"])


@features(POSITION_COLUMNS)
def _positions(ctx: FeatureContext) -> dict[str, Any]:
    cal = event_calendar(ctx)

    def build() -> tuple[RecordSet, RecordSet, int] | None:
        sp = ctx.raw(SHORT_POSITIONS)
        return None if sp is None or sp.height == 0 else position_records(cal, ctx.grid.codes, sp)

    recs = ctx.full.cached("short_selling.position_records", build)
    if recs is None:
        return {c: ctx.nan() for c in POSITION_COLUMNS}
    return positions_from_records(ctx.xp, cal, *recs, ctx.cols.start, ctx.cols.stop)
