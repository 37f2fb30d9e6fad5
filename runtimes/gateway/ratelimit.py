"""Token-bucket rate limits: ``"100/min"``, ``"10/s burst 50"``.

A bucket holds up to ``burst`` tokens and refills at ``rate`` tokens a second; a call
takes one token from each of its buckets, all or nothing. :class:`MemoryLimiter` keeps
the buckets in this process (SQLite nodes). :class:`PostgresLimiter` keeps them in the
``rate_bucket`` table, so every gateway process sharing the database shares them: one
statement per take (autocommit, database clock), rows locked in key order.

A bucket is stored as ``(tokens, stamp)``: its level at time t is
``min(burst, tokens + (t - stamp) * rate)``. A take writes ``tokens = burst`` and
``stamp`` = when the bucket will be full again (the same line, anchored at its top), so
prune finds buckets full for a while without knowing their limits.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import sqlalchemy as sa

from yunnao.registry.limits import Limit

MAX_KEY_LENGTH = 400


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after: float  # seconds until one token is available (0.0 when allowed)
    key: str  # the bucket that decided (the refusing one, or the last checked)


class RateLimiter(Protocol):
    def take(self, buckets: Sequence[tuple[str, Limit]]) -> Verdict:
        """Take one token from each bucket, all or nothing. When refused, no bucket is
        charged and the verdict names the refusing bucket with the largest retry_after
        (the first such in ``buckets``). A key listed twice counts once, with its first
        limit. An empty sequence is allowed."""
        ...

    def prune(self, idle_seconds: float = 86400) -> int:
        """Forget buckets that have been full for ``idle_seconds``; how many."""
        ...


def _distinct(buckets: Sequence[tuple[str, Limit]]) -> dict[str, Limit]:
    wanted: dict[str, Limit] = {}
    for key, limit in buckets:
        if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_LENGTH:
            raise ValueError(f"rate bucket key must be 1 to {MAX_KEY_LENGTH} characters")
        wanted.setdefault(key, limit)
    return wanted


def _decide(wanted: dict[str, Limit], levels: dict[str, float]) -> Verdict:
    """The verdict for buckets holding ``levels`` tokens (already refilled)."""
    refusal: Verdict | None = None
    for key, limit in wanted.items():
        if levels[key] < 1:
            wait = (1 - levels[key]) / limit.rate
            if refusal is None or wait > refusal.retry_after:
                refusal = Verdict(False, wait, key)
    return refusal or Verdict(True, 0.0, next(reversed(wanted)))


class MemoryLimiter:
    """Buckets in this process's memory; thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, stamp)

    def take(self, buckets: Sequence[tuple[str, Limit]]) -> Verdict:
        wanted = _distinct(buckets)
        if not wanted:
            return Verdict(True, 0.0, "")
        with self._lock:
            now = self._clock()
            levels = {}
            for key, limit in wanted.items():
                tokens, stamp = self._buckets.get(key, (limit.burst, now))
                levels[key] = min(limit.burst, tokens + (now - stamp) * limit.rate)
            verdict = _decide(wanted, levels)
            if verdict.allowed:
                for key, limit in wanted.items():
                    full_at = now + (limit.burst - (levels[key] - 1)) / limit.rate
                    self._buckets[key] = (limit.burst, full_at)
            return verdict

    def prune(self, idle_seconds: float = 86400) -> int:
        with self._lock:
            cutoff = self._clock() - idle_seconds
            idle = [key for key, (_, full_at) in self._buckets.items() if full_at <= cutoff]
            for key in idle:
                del self._buckets[key]
            return len(idle)


# Lock the existing buckets in key order, refill them, and charge them all only if all
# have a token. Autocommit makes it one transaction holding the row locks for one
# statement only; losing its commit in a database crash costs nothing worth an fsync.
# ``locked`` holds fewer rows than asked when buckets are missing: nothing is charged,
# and the caller creates them and asks again. A clock read before waiting for a lock
# only undercounts the refill: the stored line stays valid at any time.
_TAKE = sa.text("""\
WITH req AS (
    SELECT r.key, r.rate, r.burst
    FROM unnest(CAST(:keys AS text[]), CAST(:rates AS float8[]), CAST(:bursts AS float8[]))
        AS r(key, rate, burst)
), clock AS (
    SELECT extract(epoch FROM clock_timestamp())::float8 AS now,
           set_config('synchronous_commit', 'off', true) AS sync
), locked AS (
    SELECT b.key, r.rate, r.burst, c.now,
           least(r.burst, b.tokens + (c.now - b.stamp) * r.rate) AS tokens
    FROM rate_bucket AS b JOIN req AS r ON r.key = b.key CROSS JOIN clock AS c
    ORDER BY b.key
    FOR UPDATE OF b
), verdict AS (
    SELECT count(*) = :n AND coalesce(bool_and(tokens >= 1), false) AS ok FROM locked
), charged AS (
    UPDATE rate_bucket AS b
    SET tokens = l.burst, stamp = l.now + (l.burst - (l.tokens - 1)) / l.rate
    FROM locked AS l, verdict AS v
    WHERE b.key = l.key AND v.ok
    RETURNING b.key
)
SELECT l.key, l.tokens, (SELECT ok FROM verdict) AS ok FROM locked AS l""")

_CREATE = sa.text("""\
INSERT INTO rate_bucket (key, tokens, stamp)
SELECT r.key, r.burst, c.now
FROM unnest(CAST(:keys AS text[]), CAST(:bursts AS float8[])) AS r(key, burst),
     (SELECT extract(epoch FROM clock_timestamp())::float8 AS now) AS c
ON CONFLICT (key) DO NOTHING""")

_PRUNE = sa.text(
    "DELETE FROM rate_bucket WHERE stamp <= extract(epoch FROM clock_timestamp()) - :idle"
)

_T = TypeVar("_T")


class PostgresLimiter:
    """Buckets in PostgreSQL's ``rate_bucket`` table (migration 0006). One statement per
    take once a bucket exists (two more the first time). Database errors propagate."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def take(self, buckets: Sequence[tuple[str, Limit]]) -> Verdict:
        wanted = _distinct(buckets)
        if not wanted:
            return Verdict(True, 0.0, "")
        params = {
            "keys": list(wanted),
            "rates": [limit.rate for limit in wanted.values()],
            "bursts": [limit.burst for limit in wanted.values()],
            "n": len(wanted),
        }

        def work(conn: sa.Connection) -> Verdict:
            for _ in range(10):
                rows = conn.execute(_TAKE, params).all()
                if len(rows) == len(wanted):
                    if rows[0].ok:
                        return Verdict(True, 0.0, next(reversed(wanted)))
                    return _decide(wanted, {row.key: row.tokens for row in rows})
                found = {row.key for row in rows}
                missing = [key for key in wanted if key not in found]
                conn.execute(
                    _CREATE, {"keys": missing, "bursts": [wanted[k].burst for k in missing]}
                )
            raise RuntimeError("rate buckets vanished ten times while being created")

        return self._run(work)

    def prune(self, idle_seconds: float = 86400) -> int:
        return self._run(lambda conn: conn.execute(_PRUNE, {"idle": float(idle_seconds)}).rowcount)

    def _run(self, work: Callable[[sa.Connection], _T]) -> _T:
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            return work(conn)


def limiter_for(engine: sa.Engine) -> RateLimiter:
    """Shared buckets on PostgreSQL, this process's own otherwise."""
    if engine.dialect.name == "postgresql":
        return PostgresLimiter(engine)
    return MemoryLimiter()
