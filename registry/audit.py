"""The audit log: who did what, append-only and hash-chained.

Every request that changes something (any method but GET, HEAD and OPTIONS: publish,
update, delete, lifecycle, runtime bindings, API keys, links, invocations, pushed
batches) and every refused request (401 and 403, reads included) becomes one event:
actor, role, issuer, the operation, path, status, outcome and request id. Each event
stores the hash of the one before and its own hash over both, so changing, removing or
inserting an event breaks the chain at that point (``yunnao audit verify``). Anchor the
chain by keeping the head hash that ``verify`` prints somewhere else from time to time:
without that, someone able to rewrite the whole table could rewrite the chain too.

Retention (``audit_keep_days``, at least :data:`MIN_KEEP_DAYS`) removes old events
without breaking the chain: :meth:`AuditLog.prune` first appends a ``pruneAuditLog``
event naming the last event it removes (its ``seq`` and ``hash``, which the first kept
event chains from) and the cutoff, chained like any other event, then deletes. ``verify``
starts from the newest such event's anchor and refuses a prune whose cutoff was younger
than the minimum.

Events are buffered and written in batches four times a second (small batches, so
the hashing never holds the interpreter long enough to show in call latency); a
request never waits for the audit write, and events of the last quarter second before
a crash can be lost.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import anyio
import anyio.to_thread
import sqlalchemy as sa
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .access import SIGHT
from .db import read_session, row_write
from .tables import AuditEvent, utcnow

log = logging.getLogger("yunnao.audit")

GENESIS = "0" * 64
FIELDS = (
    "at", "actor", "issuer", "role", "peer", "action", "method", "path", "status",
    "outcome", "request_id",
)  # fmt: skip
_PG_AUDIT_LOCK = 7_305_826_002  # serializes appends across processes sharing PostgreSQL
# Audit logs are kept at least six months (PRC Cybersecurity Law, art. 21: 网络日志留存
# 不少于六个月); a shorter retention is refused, and a prune with a younger cutoff breaks
# the chain's verdict.
MIN_KEEP_DAYS = 180
PRUNE_ACTION = "pruneAuditLog"
PRUNE_PATH = "/v1/audit/retention"

_event = AuditEvent.__table__  # type: ignore[attr-defined]


def outcome_of(status: int) -> str:
    if status in (401, 403):
        return "denied"
    if status >= 500:
        return "failed"
    if status >= 400:
        return "refused"
    return "ok"


@dataclass(frozen=True)
class Event:
    actor: str | None
    issuer: str | None
    role: str | None
    peer: str | None
    action: str
    method: str
    path: str
    status: int
    request_id: str | None = None
    at: datetime = field(default_factory=utcnow)

    @property
    def outcome(self) -> str:
        return outcome_of(self.status)


def chain_hash(prev_hash: str, values: dict[str, Any]) -> str:
    """The hash of an event: over the previous hash and the event's own fields, as a
    JSON array in :data:`FIELDS` order (cheap to build: every invocation is an event,
    and this runs while the node serves)."""
    at = values["at"]
    fields = [prev_hash, at.astimezone(UTC).isoformat() if isinstance(at, datetime) else at]
    fields.extend(values[k] for k in FIELDS[1:])
    text = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Verdict:
    events: int
    head: str  # hash of the newest event (GENESIS for an empty log)
    broken_at: int | None = None  # seq of the first event that does not chain
    reason: str = ""
    pruned_through: int = 0  # events up to this seq were removed by retention
    pruned_before: datetime | None = None  # ... being those older than this

    @property
    def ok(self) -> bool:
        return self.broken_at is None


@dataclass(frozen=True)
class Pruned:
    through: int  # events with seq <= through are removed
    anchor: str  # the hash of the last removed event: the first kept one chains from it
    removed: int


def _prune_path(through: int, anchor: str, before: datetime) -> str:
    terms = {"through": through, "anchor": anchor, "before": before.isoformat()}
    return f"{PRUNE_PATH}?{urlencode(terms)}"


def _prune_terms(path: str) -> tuple[int, str, datetime] | None:
    """(through, anchor, before) of a prune event's path, None when it is malformed."""
    try:
        query = parse_qs(urlsplit(path).query)
        before = datetime.fromisoformat(query["before"][0])
        if before.tzinfo is None:
            before = before.replace(tzinfo=UTC)
        return int(query["through"][0]), query["anchor"][0], before
    except (KeyError, IndexError, ValueError):
        return None


class AuditLog:
    def __init__(self, engine: sa.Engine, *, max_buffer: int = 100_000) -> None:
        self.engine = engine
        self._buffer: deque[Event] = deque(maxlen=max_buffer)
        self._lock = threading.Lock()

    def record(self, event: Event) -> None:
        self._buffer.append(event)

    def flush(self) -> int:
        """Append what is buffered to the chain; the number of events written."""
        with self._lock:
            batch = []
            while self._buffer:
                batch.append(self._buffer.popleft())
            if not batch:
                return 0
            try:
                self._append(batch)
            except BaseException:
                self._buffer.extendleft(reversed(batch))  # kept for the next try
                raise
            return len(batch)

    def _append(self, batch: list[Event]) -> None:
        with row_write(self.engine) as conn:
            self._append_in(conn, batch)

    def _append_in(self, conn: sa.Connection, batch: list[Event]) -> None:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_AUDIT_LOCK})
        prev = conn.execute(
            sa.select(_event.c.hash).order_by(_event.c.seq.desc()).limit(1)
        ).scalar()
        prev = prev or GENESIS
        rows = []
        for e in batch:
            values = {
                "at": e.at,
                "actor": e.actor[:500] if e.actor else e.actor,
                "issuer": e.issuer[:500] if e.issuer else e.issuer,
                "role": e.role,
                "peer": e.peer,
                "action": e.action[:100],
                "method": e.method[:8],
                "path": e.path[:2000],
                "status": e.status,
                "outcome": e.outcome,
                "request_id": e.request_id,
            }
            digest = chain_hash(prev, values)
            rows.append((*(values[k] for k in FIELDS), prev, digest))
            prev = digest
        # Straight to the driver, as usage records are: every invocation is an event,
        # and Core's per-row parameter processing would cost the gateway under load.
        columns = (*FIELDS, "prev_hash", "hash")
        mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        sql = (
            f"INSERT INTO audit_event ({', '.join(columns)}) "
            f"VALUES ({', '.join(mark for _ in columns)})"
        )
        at = _event.c.at.type.bind_processor(conn.dialect)
        conn.exec_driver_sql(sql, [(at(r[0]) if at else r[0], *r[1:]) for r in rows])

    async def run(self, interval: float = 0.25) -> None:
        """Write buffered events every ``interval`` seconds (a node's background task);
        what is left is written when the task is cancelled."""
        try:
            while True:
                await anyio.sleep(interval)
                try:
                    await anyio.to_thread.run_sync(self.flush)
                except sa.exc.SQLAlchemyError as exc:
                    log.warning("writing audit events failed (kept for the next try): %s", exc)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.flush)

    # ------------------------------------------------------------ reading

    def events(
        self,
        *,
        since: int = 0,
        limit: int = 100,
        actor: str | None = None,
        action: str | None = None,
        outcome: str | None = None,
    ) -> list[AuditEvent]:
        with read_session(self.engine) as s:
            stmt = sa.select(AuditEvent).where(_event.c.seq > since)
            if actor:
                stmt = stmt.where(_event.c.actor == actor)
            if action:
                stmt = stmt.where(_event.c.action == action)
            if outcome:
                stmt = stmt.where(_event.c.outcome == outcome)
            stmt = stmt.order_by(_event.c.seq).limit(limit)
            return list(s.execute(stmt).scalars().all())

    def verify(self, batch: int = 5000) -> Verdict:
        """Walk the whole chain; where it first breaks, if it does. A chain pruned by
        retention is walked from the newest prune's anchor."""
        with read_session(self.engine) as s:
            last_prune = s.execute(
                sa.select(_event.c.seq, _event.c.at, _event.c.path)
                .where(_event.c.action == PRUNE_ACTION)
                .order_by(_event.c.seq.desc())
                .limit(1)
            ).first()
        prev, count, through, before = GENESIS, 0, 0, None
        if last_prune is not None:
            terms = _prune_terms(last_prune.path)
            if terms is None:
                return Verdict(0, GENESIS, last_prune.seq, "a retention prune is unreadable")
            through, prev, before = terms
            at = last_prune.at if last_prune.at.tzinfo else last_prune.at.replace(tzinfo=UTC)
            if at - before < timedelta(days=MIN_KEEP_DAYS):
                return Verdict(
                    0, GENESIS, last_prune.seq,
                    f"a retention prune removed events younger than {MIN_KEEP_DAYS} days",
                )  # fmt: skip
        for rows in self._pages(batch, since=through):
            for row in rows:
                values = {k: getattr(row, k) for k in FIELDS}
                if row.prev_hash != prev:
                    return Verdict(
                        count, prev, row.seq, "an event before it was removed or changed",
                        through, before,
                    )  # fmt: skip
                if chain_hash(prev, values) != row.hash:
                    return Verdict(count, prev, row.seq, "the event was changed", through, before)
                prev, count = row.hash, count + 1
        return Verdict(count, prev, None, "", through, before)

    def prune(self, before: datetime, *, batch: int = 20_000) -> Pruned | None:
        """Remove the events older than ``before`` (at least :data:`MIN_KEEP_DAYS` ago),
        keeping the rest verifiable. None when there was nothing to remove.

        The ``pruneAuditLog`` event is appended, in one transaction with finding the
        last event to remove, before anything is deleted; the deletes then run in
        batches. An interrupted prune leaves rows that ``verify`` skips and the next
        prune removes."""
        if before.tzinfo is None:
            before = before.replace(tzinfo=UTC)
        if utcnow() - before < timedelta(days=MIN_KEEP_DAYS):
            raise ValueError(f"audit events are kept at least {MIN_KEEP_DAYS} days")
        with row_write(self.engine) as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_AUDIT_LOCK})
            last = conn.execute(
                sa.select(_event.c.seq, _event.c.hash)
                .where(_event.c.at < before, _event.c.action != PRUNE_ACTION)
                .order_by(_event.c.seq.desc())
                .limit(1)
            ).first()
            if last is None:
                return None
            # A newer prune may already cover it (an earlier run was interrupted).
            done = conn.execute(
                sa.select(_event.c.path)
                .where(_event.c.action == PRUNE_ACTION)
                .order_by(_event.c.seq.desc())
                .limit(1)
            ).scalar()
            terms = _prune_terms(done) if done else None
            if terms is None or terms[0] < last.seq:
                event = Event(
                    actor=None, issuer=None, role="system", peer=None, action=PRUNE_ACTION,
                    method="DELETE", path=_prune_path(last.seq, last.hash, before), status=200,
                )  # fmt: skip
                self._append_in(conn, [event])
                through, anchor = last.seq, last.hash
            else:
                through, anchor = terms[0], terms[1]
        removed = 0
        while True:
            with row_write(self.engine) as conn:
                low = conn.execute(sa.select(sa.func.min(_event.c.seq))).scalar()
                if low is None or low > through:
                    break
                removed += conn.execute(
                    _event.delete().where(_event.c.seq <= min(low + batch - 1, through))
                ).rowcount
        return Pruned(through, anchor, removed)

    def _pages(self, batch: int, since: int = 0) -> Iterator[list[AuditEvent]]:
        while True:
            rows = self.events(since=since, limit=batch)
            if not rows:
                return
            yield rows
            since = rows[-1].seq  # type: ignore[assignment]


# ---------------------------------------------------------------- HTTP


_QUIET = frozenset({"GET", "HEAD", "OPTIONS"})


class AuditMiddleware:
    """Records an :class:`Event` for every changing request and every refusal. Sits
    outside the authentication middleware, so refused credentials are recorded too."""

    def __init__(self, app: ASGIApp, log: AuditLog, actions: dict[Any, str]) -> None:
        self.app = app
        self.log = log
        self.actions = actions  # route handler -> operation id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        sight: set[str] = set()
        watching = SIGHT.set(sight)

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            SIGHT.reset(watching)
            if sight and status < 400:
                # A read that showed entries only through administrative sight.
                scope.setdefault("state", {}).setdefault(
                    "audit_action", "sight:" + (self.actions.get(scope.get("endpoint")) or "page")
                )
            if scope["method"] not in _QUIET or status in (401, 403) or (sight and status < 400):
                state = scope.get("state", {})
                identity = state.get("identity")
                endpoint = scope.get("endpoint")
                # A route may name the action more precisely (a publish that sets access
                # rules is a grant).
                action = (
                    state.get("audit_action")
                    or self.actions.get(endpoint)
                    or ("authenticate" if identity is None and status == 401 else "unrouted")
                )
                self.log.record(
                    Event(
                        actor=getattr(identity, "subject", None),
                        issuer=getattr(identity, "issuer", None),
                        role=getattr(identity, "role", None),
                        peer=getattr(identity, "peer", None),
                        action=action,
                        method=scope["method"],
                        path=scope["path"],
                        status=status,
                        request_id=state.get("request_id"),
                    )
                )
