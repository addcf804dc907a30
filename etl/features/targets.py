"""Group 4.16 targets (FEATURES.md §4.16): the only forward-looking columns; never inputs.

target_hd(t) = C_{t+h} / C_t - 1 on the stock's adjusted closes h grid rows ahead (carried closes on no-trade
sessions count, §1.3); NaN when row t+h is absent (delisting, end of data). Binaries: 1[target > 0], ties 0.
"""

from __future__ import annotations

from typing import Any

from etl import ops
from etl.features.registry import feature

HORIZONS = (1, 2, 3, 5, 10)


def forward_return(close: Any, h: int) -> Any:
    return ops.lag(close, -h) / close - 1.0


for _h in HORIZONS:
    feature(f"target_{_h}d", group="targets", role="T")(
        lambda ctx, h=_h: forward_return(ctx.panel("Close"), h)
    )
for _h in HORIZONS:
    feature(f"target_{_h}d_binary", group="targets", role="T")(
        lambda ctx, h=_h: ctx.xp.where(
            ctx.xp.isnan(ctx[f"target_{h}d"]), ctx.xp.nan, (ctx[f"target_{h}d"] > 0).astype(float)
        )
    )
