"""The v2 transport against the local fake server: pages, rate limit, retries and the errors a user sees."""

from __future__ import annotations

import datetime as dt
import random

import pytest
from fake_jquants import FakeJQuants, FakeState, Fault, max_in_window
from hypothesis import given, settings
from hypothesis import strategies as st

from etl.errors import GogookuError
from etl.sources.jquants_http import (
    AuthError,
    JQuantsClient,
    JQuantsError,
    PlanRangeError,
    RateLimiter,
    RetryExhaustedError,
    RetryPolicy,
    parse_retry_after,
)

BARS = "/equities/bars/daily"


def _bars(n: int, day: str = "2024-01-05") -> list[dict]:
    return [{"Date": day, "Code": f"{1000 + i}0", "O": 100.0 + i, "C": 101.0} for i in range(n)]


class VirtualClock:
    """A clock whose sleep advances time instantly, recording each wait."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.sleeps.append(seconds)
        self.now += seconds


@settings(max_examples=60, deadline=None)
@given(
    limit=st.integers(1, 8),
    gaps=st.lists(st.floats(0.0, 30.0, allow_nan=False), min_size=1, max_size=60),
)
def test_rate_limiter_never_exceeds_limit_in_any_window(limit, gaps):
    clock = VirtualClock()
    limiter = RateLimiter(limit, 60.0, clock=clock, sleep=clock.sleep)
    sent = []
    for gap in gaps:
        clock.now += gap
        limiter.acquire()
        sent.append(clock.now)
    assert max_in_window(sent, 60.0) <= limit
    # and it does not wait needlessly: a request goes out as soon as the window allows
    if len(gaps) <= limit:
        assert clock.sleeps == []


def test_rate_limiter_hand_worked_schedule():
    clock = VirtualClock()
    limiter = RateLimiter(2, 60.0, clock=clock, sleep=clock.sleep)
    for _ in range(5):
        limiter.acquire()
    # two at t=0, the third waits for the first to leave the window (t=60), and so on
    assert clock.now == 120.0
    assert clock.sleeps == [60.0, 60.0]


def test_retry_delay_is_exponential_with_jitter_and_honours_retry_after():
    policy = RetryPolicy(base_s=1.0, max_backoff_s=8.0, max_retry_after_s=300.0)
    rng = random.Random(0)
    for attempt, ceiling in [(0, 1.0), (1, 2.0), (2, 4.0), (3, 8.0), (6, 8.0)]:
        delays = [policy.delay(attempt, None, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 100  # jittered, not a constant
    assert 30.0 <= policy.delay(0, 30.0, rng) <= 30.1
    assert 300.0 <= policy.delay(0, 10_000.0, rng) <= 300.1  # capped


def test_parse_retry_after():
    now = dt.datetime(2025, 1, 1, 0, 0, 0, tzinfo=dt.UTC)
    assert parse_retry_after("7", now) == 7.0
    assert parse_retry_after("Wed, 01 Jan 2025 00:00:30 GMT", now) == 30.0
    assert parse_retry_after("Tue, 31 Dec 2024 23:00:00 GMT", now) == 0.0
    assert parse_retry_after(None, now) is None
    assert parse_retry_after("soon", now) is None


def _client(fake: FakeJQuants, sleeps: list[float] | None = None, **kw) -> JQuantsClient:
    kw.setdefault("limiter", RateLimiter(1000, 1.0))
    kw.setdefault("retry", RetryPolicy(max_attempts=4, base_s=0.01, max_backoff_s=0.05))
    record = sleeps.append if sleeps is not None else (lambda s: None)
    return JQuantsClient("test-key", base_url=fake.base_url, sleep=record, rng=random.Random(1), **kw)


def _all_rows(client: JQuantsClient, path: str, params: dict) -> list[dict]:
    return [row for page in client.pages(path, params) for row in page.rows]


def test_pages_are_followed_with_the_identical_query_plus_key():
    state = FakeState(rows={BARS: _bars(23) + _bars(4, "2024-01-09")}, page_size=5)
    with FakeJQuants(state) as fake, _client(fake) as client:
        rows = _all_rows(client, BARS, {"date": "2024-01-05"})
    assert [r["Code"] for r in rows] == [f"{1000 + i}0" for i in range(23)]
    log = state.served()
    assert len(log) == 5  # ceil(23 / 5)
    assert all(r.params["date"] == "2024-01-05" for r in log)
    assert [r.params.get("pagination_key") for r in log][:2] == [None, "5.23."]


def test_repeated_pagination_key_stops_instead_of_looping():
    state = FakeState(rows={BARS: _bars(12)}, page_size=5, faults=[Fault("repeat_key"), Fault("repeat_key")])
    with FakeJQuants(state) as fake, _client(fake) as client:
        with pytest.raises(JQuantsError, match="pagination_key '5.12.' twice"):
            _all_rows(client, BARS, {"date": "2024-01-05"})


def test_page_cap():
    state = FakeState(rows={BARS: _bars(12)}, page_size=5)
    with FakeJQuants(state) as fake, _client(fake, max_pages=2) as client:
        with pytest.raises(JQuantsError, match="more than 2 pages"):
            _all_rows(client, BARS, {"date": "2024-01-05"})


@pytest.mark.parametrize(
    "fault",
    [
        Fault("429", retry_after="0.2"),
        Fault("429"),
        Fault("500"),
        Fault("disconnect"),
        Fault("truncate"),
        Fault("slow", delay_s=0.5),
    ],
    ids=["429-retry-after", "429-bare", "500", "disconnect", "truncate", "slow"],
)
def test_transient_failures_are_retried(fault):
    state = FakeState(rows={BARS: _bars(7)}, page_size=5, faults=[fault])
    sleeps: list[float] = []
    with FakeJQuants(state) as fake, _client(fake, sleeps, timeout_s=0.2) as client:
        rows = _all_rows(client, BARS, {"date": "2024-01-05"})
        stats = client.stats
    assert len(rows) == 7
    assert stats.retries == 1 and stats.requests == 3
    if fault.retry_after is not None:
        assert 0.2 <= sleeps[0] <= 0.2 + 0.001 + 1e-9  # Retry-After wins over the backoff
    else:
        assert 0.005 <= sleeps[0] <= 0.01  # first backoff: [base/2, base]


def test_retries_give_up_with_a_message():
    state = FakeState(rows={BARS: _bars(3)}, faults=[Fault("500") for _ in range(4)])
    sleeps: list[float] = []
    with FakeJQuants(state) as fake, _client(fake, sleeps) as client:
        with pytest.raises(
            RetryExhaustedError, match=r"gave up after 4 attempts, last: HTTP 500: Unexpected"
        ):
            _all_rows(client, BARS, {"date": "2024-01-05"})
    assert len(state.served()) == 4 and len(sleeps) == 3
    assert sleeps[0] < sleeps[2]  # backoff grows (ceilings 0.01, 0.02, 0.04 with jitter in [c/2, c])


def test_each_retry_is_reported_before_its_wait():
    state = FakeState(rows={BARS: _bars(3)}, faults=[Fault("500") for _ in range(4)])
    sleeps: list[float] = []
    heard: list[str] = []

    def on_retry(message: str) -> None:
        assert len(sleeps) == len(heard)  # told before the wait starts
        heard.append(message)

    with FakeJQuants(state) as fake, _client(fake, sleeps, on_retry=on_retry) as client:
        with pytest.raises(RetryExhaustedError):
            _all_rows(client, BARS, {"date": "2024-01-05"})
    assert len(heard) == len(sleeps) == 3
    for i, (message, wait) in enumerate(zip(heard, sleeps, strict=True), start=1):
        assert message.startswith(f"{BARS} date=2024-01-05: HTTP 500: ")
        assert message.endswith(f"; retry {i} of 3 in {wait:.1f} s")


def test_plan_range_400_is_not_retried_and_names_the_window():
    state = FakeState(rows={BARS: _bars(3)}, plan_window=("2023-06-01", "2025-05-31"))
    with FakeJQuants(state) as fake, _client(fake) as client:
        with pytest.raises(PlanRangeError) as info:
            _all_rows(client, BARS, {"date": "2020-01-06"})
    assert (info.value.first, info.value.last) == ("2023-06-01", "2025-05-31")
    assert "plan, which covers 2023-06-01 ~ 2025-05-31" in str(info.value)
    assert len(state.served()) == 1


@pytest.mark.parametrize("status", [401, 403])
def test_bad_key_message(status):
    state = FakeState(rows={BARS: _bars(3)}, bad_key_status=status)
    with FakeJQuants(state) as fake:
        client = JQuantsClient("wrong", base_url=fake.base_url, sleep=lambda s: None)
        with pytest.raises(AuthError, match="JQUANTS_API_KEY") as info:
            _all_rows(client, BARS, {"date": "2024-01-05"})
        client.close()
    assert f"({status}: The incoming token is invalid or expired.)" in str(info.value)
    assert isinstance(info.value, GogookuError) and len(state.served()) == 1


def test_endpoint_not_in_plan_message():
    state = FakeState(rows={BARS: _bars(3)}, forbidden={"/markets/margin-alert"})
    with FakeJQuants(state) as fake, _client(fake) as client:
        with pytest.raises(AuthError, match="this endpoint is not in your plan"):
            _all_rows(client, "/markets/margin-alert", {"date": "2024-01-05"})
        assert len(_all_rows(client, BARS, {"date": "2024-01-05"})) == 3  # the other endpoints still work


def test_missing_key_is_a_user_error():
    with pytest.raises(GogookuError, match="JQUANTS_API_KEY"):
        JQuantsClient("")


def test_real_request_rate_stays_under_the_limit():
    """Real time, scaled down: 5 requests per 0.4 s, 14 requests; the server's arrival log must agree."""
    state = FakeState(rows={BARS: _bars(3)})
    with FakeJQuants(state) as fake, _client(fake, limiter=RateLimiter(5, 0.4)) as client:
        for _ in range(14):
            _all_rows(client, BARS, {"date": "2024-01-05"})
    arrivals = [r.at for r in state.served()]
    assert len(arrivals) == 14
    # arrival times jitter by the request's own latency; a window a little shorter than the period must hold
    assert max_in_window(arrivals, 0.4 - 0.05) <= 5
    assert arrivals[-1] - arrivals[0] >= 0.8 - 0.05  # 14 requests need at least two full windows
