"""HTTP routes of the audit log, for auditors: query and export, verify the chain."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Literal

import anyio.to_thread
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from .access import Action, require
from .api import Endpoint
from .audit import AuditLog
from .auth import identity_of
from .http import json_response, parse_query
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


def _out(event: AuditEvent) -> AuditEventOut:
    return AuditEventOut(**event.model_dump())


async def audit_events(request: Request) -> Response:
    log = _audit(request)
    query = parse_query(AuditQuery, dict(request.query_params))
    rows = await anyio.to_thread.run_sync(
        lambda: log.events(
            since=query.since,
            limit=query.limit,
            actor=query.actor,
            action=query.action,
            outcome=query.outcome,
        )
    )
    items = [_out(r) for r in rows]
    if query.format == "jsonl":
        text = "".join(
            json.dumps(i.model_dump(mode="json"), ensure_ascii=False) + "\n" for i in items
        )
        return Response(text, media_type="application/jsonl")
    return json_response(AuditPage(items=items, next=items[-1].seq if items else query.since))


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
        )
    )


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "GET",
        "/v1/audit",
        audit_events,
        "auditEvents",
        "Audit events, oldest first: writes, invocations and refusals (JSON, or JSON lines)",
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
