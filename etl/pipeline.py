"""`gogooku etl`: raw store -> validated frames -> [T, N] panels -> registered features -> feature store.

Order of work (memory budget, DESIGN §4): the root context holds the full-width base panels and whatever
cross-sectional inputs the sector features ask for (`ctx.full`); the graph stage (etl/graph.py on the
full-history returns_1d panel) runs once before the chunks, writes its edge file and keeps its 18 columns +
is_graph_valid as float32 [T, N] panels; the per-stock features are then computed one stock chunk at a time
and each chunk is written as soon as it is done, so peak memory is the full-width inputs plus one chunk's
columns.

Cleaning rules (documented, nothing dropped silently): raw rows on 2020-10-01 are not used (the date is not a
grid session, D1); when a raw endpoint has several parts, the last part wins per key (raw_store dedupe). Every
other problem in a raw frame is an `EtlDataError` naming the endpoint, the rule and example rows.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from etl.errors import GogookuError
from etl.features.registry import GRAPH_COLUMNS, REGISTRY, BuildParams, FeatureContext, Labels, load_all
from etl.panel import OUTAGE_DATE, Grid, business_days_from_calendar, grid_sessions, to_days
from train.config import GraphConfig

DAILY_QUOTES = "prices_daily_quotes"
CALENDAR = "markets_trading_calendar"
HISTORY_SESSIONS = 600
GRAPH_STAGE_COLUMNS = (*GRAPH_COLUMNS, "is_graph_valid")
DEFAULT_CHUNK = 128


class EtlDataError(GogookuError):
    """Malformed raw data: names the endpoint, the rule and example rows."""


def _examples(df: pl.DataFrame, n: int = 3) -> str:
    rows = df.head(n).to_dicts()
    return "; ".join(", ".join(f"{k}={v}" for k, v in r.items()) for r in rows)


def _fail(endpoint_id: str, rule: str, bad: pl.DataFrame, cols: list[str]) -> None:
    if bad.height:
        raise EtlDataError(f"{endpoint_id}: {rule}: {bad.height} rows, e.g. {_examples(bad.select(cols))}")


def validate(endpoint_id: str, df: pl.DataFrame, business_days: np.ndarray | None) -> pl.DataFrame:
    """Check a raw frame against the raw schema and the ETL's rules; return it without 2020-10-01 rows."""
    from etl.raw_store import check_frame

    ep_key: dict[str, list[str]] = {
        DAILY_QUOTES: ["Date", "Code"],
        "indices_topix": ["Date"],
        "listed_info": ["Date", "Code"],
        CALENDAR: ["Date"],
    }
    key = ep_key.get(endpoint_id)
    if key is not None:
        dup = df.filter(pl.struct(key).is_duplicated()).sort(key)
        _fail(endpoint_id, f"duplicate rows for the key ({', '.join(key)})", dup, key)
    df = check_frame(endpoint_id, df)
    if endpoint_id in (DAILY_QUOTES, "indices_topix"):
        prices = (
            [
                "Open",
                "High",
                "Low",
                "Close",
                "AdjustmentOpen",
                "AdjustmentHigh",
                "AdjustmentLow",
                "AdjustmentClose",
            ]
            if endpoint_id == DAILY_QUOTES
            else ["Open", "High", "Low", "Close"]
        )
        nonpos = pl.any_horizontal([pl.col(c) <= 0 for c in prices])
        show = ["Date", "Code", *prices] if endpoint_id == DAILY_QUOTES else ["Date", *prices]
        _fail(endpoint_id, "non-positive prices", df.filter(nonpos), show)
        if endpoint_id == DAILY_QUOTES:
            neg = (pl.col("Volume") < 0) | (pl.col("AdjustmentVolume") < 0) | (pl.col("TurnoverValue") < 0)
            _fail(endpoint_id, "negative volume or turnover", df.filter(neg), ["Date", "Code", "Volume"])
            bad_af = pl.col("AdjustmentFactor") <= 0
            _fail(endpoint_id, "non-positive AdjustmentFactor", df.filter(bad_af), ["Date", "Code"])
        inverted = pl.col("High") < pl.col("Low")
        _fail(endpoint_id, "High below Low", df.filter(inverted), show)
        df = df.filter(pl.col("Date") != pl.lit(OUTAGE_DATE.astype(object)))
        if business_days is not None and df.height:
            days = to_days(df["Date"])
            off = ~np.isin(days, business_days)
            _fail(endpoint_id, "dates off the trading calendar", df.filter(pl.Series(off)), show[:2])
    return df


@dataclasses.dataclass
class RawSource:
    """Raw frames by endpoint id, loaded on first use and validated; None for a missing endpoint."""

    loader: Callable[[str], pl.DataFrame | None]
    business_days: np.ndarray | None = None
    frames: dict[str, pl.DataFrame | None] = dataclasses.field(default_factory=dict)

    def __call__(self, endpoint_id: str) -> pl.DataFrame | None:
        if endpoint_id not in self.frames:
            df = self.loader(endpoint_id)
            self.frames[endpoint_id] = None if df is None else validate(endpoint_id, df, self.business_days)
        return self.frames[endpoint_id]


def store_loader(raw_dir: str | Path, engine: Any = "cpu") -> Callable[[str], pl.DataFrame | None]:
    """Read an endpoint of the raw store (all parts, last part wins per key), None if absent."""
    from etl.raw_store import read_endpoint

    def load(endpoint_id: str) -> pl.DataFrame | None:
        lf = read_endpoint(raw_dir, endpoint_id, dedupe=True)
        return None if lf is None else lf.collect(engine=engine)

    return load


def make_grid(
    source: RawSource, start: str | None, end: str | None, history: int = HISTORY_SESSIONS
) -> tuple:
    """Grid sessions [history start, end] and the common-stock codes with DQ rows in it; (grid, params)."""
    cal = source.loader(CALENDAR)
    if cal is not None:
        cal = validate(CALENDAR, cal, None)
        source.frames[CALENDAR] = cal
        bdays = business_days_from_calendar(cal)
        source.business_days = bdays
    dq = source(DAILY_QUOTES)
    if dq is None or dq.height == 0:
        raise GogookuError(f"the raw store has no {DAILY_QUOTES} rows: nothing to build")
    dq_days = np.unique(to_days(dq["Date"]))
    if cal is None:
        bdays = np.union1d(dq_days, np.array([OUTAGE_DATE]))
    sessions = grid_sessions(bdays)
    sessions = sessions[(sessions >= dq_days[0]) & (sessions <= dq_days[-1])]
    d_start = np.datetime64(start, "D") if start else sessions[0]
    d_end = np.datetime64(end, "D") if end else sessions[-1]
    if d_start > d_end:
        raise GogookuError(f"--start {d_start} is after --end {d_end}")
    i0 = int(np.searchsorted(sessions, d_start, side="left"))
    i1 = int(np.searchsorted(sessions, d_end, side="right"))
    if i0 >= i1:
        raise GogookuError(f"no trading sessions with price data between {d_start} and {d_end}")
    dates = sessions[max(0, i0 - history) : i1]
    in_period = dq.filter(pl.col("Date").is_between(dates[0].astype(object), dates[-1].astype(object)))
    codes = np.array(sorted(c for c in in_period["Code"].unique().to_list() if len(c) == 5 and c[4] == "0"))
    grid = Grid(dates=dates, codes=codes.astype(str), business_days=bdays)
    params = BuildParams(dataset_start=sessions[i0], dataset_end=sessions[i1 - 1], history_sessions=history)
    return grid, params


@dataclasses.dataclass
class BuildResult:
    columns: list[str]
    rows: int
    stocks: int
    sessions: int
    missing: list[str]
    seconds: float
    catalog: dict[str, Any] | None = None
    graph: dict[str, Any] | None = None  # graph config, and Epad / edge counts when the edge file is written


def build_columns() -> list[str]:
    """Registered columns in FEATURES.md order (all 393 besides Code and Date)."""
    load_all()
    return list(REGISTRY)


def run(
    raw: Mapping[str, pl.DataFrame] | RawSource,
    sink: Callable[[pl.DataFrame, int], None],
    *,
    xp: Any = np,
    to_numpy: Callable[[Any], Any] = np.asarray,
    start: str | None = None,
    end: str | None = None,
    columns: list[str] | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    progress: Callable[[int, int], None] | None = None,
    history: int = HISTORY_SESSIONS,
    graph: GraphConfig | None = None,
    edges_dir: str | Path | None = None,
) -> BuildResult:
    """Build the dataset chunk by chunk and hand each chunk's rows (a Polars frame) to `sink`.

    The graph stage (`graph`: window, min_obs, threshold, k) runs first, once over all stocks; with
    `edges_dir` its edges for the dataset window are written there (`graph_edges.npz`).
    """
    t0 = time.perf_counter()
    source = raw if isinstance(raw, RawSource) else RawSource(loader=lambda e: raw.get(e))
    grid, params = make_grid(source, start, end, history)
    if graph is not None:
        graph.validate()
        params = dataclasses.replace(params, graph=graph)
    cols = columns if columns is not None else build_columns()
    root = FeatureContext(xp, grid, source, params)
    window = (grid.dates >= params.dataset_start) & (grid.dates <= params.dataset_end)
    window_x = xp.asarray(window)[:, None]
    graph_meta = None
    if edges_dir is not None or any(c in GRAPH_STAGE_COLUMNS for c in cols):
        # [T, N] panels from the full-history returns: computed once, before the stock chunks
        graph_meta = _graph_stage(root, window, edges_dir)
    n_rows = 0
    n_chunks = max(1, -(-grid.N // chunk_size))
    from etl.store import select_rows, to_series

    years = grid.dates.astype("datetime64[Y]").astype(int) + 1970
    for k in range(n_chunks):
        lo, hi = k * chunk_size, min(grid.N, (k + 1) * chunk_size)
        ctx = root.chunk(lo, hi)
        keep_T = xp.ascontiguousarray((ctx.panel("universe") & window_x).T)  # [n, T]: (Code, Date) order
        for year in np.unique(years[window]):
            # one frame per year: the store's partition, and a tenth of the chunk's rows in memory at once
            keep_y = keep_T & xp.asarray(years == year)[None, :]
            cols_x, rows_x = xp.nonzero(keep_y)
            rows, cols_np = to_numpy(rows_x), to_numpy(cols_x)
            if rows.shape[0] == 0:
                continue
            data = [
                pl.Series("Code", ctx.codes[cols_np], dtype=pl.String),
                pl.Series("Date", grid.dates[rows]).cast(pl.Date),
            ]
            for c in cols:
                data.append(to_series(c, REGISTRY[c].dtype, select_rows(ctx[c], keep_y, to_numpy)))
            frame = pl.DataFrame(data)
            n_rows += frame.height
            sink(frame, k)
            del frame, data
        del ctx
        if k == 0:
            root.trim()  # the cross-sectional statistics are cached now; full-width columns can go
        if progress is not None:
            progress(k + 1, n_chunks)
    return BuildResult(
        columns=cols,
        rows=n_rows,
        stocks=grid.N,
        sessions=int(window.sum()),
        missing=sorted(root.missing),
        seconds=time.perf_counter() - t0,
        graph=graph_meta,
    )


def _graph_stage(root: FeatureContext, window: np.ndarray, edges_dir: str | Path | None) -> dict[str, Any]:
    """Run the graph stage on the root; write the window's edges to `edges_dir`; return catalog metadata."""
    from etl.features.graph_columns import graph_state
    from etl.graph import EDGES_FILE, GraphBuild, UndirectedEdges, write_graph_edges

    xp = root.xp
    state = graph_state(root)
    cfg = root.params.graph
    meta: dict[str, Any] = dataclasses.asdict(cfg)
    if edges_dir is not None and state.edges is not None:
        w0, w1 = int(np.argmax(window)), int(window.size - np.argmax(window[::-1]))
        e = state.edges
        keep = (e.t_E >= w0) & (e.t_E < w1)
        edges = UndirectedEdges(e.t_E[keep] - w0, e.i_E[keep], e.j_E[keep], e.rho_E[keep])
        market = root["MarketCode"]
        path = write_graph_edges(
            edges_dir,
            GraphBuild({}, None, edges),
            root.panel("universe")[w0:w1],
            root["sector33_id"][w0:w1],
            (market.codes if isinstance(market, Labels) else market)[w0:w1],
            xp,
            dates=[str(d) for d in root.grid.dates[w0:w1]],
        )
        with np.load(path) as f:
            epad = int(json.loads(str(f["meta"]))["epad"])
        meta.update(edges_file=EDGES_FILE, epad=epad, edges=int(edges.t_E.shape[0]), edge_dates=w1 - w0)
    state.edges = None  # written (or not wanted): the chunks need only the columns
    return meta


def build_frame(raw: Mapping[str, pl.DataFrame], **kwargs: Any) -> pl.DataFrame:
    """The dataset in memory (tests, small markets): same code path as the store."""
    frames: list[pl.DataFrame] = []
    run(raw, lambda f, k: frames.append(f), **kwargs)
    return pl.concat(frames).sort("Code", "Date") if frames else pl.DataFrame()


def build_store(
    raw_dir: str | Path,
    out_dir: str | Path,
    *,
    device: str = "auto",
    start: str | None = None,
    end: str | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    progress: Callable[[int, int], None] | None = None,
    notify: Callable[[str], None] | None = None,
    graph: GraphConfig | None = None,
) -> BuildResult:
    """`gogooku etl`: read the raw store, build every registered column and write the feature store.

    The store folder gets the year partitions, `graph_edges.npz` (the window's daily graphs, etl/graph.py)
    and `catalog.json` (with the graph config and Epad under "graph").
    """
    from etl import store
    from etl.backend import resolve_backend

    if not Path(raw_dir).is_dir():
        raise GogookuError(
            f"raw store {raw_dir} does not exist; run `gogooku synth` or `gogooku fetch` first"
        )
    backend = resolve_backend(device, notify=notify)  # type: ignore[arg-type]
    source = RawSource(loader=store_loader(raw_dir, backend.polars_engine))
    out = store.prepare(out_dir)
    result = run(
        source,
        lambda frame, k: store.write_chunk(out, frame, k),
        xp=backend.xp,
        to_numpy=backend.to_numpy,
        start=start,
        end=end,
        chunk_size=chunk_size,
        progress=progress,
        graph=graph,
        edges_dir=out,
    )
    meta = {
        "device": backend.device,
        "raw_dir": str(raw_dir),
        "rows": result.rows,
        "stocks": result.stocks,
        "sessions": result.sessions,
        "missing_endpoints": result.missing,
        "graph": result.graph,
    }
    result.catalog = store.write_catalog(out, result.columns, meta)
    return result
