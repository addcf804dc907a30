"""The canonical raw-store schema: one `Endpoint` per stored J-Quants endpoint (see docs/raw_store.md).

Column names are the long v1 names of `../shared/jquants_api.md` §2, in the API's field order. Both the
J-Quants client (which speaks v2 and renames with `Endpoint.v2_names`) and the synthetic market write exactly
these columns with exactly these dtypes. The dtype rule, "as the API gives them after the client's coercion":

- every date field (`YYYY-MM-DD` in JSON) -> `pl.Date`; an empty string "" becomes null;
- codes (`Code`, `LocalCode`) -> 5-character `pl.String`, never cast to int; `Sector33Code` a 4-char string;
- JSON numbers -> `pl.Float64` (integers included, e.g. trades_spec yen amounts and share counts);
- JSON strings (names, flags "0"/"1", category codes) -> `pl.String`, unchanged;
- fields that mix numbers and strings (daily margin `DailyChange*` "-" and `*ListedShareRatio` "*") ->
  `pl.String`: the published text is kept ("-20.0", "-", "*") and the ETL decides how to parse it;
- fins/statements: only `DisclosedDate` is coerced (to `pl.Date`); every other field stays the string the API
  publishes, "" for missing, "true"/"false" for flags (the API publishes them all as strings);
- nested objects are flattened with "." (daily margin `PublishReason.Restricted` ...), as the official
  client does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

DATE = pl.Date
STR = pl.String
F64 = pl.Float64


@dataclass(frozen=True)
class Endpoint:
    """One stored endpoint: its id (folder name), API paths, canonical columns, dedupe key and v2 names."""

    endpoint_id: str
    v1_path: str
    v2_path: str
    response_key: str  # v1 JSON key holding the rows (v2 always uses "data")
    columns: dict[str, pl.DataType]  # canonical long name -> dtype, in the API's field order
    key: tuple[str, ...]  # one row per key value; corrections differ in a publication-date column of the key
    date_column: str  # the date a row is published/stamped with (what incremental fetches filter on)
    v2_names: dict[str, str] = field(default_factory=dict)  # v2 short name -> v1 long name (flattened)
    nullable_key: tuple[str, ...] = ()  # key columns that may be null (announcement Date: "" = undecided)

    @property
    def schema(self) -> pl.Schema:
        return pl.Schema(self.columns)

    @property
    def code_columns(self) -> tuple[str, ...]:
        """Columns holding 5-character issue codes."""
        return tuple(c for c in ("Code", "LocalCode") if c in self.columns)

    def empty(self) -> pl.DataFrame:
        """A zero-row frame with the canonical schema."""
        return pl.DataFrame(schema=self.schema)


def endpoint_id_of(v1_path: str) -> str:
    """`/prices/daily_quotes` -> `prices_daily_quotes` (the folder name in the raw store)."""
    return v1_path.strip("/").replace("/", "_")


def _named(v1: list[str], v2: list[str]) -> dict[str, str]:
    """Positional v2 -> v1 mapping (the official client's column lists pair up by position)."""
    assert len(v1) == len(v2), (v1, v2)
    return dict(zip(v2, v1, strict=True))


# ---------------------------------------------------------------------------------------------- listed/info
_LISTED_V1 = [
    "Date",
    "Code",
    "CompanyName",
    "CompanyNameEnglish",
    "Sector17Code",
    "Sector17CodeName",
    "Sector33Code",
    "Sector33CodeName",
    "ScaleCategory",
    "MarketCode",
    "MarketCodeName",
    "MarginCode",
    "MarginCodeName",
]
_LISTED_V2 = [
    "Date",
    "Code",
    "CoName",
    "CoNameEn",
    "S17",
    "S17Nm",
    "S33",
    "S33Nm",
    "ScaleCat",
    "Mkt",
    "MktNm",
    "Mrgn",
    "MrgnNm",
]

# ---------------------------------------------------------------------------------------------- daily quotes
_PRICE_V1 = [
    "Date",
    "Code",
    "Open",
    "High",
    "Low",
    "Close",
    "UpperLimit",
    "LowerLimit",
    "Volume",
    "TurnoverValue",
    "AdjustmentFactor",
    "AdjustmentOpen",
    "AdjustmentHigh",
    "AdjustmentLow",
    "AdjustmentClose",
    "AdjustmentVolume",
]
_PRICE_V2 = ["Date", "Code", "O", "H", "L", "C", "UL", "LL", "Vo", "Va", "AdjFactor"]
_PRICE_V2 += ["AdjO", "AdjH", "AdjL", "AdjC", "AdjVo"]
_PRICE_TYPES = {c: F64 for c in _PRICE_V1} | {"Date": DATE, "Code": STR, "UpperLimit": STR, "LowerLimit": STR}

# ---------------------------------------------------------------------------------------------- trades_spec
TRADES_SPEC_GROUPS = [
    "Proprietary",
    "Brokerage",
    "Total",
    "Individuals",
    "Foreigners",
    "SecuritiesCos",
    "InvestmentTrusts",
    "BusinessCos",
    "OtherCos",
    "InsuranceCos",
    "CityBKsRegionalBKsEtc",
    "TrustBanks",
    "OtherFinancialInstitutions",
]
_TS_GROUPS_V2 = ["Prop", "Brk", "Tot", "Ind", "Frgn", "SecCo", "InvTr", "BusCo", "OthCo", "InsCo", "Bank"]
_TS_GROUPS_V2 += ["TrstBnk", "OthFin"]
_TS_SIDES = ["Sales", "Purchases", "Total", "Balance"]
_TS_SIDES_V2 = ["Sell", "Buy", "Tot", "Bal"]
_TS_VALUES_V1 = [g + s for g in TRADES_SPEC_GROUPS for s in _TS_SIDES]
_TS_V1 = ["PublishedDate", "StartDate", "EndDate", "Section", *_TS_VALUES_V1]
_TS_V2 = ["PubDate", "StDate", "EnDate", "Section", *[g + s for g in _TS_GROUPS_V2 for s in _TS_SIDES_V2]]
_TS_TYPES = {"PublishedDate": DATE, "StartDate": DATE, "EndDate": DATE, "Section": STR}
_TS_TYPES |= {c: F64 for c in _TS_VALUES_V1}

# ------------------------------------------------------------------------------------------- fins/statements
_FIN5 = ["NetSales", "OperatingProfit", "OrdinaryProfit", "Profit", "EarningsPerShare"]
_FIN5_V2 = ["Sales", "OP", "OdP", "NP", "EPS"]
_DIV5 = ["1stQuarter", "2ndQuarter", "3rdQuarter", "FiscalYearEnd", "Annual"]
_DIV5_V2 = ["1Q", "2Q", "3Q", "FY", "Ann"]
_NC9 = [*_FIN5, "TotalAssets", "Equity", "EquityToAssetRatio", "BookValuePerShare"]
_NC9_V2 = ["NCSales", "NCOP", "NCOdP", "NCNP", "NCEPS", "NCTA", "NCEq", "NCEqAR", "NCBPS"]
_ST_V1 = [
    "DisclosedDate",
    "DisclosedTime",
    "LocalCode",
    "DisclosureNumber",
    "TypeOfDocument",
    "TypeOfCurrentPeriod",
    "CurrentPeriodStartDate",
    "CurrentPeriodEndDate",
    "CurrentFiscalYearStartDate",
    "CurrentFiscalYearEndDate",
    "NextFiscalYearStartDate",
    "NextFiscalYearEndDate",
    *_FIN5,
    "DilutedEarningsPerShare",
    "TotalAssets",
    "Equity",
    "EquityToAssetRatio",
    "BookValuePerShare",
    "CashFlowsFromOperatingActivities",
    "CashFlowsFromInvestingActivities",
    "CashFlowsFromFinancingActivities",
    "CashAndEquivalents",
    *["ResultDividendPerShare" + d for d in _DIV5],
    "DistributionsPerUnit(REIT)",
    "ResultTotalDividendPaidAnnual",
    "ResultPayoutRatioAnnual",
    *["ForecastDividendPerShare" + d for d in _DIV5],
    "ForecastDistributionsPerUnit(REIT)",
    "ForecastTotalDividendPaidAnnual",
    "ForecastPayoutRatioAnnual",
    *["NextYearForecastDividendPerShare" + d for d in _DIV5],
    "NextYearForecastDistributionsPerUnit(REIT)",
    "NextYearForecastPayoutRatioAnnual",
    *["Forecast" + f + "2ndQuarter" for f in _FIN5],
    *["NextYearForecast" + f + "2ndQuarter" for f in _FIN5],
    *["Forecast" + f for f in _FIN5],
    *["NextYearForecast" + f for f in _FIN5],
    "MaterialChangesInSubsidiaries",
    "SignificantChangesInTheScopeOfConsolidation",
    "ChangesBasedOnRevisionsOfAccountingStandard",
    "ChangesOtherThanOnesBasedOnRevisionsOfAccountingStandard",
    "ChangesInAccountingEstimates",
    "RetrospectiveRestatement",
    "NumberOfIssuedAndOutstandingSharesAtTheEndOfFiscalYearIncludingTreasuryStock",
    "NumberOfTreasuryStockAtTheEndOfFiscalYear",
    "AverageNumberOfShares",
    *["NonConsolidated" + f for f in _NC9],
    *["ForecastNonConsolidated" + f + "2ndQuarter" for f in _FIN5],
    *["NextYearForecastNonConsolidated" + f + "2ndQuarter" for f in _FIN5],
    *["ForecastNonConsolidated" + f for f in _FIN5],
    *["NextYearForecastNonConsolidated" + f for f in _FIN5],
]
_NXF5_V2 = ["NxFSales", "NxFOP", "NxFOdP", "NxFNp", "NxFEPS"]  # the API's own lower-case "p" in NxFNp
_ST_V2 = [
    "DiscDate",
    "DiscTime",
    "Code",
    "DiscNo",
    "DocType",
    "CurPerType",
    "CurPerSt",
    "CurPerEn",
    "CurFYSt",
    "CurFYEn",
    "NxtFYSt",
    "NxtFYEn",
    *_FIN5_V2,
    "DEPS",
    "TA",
    "Eq",
    "EqAR",
    "BPS",
    "CFO",
    "CFI",
    "CFF",
    "CashEq",
    *["Div" + d for d in _DIV5_V2],
    "DivUnit",
    "DivTotalAnn",
    "PayoutRatioAnn",
    *["FDiv" + d for d in _DIV5_V2],
    "FDivUnit",
    "FDivTotalAnn",
    "FPayoutRatioAnn",
    *["NxFDiv" + d for d in _DIV5_V2],
    "NxFDivUnit",
    "NxFPayoutRatioAnn",
    *["F" + f + "2Q" for f in _FIN5_V2],
    *[f + "2Q" for f in _NXF5_V2],
    *["F" + f for f in _FIN5_V2],
    *_NXF5_V2,
    "MatChgSub",
    "SigChgInC",
    "ChgByASRev",
    "ChgNoASRev",
    "ChgAcEst",
    "RetroRst",
    "ShOutFY",
    "TrShFY",
    "AvgSh",
    *_NC9_V2,
    *["FNC" + f + "2Q" for f in _FIN5_V2],
    *["NxFNC" + f + "2Q" for f in _FIN5_V2],
    *["FNC" + f for f in _FIN5_V2],
    *["NxFNC" + f for f in _FIN5_V2],
]
_ST_TYPES = {c: STR for c in _ST_V1} | {"DisclosedDate": DATE}
STATEMENT_VALUE_COLUMNS = tuple(_ST_V1[12:])  # every field after the period dates: strings, "" for missing

# ---------------------------------------------------------------------------------------------- margin
_WM_V1 = [
    "Date",
    "Code",
    "ShortMarginTradeVolume",
    "LongMarginTradeVolume",
    "ShortNegotiableMarginTradeVolume",
    "LongNegotiableMarginTradeVolume",
    "ShortStandardizedMarginTradeVolume",
    "LongStandardizedMarginTradeVolume",
    "IssueType",
]
_WM_V2 = [
    "Date",
    "Code",
    "ShrtVol",
    "LongVol",
    "ShrtNegVol",
    "LongNegVol",
    "ShrtStdVol",
    "LongStdVol",
    "IssType",
]
_WM_TYPES = {c: F64 for c in _WM_V1} | {"Date": DATE, "Code": STR, "IssueType": STR}

PUBLISH_REASONS = [
    "Restricted",
    "DailyPublication",
    "Monitoring",
    "RestrictedByJSF",
    "PrecautionByJSF",
    "UnclearOrSecOnAlert",
]
_DM_V1 = [
    "PublishedDate",
    "Code",
    "ApplicationDate",
    *["PublishReason." + r for r in PUBLISH_REASONS],
    "ShortMarginOutstanding",
    "DailyChangeShortMarginOutstanding",
    "ShortMarginOutstandingListedShareRatio",
    "LongMarginOutstanding",
    "DailyChangeLongMarginOutstanding",
    "LongMarginOutstandingListedShareRatio",
    "ShortLongRatio",
    "ShortNegotiableMarginOutstanding",
    "DailyChangeShortNegotiableMarginOutstanding",
    "ShortStandardizedMarginOutstanding",
    "DailyChangeShortStandardizedMarginOutstanding",
    "LongNegotiableMarginOutstanding",
    "DailyChangeLongNegotiableMarginOutstanding",
    "LongStandardizedMarginOutstanding",
    "DailyChangeLongStandardizedMarginOutstanding",
    "TSEMarginBorrowingAndLendingRegulationClassification",
]
_DM_V2 = [
    "PubDate",
    "Code",
    "AppDate",
    *["PubReason." + r for r in PUBLISH_REASONS],
    "ShrtOut",
    "ShrtOutChg",
    "ShrtOutRatio",
    "LongOut",
    "LongOutChg",
    "LongOutRatio",
    "SLRatio",
    "ShrtNegOut",
    "ShrtNegOutChg",
    "ShrtStdOut",
    "ShrtStdOutChg",
    "LongNegOut",
    "LongNegOutChg",
    "LongStdOut",
    "LongStdOutChg",
    "TSEMrgnRegCls",
]
DAILY_MARGIN_MIXED_COLUMNS = tuple(
    c for c in _DM_V1 if c.startswith("DailyChange") or c.endswith("ShareRatio")
)
_DM_TYPES = {c: F64 for c in _DM_V1} | {"PublishedDate": DATE, "Code": STR, "ApplicationDate": DATE}
_DM_TYPES |= {"PublishReason." + r: STR for r in PUBLISH_REASONS}
_DM_TYPES |= {c: STR for c in DAILY_MARGIN_MIXED_COLUMNS}
_DM_TYPES["TSEMarginBorrowingAndLendingRegulationClassification"] = STR

# ---------------------------------------------------------------------------------------------- short selling
_SS_V1 = [
    "Date",
    "Sector33Code",
    "SellingExcludingShortSellingTurnoverValue",
    "ShortSellingWithRestrictionsTurnoverValue",
    "ShortSellingWithoutRestrictionsTurnoverValue",
]
_SS_V2 = ["Date", "S33", "SellExShortVa", "ShrtWithResVa", "ShrtNoResVa"]
_SS_TYPES = {c: F64 for c in _SS_V1} | {"Date": DATE, "Sector33Code": STR}

_SP_V1 = [
    "DisclosedDate",
    "CalculatedDate",
    "Code",
    "ShortSellerName",
    "ShortSellerAddress",
    "DiscretionaryInvestmentContractorName",
    "DiscretionaryInvestmentContractorAddress",
    "InvestmentFundName",
    "ShortPositionsToSharesOutstandingRatio",
    "ShortPositionsInSharesNumber",
    "ShortPositionsInTradingUnitsNumber",
    "CalculationInPreviousReportingDate",
    "ShortPositionsInPreviousReportingRatio",
    "Notes",
]
_SP_V2 = ["DiscDate", "CalcDate", "Code", "SSName", "SSAddr", "DICName", "DICAddr", "FundName", "ShrtPosToSO"]
_SP_V2 += ["ShrtPosShares", "ShrtPosUnits", "PrevRptDate", "PrevRptRatio", "Notes"]
_SP_TYPES = {c: STR for c in _SP_V1} | {"DisclosedDate": DATE, "CalculatedDate": DATE}
_SP_TYPES |= {"CalculationInPreviousReportingDate": DATE}
_SP_TYPES |= {c: F64 for c in _SP_V1[8:11]} | {"ShortPositionsInPreviousReportingRatio": F64}

_ANN_V1 = ["Date", "Code", "CompanyName", "FiscalYear", "SectorName", "FiscalQuarter", "Section"]
_ANN_V2 = ["Date", "Code", "CoName", "FY", "SectorNm", "FQ", "Section"]


def _endpoint(
    v1_path: str,
    v2_path: str,
    response_key: str,
    v1: list[str],
    v2: list[str],
    types: dict[str, pl.DataType],
    key: tuple[str, ...],
    date_column: str,
    nullable_key: tuple[str, ...] = (),
) -> Endpoint:
    assert set(types) == set(v1), v1_path
    return Endpoint(
        endpoint_id=endpoint_id_of(v1_path),
        v1_path=v1_path,
        v2_path=v2_path,
        response_key=response_key,
        columns={c: types[c] for c in v1},
        key=key,
        date_column=date_column,
        v2_names=_named(v1, v2),
        nullable_key=nullable_key,
    )


_ALL = [
    _endpoint(
        "/listed/info",
        "/equities/master",
        "info",
        _LISTED_V1,
        _LISTED_V2,
        {c: STR for c in _LISTED_V1} | {"Date": DATE},
        ("Date", "Code"),
        "Date",
    ),
    _endpoint(
        "/prices/daily_quotes",
        "/equities/bars/daily",
        "daily_quotes",
        _PRICE_V1,
        _PRICE_V2,
        _PRICE_TYPES,
        ("Date", "Code"),
        "Date",
    ),
    _endpoint(
        "/indices/topix",
        "/indices/bars/daily/topix",
        "topix",
        ["Date", "Open", "High", "Low", "Close"],
        ["Date", "O", "H", "L", "C"],
        {"Date": DATE, "Open": F64, "High": F64, "Low": F64, "Close": F64},
        ("Date",),
        "Date",
    ),
    _endpoint(
        "/markets/trades_spec",
        "/equities/investor-types",
        "trades_spec",
        _TS_V1,
        _TS_V2,
        _TS_TYPES,
        ("Section", "StartDate", "EndDate", "PublishedDate"),
        "PublishedDate",
    ),
    _endpoint(
        "/fins/statements",
        "/fins/summary",
        "statements",
        _ST_V1,
        _ST_V2,
        _ST_TYPES,
        ("LocalCode", "DisclosureNumber"),
        "DisclosedDate",
    ),
    _endpoint(
        "/fins/announcement",
        "/equities/earnings-calendar",
        "announcement",
        _ANN_V1,
        _ANN_V2,
        {c: STR for c in _ANN_V1} | {"Date": DATE},
        ("Date", "Code"),
        "Date",
        nullable_key=("Date",),
    ),
    _endpoint(
        "/markets/weekly_margin_interest",
        "/markets/margin-interest",
        "weekly_margin_interest",
        _WM_V1,
        _WM_V2,
        _WM_TYPES,
        ("Date", "Code"),
        "Date",
    ),
    _endpoint(
        "/markets/daily_margin_interest",
        "/markets/margin-alert",
        "daily_margin_interest",
        _DM_V1,
        _DM_V2,
        _DM_TYPES,
        ("Code", "ApplicationDate", "PublishedDate"),
        "PublishedDate",
    ),
    _endpoint(
        "/markets/short_selling",
        "/markets/short-ratio",
        "short_selling",
        _SS_V1,
        _SS_V2,
        _SS_TYPES,
        ("Date", "Sector33Code"),
        "Date",
    ),
    _endpoint(
        "/markets/short_selling_positions",
        "/markets/short-sale-report",
        "short_selling_positions",
        _SP_V1,
        _SP_V2,
        _SP_TYPES,
        (
            "Code",
            "CalculatedDate",
            "DisclosedDate",
            "ShortSellerName",
            "DiscretionaryInvestmentContractorName",
            "InvestmentFundName",
        ),
        "DisclosedDate",
    ),
    _endpoint(
        "/markets/trading_calendar",
        "/markets/calendar",
        "trading_calendar",
        ["Date", "HolidayDivision"],
        ["Date", "HolDiv"],
        {"Date": DATE, "HolidayDivision": STR},
        ("Date",),
        "Date",
    ),
]

ENDPOINTS: dict[str, Endpoint] = {e.endpoint_id: e for e in _ALL}


def v2_to_v1(endpoint_id: str, names: list[str]) -> dict[str, str]:
    """Rename map for a v2 frame's columns: known short names -> long v1 names (unknown ones left out)."""
    mapping = ENDPOINTS[endpoint_id].v2_names
    return {n: mapping[n] for n in names if n in mapping}
