"""v2 rows -> the canonical raw-store frame (etl/sources/schema.py), at the edge of the client.

The rules follow the schema's dtype contract:
- names: v2 short names are renamed to the long v1 names; nested objects are flattened with "." first
  (`PubReason.Restricted`); fields the schema does not store (e.g. Premium morning/afternoon bars) are dropped
  here but stay in the archived response;
- `pl.Float64` columns: JSON numbers as they are; numeric strings parsed; `""`, `"-"`, `"*"` and null -> null;
- `pl.Date` columns: `YYYY-MM-DD` (or `YYYYMMDD`); `""`, `"-"`, `"*"` and null -> null;
- `pl.String` columns: the published text is kept unchanged (the schema keeps fins/statements' `""` and the
  daily margin `"-"`/`"*"` markers for the ETL to read); a JSON number becomes its shortest text (`-20.0`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl

from etl.errors import GogookuError
from etl.sources.schema import Endpoint

NULL_TOKENS = frozenset({"", "-", "*"})


class MappingError(GogookuError):
    """A value J-Quants sent that does not fit the canonical schema."""


def flatten(row: dict[str, Any]) -> dict[str, Any]:
    """`{"PubReason": {"Restricted": "0"}}` -> `{"PubReason.Restricted": "0"}` (v2 nests one level only)."""
    if not any(isinstance(v, dict) for v in row.values()):
        return row
    out: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            for sub, inner in value.items():
                out[f"{key}.{sub}"] = inner
        else:
            out[key] = value
    return out


def _to_float(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise MappingError(f"{where}: expected a number, got {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if text in NULL_TOKENS:
            return None
        try:
            return float(text)
        except ValueError:
            raise MappingError(f"{where}: expected a number, got {value!r}") from None
    raise MappingError(f"{where}: expected a number, got {value!r}")


def _to_date(value: Any, where: str) -> dt.date | None:
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if text in NULL_TOKENS:
            return None
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            pass
    raise MappingError(f"{where}: expected a date YYYY-MM-DD, got {value!r}")


def _to_text(value: Any, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    raise MappingError(f"{where}: expected text, got {value!r}")


def _converter(dtype: pl.DataType) -> Any:
    for known, convert in ((pl.Float64, _to_float), (pl.Date, _to_date), (pl.String, _to_text)):
        if dtype == known:
            return convert
    raise TypeError(f"no v2 conversion for dtype {dtype}")


_NUMBER_TYPES = frozenset({float, int, type(None)})
_TEXT_TYPES = frozenset({str, type(None)})


def _fast_column(col: str, values: list[Any], dtype: pl.DataType) -> pl.Series | None:
    """The vectorised conversion when every value has the usual type; None when the slow path must decide."""
    kinds = set(map(type, values))
    if dtype == pl.Float64 and kinds <= _NUMBER_TYPES:
        try:
            return pl.Series(col, values, dtype=pl.Float64)
        except (OverflowError, TypeError, pl.exceptions.PolarsError):  # e.g. an integer past 64 bits
            return None
    if dtype == pl.String and kinds <= _TEXT_TYPES:
        return pl.Series(col, values, dtype=pl.String)
    if dtype == pl.Date and kinds <= _TEXT_TYPES:
        text = pl.Series(col, values, dtype=pl.String)
        text = text.set(text.is_in(list(NULL_TOKENS)), None)
        dates = text.str.to_date("%Y-%m-%d", strict=False)
        if dates.null_count() == text.null_count():  # every date parsed; otherwise the slow path explains
            return dates
    return None


def rows_to_frame(ep: Endpoint, rows: list[dict[str, Any]]) -> pl.DataFrame:
    """Map v2 rows of endpoint `ep` to a frame with exactly the canonical columns and dtypes."""
    if any("." in name for name in ep.v2_names):
        rows = [flatten(r) for r in rows]
    v2_of = {long: short for short, long in ep.v2_names.items()}
    data = {}
    for col, dtype in ep.columns.items():
        short = v2_of.get(col, col)
        # the v2 name, or the long name if a field already comes under it
        values = [r[short] if short in r else r.get(col) for r in rows]
        series = _fast_column(col, values, dtype)
        if series is None:
            convert = _converter(dtype)
            where = f"{ep.v2_path} field {col}"
            series = pl.Series(col, [convert(v, where) for v in values], dtype=dtype)
        data[col] = series
    return pl.DataFrame(data, schema=ep.schema)
