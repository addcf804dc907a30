"""ATFT-GAT-FAN assembled: FAN -> static contexts -> VSN -> temporal encoder -> GATv2 -> fusion -> heads,
plus a linear highway from the latest inputs to the heads (model/heads.py) and a graph highway from the
neighbours' latest inputs, weighted by the GAT's attention (model/gat.py).

`params = init_params(cfg, batch=batch)` is a plain pytree and `model.apply(params, batch)` is pure; every
submodule is built from the config at init and used on every call, so each parameter reaches the optimizer and
the loss.
Outputs are float32 quantiles `[B, Npad, H, Q]`; padded stocks get zeros.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from model.batch import Batch
from model.config import ModelConfig
from model.fan import CHANNELS, fan_inputs, plain_inputs
from model.gat import GAT
from model.heads import QuantileHeads
from model.temporal import TemporalEncoder
from model.tft import GRN, StaticContexts, VariableSelection


class ATFTGATFAN(nn.Module):
    """The full model. `deterministic=False` enables dropout (needs a 'dropout' rng)."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, batch: Batch, *, deterministic: bool = True) -> jax.Array:
        cfg = self.cfg
        dtype = jnp.bfloat16 if cfg.compute_dtype == "bfloat16" else jnp.float32
        kw = dict(dropout=cfg.dropout, dtype=dtype)
        x_BLNF = jnp.asarray(batch.x_BLNF)
        x_mask_BLNF = jnp.broadcast_to(jnp.asarray(batch.x_mask_BLNF, bool), x_BLNF.shape)
        stock_mask_BN = jnp.asarray(batch.stock_mask_BN, bool)
        x_mask_BLNF = x_mask_BLNF & stock_mask_BN[:, None, :, None]
        if cfg.fan:
            chans_BLNFC = fan_inputs(x_BLNF, x_mask_BLNF, cfg.fan_top_k)
        else:
            chans_BLNFC = plain_inputs(x_BLNF, x_mask_BLNF)

        sel_BND, enrich_BND, h0_BND, c0_BND = StaticContexts(
            cfg.hidden, cfg.n_sector33, cfg.n_market, **kw, name="static"
        )(batch.sector_BN, batch.market_BN, deterministic=deterministic)
        v_BLND, w_BLNF = VariableSelection(cfg.hidden, **kw, name="vsn")(
            chans_BLNFC, sel_BND, deterministic=deterministic
        )
        # Interpretability: apply(..., mutable=["intermediates"]) returns the selection weights per input.
        self.sow("intermediates", "variable_weights_BNF", w_BLNF.astype(jnp.float32).mean(axis=1))
        temporal_BND = TemporalEncoder(
            cfg.hidden, cfg.attention_heads, cfg.lstm_layers, **kw, name="temporal"
        )(v_BLND, enrich_BND, h0_BND, c0_BND, deterministic=deterministic)
        latest_BNF = jnp.where(x_mask_BLNF[:, -1] & jnp.isfinite(x_BLNF[:, -1]), x_BLNF[:, -1], 0.0)
        graph_BND, graph_highway_BNH = GAT(
            cfg.hidden, cfg.gat_heads, cfg.gat_layers, **kw, highway_out=len(cfg.horizons), name="gat"
        )(
            temporal_BND,
            jnp.asarray(batch.edges_BE2, jnp.int32),
            jnp.asarray(batch.edge_mask_BE, bool),
            jnp.asarray(batch.edge_feat_BEC),
            stock_mask_BN,
            latest_BNF if cfg.highway else None,
            deterministic=deterministic,
        )
        fused_BND = GRN(cfg.hidden, **kw, name="fusion")(
            jnp.concatenate([temporal_BND, graph_BND], axis=-1), deterministic=deterministic
        )
        q_BNHQ = QuantileHeads(
            cfg.hidden, len(cfg.horizons), len(cfg.quantiles), cfg.median_index, **kw, name="heads"
        )(fused_BND, latest_BNF if cfg.highway else None, deterministic=deterministic)
        if graph_highway_BNH is not None:
            q_BNHQ = q_BNHQ + graph_highway_BNH[..., None]  # a shift keeps the quantiles' order
        return jnp.where(stock_mask_BN[:, :, None, None], q_BNHQ, 0.0)


def example_batch(cfg: ModelConfig, batch_size: int = 1, n_pad: int = 4, e_pad: int = 4) -> Batch:
    """A zero batch of the contract's shapes: enough to trace init (parameter shapes do not depend on N)."""
    b, l, f = batch_size, cfg.lookback, cfg.n_features
    return Batch(
        x_BLNF=jnp.zeros((b, l, n_pad, f), jnp.float32),
        x_mask_BLNF=jnp.ones((b, l, n_pad, f), bool),
        sector_BN=jnp.zeros((b, n_pad), jnp.int32),
        market_BN=jnp.zeros((b, n_pad), jnp.int32),
        edges_BE2=jnp.zeros((b, e_pad, 2), jnp.int32),
        edge_mask_BE=jnp.zeros((b, e_pad), bool),
        edge_feat_BEC=jnp.zeros((b, e_pad, cfg.n_edge_features), jnp.float32),
        stock_mask_BN=jnp.ones((b, n_pad), bool),
    )


def param_shapes(cfg: ModelConfig) -> Any:
    """Parameter shapes and dtypes (a `jax.ShapeDtypeStruct` pytree), without allocating or computing."""
    model = ATFTGATFAN(cfg)
    return jax.eval_shape(
        lambda k, b: {"params": model.init(k, b)["params"]}, jax.random.key(0), example_batch(cfg)
    )


def init_params(cfg: ModelConfig, seed: int = 0, batch: Batch | None = None) -> Any:
    """Initialise float32 parameters (a plain pytree: {'params': {...}})."""
    model = ATFTGATFAN(cfg)
    init = jax.jit(lambda k, b: {"params": model.init(k, b)["params"]})  # drop sown intermediates
    return init(jax.random.key(seed), batch if batch is not None else example_batch(cfg))


def param_count(tree: Any) -> int:
    """Number of scalars in a parameter pytree (arrays or ShapeDtypeStructs)."""
    return int(sum(np.prod(leaf.shape, dtype=np.int64) for leaf in jax.tree_util.tree_leaves(tree)))


def summary_rows(cfg: ModelConfig) -> list[tuple[str, int, str]]:
    """(module, parameter count, what it does) for each top-level block, from shapes only."""
    params = param_shapes(cfg)["params"]
    about = {
        "static": f"sector33 ({cfg.n_sector33}+1) and market ({cfg.n_market}+1) embeddings -> 4 contexts",
        "vsn": f"FAN (top-{cfg.fan_top_k} of {cfg.lookback // 2 + 1} bins) x {cfg.n_features} inputs "
        f"x {CHANNELS} channels -> selection",
        "temporal": f"{cfg.lstm_layers}-layer LSTM, {cfg.attention_heads}-head causal attention, "
        f"L={cfg.lookback}",
        "gat": f"{cfg.gat_layers} GATv2 layers x {cfg.gat_heads} heads, {cfg.n_edge_features} edge features"
        + (", graph highway from the neighbours' latest inputs" if cfg.highway and cfg.gat_layers else ""),
        "fusion": "GRN over (temporal, graph)",
        "heads": f"horizons {list(cfg.horizons)} x quantiles {list(cfg.quantiles)}"
        + (f", highway from the {cfg.n_features} latest inputs" if cfg.highway else ""),
    }
    return [(name, param_count(params[name]) if name in params else 0, text) for name, text in about.items()]
