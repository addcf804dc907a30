"""A local fake of the J-Quants v2 API for tests: real HTTP on 127.0.0.1, never the real service.

It serves rows in v2 JSON form (short names, nested `PubReason`, rows under "data"), filters them by the
query parameters each endpoint accepts, pages them with `pagination_key`, gzips when asked, and can inject the
failures a client must survive: 429 (with or without Retry-After), 500, slow responses, dropped connections,
a bad key, a plan-range 400, a plan-gated 403 and a looping pagination key. Every request is logged with its
arrival time so tests can check the client's rate.

`v2_rows_from_store(raw_dir)` turns a canonical raw store (what `gogooku synth` writes) into what the v2 API
would send for it, including the API's text quirks: numeric strings, and "", "-" and "*" for missing numbers.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import polars as pl

from etl.sources import raw_store
from etl.sources.schema import DAILY_MARGIN_MIXED_COLUMNS, ENDPOINTS, Endpoint

PLAN_RANGE_MESSAGE = (
    "Your subscription covers the following dates: {first} ~ {last}. If you want more data, please check "
    "other plans:https://jpx-jquants.com/#dataset"
)

# v2 path -> query parameter -> (canonical column, comparison). Only these parameters are accepted.
FILTERS: dict[str, dict[str, tuple[str, str]]] = {
    "/equities/master": {"code": ("Code", "code"), "date": ("Date", "eq")},
    "/equities/bars/daily": {
        "code": ("Code", "code"),
        "date": ("Date", "eq"),
        "from": ("Date", "ge"),
        "to": ("Date", "le"),
    },
    "/indices/bars/daily/topix": {"from": ("Date", "ge"), "to": ("Date", "le")},
    "/equities/investor-types": {
        "section": ("Section", "eq"),
        "from": ("PublishedDate", "ge"),
        "to": ("PublishedDate", "le"),
    },
    "/fins/summary": {"code": ("LocalCode", "code"), "date": ("DisclosedDate", "eq")},
    "/equities/earnings-calendar": {},
    "/markets/margin-interest": {
        "code": ("Code", "code"),
        "date": ("Date", "eq"),
        "from": ("Date", "ge"),
        "to": ("Date", "le"),
    },
    "/markets/margin-alert": {
        "code": ("Code", "code"),
        "date": ("PublishedDate", "eq"),
        "from": ("PublishedDate", "ge"),
        "to": ("PublishedDate", "le"),
    },
    "/markets/short-ratio": {
        "s33": ("Sector33Code", "eq"),
        "date": ("Date", "eq"),
        "from": ("Date", "ge"),
        "to": ("Date", "le"),
    },
    "/markets/short-sale-report": {
        "code": ("Code", "code"),
        "disc_date": ("DisclosedDate", "eq"),
        "disc_date_from": ("DisclosedDate", "ge"),
        "disc_date_to": ("DisclosedDate", "le"),
        "calc_date": ("CalculatedDate", "eq"),
    },
    "/markets/calendar": {"hol_div": ("HolidayDivision", "eq"), "from": ("Date", "ge"), "to": ("Date", "le")},
}
# Endpoints that refuse a query without one of these parameters (as the real API does).
REQUIRED: dict[str, tuple[str, ...]] = {
    "/equities/bars/daily": ("code", "date"),
    "/fins/summary": ("code", "date"),
    "/markets/margin-interest": ("code", "date"),
    "/markets/margin-alert": ("code", "date"),
    "/markets/short-ratio": ("s33", "date"),
    "/markets/short-sale-report": ("code", "disc_date", "calc_date"),
}
DATE_PARAMS = ("date", "from", "to", "disc_date", "disc_date_from", "disc_date_to", "calc_date")


@dataclass
class Fault:
    """One injected failure, used for the next request whose path starts with `path` (all paths if "")."""

    kind: str  # "429", "500", "slow", "disconnect", "truncate", "repeat_key"
    retry_after: str | None = None
    delay_s: float = 0.0
    path: str = ""


@dataclass
class LoggedRequest:
    at: float  # time.monotonic() on arrival
    path: str
    params: dict[str, str]
    status: int
    busy_s: float = 0.0  # time the server spent on it (for benchmarks: client time = wall - server time)


@dataclass
class FakeState:
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # v2 path -> v2 rows
    api_keys: set[str] = field(default_factory=lambda: {"test-key"})
    bad_key_status: int = 403  # v2 answers a wrong key with 403 "invalid or expired"; v1 used 401
    page_size: int = 50
    plan_window: tuple[str, str] | None = None  # (first, last) ISO dates
    forbidden: set[str] = field(default_factory=set)  # v2 paths not in the plan -> 403
    faults: list[Fault] = field(default_factory=list)
    log: list[LoggedRequest] = field(default_factory=list)
    cache: dict[tuple, list[dict[str, Any]]] = field(default_factory=dict)  # rows are not changed once served
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take_fault(self, path: str) -> Fault | None:
        with self.lock:
            for i, fault in enumerate(self.faults):
                if path.startswith(fault.path):
                    return self.faults.pop(i)
        return None

    def served(self, status: int | None = None) -> list[LoggedRequest]:
        with self.lock:
            return [r for r in self.log if status is None or r.status == status]


def max_in_window(times: list[float], period: float) -> int:
    """The most requests that arrived within any window [t, t + period)."""
    times, best, lo = sorted(times), 0, 0
    for hi, t in enumerate(times):
        while times[lo] + period <= t:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def _iso(value: str) -> str:
    """Accept YYYYMMDD or YYYY-MM-DD like the API; raise ValueError for anything else."""
    return dt.date.fromisoformat(value).isoformat()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes; Nagle would add ~40 ms each
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence the default stderr log
        return None

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        state = self.server.state
        url = urllib.parse.urlsplit(self.path)
        path = url.path.removeprefix("/v2")
        params = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        arrived = time.monotonic()
        status = self._serve(state, path, params)
        with state.lock:
            state.log.append(LoggedRequest(arrived, path, params, status, time.monotonic() - arrived))

    def _serve(self, state: FakeState, path: str, params: dict[str, str]) -> int:
        if self.headers.get("x-api-key") not in state.api_keys:
            return self._send(state.bad_key_status, {"message": "The incoming token is invalid or expired."})
        fault = state.take_fault(path)
        if fault is not None and fault.kind == "slow":
            time.sleep(fault.delay_s)
        elif fault is not None and fault.kind == "disconnect":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return 0
        elif fault is not None and fault.kind in ("429", "500"):
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            message = (
                "Rate limit exceeded" if fault.kind == "429" else "Unexpected error. Please try again later."
            )
            return self._send(int(fault.kind), {"message": message}, headers)
        if path not in FILTERS:
            return self._send(403, {"message": "The requested endpoint does not exist."})
        if path in state.forbidden:
            return self._send(403, {"message": "This API is not available on your subscription."})
        filters = FILTERS[path]
        unknown = [k for k in params if k not in filters and k != "pagination_key"]
        if unknown:
            return self._send(400, {"message": f"Unknown parameter(s): {', '.join(unknown)}."})
        required = REQUIRED.get(path, ())
        if required and not any(k in params for k in required):
            names = ",".join(f"'{k}'" for k in required)
            return self._send(
                400, {"message": f"This API requires at least 1 parameter as follows; {names}."}
            )
        try:
            dates = {k: _iso(v) for k, v in params.items() if k in DATE_PARAMS}
        except ValueError:
            return self._send(400, {"message": "Invalid date format."})
        if state.plan_window is not None:
            first, last = state.plan_window
            if any(not first <= d <= last for d in dates.values()):
                return self._send(400, {"message": PLAN_RANGE_MESSAGE.format(first=first, last=last)})
        query = (path, tuple(sorted((k, v) for k, v in params.items() if k != "pagination_key")))
        with state.lock:
            rows = state.cache.get(query)
        if rows is None:  # filter once per query, not once per page
            rows = [r for r in state.rows.get(path, []) if _matches(r, path, params, dates)]
            with state.lock:
                state.cache[query] = rows
        offset = int(params.get("pagination_key", "0.").split(".")[0] or 0)
        page = rows[offset : offset + state.page_size]
        body: dict[str, Any] = {"data": page}
        if offset + state.page_size < len(rows):
            body["pagination_key"] = f"{offset + state.page_size}.{len(rows)}."
        if fault is not None and fault.kind == "repeat_key":
            body["pagination_key"] = (
                params.get("pagination_key") or f"{offset + state.page_size}.{len(rows)}."
            )
        if fault is not None and fault.kind == "truncate":
            payload = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return 200
        return self._send(200, body)

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> int:
        payload = json.dumps(body, ensure_ascii=False).encode()
        gz = "gzip" in (self.headers.get("Accept-Encoding") or "")
        if gz:
            payload = gzip.compress(payload, compresslevel=1)
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        if gz:
            self.send_header("Content-Encoding", "gzip")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        try:
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
            self.close_connection = True
        return status


_V1_OF: dict[str, dict[str, str]] = {}


def _v2_name(path: str, column: str) -> str:
    """The v2 field name of canonical `column` on `path` (flattened names stay flattened)."""
    if path not in _V1_OF:
        ep = next(e for e in ENDPOINTS.values() if e.v2_path == path)
        _V1_OF[path] = {v1: v2 for v2, v1 in ep.v2_names.items()}
    return _V1_OF[path][column]


def _field(row: dict[str, Any], name: str) -> Any:
    if "." in name:
        outer, inner = name.split(".", 1)
        return (row.get(outer) or {}).get(inner)
    return row.get(name)


def _matches(row: dict[str, Any], path: str, params: dict[str, str], dates: dict[str, str]) -> bool:
    for key, value in params.items():
        if key == "pagination_key":
            continue
        column, op = FILTERS[path][key]
        have = _field(row, _v2_name(path, column))
        want = dates.get(key, value)
        if op == "code":
            if have != want and have != want + "0":
                return False
        elif op == "eq" and have != want:
            return False
        elif op == "ge" and not (have and have >= want):
            return False
        elif op == "le" and not (have and have <= want):
            return False
    return True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    state: FakeState

    def handle_error(self, request: Any, client_address: Any) -> None:  # a client that hung up is normal here
        return None


class FakeJQuants:
    """Start with `with FakeJQuants(state) as fake:`; `fake.base_url` is `http://127.0.0.1:<port>/v2`."""

    def __init__(self, state: FakeState | None = None):
        self.state = state or FakeState()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = self.state
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.daemon = True

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v2"

    def __enter__(self) -> FakeJQuants:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


# ------------------------------------------------------------------------------------------ store -> v2 rows
_NULL_TOKENS = ("", "-", "*")


def _encode_value(value: Any, dtype: pl.DataType, column: str, ep: Endpoint, i: int) -> Any:
    """One canonical value as the v2 API would send it, varying the representation by row index `i`."""
    if dtype == pl.Date:
        return value.isoformat() if value is not None else ("" if i % 2 else None)
    if dtype == pl.Float64:
        if value is None:
            return [None, *_NULL_TOKENS][i % 4]  # null, "", "-", "*": all mean "missing"
        return repr(value) if i % 3 == 1 else value  # sometimes a numeric string
    if column in DAILY_MARGIN_MIXED_COLUMNS and ep.endpoint_id == "markets_daily_margin_interest":
        try:
            number = json.loads(value) if value is not None else None
        except ValueError:
            number = None
        if isinstance(number, float) and repr(number) == value:
            return number  # the API sends published numbers as JSON numbers
    return value


def frame_to_v2_rows(ep: Endpoint, frame: pl.DataFrame) -> list[dict[str, Any]]:
    """Canonical frame -> v2 JSON rows (short names, nested objects, text quirks)."""
    v2_of = {v1: v2 for v2, v1 in ep.v2_names.items()}
    out = []
    for i, row in enumerate(frame.iter_rows(named=True)):
        v2: dict[str, Any] = {}
        for column, dtype in ep.columns.items():
            name = v2_of[column]
            value = _encode_value(row[column], dtype, column, ep, i)
            if "." in name:
                outer, inner = name.split(".", 1)
                v2.setdefault(outer, {})[inner] = value
            else:
                v2[name] = value
        out.append(v2)
    return out


def v2_rows_from_store(raw_dir: str | Path) -> dict[str, list[dict[str, Any]]]:
    """Every stored endpoint of a canonical raw store as v2 rows, keyed by v2 path."""
    out = {}
    for endpoint_id in raw_store.available_endpoints(raw_dir):
        ep = ENDPOINTS[endpoint_id]
        frame = raw_store.read_endpoint(raw_dir, endpoint_id).collect()
        out[ep.v2_path] = frame_to_v2_rows(ep, frame.sort(list(ep.key), nulls_last=True))
    return out


# ------------------------------------------------------------------------------------------ a tiny market
TINY_CODES = ("13010", "72030", "86970", "130A0")
TINY_SECTIONS = ("TSEPrime", "TSEStandard")
TINY_SECTORS = ("0050", "3050", "3650", "7050", "9999")


def _sessions(start: dt.date, end: dt.date) -> list[dt.date]:
    import exchange_calendars

    cal = exchange_calendars.get_calendar("XTKS")
    return [d.date() for d in cal.sessions_in_range(start, end)]


def _application_fridays(sessions: list[dt.date]) -> list[dt.date]:
    """Friday of each week, or the last session before it in that week when Friday is a holiday."""
    out = []
    by_week: dict[tuple[int, int], list[dt.date]] = {}
    for day in sessions:
        by_week.setdefault(day.isocalendar()[:2], []).append(day)
    for days in by_week.values():
        friday = days[0] + dt.timedelta(days=4 - days[0].weekday())
        if friday <= sessions[-1]:
            out.append(friday if friday in days else max(d for d in days if d < friday))
    return out


def _random_value(rng: Any, dtype: pl.DataType, base: dt.date) -> Any:
    if rng.random() < 0.15:
        return None
    if dtype == pl.Float64:
        return round(rng.uniform(-1e6, 1e7), rng.choice([0, 1, 2, 6]))
    if dtype == pl.Date:
        return base - dt.timedelta(days=rng.randrange(0, 400))
    return rng.choice(["", "-", "*", "0", "1", "-20.0", "3.5", "100", "名前", "Name, Inc."])


def tiny_market(
    raw_dir: str | Path, start: dt.date, end: dt.date, seed: int = 0, corrections: bool = True
) -> dict[str, pl.DataFrame]:
    """A small canonical raw store for every endpoint, with random values of the right types and quirks.

    Keys follow each endpoint's real structure (one row per date and code, weekly application dates, daily
    margin corrections with a later PublishedDate...). Written with `raw_store.write_endpoint` and returned.
    """
    import random

    rng = random.Random(seed)
    sessions = _sessions(start, end)
    weekly = _application_fridays(sessions)
    all_days = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
    keyed: dict[str, tuple[list[dt.date], tuple[str, ...] | None]] = {
        "listed_info": (sessions, TINY_CODES),
        "prices_daily_quotes": (sessions, TINY_CODES),
        "indices_topix": (sessions, None),
        "markets_trades_spec": (weekly, TINY_SECTIONS),
        "fins_statements": (rng.sample(sessions, len(sessions) // 3), TINY_CODES[:3]),
        "fins_announcement": (sessions[-3:], TINY_CODES),
        "markets_weekly_margin_interest": (weekly, TINY_CODES),
        "markets_daily_margin_interest": (sessions, TINY_CODES[:2]),
        "markets_short_selling": (sessions, TINY_SECTORS),
        "markets_short_selling_positions": (rng.sample(sessions, len(sessions) // 2), TINY_CODES[1:]),
    }
    frames: dict[str, pl.DataFrame] = {}
    for endpoint_id, (dates, who) in keyed.items():
        ep = ENDPOINTS[endpoint_id]
        who_column = {"markets_trades_spec": "Section", "markets_short_selling": "Sector33Code"}.get(
            endpoint_id, ep.code_columns[0] if ep.code_columns else None
        )
        rows = []
        for day in sorted(dates):
            for name in who or (None,):
                row = {c: _random_value(rng, t, day) for c, t in ep.columns.items()}
                row[ep.date_column] = day
                if who_column is not None:
                    row[who_column] = name
                rows.append(row)
        for i, row in enumerate(rows):
            day = row[ep.date_column]
            if endpoint_id == "fins_statements":
                row["DisclosureNumber"] = f"{day:%Y%m%d}{i:06d}"
            if endpoint_id == "markets_trades_spec":
                row["StartDate"], row["EndDate"] = day - dt.timedelta(days=11), day - dt.timedelta(days=7)
            if endpoint_id == "markets_daily_margin_interest":
                row["ApplicationDate"] = day - dt.timedelta(days=1)
            if endpoint_id == "markets_short_selling_positions":
                row["CalculatedDate"] = day - dt.timedelta(days=1)
                row["ShortSellerName"] = row["ShortSellerName"] or f"seller {i}"
            for column in ep.key:
                if row[column] is None and ep.columns[column] == pl.String:
                    row[column] = ""  # the API sends "" for an empty name; keys are never null
            if endpoint_id == "fins_announcement" and i % 5 == 0:
                row["Date"] = None  # not decided yet
        if corrections and endpoint_id in ("markets_daily_margin_interest", "markets_trades_spec"):
            later = {d: sessions[min(sessions.index(d) + 1, len(sessions) - 1)] for d in dates}
            for row in rows[1 : len(rows) - 2 : 4]:
                if later[row[ep.date_column]] != row[ep.date_column]:
                    rows.append({**row, ep.date_column: later[row[ep.date_column]]})
        frame = pl.DataFrame(rows, schema=ep.schema, orient="row")
        frames[endpoint_id] = frame.unique(subset=list(ep.key), keep="first", maintain_order=True)
    open_days = set(sessions)
    frames["markets_trading_calendar"] = pl.DataFrame(
        {"Date": all_days, "HolidayDivision": ["1" if d in open_days else "0" for d in all_days]},
        schema=ENDPOINTS["markets_trading_calendar"].schema,
    )
    for endpoint_id, frame in frames.items():
        raw_store.write_endpoint(raw_dir, endpoint_id, frame)
    return frames
