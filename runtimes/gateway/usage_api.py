"""``GET /v1/usage``: usage statistics per day, by capability, department or node.

A report covers the namespaces the caller's token is scoped to, and within them only
the capabilities the policy module lets the caller discover."""

from __future__ import annotations

from datetime import date
from typing import Annotated

import anyio.to_thread
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from yunnao.plugins.errors import BadRequest, Unauthorized
from yunnao.registry.api import Endpoint
from yunnao.registry.http import json_response, parse_query
from yunnao.registry.identity.middleware import identity_of

from .usage_stats import Grouping, default_period, report


class UsageQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: Annotated[date | None, Field(description="first day (UTC); default: 6 days ago")] = None
    until: Annotated[date | None, Field(description="day after the last; default: tomorrow")] = None
    by: Grouping = "capability"


class UsageRowOut(BaseModel):
    day: date
    key: str = Field(description="namespace/name, namespace or node id, as grouped")
    calls: int
    ok: int
    refused: int = Field(description="4xx answers: bad input, not found, denied")
    errors: int = Field(description="5xx answers: failed, timed out, runtime down")
    p50_ms: float
    p99_ms: float
    callers: int


class UsageReport(BaseModel):
    since: date
    until: date
    by: Grouping
    items: list[UsageRowOut]


async def usage(request: Request) -> Response:
    identity = identity_of(request)
    if not identity.authenticated or identity.peer is not None:
        raise Unauthorized(
            "usage statistics need a token; they cover the namespaces it is scoped to"
        )
    query = parse_query(UsageQuery, dict(request.query_params))
    since, until = default_period()
    since, until = query.since or since, query.until or until
    if until <= since:
        raise BadRequest("until must be after since")
    engine = request.app.state.usage_engine
    rows = await anyio.to_thread.run_sync(
        lambda: report(
            engine,
            since=since,
            until=until,
            by=query.by,
            namespaces=list(identity.scopes),
            identity=identity,
        )
    )
    items = [UsageRowOut(**vars(r)) for r in rows]
    return json_response(UsageReport(since=since, until=until, by=query.by, items=items))


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "GET",
        "/v1/usage",
        usage,
        "usageReport",
        "Calls, answers, latency and callers per day, by capability, department or node "
        "(of the namespaces the token covers, and only of capabilities the caller may discover)",
        tag="invocation",
        query=UsageQuery,
        response=UsageReport,
        errors=(400, 401),
        auth="required",
    ),
)
