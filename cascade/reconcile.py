"""Reconciliation: does this node's copy of a linked node's entries match that node's
feed now? (``yunnao cascade diff PEER``, ``GET /v1/cascade/peers/{peer}/diff``.)

The peer's feed is read from the start (the same pages replication reads, with this
node's assertion); each capability and version it currently gives this node, less what
this node's own rules refuse, is compared with the rows this node holds through that
peer, by the content hash this node keeps of them (and a version's status):

- **missing**: in the peer's feed, not here (or no longer: a row lost or deleted);
- **extra**: held here through the peer, not in its feed;
- **different**: both, but not the same content;
- **held**: in the peer's feed and held here for review (cascade/review.py): not in
  the catalog on purpose, so neither missing nor repaired.

``repair`` applies the peer's current items for what is missing or different once
more, every one checked as replication checks it (shape, signature, ownership, policy,
content hash), never over a newer state this node holds, and deletes the extras with a
tombstone this node signs (as a resync's sweep does). Replication goes on meanwhile: a
repair that meets a moved checkpoint reads the checkpoint again and retries.

The diff reads the whole feed, so on a province's link it is minutes of work, as an
initial sync is; it holds no lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
import httpx
import sqlalchemy as sa
from pydantic import BaseModel, Field

from yunnao.plugins.errors import CheckpointMoved, NotFound, Unavailable, YunnaoError
from yunnao.registry import replica
from yunnao.registry.db import read_session
from yunnao.registry.hashing import content_hash
from yunnao.registry.tables import CapabilityRow, Peer, VersionRow, utcnow

from .apply import Applier
from .peers import PeerStore
from .policy import refusal
from .sync import Replicator, SyncError

_cap = CapabilityRow.__table__  # type: ignore[attr-defined]
_ver = VersionRow.__table__  # type: ignore[attr-defined]
_peer = Peer.__table__  # type: ignore[attr-defined]


class DiffOut(BaseModel):
    peer: str
    head: int = Field(description="the peer's feed head when it was read")
    compared: int = Field(description="entries in the peer's feed for this node")
    missing: list[str] = Field(description="in the peer's feed, not here")
    extra: list[str] = Field(description="held here through the peer, not in its feed")
    different: list[str] = Field(description="in both, with other content")
    held: list[str] = Field(
        default_factory=list, description="in the peer's feed, held here for review"
    )
    repaired: bool = False
    applied: int = Field(0, description="entries written again by the repair")
    removed: int = Field(0, description="extras the repair deleted")
    rejected: list[str] = Field(default_factory=list, description="why entries were refused")


@dataclass
class _Feed:
    head: int = 0
    items: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> its newest item


def _expected(item: dict[str, Any]) -> str:
    """What this node keeps of ``item``'s entry: the hash it stores (and the status)."""
    entry = item["entry"]
    if item["entity"] == "capability":
        return content_hash(replica._meta(entry))
    body = {f: entry[f] for f in replica.VERSION_FIELDS}
    return f"{content_hash({'version': entry['version'], **body})} {entry['status']}"


class Reconciler:
    def __init__(
        self,
        engine: sa.Engine,
        node_id: str,
        peers: PeerStore,
        applier: Applier,
        replicator: Replicator,
    ) -> None:
        self.engine, self.node_id = engine, node_id
        self.peers, self.applier, self.replicator = peers, applier, replicator

    async def _read(self, peer: Peer) -> _Feed:
        if not peer.url:
            raise Unavailable(
                f"this node has no URL for {peer.id}: it only pushes here, so its feed "
                "cannot be read from this side (link it with its URL to compare)"
            )
        feed, since = _Feed(), 0
        while True:
            try:  # the pages replication reads, as it reads them
                page = await self.replicator._fetch(peer, since, 0)
            except httpx.HTTPError as exc:
                raise Unavailable(f"cannot reach {peer.id}: {type(exc).__name__}") from None
            except (SyncError, YunnaoError) as exc:
                raise Unavailable(f"{peer.id}'s feed: {exc}") from None
            if not isinstance(page, dict):
                raise Unavailable(f"{peer.id}'s feed page is not a feed page")
            items, nxt, head = page.get("items"), page.get("next"), page.get("head")
            if not isinstance(items, list) or not isinstance(nxt, int) or not isinstance(head, int):
                raise Unavailable(f"{peer.id}'s feed page is not a feed page")
            for item in items:
                if isinstance(item, dict) and isinstance(item.get("key"), str):
                    feed.items[item["key"]] = item
            feed.head = head
            if nxt >= head or nxt <= since:
                return feed
            since = nxt

    def _local(self, peer_id: str) -> dict[str, str]:
        """What this node holds through ``peer_id``: key -> kept hash (and status)."""
        out: dict[str, str] = {}
        with self.engine.connect() as conn:
            caps = conn.execute(
                sa.select(_cap.c.id, _cap.c.namespace, _cap.c.name, _cap.c.content_hash).where(
                    _cap.c.via_node == peer_id, _cap.c.deleted_at.is_(None)
                )
            ).all()
            names = {cid: f"{ns}/{name}" for cid, ns, name, _ in caps}
            for cid, _ns, _name, digest in caps:
                out[names[cid]] = digest
            ids = sorted(names)
            for start in range(0, len(ids), 500):
                rows = conn.execute(
                    sa.select(_ver.c.capability_id, _ver.c.version, _ver.c.content_hash,
                              _ver.c.status).where(_ver.c.capability_id.in_(ids[start:start + 500]))
                )  # fmt: skip
                for cid, version, digest, status in rows:
                    out[f"{names[cid]}@{version}"] = f"{digest} {status}"
        return out

    def _waiting(self, peer_id: str) -> set[str]:
        with read_session(self.engine) as s:
            return self.applier.reviews.waiting(s, peer_id)

    def _wanted(self, peer: Peer, feed: _Feed) -> dict[str, dict[str, Any]]:
        """The capabilities and versions in the peer's feed that this node takes."""
        with self.engine.connect() as conn:
            linked = frozenset(conn.execute(sa.select(_peer.c.id)).scalars())
        gone = {k for k, i in feed.items.items() if i.get("entity") == "capability"
                and i.get("op") == "delete"}  # fmt: skip
        wanted = {}
        for key, item in feed.items.items():
            if item.get("entity") not in ("capability", "version") or item.get("op") != "upsert":
                continue
            if key.split("@", 1)[0] in gone:
                continue
            try:
                if refusal(item, this_node=self.node_id, peer=peer.id, relation=peer.relation,
                           linked=linked) is not None:  # fmt: skip
                    continue
                _expected(item)
            except (KeyError, TypeError, AttributeError):
                continue  # not a well-formed entry: replication rejects it, and says so
            wanted[key] = item
        return wanted

    async def diff(self, peer_id: str, *, repair: bool = False) -> DiffOut:
        peer = await anyio.to_thread.run_sync(self.peers.get, peer_id)
        if peer is None:
            raise NotFound(f"no linked node {peer_id}")
        feed = await self._read(peer)
        wanted = self._wanted(peer, feed)
        local = await anyio.to_thread.run_sync(self._local, peer.id)
        waiting = await anyio.to_thread.run_sync(self._waiting, peer.id)
        held = sorted(k for k in wanted if k not in local and k.split("@", 1)[0] in waiting)
        wanted = {k: v for k, v in wanted.items() if k.split("@", 1)[0] not in waiting}
        missing = sorted(k for k in wanted if k not in local)
        extra = sorted(k for k in local if k not in wanted)
        different = sorted(k for k in wanted if k in local and local[k] != _expected(wanted[k]))
        out = DiffOut(peer=peer.id, head=feed.head, compared=len(wanted), missing=missing,
                      extra=extra, different=different, held=held)  # fmt: skip
        if repair and (missing or extra or different):
            await anyio.to_thread.run_sync(self._repair, peer.id, out, wanted)
        return out

    def _repair(self, peer_id: str, out: DiffOut, wanted: dict[str, dict[str, Any]]) -> None:
        # Capabilities before their versions, in the peer's order.
        keys = [*out.missing, *out.different]
        items = sorted((wanted[k] for k in keys), key=_capabilities_first)
        for _ in range(5):
            peer = self.peers.get(peer_id)
            assert peer is not None
            try:
                outcome = self.applier.apply(
                    peer, items, since=peer.checkpoint, next_seq=peer.checkpoint,
                    head=peer.head, advance=False, again=True,
                )  # fmt: skip
                break
            except CheckpointMoved:
                continue  # replication moved on meanwhile: read the checkpoint again
        else:
            raise Unavailable(f"{peer_id}'s checkpoint kept moving: try the repair again")
        out.applied = outcome.applied
        out.rejected = [f"{raw.get('key')}: {reason}" for reason, raw in outcome.rejected][:50]
        caps = [k for k in out.extra if "@" not in k]
        with self.applier.transaction() as s:
            for key in caps:
                namespace, _, name = key.partition("/")
                if replica.delete_capability(s, namespace, name, at=utcnow()):
                    self.applier.log_sweep(s, namespace, name)
                    out.removed += 1
            for key in out.extra:
                if "@" in key and key.split("@", 1)[0] not in caps:
                    out.removed += _delete_version(s, key)
        out.repaired = True


def _capabilities_first(item: dict[str, Any]) -> tuple[bool, int]:
    return item["entity"] != "capability", item.get("origin_seq", 0)


def _delete_version(s: Any, key: str) -> int:
    """Remove one version held through a peer that no longer has it."""
    cap_key, _, version = key.partition("@")
    namespace, _, name = cap_key.partition("/")
    cid = s.execute(
        sa.select(_cap.c.id).where(_cap.c.namespace == namespace, _cap.c.name == name)
    ).scalar()
    if cid is None:
        return 0
    gone = s.execute(
        _ver.delete().where(_ver.c.capability_id == cid, _ver.c.version == version)
    ).rowcount
    replica._refresh_current(s, {cid: utcnow()})  # its current version may have been this
    return gone
