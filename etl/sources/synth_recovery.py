"""How much of the synthetic market's hidden peer graph the daily correlation graph finds.

The reference graph is the ETL's own (FEATURES.md §4.13: `etl.graph.corr.peer_table` and
`etl.graph.build.undirected_edges`, float32 correlations as the ETL builds them) on the ETL's own input:
`returns_1d` of the carried adjusted close over grid sessions, masked to universe rows (`graph_inputs`).
It is measured on every `stride`-th grid session (`sample_stride`), so the cost stays a small part of
`gogooku synth`: one date's graph costs ~N^2 operations.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from etl import ops
from etl.config import GraphConfig
from etl.graph.build import undirected_edges
from etl.graph.corr import peer_table
from etl.panels.panel import grid_sessions

STRIDE = 20  # measure every 20th grid session (58 dates on the 2019-2023 demo) ...
WORK = 2e8  # ... or fewer, at most WORK / N^2 dates (12 for 4,000 codes), and at least MIN_DATES
MIN_DATES = 8


def sample_stride(t_len: int, n: int, window: int) -> int:
    """Every how many grid sessions the recovery is measured (dates window - 1, + stride, ...)."""
    dates = max(t_len - window + 1, 1)
    most = max(int(WORK // max(n, 1) ** 2), MIN_DATES)
    return max(STRIDE, -(-dates // most))


def carried_close(
    sessions: np.ndarray, adj_close_TN: np.ndarray, listed_TN: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(grid rows into `sessions`, close_TN, here_TN): the ETL's close panel C (FEATURES.md §1.3).

    `adj_close_TN`: AdjustmentClose as daily_quotes holds it (NaN on no-trade rows); `listed_TN`: the code
    has a daily_quotes row. The outage day is not a grid session; a no-trade session carries the last close;
    sessions before the first trade and outside the listing are NaN.
    """
    rows = np.flatnonzero(np.isin(sessions, grid_sessions(sessions)))
    here = listed_TN[rows]
    close = np.where(here, ops.ffill(np.where(here, adj_close_TN[rows], np.nan)), np.nan)
    return rows, close, here


def graph_inputs(
    sessions: np.ndarray, adj_close_TN: np.ndarray, listed_TN: np.ndarray, universe_N: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(grid rows into `sessions`, returns_TN, row_mask_TN) as the ETL's graph stage sees them.

    `universe_N`: a common stock on a universe market (every synthetic code but the ETFs). returns_1d =
    C_t / C_{t-1} - 1 (#19) on the carried close, kept only on universe rows (etl/features/graph_columns.py).
    """
    rows, close, here = carried_close(sessions, adj_close_TN, listed_TN)
    row_mask = here & universe_N[None, :]
    return rows, np.where(row_mask, close / ops.lag(close, 1) - 1.0, np.nan), row_mask


def peer_pair_keys(peers_NM: np.ndarray, stocks_N: np.ndarray) -> np.ndarray:
    """Sorted unique keys i * N + j (i < j) of the undirected hidden-peer pairs among common stocks."""
    n = peers_NM.shape[0]
    i = np.repeat(np.arange(n), peers_NM.shape[1])
    j = peers_NM.reshape(-1)
    keep = stocks_N[i] & stocks_N[j]
    lo, hi = np.minimum(i, j)[keep], np.maximum(i, j)[keep]
    return np.unique(lo.astype(np.int64) * n + hi)


def recovery(
    returns_TN: np.ndarray,
    row_mask_TN: np.ndarray,
    peers_NM: np.ndarray,
    stocks_N: np.ndarray,
    cfg: GraphConfig,
    stride: int | None = None,
) -> dict[str, Any]:
    """Hidden-peer recovery of the correlation graph on grid dates cfg.window - 1, + stride, ... (pooled;
    `stride` by default `sample_stride`).

    - `edge_peer_share`: share of the graph's edges that are hidden-peer pairs; `edge_peer_share_random`: the
      same for random pairs of that day's nodes (the share of node pairs that are hidden peers, weighted by
      the day's edge count).
    - `peers_in_top_k`: share of each node's hidden peers (those that are nodes) that are among its top-k
      correlation peers K_i (at most k / m: k = 4 of m = 5 peers); `peers_in_top_k_random`: the same for
      |K_i| nodes drawn at random.
    """
    n = returns_TN.shape[1]
    m = peers_NM.shape[1]
    pair_keys = peer_pair_keys(peers_NM, stocks_N)
    pair_lo, pair_hi = pair_keys // n, pair_keys % n
    w = cfg.window
    stride = stride or sample_stride(returns_TN.shape[0], n, w)
    dates = np.arange(w - 1, returns_TN.shape[0], stride)
    edges = peer_edges = 0
    random_edges = found = peer_total = random_found = 0.0
    for t in dates:
        table = peer_table(
            returns_TN[t - w + 1 : t + 1], row_mask_TN[t - w + 1 : t + 1], cfg, np, start=w - 1
        )
        e = undirected_edges(table, np, w - 1, w)
        keys = e.i_E.astype(np.int64) * n + e.j_E
        edges += keys.size
        peer_edges += int(np.isin(keys, pair_keys).sum())
        node = table.node_TN[-1]
        nodes = int(node.sum())
        if nodes < 2:
            continue
        pairs_among_nodes = int((node[pair_lo] & node[pair_hi]).sum())
        random_edges += keys.size * pairs_among_nodes / (nodes * (nodes - 1) / 2)
        # per node: hidden peers that are nodes, and how many of them its top-k holds
        nbr_NK = table.nbr_TNK[-1]
        own_NM = np.where(node[peers_NM] & node[:, None], peers_NM, -1)  # nodes are universe rows: stocks
        hits_N = (own_NM[:, :, None] == np.where(nbr_NK >= 0, nbr_NK, -2)[:, None, :]).any(axis=2).sum(axis=1)
        peers_N = (own_NM >= 0).sum(axis=1)
        found += int(hits_N.sum())
        peer_total += int(peers_N.sum())
        random_found += float((peers_N * (nbr_NK >= 0).sum(axis=1)).sum() / (nodes - 1))
    return {
        "graph": {"window": cfg.window, "min_obs": cfg.min_obs, "threshold": cfg.threshold, "k": cfg.k},
        "hidden_peers_per_stock": int(m),
        "dates_measured": int(dates.size),
        "every_nth_session": int(stride),
        "edges": int(edges),
        "edge_peer_share": round(peer_edges / max(edges, 1), 4),
        "edge_peer_share_random": round(random_edges / max(edges, 1), 4),
        "peers_in_top_k": round(found / max(peer_total, 1), 4),
        "peers_in_top_k_random": round(random_found / max(peer_total, 1), 4),
    }
