"""The rate limiter shared by the processes of ``serve --workers N`` on a SQLite store:
two limiters on two engines (as two processes have) draw from the same buckets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from yunnao.registry import db, migrate
from yunnao.registry.limits import Limit
from yunnao.runtimes.gateway.ratelimit import Verdict
from yunnao.runtimes.gateway.ratelimit_sqlite import SqliteLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def engines(tmp_path: Path) -> Iterator[tuple[sa.Engine, sa.Engine]]:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    first, second = db.create_engine(url), db.create_engine(url)
    migrate.upgrade(first)
    yield first, second
    first.dispose()
    second.dispose()


def test_two_limiters_on_one_store_share_the_buckets(engines) -> None:
    clock = FakeClock()
    a, b = (SqliteLimiter(engine, clock) for engine in engines)
    limit = Limit.parse("2/s burst 3")
    allowed = [(a, b)[i % 2].take([("caller:x", limit)]).allowed for i in range(6)]
    assert allowed == [True, True, True, False, False, False]  # 3 in all, not 3 each
    assert b.take([("caller:x", limit)]) == Verdict(False, 0.5, "caller:x")
    clock.now += 0.5
    assert a.take([("caller:x", limit)]).allowed
    assert not b.take([("caller:x", limit)]).allowed
    clock.now += 100  # refills to the burst, no further
    assert [a.take([("caller:x", limit)]).allowed for _ in range(4)] == [True] * 3 + [False]


def test_all_or_nothing_and_prune(engines) -> None:
    clock = FakeClock()
    limiter = SqliteLimiter(engines[0], clock)
    one, many = Limit.parse("1/min"), Limit.parse("100/s")
    assert limiter.take([("one", one), ("many", many)]).allowed
    refused = limiter.take([("many", many), ("one", one)])
    assert not refused.allowed and refused.key == "one"
    # "many" was not charged by the refusal: it is one token short of its burst only.
    clock.now += 0.01
    assert limiter.prune(idle_seconds=0) == 1  # "many" is full again; "one" is not
    assert not limiter.take([("one", one)]).allowed  # still remembered
    assert limiter.take([]) == Verdict(True, 0.0, "")
