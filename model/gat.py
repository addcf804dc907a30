"""GATv2 over each date's stocks on the padded correlation-graph edge list.

The B dates are one disjoint graph of B*Npad nodes (node id = date * Npad + stock), so the softmax over each
node's incoming edges is a `segment_max` / `segment_sum` with a static segment count. Every node gets a
self-loop inside the layer (edge features all ones: a stock is perfectly correlated with itself, same sector,
same market), so an isolated or padded stock still has a well-defined output. An edge counts only if its
mask is set, both ends are in range and are real stocks, and it is not a self-edge (the layer's own self-loop
is the only one); everything else gets exactly zero weight.

The graph highway: the last layer's attention also sums a zero-initialised linear map of each neighbour's
latest inputs into the stock's quantiles. The network's LayerNorms hide the scale of a neighbour's latest
return, and that scale is the peer signal (a ridge fit on the stock's and its neighbours' inputs beats one on
the stock's alone, docs/results.md); through this path the attention weights learn from it directly.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def flat_edges(
    edges_BE2: jax.Array, edge_mask_BE: jax.Array, stock_mask_BN: jax.Array, edge_feat_BEC: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Padded per-date edges -> (src_E, dst_E, valid_E, feat_EC) over B*Npad nodes, self-loops appended."""
    b, n = stock_mask_BN.shape
    src, dst = edges_BE2[..., 0], edges_BE2[..., 1]
    in_range = (src >= 0) & (src < n) & (dst >= 0) & (dst < n)
    src, dst = jnp.clip(src, 0, n - 1), jnp.clip(dst, 0, n - 1)
    real_src = jnp.take_along_axis(stock_mask_BN, src, axis=1)
    real_dst = jnp.take_along_axis(stock_mask_BN, dst, axis=1)
    valid_BE = edge_mask_BE & in_range & real_src & real_dst & (src != dst)
    offset_B1 = (jnp.arange(b, dtype=jnp.int32) * n)[:, None]
    loops = jnp.arange(b * n, dtype=jnp.int32)
    feat = jnp.where(valid_BE[..., None], edge_feat_BEC, 0.0).astype(jnp.float32)
    feat = jnp.where(jnp.isfinite(feat), feat, 0.0)
    return (
        jnp.concatenate([(src + offset_B1).reshape(-1), loops]),
        jnp.concatenate([(dst + offset_B1).reshape(-1), loops]),
        jnp.concatenate([valid_BE.reshape(-1), jnp.ones(b * n, dtype=bool)]),
        jnp.concatenate([feat.reshape(-1, feat.shape[-1]), jnp.ones((b * n, feat.shape[-1]), jnp.float32)]),
    )


class GATv2Layer(nn.Module):
    """One GATv2 layer (Brody et al. 2022) with edge features, a residual and LayerNorm.

    score(j -> i) = a_h . LeakyReLU(W_src h_j + W_dst h_i + W_edge e_ji); alpha = softmax over i's incoming
    edges; m_i = concat_h sum_j alpha_ji W_src h_j + bias; out_i = LayerNorm(h_i + W_out ELU(m_i)).
    With `values_NHV`, also returns sum over heads and over i's neighbours j != i of alpha_ji v_jh (the
    self-loop's weight is what the stock keeps for itself, so an isolated stock gets exactly 0).
    """

    hidden: int
    heads: int
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        h_BND: jax.Array,
        src_E: jax.Array,
        dst_E: jax.Array,
        valid_E: jax.Array,
        feat_EC: jax.Array,
        values_NHV: jax.Array | None = None,
        *,
        deterministic: bool = True,
    ) -> tuple[jax.Array, jax.Array | None]:
        b, n, d = h_BND.shape
        d_head = self.hidden // self.heads
        nodes = b * n
        h_ND = h_BND.reshape(nodes, d)
        proj = lambda name: nn.DenseGeneral((self.heads, d_head), dtype=self.dtype, name=name)
        xs_NHK, xd_NHK = proj("lin_src")(h_ND), proj("lin_dst")(h_ND)
        xe_EHK = nn.DenseGeneral((self.heads, d_head), use_bias=False, dtype=self.dtype, name="lin_edge")(
            feat_EC.astype(self.dtype)
        )
        att_HK = self.param("att", nn.initializers.lecun_normal(), (self.heads, d_head))
        msg_EHK = xs_NHK[src_E]
        z_EHK = jax.nn.leaky_relu(msg_EHK + xd_NHK[dst_E] + xe_EHK, 0.2)
        logits_EH = jnp.einsum("ehk,hk->eh", z_EHK.astype(jnp.float32), att_HK)
        logits_EH = jnp.where(valid_E[:, None], logits_EH, -1e9)
        max_NH = jax.ops.segment_max(logits_EH, dst_E, num_segments=nodes)
        ex_EH = jnp.where(valid_E[:, None], jnp.exp(logits_EH - max_NH[dst_E]), 0.0)
        denom_NH = jax.ops.segment_sum(ex_EH, dst_E, num_segments=nodes)  # >= 1: the self-loop is valid
        alpha_EH = ex_EH / denom_NH[dst_E]
        alpha_EH = nn.Dropout(self.dropout)(alpha_EH, deterministic=deterministic)
        agg_NHK = jax.ops.segment_sum(
            alpha_EH[..., None] * msg_EHK.astype(jnp.float32), dst_E, num_segments=nodes
        )
        bias_D = self.param("bias", nn.initializers.zeros, (self.hidden,))
        agg_ND = agg_NHK.reshape(nodes, self.hidden) + bias_D
        update_ND = nn.Dense(self.hidden, dtype=self.dtype, name="out")(jax.nn.elu(agg_ND).astype(self.dtype))
        update_ND = nn.Dropout(self.dropout)(update_ND, deterministic=deterministic)
        out_ND = nn.LayerNorm(dtype=self.dtype, name="norm")(h_ND + update_ND)
        if values_NHV is None:
            return out_ND.reshape(b, n, d), None
        weight_EH = jnp.where((src_E != dst_E)[:, None], alpha_EH, 0.0)
        msg_EV = jnp.einsum("eh,ehv->ev", weight_EH, values_NHV[src_E].astype(jnp.float32))
        nbr_NV = jax.ops.segment_sum(msg_EV, dst_E, num_segments=nodes)
        return out_ND.reshape(b, n, d), nbr_NV


class GAT(nn.Module):
    """A stack of GATv2 layers over the date's correlation graph, and its graph highway.

    Returns the stocks' new states `[B, N, D]` and, given `latest_BNF` and `highway_out`, the graph highway
    `[B, N, highway_out]`: the last layer's attention over each head's zero-initialised linear map of the
    neighbours' latest inputs (None without layers or without `latest_BNF`).
    """

    hidden: int
    heads: int
    layers: int
    dropout: float = 0.0
    dtype: Any = jnp.float32
    highway_out: int = 0

    @nn.compact
    def __call__(
        self,
        h_BND: jax.Array,
        edges_BE2: jax.Array,
        edge_mask_BE: jax.Array,
        edge_feat_BEC: jax.Array,
        stock_mask_BN: jax.Array,
        latest_BNF: jax.Array | None = None,
        *,
        deterministic: bool = True,
    ) -> tuple[jax.Array, jax.Array | None]:
        src_E, dst_E, valid_E, feat_EC = flat_edges(edges_BE2, edge_mask_BE, stock_mask_BN, edge_feat_BEC)
        values_NHV = None
        if latest_BNF is not None and self.highway_out and self.layers:
            b, n, f = latest_BNF.shape
            values_NHV = nn.DenseGeneral(
                (self.heads, self.highway_out),
                use_bias=False,
                kernel_init=nn.initializers.zeros,
                dtype=self.dtype,
                name="highway",
            )(latest_BNF.reshape(b * n, f))
        highway_BNV = None
        for i in range(self.layers):
            values = values_NHV if i == self.layers - 1 else None
            h_BND, nbr_NV = GATv2Layer(self.hidden, self.heads, self.dropout, self.dtype, name=f"layer_{i}")(
                h_BND, src_E, dst_E, valid_E, feat_EC, values, deterministic=deterministic
            )
            if nbr_NV is not None:
                highway_BNV = nbr_NV.reshape(*h_BND.shape[:2], -1)
        return h_BND, highway_BNV
