"""Graph metrics of FEATURES.md §4.13 on the disjoint union of many dates' graphs, one vectorised call each.

Nodes are numbered date-major (date, then stock index = Code order), so a date is a contiguous node range
and the smallest node id of a component is its smallest Code. `u_E < v_E` lists each undirected edge once.

CPU: NumPy + SciPy (connected_components in C). GPU (`xp` = CuPy): the same array code, with cupyx sparse
matrices, cupyx scatter-min/max, a `__popcll` kernel and min-label propagation for components (cuGraph is
not required).
Loops that remain, all over rounds or chunks, never over stocks: PageRank iterations (<= 100), core peeling
levels/rounds, label-propagation rounds (GPU), and closeness, a level-synchronous all-sources BFS (one round
per BFS level, one gather per neighbour slot) over sub-chunks of dates whose bitsets fit the budget.
"""

from __future__ import annotations

import functools
from typing import Any

from etl.ops import to_host

PAGERANK_ALPHA = 0.85
PAGERANK_TOL = 1e-6
PAGERANK_MAX_ITER = 100
FLAT_REL_TOL = 1e-12
METRIC_COLUMNS = (
    "graph_degree",
    "graph_degree_z",
    "graph_comp_id",
    "graph_comp_size",
    "graph_degree_in_comp",
    "graph_degree_z_in_comp",
    "graph_pagerank",
    "graph_pagerank_share_comp",
    "graph_pagerank_z_in_comp",
    "graph_clustering",
    "graph_avg_neigh_deg",
    "graph_core",
    "graph_degree_centrality",
    "graph_closeness",
    "graph_local_density",
    "graph_isolated",
)


def _is_cupy(xp: Any) -> bool:
    return xp.__name__ == "cupy"


def _sparse(xp: Any) -> Any:
    if _is_cupy(xp):
        import cupyx.scipy.sparse as sparse

        return sparse
    import scipy.sparse as sparse

    return sparse


def scatter_extreme(xp: Any, op: str, idx: Any, vals: Any, size: int) -> Any:
    """Segment max (`op="max"`) or min of `vals` grouped by `idx` into `size` slots (+-inf where empty)."""
    fill = -xp.inf if op == "max" else xp.inf
    out = xp.full(size, fill, dtype=xp.float64)
    vals = vals.astype(xp.float64)
    if _is_cupy(xp):
        import cupyx

        (cupyx.scatter_max if op == "max" else cupyx.scatter_min)(out, idx, vals)
    else:
        (xp.maximum if op == "max" else xp.minimum).at(out, idx, vals)
    return out


def segment_z(xp: Any, v: Any, seg: Any, nseg: int, rel_tol: float = 0.0) -> Any:
    """Population z-score of `v` within segments; 0 where the segment has <= 1 member or a zero spread.

    Zero spread (FEATURES.md §3): max - min <= rel_tol * max|v| (rel_tol 0 means exactly flat).
    """
    cnt = xp.bincount(seg, minlength=nseg).astype(xp.float64)
    mean = xp.bincount(seg, weights=v, minlength=nseg) / xp.maximum(cnt, 1.0)
    dev = v - mean[seg]
    std = xp.sqrt(xp.bincount(seg, weights=dev * dev, minlength=nseg) / xp.maximum(cnt, 1.0))
    hi = scatter_extreme(xp, "max", seg, v, nseg)
    lo = scatter_extreme(xp, "min", seg, v, nseg)
    hi, lo = xp.where(cnt > 0, hi, 0.0), xp.where(cnt > 0, lo, 0.0)  # empty segments: no +-inf
    scale = xp.maximum(xp.abs(hi), xp.abs(lo))
    flat = (cnt <= 1) | (hi - lo <= rel_tol * scale)
    return xp.where(flat[seg], 0.0, dev / xp.where(flat, 1.0, std)[seg])


def csr(xp: Any, u_E: Any, v_E: Any, n: int) -> tuple[Any, Any, Any]:
    """Both directions of the undirected edges as CSR (indptr, src, dst), rows and columns sorted."""
    src = xp.concatenate([u_E, v_E]).astype(xp.int64)
    dst = xp.concatenate([v_E, u_E]).astype(xp.int64)
    order = xp.argsort(src * n + dst)
    src, dst = src[order], dst[order]
    indptr = xp.zeros(n + 1, dtype=xp.int64)
    indptr[1:] = xp.cumsum(xp.bincount(src, minlength=n))
    return indptr, src, dst


def ragged_gather(xp: Any, indptr: Any, dst: Any, rows: Any) -> Any:
    """Concatenated neighbour lists of `rows` (no Python loop)."""
    starts = indptr[rows]
    cnts = indptr[rows + 1] - starts
    ends = xp.cumsum(cnts)
    total = int(ends[-1]) if ends.size else 0
    pos = xp.arange(total)
    row_of = xp.searchsorted(ends, pos, side="right")
    return dst[starts[row_of] + pos - (ends - cnts)[row_of]]


def components_labelprop(xp: Any, src: Any, dst: Any, n: int) -> Any:
    """Connected components by min-label propagation with pointer jumping; label = smallest node id."""
    lab = xp.arange(n, dtype=xp.int64)
    while True:
        new = scatter_extreme(xp, "min", src, lab[dst].astype(xp.float64), n)
        new = xp.minimum(lab, xp.where(xp.isfinite(new), new, n).astype(xp.int64))
        while True:  # pointer jumping: follow labels to their root
            jumped = new[new]
            if bool((jumped == new).all()):
                break
            new = jumped
        if bool((new == lab).all()):
            return lab
        lab = new


def components(xp: Any, src: Any, dst: Any, n: int) -> Any:
    """Component label per node, equal to the smallest node id of its component."""
    if _is_cupy(xp):
        return components_labelprop(xp, src, dst, n)
    import numpy as np
    from scipy.sparse.csgraph import connected_components

    a = _sparse(xp).csr_matrix((np.ones(src.size, dtype=np.int8), (src, dst)), shape=(n, n))
    _, lab = connected_components(a, directed=False)
    first = np.full(lab.max() + 1 if n else 0, n, dtype=np.int64)
    np.minimum.at(first, lab, np.arange(n))
    return first[lab]


def order_components(xp: Any, label: Any, node_date: Any, n_dates: int) -> tuple[Any, Any, Any, int]:
    """Per node: component id within its date ((size desc, smallest member asc) from 0), component size,
    and a dense component index 0..C-1 (for segment reductions); also C."""
    roots, seg = xp.unique(label, return_inverse=True)
    seg = seg.reshape(-1)
    size = xp.bincount(seg)
    date = node_date[roots]
    order = xp.lexsort(xp.stack([roots, -size, date]))
    rank = xp.empty_like(order)
    rank[order] = xp.arange(order.size)
    first_of_date = xp.searchsorted(date[order], xp.arange(n_dates))
    comp_id = rank - first_of_date[date]
    return comp_id[seg], size[seg], seg, int(roots.size)


def pagerank(xp: Any, src: Any, dst: Any, deg: Any, node_date: Any, n_dates: int) -> Any:
    """Unweighted PageRank of every date's graph at once, stopping each date as networkx does.

    networkx `pagerank(G, weight=None)`: x0 = p = 1/n, x <- alpha (x A_rownorm + dangling mass / n) +
    (1 - alpha) / n, stop when sum |x - x_last| < n * tol. A date that has converged keeps its value while the
    others iterate; a date still moving after 100 iterations keeps its last iterate (networkx would raise).
    """
    nn_date = xp.bincount(node_date, minlength=n_dates).astype(xp.float64)
    nn = nn_date[node_date]
    x = 1.0 / nn
    dangling = deg == 0
    inv_deg = xp.where(dangling, 0.0, 1.0 / xp.maximum(deg, 1))
    active = nn_date > 0
    for _ in range(PAGERANK_MAX_ITER):
        spread = xp.bincount(dst, weights=(x * inv_deg)[src], minlength=x.size)
        dmass = xp.bincount(node_date, weights=xp.where(dangling, x, 0.0), minlength=n_dates)
        new = PAGERANK_ALPHA * (spread + dmass[node_date] / nn) + (1.0 - PAGERANK_ALPHA) / nn
        err = xp.bincount(node_date, weights=xp.abs(new - x), minlength=n_dates)
        x = xp.where(active[node_date], new, x)
        active = active & ~(err < nn_date * PAGERANK_TOL)
        if not bool(active.any()):
            break
    return x


def core_numbers(xp: Any, indptr: Any, dst: Any, deg: Any) -> Any:
    """Core number by level-synchronous peeling: at level k remove every node of degree <= k until none."""
    n = deg.size
    d = deg.astype(xp.int64)
    core = xp.zeros(n, dtype=xp.int64)
    alive = xp.ones(n, dtype=bool)
    k, left = 0, n
    while left:
        rem = xp.nonzero(alive & (d <= k))[0]
        if rem.size == 0:
            k = max(k + 1, int(d[alive].min()))
            continue
        core[rem] = k
        alive[rem] = False
        left -= int(rem.size)
        d -= xp.bincount(ragged_gather(xp, indptr, dst, rem), minlength=n)
    return core


def ragged_pairs(xp: Any, indptr: Any) -> tuple[Any, Any]:
    """Every pair of positions p < q inside the same row of a CSR layout (no Python loop)."""
    m = int(indptr[-1])
    pos = xp.arange(m)
    row_end = indptr[1:][xp.searchsorted(indptr[1:], pos, side="right")]
    later = row_end - pos - 1  # positions after p in its row
    ends = xp.cumsum(later)
    total = int(ends[-1]) if m else 0
    q = xp.arange(total)
    first = xp.searchsorted(ends, q, side="right")
    return first, first + 1 + q - (ends - later)[first]


def triangles(xp: Any, indptr: Any, src: Any, dst: Any) -> Any:
    """Triangles through each node, by wedge checks on the degree-ordered orientation.

    Each edge points from the lower to the higher (degree, id) rank, so every triangle is one wedge
    (apex -> a, apex -> b) at its lowest-ranked vertex, closed when {a, b} is an edge (a binary search in the
    sorted edge keys); the three corners each count it. Out-degrees in this orientation stay small, so the
    wedges are few: 2.6x faster than diag(A^3)/2 by a sparse product on a 65-date union here.
    """
    n = indptr.size - 1
    deg = xp.diff(indptr)
    rank = xp.empty(n, dtype=xp.int64)
    rank[xp.lexsort(xp.stack([xp.arange(n), deg]))] = xp.arange(n)
    up = rank[src] < rank[dst]
    apex, tip = src[up], dst[up]  # CSR order: grouped by apex
    out_ptr = xp.zeros(n + 1, dtype=xp.int64)
    out_ptr[1:] = xp.cumsum(xp.bincount(apex, minlength=n))
    first, second = ragged_pairs(xp, out_ptr)
    a, b = tip[first], tip[second]
    wedge = xp.minimum(a, b) * n + xp.maximum(a, b)
    edge = xp.sort(xp.minimum(apex, tip) * n + xp.maximum(apex, tip))
    closed = edge[xp.minimum(xp.searchsorted(edge, wedge), max(edge.size - 1, 0))] == wedge
    tri = xp.zeros(n, dtype=xp.float64)
    for corner in (apex[first[closed]], a[closed], b[closed]):
        tri += xp.bincount(corner, minlength=n)
    return tri


def _date_subchunks(xp: Any, node_date: Any, n_dates: int, max_nodes: int) -> list[tuple[int, int]]:
    """Contiguous node ranges covering whole dates, each with about <= max_nodes nodes."""
    import numpy as np

    counts = to_host(xp.bincount(node_date, minlength=n_dates))
    bounds = np.concatenate([[0], np.cumsum(counts)])
    out, start = [], 0
    for d in range(1, n_dates + 1):
        if bounds[d] - bounds[start] > max_nodes and d - 1 > start:
            out.append((int(bounds[start]), int(bounds[d - 1])))
            start = d - 1
    if bounds[n_dates] > bounds[start]:
        out.append((int(bounds[start]), int(bounds[n_dates])))
    return out


def popcount_rows(xp: Any, bits_NW: Any) -> Any:
    """Number of set bits per row of a uint64 [n, W] array.

    NumPy >= 2: `bitwise_count`; CuPy: a `__popcll` elementwise kernel; otherwise a byte table (tests).
    """
    if hasattr(xp, "bitwise_count"):
        return xp.bitwise_count(bits_NW).sum(axis=1, dtype=xp.int64)
    if _is_cupy(xp):
        return _cupy_popcount()(bits_NW).sum(axis=1)
    table = xp.asarray([bin(b).count("1") for b in range(256)], dtype=xp.int64)
    return table[bits_NW.view(xp.uint8)].sum(axis=1)


@functools.cache
def _cupy_popcount() -> Any:
    import cupy

    return cupy.ElementwiseKernel("uint64 x", "int64 y", "y = __popcll(x)", "gogooku_popcount")


def distance_sums_bitset(xp: Any, indptr: Any, dst: Any, local_pos: Any) -> Any:
    """Sum of BFS distances from every node to all nodes it reaches (node graphs of one or more dates).

    All sources at once: bit p of a node's bitset = "reached from the node at local position p of my date";
    the block-diagonal union keeps dates apart, so dates share bit positions. One round per BFS level: the
    new frontier is the OR of the neighbours' frontiers minus what was reached. Rows are put in descending
    degree order so that "the s-th neighbour" exists for a prefix of rows: each level is one gather + OR per
    neighbour slot on contiguous blocks (several times faster than ufunc.reduceat over ragged rows).
    """
    n = local_pos.size
    dist = xp.zeros(n, dtype=xp.int64)
    if n == 0:
        return dist
    width = (int(local_pos.max()) + 64) // 64
    deg = xp.diff(indptr)
    perm = xp.argsort(-deg, kind="stable") if not _is_cupy(xp) else xp.argsort(-deg * n - xp.arange(n))
    inv = xp.empty_like(perm)
    inv[perm] = xp.arange(n)
    deg_sorted = deg[perm]
    counts = xp.searchsorted(-deg_sorted, -xp.arange(int(deg_sorted[0])), side="left")
    counts = to_host(counts).tolist()
    slots = [inv[dst[indptr[perm[:c]] + s]] for s, c in enumerate(counts)]
    pos = local_pos[perm]
    frontier = xp.zeros((n, width), dtype=xp.uint64)
    frontier[xp.arange(n), pos // 64] = xp.left_shift(xp.uint64(1), (pos % 64).astype(xp.uint64))
    not_reached = ~frontier  # kept as the complement: no NOT pass per level
    grown, tmp = xp.zeros_like(frontier), xp.empty_like(frontier)
    level = 0
    while slots:
        level += 1
        xp.take(frontier, slots[0], axis=0, out=grown[: slots[0].size])
        for idx in slots[1:]:
            c = idx.size
            xp.take(frontier, idx, axis=0, out=tmp[:c])
            xp.bitwise_or(grown[:c], tmp[:c], out=grown[:c])
        xp.bitwise_and(grown, not_reached, out=grown)
        new = popcount_rows(xp, grown)
        if not bool(new.any()):
            break
        xp.bitwise_xor(not_reached, grown, out=not_reached)  # grown is a subset: clears its bits
        dist += level * new
        frontier, grown = grown, frontier
    out = xp.empty_like(dist)
    out[perm] = dist
    return out


def distance_sums(
    xp: Any, indptr: Any, dst: Any, local_pos: Any, node_date: Any, n_dates: int, budget: int
) -> Any:
    """Per-node sum of shortest-path lengths, in date sub-chunks whose five bitsets fit `budget` bytes."""
    n = local_pos.size
    width = (int(local_pos.max()) + 64) // 64 if n else 1
    out = xp.zeros(n, dtype=xp.int64)
    for a, b in _date_subchunks(xp, node_date, n_dates, max(budget // (40 * width), 1)):
        e0, e1 = int(indptr[a]), int(indptr[b])
        out[a:b] = distance_sums_bitset(xp, indptr[a : b + 1] - e0, dst[e0:e1] - a, local_pos[a:b])
    return out


def union_metrics(
    xp: Any,
    u_E: Any,
    v_E: Any,
    node_date: Any,
    local_pos: Any,
    n_dates: int,
    *,
    bfs_budget: int = 16 << 20,
) -> dict[str, Any]:
    """The 16 graph_* columns (everything but peer_*) for every node of a union of date graphs.

    `node_date` (sorted) is each node's date index 0..n_dates-1; `local_pos` its position among that date's
    nodes. Returns float64 arrays per node keyed by column name.
    """
    n = node_date.size
    if n == 0:
        return {name: xp.zeros(0) for name in METRIC_COLUMNS}
    indptr, src, dst = csr(xp, u_E, v_E, n)
    deg = xp.diff(indptr).astype(xp.float64)
    nn = xp.bincount(node_date, minlength=n_dates).astype(xp.float64)[node_date]

    label = components(xp, src, dst, n)
    comp_id, comp_size, seg, nseg = order_components(xp, label, node_date, n_dates)
    comp_size = comp_size.astype(xp.float64)

    pr = pagerank(xp, src, dst, deg, node_date, n_dates)
    pr_comp = xp.bincount(seg, weights=pr, minlength=nseg)[seg]
    tri = triangles(xp, indptr, src, dst)
    nb_deg = xp.bincount(src, weights=deg[dst], minlength=n)
    core = core_numbers(xp, indptr, dst, deg)
    dsum = distance_sums(xp, indptr, dst, local_pos, node_date, n_dates, bfs_budget).astype(xp.float64)

    has_edge = deg > 0
    return {
        "graph_degree": deg,
        "graph_degree_z": segment_z(xp, deg, node_date, n_dates),
        "graph_comp_id": comp_id.astype(xp.float64),
        "graph_comp_size": comp_size,
        "graph_degree_in_comp": xp.where(comp_size > 1, deg / xp.maximum(comp_size - 1, 1), 0.0),
        "graph_degree_z_in_comp": segment_z(xp, deg, seg, nseg),
        "graph_pagerank": pr,
        "graph_pagerank_share_comp": pr / pr_comp,
        "graph_pagerank_z_in_comp": segment_z(xp, pr, seg, nseg, FLAT_REL_TOL),
        "graph_clustering": xp.where(deg >= 2, 2.0 * tri / xp.maximum(deg * (deg - 1), 1.0), 0.0),
        "graph_avg_neigh_deg": xp.where(has_edge, nb_deg / xp.maximum(deg, 1.0), 0.0),
        "graph_core": core.astype(xp.float64),
        "graph_degree_centrality": xp.where(nn > 1, deg / xp.maximum(nn - 1, 1.0), 0.0),
        "graph_closeness": xp.where(
            (comp_size > 1) & (dsum > 0),
            (comp_size - 1) / xp.maximum(dsum, 1.0) * (comp_size - 1) / xp.maximum(nn - 1, 1.0),
            0.0,
        ),
        "graph_local_density": xp.where(has_edge, (deg + tri) / xp.maximum(deg * (deg + 1) / 2, 1.0), 0.0),
        "graph_isolated": (~has_edge).astype(xp.float64),
    }
