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
from dataclasses import dataclass, field
from datetime import datetime

import anyio
import anyio.to_thread
import sqlalchemy as sa

from yunnao.registry.db import row_write
from yunnao.registry.tables import UsageRecord, utcnow

log = logging.getLogger("yunnao.usage")

_COLUMNS = (
    "at", "caller", "namespace", "name", "version", "runtime", "mode", "status",
    "latency_ms", "request_id", "error_id", "caller_node", "caller_department", "forwarded_by",
    "items",
)  # fmt: skip


@dataclass(frozen=True)
class Usage:
    namespace: str
    name: str
    version: str | None
    runtime: str | None
    mode: str  # sync | async | v2 | stream
    status: int
    latency_ms: float
    caller: str | None = None
    request_id: str | None = None
    error_id: str | None = None
    at: datetime = field(default_factory=utcnow)
    # Where the caller belongs (its node, and its department as that node vouches) and
    # the linked node that forwarded the call (None: made here), for the daily split of
    # calls into the same department, other departments and other nodes.
    caller_node: str | None = None
    caller_department: str | None = None
    forwarded_by: str | None = None
    items: int | None = None  # a streamed call's items, however it ended


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
                    self._insert(batch)
                except BaseException:
                    self._buffer.extendleft(reversed(batch))  # kept for the next try
                    raise
            return len(batch)

    def _insert(self, batch: list[Usage]) -> None:
        # One executemany straight to the driver: Core's per-row parameter processing
        # cost ~25 µs a record, held the GIL for tens of milliseconds a second under
        # load, and showed up in every call's tail latency.
        dialect = self.engine.dialect
        marks = ", ".join("?" if dialect.paramstyle == "qmark" else "%s" for _ in _COLUMNS)
        sql = f"INSERT INTO usage_record ({', '.join(_COLUMNS)}) VALUES ({marks})"
        at = UsageRecord.__table__.c.at.type.bind_processor(dialect)  # type: ignore[attr-defined]
        rows = [
            (at(u.at) if at else u.at, u.caller, u.namespace, u.name, u.version, u.runtime,
             u.mode, u.status, u.latency_ms, u.request_id, u.error_id, u.caller_node,
             u.caller_department, u.forwarded_by, u.items)
            for u in batch
        ]  # fmt: skip
        with row_write(self.engine) as conn:
            conn.exec_driver_sql(sql, rows)

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
