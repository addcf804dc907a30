"""`gogooku etl`: raw store -> validated frames -> [T, N] panels -> registered features -> feature store.

Order of work (memory budget, DESIGN §4): the root context holds the full-width base panels and whatever
cross-sectional inputs the sector features ask for (`ctx.full`); the graph stage (etl/graph/build.py on the
full-history returns_1d panel) starts as soon as returns_1d exists, in a background thread beside the first
chunk, writes its edge file and keeps its 18 columns + is_graph_valid as float32 [T, N] panels; the per-stock
features are computed one stock chunk at a time (the first alone, the rest on `workers` threads) and each
chunk is handed to the writer as soon as it is done, so peak memory is the full-width inputs plus the chunks
in flight.

Cleaning rules (documented, nothing dropped silently): raw rows on 2020-10-01 are not used (the date is not a
grid session, D1); when a raw endpoint has several parts, the last part wins per key
(raw_store.read_frame). Every other problem in a raw frame is an `EtlDataError` naming the endpoint, the
rule and example rows.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from etl.config import GraphConfig
from etl.errors import GogookuError
from etl.features.registry import (
    FULL_WIDTH_CHUNK,
    GRAPH_COLUMNS,
    REGISTRY,
    BuildParams,
    FeatureContext,
    Labels,
    load_all,
)
from etl.ops import to_host
from etl.panels.calendar import parse_date
from etl.panels.panel import OUTAGE_DATE, Grid, business_days_from_calendar, grid_sessions, to_days

DAILY_QUOTES = "prices_daily_quotes"
CALENDAR = "markets_trading_calendar"
HISTORY_SESSIONS = 600
GRAPH_STAGE_COLUMNS = (*GRAPH_COLUMNS, "is_graph_valid")
DEFAULT_CHUNK = 64  # CPU: as fast as 128 (1,000 stocks: 51.5 vs 53.5 s) at 3.0 vs 4.0 GB peak
GPU_CHUNK = 1024  # on a GPU a [T, 128] op is launch-bound; 1,024 stocks x 10 years of columns fit easily
FIRST_CHUNK = 32


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
    from etl.sources.raw_store import check_frame

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
    from etl.sources.raw_store import read_frame

    def load(endpoint_id: str) -> pl.DataFrame | None:
        return read_frame(raw_dir, endpoint_id, engine)

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


def longest_windows() -> tuple[int, list[str]]:
    """The longest trailing window of any registered column (sessions, from the catalog's "w N" text) and
    the columns that have it."""
    load_all()
    sizes = {n: max(map(int, re.findall(r"\bw (\d+)", s.window)), default=0) for n, s in REGISTRY.items()}
    longest = max(sizes.values())
    return longest, [n for n, w in sizes.items() if w == longest]


def window_notes(
    source: RawSource, start: str | None, end: str | None, grid: Grid, params: BuildParams
) -> list[str]:
    """What the user should know about the build window: a --start/--end beyond the price data (clipped),
    and history too short for the graph or the longest windows (no graph at all, NaN columns)."""
    notes = []
    dq_dates = source(DAILY_QUOTES)["Date"]
    first, last = dq_dates.min(), dq_dates.max()
    if start is not None and parse_date(start) < first:
        notes.append(f"--start {start} is before the first price date {first}: the dataset starts there")
    if end is not None and parse_date(end) > last:
        notes.append(f"--end {end} is after the last price date {last}: the dataset ends there")
    total = grid.dates.size
    history = int(np.searchsorted(grid.dates, params.dataset_start))
    sessions = total - history
    window = f"{sessions} dataset sessions and {history} before them"
    min_obs = params.graph.min_obs
    if total <= min_obs:  # a date's graph needs min_obs returns in its window; returns start at session 2
        notes.append(
            f"no daily graphs: {window}, and a graph needs graph.min_obs = {min_obs} returns in its "
            f"{params.graph.window}-session window (0 edges; the graph columns are null)"
        )
    elif start is not None and history < min_obs:
        notes.append(
            f"the first {min(min_obs - history, sessions)} dataset sessions have no graph: {window} "
            f"(graph.min_obs = {min_obs})"
        )
    longest, names = longest_windows()
    shown = f"{', '.join(names[:3])}{', ...' if len(names) > 3 else ''}"
    if total < longest:
        notes.append(
            f"{window}: fewer than the {longest} sessions that the longest windows need ({shown}); expect "
            "those columns to be null"
        )
    elif start is not None and history < longest - 1:
        notes.append(
            f"only {history} sessions before --start: the {longest}-session windows ({shown}) are not full "
            f"on the first {min(longest - 1 - history, sessions)} dataset sessions"
        )
    return notes


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
    start: str | None = None,
    end: str | None = None,
    columns: list[str] | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    progress: Callable[[int, int], None] | None = None,
    history: int = HISTORY_SESSIONS,
    graph: GraphConfig | None = None,
    edges_dir: str | Path | None = None,
    workers: int = 1,
    notify: Callable[[str], None] | None = None,
) -> BuildResult:
    """Build the dataset chunk by chunk and hand each chunk's rows (a Polars frame) to `sink`.

    The graph stage (`graph`: window, min_obs, threshold, k) runs once over all stocks: its
    correlations in a background thread beside the first chunk, its metrics (two threads on NumPy) once that
    chunk's other columns are done; with `edges_dir` its edges for the dataset window are written there
    (`graph_edges.npz`). Chunks after the first run on `workers` threads (NumPy releases the GIL in its
    array loops), so `sink` must be thread-safe; the results do not depend on `workers`. `notify` gets
    `window_notes` (clipped dates, too little history) before the work starts.
    """
    t0 = time.perf_counter()
    for flag, value in (("--start", start), ("--end", end)):
        if value is not None:
            parse_date(value, flag)
    source = raw if isinstance(raw, RawSource) else RawSource(loader=lambda e: raw.get(e))
    grid, params = make_grid(source, start, end, history)
    if graph is not None:
        graph.validate()
        params = dataclasses.replace(params, graph=graph)
    for note in window_notes(source, start, end, grid, params):
        if notify is not None:
            notify(note)
    params = dataclasses.replace(params, full_width_chunk=max(FULL_WIDTH_CHUNK, chunk_size))
    cols = columns if columns is not None else build_columns()
    root = FeatureContext(xp, grid, source, params)
    window = (grid.dates >= params.dataset_start) & (grid.dates <= params.dataset_end)
    window_x = xp.asarray(window)[:, None]
    graph_meta: list[dict[str, Any]] = []
    finish_graphs = None
    if edges_dir is not None or any(c in GRAPH_STAGE_COLUMNS for c in cols):
        # the correlations start now, beside the first chunk's work; the rest after its non-graph columns
        finish_graphs = _start_graph_stage(root, window, edges_dir)
    # chunk 0 is small: it only has to fill the root's cross-sectional caches, and its columns wait in memory
    # beside the root's full-width inputs until the graph stage is done
    first = min(chunk_size, FIRST_CHUNK)
    bounds = [0, *range(first, grid.N, chunk_size), grid.N] if grid.N > first else [0, grid.N]
    n_chunks = len(bounds) - 1
    from etl.store.feature_store import select_block, select_rows, to_series

    years = grid.dates.astype("datetime64[Y]").astype(int) + 1970
    dtypes = {c: REGISTRY[c].dtype for c in cols}
    # numeric columns reach the host as two blocks per chunk and year (f32 ones cast on the device); strings
    # (label codes and categories) one by one
    blocks = (
        ([c for c, t in dtypes.items() if t == "f32"], np.float32),
        ([c for c, t in dtypes.items() if t not in ("f32", "str")], np.float64),
    )
    strings = [c for c, t in dtypes.items() if t == "str"]

    def emit_chunk(k: int) -> int:
        """Compute stock chunk k and hand its rows to `sink`, one frame per year; the row count."""
        ctx = root.chunk(bounds[k], bounds[k + 1])
        if k == 0:
            for c in cols:
                if c not in GRAPH_STAGE_COLUMNS:
                    ctx.column(c)
            # every cross-sectional statistic is cached now: the root's full-width columns can go before
            # the graph stage allocates its columns and edges
            root.trim()
            if finish_graphs is not None:
                graph_meta.append(finish_graphs())
        keep_T = xp.ascontiguousarray((ctx.panel("universe") & window_x).T)  # [n, T]: (Code, Date) order
        n = 0
        for year in np.unique(years[window]):
            # one frame per year: the store's partition, and a tenth of the chunk's rows in memory at once
            keep_y = keep_T & xp.asarray(years == year)[None, :]
            cols_x, rows_x = xp.nonzero(keep_y)
            rows, cols_np = to_host(rows_x), to_host(cols_x)
            if rows.shape[0] == 0:
                continue
            values: dict[str, Any] = {}
            for names, ftype in blocks:
                block = select_block([ctx[c] for c in names], keep_y, ftype)
                values.update(zip(names, block, strict=True))
            for c in strings:
                values[c] = select_rows(ctx[c], keep_y)
            frame = pl.DataFrame(
                [
                    pl.Series("Code", ctx.codes[cols_np], dtype=pl.String),
                    pl.Series("Date", grid.dates[rows]).cast(pl.Date),
                    *(to_series(c, t, values.pop(c)) for c, t in dtypes.items()),
                ]
            )
            n += frame.height
            sink(frame, k)
        return n

    # chunk 0 alone, beside the graph stage; the other chunks only read the root and run on `workers` threads
    n_rows = emit_chunk(0)
    if progress is not None:
        progress(1, n_chunks)
    pool = ThreadPoolExecutor(workers, thread_name_prefix="etl-chunk") if workers > 1 else None
    try:
        rest = range(1, n_chunks)
        for done, rows in enumerate(pool.map(emit_chunk, rest) if pool else map(emit_chunk, rest), start=2):
            n_rows += rows
            if progress is not None:
                progress(done, n_chunks)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return BuildResult(
        columns=cols,
        rows=n_rows,
        stocks=grid.N,
        sessions=int(window.sum()),
        missing=sorted(root.missing),
        seconds=time.perf_counter() - t0,
        graph=graph_meta[0] if graph_meta else None,
    )


def _start_graph_stage(
    root: FeatureContext, window: np.ndarray, edges_dir: str | Path | None
) -> Callable[[], dict[str, Any]]:
    """Start the graph stage's correlations (a background thread on NumPy); return `finish() -> catalog
    metadata`, which runs the metrics and writes the edge file.

    The edge file needs the window's universe, Sector33 and market panels: read here, in this thread. On
    CuPy the thread shares the default stream with the chunk (so the device keeps their order of work);
    what overlaps is the host's side: the per-date kernel launches beside the first chunk's raw reads.
    """
    from etl.features.graph_columns import start_graph_stage
    from etl.graph.build import EDGES_FILE, GraphBuild, UndirectedEdges, write_graph_edges

    xp = root.xp
    cfg = root.params.graph
    w0, w1 = int(np.argmax(window)), int(window.size - np.argmax(window[::-1]))
    panels = None
    if edges_dir is not None:
        market = root["MarketCode"]
        panels = (
            root.panel("universe")[w0:w1],
            root["sector33_id"][w0:w1],
            (market.codes if isinstance(market, Labels) else market)[w0:w1],
        )
    dates = [str(d) for d in root.grid.dates[w0:w1]]

    meta: dict[str, Any] = dataclasses.asdict(cfg)

    def write_edges(build: GraphBuild) -> None:
        e = build.edges
        keep = (e.t_E >= w0) & (e.t_E < w1)
        if not bool(keep.all()):  # the stage starts at w0 and the grid ends at w1: usually no copy needed
            e = UndirectedEdges(e.t_E[keep], e.i_E[keep], e.j_E[keep], e.rho_E[keep])
        edges = UndirectedEdges(e.t_E - w0, e.i_E, e.j_E, e.rho_E)
        path = write_graph_edges(edges_dir, GraphBuild({}, None, edges), *panels, xp, dates=dates)
        with np.load(path) as f:
            epad = int(json.loads(str(f["meta"]))["epad"])
        meta.update(edges_file=EDGES_FILE, epad=epad, edges=int(edges.t_E.shape[0]), edge_dates=w1 - w0)

    finish = start_graph_stage(root, background=True)

    def finish_and_write() -> dict[str, Any]:
        finish(write_edges if panels is not None else None)
        return meta

    return finish_and_write


def _is_device_oom(exc: BaseException) -> bool:
    """CuPy's out-of-memory error (cupy.cuda.memory.OutOfMemoryError), told apart without importing CuPy."""
    kind = type(exc)
    return kind.__name__ == "OutOfMemoryError" and kind.__module__.startswith("cupy")


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
    chunk_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    notify: Callable[[str], None] | None = None,
    graph: GraphConfig | None = None,
    workers: int | None = None,
) -> BuildResult:
    """`gogooku etl`: read the raw store, build every registered column and write the feature store.

    The store folder gets the year partitions, `graph_edges.npz` (the window's daily graphs,
    etl/graph/build.py) and `catalog.json` (with the graph config and Epad under "graph"). It is built in a
    sibling folder and swapped in when complete (`feature_store.prepare`/`commit`): until then an existing
    store stays as it was, also after an error or Ctrl-C, and files in it that the store did not write are
    carried into the new one. `--out` must not be, contain or lie inside `--raw`.

    `chunk_size`: stocks per chunk, by default 64 on a CPU and 1,024 on a GPU. `workers`: chunk threads; by
    default 2 where there are two or more cores (each holds a chunk's columns: more would strain the 8 GB
    budget at full scale). On a GPU the device serialises the kernels, but the second thread overlaps one
    chunk's host side (copies to host, Polars frames) with the other's launches. Parquet files are written
    by a background thread.
    """
    from etl.backend import resolve_backend
    from etl.store import feature_store as store

    _check_paths(Path(raw_dir), Path(out_dir))
    for flag, value in (("--start", start), ("--end", end)):
        if value is not None:
            parse_date(value, flag)
    for name, value in (("--chunk", chunk_size), ("--workers", workers)):
        if value is not None and value < 1:
            raise GogookuError(f"{name} must be at least 1, got {value}")
    backend = resolve_backend(device, notify=notify)  # type: ignore[arg-type]
    source = RawSource(loader=store_loader(raw_dir, backend.polars_engine))
    if chunk_size is None:
        chunk_size = GPU_CHUNK if backend.device == "gpu" else DEFAULT_CHUNK
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    build = store.prepare(out_dir)
    writer = store.ChunkWriter(build)
    try:
        result = run(
            source,
            writer,
            xp=backend.xp,
            start=start,
            end=end,
            chunk_size=chunk_size,
            progress=progress,
            graph=graph,
            edges_dir=build,
            workers=workers,
            notify=notify,
        )
        writer.close()
        meta = {
            "device": backend.device,
            "raw_dir": str(raw_dir),
            "rows": result.rows,
            "stocks": result.stocks,
            "sessions": result.sessions,
            "missing_endpoints": result.missing,
            "graph": result.graph,
        }
        result.catalog = store.write_catalog(build, result.columns, meta)
        store.commit(build, out_dir)
    except BaseException as exc:
        writer.close(raise_error=False)  # the build's own error is the one to report
        store.discard(build)
        if isinstance(exc, KeyboardInterrupt):
            raise GogookuError(f"interrupted: {out_dir} is as it was before this build") from None
        if _is_device_oom(exc):
            raise GogookuError(
                f"the GPU ran out of memory with {chunk_size}-stock chunks and {workers} chunk thread(s) "
                f"({exc}); try a smaller --chunk (e.g. {max(chunk_size // 2, 1)}) or --workers 1"
            ) from exc
        raise
    return result


def _check_paths(raw: Path, out: Path) -> None:
    """--raw must be a folder, and --out a path apart from it: a store inside the raw store, or holding it,
    would have its rebuild move or delete raw data."""
    if not raw.exists():
        raise GogookuError(f"raw store {raw} does not exist; run `gogooku synth` or `gogooku fetch` first")
    if not raw.is_dir():
        raise GogookuError(f"--raw {raw} is a file; the raw store is a folder (e.g. data/raw)")
    if out.is_symlink():
        raise GogookuError(f"--out {out} is a symbolic link; give the folder it points to")
    r, o = raw.resolve(), out.resolve()
    if o == r or r in o.parents or o in r.parents:
        raise GogookuError(
            f"--out {out} and --raw {raw} overlap: the feature store must be a folder apart from the raw "
            "store"
        )
