"""HTTP routes of the audit log, for auditors: query and export, verify the chain.

An event whose path names a capability is listed only to a reader the policy module
lets discover that capability (:mod:`~yunnao.registry.visibility`), as search would:
the log's readers see no more of the catalog through it than through the catalog."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Literal

import anyio.to_thread
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from . import visibility
from .access import Action, Identity, require
from .api import Endpoint
from .audit import AuditLog
from .http import json_response, parse_query
from .identity.middleware import identity_of
from .tables import AuditEvent


def _audit(request: Request) -> AuditLog:
    require(identity_of(request), Action.AUDIT, request.app.state.settings.node_id)
    return request.app.state.audit


class AuditQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: Annotated[int, Field(ge=0, description="events after this sequence number")] = 0
    limit: Annotated[int, Field(ge=1, le=10_000)] = 100
    actor: str | None = None
    action: Annotated[str | None, Field(description="operation id, e.g. publishVersion")] = None
    outcome: Literal["ok", "denied", "refused", "failed"] | None = None
    format: Annotated[
        Literal["json", "jsonl"], Field(description="jsonl: one event a line, for export")
    ] = "json"


class AuditEventOut(BaseModel):
    seq: int
    at: datetime
    actor: str | None
    issuer: str | None
    role: str | None
    peer: str | None
    action: str
    method: str
    path: str
    status: int
    outcome: str
    request_id: str | None
    prev_hash: str
    hash: str


class AuditPage(BaseModel):
    items: list[AuditEventOut]
    next: int = Field(description="pass as `since` for the next page")


class AuditVerdict(BaseModel):
    ok: bool
    events: int
    head: str = Field(description="hash of the newest event: keep it elsewhere to anchor the chain")
    broken_at: int | None
    reason: str
    pruned_through: int = Field(
        0, description="events up to this seq were removed by retention (0: none)"
    )
    pruned_before: datetime | None = Field(
        None, description="the retention's cutoff: the removed events were older"
    )


def _out(event: AuditEvent) -> AuditEventOut:
    return AuditEventOut(**event.model_dump())


def _visible_events(
    log: AuditLog, identity: Identity, query: AuditQuery
) -> tuple[list[AuditEvent], int]:
    """Up to ``query.limit`` events after ``query.since`` that ``identity`` may see, and
    the sequence number read up to (events hidden from it are skipped, not counted)."""
    out: list[AuditEvent] = []
    since = query.since
    while len(out) < query.limit:
        rows = log.events(
            since=since,
            limit=query.limit,
            actor=query.actor,
            action=query.action,
            outcome=query.outcome,
        )
        if not rows:
            break
        keys = {k for r in rows if (k := visibility.capability_of_path(r.path)) is not None}
        seen = visibility.visible(identity, log.engine, keys)
        for row in rows:
            key = visibility.capability_of_path(row.path)
            since = row.seq
            if key is None or key in seen:
                out.append(row)
                if len(out) == query.limit:
                    break
    return out, since


async def audit_events(request: Request) -> Response:
    log = _audit(request)
    identity = identity_of(request)
    query = parse_query(AuditQuery, dict(request.query_params))
    rows, read_to = await anyio.to_thread.run_sync(lambda: _visible_events(log, identity, query))
    items = [_out(r) for r in rows]
    if query.format == "jsonl":
        text = "".join(
            json.dumps(i.model_dump(mode="json"), ensure_ascii=False) + "\n" for i in items
        )
        return Response(text, media_type="application/jsonl")
    return json_response(AuditPage(items=items, next=read_to))


async def audit_verify(request: Request) -> Response:
    log = _audit(request)
    verdict = await anyio.to_thread.run_sync(log.verify)
    return json_response(
        AuditVerdict(
            ok=verdict.ok,
            events=verdict.events,
            head=verdict.head,
            broken_at=verdict.broken_at,
            reason=verdict.reason,
            pruned_through=verdict.pruned_through,
            pruned_before=verdict.pruned_before,
        )
    )


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "GET",
        "/v1/audit",
        audit_events,
        "auditEvents",
        "Audit events, oldest first: writes, invocations and refusals (JSON, or JSON lines); "
        "events naming a capability the reader may not discover are left out",
        tag="audit",
        query=AuditQuery,
        response=AuditPage,
        errors=(400, 401, 403),
        auth="required",
    ),
    Endpoint(
        "GET",
        "/v1/audit/verify",
        audit_verify,
        "auditVerify",
        "Check the audit log's hash chain: where it breaks, if it does, and its head",
        tag="audit",
        response=AuditVerdict,
        errors=(401, 403),
        auth="required",
    ),
)
