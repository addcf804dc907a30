"""J-Quants v2 transport: `x-api-key` auth, rows under `"data"`, `pagination_key` pages, a per-plan rate
limiter and retries with exponential backoff and jitter.

Kept free of storage concerns so it can be tested alone against the fake server in `tests/fake_jquants.py`.
Errors a user can act on are `GogookuError`s whose message names the endpoint and what to do.
"""

from __future__ import annotations

import collections
import datetime as dt
import email.utils
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from etl.errors import GogookuError

DEFAULT_BASE_URL = "https://api.jquants.com/v2"
PLAN_REQUESTS_PER_MINUTE = {"free": 5, "light": 60, "standard": 120, "premium": 500}

_PLAN_RANGE_RE = re.compile(r"(\d{4}-\d{2}-\d{2})\s*~\s*(\d{4}-\d{2}-\d{2})?")


class JQuantsError(GogookuError):
    """A request that failed for good; the message says why and what to do."""


class AuthError(JQuantsError):
    """401/403: the key is wrong, or the endpoint is not in the plan. Other endpoints may still work."""


class PlanRangeError(JQuantsError):
    """400 "Your subscription covers the following dates: A ~ B": retrying cannot help."""

    def __init__(self, message: str, first: str | None, last: str | None):
        super().__init__(message)
        self.first = first
        self.last = last


class RetryExhaustedError(JQuantsError):
    """429/5xx/timeouts/disconnects kept coming after every retry."""


class RateLimiter:
    """At most `max_requests` in any window of `period_s` seconds (sliding window over send times).

    A sliding window, not a token bucket with a burst, because J-Quants blocks a key for ~5 minutes after a
    sustained excess: the guarantee must hold for every window, not on average. Clock and sleep are
    injectable so tests run in virtual time.
    """

    def __init__(
        self,
        max_requests: int,
        period_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if max_requests < 1 or period_s <= 0:
            raise GogookuError(
                f"rate limit must allow at least 1 request per {period_s}s (got {max_requests})"
            )
        self.max_requests = max_requests
        self.period_s = period_s
        self._clock = clock
        self._sleep = sleep
        self._sent: collections.deque[float] = collections.deque()

    def acquire(self) -> None:
        """Block until one more request fits in the window, then record it as sent now."""
        while True:
            now = self._clock()
            while self._sent and self._sent[0] + self.period_s <= now:  # same expression as the wait
                self._sent.popleft()
            if len(self._sent) < self.max_requests:
                self._sent.append(now)
                return
            self._sleep(self._sent[0] + self.period_s - now)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter for 429, 5xx, timeouts and dropped connections."""

    max_attempts: int = 10  # default waits add up to 3-6 min: the length of a J-Quants 429 block (~5 min)
    base_s: float = 1.0
    max_backoff_s: float = 120.0
    max_retry_after_s: float = 330.0  # a sustained excess blocks the key for ~5 minutes

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait before attempt `attempt + 1` (attempt counts from 0)."""
        if retry_after is not None:
            return min(retry_after, self.max_retry_after_s) + rng.uniform(0.0, self.base_s * 0.1)
        ceiling = min(self.max_backoff_s, self.base_s * 2.0**attempt)
        return rng.uniform(ceiling / 2.0, ceiling)  # "equal jitter": never zero, spreads retries


def parse_retry_after(value: str | None, now: dt.datetime | None = None) -> float | None:
    """`Retry-After` as seconds (delta-seconds or an HTTP date); None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    now = now or dt.datetime.now(dt.UTC)
    return max(0.0, (when - now).total_seconds())


@dataclass
class Page:
    """One response page: its rows (v2 field names) and the decoded JSON body as received, for the archive."""

    rows: list[dict[str, Any]]
    body: bytes


@dataclass
class ClientStats:
    """Counters shown on the progress bar and in the summary."""

    requests: int = 0
    retries: int = 0
    waits_s: float = 0.0


def _server_message(response: httpx.Response) -> str:
    try:
        payload = response.json()
    except ValueError:
        return response.text.strip()[:200]
    if isinstance(payload, dict) and "message" in payload:
        return str(payload["message"])
    return response.text.strip()[:200]


class JQuantsClient:
    """A thin synchronous v2 client. One instance per run; all requests share one rate limiter.

    `on_retry(message)` hears of every retry before its wait (what failed, which retry, how long): with the
    default policy a dead network is minutes of waits, which a user must see."""

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        limiter: RateLimiter | None = None,
        retry: RetryPolicy | None = None,
        timeout_s: float = 30.0,
        max_pages: int = 1000,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        on_retry: Callable[[str], None] | None = None,
    ):
        if not api_key:
            raise GogookuError(
                "no J-Quants API key: set JQUANTS_API_KEY or fetch.api_key (from the J-Quants dashboard)"
            )
        self.base_url = base_url.rstrip("/")
        self.limiter = limiter or RateLimiter(PLAN_REQUESTS_PER_MINUTE["light"])
        self.retry = retry or RetryPolicy()
        self.max_pages = max_pages
        self.stats = ClientStats()
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._on_retry = on_retry
        self._http = httpx.Client(
            headers={"x-api-key": api_key, "Accept-Encoding": "gzip"},
            timeout=httpx.Timeout(timeout_s),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> JQuantsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pages(self, path: str, params: dict[str, str]) -> Iterator[Page]:
        """Yield every page of `GET path?params`, following `pagination_key` until it is absent.

        A repeated key (the server looping) or more than `max_pages` pages stops with an error rather than
        fetching forever.
        """
        seen: set[str] = set()
        query = dict(params)
        for _ in range(self.max_pages):
            page, key = self._get_page(path, query)
            yield page
            if not key:
                return
            if key in seen:
                raise JQuantsError(
                    f"{path} {_fmt(params)}: J-Quants sent pagination_key {key!r} twice; stopped to avoid "
                    "a loop (re-run later)"
                )
            seen.add(key)
            query = {**params, "pagination_key": key}
        raise JQuantsError(
            f"{path} {_fmt(params)}: more than {self.max_pages} pages; narrow the date range or raise "
            "fetch.max_pages"
        )

    def _get_page(self, path: str, params: dict[str, str]) -> tuple[Page, str | None]:
        """One page with retries; returns the page and the next pagination_key (None on the last page)."""
        url = f"{self.base_url}{path}"
        last_problem = ""
        for attempt in range(self.retry.max_attempts):
            retry_after: float | None = None
            self.limiter.acquire()
            self.stats.requests += 1
            try:
                response = self._http.get(url, params=params)
            except httpx.TimeoutException:
                last_problem = "timed out"
            except httpx.TransportError as err:
                last_problem = f"connection problem ({type(err).__name__})"
            else:
                status = response.status_code
                if status == 200:
                    try:
                        payload = response.json()
                    except ValueError:
                        payload = None
                    if isinstance(payload, dict) and isinstance(payload.get("data"), list):
                        key = payload.get("pagination_key") or None
                        return Page(rows=payload["data"], body=response.content), key
                    last_problem = "incomplete or malformed response body"
                elif status == 429 or status >= 500:
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
                    last_problem = f"HTTP {status}: {_server_message(response)}"
                else:
                    raise self._final_error(path, params, response)
            if attempt + 1 < self.retry.max_attempts:
                wait = self.retry.delay(attempt, retry_after, self._rng)
                self.stats.retries += 1
                self.stats.waits_s += wait
                if self._on_retry is not None:
                    self._on_retry(
                        f"{path} {_fmt(params)}: {last_problem}; retry {attempt + 1} of "
                        f"{self.retry.max_attempts - 1} in {wait:.1f} s"
                    )
                self._sleep(wait)
        raise RetryExhaustedError(
            f"{path} {_fmt(params)}: gave up after {self.retry.max_attempts} attempts, last: {last_problem} "
            "(re-run to resume; fetched data is kept)"
        )

    def _final_error(self, path: str, params: dict[str, str], response: httpx.Response) -> JQuantsError:
        """The error for a status that retrying cannot fix."""
        status = response.status_code
        message = _server_message(response)
        where = f"{path} {_fmt(params)}"
        if status == 400 and "covers the following dates" in message:
            found = _PLAN_RANGE_RE.search(message)
            first, last = (found.group(1), found.group(2)) if found else (None, None)
            window = f"{first} ~ {last or 'today'}" if first else "a limited window"
            return PlanRangeError(
                f"{where}: outside your J-Quants plan, which covers {window}; fetch within that range "
                "(--start/--end) or upgrade the plan",
                first,
                last,
            )
        if status == 401:
            return AuthError(
                f"{where}: J-Quants rejected the API key (401: {message}); check JQUANTS_API_KEY or "
                "fetch.api_key"
            )
        if status == 403:
            lowered = message.lower()
            if "subscription" in lowered and "not available" in lowered:
                hint = "this endpoint is not in your plan"
            elif "invalid" in lowered or "expired" in lowered or "missing" in lowered:
                hint = "the API key is invalid; check JQUANTS_API_KEY or fetch.api_key"
            elif "no active subscription" in lowered:
                hint = "the account has no active subscription"
            else:
                hint = "bad API key or endpoint not in your plan"
            return AuthError(f"{where}: J-Quants refused access (403: {message}); {hint}")
        if status == 413:
            return JQuantsError(f"{where}: response too large (413); narrow the query")
        return JQuantsError(f"{where}: HTTP {status}: {message}")


def _fmt(params: dict[str, str]) -> str:
    return "&".join(f"{k}={v}" for k, v in params.items() if k != "pagination_key") or "(no params)"
