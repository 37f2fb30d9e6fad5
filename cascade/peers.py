"""Linked nodes: a node's parent and children, their keys, checkpoints and sync status.

Linking is done once on each side: the parent adds the child (``yunnao cascade
add-child``), the child adds the parent (``add-parent``). Each side registers the
other's public key; registering a key also appends a ``node`` change, signed by this
node, so the nodes above (and, following down, below) learn the key and can verify
that node's entries.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlmodel import select

from yunnao.plugins.errors import Conflict, FieldError, NotFound, ValidationFailed
from yunnao.registry.db import read_session, row_write
from yunnao.registry.names import NODE_ID_RULE, is_node_id
from yunnao.registry.store import RegistryStore
from yunnao.registry.tables import Node, Peer, Rejection, utcnow

from .feed import append_signed
from .policy import below

_peer = Peer.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class PeerStatus:
    """One linked node as operators see it."""

    id: str
    relation: str
    url: str | None
    public_key: str
    pull: bool
    push: bool
    checkpoint: int
    head: int
    lag_entries: int
    lag_seconds: float | None
    last_sync_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    failures: int
    applied: int
    rejected: int
    resyncs: int

    @classmethod
    def of(cls, peer: Peer, now: datetime | None = None) -> PeerStatus:
        now = now or utcnow()
        lag = max(0, peer.head - peer.checkpoint)
        if not peer.pull and not (peer.relation == "child" and peer.last_sync_at):
            seconds = None  # nothing is read from this peer
        elif lag == 0:
            seconds = 0.0
        else:
            since = peer.caught_up_at or peer.created_at
            seconds = round((now - since).total_seconds(), 3)
        return cls(
            id=peer.id,
            relation=peer.relation,
            url=peer.url,
            public_key=peer.public_key,
            pull=peer.pull,
            push=peer.push,
            checkpoint=peer.checkpoint,
            head=peer.head,
            lag_entries=lag,
            lag_seconds=seconds,
            last_sync_at=peer.last_sync_at,
            last_error=peer.last_error,
            last_error_at=peer.last_error_at,
            failures=peer.failures,
            applied=peer.applied,
            rejected=peer.rejected,
            resyncs=peer.resyncs,
        )


class PeerStore:
    def __init__(self, store: RegistryStore, key: Ed25519PrivateKey) -> None:
        self.store = store
        self.engine = store.engine
        self.node_id = store.node_id
        self.key = key
        self.version = 0  # bumped when peers are added or removed (the sync loops restart)

    # ------------------------------------------------------------ reads

    def all(self) -> list[Peer]:
        with read_session(self.engine) as s:
            return list(s.exec(select(Peer).order_by(Peer.relation, Peer.id)).all())

    def get(self, peer_id: str) -> Peer | None:
        with read_session(self.engine) as s:
            return s.get(Peer, peer_id)

    def rejections(self, peer: str | None = None, limit: int = 50) -> list[Rejection]:
        with read_session(self.engine) as s:
            stmt = select(Rejection).order_by(sa.desc(Rejection.id)).limit(limit)  # type: ignore[arg-type]
            if peer:
                stmt = stmt.where(Rejection.peer == peer)
            return list(s.exec(stmt).all())

    # ------------------------------------------------------------ linking

    def add(
        self,
        peer_id: str,
        *,
        relation: str,
        public_key: str,
        url: str | None,
        pull: bool,
        push: bool,
        title: str = "",
    ) -> Peer:
        """Link ``peer_id`` (a child or the parent) with its public key; linking again
        updates the URL, modes and key and keeps the checkpoint."""
        self._check(peer_id, relation, public_key, url, pull, push)
        with self.store.transaction() as s:
            peer = s.get(Peer, peer_id)
            if relation == "parent":
                other = s.exec(
                    select(Peer).where(Peer.relation == "parent", Peer.id != peer_id)
                ).first()
                if other is not None:
                    raise Conflict(f"this node already has parent {other.id}; remove it first")
            if peer is not None and peer.relation != relation:
                raise Conflict(f"{peer_id} is linked as this node's {peer.relation} already")
            if peer is None:
                peer = Peer(id=peer_id, relation=relation, public_key=public_key)
            peer.url, peer.pull, peer.push = url, pull, push
            rekeyed = peer.public_key != public_key
            peer.public_key = public_key
            s.add(peer)
            node = s.get(Node, peer_id)
            parent_of_peer = self.node_id if relation == "child" else None
            if node is None:
                node = Node(id=peer_id, parent_id=parent_of_peer, title=title)
            logged = node.public_key == public_key and not rekeyed
            node.public_key = public_key
            node.title = title or node.title
            s.add(node)
            s.flush()
            if not logged:
                # Vouch for the key: nodes that trust this one learn it in order.
                entry = {
                    "id": peer_id,
                    "parent_id": node.parent_id,
                    "public_key": public_key,
                    "title": node.title,
                }
                append_signed(
                    s,
                    self.key,
                    origin=self.node_id,
                    entity="node",
                    item_key=peer_id,
                    op="upsert",
                    entry=entry,
                )
        self.version += 1
        found = self.get(peer_id)
        assert found is not None
        return found

    def remove(self, peer_id: str) -> None:
        """Unlink a peer; its entries stay until they are deleted or it is linked again."""
        with row_write(self.engine) as conn:
            if conn.execute(_peer.delete().where(_peer.c.id == peer_id)).rowcount == 0:
                raise NotFound(f"no linked node {peer_id}")
        self.version += 1

    def _check(
        self, peer_id: str, relation: str, public_key: str, url: str | None, pull: bool, push: bool
    ) -> None:
        errors = []
        if not is_node_id(peer_id):
            errors.append(FieldError("id", f"not a node id: {NODE_ID_RULE}"))
        elif relation == "child" and not below(peer_id, self.node_id):
            errors.append(
                FieldError(
                    "id", f"a child's id is this node's id plus a segment ({self.node_id}.*)"
                )
            )
        elif relation == "parent" and not below(self.node_id, peer_id):
            errors.append(FieldError("id", f"{peer_id} is not above this node ({self.node_id})"))
        try:
            if len(bytes.fromhex(public_key)) != 32:
                raise ValueError
        except ValueError:
            errors.append(FieldError("public_key", "the peer's Ed25519 public key: 64 hex digits"))
        if (pull or push) and not url:
            errors.append(FieldError("url", "needed to pull from or push to the peer"))
        if relation == "child" and push:
            errors.append(FieldError("push", "a node pushes to its parent, not to a child"))
        if errors:
            raise ValidationFailed(errors[0].message, errors=errors)

    # ------------------------------------------------------------ bookkeeping

    def failed(self, peer_id: str, error: str) -> int:
        """Record a failed sync; the number of consecutive failures."""
        with row_write(self.engine) as conn:
            conn.execute(
                _peer.update()
                .where(_peer.c.id == peer_id)
                .values(
                    last_error=error[:2000],
                    last_error_at=utcnow(),
                    failures=_peer.c.failures + 1,
                )
            )
            found = conn.execute(sa.select(_peer.c.failures).where(_peer.c.id == peer_id)).first()
        return found.failures if found else 0

    def pushed(self, peer_id: str) -> None:
        """Record that the parent has everything of this node's feed (its lag is on the
        parent's own status, which keeps the checkpoint)."""
        values = {"last_sync_at": utcnow(), "failures": 0, "last_error": None}
        with row_write(self.engine) as conn:
            conn.execute(_peer.update().where(_peer.c.id == peer_id).values(**values))


class PeerKeys:
    """Linked peers' keys and URLs, cached for the request path (the auth middleware
    and the remote runtime); re-read when this process links or unlinks a node, and
    every few seconds for links made by other processes sharing the store."""

    def __init__(self, peers: PeerStore, ttl: float = 5.0) -> None:
        self.peers = peers
        self.ttl = ttl
        self._at = -1e9
        self._version = -1
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._urls: dict[str, str | None] = {}
        self._relations: dict[str, str] = {}

    def _fresh(self) -> None:
        now = time.monotonic()
        if self._version == self.peers.version and now - self._at < self.ttl:
            return
        version = self.peers.version
        linked = self.peers.all()
        self._keys = {
            p.id: Ed25519PublicKey.from_public_bytes(bytes.fromhex(p.public_key)) for p in linked
        }
        self._urls = {p.id: p.url for p in linked}
        self._relations = {p.id: p.relation for p in linked}
        self._at, self._version = now, version

    def key(self, node: str) -> Ed25519PublicKey | None:
        self._fresh()
        return self._keys.get(node)

    def url(self, node: str) -> str | None:
        self._fresh()
        return self._urls.get(node)

    def relation(self, node: str) -> str | None:
        """``child`` or ``parent``: what linked node ``node`` is to this one (None: not
        linked). It decides whose callers the node may vouch for."""
        self._fresh()
        return self._relations.get(node)
