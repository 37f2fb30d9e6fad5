"""Other processes' writes, seen by this one's caches within a fraction of a second.

A :class:`~yunnao.registry.store.RegistryStore` bumps its ``generation`` after each of
its own writes, and the caches of this process keyed on it (the gateway's resolution
cache) drop what they hold. Writes by another process on the same store (another
``--workers`` process, another gateway on the same PostgreSQL, a ``yunnao`` command run
on the store) do not pass through it: :class:`ChangeWatch` reads the change log's head
(every catalog write appends a change in its own transaction) every ``interval``
seconds and bumps the generation when it moved. One indexed ``max(seq)`` a few times a
second, off the request path.
"""

from __future__ import annotations

import logging

import anyio
import anyio.to_thread
import sqlalchemy as sa

from .tables import Change

log = logging.getLogger("yunnao.registry")

_change = Change.__table__  # type: ignore[attr-defined]


class ChangeWatch:
    def __init__(self, store: object, engine: sa.Engine, *, interval: float = 0.2) -> None:
        self.store = store  # anything with an integer ``generation``
        self.engine = engine
        self.interval = interval
        self._head: int | None = None

    def head(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.max(_change.c.seq))).scalar() or 0

    def poll(self) -> bool:
        """Read the head once; True (and the generation bumped) when it moved."""
        head = self.head()
        moved = self._head is not None and head != self._head
        self._head = head
        if moved:
            self.store.generation += 1  # type: ignore[attr-defined]
        return moved

    async def run(self) -> None:
        """Poll until cancelled (a node's background task, in every process)."""
        while True:
            try:
                await anyio.to_thread.run_sync(self.poll)
            except sa.exc.SQLAlchemyError as exc:
                log.debug("reading the change log's head failed: %s", exc)
            await anyio.sleep(self.interval)
