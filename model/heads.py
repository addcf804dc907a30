"""Per-horizon quantile heads whose quantiles cannot cross.

Each horizon predicts the median and, on each side, positive (softplus) gaps between neighbouring quantile
levels; cumulative sums of the gaps place the other quantiles, so q_0.1 <= ... <= q_0.9 for any parameters.

The highway (LSTNet's linear component, Lai et al. 2018) adds a linear map of the latest inputs to every
quantile of a horizon. The network's LayerNorms make its output blind to the scale of its inputs, and on
returns the scale of the latest cross-sectional value is much of the signal: a ridge fit on it alone beat the
network without the highway (docs/results.md). Zero-initialised, so training starts from the network alone.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from model.tft import GRN


def monotone_quantiles(raw_Q: jax.Array, median_index: int) -> jax.Array:
    """Raw head outputs (last axis Q) -> non-decreasing quantiles; `raw[m]` is the median itself."""
    gaps = jax.nn.softplus(raw_Q)
    median = raw_Q[..., median_index : median_index + 1]
    above = median + jnp.cumsum(gaps[..., median_index + 1 :], axis=-1)
    below = median - jnp.cumsum(gaps[..., :median_index][..., ::-1], axis=-1)[..., ::-1]
    return jnp.concatenate([below, median, above], axis=-1)


class QuantileHeads(nn.Module):
    """Fused representation `[B, N, D]` -> quantiles `[B, N, H, Q]` (float32), one head per horizon."""

    hidden: int
    n_horizons: int
    n_quantiles: int
    median_index: int
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, h_BND: jax.Array, latest_BNF: jax.Array | None = None, *, deterministic: bool = True
    ) -> jax.Array:
        """`latest_BNF`: the inputs at the last date of the window (0 where missing); None: no highway."""
        z_BND = GRN(self.hidden, dropout=self.dropout, dtype=self.dtype, name="grn")(
            h_BND, deterministic=deterministic
        )
        kernel_DHQ = self.param(
            "kernel",
            nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", 0, (1, 2)),
            (self.hidden, self.n_horizons, self.n_quantiles),
        )
        bias_HQ = self.param("bias", nn.initializers.zeros, (self.n_horizons, self.n_quantiles))
        raw_BNHQ = jnp.einsum("bnd,dhq->bnhq", z_BND, kernel_DHQ.astype(self.dtype)).astype(jnp.float32)
        q_BNHQ = monotone_quantiles(raw_BNHQ + bias_HQ, self.median_index)
        if latest_BNF is None:
            return q_BNHQ
        highway = nn.Dense(
            self.n_horizons, kernel_init=nn.initializers.zeros, dtype=self.dtype, name="highway"
        )
        return q_BNHQ + highway(latest_BNF).astype(jnp.float32)[..., None]  # a shift keeps the order
