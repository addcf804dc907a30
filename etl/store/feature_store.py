"""The feature store: Parquet partitioned by year plus catalog.json (FEATURES.md order, schema hash).

Layout: `OUT/year=YYYY/part-CCCCC.parquet` (one file per stock chunk and year, rows sorted by (Code, Date);
chunks hold ascending code ranges, so reading the parts in name order gives the whole year sorted), and
`OUT/catalog.json`. Columns: Code, Date, then every built column in FEATURES.md order, cast to its dtype
(floats f32/f64, nullable Int8/16/32 flags and counts, strings, dates).

A build never writes into OUT: it fills a sibling folder `.OUT.gogooku-build-PID` and swaps it in when it is
complete (`prepare` / `commit` / `discard`), so an error, Ctrl-C or a crash leaves the old store as it was.
Only files the store writes (`is_store_file`) are ever deleted; anything else found in an old store (notes,
a checkpoint folder) is moved into the new one. A folder left by a killed build is cleared by the next one.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from etl.errors import GogookuError
from etl.features.registry import REGISTRY, Labels
from etl.graph.build import EDGES_FILE
from etl.ops import array_namespace, to_host

POLARS_DTYPES = {
    "f32": pl.Float32,
    "f64": pl.Float64,
    "i8": pl.Int8,
    "i16": pl.Int16,
    "i32": pl.Int32,
    "str": pl.String,
    "date": pl.Date,
}
CATALOG = "catalog.json"


def to_series(name: str, dtype: str, values: Any) -> pl.Series:
    """A column's selected values (NumPy 1-D float, or (codes, categories) for strings) as a typed Series.

    NaN and ±inf become null (§1.6). Strings and integers are built from integer arrays plus a null mask:
    a Polars Series from an object array whose first value is None fails ("cannot cast 'Object' type"),
    and the float → round → cast route costs three times as much.
    """
    if dtype == "str":
        codes, cats = values
        codes = np.asarray(codes, dtype=np.float64)
        valid = ~np.isnan(codes)
        if not valid.any():
            return pl.Series(name, [None] * codes.shape[0], dtype=pl.String)
        table = pl.Series(name, list(cats), dtype=pl.String)
        return _with_nulls(table.gather(np.where(valid, codes, 0).astype(np.uint32)), valid)
    arr = np.asarray(values)
    if dtype in ("f32", "f64"):
        # at most one NumPy cast (none when `select_block` already cast on the device), and ±inf (also
        # beyond the f32 range) becomes NaN in a copy only where there is any: no extra full-size passes
        with np.errstate(over="ignore"):
            out = arr.astype(np.float32 if dtype == "f32" else np.float64, copy=False)
        inf = np.isinf(out)
        if inf.any():
            out = np.where(inf, np.nan, out)  # ±inf is never stored (§1.6)
        return pl.Series(name, out, nan_to_null=True)
    arr = arr.astype(np.float64, copy=False)
    if dtype == "date":
        valid = np.isfinite(arr)
        return pl.Series(name, np.where(valid, arr, np.nan), nan_to_null=True).cast(pl.Int32).cast(pl.Date)
    ints = np.rint(arr)
    valid = np.isfinite(ints)
    if not valid.all():
        np.copyto(ints, 0.0, where=~valid)  # in place: NaN and ±inf become null below
    info = np.iinfo(np.dtype(dtype.replace("i", "int")))
    if ints.size and (ints.min() < info.min or ints.max() > info.max):  # Polars names the column and values
        return pl.Series(name, np.where(valid, ints, np.nan), nan_to_null=True).cast(POLARS_DTYPES[dtype])
    return _with_nulls(pl.Series(name, ints.astype(info.dtype)), valid)


def _with_nulls(series: pl.Series, valid: np.ndarray) -> pl.Series:
    return series if valid.all() else series.set(pl.Series(~valid), None)


_SELECTION = threading.local()  # .mask, .flat: the last mask's positions, reused per column (per thread)


def _flat_positions(keep_T: Any) -> Any:
    """Positions in a C-ordered [T, n] array of the True cells of `keep_T` ([n, T]), in (Code, Date) order.

    The pipeline selects every column of a chunk with the same mask, so the positions are found once per
    mask (held here, per thread, so its identity cannot be reused) and each column is a single gather of
    its kept cells instead of a boolean scan of the whole strided [T, n] array.
    """
    if getattr(_SELECTION, "mask", None) is not keep_T:
        xp = array_namespace(keep_T)
        n, T = keep_T.shape
        stock, row = xp.divmod(xp.flatnonzero(keep_T), T)
        _SELECTION.mask, _SELECTION.flat = keep_T, row * n + stock
    return _SELECTION.flat


def _pick(arr: Any, keep_T: Any) -> Any:
    """The [T, n] array's cells where `keep_T` ([n, T]) is True, in (Code, Date) order, where it lives."""
    if arr.shape[::-1] == keep_T.shape and arr.flags.c_contiguous:
        return arr.ravel().take(_flat_positions(keep_T))
    return arr.T[keep_T]


def select_rows(value: Any, keep_T: Any) -> Any:
    """The [T, n] value where `keep_T` ([n, T], stock-major) is True, in (Code, Date) order, on the host."""
    arr = value.codes if isinstance(value, Labels) else value
    picked = to_host(_pick(arr, keep_T))
    return (picked, value.categories) if isinstance(value, Labels) else picked


def select_block(values: list[Any], keep_T: Any, dtype: Any = np.float32) -> np.ndarray:
    """`select_rows` of many numeric [T, n] columns as one [C, rows] host array of `dtype`.

    Filled where the columns live and copied to the host once: on a GPU one transfer (and one device sync)
    per chunk and year instead of one per column, and float32 columns cast before it.
    """
    if not values:
        return np.empty((0, 0), dtype=dtype)
    xp = array_namespace(keep_T)
    out = None
    for i, value in enumerate(values):
        picked = _pick(value, keep_T)
        if out is None:
            out = xp.empty((len(values), picked.shape[0]), dtype=dtype)
        with np.errstate(over="ignore", invalid="ignore"):  # beyond the f32 range: ±inf, then null
            out[i] = picked
    return to_host(out)


def schema_hash(columns: list[str]) -> str:
    """sha256 over "name:dtype" of the key and feature columns, in order."""
    items = ["Code:str", "Date:date"] + [f"{c}:{REGISTRY[c].dtype}" for c in columns]
    return hashlib.sha256("\n".join(items).encode()).hexdigest()


_YEAR_DIR = re.compile(r"^year=\d{4}$")
_PART_FILE = re.compile(r"^part-\d{5}\.parquet$")
_SIBLING = re.compile(r"^\.(?P<name>.+)\.gogooku-(?P<kind>build|old)-(?P<pid>\d+)$")


def is_store_file(rel: Path) -> bool:
    """A path (relative to the store folder) of a file the store writes: catalog.json, graph_edges.npz or a
    year partition's part. Nothing else in a store folder is ever deleted."""
    parts = rel.parts
    if len(parts) == 1:
        return parts[0] in (CATALOG, EDGES_FILE)
    return len(parts) == 2 and bool(_YEAR_DIR.match(parts[0]) and _PART_FILE.match(parts[1]))


def _others(folder: Path) -> list[Path]:
    """Relative paths in a store folder that the store did not write (top-level entries whole; the year
    folders are looked into)."""
    found: list[Path] = []
    for entry in sorted(folder.iterdir()):
        if entry.is_dir() and not entry.is_symlink() and _YEAR_DIR.match(entry.name):
            found += [
                Path(entry.name, f.name) for f in sorted(entry.iterdir()) if not _PART_FILE.match(f.name)
            ]
        elif not (entry.is_file() and is_store_file(Path(entry.name))):
            found.append(Path(entry.name))
    return found


def _sibling(out: Path, kind: str, pid: int | None = None) -> Path:
    return out.parent / f".{out.name}.gogooku-{kind}-{pid or os.getpid()}"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # a folder of this process's own earlier build (a library caller): finished or abandoned
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def discard(folder: Path) -> None:
    """Delete the store's own files in `folder`, then the folders left empty; anything else stays."""
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink() and _YEAR_DIR.match(entry.name):
            for f in entry.iterdir():
                if _PART_FILE.match(f.name) and f.is_file():
                    f.unlink()
            if not any(entry.iterdir()):
                entry.rmdir()
        elif entry.is_file() and is_store_file(Path(entry.name)):
            entry.unlink()
    if not any(folder.iterdir()):
        folder.rmdir()


def _carry_over(old: Path, new: Path) -> None:
    """Move what the store did not write from the old store folder into the new one, then clear the old."""
    for rel in _others(old):
        target = new / rel
        if not target.exists() and not target.is_symlink():
            target.parent.mkdir(exist_ok=True)
            (old / rel).rename(target)
    discard(old)


def recover(out: Path) -> None:
    """Finish or undo what a killed build left beside `out`: its unfinished build folder is discarded; an
    old store moved aside during a swap goes back to `out` (when the new one never arrived) or hands its
    other files to the new one. Folders of builds still running are left alone."""
    if not out.parent.is_dir():
        return
    for folder in sorted(out.parent.iterdir()):
        found = _SIBLING.match(folder.name)
        if not found or found["name"] != out.name or not folder.is_dir() or _alive(int(found["pid"])):
            continue
        if found["kind"] == "build":
            discard(folder)
        elif not out.exists():
            folder.rename(out)
        else:
            _carry_over(folder, out)


def prepare(out_dir: str | Path) -> Path:
    """The empty folder a build of the store `out_dir` writes into (a sibling; `commit` swaps it in).

    `out_dir` may be absent, empty or a feature store (a catalog.json, or only files the store writes: a
    store an older version left half-written); any other folder is refused rather than replaced."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise GogookuError(f"--out {out} is a file; the feature store is a folder: choose another path")
    try:
        recover(out)
        if out.is_dir() and not (out / CATALOG).is_file():
            others = _others(out)
            if others:
                raise GogookuError(
                    f"{out} exists and is not a feature store (no {CATALOG}; it holds {others[0]}); "
                    "choose an empty or new folder"
                )
        build = _sibling(out, "build")
        discard(build)  # this process's own abandoned build, if any
        build.mkdir(parents=True)
    except OSError as err:
        raise GogookuError(f"cannot prepare the feature store {out}: {err}") from None
    return build


def commit(build: Path, out_dir: str | Path) -> Path:
    """Swap the finished build folder in as `out_dir`. An old store is moved aside first, then its files
    that the store did not write move into the new one and its own files are deleted."""
    out = Path(out_dir)
    if out.exists():
        old = _sibling(out, "old")
        out.rename(old)
        build.rename(out)
        _carry_over(old, out)
    else:
        build.rename(out)
    fd = os.open(out.parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # the renames reach the disk
    finally:
        os.close(fd)
    return out


def write_chunk(out: Path, frame: pl.DataFrame, chunk: int) -> list[Path]:
    """Write one stock chunk's rows as one file per year (the pipeline hands over one year at a time)."""
    paths = []
    if frame.height == 0:
        return paths
    years = frame["Date"].dt.year()
    distinct = years.unique().sort().to_list()
    for year in distinct:
        part = frame if len(distinct) == 1 else frame.filter(years == year)  # the pipeline's frames: one year
        folder = out / f"year={year}"
        folder.mkdir(exist_ok=True)
        path = folder / f"part-{chunk:05d}.parquet"
        part.write_parquet(path, compression="zstd", statistics=True)
        paths.append(path)
    return paths


class ChunkWriter:
    """`write_chunk` in a background thread: Polars compresses and writes one frame while the caller
    computes the next (Parquet writing releases the GIL). At most `depth` frames wait; `close()` waits for
    the last one and re-raises the first write error (also raised by the next `__call__`)."""

    def __init__(self, out: Path, depth: int = 2) -> None:
        self.out = out
        self._queue: queue.Queue[tuple[pl.DataFrame, int] | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:
                try:
                    write_chunk(self.out, *item)
                except BaseException as exc:  # handed to the caller's thread
                    self._error = exc

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def __call__(self, frame: pl.DataFrame, chunk: int) -> None:
        self._raise()
        self._queue.put((frame, chunk))

    def close(self, raise_error: bool = True) -> None:
        self._queue.put(None)
        self._thread.join()
        if raise_error:
            self._raise()


def write_catalog(out: Path, columns: list[str], meta: dict[str, Any]) -> dict[str, Any]:
    """catalog.json: per column name, number, group, dtype, role, window, validity, doc; schema hash; meta."""
    entries = [
        {"name": "Code", "group": "identifiers", "dtype": "str", "role": "ID"},
        {"name": "Date", "group": "identifiers", "dtype": "date", "role": "ID"},
    ]
    for c in columns:
        s = REGISTRY[c]
        entries.append(
            {
                "name": c,
                "number": s.number,
                "group": s.group,
                "dtype": s.dtype,
                "role": s.role,
                "window": s.window,
                "validity": s.validity,
                "doc": s.doc,
            }
        )
    catalog = {"schema_hash": schema_hash(columns), "n_columns": len(entries), "columns": entries, **meta}
    (out / CATALOG).write_text(json.dumps(catalog, indent=1, ensure_ascii=False, default=str))
    return catalog


def read_catalog(out_dir: str | Path) -> dict[str, Any]:
    path = Path(out_dir) / CATALOG
    if not path.exists():
        where = "" if Path(out_dir).is_absolute() else f", relative to the current folder {Path.cwd()}"
        raise GogookuError(
            f"no feature store at {out_dir} ({CATALOG} missing{where}); run `gogooku etl` first"
        )
    return json.loads(path.read_text())


def scan(out_dir: str | Path) -> pl.LazyFrame:
    """The whole store as one LazyFrame (rows sorted by year, then Code, Date)."""
    read_catalog(out_dir)
    files = sorted(Path(out_dir).glob("year=*/part-*.parquet"))
    if not files:
        raise GogookuError(f"feature store {out_dir} has no rows")
    return pl.scan_parquet(files)
