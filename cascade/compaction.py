"""Compaction: keep the change log from growing without bound.

Replication is state-based, so a change superseded by a later one of the same entry
carries nothing a follower needs, and neither does a tombstone once every follower
has read it. Compaction removes both when older than ``keep_days`` and records how
far it went (``compacted_through``). A follower whose checkpoint is older than that
may have missed a deletion: the feed answers it 410, and it reads the whole feed again
and deletes what the feed no longer has (:meth:`~yunnao.cascade.sync.Replicator.resync`).
"""

from __future__ import annotations

import logging
from datetime import timedelta

import anyio
import anyio.to_thread
import sqlalchemy as sa

from yunnao.registry.db import write_session
from yunnao.registry.tables import CascadeState, Change, Rejection, utcnow

from .feed import COMPACTED_THROUGH, Feed

log = logging.getLogger("yunnao.cascade")

_change = Change.__table__  # type: ignore[attr-defined]
_state = CascadeState.__table__  # type: ignore[attr-defined]
_rejection = Rejection.__table__  # type: ignore[attr-defined]


def compact(feed: Feed, *, keep_days: float) -> tuple[int, int]:
    """Remove superseded changes and tombstones older than ``keep_days`` from the log;
    returns (compacted_through, rows removed)."""
    cutoff = utcnow() - timedelta(days=keep_days)
    with write_session(feed.engine) as s:
        # Rejected entries are kept for operators as long as the changes are.
        s.execute(_rejection.delete().where(_rejection.c.at <= cutoff))
        previous = s.execute(
            sa.select(_state.c.value).where(_state.c.name == COMPACTED_THROUGH)
        ).scalar()
        through = s.execute(
            sa.select(sa.func.max(_change.c.seq)).where(_change.c.created_at <= cutoff)
        ).scalar()
        # The newest change always stays: SQLite hands out max(seq) + 1 next, so removing
        # it would reuse a sequence number a follower has already passed; and a follower
        # that reaches the end is then never behind the compaction.
        newest = s.execute(sa.select(sa.func.max(_change.c.seq))).scalar() or 0
        through = min(through or 0, newest - 1)
        if not through or (previous and through <= previous):
            return previous or 0, 0
        later = _change.alias("later")
        superseded = sa.exists().where(
            later.c.entity == _change.c.entity,
            later.c.key == _change.c.key,
            later.c.seq > _change.c.seq,
        )
        removed = s.execute(_change.delete().where(_change.c.seq <= through, superseded)).rowcount
        tombstones = (
            s.execute(
                sa.select(_change.c.key).where(
                    _change.c.entity == "capability",
                    _change.c.op == "delete",
                    _change.c.seq <= through,
                )
            )
            .scalars()
            .all()
        )
        for key in tombstones:
            removed += s.execute(
                _change.delete().where(
                    _change.c.seq <= through,
                    sa.or_(
                        sa.and_(_change.c.entity == "capability", _change.c.key == key),
                        sa.and_(
                            _change.c.entity == "version",
                            _change.c.key.startswith(key + "@", autoescape=True),
                        ),
                    ),
                )
            ).rowcount
        if previous is None:
            s.execute(_state.insert().values(name=COMPACTED_THROUGH, value=through))
        else:
            s.execute(
                _state.update().where(_state.c.name == COMPACTED_THROUGH).values(value=through)
            )
    return through, removed


async def run_hourly(feed: Feed, keep_days: float) -> None:
    """Compact the log once an hour (a node's background task)."""
    while True:
        try:
            through, removed = await anyio.to_thread.run_sync(
                lambda: compact(feed, keep_days=keep_days)
            )
            if removed:
                log.info(
                    "compacted the change log through %d (%d changes removed)", through, removed
                )
        except sa.exc.SQLAlchemyError as exc:
            log.warning("compacting the change log failed: %s", exc)
        await anyio.sleep(3600)
