"""``GET /v1/health/nodes``: the live state of this node, its parent and every node below
it, with their titles (the capability's ``health`` object is :mod:`.health_view`)."""

from __future__ import annotations

from datetime import datetime

import anyio.to_thread
import sqlalchemy as sa
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response

from yunnao.plugins.errors import Unauthorized

from .api import Endpoint
from .db import read_session
from .health import HealthBoard, NodeState
from .http import json_response
from .identity.middleware import identity_of
from .names import in_scope
from .tables import Node

# ---------------------------------------------------------------- the nodes


class NodeHealthOut(BaseModel):
    node: str
    title_zh: str = ""
    title_en: str = ""
    relation: str = Field(description="self, parent, child (linked) or below (further down)")
    state: str = Field(description="ok (正常), late (延迟), down (不可达) or unknown")
    reachable: bool
    since: datetime | None = Field(description="when it entered this state")
    checked_at: datetime | None
    latency_ms: float | None
    lag: int | None = Field(description="entries behind in the cascade")
    via: str | None = Field(description="the linked node it is reached through")
    detail: str | None


class NodeHealthList(BaseModel):
    node: str
    items: list[NodeHealthOut]


def node_list(board: HealthBoard, engine: sa.Engine) -> NodeHealthList:
    """This node, its parent and every node below it that is known here."""
    here = board.node_id
    with read_session(engine) as s:
        rows = s.execute(sa.select(Node.id, Node.parent_id, Node.title, Node.title_en)).all()  # type: ignore[call-overload]
    titles = {r[0]: (r[2] or "", r[3] or "") for r in rows}
    parent = next((r[1] for r in rows if r[0] == here), None)
    snapshot = board.snapshot()
    ids = {here, *(n for n in titles if in_scope(n, here))}
    ids |= {n for n in snapshot if n == parent or in_scope(n, here)}
    if parent:
        ids.add(parent)
    items = []
    for node in sorted(ids, key=lambda n: (n != parent, n)):
        health = snapshot.get(node) or board.get(node)
        if node == here:
            relation = "self"
        elif node == parent:
            relation = "parent"
        elif node.count(".") == here.count(".") + 1:
            relation = "child"
        else:
            relation = "below"
        zh, en = titles.get(node, ("", ""))
        items.append(
            NodeHealthOut(
                node=node,
                title_zh=zh,
                title_en=en,
                relation=relation,
                state=health.state.value,
                reachable=health.state != NodeState.DOWN,
                since=health.since,
                checked_at=health.checked_at,
                latency_ms=health.latency_ms,
                lag=health.lag,
                via=health.via,
                detail=health.detail,
            )
        )
    return NodeHealthList(node=here, items=items)


async def health_nodes(request: Request) -> Response:
    if not identity_of(request).authenticated:
        raise Unauthorized("node health is shown to signed-in callers: send a bearer token")
    board: HealthBoard = request.app.state.health
    engine = request.app.state.usage_engine
    return json_response(await anyio.to_thread.run_sync(node_list, board, engine))


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "GET",
        "/v1/health/nodes",
        health_nodes,
        "healthNodes",
        "Live state of this node, its parent and every node below it",
        tag="node",
        response=NodeHealthList,
        errors=(401,),
        auth="required",
        description="ok (正常), late (延迟: its cascade lags), down (不可达: probes fail) or "
        "unknown (never probed: a child that only pushes to this node), with titles.",
    ),
)
