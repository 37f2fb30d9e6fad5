"""The change feed: this node's change log as signed, self-contained items.

A linked node reads ``GET /v1/cascade/changes?since=SEQ`` (or this node pushes the same
pages) and applies what it gets in order. Each item carries the *current* state of what
changed (the full entry of an upsert, or a tombstone), its origin node and origin
sequence, its content hash and the origin's Ed25519 signature over all of that.
Replication is state-based: an upsert whose entity has changed again since is left out
(a later item carries the newer state), and applying an item twice changes nothing.

Items this node applied from a peer are passed on exactly as they arrived, so a node
further up verifies their origin's own signature; what may go to whom is
:mod:`~yunnao.cascade.policy`'s. A capability a following child may no longer have
(narrowed to ``internal`` or ``restricted`` since) goes to it as a tombstone this node
signs, so the copy it may hold from before goes too.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlmodel import Session, col, select

from yunnao.registry import schemas
from yunnao.registry.db import read_session, write_session
from yunnao.registry.hashing import content_hash
from yunnao.registry.http import MAX_JSON_DEPTH
from yunnao.registry.names import namespace_node
from yunnao.registry.tables import (
    CapabilityRow,
    CascadeState,
    Change,
    Namespace,
    Node,
    VersionRow,
)

from . import feed_rows as lookups
from .policy import Reader, may_send, share_of, withdrawn
from .signing import sign, verify
from .watch import HeadWatcher

log = logging.getLogger("yunnao.cascade")

META_FIELDS = tuple(schemas.CapabilityMeta.model_fields)
VERSION_FIELDS = tuple(schemas.VersionSpec.model_fields)
COMPACTED_THROUGH = "compacted_through"
# How deep a feed page or pushed batch may nest: items wrap entries a department
# published (up to MAX_JSON_DEPTH deep) in a few levels.
FEED_DEPTH = MAX_JSON_DEPTH + 32


@dataclass(frozen=True)
class FeedPage:
    items: list[dict[str, Any]]
    next: int  # pass as ``since`` for the next page (covers items left out, too)
    head: int  # the newest sequence number of the log now


class Compacted(Exception):
    """The log no longer holds everything after ``since``: read it again from 0."""

    def __init__(self, since: int, through: int) -> None:
        super().__init__(f"changes through {through} were compacted; {since} is older")
        self.since = since
        self.through = through


def signed_part(item: dict[str, Any]) -> dict[str, Any]:
    """What the origin signs of an item: everything but the signature itself."""
    return {k: v for k, v in item.items() if k != "signature"}


def make_item(
    key: Ed25519PrivateKey,
    *,
    origin: str,
    origin_seq: int,
    entity: str,
    item_key: str,
    op: str,
    entry: dict[str, Any],
    at: str,
) -> dict[str, Any]:
    """A signed feed item."""
    item: dict[str, Any] = {
        "origin": origin,
        "origin_seq": origin_seq,
        "entity": entity,
        "key": item_key,
        "op": op,
        "content_hash": content_hash(entry),
        "entry": entry,
        "at": at,
    }
    item["signature"] = sign(key, item)
    return item


def append_signed(
    s: Session,
    key: Ed25519PrivateKey,
    *,
    origin: str,
    entity: str,
    item_key: str,
    op: str,
    entry: dict[str, Any],
) -> Change:
    """Append a change whose item this node signs now and keeps (a node key it vouches
    for, a tombstone of a resync's sweep): the feed passes it on as stored."""
    change = Change(entity=entity, key=item_key, op=op, content_hash="", origin_node=origin)
    s.add(change)
    s.flush()  # the sequence number is part of the signed item
    item = make_item(
        key,
        origin=origin,
        origin_seq=change.seq,  # type: ignore[arg-type]
        entity=entity,
        item_key=item_key,
        op=op,
        entry=entry,
        at=change.created_at.isoformat(),
    )
    change.origin_seq, change.item, change.content_hash = change.seq, item, item["content_hash"]
    s.add(change)
    return change


def compacted_through(s: Session) -> int:
    state = s.get(CascadeState, COMPACTED_THROUGH)
    return state.value if state is not None else 0


class Feed:
    def __init__(
        self,
        engine: sa.Engine,
        node_id: str,
        key: Ed25519PrivateKey,
        *,
        share_internal: bool = False,
    ) -> None:
        self.engine = engine
        self.node_id = node_id
        self.key = key
        self.share_internal = share_internal
        # Long polls wait on this one watcher; the store notifies it after each write.
        self.watcher = HeadWatcher(self.head)
        self._public = key.public_key()
        self._key_checked = False  # whether kept items were checked against this key
        self._key_lock = threading.Lock()

    def head(self) -> int:
        with read_session(self.engine) as s:
            return s.exec(select(sa.func.max(Change.seq))).one() or 0

    def page(self, since: int, limit: int, reader: Reader | None = None) -> FeedPage:
        """Up to ``limit`` changes after ``since`` as the items ``reader`` may have
        (default: what a parent may have). Raises :class:`Compacted` when ``since`` is
        older than what the log still holds."""
        reader = reader or Reader("parent")
        unsigned: list[tuple[int, dict[str, Any]]] = []
        if not self._key_checked:
            with write_session(self.engine) as s:
                self._check_key(s)
        with read_session(self.engine) as s:
            through = compacted_through(s)
            if 0 < since < through:
                raise Compacted(since, through)
            rows = lookups.changes(s, lookups.change_table.c.seq > since, limit)
            head = s.exec(select(sa.func.max(Change.seq))).one() or 0
            items: list[dict[str, Any]] = []
            withdrawals: set[int] = set()
            for seq, item in self._items(s, rows, unsigned):
                if may_send(item, this_node=self.node_id, reader=reader):
                    items.append(item)
                elif seq not in withdrawals and withdrawn(
                    item, this_node=self.node_id, reader=reader
                ):
                    withdrawals.add(seq)
                    items.append(self._withdrawal(item, seq))
            last = rows[-1].seq if rows else since
        self._write_back(unsigned)
        return FeedPage(items=items, next=max(last or since, since), head=head)

    def _withdrawal(self, item: dict[str, Any], seq: int) -> dict[str, Any]:
        """The tombstone a follower gets instead of ``item`` (the change ``seq`` of this
        node's log): signed by this node, numbered in its log, so applying it twice is a
        no-op and a later upsert of the entry from its origin still applies."""
        entry = item["entry"]
        return make_item(
            self.key,
            origin=self.node_id,
            origin_seq=seq,
            entity="capability",
            item_key=item["key"],
            op="delete",
            entry={"namespace": entry["namespace"], "name": entry["name"]},
            at=item["at"],
        )

    def manifest(self) -> list[str]:
        """``namespace/name`` of every live capability this node's feed gives its parent:
        what a parent keeps at the end of a resync."""
        with read_session(self.engine) as s:
            rows = s.exec(
                select(CapabilityRow.namespace, CapabilityRow.name).where(
                    col(CapabilityRow.deleted_at).is_(None),
                    CapabilityRow.classification != "restricted",
                    sa.or_(
                        CapabilityRow.origin_node == self.node_id,
                        col(CapabilityRow.origin_node).startswith(
                            self.node_id + ".", autoescape=True
                        ),
                    ),
                )
            ).all()
        return [f"{ns}/{name}" for ns, name in rows]

    # ------------------------------------------------------------ items

    def _items(
        self, s: Session, rows: list[Change], unsigned: list[tuple[int, dict[str, Any]]]
    ) -> list[tuple[int, dict[str, Any]]]:
        """The items of ``rows`` (in order), leaving out superseded changes, each with the
        sequence number of its change here; ``unsigned`` collects the items signed now
        that could have been signed when written."""
        latest = lookups.latest_seqs(
            s, {(r.entity, r.key) for r in rows} | lookups.capability_keys(rows)
        )
        local = [r for r in rows if self._local(r) and latest.get((r.entity, r.key)) == r.seq]
        relayed_versions = [r for r in rows if not self._local(r) and r.entity == "version"]
        caps = lookups.capabilities(
            s,
            [
                lookups.cap_key(r.key)
                for r in [*local, *relayed_versions]
                if r.entity not in ("namespace", "node")
            ],
        )
        versions = lookups.versions(s, caps, [r.key for r in local if r.entity == "version"])
        spaces = lookups.namespaces(s, [r.key for r in local if r.entity == "namespace"])
        nodes = lookups.nodes(s, [r.key for r in local if r.entity == "node"])
        early = lookups.early_capability_rows(s, rows, latest)
        caps.update(
            lookups.capabilities(
                s, [lookups.cap_key(r.key) for r in early.values() if self._local(r)]
            )
        )
        out: list[tuple[int, dict[str, Any]]] = []
        sent: set[tuple[str, int]] = set()

        def add(found: tuple[int, dict[str, Any] | None] | None) -> None:
            if found is None:
                return
            seq, item = found
            if item is not None and (item["key"], item["origin_seq"]) not in sent:
                sent.add((item["key"], item["origin_seq"]))
                out.append((seq, item))

        for change in rows:
            seq: int = change.seq  # type: ignore[assignment]
            local = self._local(change)
            if local and latest.get((change.entity, change.key)) != seq:
                continue  # superseded: a later change carries the newer state
            if not local:
                # Passed on as it arrived. Node keys always go, in order, so a key
                # arrives before the entries it signs.
                if change.entity == "node" or latest.get((change.entity, change.key)) == change.seq:
                    if change.entity == "version":
                        row = caps.get(lookups.cap_key(change.key))
                        if row is None or row.deleted_at is not None:
                            continue  # its capability went since
                        add(self._early(early, change, caps, unsigned))
                    add((seq, change.item))
                continue
            if change.entity == "version":
                # The version's capability changed again later: send its current state
                # first, so the receiver has the capability before its version. (The
                # same item follows again at its own place, where it is a no-op.)
                add(self._early(early, change, caps, unsigned))
            add((seq, self._local_item(change, caps, versions, spaces, nodes, unsigned)))
        return out

    def _early(
        self,
        early: dict[str, Change],
        change: Change,
        caps: dict[tuple[str, str], CapabilityRow],
        unsigned: list[tuple[int, dict[str, Any]]],
    ) -> tuple[int, dict[str, Any] | None] | None:
        cap_change = early.get(lookups.cap_key_text(change.key))
        if cap_change is None or cap_change.seq < change.seq:  # type: ignore[operator]
            return None
        seq: int = cap_change.seq  # type: ignore[assignment]
        if not self._local(cap_change):
            return seq, cap_change.item
        return seq, self._local_item(cap_change, caps, {}, {}, None, unsigned)

    def _local_item(
        self,
        change: Change,
        caps: dict[tuple[str, str], CapabilityRow],
        versions: dict[str, VersionRow],
        spaces: dict[str, Namespace],
        nodes: dict[str, Node] | None = None,
        unsigned: list[tuple[int, dict[str, Any]]] | None = None,
    ) -> dict[str, Any] | None:
        """``change``'s item, signed; ``unsigned`` collects those signed now that could
        have been signed when written."""
        entry, op = self._entry(change, caps, versions, spaces, nodes or {})
        if entry is None:
            return None
        signed = change.item
        if (
            signed is not None
            and signed["op"] == op
            and signed["content_hash"] == content_hash(entry)
        ):
            return signed  # signed when written, and still the entry's state
        item = make_item(
            self.key,
            origin=change.origin_node,
            origin_seq=change.seq,  # type: ignore[arg-type]
            entity=change.entity,
            item_key=change.key,
            op=op,
            entry=entry,
            at=change.created_at.isoformat(),
        )
        if unsigned is not None and self._presignable(change):
            unsigned.append((change.seq, item))  # type: ignore[arg-type]
        return item

    # ------------------------------------------------------------ signing when written

    def _presignable(self, change: Change) -> bool:
        """A change this node signs when it is written: an upsert or deletion of one of
        its own capabilities or versions (the bulk of a feed)."""
        return (
            change.entity in ("capability", "version")
            and change.origin_node == self.node_id
            and namespace_node(change.key.partition("/")[0]) == self.node_id
        )

    def _local(self, change: Change) -> bool:
        """Whether the feed makes ``change``'s item from the current state of what it
        changed (this node's own writes) rather than passing a stored item on as it
        arrived (items from other nodes, and those this node signed and keeps: a node key
        it vouches for, a resync's tombstone, its usage). An own capability or version
        signed when written is still made from the current state: its stored item is
        reused only while it holds that state."""
        return change.item is None or self._presignable(change)

    def sign_logged(self, s: Session, changes: list[Change]) -> None:
        """Sign the items of ``changes`` (just logged by a write, flushed, in its
        transaction ``s``) and keep them with the changes, so reading the feed need not
        sign them (the registry store calls this: :attr:`RegistryStore.signer`)."""
        mine = [c for c in changes if self._presignable(c)]
        if mine and not self._key_checked:
            self._check_key(s)
        newest = {(c.entity, c.key): c for c in mine}  # one write may log a key twice
        mine = [c for c in mine if newest[(c.entity, c.key)] is c]
        if not mine:
            return
        caps = lookups.capabilities(s, [lookups.cap_key(c.key) for c in mine])
        versions = lookups.versions(s, caps, [c.key for c in mine if c.entity == "version"])
        rows = []
        for change in mine:
            item = self._local_item(change, caps, versions, {})
            if item is not None:
                rows.append({"b_seq": change.seq, "item": item})
        lookups.keep_items(s, rows)

    def _check_key(self, s: Session) -> None:
        """Once per process, in write transaction ``s``: when the items this node kept
        were signed with another key (the node key was replaced), forget them, so each
        is signed again with this one when next read."""
        with self._key_lock:
            if self._key_checked:
                return
            newest = s.exec(
                select(Change.item)
                .where(Change.origin_node == self.node_id, col(Change.item).is_not(None))
                .order_by(col(Change.seq).desc())
                .limit(50)
            ).all()
            probe = next((item for item in newest if item is not None), None)
            if probe is not None and not verify(
                self._public, signed_part(probe), probe["signature"]
            ):
                kept = s.exec(
                    select(Change.seq, Change.entity, Change.key, Change.origin_node).where(
                        Change.origin_node == self.node_id,
                        col(Change.entity).in_(("capability", "version")),
                        col(Change.item).is_not(None),
                    )
                ).all()
                stale = [
                    {"b_seq": seq, "item": None}
                    for seq, entity, key, origin in kept
                    if self._presignable(Change(entity=entity, key=key, origin_node=origin))
                ]
                log.warning("the node key changed: %d kept feed items are signed again", len(stale))
                lookups.keep_items(s, stale)
            self._key_checked = True

    def _write_back(self, unsigned: list[tuple[int, dict[str, Any]]]) -> None:
        """Keep the items this node signed on reading changes written before it signed
        when writing (or by a process without the signer), so the next read need not."""
        if not unsigned:
            return
        try:
            with write_session(self.engine) as s:
                lookups.keep_items(s, [{"b_seq": seq, "item": item} for seq, item in unsigned])
        except sa.exc.SQLAlchemyError as exc:  # a cache: the next read signs them again
            log.warning("could not keep %d signed feed items: %s", len(unsigned), exc)

    def _entry(
        self,
        change: Change,
        caps: dict[tuple[str, str], CapabilityRow],
        versions: dict[str, VersionRow],
        spaces: dict[str, Namespace],
        nodes: dict[str, Node],
    ) -> tuple[dict[str, Any] | None, str]:
        """The current state of what ``change`` changed and the op to send it as, or
        None when it must not (or need not) be sent."""
        if change.entity == "namespace":
            ns = spaces.get(change.key)
            if ns is None:
                return None, change.op
            entry = {"id": ns.id, "node_id": ns.node_id, "title": ns.title}
            return {**entry, "title_en": ns.title_en}, "upsert"
        if change.entity == "node":
            # This node naming itself (registry/titles.py): its titles, with the key
            # its parent already holds (a node never re-keys itself through its feed).
            node = nodes.get(change.key)
            if node is None or node.public_key is None or change.key != self.node_id:
                return None, change.op
            return {
                "id": node.id,
                "parent_id": node.parent_id,
                "public_key": node.public_key,
                "title": node.title,
                "title_en": node.title_en,
            }, "upsert"
        namespace, name = lookups.cap_key(change.key)
        row = caps.get((namespace, name))
        if row is None:
            return None, change.op
        tombstone = {"namespace": namespace, "name": name}
        if row.classification == "restricted":
            # Restricted entries never leave their node; one that was shared before
            # leaves a tombstone so that copies elsewhere go.
            if change.entity == "capability" and row.ever_shared:
                return tombstone, "delete"
            return None, change.op
        share = share_of(row.classification, self.share_internal)
        if change.entity == "capability":
            if row.deleted_at is not None:
                return tombstone, "delete"
            meta = {f: getattr(row, f) for f in META_FIELDS}
            return {**tombstone, "origin_node": row.origin_node, "share": share, **meta}, "upsert"
        vrow = versions.get(change.key)
        if vrow is None or row.deleted_at is not None:
            return None, change.op
        return {
            **tombstone,
            "version": vrow.version,
            "status": vrow.status,
            "published_at": vrow.published_at.isoformat() if vrow.published_at else None,
            "classification": row.classification,
            "share": share,
            **{f: getattr(vrow, f) for f in VERSION_FIELDS},
        }, "upsert"
