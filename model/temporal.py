"""Temporal encoder per stock: LSTM (flax nn.RNN) -> static enrichment -> causal interpretable attention.

Each stock's lookback is one sequence ([B, L, N, D] is folded to [B*N, L, D]); stocks never mix here, which is
what makes the model equivariant to stock order until the GAT.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from model.tft import GRN, GateAddNorm


class InterpretableMultiHeadAttention(nn.Module):
    """TFT attention: per-head queries and keys, one value projection shared by all heads, heads averaged.

    Sharing V makes the averaged attention matrix a faithful importance map over time steps.
    """

    hidden: int
    heads: int
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_SLD: jax.Array, *, deterministic: bool = True) -> tuple[jax.Array, jax.Array]:
        d_head = self.hidden // self.heads
        length = x_SLD.shape[1]
        q_SLHK = nn.DenseGeneral((self.heads, d_head), dtype=self.dtype, name="query")(x_SLD)
        k_SLHK = nn.DenseGeneral((self.heads, d_head), dtype=self.dtype, name="key")(x_SLD)
        v_SLK = nn.Dense(d_head, dtype=self.dtype, name="value")(x_SLD)
        scores_SHQK = jnp.einsum("sqhk,sthk->shqt", q_SLHK, k_SLHK).astype(jnp.float32) / jnp.sqrt(d_head)
        causal_QK = jnp.tril(jnp.ones((length, length), dtype=bool))
        scores_SHQK = jnp.where(causal_QK, scores_SHQK, -1e9)
        attn_SHQK = jax.nn.softmax(scores_SHQK, axis=-1)
        attn_SHQK = nn.Dropout(self.dropout)(attn_SHQK, deterministic=deterministic)
        mean_attn_SQK = attn_SHQK.mean(axis=1)
        heads_SQK = jnp.einsum("sqt,stk->sqk", mean_attn_SQK.astype(self.dtype), v_SLK)
        return nn.Dense(self.hidden, dtype=self.dtype, name="out")(heads_SQK), mean_attn_SQK


class TemporalEncoder(nn.Module):
    """LSTM over the selected inputs, gated skip, static enrichment, causal attention, position-wise GRN.

    Returns the last time step's representation `[B, N, D]` (the prediction date).
    """

    hidden: int
    heads: int
    lstm_layers: int = 1
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        v_BLND: jax.Array,
        enrich_BND: jax.Array,
        h0_BND: jax.Array,
        c0_BND: jax.Array,
        *,
        deterministic: bool = True,
    ) -> jax.Array:
        b, l, n, d = v_BLND.shape
        seq_SLD = jnp.swapaxes(v_BLND, 1, 2).reshape(b * n, l, d)
        carry = (c0_BND.reshape(b * n, d), h0_BND.reshape(b * n, d))
        out_SLD = seq_SLD
        for i in range(self.lstm_layers):
            cell = nn.OptimizedLSTMCell(self.hidden, dtype=self.dtype, name=f"lstm_{i}")
            out_SLD = nn.RNN(cell, name=f"rnn_{i}")(out_SLD, initial_carry=carry)
        kw = dict(dropout=self.dropout, dtype=self.dtype)
        temporal_SLD = GateAddNorm(self.hidden, **kw, name="lstm_gate")(
            out_SLD, seq_SLD, deterministic=deterministic
        )
        enrich_S1D = enrich_BND.reshape(b * n, 1, d)
        enriched_SLD = GRN(self.hidden, **kw, name="enrichment")(
            temporal_SLD, enrich_S1D, deterministic=deterministic
        )
        attn_SLD, _ = InterpretableMultiHeadAttention(self.hidden, self.heads, **kw, name="attention")(
            enriched_SLD, deterministic=deterministic
        )
        attended_SLD = GateAddNorm(self.hidden, **kw, name="attention_gate")(
            attn_SLD, enriched_SLD, deterministic=deterministic
        )
        # Only the prediction date leaves the encoder; the position-wise layers need nothing else.
        last_SD = GRN(self.hidden, **kw, name="positionwise")(
            attended_SLD[:, -1], deterministic=deterministic
        )
        out_SD = GateAddNorm(self.hidden, **kw, name="output_gate")(
            last_SD, temporal_SLD[:, -1], deterministic=deterministic
        )
        return out_SD.reshape(b, n, d)
