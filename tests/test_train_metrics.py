"""The scorer (train/metrics.py) against independent references: SciPy, alphalens-reloaded,
empyrical-reloaded, a transcription of the JPX competition's formula, a Qlib TopkDropout transcription and
hand-worked examples.

One small random market serves most tests, so the scorer compiles for a handful of shapes only. It runs
in float32 while the references run in float64: correlations over <= 30 stocks agree to ~1e-6 (a few float32
roundings of sums of 30 terms of order 1), returns of order 0.02 to ~1e-8 absolute, and ratios over 40 days
(compounding, square roots) to ~1e-5 relative; the tolerances below leave a factor of about 10.
"""

from __future__ import annotations

import dataclasses
import json
import warnings

import hypothesis.strategies as st
import jax
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from scipy import stats

from etl.config import ConfigError
from etl.errors import GogookuError
from train import metrics
from train.config import SESSIONS_PER_YEAR, load_config
from train.metrics import MetricsConfig, rank_ic, score, select_dates, summarise

D, N, H = 40, 30, 3
HORIZONS = (1, 2, 5)
CFG = MetricsConfig(lag=1, cost_bp=10.0, top_k=5, n_drop=2, jpx_size=5, min_stocks=4)
CORR_TOL = 1e-5
RET_TOL = 1e-7
RATIO_RTOL = 1e-4


def make_market(seed: int = 0) -> dict[str, np.ndarray]:
    """A [D, N, H] market with masked stocks, NaN returns, ties and small universes.

    Horizon 0 has continuous predictions; horizon 1 ties in its returns (rounded to 1 %); horizon 2 ties in
    its predictions (rounded to integers) and is constant on date 5. Each (date, horizon) keeps n valid
    stocks with n - 1 in {11, 13, 17, 23}, prime to 10 and 5, so that no pandas.qcut edge falls exactly on a
    stock (where float rounding in pandas would decide the bin); date 3 keeps 3 (below min_stocks).
    The daily returns have T = D + 1 rows, the last one all NaN (the data ends), and rows 10-14 only 4-9
    finite stocks (small JPX universes).
    """
    rng = np.random.default_rng(seed)
    pred = rng.normal(size=(D, N, H))
    pred[..., 2] = np.round(pred[..., 2])
    pred[5, :, 2] = 0.25
    ret = rng.normal(0.0, 0.02, size=(D, N, H))
    ret[..., 1] = np.round(ret[..., 1], 2)
    mask = np.ones((D, N, H), bool)
    for d in range(D):
        for h in range(H):
            n = 3 if d == 3 else rng.choice([12, 14, 18, 24])
            out = rng.permutation(N)[n:]
            half = len(out) // 2
            mask[d, out[:half], h] = False
            ret[d, out[half:], h] = np.nan
    pred[~mask] = rng.normal(size=(~mask).sum()) * 100  # masked predictions are garbage
    daily = rng.normal(0.0005, 0.02, size=(D + 1, N))
    daily[-1] = np.nan
    for t in range(10, 15):
        daily[t, rng.permutation(N)[rng.integers(4, 10) :]] = np.nan
    daily[20:26, 7] = np.nan  # a stock without returns for a week: held, it earns 0
    topix = rng.normal(0.0003, 0.01, size=D + 1)
    topix[-1] = np.nan
    code_order = rng.permutation(N)  # ties are broken by code, which is not the N order here
    return {"pred": pred, "ret": ret, "mask": mask, "daily": daily, "topix": topix, "codes": code_order}


@pytest.fixture(scope="module")
def market():
    return make_market()


def run(m: dict, config: MetricsConfig = CFG):
    out = score(m["pred"], m["ret"], m["mask"], m["daily"], m["topix"], m["codes"], config=config)
    return jax.tree.map(np.asarray, out)


@pytest.fixture(scope="module")
def scored(market):
    return run(market)


def signal_rows(m: dict, d: int, h: int):
    valid = m["mask"][d, :, h] & np.isfinite(m["pred"][d, :, h]) & np.isfinite(m["ret"][d, :, h])
    return m["pred"][d, valid, h], m["ret"][d, valid, h]


# --- IC, RankIC, hit rate against SciPy / NumPy ---


def test_ic_and_rank_ic_equal_scipy_per_date_with_ties_and_masks(market, scored):
    sig = scored.per_date["signal"]
    checked = 0
    for d in range(D):
        for h in range(H):
            p, r = signal_rows(market, d, h)
            if len(p) < CFG.min_stocks or np.ptp(p) == 0:
                assert np.isnan(sig["ic"][d, h]) and np.isnan(sig["rank_ic"][d, h])
                continue
            np.testing.assert_allclose(sig["ic"][d, h], stats.pearsonr(p, r)[0], atol=CORR_TOL)
            np.testing.assert_allclose(sig["rank_ic"][d, h], stats.spearmanr(p, r)[0], atol=CORR_TOL)
            assert sig["n_stocks"][d, h] == len(p)
            checked += 1
    assert checked == D * H - 3 - 1  # date 3 (3 stocks) and the constant date 5 of horizon 2


def test_rank_ic_function_equals_scipy_and_is_nan_below_two(market):
    pred, ret, mask = market["pred"][..., 2], market["ret"][..., 1], market["mask"][..., 0].copy()
    mask[7] = False
    mask[8, :] = False
    mask[8, 4] = True  # one valid stock
    got = np.asarray(rank_ic(pred, ret, mask))
    for d in range(D):
        valid = mask[d] & np.isfinite(pred[d]) & np.isfinite(ret[d])
        if valid.sum() < 2:
            assert np.isnan(got[d])
        else:
            np.testing.assert_allclose(
                got[d], stats.spearmanr(pred[d, valid], ret[d, valid])[0], atol=CORR_TOL
            )
    assert np.isnan(got[7]) and np.isnan(got[8])


def test_hit_rate_is_agreement_about_the_medians(market, scored):
    hit = scored.per_date["signal"]["hit_rate"]
    for d in range(D):
        for h in range(H):
            p, r = signal_rows(market, d, h)
            if len(p) < CFG.min_stocks:
                assert np.isnan(hit[d, h])
                continue
            sp, sr = np.sign(p - np.median(p)), np.sign(r - np.median(r))
            decided = (sp != 0) & (sr != 0)
            want = np.mean(sp[decided] == sr[decided]) if decided.any() else np.nan
            np.testing.assert_allclose(hit[d, h], want, atol=1e-6, equal_nan=True)


def test_signal_aggregates(market, scored):
    sig, agg = scored.per_date["signal"], scored.aggregate["signal"]
    for name, prefix, ir in (("ic", "ic", "icir"), ("rank_ic", "rank_ic", "rank_icir")):
        x = sig[name].astype(np.float64)
        mean, std, n = np.nanmean(x, 0), np.nanstd(x, 0, ddof=1), np.isfinite(x).sum(0)
        np.testing.assert_allclose(agg[f"{prefix}_mean"], mean, atol=1e-6)
        np.testing.assert_allclose(agg[f"{prefix}_std"], std, atol=1e-6)
        np.testing.assert_allclose(agg[ir], mean / std, rtol=1e-4)
        np.testing.assert_allclose(agg[f"{prefix}_t"], mean / std * np.sqrt(n), rtol=1e-4)
    np.testing.assert_array_equal(agg["n_dates"], np.isfinite(sig["rank_ic"]).sum(0))
    np.testing.assert_allclose(agg["hit_rate"], np.nanmean(sig["hit_rate"], 0), atol=1e-6)


def test_rank_ic_decay_is_the_first_head_against_each_horizon(market, scored):
    decay = scored.per_date["signal"]["rank_ic_decay"]
    m = market
    for d in range(D):
        for h in range(H):
            valid = m["mask"][d, :, 0] & m["mask"][d, :, h] & np.isfinite(m["ret"][d, :, h])
            if valid.sum() < CFG.min_stocks:
                assert np.isnan(decay[d, h])
                continue
            want = stats.spearmanr(m["pred"][d, valid, 0], m["ret"][d, valid, h])[0]
            np.testing.assert_allclose(decay[d, h], want, atol=CORR_TOL)
    np.testing.assert_allclose(
        scored.aggregate["signal"]["rank_ic_decay"][0],
        scored.aggregate["signal"]["rank_ic_mean"][0],
        atol=1e-7,
    )


# --- deciles and factor IC against alphalens ---


def alphalens_frame(m: dict, h: int, quantiles: int) -> pd.DataFrame:
    """alphalens' clean factor data for horizon h. Mapping: alphalens' factor = our prediction, its forward
    return column '1D' = our h-day return (simple, close t -> close t+h, as alphalens computes from prices),
    its factor_quantile (pandas.qcut(..., labels=False) + 1 per date) = our bin + 1."""
    dates = pd.bdate_range("2024-01-04", periods=D, name="date")
    idx = pd.MultiIndex.from_product([dates, [f"S{n:02d}" for n in range(N)]], names=["date", "asset"])
    from alphalens import utils as al_utils  # heavy imports (statsmodels, seaborn): only where used

    keep = m["mask"][..., h].ravel()
    factor = pd.Series(m["pred"][..., h].ravel(), index=idx)[keep]
    fwd = pd.DataFrame({"1D": m["ret"][..., h].ravel()}, index=idx)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return al_utils.get_clean_factor(factor, fwd, quantiles=quantiles, max_loss=1.0)


@pytest.mark.parametrize("h", [0, 1])
def test_deciles_spread_and_factor_ic_equal_alphalens(market, scored, h, capsys):
    from alphalens import performance as al_perf

    fd = alphalens_frame(market, h, CFG.quantiles)
    capsys.readouterr()  # alphalens prints how much it dropped
    mean_ret, _ = al_perf.mean_return_by_quantile(fd, by_date=True, demeaned=False)
    decile = scored.per_date["signal"]["decile"][:, h]  # [D, Q]
    days = pd.bdate_range("2024-01-04", periods=D)
    assert set(fd.index.get_level_values("date")) == set(days)
    for i, day in enumerate(days):
        if i == 3:  # fewer than min_stocks: NaN here, alphalens still bins its 3 stocks
            assert np.isnan(decile[i]).all()
            continue
        want = mean_ret["1D"].xs(day, level="date")
        got = {q + 1: decile[i, q] for q in range(CFG.quantiles) if np.isfinite(decile[i, q])}
        assert got.keys() == set(want.index)
        np.testing.assert_allclose([got[q] for q in want.index], want.to_numpy(), atol=RET_TOL)
    ic = al_perf.factor_information_coefficient(fd)["1D"].to_numpy()
    ours = scored.per_date["signal"]["rank_ic"][:, h]
    np.testing.assert_allclose(np.delete(ours, 3), np.delete(ic, 3), atol=CORR_TOL)
    # alphalens' spread is that of a book 50 % long the top and 50 % short the bottom: half of ours
    spread = 2 * al_perf.compute_mean_returns_spread(mean_ret, CFG.quantiles, 1)[0]["1D"].to_numpy()
    np.testing.assert_allclose(
        np.delete(scored.per_date["signal"]["spread"][:, h], 3), np.delete(spread, 3), atol=RET_TOL
    )
    mean_by_q, _ = al_perf.mean_return_by_quantile(
        fd[fd.index.get_level_values("date") != days[3]], demeaned=False
    )
    np.testing.assert_allclose(
        scored.aggregate["signal"]["decile_mean"][h], mean_by_q["1D"].to_numpy(), atol=RET_TOL
    )


def test_qcut_bins_equal_pandas_with_ties():
    """Bins from each value's lowest rank (SciPy's method="min") are where pandas.qcut's edges put them."""
    rng = np.random.default_rng(3)
    xs = [np.round(rng.normal(size=n), 1) for n in range(2, 60)]  # ties; edges fall on stocks for many n
    lowest = np.zeros((len(xs), 60), np.int32)
    for r, x in enumerate(xs):
        lowest[r, : len(x)] = stats.rankdata(x, method="min") - 1
    bins = np.asarray(metrics._qcut_bins(lowest, np.array([len(x) for x in xs], np.int32), 5))
    checked = 0
    for r, x in enumerate(xs):
        try:
            want = pd.qcut(x, 5, labels=False)
        except ValueError:  # duplicate edges: qcut refuses, the scorer still bins by value (docs/metrics.md)
            continue
        np.testing.assert_array_equal(bins[r, : len(x)], want)
        checked += 1
    assert checked > 20


# --- portfolios: a hand-worked example ---


HAND_CFG = MetricsConfig(lag=1, cost_bp=10.0, top_k=2, n_drop=1, long_short_quantiles=3, min_stocks=2)


def names(held_DN: np.ndarray) -> list[str]:
    return ["".join("ABCDEF"[i] for i in np.flatnonzero(row)) for row in held_DN]


def hand_market(preds: list[list[float]], rows: list[list[float]]) -> dict:
    pred = np.array(preds, float)[..., None]
    return {
        "pred": pred,
        "ret": np.zeros_like(pred),
        "mask": np.ones_like(pred, bool),
        "daily": np.array(rows, float),
        "topix": np.full(len(rows), 0.001),
        "codes": None,
    }


def test_turnover_costs_and_topk_dropout_on_six_stocks():
    """Six stocks A-F, tercile long-short and top-2 with 1 drop, lag 1, 10 bp per side (docs/metrics.md)."""
    m = hand_market(
        [[6, 5, 4, 3, 2, 1], [5, 6, 1, 3, 2, 4], [1, 2, 3, 4, 5, 6], [1, 2, 6, 5, 4, 3], [2, 2, 2, 2, 2, 2]],
        [
            [0.5, 0.5, 0.5, 0.5, 0.5, 0.5],  # row 0: the session of date 0's close, never traded at lag 1
            [0.01, 0.02, -0.01, 0.00, 0.03, -0.02],
            [-0.02, 0.01, 0.02, 0.01, 0.00, 0.01],
            [0.03, -0.01, 0.00, 0.02, -0.03, 0.04],
            [0.00, 0.01, 0.02, -0.01, 0.05, -0.03],
            [0.01, 0.01, 0.01, 0.01, 0.01, 0.01],
        ],
    )
    out = run(m, HAND_CFG)
    ls, tk = out.per_date["long_short"], out.per_date["top_k"]
    # Long-short: +1/2 on the top two, -1/2 on the bottom two. Date 0: A,B / E,F; date 1: A,B / C,E;
    # date 2: E,F / A,B; date 3: C,D / A,B; date 4: all equal -> no trade, date 3's book is kept.
    np.testing.assert_allclose(ls["turnover"][:, 0], [2.0, 1.0, 4.0, 2.0, 0.0], atol=1e-6)
    gross = [0.010, -0.015, -0.005, 0.0, 0.0]
    np.testing.assert_allclose(ls["gross"][:, 0], gross, atol=1e-8)
    np.testing.assert_allclose(ls["net"][:, 0], [0.008, -0.016, -0.009, -0.002, 0.0], atol=1e-8)
    # Top-2, drop 1: {A,B}; {A,B} (the candidate F ranks below both); {B,F} (A, the worst of A, B and F,
    # is replaced; B is bad too but one name goes per day); {C,F} (B, the worst of B, F and the candidate
    # C, is replaced); date 4: all equal -> no trade.
    assert names(out.per_date["top_k"]["held"][:, 0]) == ["AB", "AB", "BF", "CF", "CF"]
    np.testing.assert_allclose(tk["turnover"][:, 0], [1.0, 0.0, 1.0, 1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(tk["gross"][:, 0], [0.015, -0.005, 0.015, -0.005, 0.01], atol=1e-8)
    net = np.array([0.014, -0.005, 0.014, -0.006, 0.01])
    np.testing.assert_allclose(tk["net"][:, 0], net, atol=1e-8)
    np.testing.assert_allclose(tk["excess"][:, 0], net - 0.001, atol=1e-8)


def test_topk_dropout_replaces_at_most_n_drop_per_day():
    """Top-2, drop 1: when both holdings fall to the bottom, one is replaced per day."""
    m = hand_market(
        [[6, 5, 4, 3, 2, 1], [1, 2, 6, 5, 4, 3], [1, 2, 6, 5, 4, 3], [1, 2, 6, 5, 4, 3], [1, 1, 1, 1, 1, 1]],
        [[0.0] * 6] * 6,
    )
    held = run(m, HAND_CFG).per_date["top_k"]["held"][:, 0]
    # A,B -> B,C (A out, C in) -> C,D (B out, D in) -> C,D (the candidate E ranks below both) -> no trade
    assert names(held) == ["AB", "BC", "CD", "CD", "CD"]


# --- portfolios: references on the random market ---


def ref_long_short(m: dict, h: int, cfg: MetricsConfig) -> pd.DataFrame:
    """Equal-weight top / bottom pandas.qcut quintile, weights kept on dates without a trade."""
    w_prev, rows = np.zeros(N), []
    for d in range(D):
        valid = m["mask"][d, :, h] & np.isfinite(m["pred"][d, :, h])
        w = w_prev
        if valid.sum() >= cfg.min_stocks:
            bins = np.full(N, -1)
            bins[valid] = pd.qcut(m["pred"][d, valid, h], cfg.long_short_quantiles, labels=False)
            top, bottom = bins == cfg.long_short_quantiles - 1, bins == 0
            w = top / top.sum() - bottom / bottom.sum()
        rows.append(book_row(w, w_prev, m["daily"][d + cfg.lag], cfg))
        w_prev = w
    return pd.DataFrame(rows)


def book_row(w, w_prev, r, cfg):
    turnover = np.abs(w - w_prev).sum()
    gross = np.nansum(w * r) if np.isfinite(r).any() else np.nan
    return {"gross": gross, "turnover": turnover, "net": gross - turnover * cfg.cost_bp / 1e4}


def ref_topk_dropout(m: dict, h: int, cfg: MetricsConfig) -> tuple[pd.DataFrame, list[list[int]]]:
    """Qlib's TopkDropoutStrategy.generate_trade_decision (method_sell="bottom", method_buy="top"),
    transcribed on pandas with ties broken by code; a holding without a signal has a NaN score."""
    codes = m["codes"]
    held: list[int] = []
    w_prev, rows, book = np.zeros(N), [], []

    def by_score(score: pd.Series, names) -> pd.Index:
        s = score.reindex(list(names))
        order = sorted(
            range(len(s)), key=lambda i: (np.isnan(s.iloc[i]), -np.nan_to_num(s.iloc[i]), codes[s.index[i]])
        )
        return pd.Index([s.index[i] for i in order])

    for d in range(D):
        valid = m["mask"][d, :, h] & np.isfinite(m["pred"][d, :, h])
        score = pd.Series(m["pred"][d, valid, h], index=np.flatnonzero(valid))
        if valid.sum() >= cfg.min_stocks and np.ptp(score.to_numpy()) > 0:
            last = by_score(score, held)
            today = by_score(score, score.index[~score.index.isin(last)])[
                : cfg.n_drop + cfg.top_k - len(last)
            ]
            comb = by_score(score, last.union(today))
            sell = last[last.isin(list(comb)[-cfg.n_drop :])]
            buy = today[: len(sell) + cfg.top_k - len(last)]
            held = [s for s in last if s not in sell] + list(buy)
        w = np.zeros(N)
        w[held] = 1.0 / max(len(held), 1)
        rows.append(book_row(w, w_prev, m["daily"][d + cfg.lag], cfg))
        book.append(sorted(held))
        w_prev = w
    return pd.DataFrame(rows), book


def check_against_empyrical(agg: dict, h: int, net: np.ndarray):
    import empyrical

    r = pd.Series(net[np.isfinite(net)])
    a = SESSIONS_PER_YEAR
    want = {
        "ann_return": empyrical.annual_return(r, annualization=a),
        "ann_vol": empyrical.annual_volatility(r, annualization=a),
        "sharpe": empyrical.sharpe_ratio(r, annualization=a),
        "sortino": empyrical.sortino_ratio(r, annualization=a),
        "max_drawdown": empyrical.max_drawdown(r),
        "calmar": empyrical.calmar_ratio(r, annualization=a),
    }
    for key, value in want.items():
        np.testing.assert_allclose(agg[key][h], value, rtol=RATIO_RTOL, err_msg=key)


@pytest.mark.parametrize("h", [0, 1])
def test_long_short_equals_reference_and_empyrical(market, scored, h):
    want = ref_long_short(market, h, CFG)
    got = scored.per_date["long_short"]
    for key in ("gross", "net", "turnover"):
        np.testing.assert_allclose(got[key][:, h], want[key], atol=1e-6 if key == "turnover" else RET_TOL)
    assert np.isnan(got["net"][-1, h])  # the data ends: no return on the last date at lag 1
    check_against_empyrical(scored.aggregate["long_short"], h, want["net"].to_numpy())
    np.testing.assert_allclose(
        scored.aggregate["long_short"]["turnover"][h], want["turnover"].mean(), rtol=1e-5
    )


@pytest.mark.parametrize("h", [0, 2])
def test_topk_dropout_equals_qlib_transcription_and_empyrical(market, scored, h):
    want, _ = ref_topk_dropout(market, h, CFG)
    got = scored.per_date["top_k"]
    for key in ("gross", "net", "turnover"):
        np.testing.assert_allclose(got[key][:, h], want[key], atol=1e-6 if key == "turnover" else RET_TOL)
    check_against_empyrical(scored.aggregate["top_k"], h, want["net"].to_numpy())
    excess = want["net"].to_numpy() - market["topix"][CFG.lag : CFG.lag + D]
    np.testing.assert_allclose(got["excess"][:, h], excess, atol=RET_TOL)
    ok = np.isfinite(excess)
    a = SESSIONS_PER_YEAR
    ir = excess[ok].mean() / excess[ok].std(ddof=1) * np.sqrt(a)
    np.testing.assert_allclose(scored.aggregate["top_k"]["information_ratio"][h], ir, rtol=RATIO_RTOL)
    np.testing.assert_allclose(
        scored.aggregate["top_k"]["excess_ann_return"][h], excess[ok].mean() * a, rtol=1e-4
    )


def test_lag_one_session_between_signal_and_trade():
    """A signal that knows the next session's return earns it at lag 0 and nothing at lag 1."""
    rng = np.random.default_rng(7)
    m = make_market(7)
    m["daily"] = rng.normal(0.0, 0.02, size=(D + 1, N))
    m["pred"] = np.repeat(m["daily"][:D, :, None], H, axis=2)  # knows close t -> close t+1
    m["mask"][:] = True
    m["mask"][3] = False  # below min_stocks (no trade)
    configs = {0: dataclasses.replace(CFG, lag=0), 1: CFG}  # CFG's compilation serves lag 1
    results = {lag: run(m, configs[lag]) for lag in (0, 1)}
    ls0, ls1 = (results[lag].per_date["long_short"]["gross"][:, 0] for lag in (0, 1))
    assert np.nanmean(ls0) > 0.04  # the top fifth beats the bottom fifth by ~2.8 sigma of 2 %
    assert abs(np.nanmean(ls1)) < 3 * np.nanstd(ls1) / np.sqrt(np.isfinite(ls1).sum())
    assert results[0].aggregate["long_short"]["sharpe"][0] > 50
    assert abs(results[1].aggregate["long_short"]["sharpe"][0]) < 8  # 40 days: the estimate's sd is ~2.5
    # The JPX target is close t+1 -> close t+2 whatever the lag: this signal is one session too early for it.
    assert abs(results[0].aggregate["jpx"]["score"][0]) < 0.5
    m["pred"] = np.repeat(m["daily"][1:, :, None], H, axis=2)
    assert run(m, configs[0]).aggregate["jpx"]["score"][0] > 3


# --- the JPX competition score ---


def calc_spread_return_sharpe_per_day(
    df: pd.DataFrame, portfolio_size: int = 200, toprank_weight_ratio: float = 2
):
    """The competition's published `_calc_spread_return_per_day`, as written there."""
    assert df["Rank"].min() == 0
    assert df["Rank"].max() == len(df["Rank"]) - 1
    weights = np.linspace(start=toprank_weight_ratio, stop=1, num=portfolio_size)
    purchase = (df.sort_values(by="Rank")["Target"][:portfolio_size] * weights).sum() / weights.mean()
    short = (
        df.sort_values(by="Rank", ascending=False)["Target"][:portfolio_size] * weights
    ).sum() / weights.mean()
    return purchase - short


def jpx_reference(m: dict, h: int, cfg: MetricsConfig) -> np.ndarray:
    """Per day: drop null targets, rank best prediction first with ties broken by Code (Rank 0..n-1), then
    the competition's formula with baskets of min(jpx_size, n // 2)."""
    out = np.full(len(m["pred"]), np.nan)
    for d in range(len(m["pred"])):
        target = m["daily"][d + 1]  # close t+1 -> close t+2
        df = pd.DataFrame(
            {"Code": [f"{1300 + c}" for c in m["codes"]], "pred": m["pred"][d, :, h], "Target": target}
        )
        df = df[m["mask"][d, :, h] & np.isfinite(df["pred"]) & df["Target"].notna()]
        if len(df) < cfg.min_stocks:
            continue
        df = df.sort_values(["pred", "Code"], ascending=[False, True])
        df["Rank"] = np.arange(len(df))
        size = min(cfg.jpx_size, len(df) // 2)
        out[d] = calc_spread_return_sharpe_per_day(df, size, cfg.jpx_top_weight)
    return out


@pytest.mark.parametrize("h", [0, 2])
def test_jpx_score_equals_the_competition_formula(market, scored, h):
    want = jpx_reference(market, h, CFG)
    small = [d for d in range(10, 15) if np.isfinite(want[d - 1])]
    assert small, "the fixture must hold small universes"
    np.testing.assert_allclose(scored.per_date["jpx"]["spread"][:, h], want, atol=1e-6)
    ok = np.isfinite(want)
    np.testing.assert_allclose(
        scored.aggregate["jpx"]["score"][h], want[ok].mean() / want[ok].std(ddof=1), rtol=RATIO_RTOL
    )


# --- masks, look-ahead, config, errors, summary ---


def test_masked_stocks_never_matter(market, scored):
    m = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in market.items()}
    rng = np.random.default_rng(5)
    hidden = ~m["mask"]
    m["pred"][hidden] = rng.choice([np.nan, np.inf, -1e9, 1e9], size=hidden.sum())
    m["ret"][hidden] = rng.normal(size=hidden.sum())
    again = run(m)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), scored, again)


@settings(max_examples=6, deadline=None)
@given(t=st.integers(0, D - 2), seed=st.integers(0, 2**16))
def test_no_look_ahead_perturbing_the_future_leaves_the_past(market, scored, t, seed):
    """Everything a date reports uses its own predictions and returns up to close t + max(lag, 1) + 1."""
    rng = np.random.default_rng(seed)
    m = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in market.items()}
    m["pred"][t + 1 :] = rng.normal(size=m["pred"][t + 1 :].shape)
    m["ret"][t + 1 :] = rng.normal(size=m["ret"][t + 1 :].shape)
    m["daily"][t + 2 :] = rng.normal(size=m["daily"][t + 2 :].shape)  # lag 1: date t trades row t + 1
    m["topix"][t + 2 :] = rng.normal(size=m["topix"][t + 2 :].shape)
    again = run(m)
    jax.tree.map(
        lambda a, b: np.testing.assert_array_equal(a[: t + 1], b[: t + 1]), scored.per_date, again.per_date
    )


def test_eval_section_of_the_run_config():
    cfg = load_config(None, ["eval.lag=0", "eval.cost_bp=5", "eval.top_k=20"])
    assert cfg.eval == MetricsConfig(lag=0, cost_bp=5.0, top_k=20)
    for bad in ("eval.lag=-1", "eval.n_drop=60", "eval.min_stocks=1", "eval.quantiles=1", "eval.topk=3"):
        with pytest.raises(ConfigError, match="eval"):
            load_config(None, [bad])


def test_bad_shapes_are_one_clear_error(market):
    m = market
    with pytest.raises(GogookuError, match=r"T >= 41"):
        score(m["pred"], m["ret"], m["mask"], m["daily"][:-1], m["topix"][:-1], config=CFG)
    with pytest.raises(ConfigError, match="n_drop"):
        score(m["pred"], m["ret"], m["mask"], m["daily"], m["topix"], config=MetricsConfig(top_k=3, n_drop=4))
    with pytest.raises(GogookuError, match="dates, stocks, horizons"):
        score(m["pred"][..., 0], m["ret"][..., 0], m["mask"][..., 0], m["daily"], m["topix"], config=CFG)


def test_summary_is_plain_json(scored):
    out = summarise(scored, HORIZONS, CFG)
    text = json.dumps(out, allow_nan=False)
    assert set(out["horizons"]) == {"1d", "2d", "5d"}
    one = out["horizons"]["1d"]
    assert one["signal"]["rank_ic_mean"] == pytest.approx(
        float(scored.aggregate["signal"]["rank_ic_mean"][0])
    )
    assert len(one["signal"]["decile_mean"]) == CFG.quantiles
    assert set(one["top_k"]) >= {"sharpe", "sortino", "max_drawdown", "calmar", "information_ratio"}
    assert out["config"]["lag"] == 1 and out["sessions_per_year"] == SESSIONS_PER_YEAR
    assert "NaN" not in text
    with pytest.raises(GogookuError, match="horizon"):
        summarise(scored, (1, 2))


def test_select_dates_gives_the_aggregates_of_the_kept_dates(market, scored):
    """A prefix of the sequence scored alone is the sequence restricted to it (the portfolios start from
    cash either way); an inner segment's signal and JPX aggregates are its own."""
    m = market
    prefix = 25
    alone = run(
        {
            **m,
            "pred": m["pred"][:prefix],
            "ret": m["ret"][:prefix],
            "mask": m["mask"][:prefix],
            "daily": m["daily"][: prefix + 1],
            "topix": m["topix"][: prefix + 1],
        }
    )
    cut = jax.tree.map(np.asarray, select_dates(scored, np.arange(D) < prefix))
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b[:prefix]), alone.per_date, cut.per_date)
    # the same values reduced over arrays of another length: float32 sums may round differently
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=RATIO_RTOL, atol=RET_TOL),
        alone.aggregate,
        cut.aggregate,
    )
    assert np.isnan(cut.per_date["long_short"]["turnover"][prefix:]).all()
    lo, hi = 12, 30
    inner = run(
        {
            **m,
            "pred": m["pred"][lo:hi],
            "ret": m["ret"][lo:hi],
            "mask": m["mask"][lo:hi],
            "daily": m["daily"][lo : hi + 1],
            "topix": m["topix"][lo : hi + 1],
        }
    )
    cut = jax.tree.map(np.asarray, select_dates(scored, (np.arange(D) >= lo) & (np.arange(D) < hi)))
    for part in ("signal", "jpx"):
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=RATIO_RTOL, atol=RET_TOL),
            inner.aggregate[part],
            cut.aggregate[part],
        )
    everything = jax.tree.map(np.asarray, select_dates(scored, np.ones(D, bool)))
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=0),
        scored.aggregate,
        everything.aggregate,
    )
