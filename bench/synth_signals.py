"""Measure the synthetic market's signals: the oracle's RankIC per horizon, naive public signals' RankIC, and
how much of the hidden peer graph the correlation graph finds (the tables of docs/synthetic.md).

    .venv/bin/python bench/synth_signals.py                                  # the demo market
    .venv/bin/python bench/synth_signals.py synth.peer_factor_share=0.5      # any synth.key=value override

It generates the market of `--config` (default configs/demo.yaml) into a temporary folder and measures the
written files. RankIC of day t: the Spearman correlation, over the codes with both values, between a score at
the close of t and the realized forward return AdjustmentClose[t+h] / AdjustmentClose[t] - 1 (h daily_quotes
rows later, as tests/test_synth_default.py computes it); the tables give the mean over days, the std across
days and the annualised IR = mean / std x sqrt(245 sessions).

Naive signals (1-day horizon) are computed on the ETL's close panel (carried closes over grid sessions,
universe rows; etl/sources/synth_recovery.py): sector-relative = minus the Sector33 mean of the day (>= 3
members, etl.ops.group_demean). The graph-neighbour signal uses the daily correlation graph of FEATURES.md
§4.13 (the same edges as the feature store's graph_edges.npz); the hidden-peer signal is the same mean over
the generator's 5 hidden peers, which no public data names: its ceiling.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

# run as a script, bench/ is sys.path[0] and bench/etl.py would shadow the etl package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from etl import ops  # noqa: E402
from etl.config import GraphConfig  # noqa: E402
from etl.graph.build import undirected_edges  # noqa: E402
from etl.graph.corr import peer_table  # noqa: E402
from etl.panels.panel import Grid, pivot  # noqa: E402
from etl.sources.raw_store import read_endpoint  # noqa: E402
from etl.sources.synth_recovery import carried_close  # noqa: E402
from etl.sources.synthetic import HORIZONS, generate  # noqa: E402

SESSIONS_PER_YEAR = 245


def forward_returns(raw: Path) -> pl.DataFrame:
    """(Date, Code, fwd_{h}d): AdjustmentClose h daily_quotes rows later over today's, per code."""
    dq = read_endpoint(raw, "prices_daily_quotes").select("Date", "Code", "AdjustmentClose").collect()
    close = pl.col("AdjustmentClose")
    fwd = [(close.shift(-h).over("Code") / close - 1).alias(f"fwd_{h}d") for h in HORIZONS]
    return dq.sort("Code", "Date").with_columns(fwd).drop("AdjustmentClose")


def rank_ic(scores: pl.DataFrame, fwd: pl.DataFrame, score: str, h: int) -> dict[str, float]:
    """Mean and std over days of the daily Spearman correlation of `score` with the h-day forward return."""
    col = f"fwd_{h}d"
    joined = scores.select("Date", "Code", score).join(fwd.select("Date", "Code", col), on=["Date", "Code"])
    joined = joined.drop_nulls([score, col]).filter(pl.col(col).is_finite() & pl.col(score).is_finite())
    daily = joined.group_by("Date").agg(pl.corr(score, col, method="spearman").alias("ic"))["ic"].drop_nulls()
    mean, std = float(daily.mean()), float(daily.std())
    return {"mean": mean, "std": std, "ir": mean / std * np.sqrt(SESSIONS_PER_YEAR), "days": daily.len()}


def neighbour_mean(value_TN: np.ndarray, t_E: np.ndarray, i_E: np.ndarray, j_E: np.ndarray) -> np.ndarray:
    """[T, N] mean of `value` over each node's graph neighbours of the day (NaN values skipped)."""
    t_len, n = value_TN.shape
    src = np.concatenate([t_E * n + j_E, t_E * n + i_E]).astype(np.int64)  # both directions of every edge
    dst = np.concatenate([t_E * n + i_E, t_E * n + j_E]).astype(np.int64)
    v = value_TN.reshape(-1)[src]
    ok = np.isfinite(v)
    total = np.bincount(dst[ok], weights=v[ok], minlength=t_len * n)
    count = np.bincount(dst[ok], minlength=t_len * n)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan).reshape(t_len, n)


def naive_scores(raw: Path, m) -> pl.DataFrame:
    """(Date, Code, one column per naive signal) on the grid's universe rows."""
    uni = m.uni
    grid = Grid(dates=m.sessions, codes=uni.codes, business_days=m.sessions)
    dq = read_endpoint(raw, "prices_daily_quotes").select("Date", "Code", "AdjustmentClose").collect()
    panels, listed = pivot(grid, dq, ["AdjustmentClose"])
    rows, close, here = carried_close(m.sessions, panels["AdjustmentClose"], listed)
    universe = here & ~uni.is_etf[None, :]
    sector = np.broadcast_to(uni.sector_id, close.shape)
    n_sec = int(uni.sector_id.max()) + 1

    def ret(k: int) -> np.ndarray:
        return np.where(universe, close / ops.lag(close, k) - 1.0, np.nan)

    def relative(x: np.ndarray) -> np.ndarray:
        return ops.group_demean(x, sector, n_sec, universe)

    r1 = ret(1)
    rel1 = relative(r1)
    table = peer_table(r1, universe, GraphConfig(), np)
    edges = undirected_edges(table, np)
    hidden = m.ret.peers
    at_peers = np.stack([rel1[:, hidden[:, k]] for k in range(hidden.shape[1])])
    count = np.isfinite(at_peers).sum(axis=0)
    hidden_mean = np.where(count > 0, np.nansum(at_peers, axis=0) / np.maximum(count, 1), np.nan)
    scores = {
        "reversal_5d_sector_relative": -relative(ret(5)),
        "reversal_1d_sector_relative": -rel1,
        "sector_return_20d": ops.group_gather(ops.group_moments(ret(20), sector, n_sec, universe)[1], sector),
        "graph_neighbours_1d_sector_relative": neighbour_mean(rel1, edges.t_E, edges.i_E, edges.j_E),
        "hidden_peers_1d_sector_relative": hidden_mean,
    }
    t, i = np.nonzero(universe)
    data = {"Date": pl.Series(m.sessions[rows][t]).cast(pl.Date), "Code": uni.codes[i].astype(str)}
    return pl.DataFrame(data | {k: np.where(universe, v, np.nan)[t, i] for k, v in scores.items()})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("overrides", nargs="*", help="synth.key=value")
    args = ap.parse_args()
    from train.config import load_config

    cfg = load_config(args.config, args.overrides).synth
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp)
        t0 = time.perf_counter()
        m = generate(cfg, raw)
        print(f"generated {cfg} in {time.perf_counter() - t0:.1f} s", flush=True)
        recovery = json.loads((raw / "synthetic.json").read_text())["graph_recovery"]
        fwd = forward_returns(raw)
        oracle = pl.read_parquet(raw / "oracle.parquet")
        naive = naive_scores(raw, m)
    print("\noracle RankIC (mean over days, std across days):")
    print("| h | " + " | ".join(str(h) for h in HORIZONS) + " |")
    ics = [rank_ic(oracle, fwd, f"expected_return_{h}d", h) for h in HORIZONS]
    print("| mean daily RankIC | " + " | ".join(f"{r['mean']:.3f}" for r in ics) + " |")
    print("| std across days | " + " | ".join(f"{r['std']:.3f}" for r in ics) + " |")
    print("  unrounded means: " + ", ".join(f"{r['mean']:.6f}" for r in ics))
    print("\nnaive signals, 1-day forward:")
    for name in naive.columns[2:]:
        r = rank_ic(naive, fwd, name, 1)
        print(
            f"  {name:38s} RankIC {r['mean']:.4f}  std {r['std']:.3f}  IR {r['ir']:.1f}  ({r['days']} days)"
        )
    print("\ngraph recovery (synthetic.json):", json.dumps(recovery, sort_keys=True))


if __name__ == "__main__":
    main()
