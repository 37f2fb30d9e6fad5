"""Event types, and writing an event's deliveries into the outbox in the caller's
transaction (:func:`enqueue`).

A delivery's body is ``{"type", "timestamp", "data"}`` (the Standard Webhooks shape),
fixed when the event happens; ``webhook-id`` is the delivery's id, the same on every
retry, so a receiver drops a repeat it has seen.

Who receives what: a subscription of a namespace gets that namespace's capability and
access events; a subscription of the node gets every event at the node, except those
about ``restricted`` capabilities (which stay with their namespace's subscriptions:
an operator's endpoint is not told the names of entries the operator may not see).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from ..tables import Webhook, WebhookDelivery, utcnow

EVENTS: dict[str, str] = {
    "version.published": "a version was published (or a draft or deprecated one published again)",
    "version.deprecated": "a version was deprecated",
    "version.retired": "a version was retired",
    "access.requested": "someone asked to call a capability",
    "access.granted": "an access request was approved",
    "access.refused": "an access request was refused",
    "cascade.entry_arrived": "a capability or version arrived from a linked node",
    "peer.unreachable": "a linked node stopped answering",
    "peer.reachable": "a linked node answers again",
    "review.requested": "a capability from a child node waits for this node's review",
    "review.decided": "a node above decided about one of this node's capabilities "
    "(pending, approved, or refused with a reason)",
}
NODE_ONLY = frozenset(
    {"cascade.entry_arrived", "peer.unreachable", "peer.reachable", "review.requested"}
)
TEST = "webhook.test"  # sent by `yunnao webhook test`, to that subscription only

_hooks = Webhook.__table__  # type: ignore[attr-defined]
_deliveries = WebhookDelivery.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Event:
    type: str
    data: dict[str, Any]
    namespace: str | None = None  # the namespace it is about (None: the node's own)
    restricted: bool = False  # about a restricted capability: its namespace's only
    at: Any = field(default_factory=utcnow)

    def body(self) -> str:
        return json.dumps(
            {"type": self.type, "timestamp": self.at.isoformat(), "data": self.data},
            ensure_ascii=False,
            separators=(",", ":"),
            sort_keys=True,
        )


def new_id() -> str:
    return "msg_" + uuid.uuid4().hex


def enqueue(conn: sa.Connection, node_id: str, events: Iterable[Event]) -> int:
    """Write the deliveries of ``events`` for every subscription that wants them, in
    ``conn``'s transaction; the number written. One query for the subscriptions."""
    events = list(events)
    if not events:
        return 0
    scopes = {node_id} | {e.namespace for e in events if e.namespace}
    subs = conn.execute(
        sa.select(_hooks.c.id, _hooks.c.scope, _hooks.c.events).where(
            _hooks.c.scope.in_(sorted(scopes)), _hooks.c.disabled.is_(False)
        )
    ).all()
    if not subs:
        return 0
    now = utcnow()
    rows = []
    for event in events:
        for sub in subs:
            if event.type not in (sub.events or []):
                continue
            if sub.scope == node_id:
                if event.restricted:
                    continue
            elif sub.scope != event.namespace or event.type in NODE_ONLY:
                continue
            rows.append(
                {"id": new_id(), "webhook_id": sub.id, "event": event.type,
                 "payload": event.body(), "created_at": now, "state": "pending",
                 "attempts": 0, "next_attempt_at": now}
            )  # fmt: skip
    if rows:
        conn.execute(sa.insert(_deliveries), rows)
    return len(rows)


def version_event(row: Any, vrow: Any, status: str) -> Event | None:
    """The event of a version entering ``status`` (None for a draft)."""
    kind = {"published": "version.published", "deprecated": "version.deprecated",
            "retired": "version.retired"}.get(status)  # fmt: skip
    if kind is None:
        return None
    data = {
        "namespace": row.namespace, "name": row.name, "version": vrow.version,
        "status": status, "title": row.title, "classification": row.classification,
        "path": f"/v1/capabilities/{row.namespace}/{row.name}/versions/{vrow.version}",
    }  # fmt: skip
    return Event(kind, data, row.namespace, row.classification == "restricted")


def peer_event(peer: str, reachable: bool, detail: str | None) -> Event:
    """A linked node became unreachable, or answers again (the node's subscriptions)."""
    kind = "peer.reachable" if reachable else "peer.unreachable"
    return Event(kind, {"peer": peer, "reachable": reachable, "detail": detail})
