"""Retention: usage records and audit events older than the node keeps them.

Every call leaves a usage record and an audit event at every node it passes (about
600 bytes together): a busy province writes tens of gigabytes a day. Both are kept
forever unless the operator sets a retention:

- ``usage_keep_days`` (at least :data:`USAGE_MIN_KEEP_DAYS`): raw usage records older
  than this are deleted. The assessment and the overview read the daily aggregates
  (:mod:`.usage_daily`, one row per capability and day, kept), which the rollup
  recomputes from the records of the last two days only, so deleting older records
  changes no figure; what goes is the per-call detail (``yunnao usage`` exports and the
  capability page's recent calls) beyond the retention.
- ``audit_keep_days`` (at least :data:`~.audit.MIN_KEEP_DAYS`, six months): see
  :meth:`.audit.AuditLog.prune`, which keeps the chain verifiable.

The node's leader (:mod:`.leadership`) prunes once an hour, in batches, so no write
holds the store for long.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import anyio
import anyio.to_thread
import sqlalchemy as sa

from .audit import AuditLog
from .db import row_write
from .tables import UsageRecord, utcnow

log = logging.getLogger("yunnao.registry")

USAGE_MIN_KEEP_DAYS = 7  # the rollup recomputes the last two days from the records

_usage = UsageRecord.__table__  # type: ignore[attr-defined]


def prune_usage(engine: sa.Engine, before: datetime, *, batch: int = 20_000) -> int:
    """Delete usage records older than ``before``; the number deleted."""
    if utcnow() - before < timedelta(days=USAGE_MIN_KEEP_DAYS):
        raise ValueError(f"usage records are kept at least {USAGE_MIN_KEEP_DAYS} days")
    removed = 0
    while True:
        with row_write(engine) as conn:
            ids = sa.select(_usage.c.id).where(_usage.c.at < before).limit(batch)
            n = conn.execute(_usage.delete().where(_usage.c.id.in_(ids))).rowcount
        removed += n
        if n < batch:
            return removed


@dataclass
class Retention:
    engine: sa.Engine
    audit: AuditLog
    usage_keep_days: float | None = None
    audit_keep_days: float | None = None

    @property
    def active(self) -> bool:
        return self.usage_keep_days is not None or self.audit_keep_days is not None

    def prune(self) -> tuple[int, int]:
        """Prune both now; (usage records, audit events) removed."""
        now = utcnow()
        usage = events = 0
        if self.usage_keep_days is not None:
            usage = prune_usage(self.engine, now - timedelta(days=self.usage_keep_days))
        if self.audit_keep_days is not None:
            pruned = self.audit.prune(now - timedelta(days=self.audit_keep_days))
            events = pruned.removed if pruned else 0
        return usage, events

    async def run_hourly(self) -> None:
        """Prune once an hour (the leader's duty)."""
        while True:
            try:
                usage, events = await anyio.to_thread.run_sync(self.prune)
                if usage or events:
                    log.info(
                        "retention: removed %d usage records and %d audit events", usage, events
                    )
            except sa.exc.SQLAlchemyError as exc:
                log.warning("retention pruning failed (tried again in an hour): %s", exc)
            await anyio.sleep(3600)
