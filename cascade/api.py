"""HTTP routes of the cascade: the feed linked nodes read, the ingest a child pushes to,
and the operator's peer management and status."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import anyio
import anyio.to_thread
import httpx
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from yunnao.plugins.errors import (
    FieldError,
    Forbidden,
    Gone,
    NotFound,
    Unauthorized,
    Unavailable,
    ValidationFailed,
)
from yunnao.registry.access import Action, require
from yunnao.registry.api import Endpoint
from yunnao.registry.auth import identity_of
from yunnao.registry.http import json_response, parse_query, read_model

from .apply import Applier
from .compaction import compact
from .feed import FEED_DEPTH, Compacted, Feed
from .peers import PeerStatus, PeerStore
from .policy import Reader
from .sync import Replicator


@dataclass
class Cascade:
    """What the cascade routes work with (``app.state.cascade``)."""

    node_id: str
    title: str
    public_key: str
    feed: Feed
    peers: PeerStore
    applier: Applier
    replicator: Replicator
    max_batch_bytes: int = 64 << 20


def _cascade(request: Request) -> Cascade:
    return request.app.state.cascade


def _operator(request: Request, *, admin: bool = False) -> None:
    """A local token of this node's operators (admin for changes)."""
    action = Action.MANAGE_NODE if admin else Action.READ_NODE
    require(identity_of(request), action, _cascade(request).node_id)


def _linked(request: Request, relation: str | None = None) -> str:
    """The linked node that sent the request (optionally: of ``relation``)."""
    identity = identity_of(request)
    if identity.peer is None:
        raise Unauthorized("this is for linked nodes: send an assertion signed by your node key")
    if relation is not None:
        peer = _cascade(request).peers.get(identity.peer)
        if peer is None or peer.relation != relation:
            raise Forbidden(f"node {identity.peer} is not linked here as a {relation}")
    return identity.peer


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
    cascade = _cascade(request)
    if identity.peer is not None:
        peer = cascade.peers.get(identity.peer)
        if peer is None:
            raise Forbidden(f"node {identity.peer} is not linked here")
        return Reader("parent") if peer.relation == "parent" else Reader("child", peer.id)
    _operator(request)
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
    feed = _cascade(request).feed
    page = await _page(feed, query.since, query.limit, reader)
    if not page.items and page.next >= page.head and query.wait:
        # Long poll: answer as soon as something is appended, or when the wait is over.
        since = page.next
        stopping = getattr(request.app.state, "stopping", None)
        with anyio.move_on_after(query.wait):
            while await anyio.to_thread.run_sync(feed.head) <= since:
                if stopping is not None and stopping.is_set():
                    break  # the node is shutting down: answer now, the follower asks again
                await anyio.sleep(0.02)
        page = await _page(feed, since, query.limit, reader)
    body = ChangesPage(node=feed.node_id, items=page.items, next=page.next, head=page.head)
    return json_response(body)


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
    cascade = _cascade(request)
    child = await anyio.to_thread.run_sync(_linked, request, "child")
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
    cascade = _cascade(request)
    child = await anyio.to_thread.run_sync(_linked, request, "child")
    peer = await anyio.to_thread.run_sync(cascade.peers.get, child)
    assert peer is not None
    return json_response(Checkpoint(checkpoint=peer.checkpoint, head=peer.head))


# ---------------------------------------------------------------- this node and its peers


class NodeInfo(BaseModel):
    id: str
    title: str
    public_key: str = Field(description="Ed25519, 64 hex digits: what a linking node registers")
    parent: str | None
    children: list[str]


async def node_info(request: Request) -> Response:
    cascade = _cascade(request)
    peers = await anyio.to_thread.run_sync(cascade.peers.all)
    body = NodeInfo(
        id=cascade.node_id,
        title=cascade.title,
        public_key=cascade.public_key,
        parent=next((p.id for p in peers if p.relation == "parent"), None),
        children=[p.id for p in peers if p.relation == "child"],
    )
    return json_response(body)


class PeerOut(BaseModel):
    id: str
    relation: Literal["parent", "child"]
    url: str | None
    public_key: str
    pull: bool
    push: bool
    checkpoint: int = Field(description="how far into the peer's feed this node has applied")
    head: int = Field(description="the peer's newest sequence number, last seen")
    lag_entries: int
    lag_seconds: float | None
    last_sync_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    failures: int = Field(description="consecutive failed syncs")
    applied: int
    rejected: int
    resyncs: int


class PeerList(BaseModel):
    node: str
    items: list[PeerOut]


class PeerLink(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Annotated[str, Field(description="the peer's node id")]
    relation: Literal["parent", "child"]
    url: Annotated[str | None, Field(max_length=2000, description="the peer's base URL")] = None
    public_key: Annotated[
        str | None,
        Field(description="its Ed25519 public key (hex); fetched from url when left out"),
    ] = None
    pull: Annotated[
        bool | None,
        Field(description="read its feed (default: yes for a child, no for the parent)"),
    ] = None
    push: Annotated[bool, Field(description="send this node's feed to the parent")] = False


def _peer_out(status: PeerStatus) -> PeerOut:
    return PeerOut(**asdict(status))


async def list_peers(request: Request) -> Response:
    _operator(request)
    cascade = _cascade(request)
    peers = await anyio.to_thread.run_sync(cascade.peers.all)
    items = [_peer_out(PeerStatus.of(p)) for p in peers]
    return json_response(PeerList(node=cascade.node_id, items=items))


async def _fetch_key(url: str, peer_id: str) -> tuple[str, str]:
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            resp = await client.get(f"{url.rstrip('/')}/v1/cascade/node")
        info = resp.json() if resp.status_code == 200 else None
    except (httpx.HTTPError, ValueError) as exc:
        raise Unavailable(f"cannot read the key of {peer_id} at {url}: {exc}") from None
    if not info or "public_key" not in info:
        raise Unavailable(f"{url} answered {resp.status_code} for /v1/cascade/node")
    if info.get("id") != peer_id:
        raise ValidationFailed(
            f"{url} is node {info.get('id')!r}, not {peer_id!r}",
            errors=[FieldError("id", f"the node at url is {info.get('id')!r}")],
        )
    return info["public_key"], info.get("title", "")


async def add_peer(request: Request) -> Response:
    _operator(request, admin=True)
    cascade = _cascade(request)
    link = await read_model(request, PeerLink, 64 << 10)
    url = link.url.rstrip("/") if link.url else None
    key, title = link.public_key, ""
    if key is None:
        if url is None:
            raise ValidationFailed(
                "give the peer's public key, or its url to read the key from",
                errors=[FieldError("public_key", "required without url")],
            )
        key, title = await _fetch_key(url, link.id)
    pull = link.pull if link.pull is not None else link.relation == "child"
    peer = await anyio.to_thread.run_sync(
        lambda: cascade.peers.add(
            link.id,
            relation=link.relation,
            public_key=key,
            url=url,
            pull=pull,
            push=link.push,
            title=title,
        )
    )
    return json_response(_peer_out(PeerStatus.of(peer)), status=201)


async def remove_peer(request: Request) -> Response:
    _operator(request, admin=True)
    cascade = _cascade(request)
    await anyio.to_thread.run_sync(cascade.peers.remove, request.path_params["peer"])
    return Response(status_code=204)


class SyncQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timeout: Annotated[float, Field(gt=0, le=600)] = 120


async def sync_peer(request: Request) -> Response:
    _operator(request)
    cascade = _cascade(request)
    query = parse_query(SyncQuery, dict(request.query_params))
    peer_id = request.path_params["peer"]
    with anyio.fail_after(query.timeout):
        try:
            await cascade.replicator.sync(peer_id)
        except NotFound:
            raise
        except Exception as exc:  # the peer's failure, as the operator should see it
            detail = str(exc) or type(exc).__name__
            if isinstance(exc, httpx.HTTPError):
                detail = f"cannot reach {peer_id}: {type(exc).__name__} {exc}"
            await anyio.to_thread.run_sync(cascade.peers.failed, peer_id, detail)
            raise Unavailable(f"sync with {peer_id} failed: {detail}") from None
    peer = await anyio.to_thread.run_sync(cascade.peers.get, peer_id)
    assert peer is not None
    return json_response(_peer_out(PeerStatus.of(peer)))


class RejectionsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    peer: str | None = None
    limit: Annotated[int, Field(ge=1, le=500)] = 50


class RejectionOut(BaseModel):
    at: datetime
    peer: str
    origin: str | None
    entity: str | None
    key: str | None
    reason: str


class RejectionList(BaseModel):
    items: list[RejectionOut]


async def rejections(request: Request) -> Response:
    _operator(request)
    cascade = _cascade(request)
    query = parse_query(RejectionsQuery, dict(request.query_params))
    rows = await anyio.to_thread.run_sync(lambda: cascade.peers.rejections(query.peer, query.limit))
    items = [
        RejectionOut(
            at=r.at, peer=r.peer, origin=r.origin, entity=r.entity, key=r.key, reason=r.reason
        )
        for r in rows
    ]
    return json_response(RejectionList(items=items))


class CompactRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keep_days: Annotated[
        float,
        Field(ge=0, le=36_500, description="keep superseded changes and tombstones this recent"),
    ] = 30


class CompactResult(BaseModel):
    compacted_through: int
    removed: int


async def compact_log(request: Request) -> Response:
    _operator(request, admin=True)
    cascade = _cascade(request)
    body = await read_model(request, CompactRequest, 4096)
    through, removed = await anyio.to_thread.run_sync(
        lambda: compact(cascade.feed, keep_days=body.keep_days)
    )
    return json_response(CompactResult(compacted_through=through, removed=removed))


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
    Endpoint(
        "GET",
        "/v1/cascade/peers",
        list_peers,
        "cascadePeers",
        "Linked nodes with sync status: checkpoint, lag (entries, seconds), errors, rejections",
        tag="cascade",
        response=PeerList,
        errors=(401, 403),
        auth="required",
    ),
    Endpoint(
        "POST",
        "/v1/cascade/peers",
        add_peer,
        "cascadeAddPeer",
        "Link a child or the parent (its key is read from its url unless given)",
        tag="cascade",
        body=PeerLink,
        response=PeerOut,
        status=201,
        errors=(400, 401, 403, 409, 415, 422, 503),
        auth="required",
    ),
    Endpoint(
        "DELETE",
        "/v1/cascade/peers/{peer}",
        remove_peer,
        "cascadeRemovePeer",
        "Unlink a node (the entries it sent stay)",
        tag="cascade",
        status=204,
        errors=(401, 403, 404),
        auth="required",
    ),
    Endpoint(
        "POST",
        "/v1/cascade/peers/{peer}/sync",
        sync_peer,
        "cascadeSync",
        "Catch up with a linked node now, and return its status",
        tag="cascade",
        query=SyncQuery,
        response=PeerOut,
        errors=(401, 403, 404, 503),
        auth="required",
    ),
    Endpoint(
        "GET",
        "/v1/cascade/rejections",
        rejections,
        "cascadeRejections",
        "Entries linked nodes sent that were not applied, newest first, with the reason",
        tag="cascade",
        query=RejectionsQuery,
        response=RejectionList,
        errors=(400, 401, 403),
        auth="required",
    ),
    Endpoint(
        "POST",
        "/v1/cascade/compact",
        compact_log,
        "cascadeCompact",
        "Drop superseded changes and tombstones older than keep_days from the feed",
        tag="cascade",
        body=CompactRequest,
        response=CompactResult,
        errors=(401, 403, 415, 422),
        auth="required",
    ),
)
