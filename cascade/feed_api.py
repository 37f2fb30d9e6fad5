"""The routes linked nodes call: this node's identity and key (what linking reads), its
signed change feed (a long poll when caught up), the ingest a child pushes its feed to, and
the checkpoint this node holds for that child."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
import anyio.to_thread
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from yunnao.plugins.errors import FieldError, Forbidden, Gone, ValidationFailed
from yunnao.registry.api import Endpoint
from yunnao.registry.http import json_response, parse_query, read_model
from yunnao.registry.identity.middleware import identity_of

from .feed import FEED_DEPTH, Compacted, Feed
from .policy import Reader
from .state import cascade_of, check_operator, linked_node
from .wire import page_body

# ---------------------------------------------------------------- the feed


class ChangesQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: Annotated[int, Field(ge=0, description="the last sequence number already applied")] = 0
    limit: Annotated[int, Field(ge=1, le=2000)] = 100
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


def _reader(request: Request) -> Reader:
    identity = identity_of(request)
    cascade = cascade_of(request)
    if identity.peer is not None:
        peer = cascade.peers.get(identity.peer)
        if peer is None:
            raise Forbidden(f"node {identity.peer} is not linked here")
        return Reader("parent") if peer.relation == "parent" else Reader("child", peer.id)
    check_operator(request)
    return Reader("operator")


async def _page(feed: Feed, since: int, limit: int, reader: Reader) -> Any:
    try:
        return await anyio.to_thread.run_sync(feed.page, since, limit, reader)
    except Compacted as exc:
        raise Gone(
            f"changes through {exc.through} were compacted; read the feed again from since=0",
            extra={"compacted_through": exc.through},
        ) from None


async def changes(request: Request) -> Response:
    reader = await anyio.to_thread.run_sync(_reader, request)
    query = parse_query(ChangesQuery, dict(request.query_params))
    feed = cascade_of(request).feed
    page = await _page(feed, query.since, query.limit, reader)
    if not page.items and page.next >= page.head and query.wait:
        # Long poll: answer as soon as something is appended, or when the wait is over.
        since = page.next
        # When the node is shutting down (``stopping``) it answers now: the follower
        # asks again.
        stopping = getattr(request.app.state, "stopping", None)
        await feed.watcher.wait_past(since, query.wait, stopping)
        page = await _page(feed, since, query.limit, reader)
    # The ChangesPage shape, written directly: a page is mostly items passed on as signed.
    return Response(page_body(feed.node_id, page), media_type="application/json")


# ---------------------------------------------------------------- push


class IngestBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    since: Annotated[int, Field(ge=0, description="the checkpoint this batch continues from")]
    next: Annotated[int, Field(ge=0, description="the sender's feed position after the batch")]
    head: Annotated[int, Field(ge=0, description="the sender's newest sequence number")]
    items: Annotated[list[Any], Field(max_length=5000)]
    reset: Annotated[
        bool,
        Field(
            description="start a resync: the sender's log is compacted past this node's "
            "checkpoint, so it sends everything again from 0"
        ),
    ] = False
    manifest: Annotated[
        list[str] | None,
        Field(
            description="ends a resync: namespace/name of every capability the sender still "
            "has; the others it sent before are deleted here"
        ),
    ] = None


class IngestResult(BaseModel):
    checkpoint: int = Field(description="how far into the sender's feed this node has applied")
    applied: int
    skipped: int
    rejected: int
    resync_pending: bool = Field(description="send the manifest once caught up")


class Checkpoint(BaseModel):
    checkpoint: int
    head: int


async def ingest(request: Request) -> Response:
    cascade = cascade_of(request)
    child = await anyio.to_thread.run_sync(linked_node, request, "child")
    batch = await read_model(request, IngestBatch, cascade.max_batch_bytes, max_depth=FEED_DEPTH)
    if batch.next < batch.since or batch.head < batch.next:
        raise ValidationFailed(
            "a batch runs from since to next, at most head",
            errors=[FieldError("next", "must lie between since and head")],
        )
    peer = await anyio.to_thread.run_sync(cascade.peers.get, child)
    assert peer is not None
    applier = cascade.applier
    if batch.reset:
        await anyio.to_thread.run_sync(lambda: applier.reset(peer, since=batch.since))
        return json_response(
            IngestResult(checkpoint=0, applied=0, skipped=0, rejected=0, resync_pending=True)
        )
    outcome = await anyio.to_thread.run_sync(
        lambda: applier.apply(
            peer, batch.items, since=batch.since, next_seq=batch.next, head=batch.head
        )
    )
    pending = peer.resync_pending
    if batch.manifest is not None and pending and outcome.checkpoint >= batch.head:
        keep = set(batch.manifest)
        await anyio.to_thread.run_sync(
            lambda: applier.sweep(
                peer, keep, since=outcome.checkpoint, to=outcome.checkpoint, head=batch.head
            )
        )
        pending = False
    body = IngestResult(
        checkpoint=outcome.checkpoint,
        applied=outcome.applied,
        skipped=outcome.skipped,
        rejected=len(outcome.rejected),
        resync_pending=pending,
    )
    return json_response(body)


async def checkpoint(request: Request) -> Response:
    cascade = cascade_of(request)
    child = await anyio.to_thread.run_sync(linked_node, request, "child")
    peer = await anyio.to_thread.run_sync(cascade.peers.get, child)
    assert peer is not None
    return json_response(Checkpoint(checkpoint=peer.checkpoint, head=peer.head))


# ---------------------------------------------------------------- this node


class NodeInfo(BaseModel):
    id: str
    title: str
    public_key: str = Field(description="Ed25519, 64 hex digits: what a linking node registers")
    parent: str | None
    children: list[str]


async def node_info(request: Request) -> Response:
    cascade = cascade_of(request)
    peers = await anyio.to_thread.run_sync(cascade.peers.all)
    body = NodeInfo(
        id=cascade.node_id,
        title=cascade.title,
        public_key=cascade.public_key,
        parent=next((p.id for p in peers if p.relation == "parent"), None),
        children=[p.id for p in peers if p.relation == "child"],
    )
    return json_response(body)


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "GET",
        "/v1/cascade/node",
        node_info,
        "cascadeNode",
        "This node: id, public key, parent and children (what linking needs)",
        tag="cascade",
        response=NodeInfo,
        auth="none",
    ),
    Endpoint(
        "GET",
        "/v1/cascade/changes",
        changes,
        "cascadeChanges",
        "This node's changes since a sequence number, signed (long poll with `wait`)",
        tag="cascade",
        query=ChangesQuery,
        response=ChangesPage,
        errors=(400, 401, 403, 410),
        auth="required",
        description="For linked nodes (an assertion signed by their node key) and this "
        "node's operators. A parent sees this node's subtree; a child sees the rest of the "
        "catalog, without its own entries and internal ones not shared sideways. 410 when "
        "the log was compacted past `since`: read again from 0.",
    ),
    Endpoint(
        "POST",
        "/v1/cascade/ingest",
        ingest,
        "cascadeIngest",
        "A child pushes a page of its feed (from the checkpoint this node holds for it)",
        tag="cascade",
        body=IngestBatch,
        response=IngestResult,
        errors=(400, 401, 403, 409, 413, 415, 422),
        auth="required",
        description="409 (with `checkpoint`) when the batch does not start at this node's "
        "checkpoint: nothing is applied, resend from there.",
    ),
    Endpoint(
        "GET",
        "/v1/cascade/checkpoint",
        checkpoint,
        "cascadeCheckpoint",
        "How far into the calling child's feed this node has applied",
        tag="cascade",
        response=Checkpoint,
        errors=(401, 403),
        auth="required",
    ),
)
