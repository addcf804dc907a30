"""Signal metrics: the daily rank information coefficient (Spearman) used for early stopping."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _average_ranks(x_DN: jax.Array, valid_DN: jax.Array) -> jax.Array:
    """0-based ranks among each row's valid entries, ties sharing their average rank (SciPy's 'average')."""
    keyed_DN = jnp.where(valid_DN, x_DN, jnp.inf)  # invalid entries sort after every valid one
    sorted_DN = jnp.sort(keyed_DN, axis=1)
    below_DN = jax.vmap(lambda s, v: jnp.searchsorted(s, v, side="left"))(sorted_DN, keyed_DN)
    upto_DN = jax.vmap(lambda s, v: jnp.searchsorted(s, v, side="right"))(sorted_DN, keyed_DN)
    return (below_DN + upto_DN - 1).astype(jnp.float32) / 2.0


def rank_ic(pred_DN: jax.Array, ret_DN: jax.Array, mask_DN: jax.Array) -> jax.Array:
    """Spearman correlation per date (row) over the stocks where `mask` holds and both values are finite.

    NaN where a date has fewer than 2 such stocks or either side is constant there.
    """
    pred_DN = jnp.asarray(pred_DN, jnp.float32)
    ret_DN = jnp.asarray(ret_DN, jnp.float32)
    valid_DN = jnp.asarray(mask_DN, bool) & jnp.isfinite(pred_DN) & jnp.isfinite(ret_DN)
    w_DN = valid_DN.astype(jnp.float32)
    n_D = w_DN.sum(1)
    ra_DN, rb_DN = _average_ranks(pred_DN, valid_DN), _average_ranks(ret_DN, valid_DN)
    mean_D = (n_D - 1.0) / 2.0  # the mean of average ranks 0..n-1, ties or not
    da_DN = jnp.where(valid_DN, ra_DN - mean_D[:, None], 0.0)
    db_DN = jnp.where(valid_DN, rb_DN - mean_D[:, None], 0.0)
    var_a, var_b = (da_DN * da_DN).sum(1), (db_DN * db_DN).sum(1)
    defined_D = (n_D >= 2) & (var_a > 0) & (var_b > 0)
    ic_D = (da_DN * db_DN).sum(1) / jnp.sqrt(jnp.where(defined_D, var_a * var_b, 1.0))
    return jnp.where(defined_D, ic_D, jnp.nan)
