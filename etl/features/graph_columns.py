"""§4.13 graph columns and is_graph_valid (#385) in the registry: one graph stage on the root.

The graph of day t needs every stock's returns over the window, so the stage runs once on the full-width
`returns_1d` panel (masked to universe rows: the values the store holds) with `ctx.params.graph`; chunks slice
the memoised result. The 18 columns are kept as float32 [T, N] panels (every value of their i8/i16/i32/f32
dtypes is exact in float32), half the memory of float64.

The pipeline splits the stage (`start_graph_stage`): the correlations start in a background thread as soon
as returns_1d exists, beside the first chunk's single-threaded cross-sectional work (and its memory peak,
which the correlations add little to); once that chunk is done the metrics run on both cores, each metric
chunk as soon as its dates' correlations are in, then the edge file is written and the edge list dropped
before the first chunk's graph columns are read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from etl.features.registry import FeatureContext, feature, features
from etl.graph.build import GRAPH_COLUMNS, GraphBuild, graph_from_peers
from etl.graph.corr import start_peer_table

GRAPH_NAMES = [name for name, _ in GRAPH_COLUMNS]
_KEY = ("graph_build",)


def first_built_date(ctx: FeatureContext) -> int:
    """Grid index of the dataset's first session: the history sessions before it are never written, so the
    stage starts there (with `--start` and the default 600 history sessions, 2.4 years less work)."""
    start = ctx.params.dataset_start
    return 0 if start is None else int(np.searchsorted(ctx.grid.dates, start))


def graph_inputs(ctx: FeatureContext) -> tuple[Any, Any]:
    """(returns_TN, row_mask_TN) over all stocks: returns_1d where the stock has a universe row, else NaN."""
    root, xp = ctx.full, ctx.xp
    universe = xp.asarray(root.panel("universe"), dtype=bool)
    return xp.where(universe, root["returns_1d"], xp.nan), universe


@dataclasses.dataclass
class GraphState:
    """The memoised stage: float32 column panels and is_graph_valid (the edges are written, not kept)."""

    columns: dict[str, Any]
    is_graph_valid_TN: Any


def graph_state(ctx: FeatureContext) -> GraphState:
    """The graph stage over all stocks, computed once and memoised on the root. The pipeline runs it itself
    (`start_graph_stage`) before any chunk reads a graph column; elsewhere it runs here, in one thread."""
    root = ctx.full
    return root.cached(_KEY, lambda: start_graph_stage(root, background=False)())


def start_graph_stage(
    root: FeatureContext, *, background: bool, threads: int = 2
) -> Callable[[Callable[[GraphBuild], None] | None], GraphState]:
    """Start the peer table (the correlations) on the root's inputs; return `finish(on_build=None)`.

    `background`: the correlations run in a daemon thread (one BLAS thread), beside the caller's own work
    (the first stock chunk), and an error in the caller does not wait minutes for them. `finish` runs the
    metrics on `threads` threads in the caller's, each metric chunk as soon as its dates' correlations are
    done, calls `on_build(build)` (the edge file) and returns the columns, memoised on the root for
    `graph_state`. The inputs are read here, in the caller's thread: the worker never touches the context
    (not thread-safe).
    """
    returns_TN, row_mask_TN = graph_inputs(root)
    cfg, xp, start = root.params.graph, root.xp, first_built_date(root)
    peers, dates = start_peer_table(returns_TN, row_mask_TN, cfg, xp, background=background, start=start)
    table = [peers]  # finish() hands over the only reference
    del peers

    def finish(on_build: Callable[[GraphBuild], None] | None = None) -> GraphState:
        build = graph_from_peers(
            table.pop(),
            xp,
            out_dtype="float32",
            start=start,
            threads=threads if background else 1,
            ready=dates.wait,
        )
        if on_build is not None:
            on_build(build)
        state = GraphState({name: build.columns[name] for name in GRAPH_NAMES}, build.is_graph_valid_TN)
        return root.cached(_KEY, lambda: state)

    return finish


@features(GRAPH_NAMES, group="graph")
def _graph(ctx: FeatureContext) -> dict[str, Any]:
    state = graph_state(ctx)
    return {name: ctx.own(state.columns[name]) for name in GRAPH_NAMES}


@feature("is_graph_valid", group="validity")
def _(ctx: FeatureContext) -> Any:
    return ctx.own(graph_state(ctx).is_graph_valid_TN).astype(ctx.xp.float64)
