"""``GET /v1/cascade/health``: what a linked node's prober asks. This node answers that it
is there and, to its parent, the health of every node of its subtree as it sees it (a
child asking learns only that this node answers)."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response

from yunnao.plugins.errors import Forbidden, Unavailable
from yunnao.registry.api import Endpoint
from yunnao.registry.http import json_response

from .prober import health_answer
from .state import cascade_of, linked_node


class CascadeHealth(BaseModel):
    node: str
    state: str = Field(description="`ok`: this node answers")
    nodes: list[dict[str, Any]] = Field(
        description="for the parent: every node below this one (node, state, since, "
        "checked_at, latency_ms, detail, lag, via)"
    )


async def cascade_health(request: Request) -> Response:
    peer_id = linked_node(request)
    peer = await anyio.to_thread.run_sync(cascade_of(request).peers.get, peer_id)
    if peer is None:
        raise Forbidden(f"node {peer_id} is not linked here")
    board = getattr(request.app.state, "health", None)
    if board is None:
        raise Unavailable("this node keeps no health board")
    to_parent = peer.relation == "parent"
    return json_response(CascadeHealth(**health_answer(board, to_parent=to_parent)))


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "GET",
        "/v1/cascade/health",
        cascade_health,
        "cascadeHealth",
        "This node answers a linked node's probe, with its subtree's health for its parent",
        tag="cascade",
        response=CascadeHealth,
        errors=(401, 403),
        auth="required",
        description="For linked nodes (an assertion signed by their node key).",
    ),
)
