"""The model's batch contract (DESIGN.md §1, §6) and a random batch that follows it.

A batch is B whole dates; each date has N real stocks padded to a fixed Npad, and E real edges padded to Epad,
so one compilation serves every date. Shapes and dtypes:

    x_BLNF        float32 [B, L, Npad, F]   inputs over the lookback (last index = the prediction date)
    x_mask_BLNF   bool    [B, L, Npad, F]   True where the value is real (masked values may hold anything)
    sector_BN     int32   [B, Npad]         sector33_id (-1 unknown)
    market_BN     int32   [B, Npad]         market section id (-1 unknown)
    edges_BE2     int32   [B, Epad, 2]      (source, target) stock indices within the date
    edge_mask_BE  bool    [B, Epad]         True for real edges
    edge_feat_BEC float32 [B, Epad, Fe]     (rho, |rho|, same sector, same market)
    stock_mask_BN bool    [B, Npad]         True for real stocks
    y_BNH         float32 [B, Npad, H]      targets per horizon (optional: absent at inference)
    y_mask_BNH    bool    [B, Npad, H]      True where the target is real (optional)

Edges are directed; an undirected graph lists both directions. Edges touching a padded stock are ignored even
when marked real.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flax import struct

from model.config import ModelConfig


@struct.dataclass
class Batch:
    """A pytree of arrays: jit-able, shardable by its leading (date) axis."""

    x_BLNF: Any
    x_mask_BLNF: Any
    sector_BN: Any
    market_BN: Any
    edges_BE2: Any
    edge_mask_BE: Any
    edge_feat_BEC: Any
    stock_mask_BN: Any
    y_BNH: Any = None
    y_mask_BNH: Any = None


def random_batch(
    cfg: ModelConfig,
    *,
    batch_size: int = 2,
    n_stocks: int | tuple[int, ...] = 12,
    n_pad: int = 16,
    degree: int = 3,
    e_pad: int | None = None,
    seed: int = 0,
    missing: float = 0.05,
) -> Batch:
    """A contract-following random batch (NumPy arrays), with padding, missing values and a learnable target.

    `n_stocks` is one count or one per date. Each real stock links to `degree` random others, both directions;
    edge features are consistent with the ids. Padded slots hold noise, so tests see that it is ignored.
    """
    rng = np.random.default_rng(seed)
    b, l, f, h = batch_size, cfg.lookback, cfg.n_features, len(cfg.horizons)
    counts = (n_stocks,) * b if isinstance(n_stocks, int) else tuple(n_stocks)
    if len(counts) != b or max(counts) > n_pad:
        raise ValueError(f"n_stocks {counts} must give one count <= n_pad ({n_pad}) per date")
    e_pad = e_pad if e_pad is not None else 2 * degree * n_pad
    stock_mask = np.arange(n_pad)[None, :] < np.asarray(counts)[:, None]
    x = rng.standard_normal((b, l, n_pad, f)).astype(np.float32)
    x_mask = (rng.random((b, l, n_pad, f)) >= missing) & stock_mask[:, None, :, None]
    sector = rng.integers(-1, cfg.n_sector33, size=(b, n_pad)).astype(np.int32)
    market = rng.integers(-1, cfg.n_market, size=(b, n_pad)).astype(np.int32)
    edges = rng.integers(0, n_pad, size=(b, e_pad, 2)).astype(np.int32)  # noise in padded slots
    edge_mask = np.zeros((b, e_pad), dtype=bool)
    for i, n in enumerate(counts):
        if n < 2:
            continue
        src = np.repeat(np.arange(n), degree)
        dst = (src + rng.integers(1, n, size=src.size)) % n  # never a self-edge
        pairs = np.concatenate([np.stack([src, dst], 1), np.stack([dst, src], 1)])[:e_pad]
        edges[i, : len(pairs)] = pairs
        edge_mask[i, : len(pairs)] = True
    rho = rng.uniform(-1.0, 1.0, size=(b, e_pad)).astype(np.float32)
    s_src = np.take_along_axis(sector, edges[..., 0], 1)
    s_dst = np.take_along_axis(sector, edges[..., 1], 1)
    m_src = np.take_along_axis(market, edges[..., 0], 1)
    m_dst = np.take_along_axis(market, edges[..., 1], 1)
    feat = np.stack([rho, np.abs(rho), s_src == s_dst, m_src == m_dst], -1).astype(np.float32)
    edge_feat = np.zeros((b, e_pad, cfg.n_edge_features), np.float32)
    k = min(cfg.n_edge_features, feat.shape[-1])
    edge_feat[..., :k] = feat[..., :k]
    signal = np.where(
        x_mask[:, -1, :, 0], x[:, -1, :, 0], 0.0
    )  # target depends on the last value of feature 0
    scale = np.sqrt(np.asarray(cfg.horizons, np.float32))[None, None, :]
    y = (0.01 * signal[..., None] * scale + 0.02 * rng.standard_normal((b, n_pad, h))).astype(np.float32)
    y_mask = stock_mask[..., None] & (rng.random((b, n_pad, h)) >= missing)
    return Batch(
        x_BLNF=x,
        x_mask_BLNF=x_mask,
        sector_BN=sector,
        market_BN=market,
        edges_BE2=edges,
        edge_mask_BE=edge_mask,
        edge_feat_BEC=edge_feat,
        stock_mask_BN=stock_mask,
        y_BNH=y,
        y_mask_BNH=y_mask,
    )
