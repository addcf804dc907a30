"""The one scorer: every number a user sees about a model comes from `score` (DESIGN §7, docs/metrics.md).

`score` is one jit-compiled function over predictions `[D, N, H]`, applied alike to ATFT-GAT-FAN, LightGBM
and the synthetic oracle, so their comparison is fair by construction. Per date and horizon it gives the
signal metrics (IC, RankIC, hit rate, decile mean returns, top-minus-bottom spread), two portfolios traded
on each horizon's prediction (long-short quintiles; long-only top-K with dropout against TOPIX) and the JPX
competition score; `summarise` turns its aggregates into the plain dict of `metrics.json`.

Returns it needs, all simple (not log) returns on adjusted closes:
- `ret_DNH`: the store's `target_{h}d` columns, C_{t+h} / C_t - 1, for the signal metrics;
- `daily_ret_TN`: the 1-session return C_{t+1} / C_t - 1 (`target_1d`) of every prediction date and of at
  least max(lag, 1) sessions after the last one (T >= D + max(lag, 1); NaN where the data ends). A signal of
  date t earns row t + lag in the portfolios, and the JPX score uses row t + 1 (close t+1 -> close t+2);
- `topix_ret_T`: TOPIX's 1-session return on the same rows.

A stock has a signal on a date where `mask_DNH` is true and its prediction is finite; the signal metrics
and the JPX score also need its realised return. Padding stocks (mask false) never enter ranks, deciles,
portfolios or baskets. A (date, horizon) with fewer than `min_stocks` such stocks is NaN in the signal
metrics and the JPX spread and the portfolios do not trade that day; every aggregate skips NaN days.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from etl.errors import GogookuError
from train.config import SESSIONS_PER_YEAR, MetricsConfig

__all__ = ["SESSIONS_PER_YEAR", "MetricsConfig", "Scores", "rank_ic", "score", "select_dates", "summarise"]


class Scores(NamedTuple):
    """What `score` returns: a pytree of per-date arrays and of their aggregates (docs/metrics.md)."""

    per_date: dict[str, Any]
    aggregate: dict[str, Any]


# --- sorted rows: every rank comes from two sorts (predictions, returns), one row per date and horizon ---


class _Sorted(NamedTuple):
    """Rows sorted ascending, entries outside the sorted set first (as -inf). The ranks of any subset of a row
    follow from cumulative counts in this order (`_tie_ranks`), so one sort serves every metric."""

    x_RN: jax.Array  # sorted values
    perm_RN: jax.Array  # sorted position -> stock index


def _sort_rows(x_RN: jax.Array, in_RN: jax.Array, tie_RN: jax.Array | None = None) -> _Sorted:
    """Sort each row by value (ties by `tie`, ascending) with the entries outside `in_RN` first."""
    key_RN = jnp.where(in_RN, x_RN, -jnp.inf)
    iota_RN = lax.broadcasted_iota(jnp.int32, key_RN.shape, key_RN.ndim - 1)
    operands = (
        (key_RN, iota_RN) if tie_RN is None else (key_RN, jnp.broadcast_to(tie_RN, key_RN.shape), iota_RN)
    )
    out = lax.sort(operands, dimension=key_RN.ndim - 1, num_keys=len(operands) - 1)
    return _Sorted(out[0], out[-1])


def _gather(s: _Sorted, a_RN: jax.Array) -> jax.Array:
    """Stock order -> sorted order."""
    return jnp.take_along_axis(jnp.broadcast_to(a_RN, s.perm_RN.shape), s.perm_RN, -1)


def _scatter(s: _Sorted, a_RN: jax.Array) -> jax.Array:
    """Sorted order -> stock order."""
    return jnp.put_along_axis(jnp.zeros_like(a_RN), s.perm_RN, a_RN, -1, inplace=False)


def _tie_ranks(s: _Sorted, member_RN: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """0-based ascending ranks among the members (in sorted order) of each sorted entry's tie group.

    Returns (lowest, highest) `[R, N]` in sorted order - the members strictly below the entry's value, and
    those at or below it, minus one - and the member count `[R]`. Spearman's average rank is their mean;
    pandas.qcut bins by the lowest.
    """
    n = s.x_RN.shape[-1]
    count_RN = jnp.cumsum(member_RN, -1, dtype=jnp.int32)
    starts_RN = jnp.concatenate([jnp.ones_like(member_RN[..., :1]), s.x_RN[..., 1:] != s.x_RN[..., :-1]], -1)
    ends_RN = jnp.concatenate([starts_RN[..., 1:], jnp.ones_like(member_RN[..., :1])], -1)
    axis = member_RN.ndim - 1
    lowest_RN = lax.cummax(jnp.where(starts_RN, count_RN - member_RN, 0), axis=axis)
    highest_RN = lax.cummin(jnp.where(ends_RN, count_RN, n), axis=axis, reverse=True) - 1
    return lowest_RN, highest_RN, count_RN[..., -1]


def _average_ranks(s: _Sorted, member_RN: jax.Array) -> jax.Array:
    """Average ranks (ties share the mean of their positions, as SciPy's) in stock order."""
    lowest_RN, highest_RN, _ = _tie_ranks(s, _gather(s, member_RN))
    return _scatter(s, (lowest_RN + highest_RN) / 2)


def _median(s: _Sorted, member_RN: jax.Array) -> jax.Array:
    """Median `[R]` of the members (given in sorted order); 0 where there are none."""
    rank_RN = jnp.cumsum(member_RN, -1, dtype=jnp.int32) - 1
    n_R1 = rank_RN[..., -1:] + 1
    at = lambda k_R1: jnp.where(member_RN & (rank_RN == k_R1), s.x_RN, 0.0).sum(-1)
    return (at((n_R1 - 1) // 2) + at(n_R1 // 2)) / 2


def _count(valid_RN: jax.Array) -> jax.Array:
    return valid_RN.sum(-1, dtype=jnp.int32)


def _pearson(a_RN: jax.Array, b_RN: jax.Array, valid_RN: jax.Array) -> jax.Array:
    """Pearson correlation per row over the valid entries; NaN with fewer than 2 or a constant side."""
    w_RN = valid_RN.astype(a_RN.dtype)
    n_R = w_RN.sum(-1)

    def deviations(x_RN):
        x_RN = jnp.where(valid_RN, x_RN, 0.0)
        mean_R = x_RN.sum(-1) / jnp.maximum(n_R, 1.0)
        spread_R = jnp.where(valid_RN, x_RN, -jnp.inf).max(-1) - jnp.where(valid_RN, x_RN, jnp.inf).min(-1)
        return (x_RN - mean_R[..., None]) * w_RN, spread_R > 0  # constancy tested exactly, not by variance

    da_RN, varies_a_R = deviations(a_RN)
    db_RN, varies_b_R = deviations(b_RN)
    defined_R = (n_R >= 2) & varies_a_R & varies_b_R
    var_R = jnp.where(defined_R, (da_RN * da_RN).sum(-1) * (db_RN * db_RN).sum(-1), 1.0)
    return jnp.where(defined_R, (da_RN * db_RN).sum(-1) / jnp.sqrt(var_R), jnp.nan)


@jax.jit
def rank_ic(pred_DN: jax.Array, ret_DN: jax.Array, mask_DN: jax.Array) -> jax.Array:
    """RankIC per date `[D]`: Spearman correlation (average ranks for ties) over the masked stocks with a
    finite prediction and return; NaN where fewer than 2 are valid or one side is constant."""
    pred_DN, ret_DN = jnp.asarray(pred_DN, float), jnp.asarray(ret_DN, float)
    valid_DN = jnp.asarray(mask_DN, bool) & jnp.isfinite(pred_DN) & jnp.isfinite(ret_DN)
    rank_pred_DN = _average_ranks(_sort_rows(pred_DN, valid_DN), valid_DN)
    rank_ret_DN = _average_ranks(_sort_rows(ret_DN, valid_DN), valid_DN)
    return _pearson(rank_pred_DN, rank_ret_DN, valid_DN)


def _qcut_bins(lowest_RN: jax.Array, n_R: jax.Array, q: int) -> jax.Array:
    """pandas.qcut(x, q, labels=False) from 0-based lowest ranks: the number of edges below the value.

    qcut's i-th edge (1 <= i < q) sits at sorted position i (n - 1) / q, and a value goes above every edge
    strictly below its first position, so bin = #{i : i (n - 1) < rank q}; integer arithmetic, exact.
    """
    n1_R1 = jnp.maximum(n_R - 1, 1)[..., None]
    return jnp.clip((lowest_RN * q + n1_R1 - 1) // n1_R1 - 1, 0, q - 1)


# --- signal metrics ---


def _signal(by_pred: _Sorted, by_ret: _Sorted, pred_RN, ret_RN, valid_RN, config: MetricsConfig):
    """IC, RankIC, hit rate, decile mean returns `[R, Q]` and spread per row; NaN below `min_stocks`."""
    member_pred_RN, member_ret_RN = _gather(by_pred, valid_RN), _gather(by_ret, valid_RN)
    lowest_RN, highest_RN, n_R = _tie_ranks(by_pred, member_pred_RN)
    rank_pred_RN = _scatter(by_pred, (lowest_RN + highest_RN) / 2)
    lowest_RN = _scatter(by_pred, lowest_RN)
    rank_ret_RN = _average_ranks(by_ret, valid_RN)
    enough_R = n_R >= config.min_stocks
    nan = jnp.asarray(jnp.nan, pred_RN.dtype)

    # hit rate: prediction and return on the same side of their date's medians; stocks at a median skipped
    side_pred_RN = jnp.sign(pred_RN - _median(by_pred, member_pred_RN)[..., None])
    side_ret_RN = jnp.sign(ret_RN - _median(by_ret, member_ret_RN)[..., None])
    product_RN = jnp.where(valid_RN, side_pred_RN * side_ret_RN, 0.0)
    decided_R = (product_RN != 0).sum(-1)
    hit_R = jnp.where(decided_R > 0, (product_RN > 0).sum(-1) / jnp.maximum(decided_R, 1), nan)

    q = config.quantiles
    bins_RN = _qcut_bins(lowest_RN, n_R, q)
    rows = math.prod(pred_RN.shape[:-1])
    seg_RN = jnp.where(
        valid_RN, jnp.arange(rows).reshape(pred_RN.shape[:-1])[..., None] * q + bins_RN, rows * q
    )
    ret0_RN = jnp.where(valid_RN, ret_RN, 0.0)
    total_RQ = jax.ops.segment_sum(ret0_RN.ravel(), seg_RN.ravel(), rows * q + 1)[:-1]
    count_RQ = jax.ops.segment_sum(valid_RN.ravel().astype(ret0_RN.dtype), seg_RN.ravel(), rows * q + 1)[:-1]
    decile_RQ = jnp.where(count_RQ > 0, total_RQ / jnp.maximum(count_RQ, 1.0), nan)
    decile_RQ = decile_RQ.reshape(*pred_RN.shape[:-1], q)

    keep = lambda x: jnp.where(enough_R, x, nan)
    return {
        "ic": keep(_pearson(pred_RN, ret_RN, valid_RN)),
        "rank_ic": keep(_pearson(rank_pred_RN, rank_ret_RN, valid_RN)),
        "hit_rate": keep(hit_R),
        "decile": jnp.where(enough_R[..., None], decile_RQ, nan),
        "spread": keep(decile_RQ[..., -1] - decile_RQ[..., 0]),
        "n_stocks": n_R,
    }


# --- portfolios ---


def _hold_until_signal(weights_DHN: jax.Array, enough_DH: jax.Array) -> jax.Array:
    """On a date without enough signals the portfolio keeps the last traded weights (cash before any)."""
    d_D1 = jnp.arange(weights_DHN.shape[0])[:, None]
    last_DH = lax.cummax(jnp.where(enough_DH, d_D1, -1), axis=0)
    held_DHN = jnp.take_along_axis(weights_DHN, jnp.maximum(last_DH, 0)[..., None], axis=0)
    return jnp.where((last_DH >= 0)[..., None], held_DHN, 0.0)


def _long_short_weights(by_pred: _Sorted, signal_DHN: jax.Array, config: MetricsConfig) -> jax.Array:
    """+1 spread equally over the top quantile, -1 over the bottom one (pandas.qcut bins of the signal).

    No trade on a date whose top quantile is empty: all predictions equal, or ties at the top so heavy that
    qcut's upper edges coincide.
    """
    member_DHN = _gather(by_pred, signal_DHN)
    lowest_DHN, _, n_DH = _tie_ranks(by_pred, member_DHN)
    q = config.long_short_quantiles
    bins_DHN = _qcut_bins(lowest_DHN, n_DH, q)
    top_DHN = member_DHN & (bins_DHN == q - 1)
    bottom_DHN = member_DHN & (bins_DHN == 0)
    per_name = lambda sel: sel / jnp.maximum(sel.sum(-1, keepdims=True), 1).astype(by_pred.x_RN.dtype)
    target_DHN = _scatter(by_pred, per_name(top_DHN) - per_name(bottom_DHN))
    return _hold_until_signal(target_DHN, (n_DH >= config.min_stocks) & top_DHN.any(-1))


def _topk_dropout_holdings(by_pred: _Sorted, signal_DHN: jax.Array, config: MetricsConfig) -> jax.Array:
    """Qlib's TopkDropout (method_sell="bottom", method_buy="top"), one date after another.

    Each day, with `held` names held: the candidates are the best n_drop + top_k - held names not held; the
    holdings among the n_drop worst of holdings + candidates are sold (a holding without a valid signal
    ranks last), and the best candidates replace them, filling up to top_k. Ties in the prediction are broken
    by code. No trade on a date with too few signals or all predictions equal.
    """
    d, h, n = signal_DHN.shape
    perm_DHN = by_pred.perm_RN[..., ::-1]  # best first, ties by ascending code, no signal last
    valid_sorted_DHN = _gather(by_pred, signal_DHN)[..., ::-1]
    x_DHN = jnp.where(valid_sorted_DHN, by_pred.x_RN[..., ::-1], 0.0)
    varies_DH = x_DHN[..., 0] > jnp.where(valid_sorted_DHN, x_DHN, jnp.inf).min(-1)
    enough_DH = (_count(signal_DHN) >= config.min_stocks) & varies_DH
    k, n_drop = config.top_k, config.n_drop
    rows_H1 = jnp.arange(h)[:, None]

    def step(held_HN, inputs):
        perm_HN, valid_HN, enough_H = inputs
        held_sorted_HN = jnp.take_along_axis(held_HN, perm_HN, -1)
        n_held_H1 = held_HN.sum(-1, keepdims=True, dtype=jnp.int32)
        free_HN = ~held_sorted_HN & valid_HN
        free_rank_HN = jnp.cumsum(free_HN, -1, dtype=jnp.int32) - 1
        candidate_HN = free_HN & (free_rank_HN < n_drop + k - n_held_H1)
        pool_HN = held_sorted_HN | candidate_HN
        rank_from_worst_HN = jnp.cumsum(pool_HN[:, ::-1], -1, dtype=jnp.int32)[:, ::-1] - 1
        sell_HN = held_sorted_HN & (rank_from_worst_HN < n_drop)
        n_buy_H1 = sell_HN.sum(-1, keepdims=True, dtype=jnp.int32) + k - n_held_H1
        buy_HN = candidate_HN & (free_rank_HN < n_buy_H1)
        new_sorted_HN = (held_sorted_HN & ~sell_HN) | buy_HN
        new_HN = jnp.zeros_like(held_HN).at[rows_H1, perm_HN].set(new_sorted_HN)
        new_HN = jnp.where(enough_H[:, None], new_HN, held_HN)
        return new_HN, new_HN

    _, held_DHN = lax.scan(step, jnp.zeros((h, n), bool), (perm_DHN, valid_sorted_DHN, enough_DH))
    return held_DHN


def _returns(weights_DHN, ret_DN, cost_bp: jax.Array) -> dict[str, jax.Array]:
    """Daily gross and net returns and turnover `[D, H]` of target weights held over `ret_DN`.

    A held name without a realised return earns 0 that day (cash); a day where no stock has one (past the
    data's end) is NaN. Turnover is sum |w_t - w_{t-1}| over names (the first day buys from cash); each
    unit traded pays cost_bp.
    """
    day_ok_D1 = jnp.isfinite(ret_DN).any(-1)[:, None]
    gross_DH = jnp.einsum("dhn,dn->dh", weights_DHN, jnp.where(jnp.isfinite(ret_DN), ret_DN, 0.0))
    previous_DHN = jnp.concatenate([jnp.zeros_like(weights_DHN[:1]), weights_DHN[:-1]], axis=0)
    turnover_DH = jnp.abs(weights_DHN - previous_DHN).sum(-1)
    gross_DH = jnp.where(day_ok_D1, gross_DH, jnp.nan)
    return {"gross": gross_DH, "net": gross_DH - turnover_DH * cost_bp / 1e4, "turnover": turnover_DH}


def _performance(r_DH: jax.Array) -> dict[str, jax.Array]:
    """Annualised return (compound) and volatility, Sharpe, Sortino, max drawdown, Calmar over non-NaN days.

    The conventions of empyrical: std with ddof 1, downside deviation sqrt(mean(min(r, 0)^2)), drawdown
    from the running peak of wealth that starts at 1 before the first day, Calmar = return / |drawdown|.
    """
    ok_DH = jnp.isfinite(r_DH)
    n_H = ok_DH.sum(0)
    r0_DH = jnp.where(ok_DH, r_DH, 0.0)
    mean_H = r0_DH.sum(0) / jnp.maximum(n_H, 1)
    std_H = jnp.sqrt(jnp.where(ok_DH, (r0_DH - mean_H) ** 2, 0.0).sum(0) / jnp.maximum(n_H - 1, 1))
    downside_H = jnp.sqrt((jnp.minimum(r0_DH, 0.0) ** 2).sum(0) / jnp.maximum(n_H, 1))
    wealth_DH = jnp.cumprod(1.0 + r0_DH, axis=0)
    peak_DH = jnp.maximum(lax.cummax(wealth_DH, axis=0), 1.0)
    drawdown_H = jnp.minimum((wealth_DH / peak_DH - 1.0).min(0), 0.0)
    annual_H = wealth_DH[-1] ** (SESSIONS_PER_YEAR / jnp.maximum(n_H, 1)) - 1.0
    root = math.sqrt(SESSIONS_PER_YEAR)
    some_H, two_H = n_H >= 1, n_H >= 2
    return {
        "ann_return": jnp.where(some_H, annual_H, jnp.nan),
        "ann_vol": jnp.where(two_H, std_H * root, jnp.nan),
        "sharpe": jnp.where(two_H & (std_H > 0), mean_H / std_H * root, jnp.nan),
        "sortino": jnp.where(two_H & (downside_H > 0), mean_H / downside_H * root, jnp.nan),
        "max_drawdown": jnp.where(some_H, drawdown_H, jnp.nan),
        "calmar": jnp.where(some_H & (drawdown_H < 0), annual_H / -drawdown_H, jnp.nan),
    }


def _mean_std(x_DH: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Mean, std (ddof 1) and count over the non-NaN dates of each column."""
    ok_DH = jnp.isfinite(x_DH)
    n_H = ok_DH.sum(0)
    x0_DH = jnp.where(ok_DH, x_DH, 0.0)
    mean_H = jnp.where(n_H >= 1, x0_DH.sum(0) / jnp.maximum(n_H, 1), jnp.nan)
    var_H = jnp.where(ok_DH, (x0_DH - mean_H) ** 2, 0.0).sum(0) / jnp.maximum(n_H - 1, 1)
    return mean_H, jnp.where(n_H >= 2, jnp.sqrt(var_H), jnp.nan), n_H


def _ratio_stats(x_DH: jax.Array, name: str) -> dict[str, jax.Array]:
    mean_H, std_H, n_H = _mean_std(x_DH)
    ir_H = jnp.where(std_H > 0, mean_H / std_H, jnp.nan)
    return {
        f"{name}_mean": mean_H,
        f"{name}_std": std_H,
        f"{name}ir": ir_H,
        f"{name}_t": ir_H * jnp.sqrt(n_H),
    }


# --- the JPX competition score ---


def _jpx_spread(by_pred: _Sorted, valid_DHN, target_DN, config: MetricsConfig) -> jax.Array:
    """Daily spread return `[D, H]` of the JPX Tokyo Stock Exchange Prediction competition.

    Rank the valid stocks best prediction first (ties by code); the top b = min(jpx_size, n // 2) and the
    bottom b get weights linspace(jpx_top_weight, 1, b) from the extreme inwards; spread = (sum of weighted
    targets of the top - of the bottom) / mean weight.
    """
    member_DHN = _gather(by_pred, valid_DHN)[..., ::-1]  # best first, ties by ascending code
    target_DHN = _gather(by_pred, jnp.where(jnp.isfinite(target_DN), target_DN, 0.0)[:, None])[..., ::-1]
    rank_DHN = jnp.cumsum(member_DHN, -1, dtype=jnp.int32) - 1  # Rank among the valid, 0 = best
    n_DH1 = rank_DHN[..., -1:] + 1
    b_DH1 = jnp.minimum(config.jpx_size, n_DH1 // 2)
    top_w = config.jpx_top_weight

    def weight(k_DHN):  # linspace(top_w, 1, b)[k]
        return top_w - (top_w - 1.0) * k_DHN / jnp.maximum(b_DH1 - 1, 1)

    from_bottom_DHN = n_DH1 - 1 - rank_DHN
    long_DHN = jnp.where(member_DHN & (rank_DHN < b_DH1), weight(rank_DHN), 0.0)
    short_DHN = jnp.where(member_DHN & (from_bottom_DHN < b_DH1), weight(from_bottom_DHN), 0.0)
    mean_w_DH = jnp.where(b_DH1[..., 0] > 1, (top_w + 1.0) / 2.0, top_w)
    spread_DH = (target_DHN * (long_DHN - short_DHN)).sum(-1) / mean_w_DH
    return jnp.where(n_DH1[..., 0] >= config.min_stocks, spread_DH, jnp.nan)


# --- the scorer ---


def _rows(x: jax.Array) -> jax.Array:
    """[D, N, H] -> [D, H, N]: one row per date and horizon, stocks along the last axis."""
    return jnp.moveaxis(jnp.asarray(x), -1, 1)


def _check_shapes(pred, ret, mask, daily_ret, topix_ret, code_order, config: MetricsConfig) -> None:
    if pred.ndim != 3 or ret.shape != pred.shape or mask.shape != pred.shape:
        raise GogookuError(
            f"scorer: predictions {pred.shape}, returns {ret.shape} and mask {mask.shape} must all be "
            "[dates, stocks, horizons]"
        )
    d, n, _ = pred.shape
    need = d + max(config.lag, 1)
    if daily_ret.ndim != 2 or daily_ret.shape[1] != n or daily_ret.shape[0] < need:
        raise GogookuError(
            f"scorer: daily returns {daily_ret.shape} must be [T, {n}] with T >= {need} (the {d} prediction "
            f"dates and the {max(config.lag, 1)} sessions after them; NaN where the data ends)"
        )
    if topix_ret.shape != daily_ret.shape[:1]:
        raise GogookuError(f"scorer: TOPIX returns {topix_ret.shape} must be [{daily_ret.shape[0]}]")
    if code_order is not None and code_order.shape != (n,):
        raise GogookuError(f"scorer: code order {code_order.shape} must be [{n}]")


def score(
    pred_DNH: jax.Array,
    ret_DNH: jax.Array,
    mask_DNH: jax.Array,
    daily_ret_TN: jax.Array,
    topix_ret_T: jax.Array,
    code_order_N: jax.Array | None = None,
    *,
    config: MetricsConfig = MetricsConfig(),
) -> Scores:
    """Score predictions `[D, N, H]` against realised returns (module docstring; docs/metrics.md).

    `code_order_N`: each stock's position when codes are sorted ascending, which breaks prediction ties
    (None: the N axis is already in code order, as the feature store's grid is). One compilation per shape
    and config serves every lag and cost (they are traced, so sweeping them does not recompile).
    """
    config.validate()
    _check_shapes(pred_DNH, ret_DNH, mask_DNH, daily_ret_TN, topix_ret_T, code_order_N, config)
    compiled_for = dataclasses.replace(config, lag=0, cost_bp=0.0)
    args = (pred_DNH, ret_DNH, mask_DNH, daily_ret_TN, topix_ret_T, code_order_N)
    return _score(*args, np.int32(config.lag), np.float32(config.cost_bp), config=compiled_for)


@functools.partial(jax.jit, static_argnames=("config",))
def _score(
    pred_DNH,
    ret_DNH,
    mask_DNH,
    daily_ret_TN,
    topix_ret_T,
    code_order_N,
    lag,
    cost_bp,
    *,
    config: MetricsConfig,
) -> Scores:
    d, n, _ = pred_DNH.shape
    pred_DHN, ret_DHN = _rows(pred_DNH).astype(float), _rows(ret_DNH).astype(float)
    daily_ret_TN, topix_ret_T = jnp.asarray(daily_ret_TN, float), jnp.asarray(topix_ret_T, float)
    code_order_N = jnp.arange(n) if code_order_N is None else code_order_N
    code_order_N = jnp.asarray(code_order_N, jnp.int32)
    mask_DHN = _rows(mask_DNH).astype(bool)
    signal_DHN = mask_DHN & jnp.isfinite(pred_DHN)
    has_ret_DHN = mask_DHN & jnp.isfinite(ret_DHN)
    valid_DHN = signal_DHN & has_ret_DHN
    # The two sorts. Predictions ascending with ties by descending code, so that reversed the order is the
    # portfolios' and the JPX ranking's: best first, ties by ascending code, stocks without a signal last.
    by_pred = _sort_rows(pred_DHN, signal_DHN, -code_order_N)
    by_ret = _sort_rows(ret_DHN, has_ret_DHN)

    signal = _signal(by_pred, by_ret, pred_DHN, ret_DHN, valid_DHN, config)
    # IC decay: the first horizon's prediction against every horizon's return (its sort is row 0 of by_pred)
    by_first = _Sorted(*(jnp.broadcast_to(a[:, :1], a.shape) for a in by_pred))
    decay_valid_DHN = signal_DHN[:, :1] & has_ret_DHN
    decay_DH = _pearson(
        _average_ranks(by_first, decay_valid_DHN), _average_ranks(by_ret, decay_valid_DHN), decay_valid_DHN
    )
    signal["rank_ic_decay"] = jnp.where(_count(decay_valid_DHN) >= config.min_stocks, decay_DH, jnp.nan)

    traded_DN = lax.dynamic_slice_in_dim(daily_ret_TN, lag, d)  # the session each date's signal is held over
    topix_D = lax.dynamic_slice_in_dim(topix_ret_T, lag, d)
    long_short = _returns(_long_short_weights(by_pred, signal_DHN, config), traded_DN, cost_bp)
    held_DHN = _topk_dropout_holdings(by_pred, signal_DHN, config)
    weights_DHN = held_DHN / jnp.maximum(held_DHN.sum(-1, keepdims=True), 1).astype(pred_DHN.dtype)
    top_k = _returns(weights_DHN, traded_DN, cost_bp)
    top_k["excess"] = top_k["net"] - topix_D[:, None]
    top_k["held"] = held_DHN
    jpx_target_DN = daily_ret_TN[1 : d + 1]  # close t+1 -> close t+2, whatever the lag
    jpx_valid_DHN = signal_DHN & jnp.isfinite(jpx_target_DN)[:, None]
    jpx = {"spread": _jpx_spread(by_pred, jpx_valid_DHN, jpx_target_DN, config)}

    per_date = {"signal": signal, "long_short": long_short, "top_k": top_k, "jpx": jpx, "topix": topix_D}
    return Scores(per_date=per_date, aggregate=_aggregates(per_date))


def _aggregates(per_date: dict[str, Any]) -> dict[str, Any]:
    """Per-horizon aggregates `[H]` (decile means `[H, Q]`) over the dates where a value is defined."""
    out = {"signal": _signal_aggregates(per_date["signal"])}
    books = ("long_short", "top_k")
    series_D4H = jnp.stack([per_date[book][kind] for book in books for kind in ("net", "gross")], axis=1)
    perf = _performance(series_D4H)  # one pass over the four series: [4, H] each
    for i, book in enumerate(books):
        out[book] = {key: value[2 * i] for key, value in perf.items()}
        out[book]["gross_ann_return"] = perf["ann_return"][2 * i + 1]
        out[book]["turnover"] = _mean_std(per_date[book]["turnover"])[0]
    excess_mean_H, excess_std_H, _ = _mean_std(per_date["top_k"]["excess"])
    out["top_k"]["excess_ann_return"] = excess_mean_H * SESSIONS_PER_YEAR
    out["top_k"]["information_ratio"] = jnp.where(
        excess_std_H > 0, excess_mean_H / excess_std_H * math.sqrt(SESSIONS_PER_YEAR), jnp.nan
    )
    jpx_mean_H, jpx_std_H, _ = _mean_std(per_date["jpx"]["spread"])
    jpx_score_H = jnp.where(jpx_std_H > 0, jpx_mean_H / jpx_std_H, jnp.nan)
    out["jpx"] = {"score": jpx_score_H, "mean": jpx_mean_H, "std": jpx_std_H}
    return out


@jax.jit
def select_dates(scores: Scores, keep_D: jax.Array) -> Scores:
    """`scores` restricted to the dates where `keep_D` is true: the other dates' per-date values become NaN
    and the aggregates are taken over the kept dates (every aggregate skips NaN days).

    This is how one scored sequence yields the figures of its parts (a run's folds) without compiling the
    scorer for each part's length. Kept dates keep the values they have in the whole sequence: the signal
    metrics and the JPX spread are a date's own anyway, and the portfolios enter the first kept date with
    the book of the date before it (`score` of the kept dates alone would start from cash).
    """
    keep_D = jnp.asarray(keep_D, bool)

    def cut(x: jax.Array) -> jax.Array:
        if not jnp.issubdtype(x.dtype, jnp.floating):
            return x  # stock counts and holdings: not aggregated
        return jnp.where(keep_D.reshape(-1, *([1] * (x.ndim - 1))), x, jnp.nan)

    per_date = jax.tree.map(cut, scores.per_date)
    return Scores(per_date=per_date, aggregate=_aggregates(per_date))


def _signal_aggregates(signal: dict[str, jax.Array]) -> dict[str, jax.Array]:
    out = _ratio_stats(signal["ic"], "ic") | _ratio_stats(signal["rank_ic"], "rank_ic")
    out["n_dates"] = _mean_std(signal["rank_ic"])[2]
    out["hit_rate"] = _mean_std(signal["hit_rate"])[0]
    out["spread_mean"] = _mean_std(signal["spread"])[0]
    out["rank_ic_decay"] = _mean_std(signal["rank_ic_decay"])[0]
    ok_DHQ = jnp.isfinite(signal["decile"])
    n_HQ = ok_DHQ.sum(0)
    total_HQ = jnp.where(ok_DHQ, signal["decile"], 0.0).sum(0)
    out["decile_mean"] = jnp.where(n_HQ > 0, total_HQ / jnp.maximum(n_HQ, 1), jnp.nan)
    return out


def summarise(scores: Scores, horizons: Sequence[int], config: MetricsConfig | None = None) -> dict[str, Any]:
    """The aggregates as plain Python for `metrics.json`: one entry per horizon ("1d", "5d", ...).

    Undefined values (NaN: too few dates or a zero deviation) become None, which JSON writes as null.
    """
    agg = jax.device_get(scores.aggregate)
    n_h = np.asarray(agg["signal"]["ic_mean"]).shape[0]
    if len(horizons) != n_h:
        raise GogookuError(f"summarise: {len(horizons)} horizon labels for {n_h} horizons")

    def plain(x: Any) -> Any:
        x = np.asarray(x)
        if x.ndim:
            return [plain(v) for v in x]
        value = x.item()
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value

    out: dict[str, Any] = {"sessions_per_year": SESSIONS_PER_YEAR}
    if config is not None:
        out["config"] = dataclasses.asdict(config)
    out["horizons"] = {
        f"{h}d": {
            section: {key: plain(np.asarray(value)[i]) for key, value in agg[section].items()}
            for section in ("signal", "long_short", "top_k", "jpx")
        }
        for i, h in enumerate(horizons)
    }
    return out
