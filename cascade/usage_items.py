"""Usage figures up the cascade: a node's daily usage rows as signed feed items.

Every ``usage_rollup_interval`` seconds a node recomputes its own rows of today and
yesterday (Beijing time) from its usage records
(:func:`~yunnao.registry.usage_daily.refresh_days`) and, for a day whose figures
changed since its last item, appends a new item to its change log: entity ``usage``, key
``<node>/<day>``, entry ``{node, day, rows}``, signed by this node. Yesterday stays in
the window, so the first round after midnight sends that day's final figures.

A later item of a node/day supersedes the earlier one entirely, so the earlier change
is dropped from the log at once (what compaction would do later): a busy node sends
one item a minute, and the log keeps one per node and day. The parent applies an item
by replacing that node/day's rows (:func:`apply`), and passes it on unchanged, so the
province verifies the district's own signature. The policy module keeps them going up
only (:mod:`~yunnao.cascade.policy`); :mod:`~yunnao.cascade.items` checks their shape
and sums.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import anyio
import anyio.to_thread
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlmodel import Session

from yunnao.registry import usage_daily
from yunnao.registry.db import write_session
from yunnao.registry.hashing import content_hash
from yunnao.registry.tables import Change

from .feed import append_signed

log = logging.getLogger("yunnao.cascade")

ENTITY = "usage"
_change = Change.__table__  # type: ignore[attr-defined]


def item_key(node: str, day: str) -> str:
    return f"{node}/{day}"


def drop_superseded(s: Session, keys: Iterable[str]) -> None:
    """Remove every usage change of ``keys`` but the newest. (Never the newest: SQLite
    hands out max(seq) + 1 next, and a reused sequence number is one a follower may
    have passed already.)"""
    for key in sorted(set(keys)):
        newest = s.execute(
            sa.select(sa.func.max(_change.c.seq)).where(
                _change.c.entity == ENTITY, _change.c.key == key
            )
        ).scalar()
        if newest is not None:
            s.execute(
                _change.delete().where(
                    _change.c.entity == ENTITY, _change.c.key == key, _change.c.seq < newest
                )
            )


def apply(s: Session, entry: dict[str, Any]) -> None:
    """Apply a usage item's entry (validated, verified) in transaction ``s``: its rows
    replace the node's rows of that day. (The applier then logs the item and calls
    :func:`drop_superseded`.)"""
    usage_daily.replace_rows(
        s.connection(), entry["node"], entry["day"], usage_daily.figures_of(entry["rows"])
    )


class UsageRollup:
    """This node's usage figures, recomputed and sent up when they change."""

    def __init__(
        self,
        engine: sa.Engine,
        node_id: str,
        key: Ed25519PrivateKey,
        *,
        interval: float = 60.0,
        days: int = 2,
    ) -> None:
        self.engine = engine
        self.node_id = node_id
        self.key = key
        self.interval = interval
        self.days = days

    def _sent(self, conn: sa.Connection, key: str) -> str | None:
        """The content hash of this node's newest usage item of ``key``."""
        return conn.execute(
            sa.select(_change.c.content_hash)
            .where(_change.c.entity == ENTITY, _change.c.key == key)
            .order_by(_change.c.seq.desc())
            .limit(1)
        ).scalar()

    def roll(self) -> list[str]:
        """Recompute the last days' rows and log an item for each day whose figures
        changed since its last one; the days logged."""
        days = usage_daily.last_days(self.days)
        usage_daily.refresh_days(self.engine, self.node_id, days)
        due: list[tuple[str, dict[str, Any]]] = []
        with self.engine.connect() as conn:
            for day in days:
                entry = {
                    "node": self.node_id,
                    "day": day,
                    "rows": usage_daily.entry_rows(conn, self.node_id, day),
                }
                sent = self._sent(conn, item_key(self.node_id, day))
                if sent is None and not entry["rows"]:
                    continue  # no calls that day, and nothing said about it before
                if sent != content_hash(entry):
                    due.append((day, entry))
        if due:
            with write_session(self.engine) as s:
                for day, entry in due:
                    append_signed(
                        s,
                        self.key,
                        origin=self.node_id,
                        entity=ENTITY,
                        item_key=item_key(self.node_id, day),
                        op="upsert",
                        entry=entry,
                    )
                drop_superseded(s, [item_key(self.node_id, day) for day, _ in due])
        return [day for day, _ in due]

    async def run(self) -> None:
        """Roll up now and then every ``interval`` seconds (a node's background task)."""
        while True:
            try:
                await anyio.to_thread.run_sync(self.roll)
            except sa.exc.SQLAlchemyError as exc:
                log.warning("rolling up usage figures failed; will retry: %s", exc)
            await anyio.sleep(self.interval)
