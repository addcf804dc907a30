"""Fetch J-Quants v2 data into the raw store, incrementally and crash-safely (`gogooku fetch`).

Work is split into *units*, one per request family: a business day (`date=`) for the daily endpoints, the
last business day of each week for weekly margin, a calendar-year `from`/`to` span for the range endpoints,
and one snapshot for the earnings calendar (it has no history). Querying by date asks for all codes at once,
which keeps request counts low (about 1 request per endpoint per day instead of one per stock).

Crash safety rests on one rule: the archive is the source of truth and the store is derived from it.
1. A finished unit's pages are written, gzip-compressed, to `OUT/_jquants/<endpoint>/<part>/<unit>.json.gz`
   (temp file + atomic rename), so a unit is either archived whole or not at all.
2. A store part (`OUT/<endpoint>/jq-<part>.parquet`, a month or a year) is rebuilt from all archived units of
   that part and written atomically by
   `etl.sources.raw_store.write_endpoint`; then `state.json` records which units
   the part holds (also atomic).
A kill between any two steps is repaired by the next run: units already archived are not requested again,
and a part whose archive differs from `state.json` is rebuilt. Rebuilding from the whole archive means a
re-run never duplicates rows. Corrections published later carry a newer publication date, so they arrive in a
later unit and are stored beside the original rows (the ETL's dedupe picks the newest).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl

from etl.errors import GogookuError
from etl.files import write_atomic
from etl.panels.calendar import parse_date
from etl.sources import raw_store
from etl.sources.jquants_http import (
    DEFAULT_BASE_URL,
    PLAN_REQUESTS_PER_MINUTE,
    JQuantsClient,
    RateLimiter,
    RetryPolicy,
)
from etl.sources.jquants_map import rows_to_frame
from etl.sources.schema import ENDPOINTS, Endpoint

ARCHIVE_DIR = "_jquants"
CALENDAR = "markets_trading_calendar"
JST = dt.timezone(dt.timedelta(hours=9))


@dataclass(frozen=True)
class Query:
    """How an endpoint is asked for a period (see the module docstring)."""

    mode: Literal["daily", "weekly", "range", "snapshot"]
    date_param: str = "date"
    lookback: bool = False  # asked from `statements_lookback_days` before --start (history features need)


QUERIES: dict[str, Query] = {
    "listed_info": Query("daily"),
    "prices_daily_quotes": Query("daily"),
    "indices_topix": Query("range"),
    "markets_trades_spec": Query("range"),
    "fins_statements": Query("daily", lookback=True),  # YoY needs last year's documents
    "fins_announcement": Query("snapshot"),
    "markets_weekly_margin_interest": Query("weekly"),
    "markets_daily_margin_interest": Query("daily"),
    "markets_short_selling": Query("daily"),
    "markets_short_selling_positions": Query("daily", date_param="disc_date"),
    CALENDAR: Query("range"),
}


@dataclass(frozen=True)
class Unit:
    """One request family: its query parameters, the store part it belongs to and its archive name."""

    endpoint_id: str
    uid: str
    part: str
    params: dict[str, str]


@dataclass
class EndpointResult:
    endpoint_id: str
    units_total: int = 0
    units_fetched: int = 0
    rows_fetched: int = 0
    requests: int = 0
    error: str | None = None


@dataclass
class FetchReport:
    results: list[EndpointResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    retries: int = 0
    waited_s: float = 0.0

    @property
    def failed(self) -> list[EndpointResult]:
        return [r for r in self.results if r.error]


def resolve_endpoints(names: Iterable[str] | None) -> list[str]:
    """Endpoint ids from user input: ids (`prices_daily_quotes`), v1 (`prices/daily_quotes`) or v2 paths."""
    if not names:
        return list(QUERIES)
    aliases: dict[str, str] = {}
    for ep in ENDPOINTS.values():
        for alias in (ep.endpoint_id, ep.v1_path.strip("/"), ep.v2_path.strip("/")):
            aliases[alias.lower()] = ep.endpoint_id
    out: list[str] = []
    for raw in names:
        for name in (n.strip() for n in raw.split(",")):
            if not name:
                continue
            found = aliases.get(name.strip("/").lower())
            if found is None:
                known = ", ".join(QUERIES)
                raise GogookuError(f"unknown endpoint '{name}' (known: {known})")
            if found not in out:
                out.append(found)
    return out


# ---------------------------------------------------------------------------------------------- planning
def _iso(day: dt.date) -> str:
    return day.isoformat()


def _days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def weekly_dates(business_days: list[dt.date], start: dt.date, end: dt.date) -> list[dt.date]:
    """The last business day of each Monday-Sunday week with its Friday <= `end`, within [start, end].

    Weekly margin rows are dated with the week's application date: Friday, or the last business day before it.
    """
    last_of_week: dict[tuple[int, int], dt.date] = {}
    for day in business_days:
        week = day.isocalendar()[:2]
        if day > last_of_week.get(week, dt.date.min):
            last_of_week[week] = day
    out = []
    for day in sorted(last_of_week.values()):
        friday = day + dt.timedelta(days=4 - day.weekday())
        if start <= day <= end and friday <= end:
            out.append(day)
    return out


def _range_units(endpoint_id: str, start: dt.date, end: dt.date, covered: set[dt.date]) -> list[Unit]:
    """Calendar-year `from`/`to` spans over the days of [start, end] that no archived unit covers yet."""
    units = []
    for year in range(start.year, end.year + 1):
        first, last = max(start, dt.date(year, 1, 1)), min(end, dt.date(year, 12, 31))
        run: list[dt.date] = []
        for day in [*_days(first, last), None]:
            if day is not None and day not in covered:
                run.append(day)
                continue
            if run:
                a, b = _iso(run[0]), _iso(run[-1])
                units.append(Unit(endpoint_id, f"{a}_{b}", str(year), {"from": a, "to": b}))
                run = []
    return units


def plan_units(
    endpoint_id: str,
    start: dt.date,
    end: dt.date,
    business_days: list[dt.date],
    archived: set[str],
    today: dt.date,
) -> list[Unit]:
    """Every unit of [start, end] for `endpoint_id` that is not archived yet, in date order."""
    query = QUERIES[endpoint_id]
    if query.mode == "snapshot":
        unit = Unit(endpoint_id, f"snapshot-{_iso(today)}", f"snapshot-{_iso(today)}", {})
        return [] if unit.uid in archived else [unit]
    if query.mode == "range":
        covered: set[dt.date] = set()
        for uid in archived:
            a, _, b = uid.partition("_")
            covered.update(_days(dt.date.fromisoformat(a), dt.date.fromisoformat(b)))
        return _range_units(endpoint_id, start, end, covered)
    days = [d for d in business_days if start <= d <= end]
    if query.mode == "weekly":
        days = weekly_dates(business_days, start, end)
    units = [Unit(endpoint_id, _iso(d), _iso(d)[:7], {query.date_param: _iso(d)}) for d in days]
    return [u for u in units if u.uid not in archived]


# ---------------------------------------------------------------------------------------------- archive
class Archive:
    """Compressed responses and per-part state of one endpoint under `OUT/_jquants/<endpoint>/`."""

    def __init__(self, out: Path, endpoint_id: str):
        self.root = out / ARCHIVE_DIR / endpoint_id
        self.endpoint_id = endpoint_id

    def unit_path(self, part: str, uid: str) -> Path:
        return self.root / part / f"{uid}.json.gz"

    def units(self) -> dict[str, set[str]]:
        """part -> uids of the archived (complete) units."""
        out: dict[str, set[str]] = {}
        if not self.root.is_dir():
            return out
        for path in self.root.glob("*/*.json.gz"):
            if not path.name.startswith("."):
                out.setdefault(path.parent.name, set()).add(path.name.removesuffix(".json.gz"))
        return out

    def save(self, unit: Unit, path: str, pages: list[bytes]) -> None:
        """Keep every page of `unit` as received, gzip-compressed, in one atomic file."""
        head = {
            "endpoint_id": unit.endpoint_id,
            "path": path,
            "params": unit.params,
            "fetched_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        # the page bodies are valid JSON already: splice them in as received instead of re-encoding
        payload = (
            json.dumps(head, ensure_ascii=False)[:-1].encode() + b', "pages": [' + b",".join(pages) + b"]}"
        )
        write_atomic(self.unit_path(unit.part, unit.uid), gzip.compress(payload, compresslevel=3))

    def rows(self, part: str, uid: str) -> list[dict[str, Any]]:
        record = json.loads(gzip.decompress(self.unit_path(part, uid).read_bytes()))
        return [row for page in record["pages"] for row in page["data"]]

    def state(self) -> dict[str, list[str]]:
        path = self.root / "state.json"
        if not path.is_file():
            return {}
        try:
            return json.loads(path.read_text())
        except ValueError:  # a torn state file only costs a rebuild
            return {}

    def save_state(self, state: dict[str, list[str]]) -> None:
        write_atomic(self.root / "state.json", json.dumps(state, indent=1, sort_keys=True).encode())


def rebuild_part(out: Path, ep: Endpoint, archive: Archive, part: str, uids: set[str]) -> int:
    """Write store part `jq-<part>` from every archived unit of that part; returns its row count."""
    rows = [row for uid in sorted(uids) for row in archive.rows(part, uid)]
    frame = rows_to_frame(ep, rows)
    if frame.height and frame.select(pl.struct(list(ep.key)).is_duplicated().any()).item():
        frame = frame.unique(subset=list(ep.key), keep="last", maintain_order=True)
    raw_store.write_endpoint(
        out, ep.endpoint_id, frame.sort(list(ep.key), nulls_last=True), part=f"jq-{part}"
    )
    state = archive.state()
    state[part] = sorted(uids)
    archive.save_state(state)
    return frame.height


def repair(out: Path, ep: Endpoint, archive: Archive) -> list[str]:
    """Rebuild parts whose archive holds units the store part does not (an earlier run was cut off)."""
    state = archive.state()
    stale = [p for p, uids in sorted(archive.units().items()) if sorted(uids) != state.get(p)]
    for part in stale:
        rebuild_part(out, ep, archive, part, archive.units()[part])
    return stale


# ---------------------------------------------------------------------------------------------- running
@dataclass
class FetchOptions:
    """Everything `fetch` needs besides the dates; built from the `fetch` config section by the CLI."""

    api_key: str
    base_url: str = DEFAULT_BASE_URL
    plan: str = "light"
    requests_per_minute: int | None = None
    rate_period_s: float = 60.0
    timeout_s: float = 30.0
    max_attempts: int = 10
    backoff_s: float = 1.0
    max_pages: int = 1000
    statements_lookback_days: int = 365

    def client(self, on_retry: Callable[[str], None] | None = None) -> JQuantsClient:
        rpm = self.requests_per_minute or PLAN_REQUESTS_PER_MINUTE[self.plan]
        return JQuantsClient(
            self.api_key,
            base_url=self.base_url,
            limiter=RateLimiter(rpm, self.rate_period_s),
            retry=RetryPolicy(max_attempts=self.max_attempts, base_s=self.backoff_s),
            timeout_s=self.timeout_s,
            max_pages=self.max_pages,
            on_retry=on_retry,
        )


class Progress:
    """What `fetch_endpoint` reports to; this base reports nowhere (library use), the CLI shows Rich bars."""

    def start(self, endpoint_id: str, total: int) -> None:
        return None

    def advance(self, endpoint_id: str, rows: int, requests: int) -> None:
        return None

    def finish(self, endpoint_id: str) -> None:
        return None

    def retry(self, message: str) -> None:
        """A request failed and is retried after a wait (`JQuantsClient`'s `on_retry`)."""
        return None


def fetch_endpoint(
    client: JQuantsClient,
    out: Path,
    endpoint_id: str,
    start: dt.date,
    end: dt.date,
    business_days: list[dt.date],
    today: dt.date,
    progress: Progress,
) -> EndpointResult:
    """Fetch the missing units of one endpoint. A J-Quants error, or a value that does not fit the schema,
    stops this endpoint only: what was fetched before it is kept and stored."""
    ep = raw_store.endpoint(endpoint_id)
    archive = Archive(out, endpoint_id)
    result = EndpointResult(endpoint_id)
    requests_before = client.stats.requests
    open_part: str | None = None
    try:
        repair(out, ep, archive)
        archived = {uid for uids in archive.units().values() for uid in uids}
        todo = plan_units(endpoint_id, start, end, business_days, archived, today)
        result.units_total = len(todo)
        progress.start(endpoint_id, len(todo))
        try:
            for unit in todo:
                if open_part is not None and unit.part != open_part:
                    rebuild_part(out, ep, archive, open_part, archive.units()[open_part])
                open_part = unit.part
                before = client.stats.requests
                bodies, rows = [], 0
                for page in client.pages(ep.v2_path, unit.params):
                    bodies.append(page.body)
                    rows += len(page.rows)
                archive.save(unit, ep.v2_path, bodies)
                result.units_fetched += 1
                result.rows_fetched += rows
                progress.advance(endpoint_id, rows, client.stats.requests - before)
        finally:  # also on an error or Ctrl-C: store what was archived of the open part
            parts = archive.units()
            if open_part is not None and open_part in parts:
                rebuild_part(out, ep, archive, open_part, parts[open_part])
    except GogookuError as err:
        result.error = str(err)
    finally:
        result.requests = client.stats.requests - requests_before
        progress.finish(endpoint_id)
    return result


def jst_today(now: Callable[[], dt.datetime] = lambda: dt.datetime.now(JST)) -> dt.date:
    return now().astimezone(JST).date()


def business_days(out: Path, start: dt.date, end: dt.date) -> tuple[list[dt.date], list[dt.date]]:
    """Trading days in [start, end]: HolidayDivision 1 or 2 of the fetched calendar, and for dates the stored
    calendar does not cover, `etl.panels.calendar.business_days` (XTKS plus outage days). Also returns the
    dates that were not covered."""
    from etl.panels.calendar import business_days as fallback_days

    covered: set[dt.date] = set()
    open_days: set[dt.date] = set()
    lf = raw_store.read_endpoint(out, CALENDAR)
    if lf is not None:
        cal = lf.filter(pl.col("Date").is_between(start, end)).collect()
        covered = set(cal["Date"].to_list())
        open_days = set(cal.filter(pl.col("HolidayDivision").is_in(["1", "2"]))["Date"].to_list())
    missing = [d for d in _days(start, end) if d not in covered]
    if missing:
        extra = fallback_days(missing[0], missing[-1]).astype(dt.date).tolist()
        open_days.update(d for d in extra if d not in covered)
    return sorted(open_days), missing


def fetch(
    options: FetchOptions,
    out: str | Path,
    start: dt.date,
    end: dt.date,
    endpoints: list[str] | None = None,
    progress: Progress | None = None,
    today: dt.date | None = None,
) -> FetchReport:
    """Fetch [start, end] of the chosen endpoints into the raw store at `out` (see the module docstring).

    The trading calendar is fetched first (other endpoints are asked by trading day); where the plan has no
    calendar, the XTKS calendar stands in. Statements are asked from `statements_lookback_days` (365) before
    `start`, as the synthetic market writes them, because year-on-year features need the previous year.
    `end` is clipped to yesterday in Tokyo: today's data is published through the evening and an incomplete
    day would otherwise be archived as final.
    """
    out = Path(out)
    progress = progress or Progress()
    today = today or jst_today()
    report = FetchReport()
    chosen = resolve_endpoints(endpoints)
    if start > end:
        raise GogookuError(f"--start {start} is after --end {end}")
    if end >= today:
        end = today - dt.timedelta(days=1)
        report.notes.append(f"end clipped to {end} (data of today, {today} JST, is not final yet)")
        if start > end:
            raise GogookuError(f"nothing to fetch: --start {start} is not before today ({today} JST)")
    needs_days = any(QUERIES[e].mode in ("daily", "weekly") for e in chosen)
    order = ([CALENDAR] if needs_days or CALENDAR in chosen else []) + [e for e in chosen if e != CALENDAR]
    foreign = [p for e in order for p in raw_store.part_files(out, e) if not p.name.startswith("jq-")]
    if foreign:
        raise GogookuError(
            f"{out} already holds data not written by fetch (e.g. {foreign[0].relative_to(out)}, from "
            "`gogooku synth`?); fetch into another folder (--out) so the two sources do not mix"
        )
    lookback = dt.timedelta(days=options.statements_lookback_days)
    first = {e: start - lookback if QUERIES[e].lookback else start for e in order}
    with options.client(on_retry=progress.retry) as client:
        days: list[dt.date] = []
        for endpoint_id in order:
            result = fetch_endpoint(client, out, endpoint_id, first[endpoint_id], end, days, today, progress)
            report.results.append(result)
            if endpoint_id == CALENDAR and needs_days:
                days, uncovered = business_days(out, min(first.values()), end)
                if any(d >= start for d in uncovered):
                    report.notes.append(
                        f"trading days of {sum(d >= start for d in uncovered)} date(s) taken from the XTKS "
                        "calendar (not in the fetched J-Quants calendar)"
                    )
        report.retries, report.waited_s = client.stats.retries, client.stats.waits_s
    return report


# ---------------------------------------------------------------------------------------------- command line
class RichProgress(Progress):
    """One Rich bar per endpoint: units done of total, rows and requests so far."""

    def __init__(self, console: Any) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Bars

        from etl.heartbeat import Heartbeat

        self.bars = Bars(
            TextColumn("{task.description:<34}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rows]:>10,} rows {task.fields[requests]:>6,} requests"),
            TimeElapsedColumn(),
            console=console,
            disable=not console.is_terminal,  # off a terminal: `Heartbeat` lines instead of bars
        )
        self.tasks: dict[str, Any] = {}
        self.heartbeat = Heartbeat(self.bars)

    def __enter__(self) -> RichProgress:
        self.bars.start()
        self.heartbeat.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.heartbeat.__exit__()
        self.bars.stop()

    def start(self, endpoint_id: str, total: int) -> None:
        self.tasks[endpoint_id] = self.bars.add_task(endpoint_id, total=total, rows=0, requests=0)

    def advance(self, endpoint_id: str, rows: int, requests: int) -> None:
        task = self.tasks[endpoint_id]
        fields = self.bars.tasks[task].fields
        self.bars.update(task, advance=1, rows=fields["rows"] + rows, requests=fields["requests"] + requests)

    def finish(self, endpoint_id: str) -> None:
        if endpoint_id in self.tasks:
            self.bars.stop_task(self.tasks[endpoint_id])

    def retry(self, message: str) -> None:
        from rich.markup import escape

        self.bars.console.print(f"[yellow]retry:[/] {escape(message)}", highlight=False)


def run_cli_fetch(config: Any, start: str, end: str, endpoints: list[str] | None, out: str) -> FetchReport:
    """`gogooku fetch`: options from the `fetch` config section, key from it or JQUANTS_API_KEY."""
    from rich.console import Console
    from rich.markup import escape

    console = Console(stderr=True, soft_wrap=True)
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k != "api_key"}
    api_key = config.api_key or os.environ.get("JQUANTS_API_KEY", "")
    if not api_key:
        raise GogookuError(
            "no J-Quants API key: set JQUANTS_API_KEY or fetch.api_key=... (see docs/fetch.md)"
        )
    options = FetchOptions(api_key=api_key, **settings)
    first, last = parse_date(start, "--start"), parse_date(end, "--end")
    chosen = resolve_endpoints(endpoints)
    rpm = options.requests_per_minute or PLAN_REQUESTS_PER_MINUTE[options.plan]
    console.print(
        f"fetching {', '.join(chosen)} for {first} .. {last} into {out} "
        f"({options.plan} plan, {rpm} requests/min)",
        markup=False,
        highlight=False,
    )
    try:
        with RichProgress(console) as progress:
            report = fetch(options, out, first, last, chosen, progress)
    except KeyboardInterrupt:
        raise GogookuError(
            "interrupted; every finished unit is kept: run the same command again to resume"
        ) from None
    for note in report.notes:
        console.print(f"note: {note}", markup=False, highlight=False)
    if report.retries:
        console.print(f"note: {report.retries} retries, {report.waited_s:.1f} s of backoff", highlight=False)
    for result in report.results:
        line = (
            f"{result.endpoint_id}: {result.units_fetched}/{result.units_total} units, "
            f"{result.rows_fetched:,} rows, {result.requests} requests"
        )
        console.print(
            escape(line) if not result.error else f"[red]{escape(line)}; stopped:[/] {escape(result.error)}",
            highlight=False,
        )
    if report.failed:
        raise GogookuError(failure_summary(report))
    return report


def failure_summary(report: FetchReport) -> str:
    """The final error line of a fetch where endpoints stopped: which, and what became of the rest."""
    failed, results = report.failed, report.results
    names = ", ".join(r.endpoint_id for r in failed)
    line = f"{len(failed)} of {len(results)} endpoint(s) stopped ({names})"
    complete = len(results) - len(failed)
    if complete:
        line += f"; the other {complete} are complete"
    units = sum(r.units_fetched for r in failed)
    if units:
        line += f"; {units} unit(s) of the stopped ones were fetched and are kept: re-run to fetch the rest"
    elif not complete:
        line += "; nothing was fetched"
    return line
