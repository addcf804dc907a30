"""§4.13 graph columns and is_graph_valid (#385) in the registry: one `build_graphs` call on the root.

The graph of day t needs every stock's returns over the window, so the stage runs once on the full-width
`returns_1d` panel (masked to universe rows: the values the store holds) with `ctx.params.graph`; chunks slice
the memoised result. The 18 columns are kept as float32 [T, N] panels (every value of their i8/i16/i32/f32
dtypes is exact in float32), half the memory of float64. The pipeline computes the build before the stock
chunks, writes the edge file from it and then drops the edge list (`GraphState.edges = None`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from etl.features.registry import FeatureContext, feature, features
from etl.graph import GRAPH_COLUMNS, UndirectedEdges, build_graphs

GRAPH_NAMES = [name for name, _ in GRAPH_COLUMNS]
_KEY = ("graph_build",)


def graph_inputs(ctx: FeatureContext) -> tuple[Any, Any]:
    """(returns_TN, row_mask_TN) over all stocks: returns_1d where the stock has a universe row, else NaN."""
    root, xp = ctx.full, ctx.xp
    universe = xp.asarray(root.panel("universe"), dtype=bool)
    return xp.where(universe, root["returns_1d"], xp.nan), universe


@dataclasses.dataclass
class GraphState:
    """The memoised stage: float32 column panels, is_graph_valid, the edges (None once written)."""

    columns: dict[str, Any]
    is_graph_valid_TN: Any
    edges: UndirectedEdges | None


def graph_state(ctx: FeatureContext) -> GraphState:
    """The graph stage over all stocks, computed once and memoised on the root."""
    root, xp = ctx.full, ctx.xp

    def make() -> GraphState:
        returns_TN, row_mask_TN = graph_inputs(root)
        build = build_graphs(returns_TN, row_mask_TN, root.params.graph, xp)
        cols = {name: build.columns[name].astype(xp.float32) for name in GRAPH_NAMES}
        return GraphState(cols, build.is_graph_valid_TN, build.edges)

    return root.cached(_KEY, make)


@features(GRAPH_NAMES, group="graph")
def _graph(ctx: FeatureContext) -> dict[str, Any]:
    state = graph_state(ctx)
    return {name: ctx.own(state.columns[name]) for name in GRAPH_NAMES}


@feature("is_graph_valid", group="validity")
def _(ctx: FeatureContext) -> Any:
    return ctx.own(graph_state(ctx).is_graph_valid_TN).astype(ctx.xp.float64)
