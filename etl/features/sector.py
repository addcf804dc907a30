"""Group 4.6 sector features (FEATURES.md §1.7, §4.6, D13-D17).

Sector cross-sections run over the universe rows of a date whose input is non-null, grouped by the as-of
sector33_id (34 groups: 33 sectors and 9999), with the n >= 3 rule. Per-(date, sector) statistics are [T, 34]
arrays computed once at full width on the root context (`ctx.full`) and gathered back to each chunk's stocks;
only the rank columns keep a full-width [T, N] array. Sector series columns (sec_mom_20 ... sec_vol_20_z) roll
over the [T, 34] series of sector median returns S_s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from etl import ops
from etl.features.identifiers import N_SECTOR17, N_SECTOR33
from etl.features.registry import FeatureContext, feature

G = N_SECTOR33
SQRT252 = float(np.sqrt(252.0))
TE_WINDOW = 252
TE_LAG = 5
TE_SMOOTHING = 100.0

XFn = Callable[[FeatureContext], Any]


def gid33(ctx: FeatureContext) -> Any:
    """[T, n] int sector33 ids of this context's stocks (-1 = none)."""
    return ctx.cached("gid33", lambda: ctx["sector33_id"].astype(np.int64))


def _universe(ctx: FeatureContext) -> Any:
    return ctx.panel("universe")


def _stats(ctx: FeatureContext, key: str, x_fn: XFn) -> dict[str, Any]:
    """count/mean/std [T, 34] of x over universe members, computed once on the root."""

    def compute() -> dict[str, Any]:
        root = ctx.full
        n, mean, std = ops.group_moments(x_fn(root), gid33(root), G, _universe(root))
        return {"n": n, "mean": mean, "std": std}

    return ctx.full.cached(("sector_stats", key), compute)


def _median(ctx: FeatureContext, key: str, x_fn: XFn) -> Any:
    """median [T, 34] of x over universe members (n >= 3), computed once on the root."""

    def compute() -> Any:
        root = ctx.full
        return ops.group_median(x_fn(root), gid33(root), G, _universe(root))

    return ctx.full.cached(("sector_median", key), compute)


def _valid(ctx: FeatureContext, x: Any) -> Any:
    return _universe(ctx) & ~ctx.xp.isnan(x)


def sector_z(ctx: FeatureContext, key: str, x_fn: XFn) -> Any:
    """zG(x) for this context's stocks: 0 in a flat sector, NaN when n < 3 or off the universe."""
    xp = ctx.xp
    s = _stats(ctx, key, x_fn)
    x, g = x_fn(ctx), gid33(ctx)
    mean, std = ops.group_gather(s["mean"], g), ops.group_gather(s["std"], g)
    z = xp.where(std == 0, 0.0, (x - mean) / (std + ctx.eps))
    return xp.where(_valid(ctx, x), z, xp.nan)


def sector_demean(ctx: FeatureContext, key: str, x_fn: XFn) -> Any:
    """x - mean_G(x) (n >= 3)."""
    x = x_fn(ctx)
    out = x - ops.group_gather(_stats(ctx, key, x_fn)["mean"], gid33(ctx))
    return ctx.xp.where(_valid(ctx, x), out, ctx.xp.nan)


def sector_rankpct(ctx: FeatureContext, key: str, x_fn: XFn) -> Any:
    """rankpct_G(x) in [0, 1] (average ranks; n >= 3), full width on the root, sliced."""

    def compute() -> Any:
        root = ctx.full
        return ops.group_rankpct(x_fn(root), gid33(root), G, _universe(root))

    return ctx.own(ctx.full.cached(("sector_rank", key), compute))


def _col(name: str) -> XFn:
    return lambda c: c[name]


def _lagged(name: str, k: int) -> XFn:
    return lambda c: c.cached(("lag", name, k), lambda: ops.lag(c[name], k))


# ------------------------------------------------------------------------------- one-hot, frequencies

for _k in range(17):
    feature(f"sec17_onehot_{_k}", group="sector")(lambda ctx, k=_k: (ctx["sector17_id"] == k).astype(float))


def _freq(ctx: FeatureContext, id_col: str, n_groups: int) -> Any:
    def compute() -> Any:
        root = ctx.full
        u = _universe(root)
        ids = root[id_col].astype(np.int64)
        ones = root.xp.ones(root.shape)
        cnt = ops.group_count(ones, ids, n_groups, u)
        total = u.sum(axis=1)
        return cnt / root.xp.maximum(total, 1)[:, None]

    frac = ctx.full.cached(("freq", id_col), compute)
    return ops.group_gather(frac, ctx[id_col].astype(np.int64))


@feature("sec17_daily_freq", group="sector")
def _sec17_freq(ctx: FeatureContext) -> Any:
    return _freq(ctx, "sector17_id", N_SECTOR17)


@feature("sec33_daily_freq", group="sector")
def _sec33_freq(ctx: FeatureContext) -> Any:
    return _freq(ctx, "sector33_id", N_SECTOR33)


# ------------------------------------------------------------------------------------------ sector returns


def _sec_median(ctx: FeatureContext, h: int) -> Any:
    return _median(ctx, f"returns_{h}d", _col(f"returns_{h}d"))


for _h in (1, 5, 20):
    feature(f"sec_ret_{_h}d_eq", group="sector")(
        lambda ctx, h=_h: ops.group_gather(_sec_median(ctx, h), gid33(ctx))
    )


def _mcap_weighted(ctx: FeatureContext, h: int) -> Any:
    """sum_G(w r) / sum_G(w), w = mcap at t-h (buy-and-hold weights, D15), over members with both."""

    def compute() -> Any:
        root = ctx.full
        xp = root.xp
        r = root[f"returns_{h}d"]
        w = ops.lag(root.panel("mcap"), h)
        both = ~(xp.isnan(r) | xp.isnan(w))
        g, u = gid33(root), _universe(root) & both
        num = ops.group_sum(xp.where(both, w * r, xp.nan), g, G, u)
        den = ops.group_sum(xp.where(both, w, xp.nan), g, G, u)
        n = ops.group_count(xp.where(both, r, xp.nan), g, G, u)
        return xp.where((n >= 3) & (den != 0), num / xp.where(den == 0, 1.0, den), xp.nan)

    return ops.group_gather(ctx.full.cached(("sec_mcap", h), compute), gid33(ctx))


for _h in (1, 5, 20):
    feature(f"sec_ret_{_h}d_mcap", group="sector")(lambda ctx, h=_h: _mcap_weighted(ctx, h))


def _series(ctx: FeatureContext) -> dict[str, Any]:
    """Time series on the [T, 34] sector median returns S_s (one row per sector-day, D13)."""

    def compute() -> dict[str, Any]:
        s = _sec_median(ctx, 1)
        vol = ops.rolling_std(s, 20, 20) * SQRT252
        e5, e20 = ops.ema(s, 5), ops.ema(s, 20)
        return {
            "sec_mom_20": ops.rolling_sum(s, 20, 20),
            "sec_ema_5": e5,
            "sec_ema_20": e20,
            "sec_gap_5_20": e5 - e20,
            "sec_vol_20": vol,
            "sec_vol_20_z": ops.rolling_z(vol, 252, 252),
        }

    return ctx.full.cached("sector_series", compute)


for _name in ("sec_mom_20", "sec_ema_5", "sec_ema_20", "sec_gap_5_20", "sec_vol_20", "sec_vol_20_z"):
    feature(_name, group="sector")(lambda ctx, name=_name: ops.group_gather(_series(ctx)[name], gid33(ctx)))


@feature("sec_member_cnt", group="sector")
def _member_cnt(ctx: FeatureContext) -> Any:
    n = _stats(ctx, "returns_1d", _col("returns_1d"))["n"]
    out = ops.group_gather(n.astype(np.float64), gid33(ctx))
    return ctx.xp.where(ctx.xp.isnan(out), 0.0, out)


@feature("sec_small_flag", group="sector")
def _small_flag(ctx: FeatureContext) -> Any:
    return (ctx["sec_member_cnt"] < 5).astype(float)


@feature("rel_to_sec_5d", group="sector")
def _rel_to_sec_5d(ctx: FeatureContext) -> Any:
    return ctx["returns_5d"] - ctx["sec_ret_5d_eq"]


@feature("beta_to_sec_60", group="sector")
def _beta_to_sec(ctx: FeatureContext) -> Any:
    return ops.rolling_beta(ctx["returns_1d"], ctx["sec_ret_1d_eq"], 60, 60)


@feature("alpha_vs_sec_1d", group="sector")
def _alpha_vs_sec(ctx: FeatureContext) -> Any:
    return ctx["returns_1d"] - ctx["beta_to_sec_60"] * ctx["sec_ret_1d_eq"]


@feature("ret_1d_demeaned", group="sector")
def _ret_1d_demeaned(ctx: FeatureContext) -> Any:
    return sector_demean(ctx, "returns_1d", _col("returns_1d"))


# ------------------------------------------------------------------------------- in-sector z / ranks

_Z_COLUMNS = {
    "z_in_sec_returns_5d": "returns_5d",
    "z_in_sec_ma_gap_5_20": "ma_gap_5_20",
    "rv20_in_sec_z": "volatility_20d",
    "rsi14_in_sec_z": "rsi_14",
    "macd_slope_in_sec_z": "macd_hist_slope",
    "vcm_in_sec_z": "vol_confirmed_mom",
    "rsi_vol_in_sec_z": "rsi_vol_interact",
}
for _name, _src in _Z_COLUMNS.items():
    feature(_name, group="sector")(lambda ctx, src=_src: sector_z(ctx, src, _col(src)))

_PREV = {"1d": ("returns_1d", 1), "5d": ("returns_5d", 5), "10d": ("returns_10d", 10)}
for _tag, (_src, _k) in _PREV.items():
    _fn = _lagged(_src, _k)
    _key = f"prev_{_tag}"
    feature(f"ret_prev_{_tag}_vs_sec", group="sector")(lambda ctx, f=_fn, k=_key: sector_demean(ctx, k, f))
    feature(f"ret_prev_{_tag}_in_sec_z", group="sector")(lambda ctx, f=_fn, k=_key: sector_z(ctx, k, f))


@feature("ret_prev_1d_rank_in_sec", group="sector")
def _prev_rank(ctx: FeatureContext) -> Any:
    return sector_rankpct(ctx, "prev_1d", _lagged("returns_1d", 1))


def _log_tv(c: FeatureContext) -> Any:
    return c.cached("log1p_tv", lambda: c.xp.log1p(c["TurnoverValue"]))


@feature("volume_in_sec_z", group="sector")
def _volume_z(ctx: FeatureContext) -> Any:
    return sector_z(ctx, "log1p_tv", _log_tv)


@feature("volume_rank_in_sec", group="sector")
def _volume_rank(ctx: FeatureContext) -> Any:
    return sector_rankpct(ctx, "tv", _col("TurnoverValue"))


# ------------------------------------------------------------------------------------------ target encoding


def _lagsum(x: Any) -> Any:
    xp = ops.array_namespace(x)
    z = ops.lag(xp.where(xp.isnan(x), 0.0, x), TE_LAG)
    return ops.rolling_sum(xp.where(xp.isnan(z), 0.0, z), TE_WINDOW, 1)


def _te_totals(ctx: FeatureContext) -> dict[str, Any]:
    """Per (t, sector) and per t window sums of realized target_5d over universe rows (root, once)."""

    def compute() -> dict[str, Any]:
        root = ctx.full
        xp = root.xp
        y = root["target_5d"]
        u = _universe(root) & ~xp.isnan(y)
        g = gid33(root)
        yz = xp.where(u, y, xp.nan)
        s_g = ops.group_sum(yz, g, G, u)
        n_g = ops.group_count(yz, g, G, u).astype(np.float64)
        s_all = xp.where(u, y, 0.0).sum(axis=1, keepdims=True)
        n_all = u.sum(axis=1, keepdims=True).astype(np.float64)
        return {"S": _lagsum(s_g), "N": _lagsum(n_g), "S_all": _lagsum(s_all), "N_all": _lagsum(n_all)}

    return ctx.full.cached("te_totals", compute)


@feature("te33_sec_target_5d", group="sector")
def _te33(ctx: FeatureContext) -> Any:
    """(S + m·mu) / (N + m) over other stocks' realized 5-day targets in the row's sector [D17]."""
    xp = ctx.xp
    tot = _te_totals(ctx)
    y = ctx["target_5d"]
    g = gid33(ctx)
    u = _universe(ctx) & ~xp.isnan(y)
    y0 = xp.where(u, y, 0.0)
    one = u.astype(np.float64)
    own_all_s, own_all_n = _lagsum(y0), _lagsum(one)
    # own contribution in the row's current sector: rolling sums per distinct sector of the stock
    g_lag = xp.where(u, g, -1)
    own_s = xp.zeros(ctx.shape)
    own_n = xp.zeros(ctx.shape)
    remaining = g_lag.copy()
    while bool((remaining >= 0).any()):
        first = xp.argmax(remaining >= 0, axis=0)
        c = xp.take_along_axis(remaining, first[None], axis=0)[0]
        c = xp.where((remaining >= 0).any(axis=0), c, -2)
        in_c = g_lag == c[None, :]
        s_c, n_c = _lagsum(xp.where(in_c, y0, 0.0)), _lagsum(in_c.astype(np.float64))
        now_c = g == c[None, :]
        own_s = own_s + xp.where(now_c, s_c, 0.0)
        own_n = own_n + xp.where(now_c, n_c, 0.0)
        remaining = xp.where(in_c, -1, remaining)
    S = ops.group_gather(tot["S"], g) - own_s
    N = ops.group_gather(tot["N"], g) - own_n
    den = tot["N_all"] - own_all_n
    mu = (tot["S_all"] - own_all_s) / xp.where(den > 0, den, 1.0)
    mu = xp.where(den > 0, mu, xp.nan)
    te = (S + TE_SMOOTHING * mu) / (N + TE_SMOOTHING)
    return xp.where(g >= 0, te, xp.nan)
