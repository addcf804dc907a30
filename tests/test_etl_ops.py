"""etl/ops.py against independent references: pandas rolling/ewm/groupby/rank, TA-Lib, hand-worked numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import talib
from hypothesis import given, settings
from hypothesis import strategies as st

from etl import ops


def _panel(seed: int = 0, T: int = 300, N: int = 5, holes: bool = True) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = 100 + rng.normal(size=(T, N)).cumsum(axis=0)
    if holes:
        x[:7, 1] = np.nan
        x[50:55, 2] = np.nan
        x[rng.random((T, N)) < 0.05] = np.nan
        x[:, 4] = np.nan
    return x


def _ref_window(x: np.ndarray, w: int, mp: int, fn) -> np.ndarray:
    """Explicit per-window reference (NumPy on each window's non-null values)."""
    out = np.full(x.shape, np.nan)
    for t in range(x.shape[0]):
        for j in range(x.shape[1]):
            v = x[max(0, t - w + 1) : t + 1, j]
            v = v[~np.isnan(v)]
            if v.size >= mp:
                out[t, j] = fn(v)
    return out


@pytest.mark.parametrize(("w", "mp"), [(5, 5), (20, 10), (60, 60), (3, 1)])
def test_rolling_matches_pandas(w, mp):
    x = _panel()
    r = pd.DataFrame(x).rolling(w, min_periods=mp)
    np.testing.assert_allclose(ops.rolling_mean(x, w, mp), r.mean().values, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ops.rolling_sum(x, w, mp), r.sum().values, rtol=1e-10)
    np.testing.assert_array_equal(ops.rolling_max(x, w, mp), r.max().values)
    np.testing.assert_array_equal(ops.rolling_min(x, w, mp), r.min().values)
    # pandas' running sums leave residues (~1e-7 on one-value windows); the reference is exact per window
    ref_std = _ref_window(x, w, max(mp, 2), lambda v: np.std(v, ddof=1))
    np.testing.assert_allclose(ops.rolling_std(x, w, mp), ref_std, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ops.rolling_var(x, w, mp), ref_std**2, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ops.rolling_std(x, w, mp), r.std().values, rtol=1e-6, atol=1e-6)
    ref_pop = _ref_window(x, w, mp, lambda v: np.std(v, ddof=0))
    np.testing.assert_allclose(ops.rolling_std(x, w, mp, ddof=0), ref_pop, rtol=1e-10, atol=1e-12)


def test_rolling_std_keeps_precision_on_high_levels():
    """A quiet window on a high price level after a long history: no cancellation from history."""
    rng = np.random.default_rng(9)
    x = np.concatenate([1000 + rng.normal(0, 50, 2400).cumsum(), 3000 + rng.normal(0, 1e-3, 50)])[:, None]
    ref = np.std(x[-20:, 0], ddof=1)
    assert ops.rolling_std(x, 20, 20)[-1, 0] == pytest.approx(ref, rel=1e-9)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.one_of(st.none(), st.floats(-1e3, 1e3)), min_size=1, max_size=40),
    st.integers(1, 12),
    st.integers(1, 12),
)
def test_rolling_property_vs_pandas(values, w, mp):
    mp = min(mp, w)
    x = np.array([np.nan if v is None else v for v in values])[:, None]
    r = pd.Series(x[:, 0]).rolling(w, min_periods=mp)
    np.testing.assert_allclose(ops.rolling_mean(x, w, mp)[:, 0], r.mean().values, rtol=1e-7, atol=1e-7)
    np.testing.assert_allclose(ops.rolling_std(x, w, mp)[:, 0], r.std().values, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(ops.rolling_max(x, w, mp)[:, 0], r.max().values)


def test_rolling_cov_corr_beta_match_pandas_pairs():
    x, y = _panel(1), _panel(2)
    both = ~(np.isnan(x) | np.isnan(y))
    for j in range(4):
        xs = pd.Series(np.where(both[:, j], x[:, j], np.nan))
        ys = pd.Series(np.where(both[:, j], y[:, j], np.nan))
        cov = xs.rolling(20, min_periods=15).cov(ys).values
        corr = xs.rolling(20, min_periods=15).corr(ys).values
        np.testing.assert_allclose(ops.rolling_cov(x, y, 20, 15)[:, j], cov, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(ops.rolling_corr(x, y, 20, 15)[:, j], corr, rtol=1e-7, atol=1e-9)
        beta = cov / xs.rolling(20, min_periods=15).var().values
        np.testing.assert_allclose(ops.rolling_beta(y, x, 20, 15)[:, j], beta, rtol=1e-7)


def test_rolling_beta_matches_talib_on_prices():
    """TA-Lib's BETA takes price series and regresses their one-period simple returns (x first)."""
    rng = np.random.default_rng(5)
    m_ret = rng.normal(0, 0.01, 299)
    m_px = 100 * np.cumprod(np.r_[1.0, 1 + m_ret])
    s_px = 50 * np.cumprod(np.r_[1.0, 1 + 0.8 * m_ret + rng.normal(0, 0.01, 299)])
    r, m = s_px[1:] / s_px[:-1] - 1, m_px[1:] / m_px[:-1] - 1
    ref = talib.BETA(m_px, s_px, 60)[1:]  # value at price t uses the 60 returns ending at t
    ours = ops.rolling_beta(r[:, None], m[:, None], 60, 60)[:, 0]
    assert np.isnan(ours[:59]).all() and np.isnan(ref[:59]).all()
    np.testing.assert_allclose(ours[59:], ref[59:], rtol=1e-8)


def test_rolling_z_hand_and_flat_rule():
    x = np.array([1.0, 2.0, 3.0, 5.0, 5.0, 5.0, 5.0])[:, None]
    z = ops.rolling_z(x, 3, 3)[:, 0]
    # window [1,2,3]: mean 2, sd 1 -> z(3) = 1
    assert z[2] == pytest.approx(1.0 / (1.0 + 1e-12))
    # window [5,5,5] is flat: z is exactly 0, std exactly 0 (no cumulative-sum residue)
    assert z[5] == 0.0 and z[6] == 0.0
    assert ops.rolling_std(x, 3, 3)[6, 0] == 0.0
    # flat windows of awkward values (0.1 * 3 is not 0.3 in floating point) stay exact
    y = np.full((40, 1), 0.1)
    y[:10] = np.linspace(1, 2, 10)[:, None]
    assert np.all(ops.rolling_std(y, 20, 20)[29:] == 0.0)
    assert np.all(ops.rolling_z(y, 20, 20)[29:] == 0.0)


def test_lag_and_lead():
    x = np.arange(6.0)[:, None]
    np.testing.assert_array_equal(ops.lag(x, 2)[:, 0], [np.nan, np.nan, 0, 1, 2, 3])
    np.testing.assert_array_equal(ops.lag(x, -2)[:, 0], [2, 3, 4, 5, np.nan, np.nan])
    assert np.isnan(ops.lag(x, 9)).all()


def test_ffill_limit_and_age():
    x = np.array([np.nan, 1.0, np.nan, np.nan, np.nan, 2.0, np.nan])[:, None]
    np.testing.assert_array_equal(ops.ffill(x)[:, 0], [np.nan, 1, 1, 1, 1, 2, 2])
    np.testing.assert_array_equal(ops.ffill_limit(x, 2)[:, 0], [np.nan, 1, 1, 1, np.nan, 2, 2])
    age = ops.age_since_last(~np.isnan(x))[:, 0]
    np.testing.assert_array_equal(age, [np.nan, 0, 1, 2, 3, 0, 1])
    assert np.array_equal(ops.ffill(x), pd.DataFrame(x).ffill().values, equal_nan=True)


def test_ema_wilder_match_talib_and_seed_rules():
    rng = np.random.default_rng(3)
    c = 100 + rng.normal(size=500).cumsum()
    for n in (5, 12, 26, 200):
        np.testing.assert_allclose(ops.ema(c[:, None], n)[:, 0], talib.EMA(c, n), rtol=1e-12, atol=1e-9)
    # Wilder with the SMA seed (hand rule of §3.2) vs an explicit loop
    w = ops.wilder(c[:, None], 14)[:, 0]
    ref = np.full(500, np.nan)
    ref[13] = c[:14].mean()
    for k in range(14, 500):
        ref[k] = ref[k - 1] + (c[k] - ref[k - 1]) / 14
    np.testing.assert_allclose(w, ref, rtol=1e-12)
    # null inputs are skipped: the state carries over the hole and the output there is NaN
    x = c[:40].copy()
    x[20] = np.nan
    e = ops.ema(x[:, None], 5)[:, 0]
    ref = talib.EMA(np.delete(x, 20), 5)
    assert np.isnan(e[20])
    np.testing.assert_allclose(np.delete(e, 20), ref, rtol=1e-12)


def test_linear_scan_matches_loop():
    rng = np.random.default_rng(4)
    a, b = rng.uniform(0, 1, (77, 3)), rng.normal(size=(77, 3))
    y = ops.linear_scan(a, b)
    ref = np.zeros_like(b)
    prev = np.zeros(3)
    for t in range(77):
        prev = a[t] * prev + b[t]
        ref[t] = prev
    np.testing.assert_allclose(y, ref, rtol=1e-12)


def test_cross_section_ops_match_pandas():
    x = _panel(5, T=30, N=8, holes=True)
    rng = np.random.default_rng(5)
    mask = rng.random(x.shape) < 0.9
    df = pd.DataFrame(np.where(mask, x, np.nan))
    np.testing.assert_allclose(ops.cs_mean(x, mask), df.mean(axis=1).values, rtol=1e-12)
    np.testing.assert_allclose(ops.cs_std(x, mask), df.std(axis=1).values, rtol=1e-10)
    z = ops.cs_z(x, mask)
    ref = df.sub(df.mean(axis=1), axis=0).div(df.std(axis=1) + 1e-12, axis=0)
    np.testing.assert_allclose(z, ref.values, rtol=1e-9)
    x2 = np.round(x)  # ties
    df2 = pd.DataFrame(np.where(mask, x2, np.nan))
    n = df2.count(axis=1)
    ref_rank = df2.rank(axis=1, method="average").sub(1).div(n - 1, axis=0)
    np.testing.assert_allclose(ops.cs_rankpct(x2, mask), ref_rank.values, rtol=1e-12)


def _long(x, g, mask):
    T, N = x.shape
    t, n = np.meshgrid(np.arange(T), np.arange(N), indexing="ij")
    df = pd.DataFrame({"t": t.ravel(), "n": n.ravel(), "g": g.ravel(), "x": x.ravel(), "m": mask.ravel()})
    return df[(df.m) & df.x.notna() & (df.g >= 0)]


def test_group_ops_match_pandas_groupby():
    rng = np.random.default_rng(6)
    T, N, G = 25, 30, 5
    x = np.round(rng.normal(size=(T, N)) * 3)  # ties
    x[rng.random((T, N)) < 0.1] = np.nan
    g = rng.integers(-1, G, size=(T, N))
    mask = rng.random((T, N)) < 0.95
    df = _long(x, g, mask)
    grp = df.groupby(["t", "g"]).x
    n = grp.count()
    count, mean, std = ops.group_moments(x, g, G, mask)
    for name, out, ref in [
        ("mean", mean, grp.mean()),
        ("std", std, grp.std()),
        ("median", ops.group_median(x, g, G, mask), grp.median()),
    ]:
        expect = np.full((T, G), np.nan)
        ok = n >= 3
        expect[ref[ok].index.get_level_values(0), ref[ok].index.get_level_values(1)] = ref[ok].values
        np.testing.assert_allclose(out, expect, rtol=1e-10, err_msg=name)
    for counts in (count, ops.group_count(x, g, G, mask)):
        np.testing.assert_array_equal(
            counts[n.index.get_level_values(0), n.index.get_level_values(1)], n.values
        )
    df["rank"] = df.groupby(["t", "g"]).x.rank(method="average")
    df["cnt"] = df.groupby(["t", "g"]).x.transform("count")
    df["pct"] = np.where(df.cnt >= 3, (df["rank"] - 1) / (df.cnt - 1), np.nan)
    df["z"] = np.where(
        df.cnt >= 3,
        (df.x - df.groupby(["t", "g"]).x.transform("mean"))
        / (df.groupby(["t", "g"]).x.transform("std") + 1e-12),
        np.nan,
    )
    pct = ops.group_rankpct(x, g, G, mask)
    z = ops.group_z(x, g, G, mask)
    np.testing.assert_allclose(pct[df.t, df.n], df.pct.values, rtol=1e-12)
    np.testing.assert_allclose(z[df.t, df.n], df.z.values, rtol=1e-9, atol=1e-12)
    outside = np.ones((T, N), dtype=bool)
    outside[df.t, df.n] = False
    assert np.isnan(pct[outside]).all() and np.isnan(z[outside]).all()


def test_group_z_flat_group_is_zero():
    x = np.array([[0.1, 0.1, 0.1, 5.0, 6.0, 7.0]])
    g = np.array([[0, 0, 0, 1, 1, 1]])
    z = ops.group_z(x, g, 2)
    assert (z[0, :3] == 0.0).all()
    np.testing.assert_allclose(z[0, 3:], [-1, 0, 1], rtol=1e-9)
    assert ops.group_moments(x, g, 2)[2][0, 0] == 0.0


def test_scatter_asof_hand_example():
    # events (row, col, value) in priority order; equal keys: the last one wins
    rows = np.array([1, 3, 3, 0, 9])
    cols = np.array([0, 0, 0, 1, 1])
    vals = np.array([10.0, 20.0, 21.0, np.nan, 5.0])
    out, age = ops.scatter_asof(6, 2, rows, cols, vals, return_age=True)
    np.testing.assert_array_equal(out[:, 0], [np.nan, 10, 10, 21, 21, 21])
    # column 1: the event at row 0 has an empty value and is carried as empty; row 9 is past the end
    assert np.isnan(out[:, 1]).all()
    np.testing.assert_array_equal(age[:, 0], [np.nan, 0, 1, 0, 1, 2])
    np.testing.assert_array_equal(age[:, 1], [0, 1, 2, 3, 4, 5])
    plus, minus = ops.scatter_asof(6, 2, rows, cols, np.stack([vals, -vals], axis=1))
    np.testing.assert_array_equal(plus, out)
    np.testing.assert_array_equal(minus, -out)
    event, since = ops.attached_event(6, 2, rows, cols)
    np.testing.assert_array_equal(event[:, 0], [-1, 0, 0, 2, 2, 2])  # event 2 wins over event 1 at row 3
    np.testing.assert_array_equal(since[:, 1], [0] * 6)
    none = ops.scatter_asof(6, 2, rows[:0], cols[:0], vals[:0])
    assert none.shape == (6, 2) and np.isnan(none).all()
