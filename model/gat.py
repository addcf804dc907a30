"""GATv2 over each date's stocks on the padded correlation-graph edge list.

The B dates are one disjoint graph of B*Npad nodes (node id = date * Npad + stock), so the softmax over each
node's incoming edges is a `segment_max` / `segment_sum` with a static segment count. Every node gets a
self-loop inside the layer (edge features all ones: a stock is perfectly correlated with itself, same sector,
same market), so an isolated or padded stock still has a well-defined output. An edge counts only if its
mask is set, both ends are in range and are real stocks, and it is not a self-edge (the layer's own self-loop
is the only one); everything else gets exactly zero weight.
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
        *,
        deterministic: bool = True,
    ) -> jax.Array:
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
        return out_ND.reshape(b, n, d)


class GAT(nn.Module):
    """A stack of GATv2 layers over the date's correlation graph."""

    hidden: int
    heads: int
    layers: int
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        h_BND: jax.Array,
        edges_BE2: jax.Array,
        edge_mask_BE: jax.Array,
        edge_feat_BEC: jax.Array,
        stock_mask_BN: jax.Array,
        *,
        deterministic: bool = True,
    ) -> jax.Array:
        src_E, dst_E, valid_E, feat_EC = flat_edges(edges_BE2, edge_mask_BE, stock_mask_BN, edge_feat_BEC)
        for i in range(self.layers):
            h_BND = GATv2Layer(self.hidden, self.heads, self.dropout, self.dtype, name=f"layer_{i}")(
                h_BND, src_E, dst_E, valid_E, feat_EC, deterministic=deterministic
            )
        return h_BND
