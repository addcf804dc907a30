"""Daily correlation graphs: the 18 graph columns of FEATURES.md §4.13 and the model's padded edge arrays.

`build_graphs(returns_TN, row_mask_TN, sector33_TN, market_TN, cfg, xp)` is the whole stage as array code
(xp = NumPy or CuPy): peers and top-k from trailing correlations (etl/graph/corr.py), the undirected graph
E_t = {{i, j} : j in K_i or i in K_j}, the metrics on the disjoint union of the dates' graphs
(etl/graph/metrics.py), and edge arrays. `write_graph_edges` / `read_graph_edges` store the edges beside the
feature store. The stock axis must be sorted by Code (the tie and component-order rules use it).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from etl.config import GraphConfig
from etl.errors import GogookuError
from etl.graph.corr import PeerTable, start_peer_table, work_sizes
from etl.graph.metrics import METRIC_COLUMNS, union_metrics
from etl.ops import to_host

# (column, dtype on write) in catalog order, FEATURES.md #329-#346
GRAPH_COLUMNS: tuple[tuple[str, str], ...] = (
    ("peer_count", "i16"),
    ("peer_corr_mean", "f32"),
    ("graph_degree", "i16"),
    ("graph_degree_z", "f32"),
    ("graph_comp_id", "i32"),
    ("graph_comp_size", "i32"),
    ("graph_degree_in_comp", "f32"),
    ("graph_degree_z_in_comp", "f32"),
    ("graph_pagerank", "f32"),
    ("graph_pagerank_share_comp", "f32"),
    ("graph_pagerank_z_in_comp", "f32"),
    ("graph_clustering", "f32"),
    ("graph_avg_neigh_deg", "f32"),
    ("graph_core", "i16"),
    ("graph_degree_centrality", "f32"),
    ("graph_closeness", "f32"),
    ("graph_local_density", "f32"),
    ("graph_isolated", "i8"),
)
EDGE_FEATURES = ("rho", "abs_rho", "same_sector33", "same_market")
EDGES_FILE = "graph_edges.npz"
EDGES_FORMAT = 1


class GraphInputError(GogookuError):
    """Graph inputs of inconsistent shapes or a bad edge file."""


@dataclass(frozen=True)
class UndirectedEdges:
    """Each undirected edge of every date once: stock indices i < j of date t (int32), and rho_ij (the
    correlations' dtype)."""

    t_E: Any
    i_E: Any
    j_E: Any
    rho_E: Any


@dataclass(frozen=True)
class GraphBuild:
    """The stage's result: [T, N] columns (`out_dtype`, NaN off V_t), is_graph_valid and the edges."""

    columns: dict[str, Any]
    is_graph_valid_TN: Any
    edges: UndirectedEdges


def undirected_edges(peers: PeerTable, xp: Any, d0: int = 0, d1: int | None = None) -> UndirectedEdges:
    """Symmetrise the top-k choices of dates d0..d1-1 into E_t; rho comes from the lower-index row."""
    nbr_TNK = peers.nbr_TNK[d0:d1]
    n = nbr_TNK.shape[1]
    t, i, s = xp.nonzero(nbr_TNK >= 0)
    j = nbr_TNK[t, i, s].astype(xp.int64)
    rho = peers.rho_TNK[d0:d1][t, i, s]
    lo, hi = xp.minimum(i, j), xp.maximum(i, j)
    key = ((t.astype(xp.int64) + d0) * n + lo) * n + hi
    order = xp.lexsort(xp.stack([(i != lo).astype(xp.int8), key]))
    key, rho = key[order], rho[order]
    first = xp.ones(key.size, dtype=bool)
    first[1:] = key[1:] != key[:-1]
    key, rho = key[first], rho[first]
    # int32 indices (dates and stocks are far below 2**31): the full market has ~33M edges
    return UndirectedEdges(*(a.astype(xp.int32) for a in (key // (n * n), key // n % n, key % n)), rho)


def build_graphs(
    returns_TN: Any,
    row_mask_TN: Any,
    cfg: GraphConfig,
    xp: Any,
    *,
    dtype: str = "float32",
    out_dtype: str = "float64",
    block_bytes: int | None = None,
    nodes_per_chunk: int | None = None,
    bfs_budget: int | None = None,
    progress: Callable[[str, int], None] | None = None,
    start: int = 0,
) -> GraphBuild:
    """All 18 graph columns for a [T, N] `returns_1d` panel (NaN = missing) and the undirected edges.

    `dtype`: precision of the correlations; `out_dtype`: of the columns (the feature store asks for float32,
    which holds every value of the columns' store dtypes, at half the memory). Dates before `start` are not
    built (NaN columns, no nodes, no edges): the feature store's history sessions are never written, and
    a date's graph reads only its own trailing window, so the dates from `start` on are unchanged.

    `row_mask_TN`: the stock has a universe row at t. Correlations run in date/row blocks of `block_bytes`;
    the metrics run on the union of `nodes_per_chunk // N` dates at a time (one call per metric and chunk);
    unset sizes are the device's (`work_sizes`).
    On NumPy the correlations run in a worker thread (one BLAS thread) while this thread computes the metrics
    of the dates already done (`graph_from_peers` with `ready`): the two halves share the CPU instead of
    taking turns. `progress(stage, dates_done)` reports "corr" and "metrics" progress.
    """
    returns_TN = xp.asarray(returns_TN)
    row_mask_TN = xp.asarray(row_mask_TN, dtype=bool)
    if returns_TN.ndim != 2 or row_mask_TN.shape != returns_TN.shape:
        raise GraphInputError(
            f"returns {tuple(returns_TN.shape)} and row mask {tuple(row_mask_TN.shape)} "
            "must be one [T, N] shape"
        )
    peers, dates = start_peer_table(
        returns_TN,
        row_mask_TN,
        cfg,
        xp,
        background=xp.__name__ == "numpy",
        dtype=dtype,
        block_bytes=block_bytes,
        start=start,
        progress=None if progress is None else lambda d: progress("corr", d),
    )
    return graph_from_peers(
        peers,
        xp,
        out_dtype=out_dtype,
        nodes_per_chunk=nodes_per_chunk,
        bfs_budget=bfs_budget,
        start=start,
        ready=dates.wait,
        progress=None if progress is None else lambda d: progress("metrics", d),
    )


def graph_from_peers(
    peers: PeerTable,
    xp: Any,
    *,
    out_dtype: str = "float64",
    nodes_per_chunk: int | None = None,
    bfs_budget: int | None = None,
    start: int = 0,
    threads: int = 1,
    ready: Callable[[int], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> GraphBuild:
    """The second half of `build_graphs` on a peer table: graphs, the 16 metrics and the edges.

    The metric chunks (unions of `nodes_per_chunk // N` dates) are independent and write disjoint rows, so
    they run on `threads` threads (NumPy releases the GIL in the large gathers and sorts). `ready(d)`, where
    the table is still being filled (`start_peer_table`), blocks until its dates before d are done: each
    chunk starts as soon as its dates are in. `progress(dates)` follows each finished chunk. Unset sizes are
    the device's (`work_sizes`).
    """
    sizes = work_sizes(xp)
    nodes_per_chunk, bfs_budget = nodes_per_chunk or sizes.nodes_per_chunk, bfs_budget or sizes.bfs_budget
    t_len, n = peers.node_TN.shape
    columns = {name: xp.full((t_len, n), xp.nan, dtype=out_dtype) for name, _ in GRAPH_COLUMNS}
    step = max(nodes_per_chunk // max(n, 1), 1)
    ranges = [(d0, min(d0 + step, t_len)) for d0 in range(start, t_len, step)]

    def metrics(r: tuple[int, int]) -> UndirectedEdges:
        edges = _metrics_chunk(peers, columns, r[0], r[1], xp, bfs_budget)
        if progress is not None:
            progress(r[1] - r[0])
        return edges

    wait = ready if ready is not None else (lambda d: None)
    if threads > 1 and xp.__name__ == "numpy":
        with ThreadPoolExecutor(threads, thread_name_prefix="graph-metrics") as pool:
            futures = []
            for r in ranges:
                wait(r[1])
                futures.append(pool.submit(metrics, r))
            parts = [f.result() for f in futures]
    else:
        parts = []
        for r in ranges:
            wait(r[1])
            parts.append(metrics(r))
    wait(t_len)  # also when `start` is the end: the filling side's error, if any
    if not parts:  # nothing from `start` on: an empty edge list of the right dtypes
        parts.append(undirected_edges(peers, xp, start, start))
    # the top-k table is spent: where the caller passed the only reference, its ~0.4 GB (full market) is
    # freed before the edges are concatenated
    peers = dataclasses.replace(peers, nbr_TNK=None, rho_TNK=None)
    columns["peer_count"] = xp.where(peers.node_TN, peers.peer_count_TN, xp.nan).astype(out_dtype)
    columns["peer_corr_mean"] = peers.peer_corr_mean_TN.astype(out_dtype, copy=False)
    # field by field, each chunk's array dropped once copied: the peak is one field above the parts
    fields = [dict(vars(p)) for p in parts]
    parts.clear()
    names = ("t_E", "i_E", "j_E", "rho_E")
    edges = UndirectedEdges(*(xp.concatenate([f.pop(name) for f in fields]) for name in names))
    return GraphBuild(columns, peers.node_TN, edges)


def _metrics_chunk(
    peers: PeerTable, columns: dict[str, Any], d0: int, d1: int, xp: Any, bfs_budget: int
) -> UndirectedEdges:
    """Edges and the 16 graph_* columns of dates d0..d1-1, as one union graph."""
    edges = undirected_edges(peers, xp, d0, d1)
    n = peers.node_TN.shape[1]
    node_t, node_i = xp.nonzero(peers.node_TN[d0:d1])
    gid_TN = xp.full((d1 - d0, n), -1, dtype=xp.int64)
    gid_TN[node_t, node_i] = xp.arange(node_t.size)
    t_e = edges.t_E - d0
    u_E, v_E = gid_TN[t_e, edges.i_E], gid_TN[t_e, edges.j_E]
    local_pos = xp.arange(node_t.size) - xp.searchsorted(node_t, node_t)
    metrics = union_metrics(xp, u_E, v_E, node_t, local_pos, d1 - d0, bfs_budget=bfs_budget)
    for name in METRIC_COLUMNS:
        columns[name][node_t + d0, node_i] = metrics[name]
    return edges


@dataclass(frozen=True)
class EdgeArrays:
    """Edges per date in the model's padded form (model/batch.py): both directions of each edge.

    Indices are positions in that date's stock order (the stocks with a row at t, sorted by Code).
    """

    edges_TE2: np.ndarray  # int32 [T, Epad, 2] (source, target); 0 in padding
    mask_TE: np.ndarray  # bool [T, Epad]
    feat_TEF: np.ndarray  # float32 [T, Epad, 4]: rho, |rho|, same Sector33, same market
    epad: int


def _same(ids_TN: np.ndarray, t: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Both ends known and equal. Ids become int32 (-1 = unknown) first: the gathers run over every edge
    (~26M at full scale), so they should not be float64."""
    if ids_TN.dtype.kind == "f":
        ids_TN = np.where(np.isfinite(ids_TN), ids_TN, -1).astype(np.int32)
    a = ids_TN[t, i]
    same = a >= 0
    same &= a == ids_TN[t, j]
    return same


def write_graph_edges(
    directory: str | Path,
    build: GraphBuild,
    row_mask_TN: Any,
    sector33_TN: Any,
    market_TN: Any,
    xp: Any,
    *,
    dates: list[str] | None = None,
    pad_multiple: int = 128,
) -> Path:
    """Write `graph_edges.npz` (flat edges per date + Epad) into the feature-store directory.

    Sector/market ids are [T, N] as-of values (float with NaN or int with -1 = unknown); unknown is never
    "same". Epad = 2 x the largest per-date edge count, rounded up to `pad_multiple`.
    """
    e = build.edges
    t, i, j = (to_host(a) for a in (e.t_E, e.i_E, e.j_E))
    rho = to_host(e.rho_E).astype(np.float32, copy=False)
    row_mask = to_host(xp.asarray(row_mask_TN, dtype=bool))
    sector, market = to_host(sector33_TN), to_host(market_TN)
    if not (row_mask.shape == sector.shape == market.shape) or row_mask.shape[0] < (
        t.max() + 1 if t.size else 0
    ):
        raise GraphInputError("row mask, sector33 and market panels must share the graph's [T, N] shape")
    local_TN = np.cumsum(row_mask, axis=1, dtype=np.int32) - 1
    t_len = row_mask.shape[0]
    date_ptr = np.searchsorted(t, np.arange(t_len + 1))
    per_date = np.diff(date_ptr)
    epad = int(-(-2 * int(per_date.max(initial=0)) // pad_multiple) * pad_multiple) or pad_multiple
    path = Path(directory) / EDGES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": EDGES_FORMAT, "epad": epad, "features": list(EDGE_FEATURES), "directed": False}
    # uncompressed: deflate took ~20 s of one core at full scale for a file ~1.6x smaller
    np.savez(
        path,
        meta=np.array(json.dumps(meta)),
        date_ptr=date_ptr.astype(np.int64),
        pairs=np.stack([local_TN[t, i], local_TN[t, j]], axis=1),
        rho=rho,
        same_sector33=_same(sector, t, i, j),
        same_market=_same(market, t, i, j),
        dates=np.array(dates if dates is not None else [], dtype=str),
    )
    return path


def read_graph_edges(directory: str | Path, date_index: Any = None) -> tuple[EdgeArrays, list[str]]:
    """Read `graph_edges.npz` into padded arrays with both directions of every edge.

    `date_index` (ints into the file's dates) pads only those dates, in that order: the full market padded
    for every date is ~1 GB, while a loader needs a batch of dates at a time.
    """
    path = Path(directory) / EDGES_FILE
    if not path.is_file():
        raise GraphInputError(f"no graph edge file at {path} (build the feature store first)")
    with np.load(path) as f:
        meta = json.loads(str(f["meta"]))
        if meta.get("format") != EDGES_FORMAT:
            raise GraphInputError(f"{path}: edge file format {meta.get('format')} is not {EDGES_FORMAT}")
        date_ptr, pairs, rho = f["date_ptr"], f["pairs"], f["rho"]
        sec, mkt, dates = f["same_sector33"], f["same_market"], [str(d) for d in f["dates"]]
    epad = int(meta["epad"])
    pick = np.arange(date_ptr.size - 1) if date_index is None else np.asarray(date_index, dtype=np.int64)
    if pick.size and (pick.min() < 0 or pick.max() >= date_ptr.size - 1):
        raise GraphInputError(f"date index out of range 0..{date_ptr.size - 2}")
    per_date = date_ptr[pick + 1] - date_ptr[pick]
    row = np.repeat(np.arange(pick.size), per_date)  # output row of each selected edge
    slot = np.arange(row.size) - (np.cumsum(per_date) - per_date)[row]
    src = date_ptr[pick][row] + slot  # position in the flat file
    feat = np.stack([rho[src], np.abs(rho[src]), sec[src], mkt[src]], axis=1).astype(np.float32)
    edges = np.zeros((pick.size, epad, 2), dtype=np.int32)
    mask = np.zeros((pick.size, epad), dtype=bool)
    feat_TEF = np.zeros((pick.size, epad, len(EDGE_FEATURES)), dtype=np.float32)
    for direction, slots in ((pairs[src], slot), (pairs[src][:, ::-1], slot + per_date[row])):
        edges[row, slots] = direction
        mask[row, slots] = True
        feat_TEF[row, slots] = feat
    picked = [dates[i] for i in pick.tolist()] if dates else []
    return EdgeArrays(edges, mask, feat_TEF, epad), picked
