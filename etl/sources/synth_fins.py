"""Synthetic earnings: the disclosure schedule with surprises (drawn first, it drives returns) and the
fins/statements and fins/announcement tables in the API's string form (drawn after prices: share counts).

Quarterly results (1Q, 2Q, 3Q, FY) are disclosed 30-50 days after each period end, at times around the 15:00
cut-off; some quarters add an EarnForecastRevision in between. Each disclosure carries a surprise S ~ t(5):
the quarter's profit is (1 + 0.3 S) times plan, the full-year forecast moves with S, the price jumps on the
first session the news is public, and post-earnings drift follows (etl/sources/synth_returns.py).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import polars as pl

from etl.panels.events import disclosed_seconds, public_same_session
from etl.sources.schema import ENDPOINTS
from etl.sources.synth_returns import Events, std_t
from etl.sources.synth_universe import MARKET_NAMES, RESTRUCTURING, SECTOR33, Universe, lookup

TIMES = np.array(["11:30:00", "12:00:00", "13:00:00", "14:00:00", "15:00:00", "15:30:00", "16:00:00"])
TIME_P = [0.05, 0.07, 0.10, 0.08, 0.45, 0.15, 0.10]
SEASON = np.array([-0.04, 0.01, -0.02, 0.05])
QUARTER_JA = ["第１四半期", "第２四半期", "第３四半期", "本決算"]
SECTION_JA_PRE = {
    "0101": "市場第一部",
    "0102": "市場第二部",
    "0104": "マザーズ",
    "0106": "JASDAQ",
    "0107": "JASDAQ",
}
SECTION_JA_POST = {"0111": "プライム", "0112": "スタンダード", "0113": "グロース"}


@dataclass(frozen=True)
class Disclosures:
    """One entry per document (arrays of equal length), sorted by disclosure date then code."""

    code: np.ndarray  # code index
    year: np.ndarray  # fiscal-year index into the plan grid
    quarter: np.ndarray  # 1..4 (4 = FY)
    revision: np.ndarray  # bool: EarnForecastRevision
    disclosed: np.ndarray  # datetime64[D], a business day
    time: np.ndarray  # "HH:MM:SS"
    session: np.ndarray  # first session index at which the news is public
    surprise: np.ndarray
    period_end: np.ndarray  # datetime64[D]
    fy_start: np.ndarray
    fy_end: np.ndarray

    def events(self) -> Events:
        return Events(code=self.code, session=self.session, surprise=self.surprise)


@dataclass(frozen=True)
class Plan:
    """The firms' fundamentals on a (code, fiscal year, quarter) grid."""

    first_year: int
    sales: np.ndarray  # [N, Y, 4] quarterly net sales, yen
    margin: np.ndarray  # [N] operating margin
    surprise: np.ndarray  # [N, Y, 4]
    revision: np.ndarray  # [N, Y, 4] bool: a forecast revision after quarter q's results
    rev_surprise: np.ndarray  # [N, Y, 4]
    equity_ratio: np.ndarray  # [N]
    payout: np.ndarray  # [N]


def _month_end(month_index: np.ndarray) -> np.ndarray:
    """Last day of the month `year * 12 + month0`."""
    first_next = (np.asarray(month_index) - 1970 * 12 + 1).astype("datetime64[M]").astype("datetime64[D]")
    return first_next - np.timedelta64(1, "D")


def schedule(
    rng: np.random.Generator,
    uni: Universe,
    sessions: np.ndarray,
    business: np.ndarray,
    start: dt.date,
    end: dt.date,
) -> tuple[Disclosures, Plan]:
    """Draw fundamentals and the disclosure calendar for [start - 1 year, end].

    `business` must cover that span (a disclosure falls on the first business day on or after its date).
    """
    first_year, last_year = start.year - 2, end.year + 1
    n_years = last_year - first_year + 1
    N = uni.n
    annual = uni.mcap0 * np.exp(rng.normal(0.0, 0.5, N))
    growth = rng.normal(0.04, 0.05, N)
    margin = np.clip(rng.normal(0.08, 0.05, N), -0.05, 0.35)
    yq = np.arange(n_years)[None, :, None] + np.arange(4)[None, None, :] / 4.0
    sales = annual[:, None, None] / 4 * (1 + growth[:, None, None]) ** yq * (1 + SEASON[None, None, :])
    sales *= np.exp(rng.normal(0.0, 0.04, sales.shape))
    surprise = std_t(rng, 5.0, sales.shape)
    revision = rng.random(sales.shape) < 0.15
    revision[:, :, 3] = False
    rev_surprise = std_t(rng, 5.0, sales.shape)
    plan = Plan(
        first_year=first_year,
        sales=sales,
        margin=margin,
        surprise=surprise,
        revision=revision,
        rev_surprise=rev_surprise,
        equity_ratio=np.clip(rng.normal(0.45, 0.15, N), 0.05, 0.9),
        payout=np.clip(rng.normal(0.3, 0.1, N), 0.0, 0.8),
    )

    lo = np.datetime64(start, "D") - np.timedelta64(365, "D")
    hi = np.datetime64(end, "D")
    cols: dict[str, list[np.ndarray]] = {k: [] for k in Disclosures.__dataclass_fields__}
    stocks = np.flatnonzero(~uni.is_etf)
    fy_month0 = uni.fy_end_month[stocks] - 1
    for y in range(n_years):
        fy_end_idx = (first_year + y) * 12 + fy_month0
        fy_start = _month_end(fy_end_idx - 12) + np.timedelta64(1, "D")
        fy_end = _month_end(fy_end_idx)
        for q in range(1, 5):
            period_end = _month_end(fy_end_idx - 12 + 3 * q)
            lag = rng.integers(38, 50, len(stocks)) if q == 4 else rng.integers(28, 45, len(stocks))
            kinds = [(False, period_end + lag.astype("timedelta64[D]"), surprise[stocks, y, q - 1])]
            if q < 4:
                mid = period_end + (lag + rng.integers(40, 70, len(stocks))).astype("timedelta64[D]")
                kinds.append((True, mid, rev_surprise[stocks, y, q - 1]))
            for is_rev, when, sur in kinds:
                on = business[np.minimum(np.searchsorted(business, when), len(business) - 1)]
                keep = (on >= lo) & (on <= hi) & (on >= when)
                if is_rev:
                    keep &= revision[stocks, y, q - 1]
                k = stocks[keep]
                day = on[keep]
                cols["code"].append(k)
                cols["year"].append(np.full(len(k), y))
                cols["quarter"].append(np.full(len(k), q))
                cols["revision"].append(np.full(len(k), is_rev))
                cols["disclosed"].append(day)
                cols["time"].append(rng.choice(TIMES, size=len(k), p=TIME_P))
                cols["surprise"].append(sur[keep])
                cols["period_end"].append(period_end[keep])
                cols["fy_start"].append(fy_start[keep])
                cols["fy_end"].append(fy_end[keep])
                cols["session"].append(np.zeros(len(k), dtype=np.int64))
    arr = {k: np.concatenate(v) for k, v in cols.items()}
    # public from the disclosure session if before 15:00, else from the next session (the ETL's rule)
    after = ~public_same_session(disclosed_seconds(pl.DataFrame({"DisclosedTime": arr["time"]})))
    sess = np.searchsorted(sessions, arr["disclosed"], side="left") + after.astype(np.int64)
    sess = np.where(arr["disclosed"] < sessions[0], -1, sess)  # before the period: no price effect
    arr["session"] = sess
    # only while listed (documents before the first session count for codes listed from the start)
    first, last = uni.first[arr["code"]], uni.last[arr["code"]]
    day = np.searchsorted(sessions, arr["disclosed"], side="left")
    listed = (day <= last) & ((day >= first) | (first == 0))
    arr = {k: v[listed] for k, v in arr.items()}
    order = np.lexsort((arr["code"], arr["time"], arr["disclosed"]))
    return Disclosures(**{k: v[order] for k, v in arr.items()}), plan


def _amount(x: np.ndarray) -> pl.Series:
    return pl.Series(np.round(x).astype(np.int64)).cast(pl.String)


def _decimal(x: np.ndarray, places: int) -> pl.Series:
    """Fixed-point text ("66.76", "-0.40") without float artefacts."""
    scaled = np.round(np.asarray(x, dtype=float) * 10**places).astype(np.int64)
    sign = np.where(scaled < 0, "-", "")
    mag = np.abs(scaled)
    whole = pl.Series(mag // 10**places).cast(pl.String)
    frac = pl.Series(mag % 10**places).cast(pl.String).str.zfill(places)
    return pl.Series(sign) + whole + "." + frac


def statements_frame(d: Disclosures, plan: Plan, uni: Universe, raw_shares_at: np.ndarray) -> pl.DataFrame:
    """fins/statements rows (every value a string, "" for missing); `raw_shares_at`: shares at period end."""
    n = len(d.code)
    i, y, q = d.code, d.year, d.quarter - 1
    sales_q = plan.sales[i, y, :]  # [n, 4]
    op_q = sales_q * plan.margin[i, None] * (1 + 0.3 * plan.surprise[i, y, :])
    upto = np.arange(4)[None, :] <= q[:, None]
    ytd_sales = (sales_q * upto).sum(axis=1)
    ytd_op = (op_q * upto).sum(axis=1)
    ordinary = ytd_op * 1.03
    profit = ordinary * 0.68
    plan_fy_op = (sales_q * plan.margin[i, None]).sum(axis=1)
    surprises_so_far = (plan.surprise[i, y, :] * upto).sum(axis=1)
    revs_before = (
        plan.revision[i, y, :] * plan.rev_surprise[i, y, :] * (np.arange(4)[None, :] < q[:, None])
    ).sum(axis=1)
    revs_before = np.where(d.revision, revs_before + plan.rev_surprise[i, y, q], revs_before)
    scale = 1 + 0.08 * surprises_so_far + 0.1 * revs_before
    fc_sales = sales_q.sum(axis=1) * (1 + 0.02 * surprises_so_far + 0.03 * revs_before)
    fc_op = plan_fy_op * scale
    issued = np.round(raw_shares_at * 1.03, -2)
    treasury = issued - raw_shares_at
    outstanding = raw_shares_at
    eps = profit / outstanding
    fc_eps = fc_op * 1.03 * 0.68 / outstanding
    total_assets = plan.sales[i, y, :].sum(axis=1) * 1.2
    equity = total_assets * plan.equity_ratio[i]
    dps = np.maximum(np.round(fc_eps * plan.payout[i]), 0.0)
    is_fy = (d.quarter == 4) & ~d.revision
    has_results = ~d.revision
    jp = np.char.endswith(uni.accounting[i].astype(str), "_JP")
    next_sales = plan.sales[i, np.minimum(y + 1, plan.sales.shape[1] - 1), :].sum(axis=1)
    next_op = next_sales * plan.margin[i]
    next_eps = next_op * 1.03 * 0.68 / outstanding

    blank = pl.Series([""] * n)

    def when(mask: np.ndarray, values: pl.Series) -> pl.Series:
        return pl.select(pl.when(pl.Series(mask)).then(values).otherwise(blank)).to_series()

    doc = np.where(
        d.revision,
        "EarnForecastRevision",
        np.char.add(
            np.char.add(np.array(["1Q", "2Q", "3Q", "FY"])[q], "FinancialStatements_"), uni.accounting[i]
        ),
    )
    seq = np.arange(n) % 1000000
    number = np.char.add(
        np.datetime_as_string(d.disclosed, unit="D").astype("U10"), np.char.zfill(seq.astype(str), 6)
    )
    number = np.char.replace(number, "-", "")
    period_type = np.where(d.revision, "FY", np.array(["1Q", "2Q", "3Q", "FY"])[q])
    period_start = d.fy_start  # results are year-to-date, so every period starts with the fiscal year
    period_end = np.where(d.revision, d.fy_end, d.period_end)

    def date_str(x: np.ndarray) -> pl.Series:
        return pl.Series(np.datetime_as_string(x, unit="D").astype(str))

    nxt_start = d.fy_end + np.timedelta64(1, "D")
    nxt_end = (d.fy_end.astype("datetime64[M]") + 13).astype("datetime64[D]") - np.timedelta64(1, "D")
    values: dict[str, pl.Series] = {
        "DisclosedDate": pl.Series(d.disclosed).cast(pl.Date),
        "DisclosedTime": pl.Series(d.time.astype(str)),
        "LocalCode": pl.Series(uni.codes[i].astype(str)),
        "DisclosureNumber": pl.Series(number.astype(str)),
        "TypeOfDocument": pl.Series(doc.astype(str)),
        "TypeOfCurrentPeriod": pl.Series(period_type.astype(str)),
        "CurrentPeriodStartDate": date_str(period_start),
        "CurrentPeriodEndDate": date_str(period_end),
        "CurrentFiscalYearStartDate": date_str(d.fy_start),
        "CurrentFiscalYearEndDate": date_str(d.fy_end),
        "NextFiscalYearStartDate": when(is_fy, date_str(nxt_start)),
        "NextFiscalYearEndDate": when(is_fy, date_str(nxt_end)),
        "NetSales": when(has_results, _amount(ytd_sales)),
        "OperatingProfit": when(has_results, _amount(ytd_op)),
        "OrdinaryProfit": when(has_results & jp, _amount(ordinary)),
        "Profit": when(has_results, _amount(profit)),
        "EarningsPerShare": when(has_results, _decimal(eps, 2)),
        "DilutedEarningsPerShare": blank,
        "TotalAssets": when(has_results, _amount(total_assets)),
        "Equity": when(has_results, _amount(equity)),
        "EquityToAssetRatio": when(has_results, _decimal(plan.equity_ratio[i], 3)),
        "BookValuePerShare": when(has_results, _decimal(equity / outstanding, 2)),
        "CashFlowsFromOperatingActivities": when(is_fy | (has_results & (q == 1)), _amount(profit * 1.3)),
        "CashFlowsFromInvestingActivities": when(is_fy | (has_results & (q == 1)), _amount(-profit * 0.6)),
        "CashFlowsFromFinancingActivities": when(is_fy | (has_results & (q == 1)), _amount(-profit * 0.4)),
        "CashAndEquivalents": when(is_fy | (has_results & (q == 1)), _amount(total_assets * 0.15)),
        "ResultDividendPerShare2ndQuarter": when(has_results & (q >= 1), _decimal(np.floor(dps / 2), 2)),
        "ResultDividendPerShareFiscalYearEnd": when(is_fy, _decimal(dps - np.floor(dps / 2), 2)),
        "ResultDividendPerShareAnnual": when(is_fy, _decimal(dps, 2)),
        "ForecastDividendPerShareAnnual": when(~is_fy, _decimal(dps, 2)),
        "ForecastDividendPerShareFiscalYearEnd": when(~is_fy, _decimal(dps - np.floor(dps / 2), 2)),
        "NextYearForecastDividendPerShareAnnual": when(is_fy, _decimal(dps, 2)),
        "ForecastNetSales": when(~is_fy, _amount(fc_sales)),
        "ForecastOperatingProfit": when(~is_fy, _amount(fc_op)),
        "ForecastOrdinaryProfit": when(~is_fy & jp, _amount(fc_op * 1.03)),
        "ForecastProfit": when(~is_fy, _amount(fc_op * 1.03 * 0.68)),
        "ForecastEarningsPerShare": when(~is_fy, _decimal(fc_eps, 2)),
        "NextYearForecastNetSales": when(is_fy, _amount(next_sales)),
        "NextYearForecastOperatingProfit": when(is_fy, _amount(next_op)),
        "NextYearForecastOrdinaryProfit": when(is_fy & jp, _amount(next_op * 1.03)),
        "NextYearForecastProfit": when(is_fy, _amount(next_op * 1.03 * 0.68)),
        "NextYearForecastEarningsPerShare": when(is_fy, _decimal(next_eps, 2)),
        "MaterialChangesInSubsidiaries": when(has_results, pl.Series(["false"] * n)),
        "ChangesBasedOnRevisionsOfAccountingStandard": when(has_results, pl.Series(["false"] * n)),
        "ChangesOtherThanOnesBasedOnRevisionsOfAccountingStandard": when(
            has_results, pl.Series(["false"] * n)
        ),
        "ChangesInAccountingEstimates": when(has_results, pl.Series(["false"] * n)),
        "RetrospectiveRestatement": when(has_results, pl.Series(["false"] * n)),
        "NumberOfIssuedAndOutstandingSharesAtTheEndOfFiscalYearIncludingTreasuryStock": when(
            has_results, _amount(issued)
        ),
        "NumberOfTreasuryStockAtTheEndOfFiscalYear": when(has_results, _amount(treasury)),
        "AverageNumberOfShares": when(has_results, _amount(outstanding * 0.999)),
    }
    schema = ENDPOINTS["fins_statements"].columns
    cols = [values[c].alias(c) if c in values else blank.alias(c) for c in schema]
    return pl.DataFrame(cols)


def announcement_frame(d: Disclosures, uni: Universe) -> pl.DataFrame:
    """fins/announcement: scheduled results of March and September year-end companies (no revisions)."""
    keep = ~d.revision & np.isin(uni.fy_end_month[d.code], [3, 9])
    i = d.code[keep]
    post = d.disclosed[keep] >= np.datetime64(RESTRUCTURING, "D")
    market = np.where(post, uni.market_post[i], uni.market_pre[i])
    names = SECTION_JA_PRE | SECTION_JA_POST
    section = lookup(market, names | {k: v for k, v in MARKET_NAMES.items() if k not in names}, "")
    return pl.DataFrame(
        {
            "Date": pl.Series(d.disclosed[keep]).cast(pl.Date),
            "Code": uni.codes[i].astype(str),
            "CompanyName": uni.name_ja[i].astype(str),
            "FiscalYear": np.where(uni.fy_end_month[i] == 3, "3月31日", "9月30日").astype(str),
            "SectorName": lookup(uni.sector33[i], {k: v[0] for k, v in SECTOR33.items()}, "").astype(str),
            "FiscalQuarter": np.array(QUARTER_JA)[d.quarter[keep] - 1].astype(str),
            "Section": section.astype(str),
        }
    ).unique(subset=["Date", "Code"], keep="first", maintain_order=True)
