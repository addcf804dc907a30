"""Graph stage (etl/graph*.py) against an independent per-date reference: np.corrcoef + NetworkX 3.x."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import networkx as nx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etl.config import GraphConfig
from etl.graph import corr as corr_mod
from etl.graph import metrics as gm
from etl.graph.build import (
    GRAPH_COLUMNS,
    build_graphs,
    graph_from_peers,
    read_graph_edges,
    undirected_edges,
    write_graph_edges,
)
from etl.graph.corr import peer_table

CFG = GraphConfig(window=40, min_obs=30, threshold=0.5, k=4)
PAGERANK_COLUMNS = ("graph_pagerank", "graph_pagerank_share_comp", "graph_pagerank_z_in_comp")

# ---------------------------------------------------------------- independent reference (loops, NetworkX)


def _z(values, rel_tol=0.0):
    v = np.array(values, dtype=np.float64)
    if v.size <= 1 or v.max() - v.min() <= rel_tol * np.abs(v).max():
        return [0.0] * v.size
    return list((v - v.mean()) / v.std())


def ref_peers(returns, rows, t, cfg):
    """Nodes, peer counts, mean |rho| over peers and the top-k lists of date t, in the catalog's words."""
    win = returns[max(0, t - cfg.window + 1) : t + 1]
    nodes = [i for i in range(returns.shape[1]) if rows[t, i] and np.isfinite(win[:, i]).sum() >= cfg.min_obs]
    defined = []
    filled = {}
    for i in nodes:
        col = win[:, i]
        ok = np.isfinite(col)
        filled[i] = np.where(ok, col, col[ok].mean())
        if col[ok].max() > col[ok].min():
            defined.append(i)
    rho = {}
    if len(defined) >= 2:
        mat = np.corrcoef(np.stack([filled[i] for i in defined]))
        for a, i in enumerate(defined):
            for b, j in enumerate(defined):
                if i != j:
                    rho[i, j] = mat[a, b]
    count, mean, top = {}, {}, {}
    for i in nodes:
        peers = [j for j in nodes if (i, j) in rho and abs(rho[i, j]) >= cfg.threshold]
        count[i] = len(peers)
        mean[i] = float(np.mean([abs(rho[i, j]) for j in peers])) if peers else 0.0
        top[i] = sorted(peers, key=lambda j: (-abs(rho[i, j]), j))[: cfg.k]
    return nodes, count, mean, top, rho


def ref_graph(nodes, top):
    g = nx.Graph()
    g.add_nodes_from(nodes)
    g.add_edges_from((i, j) for i in nodes for j in top[i])
    return g


def ref_metrics(g):
    """The 16 graph_* columns of one graph by NetworkX (node labels sort in Code order)."""
    nodes = sorted(g.nodes)
    out = {name: {} for name in gm.METRIC_COLUMNS}
    if not nodes:
        return out
    deg = dict(g.degree)
    pr = nx.pagerank(g, alpha=0.85, weight=None)
    clus, and_ = nx.clustering(g), nx.average_neighbor_degree(g)
    core, dc, clo = nx.core_number(g), nx.degree_centrality(g), nx.closeness_centrality(g)
    for i, z in zip(nodes, _z([deg[i] for i in nodes]), strict=True):
        out["graph_degree_z"][i] = z
    comps = sorted(nx.connected_components(g), key=lambda c: (-len(c), min(c)))
    for cid, comp in enumerate(comps):
        members = sorted(comp)
        size, pr_sum = len(members), sum(pr[i] for i in members)
        dz, pz = _z([deg[i] for i in members]), _z([pr[i] for i in members], 1e-12)
        for idx, i in enumerate(members):
            out["graph_comp_id"][i] = cid
            out["graph_comp_size"][i] = size
            out["graph_degree_in_comp"][i] = deg[i] / (size - 1) if size > 1 else 0.0
            out["graph_degree_z_in_comp"][i] = dz[idx]
            out["graph_pagerank_share_comp"][i] = pr[i] / pr_sum
            out["graph_pagerank_z_in_comp"][i] = pz[idx]
    for i in nodes:
        out["graph_degree"][i] = deg[i]
        out["graph_pagerank"][i] = pr[i]
        out["graph_clustering"][i] = clus[i]
        out["graph_avg_neigh_deg"][i] = and_[i]
        out["graph_core"][i] = core[i]
        out["graph_degree_centrality"][i] = dc[i] if len(nodes) > 1 else 0.0
        out["graph_closeness"][i] = clo[i]
        out["graph_local_density"][i] = nx.density(nx.ego_graph(g, i))
        out["graph_isolated"][i] = float(deg[i] == 0)
    return out


def assert_metric(name, got, want):
    if name in PAGERANK_COLUMNS:
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7, err_msg=name)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, err_msg=name)


# ---------------------------------------------------------------- fixtures


def market_panel(t_len=70, seed=0):
    """Returns [T, 24] with designed structure: a 5-stock clique, a factor with negative loadings, a
    triangle, noise stocks (isolated), a flat stock, one with too few observations, gaps and absent rows."""
    rng = np.random.default_rng(seed)
    fa, fb, fc = rng.standard_normal((3, t_len, 1))
    noise = rng.standard_normal((t_len, 24))
    r = noise.copy()
    r[:, 0:5] = fa + 0.25 * noise[:, 0:5]  # clique: K5
    r[:, 5:11] = fb * np.array([1, -1, 1, -1, 1, 1]) + 0.5 * noise[:, 5:11]  # negative correlations
    r[:, 11:14] = fc + 0.4 * noise[:, 11:14]  # triangle
    r[:, 18] = 0.0  # flat: a node with no defined rho
    r[rng.random(t_len) < 0.7, 19] = np.nan  # too few observations: never a node
    r[:, 21:24] = 0.8 * fb + noise[:, 21:24]
    r[:, 21:24][rng.random((t_len, 3)) < 0.15] = np.nan  # gaps, mean-filled
    r[:3, :] = np.nan
    rows = np.ones((t_len, 24), dtype=bool)
    rows[rng.random(t_len) < 0.3, 20] = False  # stock 20 has no universe row on some dates
    rows[:10, 14] = False  # listed later
    return r * 0.01, rows


# ---------------------------------------------------------------- metrics on random graphs


def _union(graphs):
    """Disjoint union in date-major node order: node_date, local_pos, u < v."""
    node_date, local_pos, u, v, base = [], [], [], [], 0
    for d, g in enumerate(graphs):
        n = g.number_of_nodes()
        node_date += [d] * n
        local_pos += list(range(n))
        for a, b in g.edges:
            u.append(base + min(a, b))
            v.append(base + max(a, b))
        base += n
    return (np.array(x, dtype=np.int64) for x in (u, v, node_date, local_pos))


def random_graphs():
    gs = [nx.gnp_random_graph(n, p, seed=s) for s, (n, p) in enumerate([(30, 0.08), (25, 0.2), (40, 0.05)])]
    parts = nx.disjoint_union_all(
        [nx.complete_graph(5), nx.path_graph(9), nx.star_graph(6), nx.empty_graph(3)]
    )
    gs.append(parts)  # several components, a complete one, isolated nodes, a long chain
    gs.append(nx.empty_graph(1))  # a single-node date
    gs.append(nx.barbell_graph(5, 3))
    gs.append(nx.empty_graph(4))  # all isolated
    return gs


def test_union_metrics_equal_networkx_on_random_graphs():
    graphs = random_graphs()
    u, v, node_date, local_pos = _union(graphs)
    got = gm.union_metrics(np, u, v, node_date, local_pos, len(graphs))
    base = 0
    for g in graphs:
        want = ref_metrics(g)
        n = g.number_of_nodes()
        for name in gm.METRIC_COLUMNS:
            assert_metric(name, got[name][base : base + n], [want[name][i] for i in range(n)])
        base += n


def test_gpu_algorithms_agree_with_cpu_ones_on_numpy():
    """Label propagation and the portable popcount (used where NumPy's is missing) run on NumPy here too."""
    graphs = random_graphs()
    u, v, node_date, local_pos = _union(graphs)
    n = node_date.size
    indptr, src, dst = gm.csr(np, u, v, n)
    np.testing.assert_array_equal(gm.components_labelprop(np, src, dst, n), gm.components(np, src, dst, n))
    bits = np.random.default_rng(0).integers(0, 2**63, size=(7, 3), dtype=np.uint64)
    no_bitwise_count = type(
        "xp", (), {"asarray": staticmethod(np.asarray), "int64": np.int64, "uint8": np.uint8}
    )
    want = [sum(bin(int(w)).count("1") for w in row) for row in bits]
    np.testing.assert_array_equal(gm.popcount_rows(no_bitwise_count, bits), want)
    np.testing.assert_array_equal(gm.popcount_rows(np, bits), want)


def test_distance_sums_in_subchunks_equal_one_call():
    graphs = random_graphs()
    u, v, node_date, local_pos = _union(graphs)
    indptr, src, dst = gm.csr(np, u, v, node_date.size)
    whole = gm.distance_sums(np, indptr, dst, local_pos, node_date, len(graphs), 1 << 30)
    tiny = gm.distance_sums(np, indptr, dst, local_pos, node_date, len(graphs), 1)
    np.testing.assert_array_equal(whole, tiny)
    want = [sum(nx.single_source_shortest_path_length(g, i).values()) for g in graphs for i in range(len(g))]
    np.testing.assert_array_equal(whole, want)


def test_segment_z_flat_rules():
    seg = np.array([0, 0, 0, 1, 2, 2])
    v = np.array([1.0, 2.0, 3.0, 5.0, 0.25, 0.25 * (1 + 1e-15)])
    z = gm.segment_z(np, v, seg, 3, 1e-12)
    np.testing.assert_allclose(z[:3], [-1.224744871391589, 0.0, 1.224744871391589])
    assert z[3] == 0.0 and z[4] == 0.0 and z[5] == 0.0  # size 1; spread below 1e-12 relative


# ---------------------------------------------------------------- the whole stage on a synthetic market


@pytest.fixture(scope="module")
def panel():
    returns, rows = market_panel()
    build = build_graphs(returns, rows, CFG, np, dtype="float64")
    return returns, rows, build


def test_build_equals_reference_every_date(panel):
    returns, rows, build = panel
    seen = {"components>=2": False, "isolated": False, "negative": False, "complete5": False}
    for t in range(returns.shape[0]):
        nodes, count, mean, top, rho = ref_peers(returns, rows, t, CFG)
        g = ref_graph(nodes, top)
        want = ref_metrics(g)
        valid = np.zeros(returns.shape[1], dtype=bool)
        valid[nodes] = True
        np.testing.assert_array_equal(build.is_graph_valid_TN[t], valid)
        for name, _ in GRAPH_COLUMNS:
            col = build.columns[name][t]
            assert np.isnan(col[~valid]).all(), name
        np.testing.assert_array_equal(build.columns["peer_count"][t, nodes], [count[i] for i in nodes])
        np.testing.assert_allclose(
            build.columns["peer_corr_mean"][t, nodes], [mean[i] for i in nodes], rtol=1e-12
        )
        for name in gm.METRIC_COLUMNS:
            assert_metric(name, build.columns[name][t, nodes], [want[name][i] for i in nodes])
        sel = build.edges.t_E == t
        got_edges = set(zip(build.edges.i_E[sel].tolist(), build.edges.j_E[sel].tolist(), strict=True))
        assert got_edges == {(min(a, b), max(a, b)) for a, b in g.edges}
        np.testing.assert_allclose(
            build.edges.rho_E[sel],
            [rho[i, j] for i, j in zip(build.edges.i_E[sel], build.edges.j_E[sel], strict=True)],
        )
        if nodes:
            seen["components>=2"] |= nx.number_connected_components(g) >= 2
            seen["isolated"] |= any(d == 0 for _, d in g.degree)
            seen["negative"] |= any(rho[a, b] < 0 for a, b in g.edges)
            seen["complete5"] |= any(
                len(c) == 5 and g.subgraph(c).number_of_edges() == 10 for c in nx.connected_components(g)
            )
    assert all(seen.values()), seen  # the fixture really exercises every case


def test_window_extrema_numpy_fast_path_equals_the_portable_one():
    """`fmax/fmin.reduce` (NumPy) and the where-filled max/min (CuPy's path, run here on NumPy) agree on
    whether a window's valid values are all equal, including all-missing and single-value windows."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 9, 6))
    x[rng.random(x.shape) < 0.3] = np.nan
    x[:, :, 0] = np.nan  # nothing valid
    x[:, :, 1] = 0.5  # all equal
    x[:, 1:, 2] = np.nan  # one valid value
    valid = np.isfinite(x)
    portable = type("xp", (), {"__name__": "portable", "where": staticmethod(np.where), "inf": np.inf})
    hi, lo = corr_mod._valid_extrema(x, valid, np)
    hi_p, lo_p = corr_mod._valid_extrema(x, valid, portable)
    np.testing.assert_array_equal(hi > lo, hi_p > lo_p)
    has = valid.any(axis=1)
    np.testing.assert_array_equal(hi[has], hi_p[has])
    np.testing.assert_array_equal(lo[has], lo_p[has])
    assert not (hi > lo)[:, :3].any() and (hi > lo)[:, 3:].any()


def test_ties_go_to_the_smaller_code():
    """Stocks 1, 2 and 3 carry identical returns: stock 0 ties between them and must take 1, then 2."""
    rng = np.random.default_rng(3)
    base = rng.standard_normal((50, 1))
    r = np.concatenate([base + 0.5 * rng.standard_normal((50, 1)), base, base, base], axis=1)
    rows = np.ones(r.shape, dtype=bool)
    peers = peer_table(r, rows, GraphConfig(window=50, min_obs=40, threshold=0.3, k=2), np, dtype="float64")
    assert peers.nbr_TNK[-1, 0].tolist() == [1, 2]
    assert peers.nbr_TNK[-1, 3].tolist() == [1, 2]


def test_threshold_zero_never_links_undefined_nodes():
    returns, rows = market_panel()
    cfg = GraphConfig(window=40, min_obs=30, threshold=0.0, k=4)
    build = build_graphs(returns, rows, cfg, np, dtype="float64")
    t = returns.shape[0] - 1
    nodes, count, _, top, _ = ref_peers(returns, rows, t, cfg)
    assert build.columns["peer_count"][t, 18] == 0 and build.columns["graph_isolated"][t, 18] == 1  # flat
    np.testing.assert_array_equal(build.columns["peer_count"][t, nodes], [count[i] for i in nodes])


def decision_margin(returns, rows, cfg):
    """The smallest distance between a |rho| and the threshold or another |rho| of the same stock and date:
    a change of rho below half of it cannot change a peer set or a top-k choice."""
    gaps = [1.0]
    for t in range(returns.shape[0]):
        rho = ref_peers(returns, rows, t, cfg)[4]
        for i in {i for i, _ in rho}:
            a = np.sort([abs(r) for (p, _), r in rho.items() if p == i])
            gaps += [np.abs(a - cfg.threshold).min(), *np.diff(a)]
    return min(gaps)


# float64 dot products of two unit vectors of length w, summed in any order: |error| <= w * 2**-53 (Higham's
# gamma_w), so two block shapes' rho differ by at most twice that; a mean of |rho| by no more
FLOAT64_RHO_ATOL = 2 * CFG.window * 2.0**-53


def assert_same_build(other, build, rho_atol=0.0):
    """Equal columns and edges; peer_corr_mean and rho within `rho_atol` (the correlations' sums)."""
    for name, _ in GRAPH_COLUMNS:
        if name == "peer_corr_mean":
            np.testing.assert_allclose(other.columns[name], build.columns[name], rtol=0, atol=rho_atol)
        else:
            np.testing.assert_array_equal(other.columns[name], build.columns[name], err_msg=name)
    for field in ("t_E", "i_E", "j_E"):
        np.testing.assert_array_equal(getattr(other.edges, field), getattr(build.edges, field))
    np.testing.assert_allclose(other.edges.rho_E, build.edges.rho_E, rtol=0, atol=rho_atol)


def test_chunking_and_repeat_runs_give_identical_results(panel):
    """A repeat run gives the same bits. Other block sizes are other GEMM shapes, whose sums may differ in
    the last bits (within FLOAT64_RHO_ATOL); the peer sets and top-k choices cannot change, as the panel's
    decision margin is far above it, so the edges and all other columns are equal."""
    returns, rows, build = panel
    assert decision_margin(returns, rows, CFG) > 1e3 * FLOAT64_RHO_ATOL
    small = build_graphs(
        returns, rows, CFG, np, dtype="float64", block_bytes=2000, nodes_per_chunk=30, bfs_budget=1
    )
    assert_same_build(small, build, FLOAT64_RHO_ATOL)
    assert_same_build(build_graphs(returns, rows, CFG, np, dtype="float64"), build)


def test_start_skips_early_dates_and_keeps_the_rest(panel):
    """`start` builds only dates >= start: identical columns and edges there; NaN and no edges before;
    float32 output columns hold the float64 values exactly where the store dtype is integer."""
    returns, rows, build = panel
    start = 37
    late = build_graphs(returns, rows, CFG, np, dtype="float64", start=start, out_dtype="float32")
    for name, store_dtype in GRAPH_COLUMNS:
        assert np.isnan(late.columns[name][:start]).all(), name
        want = build.columns[name][start:]
        got = late.columns[name][start:]
        if store_dtype.startswith("i"):
            np.testing.assert_array_equal(got, want, err_msg=name)
        else:
            np.testing.assert_array_equal(got, want.astype(np.float32), err_msg=name)
    assert not late.is_graph_valid_TN[:start].any()
    keep = build.edges.t_E >= start
    for field in ("t_E", "i_E", "j_E", "rho_E"):
        np.testing.assert_array_equal(getattr(late.edges, field), getattr(build.edges, field)[keep])
    nothing = build_graphs(returns, rows, CFG, np, start=returns.shape[0])
    assert nothing.edges.t_E.size == 0 and np.isnan(nothing.columns["graph_degree"]).all()


def test_metrics_on_threads_from_a_peer_table_equal_the_pipelined_build(panel):
    """`graph_from_peers` (the ETL's split form, metric chunks on threads) gives exactly `build_graphs`."""
    returns, rows, build = panel
    peers = peer_table(returns, rows, CFG, np, dtype="float64")
    split = graph_from_peers(peers, np, nodes_per_chunk=30, threads=3)
    for name, _ in GRAPH_COLUMNS:
        np.testing.assert_array_equal(split.columns[name], build.columns[name], err_msg=name)
    for field in ("t_E", "i_E", "j_E", "rho_E"):
        np.testing.assert_array_equal(getattr(split.edges, field), getattr(build.edges, field))


def test_metric_chunks_wait_only_for_their_own_dates(panel, monkeypatch):
    """While the peer table fills (`start_peer_table`), each metric chunk waits for its own dates, not for
    all of them; an error of the filling thread reaches the caller."""
    returns, rows, build = panel
    peers = peer_table(returns, rows, CFG, np, dtype="float64")
    asked: list[int] = []
    split = graph_from_peers(peers, np, nodes_per_chunk=30 * returns.shape[1], threads=2, ready=asked.append)
    t_len = returns.shape[0]
    assert asked == [*range(30, t_len, 30), t_len, t_len]  # chunk ends in order, then the final check
    np.testing.assert_array_equal(split.columns["graph_closeness"], build.columns["graph_closeness"])

    dates = corr_mod.DatesDone(0)
    dates.advance(5)
    dates.wait(5)
    dates.end(ValueError("boom"))
    dates.wait(5)  # dates already done stay usable
    with pytest.raises(ValueError, match="boom"):
        dates.wait(6)

    def broken(*args, **kwargs):
        kwargs["progress"](3)
        raise ValueError("correlations failed")

    monkeypatch.setattr(corr_mod, "peer_table", broken)
    with pytest.raises(ValueError, match="correlations failed"):
        build_graphs(returns, rows, CFG, np, dtype="float64")


def test_unset_work_sizes_are_the_devices(panel, monkeypatch):
    """The ETL passes no work sizes, so they come from `work_sizes(xp)`: with the CPU's on a GPU the stage
    was launch-bound (one correlation block per date, tiny BFS sub-chunks). Sizes never change results."""
    returns, rows, build = panel

    def fake_cupy(gib: int) -> SimpleNamespace:
        device = SimpleNamespace(mem_info=(0, gib << 30))
        return SimpleNamespace(__name__="cupy", cuda=SimpleNamespace(Device=lambda: device))

    assert corr_mod.work_sizes(fake_cupy(79)) is corr_mod.GPU_SIZES  # an H100 80GB reports 79.2 GiB
    assert corr_mod.work_sizes(fake_cupy(40)) == corr_mod.WorkSizes(1 << 30, 1 << 21, 2 << 30, 1 << 11)
    assert corr_mod.work_sizes(np) is corr_mod.CPU_SIZES
    monkeypatch.setattr(
        corr_mod,
        "CPU_SIZES",
        corr_mod.WorkSizes(block_bytes=2000, nodes_per_chunk=30, bfs_budget=1, max_dates=1),
    )
    calls = {"corr": 0, "bfs": 0}

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(corr_mod, "_block_peers", counted("corr", corr_mod._block_peers))
    monkeypatch.setattr(gm, "distance_sums_bitset", counted("bfs", gm.distance_sums_bitset))
    split = graph_from_peers(peer_table(returns, rows, CFG, np, dtype="float64"), np)
    t_len = returns.shape[0]
    assert (
        calls["corr"] > t_len and calls["bfs"] >= t_len // 2
    )  # a block per date and row group, a BFS per date
    assert_same_build(split, build, FLOAT64_RHO_ATOL)  # other block shapes: see the chunking test


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_peer_statistics_do_not_depend_on_other_non_nodes(dtype):
    """Stocks that are never nodes change no bit for the others, wherever they sit in the Code order: a build
    without --start has codes that a --start build lacks. (A BLAS product's last bits depend on its shapes
    and on where an element falls in the kernel's tiles, so each date's product holds only its own nodes.)"""
    rng = np.random.default_rng(11)
    t_len, n, extra = 90, 300, 77
    common = rng.standard_normal((t_len, 1))
    r = 0.6 * common + rng.standard_normal((t_len, n))
    r[rng.random((t_len, n)) < 0.05] = np.nan
    rows = rng.random((t_len, n)) < 0.97
    real = np.sort(rng.choice(n + extra, size=n, replace=False))  # the others never have returns
    r_wide = np.full((t_len, n + extra), np.nan)
    r_wide[:, real] = r
    rows_wide = np.zeros((t_len, n + extra), dtype=bool)
    rows_wide[:, real] = rows
    cfg = GraphConfig(window=60, min_obs=40, threshold=0.1, k=4)
    narrow = peer_table(r, rows, cfg, np, dtype=dtype)
    wide = peer_table(r_wide, rows_wide, cfg, np, dtype=dtype)
    assert narrow.node_TN.sum() > 0.4 * t_len * n  # nodes from the 40th date on
    for name in ("node_TN", "peer_count_TN", "peer_corr_mean_TN", "rho_TNK"):
        np.testing.assert_array_equal(getattr(wide, name)[:, real], getattr(narrow, name), err_msg=name)
    nbr = wide.nbr_TNK[:, real]
    np.testing.assert_array_equal(np.where(nbr >= 0, np.searchsorted(real, nbr), -1), narrow.nbr_TNK)
    assert not wide.node_TN[:, np.setdiff1d(np.arange(n + extra), real)].any()


@pytest.mark.parametrize("threshold", [CFG.threshold, 0.0])
def test_batched_dates_with_padding_match_one_date_per_block(panel, monkeypatch, threshold):
    """The GPU's form on NumPy: several dates per product, each padded with zero columns to the most defined
    stocks of the batch. Padding never becomes a peer (at threshold 0 too); results equal one date per block
    within the float64 tolerance of other shapes, and the peer sets and top-k choices exactly."""
    returns, rows, _ = panel
    cfg = dataclasses.replace(CFG, threshold=threshold)
    if threshold > 0:
        assert decision_margin(returns, rows, cfg) > 1e3 * FLOAT64_RHO_ATOL
    one = peer_table(returns, rows, cfg, np, dtype="float64")
    sizes = dataclasses.replace(corr_mod.CPU_SIZES, max_dates=16)
    monkeypatch.setattr(corr_mod, "CPU_SIZES", sizes)
    defined_per_date = {
        int(corr_mod.window_z(returns, rows, t, t + 1, cfg, np)[2].sum()) for t in range(returns.shape[0])
    }
    assert len(defined_per_date) > 3  # batches really mix dates of different widths
    batched = peer_table(returns, rows, cfg, np, dtype="float64")
    for name in ("node_TN", "peer_count_TN", "nbr_TNK"):
        np.testing.assert_array_equal(getattr(batched, name), getattr(one, name), err_msg=name)
    for name in ("peer_corr_mean_TN", "rho_TNK"):
        np.testing.assert_allclose(getattr(batched, name), getattr(one, name), rtol=0, atol=FLOAT64_RHO_ATOL)
    if threshold == 0:  # every defined pair is a peer, and nothing else
        defined = np.array([corr_mod.window_z(returns, rows, t, t + 1, cfg, np)[2][0] for t in range(70)])
        want = np.where(defined, defined.sum(axis=1, keepdims=True) - 1, 0)
        np.testing.assert_array_equal(batched.peer_count_TN, want)


def test_float32_build_close_to_float64(panel):
    returns, rows, build = panel
    b32 = build_graphs(returns, rows, CFG, np, dtype="float32")
    np.testing.assert_allclose(b32.columns["peer_corr_mean"], build.columns["peer_corr_mean"], atol=1e-6)
    valid = build.is_graph_valid_TN
    np.testing.assert_array_equal(b32.is_graph_valid_TN, valid)
    assert np.mean(b32.columns["graph_degree"][valid] == build.columns["graph_degree"][valid]) > 0.99


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=20, max_value=68), seed=st.integers(0, 2**16))
def test_no_look_ahead(panel, cut, seed):
    """Perturbing returns and rows after date `cut` leaves every graph column and edge at <= cut unchanged."""
    returns, rows, build = panel
    rng = np.random.default_rng(seed)
    r2, rows2 = returns.copy(), rows.copy()
    r2[cut + 1 :] = rng.standard_normal(r2[cut + 1 :].shape) * 0.05
    r2[cut + 1 :][rng.random(r2[cut + 1 :].shape) < 0.3] = np.nan
    rows2[cut + 1 :] = rng.random(rows2[cut + 1 :].shape) < 0.5
    other = build_graphs(r2, rows2, CFG, np, dtype="float64")
    for name, _ in GRAPH_COLUMNS:
        np.testing.assert_array_equal(other.columns[name][: cut + 1], build.columns[name][: cut + 1], name)
    keep, keep2 = build.edges.t_E <= cut, other.edges.t_E <= cut
    for field in ("t_E", "i_E", "j_E", "rho_E"):
        np.testing.assert_array_equal(getattr(other.edges, field)[keep2], getattr(build.edges, field)[keep])


# ---------------------------------------------------------------- edge arrays for the model


def test_edge_file_round_trip(panel, tmp_path):
    returns, rows, build = panel
    t_len, n = rows.shape
    sector = np.tile(np.array([1, 1, 1, 2, 2, 3] * 4, dtype=float), (t_len, 1))
    sector[:, 4] = np.nan  # unknown sector is never "same"
    market = np.tile(np.arange(n) % 2, (t_len, 1)).astype(np.int64)
    market[:, 0] = -1
    dates = [f"2024-01-{d:02d}" for d in range(t_len)]
    write_graph_edges(tmp_path, build, rows, sector, market, np, dates=dates)
    arrays, dates_back = read_graph_edges(tmp_path)
    assert dates_back == dates
    per_date = np.bincount(build.edges.t_E, minlength=t_len)
    assert arrays.epad % 128 == 0 and arrays.epad >= 2 * per_date.max()
    assert arrays.edges_TE2.shape == (t_len, arrays.epad, 2) and arrays.edges_TE2.dtype == np.int32
    for t in range(t_len):
        local = np.cumsum(rows[t]) - 1
        stock_of = {int(local[i]): i for i in range(n) if rows[t, i]}
        m = arrays.mask_TE[t]
        assert m.sum() == 2 * per_date[t]
        got = {}
        for (a, b), f in zip(arrays.edges_TE2[t][m].tolist(), arrays.feat_TEF[t][m], strict=True):
            got[stock_of[a], stock_of[b]] = f
        sel = build.edges.t_E == t
        for i, j, r in zip(build.edges.i_E[sel], build.edges.j_E[sel], build.edges.rho_E[sel], strict=True):
            same_sec = float(np.isfinite(sector[t, i]) and sector[t, i] == sector[t, j])
            same_mkt = float(market[t, i] >= 0 and market[t, j] >= 0 and market[t, i] == market[t, j])
            for key in ((i, j), (j, i)):
                np.testing.assert_allclose(got.pop(key), [r, abs(r), same_sec, same_mkt], rtol=1e-6)
        assert not got
    some, some_dates = read_graph_edges(tmp_path, [t_len - 1, 5])
    assert some_dates == [dates[-1], dates[5]]
    for field in ("edges_TE2", "mask_TE", "feat_TEF"):
        np.testing.assert_array_equal(getattr(some, field), getattr(arrays, field)[[t_len - 1, 5]])


def test_undirected_edges_symmetrise_top_k(panel):
    returns, rows, _ = panel
    peers = peer_table(returns, rows, CFG, np, dtype="float64")
    e = undirected_edges(peers, np)
    assert (e.i_E < e.j_E).all()
    key = (e.t_E * 100 + e.i_E) * 100 + e.j_E
    assert (np.diff(key) > 0).all()  # sorted, each edge once


def test_columns_are_the_catalog_graph_block():
    """Names and write dtypes of FEATURES.md #329-#346, as the ETL registry transcribes them."""
    from etl.features.registry import CANONICAL

    assert [(row[1], row[3]) for row in CANONICAL if row[2] == "graph"] == list(GRAPH_COLUMNS)


def test_bad_shapes_are_a_user_error():
    from etl.errors import GogookuError

    with pytest.raises(GogookuError, match="must be one"):
        build_graphs(np.zeros((5, 3)), np.ones((5, 4), dtype=bool), CFG, np)
    with pytest.raises(GogookuError, match="no graph edge file"):
        read_graph_edges("/nonexistent-graph-dir")


@pytest.mark.gpu
def test_gpu_matches_cpu(panel):
    import cupy

    returns, rows, build = panel
    gpu = build_graphs(cupy.asarray(returns), cupy.asarray(rows), CFG, cupy, dtype="float64")
    for name, _ in GRAPH_COLUMNS:
        got = cupy.asnumpy(gpu.columns[name])
        if name in PAGERANK_COLUMNS:
            np.testing.assert_allclose(got, build.columns[name], rtol=1e-4, atol=1e-7, err_msg=name)
        else:
            np.testing.assert_allclose(got, build.columns[name], rtol=1e-9, atol=1e-12, err_msg=name)
    for field in ("t_E", "i_E", "j_E"):
        np.testing.assert_array_equal(cupy.asnumpy(getattr(gpu.edges, field)), getattr(build.edges, field))
