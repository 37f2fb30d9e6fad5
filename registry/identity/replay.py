"""One-time assertion ids: a forwarded call's assertion is good for one request.

The ids are kept in this process until the assertion they came with expires, so an
assertion captured on the wire (or reused by a linked node) is refused the second time
within its lifetime; after it, its expiry refuses it anyway. The set is bounded: when
it is full of live ids, new assertions are refused (503) rather than old ids forgotten,
so a flood cannot make room for a replay.

Where several processes serve one node (``serve --workers N``, gateways sharing one
PostgreSQL store), :class:`SharedOneTimeIds` also records each id in the store's
``used_assertion`` table, whose primary key lets exactly one process accept it: a replay
sent to another process of the same node is refused there too.
"""

from __future__ import annotations

import heapq
import threading
import time

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from yunnao.plugins.errors import Unauthorized, Unavailable

from ..tables import UsedAssertion

MAX_IDS = 200_000


class OneTimeIds:
    """The ids seen, each until its expiry (epoch seconds)."""

    blocking = False  # ``use`` does no I/O: fine on the event loop

    def __init__(self, max_ids: int = MAX_IDS) -> None:
        self.max_ids = max_ids
        self._seen: dict[str, float] = {}
        self._expiries: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def use(self, jti: str, expires: float, *, peer: str, now: float | None = None) -> None:
        """Record ``jti`` as used; :class:`Unauthorized` if it was used before."""
        now = time.time() if now is None else now
        key = f"{peer}\0{jti}"
        with self._lock:
            self._forget_expired(now)
            if key in self._seen:
                raise Unauthorized(
                    f"assertion {jti} from node {peer} was used before: an assertion is "
                    "good for one request"
                )
            if len(self._seen) >= self.max_ids:
                raise Unavailable("too many forwarded calls in flight; retry shortly")
            self._seen[key] = expires
            heapq.heappush(self._expiries, (expires, key))

    def _forget_expired(self, now: float) -> None:
        while self._expiries and self._expiries[0][0] < now:
            _, key = heapq.heappop(self._expiries)
            self._seen.pop(key, None)


_USED = UsedAssertion.__table__  # type: ignore[attr-defined]
_PURGE_EVERY = 1000  # uses between deletions of expired ids from the store


class SharedOneTimeIds(OneTimeIds):
    """:class:`OneTimeIds` kept in the store as well, for every process serving the node.

    ``use`` writes to the database: call it off the event loop (``blocking`` says so)."""

    blocking = True

    def __init__(self, engine: sa.Engine, max_ids: int = MAX_IDS) -> None:
        super().__init__(max_ids)
        self.engine = engine
        dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
        insert = dialect.insert(_USED).on_conflict_do_nothing(index_elements=["key"])
        self._insert = insert.returning(_USED.c.key)  # no row back: taken before
        self._uses = 0

    def use(self, jti: str, expires: float, *, peer: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        super().use(jti, expires, peer=peer, now=now)  # this process's replays, no query
        with self.engine.connect().execution_options(yunnao_write=True) as conn, conn.begin():
            self._uses += 1
            if self._uses % _PURGE_EVERY == 0:
                conn.execute(sa.delete(_USED).where(_USED.c.expires < now))
            row = {"key": f"{peer} {jti}", "expires": expires}
            taken = conn.execute(self._insert, row).first()
        if taken is None:
            raise Unauthorized(
                f"assertion {jti} from node {peer} was used before: an assertion is "
                "good for one request"
            )
