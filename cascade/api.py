"""HTTP routes of the cascade: the change feed other nodes read."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
import anyio.to_thread
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from yunnao.plugins.errors import Forbidden, Unauthorized
from yunnao.registry.api import Endpoint
from yunnao.registry.auth import identity_of
from yunnao.registry.http import json_response, parse_query

from .feed import Feed

PEER_ROLES = frozenset({"admin", "operator"})


class ChangesQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: Annotated[int, Field(ge=0, description="the last sequence number already applied")] = 0
    limit: Annotated[int, Field(ge=1, le=1000)] = 100
    wait: Annotated[
        float,
        Field(
            ge=0, le=30, description="seconds to wait for a change when there is none (long poll)"
        ),
    ] = 0


class ChangesPage(BaseModel):
    node: str
    items: list[dict[str, Any]] = Field(
        description="origin, origin_seq, entity, key, op, content_hash, entry, at, signature"
    )
    next: int = Field(description="pass as `since` for the next page")
    head: int = Field(description="the newest sequence number of this node's log")


async def changes(request: Request) -> Response:
    identity = identity_of(request)
    if not identity.authenticated:
        raise Unauthorized("the change feed is for linked nodes: send a node token")
    if identity.role not in PEER_ROLES:
        raise Forbidden(f"the change feed needs one of: {', '.join(sorted(PEER_ROLES))}")
    query = parse_query(ChangesQuery, dict(request.query_params))
    feed: Feed = request.app.state.feed
    page = await anyio.to_thread.run_sync(feed.page, query.since, query.limit)
    if not page.items and page.next >= page.head and query.wait:
        # Long poll: answer as soon as something is appended, or when the wait is over.
        since = page.next
        with anyio.move_on_after(query.wait):
            while await anyio.to_thread.run_sync(feed.head) <= since:
                await anyio.sleep(0.05)
        page = await anyio.to_thread.run_sync(feed.page, since, query.limit)
    body = ChangesPage(node=feed.node_id, items=page.items, next=page.next, head=page.head)
    return json_response(body)


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "GET",
        "/v1/cascade/changes",
        changes,
        "cascadeChanges",
        "This node's changes since a sequence number, signed (long poll with `wait`)",
        tag="cascade",
        query=ChangesQuery,
        response=ChangesPage,
        errors=(400, 401, 403),
        auth="required",
    ),
)
