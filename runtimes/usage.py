"""Usage records: one row per invocation (caller, capability, version, runtime, status,
latency), for usage statistics and assessment.

Calls append to an in-memory buffer that a background task writes in batches, so an
invocation never waits for a database write. The cost: records of the last second
before a crash can be lost (a clean shutdown flushes them).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import asdict, dataclass, field
from datetime import datetime

import anyio
import anyio.to_thread
import sqlalchemy as sa

from yunnao.registry.db import row_write
from yunnao.registry.tables import UsageRecord, utcnow

log = logging.getLogger("yunnao.usage")


@dataclass(frozen=True)
class Usage:
    namespace: str
    name: str
    version: str | None
    runtime: str | None
    mode: str  # sync | async | v2
    status: int
    latency_ms: float
    caller: str | None = None
    request_id: str | None = None
    error_id: str | None = None
    at: datetime = field(default_factory=utcnow)


class UsageLog:
    """Buffered writer of :class:`Usage` records."""

    def __init__(self, engine: sa.Engine, *, max_buffer: int = 100_000) -> None:
        self.engine = engine
        self._buffer: deque[Usage] = deque(maxlen=max_buffer)
        self._flush_lock = threading.Lock()

    def record(self, usage: Usage) -> None:
        self._buffer.append(usage)

    def flush(self) -> int:
        """Write what is buffered; the number of records written."""
        with self._flush_lock:
            batch = []
            while self._buffer:
                batch.append(self._buffer.popleft())
            if batch:
                try:
                    with row_write(self.engine) as conn:
                        conn.execute(sa.insert(UsageRecord), [asdict(u) for u in batch])
                except BaseException:
                    self._buffer.extendleft(reversed(batch))  # kept for the next try
                    raise
            return len(batch)

    async def run(self, every: float = 1.0) -> None:
        """Flush every ``every`` seconds until cancelled (then flush once more)."""
        try:
            while True:
                await anyio.sleep(every)
                try:
                    await anyio.to_thread.run_sync(self.flush)
                except sa.exc.SQLAlchemyError:
                    log.exception("could not write usage records; will retry")
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.flush)
