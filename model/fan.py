"""FAN: frequency adaptive normalisation over the lookback window, per (stock, feature).

The rFFT along time finds each series' K strongest frequency components (by amplitude, DC included); their
inverse transform is the non-stationary part `low`, and `x - low` is the residual. The model sees the
residual scaled to unit RMS and `low` beside the window itself: level/trend/seasonality and the remaining
fluctuation are separated per series rather than by a global LayerNorm, and nothing of the input is lost.
The latest cross-sectional value, which carries most of a signal known at t, keeps its scale
(docs/results.md). Parameter-free; computed in float32.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

CHANNELS = 4  # per input: the window, its normalised residual, its non-stationary part, the validity flag


def fan_decompose(x_BLNF: jax.Array, top_k: int) -> tuple[jax.Array, jax.Array]:
    """Split `x` along axis 1 (time) into (low, residual) with `low + residual == x`.

    `low` keeps the `top_k` rFFT bins of largest amplitude per series (ties: lowest bin first).
    """
    x = x_BLNF.astype(jnp.float32)
    length = x.shape[1]
    spec_BKNF = jnp.fft.rfft(x, axis=1)
    amp_BNFK = jnp.moveaxis(jnp.abs(spec_BKNF), 1, -1)
    _, idx_BNFk = jax.lax.top_k(amp_BNFK, top_k)
    keep_BNFK = jax.nn.one_hot(idx_BNFk, amp_BNFK.shape[-1], dtype=jnp.float32).sum(-2)
    keep_BKNF = jnp.moveaxis(keep_BNFK, -1, 1)
    low_BLNF = jnp.fft.irfft(spec_BKNF * keep_BKNF, n=length, axis=1)
    return low_BLNF, x - low_BLNF


def fan_inputs(x_BLNF: jax.Array, x_mask_BLNF: jax.Array, top_k: int, eps: float = 1e-5) -> jax.Array:
    """Per-feature channels `[B, L, N, F, 4]`: (window, residual / RMS(residual), low part, validity flag).

    Masked or non-finite values become 0 before the transform, so they cannot reach the output.
    """
    valid = x_mask_BLNF & jnp.isfinite(x_BLNF)
    x = jnp.where(valid, x_BLNF, 0.0).astype(jnp.float32)
    low, resid = fan_decompose(x, top_k)
    rms = jnp.sqrt(jnp.mean(resid * resid, axis=1, keepdims=True) + eps)
    return jnp.stack([x, resid / rms, low, valid.astype(jnp.float32)], axis=-1)


def plain_inputs(x_BLNF: jax.Array, x_mask_BLNF: jax.Array) -> jax.Array:
    """The ablation without FAN: (the scaled window itself, 0, 0, validity flag), `[B, L, N, F, 4]` like
    `fan_inputs`, so the parameter tree is the same and only FAN's two channels are missing."""
    valid = x_mask_BLNF & jnp.isfinite(x_BLNF)
    x = jnp.where(valid, x_BLNF, 0.0).astype(jnp.float32)
    zero = jnp.zeros_like(x)
    return jnp.stack([x, zero, zero, valid.astype(jnp.float32)], axis=-1)
