"""Temporal Fusion Transformer building blocks: GLU, GRN, gate-add-norm, static contexts, variable selection.

Lim et al. (2021), with one change for scale: per-variable embeddings are linear maps of each variable's input
channels applied as one batched einsum, and the selection-weighted sum is contracted directly, so the
`[B, L, N, F, D]` tensor of per-variable embeddings is never materialised (4,000 stocks x 380 inputs).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class GLU(nn.Module):
    """Gated linear unit: sigmoid(W4 x) * (W5 x); lets a block switch itself off."""

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        gate = nn.Dense(self.features, dtype=self.dtype, name="gate")(x)
        value = nn.Dense(self.features, dtype=self.dtype, name="value")(x)
        return jax.nn.sigmoid(gate) * value


class GateAddNorm(nn.Module):
    """LayerNorm(skip + GLU(dropout(x))): the TFT gated residual connection."""

    features: int
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, skip: jax.Array, *, deterministic: bool = True) -> jax.Array:
        x = nn.Dropout(self.dropout)(x, deterministic=deterministic)
        x = GLU(self.features, dtype=self.dtype, name="glu")(x)
        return nn.LayerNorm(dtype=self.dtype, name="norm")(skip + x)


class GRN(nn.Module):
    """Gated residual network: LayerNorm(skip(a) + GLU(W1 ELU(W2 a + W3 c))), c an optional context.

    The context must broadcast against `a` on every axis but the last.
    """

    features: int
    hidden: int | None = None
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, a: jax.Array, context: jax.Array | None = None, *, deterministic: bool = True
    ) -> jax.Array:
        hidden = self.hidden or self.features
        skip = (
            a if a.shape[-1] == self.features else nn.Dense(self.features, dtype=self.dtype, name="skip")(a)
        )
        eta = nn.Dense(hidden, dtype=self.dtype, name="fc_in")(a)
        if context is not None:
            eta = eta + nn.Dense(hidden, use_bias=False, dtype=self.dtype, name="fc_context")(context)
        eta = nn.Dense(hidden, dtype=self.dtype, name="fc_hidden")(jax.nn.elu(eta))
        return GateAddNorm(self.features, self.dropout, self.dtype, name="gate_norm")(
            eta, skip, deterministic=deterministic
        )


class StaticContexts(nn.Module):
    """Sector33 and market embeddings -> the four TFT static contexts (selection, enrichment, h0, c0).

    Ids outside [0, n) (the -1 'unknown' sentinel included) share row 0.
    """

    hidden: int
    n_sector33: int
    n_market: int
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, sector_BN: jax.Array, market_BN: jax.Array, *, deterministic: bool = True
    ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        def rows(ids: jax.Array, n: int) -> jax.Array:
            return jnp.where((ids >= 0) & (ids < n), ids + 1, 0)

        sector = nn.Embed(self.n_sector33 + 1, self.hidden, dtype=self.dtype, name="sector33")
        market = nn.Embed(self.n_market + 1, self.hidden, dtype=self.dtype, name="market")
        s_BND = sector(rows(sector_BN, self.n_sector33)) + market(rows(market_BN, self.n_market))
        return tuple(  # type: ignore[return-value]
            GRN(self.hidden, dropout=self.dropout, dtype=self.dtype, name=name)(
                s_BND, deterministic=deterministic
            )
            for name in ("selection", "enrichment", "state_h", "state_c")
        )


class VariableSelection(nn.Module):
    """TFT variable selection over F variables with C input channels each.

    Weights: softmax over F of a GRN on all channels plus the static selection context. Output: the
    weight-averaged per-variable linear embeddings, `sum_f w_f (x_f W_f + b_f)`, as two einsums.
    """

    hidden: int
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, x_BLNFC: jax.Array, context_BND: jax.Array, *, deterministic: bool = True
    ) -> tuple[jax.Array, jax.Array]:
        b, l, n, f, c = x_BLNFC.shape
        x_BLNFC = x_BLNFC.astype(self.dtype)
        flat_BLNX = x_BLNFC.reshape(b, l, n, f * c)
        logits_BLNF = GRN(f, self.hidden, self.dropout, self.dtype, name="weights")(
            flat_BLNX, context_BND[:, None], deterministic=deterministic
        )
        w_BLNF = jax.nn.softmax(logits_BLNF.astype(jnp.float32), axis=-1).astype(self.dtype)
        per_variable_init = nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", 1, 2, (0,))
        kernel_FCD = self.param("embed_kernel", per_variable_init, (f, c, self.hidden))
        bias_FD = self.param("embed_bias", nn.initializers.normal(0.02), (f, self.hidden))
        kernel_FCD, bias_FD = kernel_FCD.astype(self.dtype), bias_FD.astype(self.dtype)
        weighted_BLNFC = x_BLNFC * w_BLNF[..., None]
        out_BLND = jnp.einsum("blnfc,fcd->blnd", weighted_BLNFC, kernel_FCD)
        out_BLND = out_BLND + jnp.einsum("blnf,fd->blnd", w_BLNF, bias_FD)
        return out_BLND, w_BLNF
