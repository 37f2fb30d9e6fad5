"""Token buckets shared by the processes of ``yunnao serve --workers N`` on SQLite.

A single-process SQLite node keeps its buckets in memory
(:class:`~.ratelimit.MemoryLimiter`); with several processes on one SQLite store each
would keep its own and a caller would get N times the limit. :class:`SqliteLimiter`
keeps them in the store's ``rate_bucket`` table instead: one ``BEGIN IMMEDIATE``
transaction per take (read the buckets, decide, write them back), serialized with the
store's other writers, by the machine's wall clock (every process runs on the same
machine). WAL with ``synchronous=NORMAL`` makes it a write without an fsync; a crash
can lose the last takes, which only refills a bucket early.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import sqlalchemy as sa
from sqlalchemy.dialects.sqlite import insert

from yunnao.registry.db import row_write
from yunnao.registry.limits import Limit
from yunnao.registry.tables import RateBucket

from .ratelimit import Verdict, _decide, _distinct

_bucket = RateBucket.__table__  # type: ignore[attr-defined]


class SqliteLimiter:
    """Buckets in a SQLite store's ``rate_bucket`` table, shared by its processes."""

    def __init__(self, engine: sa.Engine, clock: Callable[[], float] = time.time) -> None:
        self.engine = engine
        self._clock = clock

    def take(self, buckets: Sequence[tuple[str, Limit]]) -> Verdict:
        wanted = _distinct(buckets)
        if not wanted:
            return Verdict(True, 0.0, "")
        with row_write(self.engine) as conn:
            now = self._clock()
            stored = {
                key: (tokens, stamp)
                for key, tokens, stamp in conn.execute(
                    sa.select(_bucket.c.key, _bucket.c.tokens, _bucket.c.stamp).where(
                        _bucket.c.key.in_(list(wanted))
                    )
                )
            }
            levels = {}
            for key, limit in wanted.items():
                tokens, stamp = stored.get(key, (limit.burst, now))
                levels[key] = min(limit.burst, tokens + (now - stamp) * limit.rate)
            verdict = _decide(wanted, levels)
            if verdict.allowed:
                rows = [
                    {
                        "key": key,
                        "tokens": limit.burst,
                        "stamp": now + (limit.burst - (levels[key] - 1)) / limit.rate,
                    }
                    for key, limit in wanted.items()
                ]
                stmt = insert(_bucket)
                conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=[_bucket.c.key],
                        set_={"tokens": stmt.excluded.tokens, "stamp": stmt.excluded.stamp},
                    ),
                    rows,
                )
            return verdict

    def prune(self, idle_seconds: float = 86400) -> int:
        with row_write(self.engine) as conn:
            cutoff = self._clock() - idle_seconds
            return conn.execute(sa.delete(_bucket).where(_bucket.c.stamp <= cutoff)).rowcount
