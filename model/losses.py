"""Training losses over quantile predictions `[B, N, H, Q]`, masked by stock and target validity.

- pinball: mean over valid (date, stock, horizon, quantile) of max(tau * e, (tau - 1) * e), e = y - q;
- IC: 1 - cross-sectional Pearson correlation of the median with the target, per (date, horizon);
- Spearman (optional): 1 - Pearson correlation of soft ranks of the median with ranks of the target.

A (date, horizon) with fewer than two valid stocks has weight zero in the correlation terms, and a batch with
no valid target gives loss 0 with zero gradients: masked values never enter an arithmetic path (`jnp.where`
before use), so NaN cannot leak in.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from model.config import ModelConfig

EPS = 1e-8


def _valid(y_BNH: jax.Array, y_mask_BNH: jax.Array, stock_mask_BN: jax.Array) -> jax.Array:
    return jnp.asarray(y_mask_BNH, bool) & jnp.asarray(stock_mask_BN, bool)[..., None] & jnp.isfinite(y_BNH)


def pinball_loss(
    q_BNHQ: jax.Array, y_BNH: jax.Array, valid_BNH: jax.Array, quantiles: tuple[float, ...]
) -> jax.Array:
    """Per-horizon mean pinball loss `[H]` over valid (date, stock) pairs and all quantiles."""
    tau_Q = jnp.asarray(quantiles, jnp.float32)
    y_BNH = jnp.where(valid_BNH, y_BNH, 0.0)
    q_BNHQ = jnp.where(valid_BNH[..., None], q_BNHQ, 0.0)
    err_BNHQ = y_BNH[..., None] - q_BNHQ
    loss_BNHQ = jnp.maximum(tau_Q * err_BNHQ, (tau_Q - 1.0) * err_BNHQ)
    w_BNH = valid_BNH.astype(jnp.float32)
    total_H = jnp.einsum("bnhq,bnh->h", loss_BNHQ, w_BNH) / len(quantiles)
    return total_H / jnp.maximum(w_BNH.sum((0, 1)), 1.0)


def masked_pearson(a_BNH: jax.Array, b_BNH: jax.Array, valid_BNH: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Pearson correlation over axis 1 (stocks) per (date, horizon) -> (corr `[B, H]`, defined `[B, H]`)."""
    w = valid_BNH.astype(jnp.float32)
    n_BH = w.sum(1)
    a = jnp.where(valid_BNH, a_BNH, 0.0)
    b = jnp.where(valid_BNH, b_BNH, 0.0)
    da = (a - (a * w).sum(1, keepdims=True) / jnp.maximum(n_BH, 1.0)[:, None]) * w
    db = (b - (b * w).sum(1, keepdims=True) / jnp.maximum(n_BH, 1.0)[:, None]) * w
    cov = (da * db).sum(1)
    var_a, var_b = (da * da).sum(1), (db * db).sum(1)
    defined = (n_BH >= 2) & (var_a > EPS) & (var_b > EPS)
    denom = jnp.sqrt(jnp.where(defined, var_a * var_b, 1.0))
    return jnp.where(defined, cov / denom, 0.0), defined


def ranks(y_BNH: jax.Array, valid_BNH: jax.Array) -> jax.Array:
    """0-based ranks among valid stocks along axis 1 (ties by position; continuous targets have none)."""
    keyed = jnp.where(valid_BNH, y_BNH, jnp.inf)
    return jnp.argsort(jnp.argsort(keyed, axis=1), axis=1).astype(jnp.float32)


def soft_ranks(p_BNH: jax.Array, valid_BNH: jax.Array, temperature: float) -> jax.Array:
    """Differentiable ranks: sum over valid j != i of sigmoid((p_i - p_j) / temperature). O(N^2) per date."""
    p = jnp.where(valid_BNH, p_BNH, 0.0)
    diff_BNMH = (p[:, :, None, :] - p[:, None, :, :]) / temperature
    pair_BNMH = jax.nn.sigmoid(diff_BNMH) * valid_BNH[:, None, :, :]
    return pair_BNMH.sum(2) - 0.5 * valid_BNH  # drop the i == j term, sigmoid(0) = 0.5


def _mean_over_defined(loss_BH: jax.Array, defined_BH: jax.Array, weights_H: jax.Array) -> jax.Array:
    w_BH = defined_BH.astype(jnp.float32) * weights_H
    return (jnp.where(defined_BH, loss_BH, 0.0) * w_BH).sum() / jnp.maximum(w_BH.sum(), EPS)


def total_loss(
    q_BNHQ: jax.Array,
    y_BNH: jax.Array,
    y_mask_BNH: jax.Array,
    stock_mask_BN: jax.Array,
    cfg: ModelConfig,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Weighted sum of the configured terms and a dict of its parts (`ic_H`: mean IC per horizon)."""
    lc = cfg.loss
    q_BNHQ = q_BNHQ.astype(jnp.float32)
    y_BNH = jnp.asarray(y_BNH, jnp.float32)
    valid_BNH = _valid(y_BNH, y_mask_BNH, stock_mask_BN)
    q_BNHQ = jnp.where(valid_BNH[..., None], q_BNHQ, 0.0)
    weights_H = jnp.asarray(lc.horizon_weights, jnp.float32)
    has_target_H = valid_BNH.any((0, 1))
    pin_H = pinball_loss(q_BNHQ, y_BNH, valid_BNH, cfg.quantiles)
    pw_H = weights_H * has_target_H
    pinball = (pin_H * pw_H).sum() / jnp.maximum(pw_H.sum(), EPS)
    median_BNH = q_BNHQ[..., cfg.median_index]
    ic_BH, defined_BH = masked_pearson(median_BNH, y_BNH, valid_BNH)
    ic_loss = _mean_over_defined(1.0 - ic_BH, defined_BH, weights_H)
    loss = lc.pinball_weight * pinball + lc.ic_weight * ic_loss
    parts = {"pinball": pinball, "ic_loss": ic_loss, "ic": _mean_over_defined(ic_BH, defined_BH, weights_H)}
    n_defined_H = defined_BH.sum(0)
    parts["ic_H"] = jnp.where(defined_BH, ic_BH, 0.0).sum(0) / jnp.maximum(n_defined_H, 1)
    if lc.spearman_weight > 0:
        soft_BNH = soft_ranks(median_BNH, valid_BNH, lc.spearman_temperature)
        rho_BH, rdef_BH = masked_pearson(soft_BNH, ranks(y_BNH, valid_BNH), valid_BNH)
        spearman_loss = _mean_over_defined(1.0 - rho_BH, rdef_BH, weights_H)
        loss = loss + lc.spearman_weight * spearman_loss
        parts["spearman_loss"] = spearman_loss
    parts["loss"] = loss
    return loss, parts
