"""The raw store: `RAW/<endpoint_id>/<part>.parquet`, one folder per endpoint, schema in
etl/sources/schema.py.

Writers (the J-Quants client, the synthetic market) call `write_endpoint`; readers call `read_endpoint`, which
scans every part of the folder, or `read_frame` (collected, the last part winning per key). A write is atomic
(temp file in the same folder, fsync, `os.replace`), so a reader never sees half a file, and schema-checked,
so a frame that does not match the contract is refused with a `GogookuError` naming the endpoint and the
columns. Reads check every part the same way (a part may have been copied in by hand, cut short or written
by another tool): a bad part is one `RawStoreError` naming the file, the endpoint and the problem. See
docs/raw_store.md.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import polars as pl

from etl.errors import GogookuError
from etl.files import write_atomic
from etl.sources.schema import ENDPOINTS, Endpoint

_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=-]*$")


class RawStoreError(GogookuError):
    """A raw-store frame or folder that does not fit the contract."""


def endpoint(endpoint_id: str) -> Endpoint:
    """The schema of `endpoint_id`; an unknown id is a RawStoreError listing the known ones."""
    try:
        return ENDPOINTS[endpoint_id]
    except KeyError:
        known = ", ".join(sorted(ENDPOINTS))
        raise RawStoreError(f"unknown raw endpoint '{endpoint_id}' (known: {known})") from None


def check_frame(endpoint_id: str, df: pl.DataFrame, where: str | None = None) -> pl.DataFrame:
    """Return `df` in canonical column order if it fits the schema of `endpoint_id`, else raise.

    Checked: exactly the canonical columns (missing and unexpected ones are named), each with its dtype (an
    all-null column of dtype Null is accepted and cast), 5-character codes, non-null key columns (except the
    schema's `nullable_key`), and no duplicate key within the frame (the first rows are shown). Messages
    start with `where` (default: the endpoint id).
    """
    ep = endpoint(endpoint_id)
    where = where or endpoint_id
    _check_columns(ep, dict(df.schema), where)
    casts = {c: dtype for c, dtype in ep.columns.items() if df.schema[c] == pl.Null}
    if casts:
        df = df.with_columns(pl.col(c).cast(t) for c, t in casts.items())
    df = df.select(list(ep.columns))
    for col in ep.code_columns:
        codes = df[col].drop_nulls().unique(maintain_order=True)
        bad = codes.filter(codes.str.len_chars() != 5)
        if bad.len():
            sample = ", ".join(repr(v) for v in bad.head(3).to_list())
            raise RawStoreError(f"{where}: column {col} must hold 5-character codes (got {sample})")
    nulls = [c for c in ep.key if c not in ep.nullable_key and df[c].null_count()]
    if nulls:
        raise RawStoreError(f"{where}: key columns {_names(nulls)} contain nulls")
    key = list(ep.key)
    if df.height and _has_duplicates(df, key):
        dup = df.with_row_index("row").filter(pl.struct(key).is_duplicated()).sort([*key, "row"])
        shown = "; ".join(
            f"row {r['row']}: " + ", ".join(f"{k}={r[k]}" for k in key) for r in dup.head(4).to_dicts()
        )
        raise RawStoreError(
            f"{where}: duplicate rows for the key ({', '.join(key)}): {dup.height} rows, e.g. {shown}"
        )
    return df


def _check_columns(ep: Endpoint, schema: dict[str, Any], where: str) -> None:
    """Exactly the canonical column names, each of its dtype or Null (all-null, cast by `check_frame`)."""
    missing = [c for c in ep.columns if c not in schema]
    extra = [c for c in schema if c not in ep.columns]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing columns {_names(missing)}")
        if extra:
            parts.append(f"unexpected columns {_names(extra)}")
        raise RawStoreError(f"{where}: does not match the raw schema: {'; '.join(parts)}")
    wrong = [
        f"{c} is {schema[c]} (expected {t})" for c, t in ep.columns.items() if schema[c] not in (t, pl.Null)
    ]
    if wrong:
        raise RawStoreError(f"{where}: wrong column types: {'; '.join(wrong[:6])}")


def _has_duplicates(df: pl.DataFrame, key: list[str]) -> bool:
    """Exact duplicate-key test; a 64-bit hash count settles the usual (no duplicate) case quickly."""
    if df.select(pl.struct(key).hash().n_unique()).item() == df.height:
        return False
    return bool(df.select(pl.struct(key).is_duplicated().any()).item())


def _names(cols: list[str]) -> str:
    shown = ", ".join(cols[:8])
    return shown + (f" and {len(cols) - 8} more" if len(cols) > 8 else "")


def endpoint_dir(raw_dir: str | Path, endpoint_id: str) -> Path:
    endpoint(endpoint_id)
    return Path(raw_dir) / endpoint_id


def write_endpoint(raw_dir: str | Path, endpoint_id: str, df: pl.DataFrame, part: str = "data") -> Path:
    """Write `df` as `RAW/<endpoint_id>/<part>.parquet` atomically; an existing part of that name is replaced.

    Parts let a fetcher write increments (e.g. one part per month) that readers see together. The bytes depend
    only on the frame, so equal frames give identical files.
    """
    if not _PART.match(part):
        raise RawStoreError(f"part name {part!r} must be letters, digits, '_', '-', '.', '=' (no '/')")
    df = check_frame(endpoint_id, df)
    folder = endpoint_dir(raw_dir, endpoint_id)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{part}.parquet"
    write_atomic(final, lambda fh: df.write_parquet(fh, compression="zstd", statistics=True))
    return final


def part_files(raw_dir: str | Path, endpoint_id: str) -> list[Path]:
    """The endpoint's part files in name order (temp files of unfinished writes are not parts)."""
    folder = endpoint_dir(raw_dir, endpoint_id)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.parquet") if not p.name.startswith("."))


def _part_name(path: Path, endpoint_id: str) -> str:
    return f"{path} (raw endpoint {endpoint_id})"


def _part_schema(path: Path, endpoint_id: str) -> dict[str, Any]:
    """The part's column types from its Parquet footer; an empty, cut-short or foreign file is a
    RawStoreError naming it."""
    where = _part_name(path, endpoint_id)
    if path.stat().st_size == 0:
        raise RawStoreError(f"{where}: the file is empty (0 bytes); delete it or write the part again")
    try:
        return dict(pl.read_parquet_schema(path))
    except (pl.exceptions.PolarsError, OSError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RawStoreError(
            f"{where}: not a readable Parquet file ({reason}); delete it or write the part again"
        ) from None


def read_endpoint(raw_dir: str | Path, endpoint_id: str) -> pl.LazyFrame | None:
    """Scan all parts of an endpoint as one LazyFrame in the canonical schema; None if nothing is stored.

    Each part's footer is read first (no data): an unreadable part or one with other columns or types is a
    RawStoreError naming it, not a failure deep inside a later query."""
    files = part_files(raw_dir, endpoint_id)
    if not files:
        return None
    ep = endpoint(endpoint_id)
    for path in files:
        _check_columns(ep, _part_schema(path, endpoint_id), _part_name(path, endpoint_id))
    return pl.scan_parquet(files, schema=ep.schema)


def read_part(path: Path, endpoint_id: str, engine: Any = "cpu") -> pl.DataFrame:
    """One part file, collected and checked like a write (`check_frame`): a bad part is one RawStoreError
    naming the file, the endpoint and what is wrong (also duplicate keys within the part, with their rows)."""
    where = _part_name(path, endpoint_id)
    _check_columns(endpoint(endpoint_id), _part_schema(path, endpoint_id), where)
    try:
        df = pl.scan_parquet(path).collect(engine=engine)
    except (pl.exceptions.PolarsError, OSError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RawStoreError(f"{where}: cannot read its rows ({reason}); write the part again") from None
    return check_frame(endpoint_id, df, where)


def read_frame(raw_dir: str | Path, endpoint_id: str, engine: Any = "cpu") -> pl.DataFrame | None:
    """All parts of an endpoint collected with one row per key: the last in part-name order (a later part
    supersedes an earlier one); None if nothing is stored. Corrections that differ in a publication date are
    distinct keys and are all kept. Each part is checked on its own (`read_part`): within one part a key
    must not repeat, as a write would have refused it.

    The uniqueness pass runs only when a key repeats: parts usually hold disjoint periods, and checking
    costs a quarter of keeping the last row per key (full market: ~1 s vs ~4 s on two cores).
    """
    files = part_files(raw_dir, endpoint_id)
    if not files:
        return None
    frames = [read_part(path, endpoint_id, engine) for path in files]
    if len(frames) == 1:
        return frames[0]
    df = pl.concat(
        frames, rechunk=True
    )  # one buffer per column, as `unique` gives: later conversions copy nothing
    frames.clear()
    key = list(endpoint(endpoint_id).key)
    if df.select(pl.struct(key).is_duplicated().any()).item():
        return df.unique(subset=key, keep="last", maintain_order=True)
    return df


def available_endpoints(raw_dir: str | Path) -> list[str]:
    """Known endpoint ids that have at least one part under `raw_dir`, sorted."""
    return [e for e in sorted(ENDPOINTS) if part_files(raw_dir, e)]
