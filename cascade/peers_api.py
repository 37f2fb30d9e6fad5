"""The operator's routes of the cascade: link and unlink parent and children, their sync
status and lag, a sync now, the entries linked nodes sent that were refused, and the
feed's compaction."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Literal

import anyio
import anyio.to_thread
import httpx
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from yunnao.plugins.errors import FieldError, NotFound, Unavailable, ValidationFailed
from yunnao.registry.api import Endpoint
from yunnao.registry.http import json_response, parse_query, read_model

from .compaction import compact
from .peers import PeerStatus
from .reconcile import DiffOut, Reconciler
from .state import Cascade, cascade_of, check_operator

# ---------------------------------------------------------------- peers


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
    check_operator(request)
    cascade = cascade_of(request)
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
    check_operator(request, admin=True)
    cascade = cascade_of(request)
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
    check_operator(request, admin=True)
    cascade = cascade_of(request)
    await anyio.to_thread.run_sync(cascade.peers.remove, request.path_params["peer"])
    return Response(status_code=204)


class SyncQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timeout: Annotated[float, Field(gt=0, le=600)] = 120


async def sync_peer(request: Request) -> Response:
    check_operator(request)
    cascade = cascade_of(request)
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


def _reconciler(cascade: Cascade) -> Reconciler:
    return Reconciler(cascade.feed.engine, cascade.node_id, cascade.peers, cascade.applier,
                      cascade.replicator)  # fmt: skip


async def diff_peer(request: Request) -> Response:
    check_operator(request)
    cascade = cascade_of(request)
    found = await _reconciler(cascade).diff(request.path_params["peer"])
    return json_response(found)


async def repair_peer(request: Request) -> Response:
    check_operator(request, admin=True)
    cascade = cascade_of(request)
    found = await _reconciler(cascade).diff(request.path_params["peer"], repair=True)
    return json_response(found)


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
    check_operator(request)
    cascade = cascade_of(request)
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
    check_operator(request, admin=True)
    cascade = cascade_of(request)
    body = await read_model(request, CompactRequest, 4096)
    through, removed = await anyio.to_thread.run_sync(
        lambda: compact(cascade.feed, keep_days=body.keep_days)
    )
    return json_response(CompactResult(compacted_through=through, removed=removed))


ENDPOINTS: tuple[Endpoint, ...] = (
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
        "/v1/cascade/peers/{peer}/diff",
        diff_peer,
        "cascadeDiff",
        "Compare this node's copy of a linked node's entries with its feed now",
        tag="cascade",
        response=DiffOut,
        errors=(401, 403, 404, 503),
        auth="required",
        description="Reads the peer's whole feed (as replication does) and names the "
        "capabilities and versions missing here, extra here, and different (by content "
        "hash). Replication goes on meanwhile.",
    ),
    Endpoint(
        "POST",
        "/v1/cascade/peers/{peer}/repair",
        repair_peer,
        "cascadeRepair",
        "Fetch again what the diff names, every entry checked as replication checks it",
        tag="cascade",
        response=DiffOut,
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
