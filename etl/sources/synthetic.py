"""The built-in synthetic Japanese market: writes a raw store (docs/raw_store.md) plus `oracle.parquet`.

`generate(cfg, out)` draws a universe (etl/sources/synth_universe.py), an earnings calendar
(synth_fins.py), weekly investor flows, returns from a factor model with planted signals (synth_returns.py),
then prices and every endpoint table, and writes them. Same config and seed -> byte-identical files.
See docs/synthetic.md for what is planted and how strong it is.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from etl.config import GraphConfig
from etl.errors import GogookuError
from etl.files import write_atomic
from etl.panels.calendar import OUTAGE_DAYS, business_days, trading_calendar
from etl.sources import raw_store, synth_fins, synth_recovery
from etl.sources.schema import ENDPOINTS, PUBLISH_REASONS, TRADES_SPEC_GROUPS
from etl.sources.synth_returns import FLOW_PHI, HORIZONS, Flows, Returns, Strengths, ar1, simulate
from etl.sources.synth_universe import (
    MARGIN_NAMES,
    MARKET_NAMES,
    RESTRUCTURING,
    SECTOR17_NAMES,
    SECTOR33,
    Universe,
    build_universe,
    lookup,
)

ORACLE_COLUMNS = [f"expected_return_{h}d" for h in HORIZONS]
PRE_SECTIONS = ["TSE1st", "TSE2nd", "TSEMothers", "TSEJASDAQ"]
POST_SECTIONS = ["TSEPrime", "TSEStandard", "TSEGrowth"]
SLOT_OF_MARKET = {"0101": 0, "0102": 1, "0104": 2, "0106": 3, "0107": 3, "0111": 0, "0112": 1, "0113": 2}
# share of each investor group in a section's gross trading (Proprietary + the ten Brokerage groups = 1)
GROUP_SHARE = {
    "Proprietary": 0.15,
    "Individuals": 0.20,
    "Foreigners": 0.56,
    "SecuritiesCos": 0.005,
    "InvestmentTrusts": 0.02,
    "BusinessCos": 0.015,
    "OtherCos": 0.003,
    "InsuranceCos": 0.002,
    "CityBKsRegionalBKsEtc": 0.002,
    "TrustBanks": 0.04,
    "OtherFinancialInstitutions": 0.003,
}
HOLDERS = [
    ("Aoba Ridge Capital LLP", "London, United Kingdom"),
    ("Kestrel Point Partners LP", "George Town, Cayman Islands"),
    ("Northwind Absolute Return Fund", "Dublin, Ireland"),
    ("Sumida Bay Asset Management", "東京都中央区"),
    ("Halcyon Crest Investors", "New York, United States"),
    ("Morningside Delta Master Fund", "George Town, Cayman Islands"),
    ("Tsukishima Quant Partners", "東京都港区"),
    ("Granite Harbor Capital", "Boston, United States"),
    ("Lumen Arc Global Macro", "Singapore"),
    ("Shirakawa Long Short Fund", "東京都千代田区"),
    ("Blue Heron Opportunities", "Hamilton, Bermuda"),
    ("Crescent Vale Advisors", "Hong Kong"),
]
TICKS_STANDARD = [(3000, 1), (5000, 5), (30000, 10), (50000, 50), (300000, 100), (np.inf, 1000)]
TICKS_TOPIX100 = [(1000, 0.1), (3000, 0.5), (10000, 1), (30000, 5), (100000, 10), (np.inf, 50)]
LIMITS = [(100, 30), (200, 50), (500, 80), (700, 100), (1000, 150), (1500, 300), (2000, 400), (3000, 500)]
LIMITS += [(5000, 700), (7000, 1000), (10000, 1500), (15000, 3000), (20000, 4000), (30000, 5000)]
LIMITS += [(50000, 7000), (70000, 10000), (100000, 15000), (np.inf, 30000)]


@dataclass
class Market:
    """What the generator drew, for tests and the oracle: arrays are [T sessions, N codes] in code order;
    prices are raw (unadjusted), NaN where the code is not listed or did not trade."""

    sessions: np.ndarray  # datetime64[D], J-Quants business days (the outage day included)
    uni: Universe
    ret: Returns
    listed: np.ndarray
    halted: np.ndarray  # no trade (the whole outage day included)
    adj_factor: np.ndarray
    shares_mult: np.ndarray  # cumulative split multiplier K_t (raw shares per start share)
    raw_shares: np.ndarray  # shares outstanding in the units of each day (splits applied)
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    value: np.ndarray  # TurnoverValue, yen
    up: np.ndarray  # close at the upper price limit
    down: np.ndarray
    topix_member: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # [N]
    topix_ohlc: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  # [T, 4]


def take(values: np.ndarray, idx: np.ndarray) -> pl.Series:
    """values[idx] as a Polars String series, gathered in Polars (no per-row Python string objects)."""
    return pl.Series(np.asarray(values).tolist(), dtype=pl.String).gather(idx)


def flag(mask: np.ndarray) -> pl.Series:
    """A boolean array as the API's "0"/"1" strings."""
    return pl.Series(mask).cast(pl.UInt8).cast(pl.String)


def strengths_of(cfg: Any) -> Strengths:
    return Strengths(
        reversal=cfg.reversal_bp,
        sector_momentum=cfg.sector_momentum_bp,
        lead_lag=cfg.lead_lag_bp,
        pead=cfg.pead_bp,
        flow=cfg.flow_bp,
        squeeze=cfg.squeeze_bp,
    )


def _ticks(price: np.ndarray, fine: np.ndarray) -> np.ndarray:
    std = np.select([price <= b for b, _ in TICKS_STANDARD], [t for _, t in TICKS_STANDARD])
    top = np.select([price <= b for b, _ in TICKS_TOPIX100], [t for _, t in TICKS_TOPIX100])
    return np.where(fine, top, std)


def _round_tick(price: np.ndarray, fine: np.ndarray) -> np.ndarray:
    """Round to the exchange tick; monotone in price, so High >= Close etc. survive rounding."""
    tick = _ticks(price, fine)
    return np.round(np.round(price / tick) * tick, 1)


def _ffill(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Carry the last valid row forward along axis 0 (NaN before the first)."""
    idx = np.where(valid, np.arange(values.shape[0])[:, None], -1)
    np.maximum.accumulate(idx, axis=0, out=idx)
    out = values[np.maximum(idx, 0), np.arange(values.shape[1])[None, :]]
    return np.where(idx >= 0, out, np.nan)


def _weeks(sessions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mon-Fri windows: (first session index, last session index) of each calendar week with sessions."""
    monday = sessions - ((sessions.astype("datetime64[D]").view("int64") - 4) % 7).astype("timedelta64[D]")
    change = np.flatnonzero(np.diff(monday.view("int64"))) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change - 1, [len(sessions) - 1]])
    return starts, ends


class _Progress:
    def __init__(self, callback: Callable[[str], None] | None):
        self.callback = callback

    def __call__(self, step: str) -> None:
        if self.callback is not None:
            self.callback(step)


STEPS = 14  # calls to the progress callback in `generate`


def generate(cfg: Any, out: str | Path, progress: Callable[[str], None] | None = None) -> Market:
    """Generate the market for `cfg` (a train.config.SynthConfig) and write it under `out`."""
    step = _Progress(progress)
    start, end = dt.date.fromisoformat(cfg.start), dt.date.fromisoformat(cfg.end)
    sessions = business_days(start, end)
    T = len(sessions)
    if T < 60:
        raise GogookuError(f"synth period {cfg.start}..{cfg.end} has {T} sessions; at least 60 are needed")
    out = _prepare_out(Path(out))
    seeds = np.random.SeedSequence(cfg.seed).spawn(8)
    rng_uni, rng_fins, rng_flow, rng_fac, rng_idio, rng_px, rng_tab, rng_margin = (
        np.random.default_rng(s) for s in seeds
    )
    restructure_idx = int(np.searchsorted(sessions, np.datetime64(RESTRUCTURING, "D")))
    post = np.arange(T) >= restructure_idx
    step("universe")
    uni = build_universe(rng_uni, cfg.stocks, T, restructure_idx)
    listed = uni.listed(T)

    step("earnings calendar")
    business = business_days(start - dt.timedelta(days=400), end + dt.timedelta(days=30))
    disclosures, plan = synth_fins.schedule(rng_fins, uni, sessions, business, start, end)

    step("investor flows")
    week_start, week_end = _weeks(sessions)
    W = len(week_start)
    flow_score = np.empty((W, 4))
    flow_score[0] = rng_flow.normal(0, 1, 4)
    innov = rng_flow.normal(0, np.sqrt(1 - FLOW_PHI**2), (W, 4))
    for w in range(1, W):  # weekly AR(1): W ~ 260 per 5 years, a scalar-sized recursion
        flow_score[w] = FLOW_PHI * flow_score[w - 1] + innov[w]
    pub_idx = week_end + 4  # published on the 4th business day after the week (normally Thursday)
    eff_idx = pub_idx + 1  # public from the next session (18:00 publication)
    slot_pre = lookup(uni.market_pre, SLOT_OF_MARKET, -1).astype(np.int64)
    slot_post = lookup(uni.market_post, SLOT_OF_MARKET, -1).astype(np.int64)
    slot = np.where(post[:, None], slot_post[None, :], slot_pre[None, :])  # [T, N] section slot
    flows = Flows(effective=eff_idx, score=flow_score, slot=slot)

    step("returns")
    ret = simulate(
        rng_fac,
        rng_idio,
        uni,
        T,
        disclosures.events(),
        flows,
        strengths_of(cfg),
        cfg.idio_dof,
        cfg.peer_spillover,
    )

    step("prices")
    m = _prices(rng_px, uni, ret, sessions, listed, cfg.halt_rate)
    _write_quotes(out, m)
    _topix(m)

    step("listed info")
    raw_store.write_endpoint(out, "listed_info", _listed_info(uni, sessions, listed, post, restructure_idx))
    raw_store.write_endpoint(out, "markets_trading_calendar", trading_calendar(start, end))

    step("topix")
    raw_store.write_endpoint(out, "indices_topix", _topix_frame(m))

    step("statements")
    k = np.searchsorted(sessions, disclosures.period_end, side="right") - 1
    shares_at = m.raw_shares[np.clip(k, 0, T - 1), disclosures.code]
    stm = synth_fins.statements_frame(disclosures, plan, uni, shares_at)
    raw_store.write_endpoint(out, "fins_statements", stm)
    raw_store.write_endpoint(out, "fins_announcement", synth_fins.announcement_frame(disclosures, uni))

    step("trades_spec")
    turnover = np.where(m.halted | ~listed, 0.0, np.nan_to_num(m.value))
    raw_store.write_endpoint(
        out,
        "markets_trades_spec",
        _trades_spec(
            rng_tab, sessions, week_start, week_end, pub_idx, flow_score, turnover, slot, ret.market
        ),
    )

    step("margin")
    long_ratio = np.exp(ar1(rng_margin, (T, uni.n), 0.98, 0.4)) * 0.012
    weekly_mask = (week_end - week_start) >= 2  # weeks with <= 2 business days are skipped
    raw_store.write_endpoint(
        out, "markets_weekly_margin_interest", _weekly_margin(m, week_end[weekly_mask], long_ratio)
    )
    raw_store.write_endpoint(out, "markets_daily_margin_interest", _daily_margin(rng_margin, m, long_ratio))

    step("short selling")
    raw_store.write_endpoint(out, "markets_short_selling", _short_selling(rng_tab, m, turnover))
    raw_store.write_endpoint(out, "markets_short_selling_positions", _short_positions(rng_tab, m, week_end))

    step("oracle")
    _write_oracle(out, m)
    step("graph recovery")
    recovered = _graph_recovery(m)
    meta = {
        "generator": "gogooku synthetic market",
        "config": asdict(cfg) if hasattr(cfg, "__dataclass_fields__") else dict(vars(cfg)),
        "sessions": T,
        "codes": int(uni.n),
        "etfs": int(uni.is_etf.sum()),
        "listings_in_period": int((uni.first > 0).sum()),
        "delistings_in_period": int((uni.last < T - 1).sum()),
        "splits": int((m.adj_factor != 1.0).sum()),
        "statements": int(stm.height),
        "horizons": list(HORIZONS),
        "outage_days": [d.isoformat() for d in OUTAGE_DAYS if start <= d <= end],
        "graph_recovery": recovered,
    }
    write_atomic(
        out / "synthetic.json", json.dumps(meta, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    )
    step("done")
    return m


def _prepare_out(out: Path) -> Path:
    """Empty a previous synthetic store in `out` (stale parts would mix with the new ones); refuse to touch a
    raw store that synth did not write (e.g. a J-Quants fetch)."""
    present = raw_store.available_endpoints(out) if out.is_dir() else []
    if present and not (out / "synthetic.json").is_file():
        raise GogookuError(
            f"{out} holds a raw store not written by synth ({present[0]}, ...); choose another --out"
        )
    for eid in present:
        for part in raw_store.part_files(out, eid):
            part.unlink()
    for name in ("oracle.parquet", "synthetic.json"):
        (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _prices(
    rng: np.random.Generator,
    uni: Universe,
    ret: Returns,
    sessions: np.ndarray,
    listed: np.ndarray,
    halt_rate: float,
) -> Market:
    T, N = ret.x.shape
    econ = uni.price0[None, :] * np.exp(np.cumsum(ret.x, axis=0))  # split-free price path

    # halts: thin small caps miss sessions now and then; nothing trades on the outage day
    p_halt = np.where(uni.size_z < -0.7, halt_rate * 5.0, halt_rate * 0.3)
    halted = rng.random((T, N)) < p_halt[None, :]
    outage = np.isin(sessions, np.array(OUTAGE_DAYS, dtype="datetime64[D]"))
    halted[outage, :] = True

    # splits: about 1.5% of stocks a year, more likely for expensive ones; ex-date rows carry the factor
    adj = np.ones((T, N))
    years = T / 245.0
    expensive = np.argsort(np.argsort(-uni.price0)) < 0.4 * N
    p_split = np.where(expensive, 0.03, 0.005) * years
    who = np.flatnonzero((rng.random(N) < p_split) & ~uni.is_etf)
    ratios = rng.choice(
        np.array([0.5, 1 / 3, 0.2, 0.1, 2.0, 5.0]), size=len(who), p=[0.6, 0.1, 0.12, 0.06, 0.07, 0.05]
    )
    lo = np.maximum(uni.first[who] + 1, 1)
    hi = np.maximum(uni.last[who], lo + 1)
    when = (lo + rng.random(len(who)) * (hi - lo)).astype(np.int64).clip(0, T - 1)
    ok = ~halted[when, who] & (when > uni.first[who])
    adj[when[ok], who[ok]] = ratios[ok]
    shares_mult = np.cumprod(1.0 / adj, axis=0)  # K_t: shares per start-share
    fine = np.isin(uni.scale, ["TOPIX Core30", "TOPIX Large70"])[None, :]

    close_u = econ / shares_mult
    prev_econ = econ * np.exp(-ret.x)
    gap = np.exp(0.35 * ret.x + 0.15 * ret.vol * rng.normal(0, 1, (T, N)))
    open_u = prev_econ * gap / shares_mult
    wick = 0.45 * ret.vol
    high_u = np.maximum(open_u, close_u) * np.exp(np.abs(rng.normal(0, 1, (T, N))) * wick)
    low_u = np.minimum(open_u, close_u) * np.exp(-np.abs(rng.normal(0, 1, (T, N))) * wick)
    del prev_econ, gap
    o, h, lo_, c = (_round_tick(a, fine) for a in (open_u, high_u, low_u, close_u))
    del open_u, high_u, low_u, close_u

    # daily price limits around the previous close (adjusted on a split's ex-date)
    valid = listed & ~halted
    prev_close = np.vstack([np.full((1, N), np.nan), _ffill(np.where(valid, c, np.nan), valid)[:-1]]) * adj
    base = np.where(np.isnan(prev_close), c, prev_close)
    width = np.select([base < b for b, _ in LIMITS], [w for _, w in LIMITS])
    upper, lower = base + width, np.maximum(base - width, 1.0)
    up_hit, down_hit = c >= upper, c <= lower
    o, h, lo_, c = (np.clip(a, lower, upper) for a in (o, h, lo_, c))

    # volume: persistent, rises with |return|; lots of 100 shares
    turn = np.exp(rng.normal(np.log(0.004), 0.5, N))
    vz = ar1(rng, (T, N), 0.9, 0.35)
    surprise = np.abs(ret.x) / ret.vol - 0.8
    econ_vol = (
        uni.shares[None, :] * turn[None, :] * np.exp(vz + 0.45 * surprise + 0.15 * rng.normal(0, 1, (T, N)))
    )
    volume = np.maximum(np.round(econ_vol * shares_mult / 100.0), 1.0) * 100.0
    vwap = np.clip((o + h + lo_ + c) / 4.0 * np.exp(0.002 * rng.normal(0, 1, (T, N))), lo_, h)
    value = np.round(volume * vwap)

    nan = np.where(valid, 1.0, np.nan)
    return Market(
        sessions=sessions,
        uni=uni,
        ret=ret,
        listed=listed,
        halted=halted,
        adj_factor=adj,
        shares_mult=shares_mult,
        raw_shares=uni.shares[None, :] * shares_mult,
        open=o * nan,
        high=h * nan,
        low=lo_ * nan,
        close=c * nan,
        volume=volume * nan,
        value=value * nan,
        up=up_hit & valid,
        down=down_hit & valid,
    )


def _to_adjusted(m: Market, t: Any, i: Any) -> np.ndarray:
    """Raw -> Adjustment* multiplier at (t, i): the product of the adjustment factors after t."""
    return m.shares_mult[t, i] / m.shares_mult[-1, i]


def _adjust(raw_price: np.ndarray, to_adj: np.ndarray) -> np.ndarray:
    """An Adjustment* price as J-Quants publishes it: raw x later factors, rounded to 0.1 yen."""
    return np.round(raw_price * to_adj, 1)


def _quotes_frame(m: Market, rows: slice) -> pl.DataFrame:
    listed = m.listed[rows]
    t, i = np.nonzero(listed)
    t_abs = t + rows.start
    to_adj = _to_adjusted(m, t_abs, i)
    close = m.close[t_abs, i]

    def col(a: np.ndarray) -> np.ndarray:
        return a[t_abs, i]

    return pl.DataFrame(
        {
            "Date": pl.Series(m.sessions[t_abs]).cast(pl.Date),
            "Code": take(m.uni.codes, i),
            "Open": col(m.open),
            "High": col(m.high),
            "Low": col(m.low),
            "Close": close,
            "UpperLimit": flag(col(m.up)),
            "LowerLimit": flag(col(m.down)),
            "Volume": col(m.volume),
            "TurnoverValue": col(m.value),
            "AdjustmentFactor": m.adj_factor[t_abs, i],
            "AdjustmentOpen": _adjust(col(m.open), to_adj),
            "AdjustmentHigh": _adjust(col(m.high), to_adj),
            "AdjustmentLow": _adjust(col(m.low), to_adj),
            "AdjustmentClose": _adjust(close, to_adj),
            "AdjustmentVolume": np.round(col(m.volume) / to_adj, 1),
        },
        nan_to_null=True,
    )


def _write_quotes(out: Path, m: Market) -> None:
    """daily_quotes in one part per calendar year (bounded memory for the full market)."""
    years = m.sessions.astype("datetime64[Y]").astype(int) + 1970
    for year in np.unique(years):
        idx = np.flatnonzero(years == year)
        frame = _quotes_frame(m, slice(int(idx[0]), int(idx[-1]) + 1))
        raw_store.write_endpoint(out, "prices_daily_quotes", frame, part=str(year))


def _topix(m: Market) -> None:
    """TOPIX: the cap-weighted index of the former 1st-section stocks (kept through the restructuring)."""
    uni = m.uni
    member = (uni.market_pre == "0101") & ~uni.is_etf
    valid = m.listed & ~m.halted
    close = _ffill(np.where(valid, m.close, np.nan), valid)
    prev = np.vstack([np.full((1, uni.n), np.nan), close[:-1]])
    base = prev * m.adj_factor  # yesterday's close in today's share units
    cap = prev * np.vstack([np.full((1, uni.n), np.nan), m.raw_shares[:-1]])
    w = np.where(member[None, :] & m.listed & np.isfinite(cap), cap, 0.0)

    def idx_ret(price: np.ndarray) -> np.ndarray:
        p = np.where(valid, price, close)
        r = np.where(w > 0, p / base - 1.0, 0.0)
        return (w * np.nan_to_num(r)).sum(axis=1) / np.maximum(w.sum(axis=1), 1e-300)

    level = 1500.0 * np.cumprod(1.0 + idx_ret(close))
    prev_level = np.concatenate([[1500.0], level[:-1]])
    o = prev_level * (1.0 + idx_ret(m.open))
    hi_w = prev_level * (1.0 + idx_ret(m.high))
    lo_w = prev_level * (1.0 + idx_ret(m.low))
    top, bottom = np.maximum(o, level), np.minimum(o, level)
    high = top + 0.5 * np.maximum(hi_w - top, 0.0)
    low = bottom - 0.5 * np.maximum(bottom - lo_w, 0.0)
    outage = np.isin(m.sessions, np.array(OUTAGE_DAYS, dtype="datetime64[D]"))
    o, high, low = (np.where(outage, prev_level, a) for a in (o, high, low))  # the outage repeats the close
    m.topix_member = member
    m.topix_ohlc = np.round(np.stack([o, high, low, level], axis=1), 2)


def _topix_frame(m: Market) -> pl.DataFrame:
    ohlc = m.topix_ohlc
    return pl.DataFrame(
        {
            "Date": pl.Series(m.sessions).cast(pl.Date),
            "Open": ohlc[:, 0],
            "High": ohlc[:, 1],
            "Low": ohlc[:, 2],
            "Close": ohlc[:, 3],
        }
    )


def _listed_info(
    uni: Universe, sessions: np.ndarray, listed: np.ndarray, post: np.ndarray, restructure_idx: int
) -> pl.DataFrame:
    """Snapshots on the first session of each month and on every session the code set or a market changes
    (the equivalent of daily snapshots that FEATURES.md §1.2 allows)."""
    T = len(sessions)
    months = sessions.astype("datetime64[M]")
    snap = np.zeros(T, dtype=bool)
    snap[0] = True
    snap[1:] |= months[1:] != months[:-1]
    snap[np.clip(uni.first, 0, T - 1)] = True
    snap[np.clip(uni.last + 1, 0, T - 1)] = True
    if restructure_idx < T:
        snap[restructure_idx] = True
    t, i = np.nonzero(listed & snap[:, None])
    market_pre = take(uni.market_pre, i)
    market = pl.select(
        pl.when(pl.Series(post[t])).then(take(uni.market_post, i)).otherwise(market_pre)
    ).to_series()
    s17 = lookup(uni.sector33, {k: v[1] for k, v in SECTOR33.items()}, "99")
    s33_name = lookup(uni.sector33, {k: v[0] for k, v in SECTOR33.items()}, "その他")
    return pl.DataFrame(
        {
            "Date": pl.Series(sessions[t]).cast(pl.Date),
            "Code": take(uni.codes, i),
            "CompanyName": take(uni.name_ja, i),
            "CompanyNameEnglish": take(uni.name_en, i),
            "Sector17Code": take(s17, i),
            "Sector17CodeName": take(lookup(s17, SECTOR17_NAMES, ""), i),
            "Sector33Code": take(uni.sector33, i),
            "Sector33CodeName": take(s33_name, i),
            "ScaleCategory": take(uni.scale, i),
            "MarketCode": market,
            "MarketCodeName": market.replace_strict(MARKET_NAMES, return_dtype=pl.String),
            "MarginCode": take(uni.margin_code, i),
            "MarginCodeName": take(lookup(uni.margin_code, MARGIN_NAMES, ""), i),
        }
    )


def _trades_spec(
    rng: np.random.Generator,
    sessions: np.ndarray,
    week_start: np.ndarray,
    week_end: np.ndarray,
    pub_idx: np.ndarray,
    flow_score: np.ndarray,
    turnover: np.ndarray,
    slot: np.ndarray,
    mret: np.ndarray,
) -> pl.DataFrame:
    """Weekly investor-type flows per Section in thousand yen, with the API's exact identities."""
    T = len(sessions)
    keep = pub_idx < T  # only weeks already published by the end of the period
    rows: list[dict[str, Any]] = []  # one per (week, section): a few hundred a year
    per_slot = np.stack([np.where(slot == s, turnover, 0.0).sum(axis=1) for s in range(4)], axis=1)  # [T, 4]
    cum_turn = np.vstack([np.zeros((1, 4)), np.cumsum(per_slot, axis=0)])
    cum_m = np.concatenate([[0.0], np.cumsum(mret)])
    restructure = np.datetime64(RESTRUCTURING, "D")
    for w in np.flatnonzero(keep):
        a, b = week_start[w], week_end[w]
        gross_slot = (cum_turn[b + 1] - cum_turn[a]) / 1000.0  # thousand yen
        week_m = (cum_m[b + 1] - cum_m[a]) / 0.025
        names = POST_SECTIONS if sessions[b] >= restructure else PRE_SECTIONS
        sections = list(enumerate(names)) + [(-1, "TokyoNagoya")]
        for s, name in sections:
            gross = gross_slot.sum() * 1.001 if s < 0 else gross_slot[s]
            fz = flow_score[w].mean() if s < 0 else flow_score[w, s]
            if gross <= 0:
                continue
            rows.append(_flow_row(rng, sessions, a, b, pub_idx[w], name, gross, fz, week_m))
    frame = pl.DataFrame(rows, schema=ENDPOINTS["markets_trades_spec"].schema)
    # corrections (kept since 2023-04-03): ~5% of rows republished a week later with slightly different values
    pub = frame["PublishedDate"].to_numpy().astype("datetime64[D]")
    eligible = np.flatnonzero(pub >= np.datetime64("2023-04-03"))
    corr = eligible[rng.random(len(eligible)) < 0.05]
    fixes = []
    for r in corr:
        p = int(np.searchsorted(sessions, pub[r])) + 5
        if p >= T:
            continue
        row = frame.row(int(r), named=True)
        scale = 1.0 + 0.002 * rng.normal(0, 1, len(TRADES_SPEC_GROUPS))
        fixes.append(_recombine(row, scale, sessions[p].item()))
    if fixes:
        frame = pl.concat([frame, pl.DataFrame(fixes, schema=frame.schema)])
    return frame.sort("PublishedDate", "Section", "StartDate")


def _flow_row(rng, sessions, a, b, p, section, gross, fz, week_m) -> dict[str, Any]:
    amounts: dict[str, tuple[float, float]] = {}
    bal_f = gross * GROUP_SHARE["Foreigners"] * (0.03 * fz + 0.01 * week_m + 0.003 * rng.normal())
    for g, share in GROUP_SHARE.items():
        g_gross = gross * share
        if g == "Foreigners":
            bal = bal_f
        elif g == "Individuals":
            bal = -0.6 * bal_f + 0.01 * g_gross * rng.normal()
        else:
            bal = 0.03 * g_gross * rng.normal()
        amounts[g] = (np.round((g_gross - bal) / 2.0), np.round((g_gross + bal) / 2.0))
    row: dict[str, Any] = {
        "PublishedDate": sessions[p].item(),
        "StartDate": sessions[a].item(),
        "EndDate": sessions[b].item(),
        "Section": section,
    }
    return _fill_groups(row, amounts)


def _fill_groups(row: dict[str, Any], amounts: dict[str, tuple[float, float]]) -> dict[str, Any]:
    brokerage = [g for g in GROUP_SHARE if g != "Proprietary"]
    amounts["Brokerage"] = (sum(amounts[g][0] for g in brokerage), sum(amounts[g][1] for g in brokerage))
    amounts["Total"] = (
        amounts["Proprietary"][0] + amounts["Brokerage"][0],
        amounts["Proprietary"][1] + amounts["Brokerage"][1],
    )
    for g in TRADES_SPEC_GROUPS:
        sales, purchases = amounts[g]
        row[g + "Sales"] = float(sales)
        row[g + "Purchases"] = float(purchases)
        row[g + "Total"] = float(sales + purchases)
        row[g + "Balance"] = float(purchases - sales)
    return row


def _recombine(row: dict[str, Any], scale: np.ndarray, published: dt.date) -> dict[str, Any]:
    amounts = {
        g: (np.round(row[g + "Sales"] * f), np.round(row[g + "Purchases"] * f))
        for g, f in zip(TRADES_SPEC_GROUPS, scale, strict=True)
        if g in GROUP_SHARE
    }
    base = {k: row[k] for k in ("StartDate", "EndDate", "Section")}
    return _fill_groups({"PublishedDate": published, **base}, amounts)


def _margin_balances(
    m: Market, long_ratio: np.ndarray, t: np.ndarray, i: np.ndarray
) -> dict[str, np.ndarray]:
    """Margin balances (shares, lots of 100) at sessions t for codes i; short follows short interest."""
    shares = m.raw_shares[t, i]
    loanable = m.uni.margin_code[i] == "2"
    long_total = np.round(shares * long_ratio[t, i], -2)
    short_total = np.round(shares * m.ret.short_interest[t, i] * np.where(loanable, 0.35, 0.05), -2)
    long_std = np.round(long_total * 0.7, -2)
    short_std = np.where(loanable, np.round(short_total * 0.85, -2), 0.0)
    return {
        "long": long_total,
        "short": short_total,
        "long_std": long_std,
        "long_neg": long_total - long_std,
        "short_std": short_std,
        "short_neg": short_total - short_std,
    }


def _weekly_margin(m: Market, week_dates: np.ndarray, long_ratio: np.ndarray) -> pl.DataFrame:
    sub = m.listed[week_dates]
    w, i = np.nonzero(sub)
    t = week_dates[w]
    b = _margin_balances(m, long_ratio, t, i)
    return pl.DataFrame(
        {
            "Date": pl.Series(m.sessions[t]).cast(pl.Date),
            "Code": take(m.uni.codes, i),
            "ShortMarginTradeVolume": b["short"],
            "LongMarginTradeVolume": b["long"],
            "ShortNegotiableMarginTradeVolume": b["short_neg"],
            "LongNegotiableMarginTradeVolume": b["long_neg"],
            "ShortStandardizedMarginTradeVolume": b["short_std"],
            "LongStandardizedMarginTradeVolume": b["long_std"],
            "IssueType": take(m.uni.margin_code, i),
        }
    )


def _daily_margin(rng: np.random.Generator, m: Market, long_ratio: np.ndarray) -> pl.DataFrame:
    """Daily margin for designated issues: high short interest (TSE daily publication / regulation) and
    random JSF-precaution episodes; published the session after the application date."""
    T, N = m.listed.shape
    si = m.ret.short_interest
    si_flag = si > 0.04
    episode = np.zeros((T, N), dtype=bool)
    chosen = np.flatnonzero(rng.random(N) < 0.04)
    starts = rng.integers(0, max(T - 20, 1), len(chosen))
    lengths = rng.integers(20, 60, len(chosen))
    span = np.arange(T)[:, None]
    episode[:, chosen] = (span >= starts[None, :]) & (span < (starts + lengths)[None, :])
    flagged = (si_flag | episode) & m.listed
    flagged[0] = False
    flagged[1:] &= m.listed[:-1]
    t, i = np.nonzero(flagged)
    app = t - 1
    b = _margin_balances(m, long_ratio, app, i)
    had_prev = flagged[np.maximum(t - 1, 0), i] & (t > 1)
    prev = _margin_balances(m, long_ratio, np.maximum(app - 1, 0), i)

    def change(key: str) -> pl.Series:
        diff = pl.Series(b[key] - prev[key]).cast(pl.String)
        return pl.select(pl.when(pl.Series(had_prev)).then(diff).otherwise(pl.lit("-"))).to_series()

    shares = m.raw_shares[app, i]
    etf = m.uni.is_etf[i]

    def ratio(key: str) -> pl.Series:
        text = pl.Series(np.round(b[key] / shares * 100.0, 2)).cast(pl.String)
        return pl.select(pl.when(pl.Series(etf)).then(pl.lit("*")).otherwise(text)).to_series()

    restricted = si_flag[t, i] & (si[t, i] > 0.06)
    daily_pub = si_flag[t, i] & ~restricted
    precaution = ~si_flag[t, i]
    reasons = {
        "Restricted": restricted,
        "DailyPublication": daily_pub,
        "Monitoring": np.zeros(len(t), dtype=bool),
        "RestrictedByJSF": np.zeros(len(t), dtype=bool),
        "PrecautionByJSF": precaution,
        "UnclearOrSecOnAlert": np.zeros(len(t), dtype=bool),
    }
    data: dict[str, Any] = {
        "PublishedDate": pl.Series(m.sessions[t]).cast(pl.Date),
        "Code": m.uni.codes[i].astype(str),
        "ApplicationDate": pl.Series(m.sessions[app]).cast(pl.Date),
    }
    for r in PUBLISH_REASONS:
        data["PublishReason." + r] = np.where(reasons[r], "1", "0").astype(str)
    long_safe = np.where(b["long"] > 0, b["long"], np.nan)
    data |= {
        "ShortMarginOutstanding": b["short"],
        "DailyChangeShortMarginOutstanding": change("short"),
        "ShortMarginOutstandingListedShareRatio": ratio("short"),
        "LongMarginOutstanding": b["long"],
        "DailyChangeLongMarginOutstanding": change("long"),
        "LongMarginOutstandingListedShareRatio": ratio("long"),
        "ShortLongRatio": np.round(b["short"] / long_safe * 100.0, 2),
        "ShortNegotiableMarginOutstanding": b["short_neg"],
        "DailyChangeShortNegotiableMarginOutstanding": change("short_neg"),
        "ShortStandardizedMarginOutstanding": b["short_std"],
        "DailyChangeShortStandardizedMarginOutstanding": change("short_std"),
        "LongNegotiableMarginOutstanding": b["long_neg"],
        "DailyChangeLongNegotiableMarginOutstanding": change("long_neg"),
        "LongStandardizedMarginOutstanding": b["long_std"],
        "DailyChangeLongStandardizedMarginOutstanding": change("long_std"),
        "TSEMarginBorrowingAndLendingRegulationClassification": np.select(
            [restricted, daily_pub], ["003", "002"], default="001"
        ).astype(str),
    }
    return pl.DataFrame(data, nan_to_null=True).select(
        list(ENDPOINTS["markets_daily_margin_interest"].columns)
    )


def _short_selling(rng: np.random.Generator, m: Market, turnover: np.ndarray) -> pl.DataFrame:
    """Daily short-selling turnover per Sector33 (yen); no rows on the outage day."""
    uni = m.uni
    n_sec = len(SECTOR33)
    onehot = (uni.sector_id[:, None] == np.arange(n_sec)[None, :]).astype(float)
    sec_turn = turnover @ onehot  # [T, 33] segment sums
    level = 0.42 + 0.03 * rng.normal(0, 1, n_sec)
    ratio = np.clip(
        level[None, :] + 0.02 * rng.normal(0, 1, sec_turn.shape) - 2.0 * m.ret.market[:, None], 0.2, 0.65
    )
    t, s = np.nonzero(sec_turn > 0)
    tv, r = sec_turn[t, s], ratio[t, s]
    short = tv * r
    return pl.DataFrame(
        {
            "Date": pl.Series(m.sessions[t]).cast(pl.Date),
            "Sector33Code": np.array(list(SECTOR33))[s].astype(str),
            "SellingExcludingShortSellingTurnoverValue": np.round(tv - short),
            "ShortSellingWithRestrictionsTurnoverValue": np.round(short * 0.85),
            "ShortSellingWithoutRestrictionsTurnoverValue": np.round(short * 0.15),
        }
    )


def _short_positions(rng: np.random.Generator, m: Market, week_end: np.ndarray) -> pl.DataFrame:
    """Reports of short positions >= 0.5% of shares, from three holders per stock, calculated weekly and
    disclosed the next business day; a holder that falls below 0.5% reports once more."""
    uni, T = m.uni, len(m.sessions)
    holders = np.argsort(rng.random((uni.n, len(HOLDERS))), axis=1)[:, :3]  # three distinct holders per code
    fractions = np.array([0.35, 0.2, 0.1])
    weeks = week_end[week_end + 1 < T]
    si = m.ret.short_interest[weeks]  # [W, N]
    listed = m.listed[weeks] & m.listed[np.minimum(weeks + 1, T - 1)] & ~uni.is_etf[None, :]
    frames = []
    for k in range(3):
        pos = np.round(si * fractions[k], 4) * listed
        above = pos >= 0.005
        prev_above = np.vstack([np.zeros((1, uni.n), dtype=bool), above[:-1]])
        report = listed & (above | prev_above)
        w_idx, i = np.nonzero(report)
        # previous report of the same holder: last reporting week before this one
        rep_w = np.where(report, np.arange(len(weeks))[:, None], -1)
        last_rep = np.maximum.accumulate(rep_w, axis=0)
        prev_rep = np.vstack([np.full((1, uni.n), -1), last_rep[:-1]])[w_idx, i]
        calc = weeks[w_idx]
        ratio = pos[w_idx, i]
        shares = np.round(ratio * m.raw_shares[calc, i])
        names = np.array([h[0] for h in HOLDERS])[holders[i, k]]
        address = np.array([h[1] for h in HOLDERS])[holders[i, k]]
        prev_date = np.where(prev_rep >= 0, m.sessions[weeks[np.maximum(prev_rep, 0)]], np.datetime64("NaT"))
        prev_ratio = np.where(prev_rep >= 0, pos[np.maximum(prev_rep, 0), i], np.nan)
        frames.append(
            pl.DataFrame(
                {
                    "DisclosedDate": pl.Series(m.sessions[calc + 1]).cast(pl.Date),
                    "CalculatedDate": pl.Series(m.sessions[calc]).cast(pl.Date),
                    "Code": uni.codes[i].astype(str),
                    "ShortSellerName": names.astype(str),
                    "ShortSellerAddress": address.astype(str),
                    "DiscretionaryInvestmentContractorName": np.full(len(i), "").astype(str),
                    "DiscretionaryInvestmentContractorAddress": np.full(len(i), "").astype(str),
                    "InvestmentFundName": np.full(len(i), "").astype(str),
                    "ShortPositionsToSharesOutstandingRatio": ratio,
                    "ShortPositionsInSharesNumber": shares,
                    "ShortPositionsInTradingUnitsNumber": shares,
                    "CalculationInPreviousReportingDate": pl.Series(prev_date).cast(pl.Date),
                    "ShortPositionsInPreviousReportingRatio": prev_ratio,
                    "Notes": np.full(len(i), "").astype(str),
                },
                nan_to_null=True,
            )
        )
    return pl.concat(frames).sort("DisclosedDate", "Code", "ShortSellerName")


def _graph_recovery(m: Market) -> dict[str, Any]:
    """How much of the hidden peer graph the ETL's correlation graph (default GraphConfig) finds in the
    written prices (synth_recovery.py)."""
    adj_close = _adjust(m.close, _to_adjusted(m, slice(None), slice(None)))  # [T, N] as daily_quotes holds it
    stocks = ~m.uni.is_etf
    _, returns, row_mask = synth_recovery.graph_inputs(m.sessions, adj_close, m.listed, stocks)
    del adj_close
    return synth_recovery.recovery(returns, row_mask, m.ret.peers, stocks, GraphConfig())


def _write_oracle(out: Path, m: Market) -> None:
    """oracle.parquet: (Date, Code, expected_return_{h}d) for listed common stocks on every session."""
    ok = m.listed & ~m.uni.is_etf[None, :]
    t, i = np.nonzero(ok)
    data: dict[str, Any] = {
        "Date": pl.Series(m.sessions[t]).cast(pl.Date),
        "Code": take(m.uni.codes, i),
    }
    for k, name in enumerate(ORACLE_COLUMNS):
        data[name] = m.ret.oracle[k, t, i]
    frame = pl.DataFrame(data)
    write_atomic(
        out / "oracle.parquet", lambda fh: frame.write_parquet(fh, compression="zstd", statistics=True)
    )
