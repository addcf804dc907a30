"""The feature registry: every column of FEATURES.md declared once, computed by name on [T, N] panels.

Declaring a column::

    @feature("returns_1d")                       # its metadata comes from the catalog (catalog.tsv)
    def _(ctx):
        return ctx.panel("Close") / ops.lag(ctx.panel("Close"), 1) - 1

    @features(["mkt_ret_1d", "mkt_ret_5d"])      # several columns from one function: returns a dict
    def _(ctx): ...

A function takes a `FeatureContext` and returns a [T, n] float64 array over the context's stocks (or a [T, 1]
/ [T] array, broadcast to every stock). Integer and flag columns are floats with NaN for null; string columns
return `Labels(codes, categories)`; date columns return float days since 1970-01-01. The store casts to the
column's dtype on write. `group`, `dtype` and `role` given to the decorator must match the catalog (checked at
import); window, validity and definition come from the catalog alone.

The catalog is data: `catalog.tsv` beside this module holds FEATURES.md §4, one tab-separated row per column
(number, name, group, dtype, role, window, validity, definition), read once at import into `CANONICAL`
(test-pinned against FEATURES.md). `docs/features.md` (etl/store/catalog.py) and every store's `catalog.json`
are generated from it. `REGISTRY` iterates in catalog order whatever the registration order.

Context and chunks. The pipeline builds a root context over all stocks and then one child context per stock
chunk (`ctx.chunk(lo, hi)`); a child computes its columns on its own stocks only. Cross-sectional work
(sector statistics, ranks) reads full-width inputs through `ctx.full` (the root, memoised there) and keeps the
chunk's columns with `ctx.own(array)`. Panel sources declared `full=True` are computed once at full width and
sliced for each chunk; the others are computed per context from `ctx.codes` / `ctx.code_index`.

Sector series are [T, G] arrays (G = 34: the 33 Sector33 ids plus 9999 -> 33) with the id panel
`ctx.full["sector33_id"]` [T, N] (-1 = none); `ops.group_*` reduce and `ops.group_gather` broadcast back.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib
import io
import pkgutil
from collections.abc import Callable, Iterator, Mapping
from importlib import resources
from typing import Any, NamedTuple

import numpy as np
import polars as pl

from etl.config import GraphConfig
from etl.panels.panel import Grid

GROUPS = (
    "identifiers",
    "price_volume",
    "technical",
    "market",
    "cross",
    "sector",
    "flows",
    "weekly_margin",
    "daily_margin",
    "statements",
    "earnings",
    "short_selling",
    "graph",
    "interactions",
    "validity",
    "targets",
)
KEY_COLUMNS = ("Code", "Date")  # written by the store from the grid, not computed
FULL_WIDTH_CHUNK = 512  # stocks per piece when a full-width column is computed on the root
CATALOG_FILE = "catalog.tsv"  # package data beside this module (pyproject: tool.setuptools.package-data)


class CatalogRow(NamedTuple):
    """One row of FEATURES.md §4 as stored in catalog.tsv (the header names these fields in this order)."""

    number: int
    name: str
    group: str
    dtype: str
    role: str
    window: str
    validity: str
    definition: str


def read_catalog(text: str) -> tuple[CatalogRow, ...]:
    """Parse catalog.tsv: the header, then rows numbered 1..N in order, unique names, known groups.

    Tab-separated with no quoting, so a definition's quotes and backslashes are kept as written.
    """
    lines = list(csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE))
    if not lines or tuple(lines[0]) != CatalogRow._fields:
        raise ValueError(f"{CATALOG_FILE}: the header must be {' '.join(CatalogRow._fields)}")
    rows: list[CatalogRow] = []
    for line_no, cells in enumerate(lines[1:], start=2):
        where = f"{CATALOG_FILE} line {line_no}"
        if len(cells) != len(CatalogRow._fields) or not all(cells):
            raise ValueError(f"{where}: {len(CatalogRow._fields)} non-empty tab-separated fields expected")
        row = CatalogRow(int(cells[0]), *cells[1:])
        if row.number != len(rows) + 1:
            raise ValueError(f"{where}: column number {row.number}, expected {len(rows) + 1}")
        if row.group not in GROUPS:
            raise ValueError(f"{where}: unknown group {row.group!r}")
        rows.append(row)
    names = [row.name for row in rows]
    if len(set(names)) != len(names):
        raise ValueError(f"{CATALOG_FILE}: a column name appears twice")
    return tuple(rows)


CANONICAL = read_catalog(resources.files(__package__).joinpath(CATALOG_FILE).read_text(encoding="utf-8"))
CANONICAL_BY_NAME = {row.name: row for row in CANONICAL}
GRAPH_COLUMNS = tuple(row.name for row in CANONICAL if row.group == "graph")
NON_GRAPH_COLUMNS = tuple(row.name for row in CANONICAL if row.group != "graph")


@dataclasses.dataclass(frozen=True)
class Labels:
    """A string column as integer codes [T, n] (float, NaN = null) into `categories`."""

    codes: Any
    categories: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """One column: its catalog row (same fields, same order; `doc` is the definition) and its function."""

    number: int
    name: str
    group: str
    dtype: str
    role: str
    window: str
    validity: str
    doc: str
    fn: Callable[[FeatureContext], Any] | None
    multi: bool = False


@dataclasses.dataclass(frozen=True)
class PanelSource:
    """A named panel: `fn(ctx)` -> [T, n] array (a dict for several names); `full`: compute once, slice."""

    names: tuple[str, ...]
    fn: Callable[[FeatureContext], Any]
    full: bool


@dataclasses.dataclass(frozen=True)
class BuildParams:
    """Per-build constants (FEATURES.md §1.12): the dataset window within the grid, EPS, the graph config."""

    dataset_start: np.datetime64 | None = None
    dataset_end: np.datetime64 | None = None
    history_sessions: int = 600
    eps: float = 1e-12
    graph: GraphConfig = GraphConfig()
    # stocks per piece when the root computes a full-width column: bounds one column's intermediates (the
    # pipeline widens it to its chunk size: on a GPU fewer, wider kernel launches)
    full_width_chunk: int = FULL_WIDTH_CHUNK


class Registry(Mapping[str, FeatureSpec]):
    """Registered columns, iterated in FEATURES.md order."""

    def __init__(self) -> None:
        self._specs: dict[str, FeatureSpec] = {}

    def __getitem__(self, name: str) -> FeatureSpec:
        return self._specs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._specs, key=lambda n: self._specs[n].number))

    def __len__(self) -> int:
        return len(self._specs)

    def add(self, spec: FeatureSpec) -> None:
        if spec.name in self._specs:
            raise ValueError(f"feature {spec.name!r} registered twice")
        self._specs[spec.name] = spec


REGISTRY = Registry()
PANEL_SOURCES: dict[str, PanelSource] = {}


def _spec(name: str, fn: Any, multi: bool, given: dict[str, Any]) -> FeatureSpec:
    """The column's catalog row plus its function; `given` group/dtype/role must agree with the row."""
    row = CANONICAL_BY_NAME.get(name)
    if row is None:
        raise ValueError(f"{name!r} is not a column of FEATURES.md")
    if name in KEY_COLUMNS:
        raise ValueError(f"{name!r} is a key column written by the store")
    for key in ("group", "dtype", "role"):
        canon = getattr(row, key)
        if given.get(key) is not None and given[key] != canon:
            raise ValueError(f"{name}: {key}={given[key]!r} but FEATURES.md says {canon!r}")
    return FeatureSpec(*row, fn=fn, multi=multi)  # the row's fields in order (definition -> doc)


def feature(
    name: str, *, group: str | None = None, dtype: str | None = None, role: str | None = None
) -> Callable[[Callable[[FeatureContext], Any]], Callable[[FeatureContext], Any]]:
    """Register `fn(ctx) -> [T, n] array` as column `name`."""
    given = dict(group=group, dtype=dtype, role=role)

    def deco(fn: Callable[[FeatureContext], Any]) -> Callable[[FeatureContext], Any]:
        REGISTRY.add(_spec(name, fn, False, given))
        return fn

    return deco


def features(
    names: list[str], *, group: str | None = None, role: str | None = None
) -> Callable[[Callable[[FeatureContext], dict[str, Any]]], Callable[[FeatureContext], dict[str, Any]]]:
    """Register `fn(ctx) -> {name: [T, n] array}` as the columns `names` (computed together, memoised)."""

    def deco(fn: Callable[[FeatureContext], dict[str, Any]]) -> Callable[[FeatureContext], dict[str, Any]]:
        for name in names:
            REGISTRY.add(_spec(name, fn, True, dict(group=group, role=role)))
        return fn

    return deco


def panel_source(*names: str, full: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register `fn(ctx)` as the source of named panels (one name: an array; several: a dict by name)."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        src = PanelSource(names=tuple(names), fn=fn, full=full)
        for n in names:
            if n in PANEL_SOURCES:
                raise ValueError(f"panel {n!r} registered twice")
            PANEL_SOURCES[n] = src
        return fn

    return deco


def load_all() -> Registry:
    """Import every module of etl.features so that all columns and panel sources are registered."""
    import etl.features as pkg

    for mod in sorted(m.name for m in pkgutil.iter_modules(pkg.__path__)):
        if mod != "registry":
            importlib.import_module(f"etl.features.{mod}")
    return REGISTRY


class FeatureContext:
    """What a feature function sees: `xp`, the grid, raw frames, named panels and other columns by name.

    `raw` maps an endpoint id (e.g. "prices_daily_quotes") to a Polars frame, or is a callable returning the
    frame or None when the endpoint is missing from the raw store.
    """

    def __init__(
        self,
        xp: Any,
        grid: Grid,
        raw: Mapping[str, pl.DataFrame] | Callable[[str], pl.DataFrame | None],
        params: BuildParams | None = None,
        *,
        _root: FeatureContext | None = None,
        _cols: slice | None = None,
    ) -> None:
        self.xp = xp
        self.grid = grid
        self.params = params or BuildParams()
        self._raw_source = raw
        self._root = _root
        self.cols = _cols if _cols is not None else slice(0, grid.N)
        self._panels: dict[str, Any] = {}
        self._columns: dict[str, Any] = {}
        self._cache: dict[Any, Any] = {}
        self._raw_cache: dict[str, pl.DataFrame | None] = {}
        self.missing: set[str] = set()
        self.eps = self.params.eps

    # -- scope
    @property
    def full(self) -> FeatureContext:
        """The root context over all stocks (self when not a chunk)."""
        return self._root if self._root is not None else self

    @property
    def is_full(self) -> bool:
        return self._root is None

    @property
    def codes(self) -> np.ndarray:
        return self.grid.codes[self.cols]

    @property
    def shape(self) -> tuple[int, int]:
        return (self.grid.T, self.cols.stop - self.cols.start)

    def chunk(self, lo: int, hi: int) -> FeatureContext:
        """A child context over stocks [lo, hi) sharing this root's raw data and full-width memo."""
        return FeatureContext(
            self.xp, self.grid, self._raw_source, self.params, _root=self.full, _cols=slice(lo, hi)
        )

    def code_index(self, codes: Any) -> np.ndarray:
        """Column of each code within this context's stocks, -1 outside them."""
        idx = self.grid.code_index(codes)
        inside = (idx >= self.cols.start) & (idx < self.cols.stop)
        return np.where(inside, idx - self.cols.start, -1)

    def own(self, full_array: Any) -> Any:
        """This context's columns of a full-width [T, N, ...] array."""
        return full_array if self.is_full else full_array[:, self.cols]

    def broadcast(self, series: Any) -> Any:
        """A [T] series as a read-only [T, n] view."""
        return self.xp.broadcast_to(self.xp.asarray(series)[:, None], self.shape)

    def nan(self) -> Any:
        """An all-NaN [T, n] panel (columns of a missing source)."""
        return self.xp.full(self.shape, self.xp.nan)

    # -- data
    def raw(self, endpoint_id: str) -> pl.DataFrame | None:
        """The ingested raw frame of an endpoint, None if the raw store lacks it (recorded in `missing`)."""
        root = self.full
        if endpoint_id not in root._raw_cache:
            src = root._raw_source
            frame = src.get(endpoint_id) if isinstance(src, Mapping) else src(endpoint_id)
            root._raw_cache[endpoint_id] = frame
            if frame is None:
                root.missing.add(endpoint_id)
        return root._raw_cache[endpoint_id]

    def cached(self, key: Any, fn: Callable[[], Any]) -> Any:
        """Memoise an arbitrary value (a market series, sector statistics) on this context."""
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    def panel(self, name: str) -> Any:
        """A named panel [T, n]: memoised; `full=True` sources are computed on the root and sliced."""
        if name in self._panels:
            return self._panels[name]
        src = PANEL_SOURCES.get(name)
        if src is None:
            raise KeyError(f"no panel source named {name!r}")
        if src.full and not self.is_full:
            self._panels[name] = self.full.panel(name)[:, self.cols]
            return self._panels[name]
        out = src.fn(self)
        if len(src.names) == 1 and not isinstance(out, dict):
            out = {src.names[0]: out}
        for n in src.names:
            self._panels[n] = out[n]
        return self._panels[name]

    def column(self, name: str) -> Any:
        """The value of a registered column on this context's stocks (memoised).

        On a root wider than `params.full_width_chunk` stocks the column is computed piece by piece and
        concatenated, so only the requested full-width column is kept, not its intermediates (memory budget).
        """
        if name in self._columns:
            return self._columns[name]
        spec = REGISTRY[name]
        if self.is_full and self.grid.N > self.params.full_width_chunk:
            self._columns[name] = self._by_chunks(name)
            return self._columns[name]
        out = spec.fn(self)
        if spec.multi:
            for n, v in out.items():
                if n in REGISTRY and REGISTRY[n].fn is spec.fn:
                    self._columns[n] = self._fit(n, v)
        else:
            self._columns[name] = self._fit(name, out)
        return self._columns[name]

    __getitem__ = column

    def _by_chunks(self, name: str) -> Any:
        parts = []
        step = self.params.full_width_chunk
        for lo in range(0, self.grid.N, step):
            child = self.chunk(lo, min(self.grid.N, lo + step))
            parts.append(child.column(name))
        if isinstance(parts[0], Labels):
            return Labels(self.xp.concatenate([p.codes for p in parts], axis=1), parts[0].categories)
        return self.xp.concatenate(parts, axis=1)

    def release_raw(self, endpoint_id: str) -> None:
        """Forget a loaded raw frame (a later `raw()` reloads it): the big frames need not stay in memory."""
        root = self.full
        root._raw_cache.pop(endpoint_id, None)
        src = root._raw_source
        frames = getattr(src, "frames", None)
        if isinstance(frames, dict):
            frames.pop(endpoint_id, None)

    def _fit(self, name: str, value: Any) -> Any:
        if isinstance(value, Labels):
            return value
        value = self.xp.asarray(value)
        if value.ndim == 1:
            value = value[:, None]
        if value.shape != self.shape:
            value = self.xp.broadcast_to(value, self.shape)
        return value

    def trim(self) -> None:
        """Free memoised columns and full-width cached arrays (kept: panels, [T, G] statistics, ranks).

        Called on the root after the first chunk, when every cross-sectional statistic is cached; a later
        request simply recomputes.
        """
        self._columns.clear()
        T, N = self.grid.T, self.grid.N
        for key in list(self._cache):
            value = self._cache[key]
            full = getattr(value, "shape", None) == (T, N)
            keep = isinstance(key, tuple) and key and key[0] in ("sector_rank",)
            if full and not keep:
                del self._cache[key]

    def drop(self, name: str) -> None:
        """Forget a memoised column (the pipeline frees columns once written)."""
        self._columns.pop(name, None)
