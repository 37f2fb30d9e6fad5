"""Subscriptions and their delivery log: add, list, show, remove, test, redeliver.

Who may: a subscription of a namespace is its writers' (authors and admins with the
namespace in their scopes); one of the node is its operators' and admins', and only
an admin's when it asks for access requests (every department's requesters and their
reasons). Everyone
sees and changes only the subscriptions they could have made. The secret is shown once,
when the subscription is made; the URL is checked by the node's outbound guard (public
addresses only, unless the operator allows more) when it is given and again before
every delivery.
"""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from pydantic import AfterValidator, BaseModel, Field, StringConstraints
from sqlmodel import select

from yunnao.plugins.errors import FieldError, NotFound, ValidationFailed

from .. import names
from ..access import Action, Entry, Identity, decide, require
from ..db import read_session, write_session
from ..outbound import OutboundGuard, Refused, Unresolved
from ..tables import Webhook, WebhookAttempt, WebhookDelivery, utcnow
from .events import EVENTS, TEST, Event, enqueue, new_id

_deliveries = WebhookDelivery.__table__  # type: ignore[attr-defined]


def _event_types(values: list[str]) -> list[str]:
    unknown = [v for v in values if v not in EVENTS]
    if unknown:
        raise ValueError(f"unknown event types {unknown}; known: {', '.join(EVENTS)}")
    if not values:
        raise ValueError("name at least one event type")
    return sorted(set(values))


class NewWebhook(BaseModel):
    """Body of ``POST /v1/webhooks``."""

    model_config = {"extra": "forbid"}

    scope: Annotated[str, StringConstraints(max_length=370)] = Field(
        description="a namespace of this node (its authors' events) or this node's id (its "
        "operators': every event here, entries arriving by cascade and peers' health too)"
    )
    url: Annotated[str, StringConstraints(max_length=2000)] = Field(
        description="where deliveries are POSTed: http(s), a public address unless this "
        "node's operator allows more (YUNNAO_CALLBACK_ALLOW)"
    )
    events: Annotated[list[str], AfterValidator(_event_types), Field(max_length=32)] = Field(
        description="event types: " + ", ".join(EVENTS)
    )
    description: Annotated[str, StringConstraints(max_length=200, strip_whitespace=True)] = ""


class WebhookOut(BaseModel):
    id: str
    scope: str
    url: str
    events: list[str]
    description: str
    created_by: str | None
    created_at: datetime
    disabled: bool
    secret: str | None = Field(
        None, description="whsec_…: shown once, when the subscription is made; verify "
        "deliveries with it (Standard Webhooks)"
    )  # fmt: skip
    pending: int = Field(0, description="deliveries waiting (or retrying)")
    failed: int = Field(0, description="deliveries given up (redeliver them)")


class AttemptOut(BaseModel):
    at: datetime
    status: int | None = Field(description="the receiver's HTTP status, if it answered")
    error: str | None
    duration_ms: float


class DeliveryOut(BaseModel):
    id: str = Field(description="the webhook-id header: the same on every retry")
    event: str
    state: Literal["pending", "delivered", "failed"]
    created_at: datetime
    attempts: int
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    last_error: str | None
    payload: dict[str, Any]
    log: list[AttemptOut] | None = Field(None, description="every attempt (one delivery)")


class Webhooks:
    def __init__(self, engine: sa.Engine, node_id: str, guard: OutboundGuard) -> None:
        self.engine, self.node_id, self.guard = engine, node_id, guard

    # ------------------------------------------------------------ who may

    def check_scope(self, identity: Identity, scope: str) -> None:
        if scope == self.node_id:
            require(identity, Action.READ_NODE, scope)
            return
        if not names.is_namespace(scope) or names.namespace_node(scope) != self.node_id:
            why = f"{scope!r} is neither this node ({self.node_id}) nor one of its namespaces"
            raise ValidationFailed(why, errors=[FieldError("scope", why)])
        require(identity, Action.UPDATE, scope)

    def _may_see(self, identity: Identity, hook: Webhook) -> bool:
        """Whether ``identity`` could have made ``hook`` (and so may see its log)."""
        if hook.scope != self.node_id:
            return decide(identity, Action.UPDATE, Entry(hook.scope)).allowed
        asks = any(e.startswith("access.") for e in hook.events or [])
        action = Action.MANAGE_NODE if asks else Action.READ_NODE
        return decide(identity, action, Entry(hook.scope)).allowed

    def _owned(self, s: Any, identity: Identity, webhook_id: str) -> Webhook:
        hook = s.get(Webhook, webhook_id)
        if hook is None or not self._may_see(identity, hook):
            raise NotFound(f"no webhook {webhook_id}")
        return hook

    # ------------------------------------------------------------ subscriptions

    async def check_url(self, url: str) -> None:
        try:
            await self.guard.aresolve(url)
        except Unresolved:
            pass  # it may resolve later (a new host): delivery checks it again
        except Refused as exc:
            raise ValidationFailed(f"url: {exc}", errors=[FieldError("url", str(exc))]) from None

    def create(self, identity: Identity, body: NewWebhook) -> WebhookOut:
        self.check_scope(identity, body.scope)
        if body.scope == self.node_id and any(e.startswith("access.") for e in body.events):
            # Who asked to call what, and why, in every department: the node's admins'.
            require(identity, Action.MANAGE_NODE, self.node_id)
        secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        hook = Webhook(
            id=uuid.uuid4().hex, scope=body.scope, url=body.url, events=body.events,
            secret=secret, description=body.description, created_by=identity.subject,
        )  # fmt: skip
        with write_session(self.engine) as s:
            s.add(hook)
            s.flush()
            shown = self._out(s, hook)
        return shown.model_copy(update={"secret": secret})

    def listing(self, identity: Identity, scope: str | None = None) -> list[WebhookOut]:
        with read_session(self.engine) as s:
            stmt = select(Webhook).order_by(Webhook.created_at)
            if scope:
                stmt = stmt.where(Webhook.scope == scope)
            hooks = [h for h in s.exec(stmt).all() if self._may_see(identity, h)]
            return [self._out(s, h) for h in hooks]

    def get(self, identity: Identity, webhook_id: str) -> WebhookOut:
        with read_session(self.engine) as s:
            return self._out(s, self._owned(s, identity, webhook_id))

    def remove(self, identity: Identity, webhook_id: str) -> None:
        """Remove a subscription and its delivery log (nothing more is sent)."""
        with write_session(self.engine) as s:
            hook = self._owned(s, identity, webhook_id)
            ids = sa.select(_deliveries.c.id).where(_deliveries.c.webhook_id == hook.id)
            attempts = WebhookAttempt.__table__  # type: ignore[attr-defined]
            s.connection().execute(attempts.delete().where(attempts.c.delivery_id.in_(ids)))
            s.connection().execute(_deliveries.delete().where(_deliveries.c.webhook_id == hook.id))
            s.delete(hook)

    def test(self, identity: Identity, webhook_id: str) -> DeliveryOut:
        """Queue a ``webhook.test`` delivery to this subscription only."""
        with write_session(self.engine) as s:
            hook = self._owned(s, identity, webhook_id)
            event = Event(TEST, {"webhook": hook.id, "scope": hook.scope,
                                 "by": identity.subject})  # fmt: skip
            row = WebhookDelivery(
                id=new_id(), webhook_id=hook.id, event=TEST, payload=event.body(),
                state="pending",
            )  # fmt: skip
            s.add(row)
            s.flush()
            return _delivery_out(row)

    def _out(self, s: Any, hook: Webhook) -> WebhookOut:
        counts = dict(
            s.connection()
            .execute(
                sa.select(_deliveries.c.state, sa.func.count())
                .where(_deliveries.c.webhook_id == hook.id, _deliveries.c.state != "delivered")
                .group_by(_deliveries.c.state)
            )
            .all()
        )
        return WebhookOut(
            **hook.model_dump(exclude={"secret"}),
            pending=counts.get("pending", 0), failed=counts.get("failed", 0),
        )  # fmt: skip

    # ------------------------------------------------------------ deliveries

    def deliveries(
        self, identity: Identity, webhook_id: str, *, state: str | None = None, limit: int = 50
    ) -> list[DeliveryOut]:
        """The newest deliveries first."""
        with read_session(self.engine) as s:
            hook = self._owned(s, identity, webhook_id)
            stmt = select(WebhookDelivery).where(WebhookDelivery.webhook_id == hook.id)
            if state:
                stmt = stmt.where(WebhookDelivery.state == state)
            rows = s.exec(stmt.order_by(sa.desc(WebhookDelivery.seq)).limit(limit)).all()
            return [_delivery_out(r) for r in rows]

    def delivery(self, identity: Identity, webhook_id: str, delivery_id: str) -> DeliveryOut:
        with read_session(self.engine) as s:
            row = self._delivery(s, identity, webhook_id, delivery_id)
            attempts = s.exec(
                select(WebhookAttempt)
                .where(WebhookAttempt.delivery_id == row.id)
                .order_by(WebhookAttempt.id)
            ).all()
            log = [AttemptOut(**a.model_dump(include={"at", "status", "error", "duration_ms"}))
                   for a in attempts]  # fmt: skip
            return _delivery_out(row).model_copy(update={"log": log})

    def redeliver(self, identity: Identity, webhook_id: str, delivery_id: str) -> DeliveryOut:
        """Send a delivery again now (a failed one, or one delivered that the receiver
        lost), with the same id."""
        with write_session(self.engine) as s:
            row = self._delivery(s, identity, webhook_id, delivery_id)
            row.state, row.next_attempt_at, row.delivered_at = "pending", utcnow(), None
            s.add(row)
            s.flush()
            return _delivery_out(row)

    def _delivery(
        self, s: Any, identity: Identity, webhook_id: str, delivery_id: str
    ) -> WebhookDelivery:
        hook = self._owned(s, identity, webhook_id)
        row = s.exec(
            select(WebhookDelivery).where(
                WebhookDelivery.id == delivery_id, WebhookDelivery.webhook_id == hook.id
            )
        ).first()
        if row is None:
            raise NotFound(f"no delivery {delivery_id} of webhook {webhook_id}")
        return row

    def emit(self, events: list[Event]) -> int:
        """Write deliveries of events that belong to no other write (a peer's health)."""
        with write_session(self.engine) as s:
            return enqueue(s.connection(), self.node_id, events)


def _delivery_out(row: WebhookDelivery) -> DeliveryOut:
    return DeliveryOut(
        id=row.id, event=row.event, state=row.state, created_at=row.created_at,  # type: ignore[arg-type]
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at if row.state == "pending" else None,
        delivered_at=row.delivered_at, last_error=row.last_error,
        payload=json.loads(row.payload),
    )  # fmt: skip
