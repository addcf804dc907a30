"""GATv2 layer and its graph highway against a dense, loop-based reference on a small graph with the same
parameters."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from model.gat import GATv2Layer, flat_edges

D, HEADS, FE, V = 8, 2, 4, 3


def _graph():
    """Two dates, Npad = 5. Date 0: 4 real stocks, stock 3 isolated. Date 1: 3 real stocks."""
    rng = np.random.default_rng(0)
    stock_mask = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]], bool)
    edges = np.array(
        [
            [[0, 1], [1, 0], [2, 1], [0, 2], [2, 2], [4, 1], [1, 7], [0, 1]],
            [[1, 0], [2, 0], [0, 2], [3, 0], [1, 2], [0, 0], [2, 1], [0, 1]],
        ],
        np.int32,
    )
    # real edges; [2,2] is a self-edge, [4,1] and [3,0] touch padded stocks, [1,7] is out of range
    edge_mask = np.array([[1, 1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 0, 0, 1]], bool)
    edge_feat = rng.normal(size=(2, 8, FE)).astype(np.float32)
    h = rng.normal(size=(2, 5, D)).astype(np.float32)
    return h, edges, edge_mask, edge_feat, stock_mask


def _values(seed=7):
    """Per-stock, per-head values for the graph highway: [B * Npad, HEADS, V]."""
    return np.random.default_rng(seed).normal(size=(10, HEADS, V)).astype(np.float32)


@functools.cache
def _layer_fn():
    layer = GATv2Layer(D, HEADS)

    def apply(params, h, edges, edge_mask, edge_feat, stock_mask, values=None):
        src, dst, valid, feat = flat_edges(edges, edge_mask, stock_mask, edge_feat)
        out, nbr = layer.apply(params, h, src, dst, valid, feat, values)
        return out if values is None else (out, nbr)

    def init(h, edges, edge_mask, edge_feat, stock_mask):
        src, dst, valid, feat = flat_edges(edges, edge_mask, stock_mask, edge_feat)
        return layer.init(jax.random.key(3), h, src, dst, valid, feat)

    return jax.jit(init), jax.jit(apply)


def reference(params, h, edges, edge_mask, edge_feat, stock_mask, values=None):
    """Dense loops: for each real target i, softmax over its real incoming edges plus a self-loop.
    With `values`, also sum_h sum_{j != i} alpha_jih values[j, h] (the graph highway)."""
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params["params"])
    k = D // HEADS
    b, n, _ = h.shape
    out = np.zeros((b, n, D))
    nbr = np.zeros((b, n, V))
    lrelu = lambda z: np.where(z > 0, z, 0.2 * z)
    for t in range(b):
        src_h = np.einsum("nd,dhk->nhk", h[t], p["lin_src"]["kernel"]) + p["lin_src"]["bias"]
        dst_h = np.einsum("nd,dhk->nhk", h[t], p["lin_dst"]["kernel"]) + p["lin_dst"]["bias"]
        for i in range(n):
            incoming = [(i, np.ones(FE))]
            for e in range(edges.shape[1]):
                j, tgt = edges[t, e]
                ok = edge_mask[t, e] and tgt == i and j != i and 0 <= j < n
                if ok and stock_mask[t, j] and stock_mask[t, i]:
                    incoming.append((j, edge_feat[t, e]))
            msg = np.zeros((HEADS, k))
            for hd in range(HEADS):
                scores = []
                for j, feat in incoming:
                    ef = np.einsum("c,ck->k", feat, p["lin_edge"]["kernel"][:, hd])
                    z = lrelu(src_h[j, hd] + dst_h[i, hd] + ef)
                    scores.append(float(p["att"][hd] @ z))
                w = np.exp(np.array(scores) - max(scores))
                w /= w.sum()
                for (j, _), a in zip(incoming, w, strict=True):
                    msg[hd] += a * src_h[j, hd]
                    if values is not None and j != i:
                        nbr[t, i] += a * values[t * n + j, hd]
            m = msg.reshape(D) + p["bias"]
            elu = np.where(m > 0, m, np.expm1(np.minimum(m, 0)))
            r = h[t, i] + elu @ p["out"]["kernel"] + p["out"]["bias"]
            r = (r - r.mean()) / np.sqrt(r.var() + 1e-6)
            out[t, i] = r * p["norm"]["scale"] + p["norm"]["bias"]
    return out if values is None else (out, nbr)


def test_gatv2_equals_dense_loop_reference():
    init, apply = _layer_fn()
    args = _graph()
    params = init(*args)
    # non-trivial attention: random (not zero) biases so every term of the score matters
    rng = np.random.default_rng(5)
    params = jax.tree_util.tree_map(lambda a: a + 0.3 * rng.normal(size=a.shape).astype(np.float32), params)
    got = np.asarray(apply(params, *args))
    want = reference(params, *args)
    stock_mask = args[-1]
    np.testing.assert_allclose(got[stock_mask], want[stock_mask], rtol=1e-4, atol=1e-4)
    assert np.isfinite(got).all()  # padded stocks too (they only see their self-loop)


def test_isolated_stock_is_its_self_loop_and_ignored_edges_change_nothing():
    init, apply = _layer_fn()
    h, edges, edge_mask, edge_feat, stock_mask = _graph()
    params = init(h, edges, edge_mask, edge_feat, stock_mask)
    base = np.asarray(apply(params, h, edges, edge_mask, edge_feat, stock_mask))
    # Edges that must be ignored: masked ones, self-edges, edges touching padded or out-of-range stocks.
    ignored = ~edge_mask.copy()
    ignored[0, [4, 5, 6]] = True
    ignored[1, 3] = True
    feat2 = np.where(ignored[..., None], np.float32(np.nan), edge_feat)
    edges2 = edges.copy()
    edges2[~edge_mask] = [3, 2]  # masked edges may point anywhere
    edges2[0, [4, 5, 6]] = [[1, 1], [4, 3], [2, 9]]  # other self / padded / out-of-range edges
    edges2[1, 3] = [4, 1]
    h2 = np.where(stock_mask[..., None], h, np.float32(1e3))  # padded stocks' states
    other = np.asarray(apply(params, h2, edges2, edge_mask, feat2, stock_mask))
    np.testing.assert_array_equal(base[stock_mask], other[stock_mask])
    # stock 3 of date 0 has no real edge: softmax over its self-loop alone is weight 1 on itself
    p = params["params"]
    xs = jnp.einsum("d,dhk->hk", h[0, 3], p["lin_src"]["kernel"]) + p["lin_src"]["bias"]
    m = xs.reshape(D) + p["bias"]
    r = h[0, 3] + jax.nn.elu(m) @ p["out"]["kernel"] + p["out"]["bias"]
    r = (r - r.mean()) / jnp.sqrt(r.var() + 1e-6) * p["norm"]["scale"] + p["norm"]["bias"]
    np.testing.assert_allclose(base[0, 3], r, rtol=1e-5, atol=1e-5)


def test_graph_highway_equals_the_attention_weighted_sum_over_neighbours():
    """Sum over heads and real neighbours j != i of alpha_ji v_j; 0 for an isolated stock and for padding
    (their softmax has only the self-loop); the layer's output does not depend on the values."""
    init, apply = _layer_fn()
    args = _graph()
    params = init(*args)
    rng = np.random.default_rng(5)
    params = jax.tree_util.tree_map(lambda a: a + 0.3 * rng.normal(size=a.shape).astype(np.float32), params)
    values = _values()
    out, nbr = (np.asarray(a) for a in apply(params, *args, values))
    _, want = reference(params, *args, values.astype(np.float64))
    stock_mask = args[-1]
    # float32 softmax weights (rel. error ~1e-6) times unit-scale values, summed over <= 2 heads x 3 edges
    np.testing.assert_allclose(nbr.reshape(2, 5, V)[stock_mask], want[stock_mask], rtol=1e-5, atol=1e-5)
    nbr = nbr.reshape(2, 5, V)
    assert np.all(nbr[0, 3] == 0) and np.all(nbr[~stock_mask] == 0)
    # the same float32 arithmetic in two compiled programs, which XLA may fuse differently: ~1e-7 on O(1)
    np.testing.assert_allclose(out, np.asarray(apply(params, *args)), rtol=0, atol=1e-6)
