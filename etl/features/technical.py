"""Group 4.3 technical indicators (FEATURES.md §3, §4.3): TA-Lib conventions on adjusted OHLC.

The building blocks (`rsi`, `bollinger`, `atr`, `adx`, `stoch_k`) take [T, n] arrays so the market group
reuses them on the TOPIX series. Recursions skip null rows (bar k = k-th non-null value).
"""

from __future__ import annotations

from typing import Any

from etl import ops
from etl.features.registry import FeatureContext, feature

EPS = 1e-12


def rsi(close: Any, n: int) -> Any:
    """Wilder RSI_n (§3.3); 50 when there is no movement (AG + AL = 0) [D8]."""
    xp = ops.array_namespace(close)
    d = close - ops.prev_valid(close)
    ag = ops.wilder(xp.maximum(d, 0.0), n)
    al = ops.wilder(xp.maximum(-d, 0.0), n)
    tot = ag + al
    return xp.where(tot == 0, 50.0, 100.0 * ag / xp.where(tot == 0, 1.0, tot))


def macd(close: Any) -> tuple[Any, Any, Any]:
    """(line, signal, histogram) of MACD(12, 26, 9) in price units (§3.5)."""
    line = ops.ema(close, 12) - ops.ema(close, 26)
    sig = ops.ema(line, 9)
    return line, sig, line - sig


def bollinger(close: Any, w: int = 20, k: float = 2.0) -> dict[str, Any]:
    """Bands (w, k) with population std [D5]; on a flat window sd = 0 and %B = 0.5 (§3)."""
    xp = ops.array_namespace(close)
    mid = ops.rolling_mean(close, w, w)
    sd = ops.rolling_std(close, w, w, ddof=0)
    up, lo = mid + k * sd, mid - k * sd
    flat = sd == 0  # exact for a flat window (block-combined moments leave no residue)
    pct = xp.where(flat, 0.5, (close - lo) / (up - lo + EPS))
    return {"mid": mid, "upper": up, "lower": lo, "pct": pct}


def true_range(high: Any, low: Any, close: Any) -> Any:
    """TR_k = max(H - L, |H - C_{k-1}|, |L - C_{k-1}|) for k >= 2 (NaN on bar 1)."""
    xp = ops.array_namespace(close)
    pc = ops.prev_valid(close)
    return xp.maximum(xp.maximum(high - low, xp.abs(high - pc)), xp.abs(low - pc))


def atr(high: Any, low: Any, close: Any, n: int = 14) -> Any:
    """Wilder ATR_n (§3.6), first at bar n + 1."""
    return ops.wilder(true_range(high, low, close), n)


def adx(high: Any, low: Any, close: Any, n: int = 14) -> Any:
    """ADX_n with TA-Lib seeding (§3.7): DI from bar n + 1, ADX first at bar 2n."""
    xp = ops.array_namespace(close)
    up = high - ops.prev_valid(high)
    dn = ops.prev_valid(low) - low
    pdm = xp.where((up > dn) & (up > 0), up, 0.0)
    mdm = xp.where((dn > up) & (dn > 0), dn, 0.0)
    tr = true_range(high, low, close)
    pdm = xp.where(xp.isnan(tr), xp.nan, pdm)
    mdm = xp.where(xp.isnan(tr), xp.nan, mdm)
    decay = (n - 1.0) / n

    def smooth(x: Any) -> Any:
        s = ops.seeded_recursion(x, n - 1, decay, 1.0, 1.0)
        # the seed sum of n - 1 terms is not itself a DI value: DI starts one bar later
        cnt = xp.cumsum(~xp.isnan(x), axis=0)
        return xp.where(cnt >= n, s, xp.nan)

    s_tr = smooth(tr)
    s_tr_safe = xp.where(s_tr == 0, 1.0, s_tr)
    pdi = 100.0 * smooth(pdm) / s_tr_safe
    mdi = 100.0 * smooth(mdm) / s_tr_safe
    tot = pdi + mdi
    dx = xp.where(tot == 0, 0.0, 100.0 * xp.abs(pdi - mdi) / xp.where(tot == 0, 1.0, tot))
    return ops.wilder(dx, n)


def stoch_k(high: Any, low: Any, close: Any, n: int = 14) -> Any:
    """Fast %K over n rows, mp n; 50 on a zero range [D8]."""
    xp = ops.array_namespace(close)
    hh = ops.rolling_max(high, n, n)
    ll = ops.rolling_min(low, n, n)
    rng = hh - ll
    return xp.where(rng == 0, 50.0, 100.0 * (close - ll) / xp.where(rng == 0, 1.0, rng))


def _ohlc(ctx: FeatureContext) -> tuple[Any, Any, Any]:
    return ctx.panel("High"), ctx.panel("Low"), ctx.panel("Close")


@feature("rsi_2", group="technical")
def _rsi_2(ctx: FeatureContext) -> Any:
    return rsi(ctx.panel("Close"), 2)


@feature("rsi_14", group="technical")
def _rsi_14(ctx: FeatureContext) -> Any:
    return rsi(ctx.panel("Close"), 14)


@feature("rsi_delta", group="technical")
def _rsi_delta(ctx: FeatureContext) -> Any:
    return ctx["rsi_14"] - ops.lag(ctx["rsi_14"], 1)


def _macd(ctx: FeatureContext) -> tuple[Any, Any, Any]:
    return ctx.cached("macd", lambda: macd(ctx.panel("Close")))


@feature("macd", group="technical")
def _macd_line(ctx: FeatureContext) -> Any:
    return _macd(ctx)[0] / ctx.panel("Close")


@feature("macd_signal", group="technical")
def _macd_signal(ctx: FeatureContext) -> Any:
    return _macd(ctx)[1] / ctx.panel("Close")


@feature("macd_histogram", group="technical")
def _macd_hist(ctx: FeatureContext) -> Any:
    return _macd(ctx)[2] / ctx.panel("Close")


@feature("macd_hist_slope", group="technical")
def _macd_hist_slope(ctx: FeatureContext) -> Any:
    return ctx["macd_histogram"] - ops.lag(ctx["macd_histogram"], 1)


def _bb(ctx: FeatureContext) -> dict[str, Any]:
    return ctx.cached("bollinger", lambda: bollinger(ctx.panel("Close")))


@feature("bb_pct_b", group="technical")
def _bb_pct_b(ctx: FeatureContext) -> Any:
    return ctx.xp.clip(_bb(ctx)["pct"], 0.0, 1.0)


@feature("bb_position", group="technical")
def _bb_position(ctx: FeatureContext) -> Any:
    return _bb(ctx)["pct"]


@feature("bb_bw", group="technical")
def _bb_bw(ctx: FeatureContext) -> Any:
    b = _bb(ctx)
    return (b["upper"] - b["lower"]) / (b["mid"] + ctx.eps)


@feature("bb_width", group="technical")
def _bb_width(ctx: FeatureContext) -> Any:
    b = _bb(ctx)
    return (b["upper"] - b["lower"]) / (ctx.panel("Close") + ctx.eps)


@feature("atr_14", group="technical")
def _atr_14(ctx: FeatureContext) -> Any:
    return atr(*_ohlc(ctx), 14)


@feature("natr_14", group="technical")
def _natr_14(ctx: FeatureContext) -> Any:
    return ctx["atr_14"] / (ctx.panel("Close") + ctx.eps)


@feature("adx_14", group="technical")
def _adx_14(ctx: FeatureContext) -> Any:
    return adx(*_ohlc(ctx), 14)


@feature("stoch_k", group="technical")
def _stoch_k(ctx: FeatureContext) -> Any:
    return stoch_k(*_ohlc(ctx), 14)


@feature("rsi_vol_interact", group="technical")
def _rsi_vol(ctx: FeatureContext) -> Any:
    return ctx["rsi_14"] * ctx["volatility_20d"]


@feature("vol_confirmed_mom", group="technical")
def _vol_confirmed_mom(ctx: FeatureContext) -> Any:
    return ctx["returns_5d"] * ctx["volume_ratio_20"]
