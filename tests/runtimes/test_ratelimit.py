"""Token-bucket rate limits: the spec syntax, and the same behaviour from the in-memory
limiter (fake clock) and the PostgreSQL one (a real server, real OS processes)."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.realservers import free_port
from tests.realservers.postgres import PostgresServer
from yunnao.registry import db
from yunnao.runtimes.gateway.ratelimit import (
    Limit,
    MemoryLimiter,
    PostgresLimiter,
    RateLimiter,
    Verdict,
    limiter_for,
)

DAY = 86400.0
SLOW = Limit.parse("1/day")  # refills 1/86400 of a token a second: none during a test
FAST = Limit.parse("1000000000/s burst 1")  # full again a nanosecond after each take

pg = [pytest.mark.postgres, pytest.mark.slow]


# --- the spec --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "rate", "burst"),
    [
        ("100/min", 100 / 60, 100),
        ("1/s", 1, 1),
        ("5/sec", 5, 5),
        ("5/second", 5, 5),
        ("30/m", 0.5, 30),
        ("30/minute", 0.5, 30),
        ("3600/h", 1, 3600),
        ("7200/hour", 2, 7200),
        ("1/d", 1 / DAY, 1),
        ("86400/day", 1, 86400),
        ("10/s burst 50", 10, 50),
        ("  10 / s   burst   50  ", 10, 50),
        ("10/S BURST 5", 10, 5),
        ("1000000000/s", 1e9, 1e9),
    ],
)
def test_parse_accepts_the_documented_forms(text: str, rate: float, burst: float) -> None:
    limit = Limit.parse(text)
    assert limit.rate == pytest.approx(rate)
    assert limit.burst == burst
    assert limit.text == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "100",
        "/min",
        "100/",
        "0/s",
        "-1/s",
        "1.5/s",
        "1e3/s",
        "100/week",
        "100/mins",
        "100 per minute",
        "10/s burst",
        "10/s burst 0",
        "10/s burst 2.5",
        "10/s burst 5 burst 6",
        "10/s bursts 5",
        "1000000001/s",
        "10/s burst 1000000001",
        "١٠/s",  # Arabic-Indic digits are not N
    ],
)
def test_parse_refuses_anything_else_naming_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        Limit.parse(text)
    message = str(caught.value)
    assert repr(text) in message
    for form in ("N/UNIT", "burst B", "s, sec, second, m, min, minute, h, hour, d, day"):
        assert form in message
    assert "'100/min'" in message


def test_limit_refuses_impossible_values() -> None:
    with pytest.raises(ValueError, match="rate"):
        Limit(rate=0, burst=1, text="x")
    with pytest.raises(ValueError, match="burst"):
        Limit(rate=1, burst=0.5, text="x")


# --- both limiters ---------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Subject:
    limiter: RateLimiter
    clock: FakeClock | None  # None: the database's clock, which no test moves


@pytest.fixture
def pg_url(postgres: PostgresServer) -> Iterator[str]:
    """A fresh database on the session's PostgreSQL server."""
    from tests.conftest import _fresh_pg_database  # here, so spawned workers skip the app

    name, url = _fresh_pg_database(postgres)
    yield url
    postgres.drop_database(name)


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[sa.Engine]:
    engine = db.create_engine(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture(params=["memory", pytest.param("postgresql", marks=pg)])
def subject(request: pytest.FixtureRequest) -> Subject:
    if request.param == "memory":
        clock = FakeClock()
        return Subject(MemoryLimiter(clock), clock)
    return Subject(PostgresLimiter(request.getfixturevalue("pg_engine")), None)


def takes(limiter: RateLimiter, buckets: list[tuple[str, Limit]], times: int) -> list[bool]:
    return [limiter.take(buckets).allowed for _ in range(times)]


def test_burst_then_refusal_until_a_token_is_due(subject: Subject) -> None:
    limit = Limit.parse("1/day burst 3")
    assert takes(subject.limiter, [("k", limit)], 3) == [True] * 3
    verdict = subject.limiter.take([("k", limit)])
    assert not verdict.allowed and verdict.key == "k"
    # one token a day: the next is a day away (less what refilled during the test)
    assert DAY * 0.999 < verdict.retry_after <= DAY
    assert subject.limiter.take([("k", limit)]).retry_after <= verdict.retry_after


def test_allowed_verdict_names_the_last_bucket(subject: Subject) -> None:
    verdict = subject.limiter.take([("a", SLOW), ("b", SLOW)])
    assert verdict == Verdict(True, 0.0, "b")
    assert subject.limiter.take([]) == Verdict(True, 0.0, "")


def test_all_or_nothing_the_other_bucket_is_not_charged(subject: Subject) -> None:
    one, three = Limit.parse("1/day burst 1"), Limit.parse("1/day burst 3")
    assert subject.limiter.take([("one", one), ("three", three)]).allowed  # three: 2 left
    for order in ([("one", one), ("three", three)], [("three", three), ("one", one)]):
        refused = subject.limiter.take(order)
        assert not refused.allowed and refused.key == "one"
        assert DAY * 0.999 < refused.retry_after <= DAY
    # the refusals charged nothing: "three" still has its two tokens
    assert takes(subject.limiter, [("three", three)], 3) == [True, True, False]


def test_refusal_names_the_bucket_with_the_longest_wait(subject: Subject) -> None:
    hourly, daily = Limit.parse("1/h"), Limit.parse("1/day")
    subject.limiter.take([("hourly", hourly), ("daily", daily)])
    refused = subject.limiter.take([("hourly", hourly), ("daily", daily)])
    assert not refused.allowed and refused.key == "daily"
    assert DAY * 0.999 < refused.retry_after <= DAY
    alone = subject.limiter.take([("hourly", hourly)])
    assert alone.key == "hourly" and 3600 * 0.99 < alone.retry_after <= 3600


def test_a_key_listed_twice_is_charged_once(subject: Subject) -> None:
    two = Limit.parse("1/day burst 2")
    assert subject.limiter.take([("k", two), ("k", two)]).allowed
    assert takes(subject.limiter, [("k", two)], 2) == [True, False]


def test_bad_keys_are_refused(subject: Subject) -> None:
    for key in ("", "k" * 401):
        with pytest.raises(ValueError, match="key"):
            subject.limiter.take([(key, SLOW)])
    assert subject.limiter.take([("k" * 400, SLOW)]).allowed


def test_prune_forgets_only_buckets_full_for_that_long(subject: Subject) -> None:
    subject.limiter.take([("fast", FAST), ("slow", SLOW)])
    if subject.clock:
        subject.clock.now += 0.001
    assert subject.limiter.prune(idle_seconds=3600) == 0  # "fast" full only for ~0 s
    assert subject.limiter.prune(idle_seconds=0) == 1  # "fast" full now; "slow" in a day
    assert subject.limiter.prune(idle_seconds=0) == 0
    assert not subject.limiter.take([("slow", SLOW)]).allowed  # still remembered
    assert subject.limiter.take([("fast", FAST)]).allowed


# --- the in-memory limiter -------------------------------------------------------------


def test_memory_refill_follows_the_clock() -> None:
    clock = FakeClock()
    limiter = MemoryLimiter(clock)
    limit = Limit.parse("2/s burst 3")
    assert takes(limiter, [("k", limit)], 3) == [True] * 3
    assert limiter.take([("k", limit)]) == Verdict(False, 0.5, "k")
    clock.now += 0.25
    assert limiter.take([("k", limit)]) == Verdict(False, 0.25, "k")
    clock.now += 0.25
    assert takes(limiter, [("k", limit)], 2) == [True, False]
    clock.now += 100  # refills to the burst, no further
    assert takes(limiter, [("k", limit)], 4) == [True] * 3 + [False]


def test_memory_prune_waits_until_full_for_idle_seconds() -> None:
    clock = FakeClock()
    limiter = MemoryLimiter(clock)
    limit = Limit.parse("1/s burst 2")
    limiter.take([("early", limit)])  # one token short: full again 1 s later
    clock.now += 8
    limiter.take([("late", limit)])
    clock.now += 2  # "early" full for 9 s, "late" for 1 s
    assert limiter.prune(idle_seconds=5) == 1
    assert takes(limiter, [("early", limit)], 3) == [True, True, False]


def test_memory_limiter_is_exact_under_threads() -> None:
    limiter = MemoryLimiter()
    limit = Limit.parse("100/day")
    start = threading.Barrier(8)
    allowed: list[int] = []

    def worker() -> None:
        start.wait()
        allowed.append(sum(takes(limiter, [("shared", limit)], 50)))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(allowed) == 8 and sum(allowed) == 100


def test_limiter_for_picks_by_dialect(tmp_path: Path) -> None:
    sqlite = db.create_engine(f"sqlite:///{tmp_path / 'r.db'}")
    assert isinstance(limiter_for(sqlite), MemoryLimiter)
    postgres = sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    assert isinstance(limiter_for(postgres), PostgresLimiter)


# --- the PostgreSQL limiter ------------------------------------------------------------


def test_postgres_unreachable_raises() -> None:
    engine = db.create_engine(f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none")
    with pytest.raises(sa.exc.OperationalError):
        PostgresLimiter(engine).take([("k", SLOW)])
    engine.dispose()


def _pg_worker(
    url: str, index: int, buckets: list[tuple[str, str]], times: int, start: Any, out: Any
) -> None:
    engine = db.create_engine(url)
    limiter = PostgresLimiter(engine)
    wanted = [(key, Limit.parse(text)) for key, text in buckets]
    with engine.connect():
        pass  # connected before the race starts
    start.wait()
    out.put((index, sum(takes(limiter, wanted, times))))
    engine.dispose()


def _race(url: str, buckets: list[list[tuple[str, str]]], times: int) -> list[int]:
    """Each list of buckets taken ``times`` times by its own spawned process, all at once:
    how many takes each process was allowed."""
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Barrier(len(buckets)), ctx.Queue()
    procs = [
        ctx.Process(target=_pg_worker, args=(url, i, b, times, start, out))
        for i, b in enumerate(buckets)
    ]
    for proc in procs:
        proc.start()
    try:
        counts = dict(out.get(timeout=60) for _ in procs)
    finally:
        for proc in procs:
            proc.join(timeout=30)
    assert [proc.exitcode for proc in procs] == [0] * len(procs)
    return [counts[i] for i in range(len(procs))]


@pytest.mark.postgres
@pytest.mark.slow
def test_postgres_buckets_are_shared_across_processes(pg_url: str) -> None:
    counts = _race(pg_url, [[("shared", "100/day")]] * 4, 50)
    assert sum(counts) == 100, counts


@pytest.mark.postgres
@pytest.mark.slow
def test_postgres_all_or_nothing_holds_under_contention(pg_url: str, pg_engine: sa.Engine) -> None:
    # Each process takes from the shared bucket and its own: own buckets may be charged
    # only for the takes the shared bucket allowed.
    own = [[("shared", "100/day"), (f"own{i}", "40/day")] for i in range(4)]
    counts = _race(pg_url, own, 50)
    assert sum(counts) == 100, counts
    limiter = PostgresLimiter(pg_engine)
    for i, count in enumerate(counts):
        assert sum(takes(limiter, [(f"own{i}", Limit.parse("40/day"))], 41)) == 40 - count
