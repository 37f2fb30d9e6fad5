"""Access requests (权限申请): asking to call a capability one may find, and deciding.

Someone who may discover a capability but not invoke it asks for access with a reason
(and, if they like, until when). The request is kept at the node that owns the
capability, where its department decides: the authors and admins scoped to the
capability's namespace (those who may change it, :data:`Action.UPDATE`) approve it,
which adds a :class:`~yunnao.registry.schemas.Grant` naming the requester and the node
that vouches for it (optionally expiring) to the capability's access rules through the
store's normal update (a change the cascade carries, so every node that forwards a call
sees the grant and the origin decides again), or refuse it with a reason. The requester
may withdraw a pending request; one pending request per capability, requester and node.

A request for a cascaded capability is not kept where it is made: the node forwards it,
hop by hop, to the origin (:class:`Forwarder`), with an assertion bound to the one
route, like a forwarded call; the origin records ``requester_node`` (the node vouching
for the caller) and ``via`` (the linked node it came through).

The grant is written first and the decision after it; approving again after a failure
between the two finds the grant there and records the decision (idempotent).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from pydantic import AfterValidator, BaseModel, Field, StringConstraints
from sqlmodel import select

from yunnao.plugins.errors import (
    Conflict,
    Forbidden,
    LoopDetected,
    NotFound,
    PreconditionFailed,
    Unauthorized,
)

from . import schemas
from .access import Action, Entry, Identity, access_rules, decide
from .db import read_session, write_session
from .identity.forwarded import forwarded
from .names import namespace_node
from .representations import capability_etag
from .store import RegistryStore
from .tables import AccessRequest, CapabilityRow, utcnow
from .webhooks import events as webhook_events

STATUSES = ("pending", "approved", "refused", "withdrawn")
RequestStatus = Literal["pending", "approved", "refused", "withdrawn"]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]


_EVENT_FIELDS = (
    "id", "namespace", "name", "requester", "requester_node", "requester_department",
    "reason", "status", "decided_by", "decision_reason",
)  # fmt: skip


def _future(value: datetime) -> datetime:
    if value <= datetime.now(UTC):
        raise ValueError("must lie in the future")
    return value


Expiry = Annotated[datetime, AfterValidator(schemas._utc), AfterValidator(_future)]


class NewAccessRequest(schemas.Strict):
    """Body of ``POST /v1/capabilities/{namespace}/{name}/access-requests``."""

    reason: Reason = Field(description="why the caller needs to call it (1 to 2000 characters)")
    expires_at: Expiry | None = Field(None, description="until when access is asked (UTC)")


class Approval(schemas.Strict):
    """Body of ``POST /v1/access-requests/{id}/approve``."""

    expires_at: Expiry | None = Field(
        None, description="when the grant expires; default: what the requester asked"
    )


class Refusal(schemas.Strict):
    """Body of ``POST /v1/access-requests/{id}/refuse``."""

    reason: Reason = Field(description="why, shown to the requester")


class AccessRequestOut(BaseModel):
    id: str
    capability: str = Field(description="namespace/name")
    namespace: str
    name: str
    title: str = Field("", description="the capability's title, where known here")
    requester: str
    requester_node: str
    requester_department: str | None
    via: str | None = Field(description="the linked node the request came through")
    reason: str
    expires_at: datetime | None
    status: RequestStatus
    decided_by: str | None
    decision_reason: str | None
    created_at: datetime
    decided_at: datetime | None


class AccessRequestList(BaseModel):
    items: list[AccessRequestOut]
    total: int
    page: int
    per_page: int


def out(row: AccessRequest, title: str = "") -> AccessRequestOut:
    return AccessRequestOut(
        id=row.id,
        capability=f"{row.namespace}/{row.name}",
        namespace=row.namespace,
        name=row.name,
        title=title,
        requester=row.requester,
        requester_node=row.requester_node,
        requester_department=row.requester_department,
        via=row.via,
        reason=row.reason,
        expires_at=row.expires_at,
        status=row.status,  # type: ignore[arg-type]
        decided_by=row.decided_by,
        decision_reason=row.decision_reason,
        created_at=row.created_at,
        decided_at=row.decided_at,
    )


# A forwarding: (next node, method, path, JSON body or None, caller) -> the next node's
# answer (status, JSON body), passed on as it was given.
Forward = Callable[[str, str, str, Any, Identity], Awaitable[tuple[int, Any]]]


class AccessRequests:
    """The access requests of one node: its own capabilities' requests and decisions;
    requests for cascaded capabilities go to ``forward`` (the routes call it)."""

    def __init__(self, store: RegistryStore, forward: Forward | None = None) -> None:
        self.store = store
        self.engine: sa.Engine = store.engine
        self.node_id = store.node_id
        self.forward = forward

    # ------------------------------------------------------------ lookups

    def _capability(self, identity: Identity, namespace: str, name: str) -> CapabilityRow:
        """The live capability, if ``identity`` may discover it (404 as hidden ones)."""
        with read_session(self.engine) as s:
            row = s.exec(
                select(CapabilityRow).where(
                    CapabilityRow.namespace == namespace, CapabilityRow.name == name
                )
            ).first()
        if row is None or row.deleted_at is not None:
            raise NotFound(f"no capability {namespace}/{name}")
        if not decide(identity, Action.DISCOVER, Entry.of(row)).allowed:
            raise NotFound(f"no capability {namespace}/{name}")
        return row

    def next_hop(self, identity: Identity, namespace: str, name: str) -> str | None:
        """The linked node to forward a request for this capability to (None: this
        node owns it). 404 when the caller may not discover it here."""
        row = self._capability(identity, namespace, name)
        if namespace_node(namespace) == self.node_id:
            return None
        hop = row.via_node
        if hop is None:
            raise NotFound(f"no capability {namespace}/{name}")
        call = forwarded(identity)
        if call is not None and (hop in call.visited or self.node_id in call.visited):
            raise LoopDetected(f"the request for {namespace}/{name} would reach a node twice")
        return hop

    def _requester(self, identity: Identity) -> tuple[str, str]:
        if identity.subject is None:
            raise Unauthorized("asking for access needs a bearer token (or signing in)")
        return identity.subject, identity.node or self.node_id

    # ------------------------------------------------------------ the requester

    def create(
        self, identity: Identity, namespace: str, name: str, body: NewAccessRequest
    ) -> AccessRequestOut:
        """Record a request by ``identity`` for this node's own capability: 409 when the
        caller may already invoke it or has a pending request for it."""
        subject, node = self._requester(identity)
        row = self._capability(identity, namespace, name)
        if decide(identity, Action.INVOKE, Entry.of(row)).allowed:
            raise Conflict(f"{subject} may already call {namespace}/{name}: nothing to ask")
        via = identity.peer
        with write_session(self.engine) as s:
            pending = s.exec(
                select(AccessRequest).where(
                    AccessRequest.namespace == namespace,
                    AccessRequest.name == name,
                    AccessRequest.requester == subject,
                    AccessRequest.requester_node == node,
                    AccessRequest.status == "pending",
                )
            ).first()
            if pending is not None:
                raise Conflict(
                    f"{subject} already has a pending request ({pending.id}) for "
                    f"{namespace}/{name}; withdraw it to ask again"
                )
            req = AccessRequest(
                id=uuid.uuid4().hex,
                namespace=namespace,
                name=name,
                requester=subject,
                requester_node=node,
                requester_department=identity.own_department,
                via=via,
                reason=body.reason,
                expires_at=body.expires_at,
                status="pending",
            )
            s.add(req)
            self._notify(s, "access.requested", req)
        return out(req, row.title)

    def mine(self, identity: Identity, namespace: str, name: str) -> list[AccessRequestOut]:
        """The caller's own requests for this capability, newest first."""
        subject, node = self._requester(identity)
        row = self._capability(identity, namespace, name)
        with read_session(self.engine) as s:
            rows = s.exec(
                select(AccessRequest)
                .where(
                    AccessRequest.namespace == namespace,
                    AccessRequest.name == name,
                    AccessRequest.requester == subject,
                    AccessRequest.requester_node == node,
                )
                .order_by(sa.desc(AccessRequest.created_at))  # type: ignore[arg-type]
            ).all()
        return [out(r, row.title) for r in rows]

    def withdraw(self, identity: Identity, request_id: str) -> AccessRequestOut:
        """The requester withdraws a pending request (409 once decided)."""
        subject, node = self._requester(identity)
        with write_session(self.engine) as s:
            req = s.get(AccessRequest, request_id)
            if req is None or (req.requester, req.requester_node) != (subject, node):
                raise NotFound(f"no access request {request_id} of yours")
            self._pending(req)
            req.status, req.decided_by, req.decided_at = "withdrawn", subject, utcnow()
            s.add(req)
        return out(req)

    # ------------------------------------------------------------ the department

    def may_decide(self, identity: Identity, namespace: str) -> bool:
        """May ``identity`` decide requests for capabilities of ``namespace``: an author
        or admin scoped to it, at this node (the owning node)."""
        if namespace_node(namespace) != self.node_id:
            return False
        return decide(identity, Action.UPDATE, Entry(namespace)).allowed

    def listing(
        self,
        identity: Identity,
        *,
        status: str | None = "pending",
        namespace: str | None = None,
        page: int = 1,
        per_page: int = 20,
    ) -> AccessRequestList:
        """Requests for capabilities the caller's departments own, newest first."""
        query = select(AccessRequest).order_by(
            sa.desc(AccessRequest.created_at)  # type: ignore[arg-type]
        )
        if status:
            query = query.where(AccessRequest.status == status)
        if namespace:
            query = query.where(
                sa.or_(
                    AccessRequest.namespace == namespace,
                    AccessRequest.namespace.like(namespace + ".%"),  # type: ignore[attr-defined]
                )
            )
        with read_session(self.engine) as s:
            rows = [r for r in s.exec(query).all() if self.may_decide(identity, r.namespace)]
            chosen = rows[(page - 1) * per_page : page * per_page]
            titles = self._titles(s, {(r.namespace, r.name) for r in chosen})
        items = [out(r, titles.get((r.namespace, r.name), "")) for r in chosen]
        return AccessRequestList(items=items, total=len(rows), page=page, per_page=per_page)

    def get(self, identity: Identity, request_id: str) -> AccessRequestOut:
        with read_session(self.engine) as s:
            req = s.get(AccessRequest, request_id)
            mine = req is not None and (req.requester, req.requester_node) == (
                identity.subject,
                identity.node or self.node_id,
            )
            if req is None or not (mine or self.may_decide(identity, req.namespace)):
                raise NotFound(f"no access request {request_id}")
            key = (req.namespace, req.name)
            return out(req, self._titles(s, {key}).get(key, ""))

    def approve(self, identity: Identity, request_id: str, body: Approval) -> AccessRequestOut:
        """Grant the requester access (until ``expires_at``, else what was asked), then
        record the decision."""
        req = self._to_decide(identity, request_id)
        expires = body.expires_at or req.expires_at
        if expires is not None and expires <= datetime.now(UTC):
            raise Conflict(
                f"the expiry asked for ({expires.isoformat()}) has passed: approve with a "
                "later expires_at, or none"
            )
        self._grant(req, expires)
        with write_session(self.engine) as s:
            row = s.get(AccessRequest, request_id)
            assert row is not None
            self._pending(row)
            row.status, row.expires_at = "approved", expires
            row.decided_by, row.decided_at = identity.subject, utcnow()
            s.add(row)
            self._notify(s, "access.granted", row)
        return out(row)

    def refuse(self, identity: Identity, request_id: str, body: Refusal) -> AccessRequestOut:
        self._to_decide(identity, request_id)
        with write_session(self.engine) as s:
            row = s.get(AccessRequest, request_id)
            assert row is not None
            self._pending(row)
            row.status, row.decision_reason = "refused", body.reason
            row.decided_by, row.decided_at = identity.subject, utcnow()
            s.add(row)
            self._notify(s, "access.refused", row)
        return out(row)

    def _notify(self, s: Any, kind: str, req: AccessRequest) -> None:
        """The webhook deliveries of a request's event, in its write's transaction."""
        c = CapabilityRow.__table__.c  # type: ignore[attr-defined]
        classification = (
            s.connection()
            .execute(
                sa.select(c.classification).where(c.namespace == req.namespace, c.name == req.name)
            )
            .scalar()
        )
        data = {f: getattr(req, f) for f in _EVENT_FIELDS}
        data["expires_at"] = req.expires_at.isoformat() if req.expires_at else None
        event = webhook_events.Event(kind, data, req.namespace, classification == "restricted")
        webhook_events.enqueue(s.connection(), self.store.node_id, [event])

    def _to_decide(self, identity: Identity, request_id: str) -> AccessRequest:
        if identity.subject is None or identity.peer is not None:
            raise Unauthorized("deciding access requests needs a bearer token of this node")
        with read_session(self.engine) as s:
            req = s.get(AccessRequest, request_id)
        if req is None:
            raise NotFound(f"no access request {request_id}")
        if not self.may_decide(identity, req.namespace):
            raise Forbidden(
                f"only the authors and admins of {req.namespace} decide requests for "
                f"{req.namespace}/{req.name}"
            )
        self._pending(req)
        return req

    @staticmethod
    def _pending(req: AccessRequest) -> None:
        if req.status != "pending":
            raise Conflict(f"access request {req.id} is already {req.status}")

    def _grant(self, req: AccessRequest, expires: datetime | None) -> None:
        """Add (or renew) the grant through the store's update, retried if the entry
        changed in between (If-Match)."""
        for _ in range(5):
            with read_session(self.engine) as s:
                row = s.exec(
                    select(CapabilityRow).where(
                        CapabilityRow.namespace == req.namespace, CapabilityRow.name == req.name
                    )
                ).first()
            if row is None or row.deleted_at is not None:
                raise NotFound(f"no capability {req.namespace}/{req.name}")
            etag, access = capability_etag(row), access_rules(row.access)
            grant = schemas.Grant(
                subject=req.requester, node=req.requester_node, expires_at=expires
            )
            kept = [
                g
                for g in access.grants
                if isinstance(g, str) or (g.subject, g.node) != (grant.subject, grant.node)
            ]
            new = access.model_copy(update={"grants": [*kept, grant]})
            try:
                self.store.update_metadata(
                    req.namespace, req.name, schemas.MetaPatch(access=new), if_match=etag
                )
                return
            except PreconditionFailed:
                time.sleep(0.05)
        raise Conflict(f"{req.namespace}/{req.name} kept changing; approve again")

    @staticmethod
    def _titles(s: Any, keys: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
        found: dict[tuple[str, str], str] = {}
        for ns, name in keys:
            row = s.exec(
                select(CapabilityRow).where(
                    CapabilityRow.namespace == ns, CapabilityRow.name == name
                )
            ).first()
            if row is not None:
                found[(ns, name)] = row.title
        return found
