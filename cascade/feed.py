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

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlmodel import Session, col, select

from yunnao.registry import schemas
from yunnao.registry.db import read_session
from yunnao.registry.hashing import content_hash
from yunnao.registry.http import MAX_JSON_DEPTH
from yunnao.registry.tables import (
    CapabilityRow,
    CascadeState,
    Change,
    Namespace,
    Node,
    VersionRow,
)

from .policy import Reader, may_send, share_of, withdrawn
from .signing import sign

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

    def head(self) -> int:
        with read_session(self.engine) as s:
            return s.exec(select(sa.func.max(Change.seq))).one() or 0

    def page(self, since: int, limit: int, reader: Reader | None = None) -> FeedPage:
        """Up to ``limit`` changes after ``since`` as the items ``reader`` may have
        (default: what a parent may have). Raises :class:`Compacted` when ``since`` is
        older than what the log still holds."""
        reader = reader or Reader("parent")
        with read_session(self.engine) as s:
            through = compacted_through(s)
            if 0 < since < through:
                raise Compacted(since, through)
            rows = s.exec(
                select(Change).where(col(Change.seq) > since).order_by(col(Change.seq)).limit(limit)
            ).all()
            head = s.exec(select(sa.func.max(Change.seq))).one() or 0
            items: list[dict[str, Any]] = []
            withdrawals: set[int] = set()
            for seq, item in self._items(s, rows):
                if may_send(item, this_node=self.node_id, reader=reader):
                    items.append(item)
                elif seq not in withdrawals and withdrawn(
                    item, this_node=self.node_id, reader=reader
                ):
                    withdrawals.add(seq)
                    items.append(self._withdrawal(item, seq))
            last = rows[-1].seq if rows else since
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

    def _items(self, s: Session, rows: list[Change]) -> list[tuple[int, dict[str, Any]]]:
        """The items of ``rows`` (in order), leaving out superseded changes, each with the
        sequence number of its change here."""
        latest = _latest_seqs(s, {(r.entity, r.key) for r in rows} | _capability_keys(rows))
        local = [r for r in rows if r.item is None and latest.get((r.entity, r.key)) == r.seq]
        relayed_versions = [r for r in rows if r.item is not None and r.entity == "version"]
        caps = _capabilities(
            s,
            [
                _cap_key(r.key)
                for r in [*local, *relayed_versions]
                if r.entity not in ("namespace", "node")
            ],
        )
        versions = _versions(s, caps, [r.key for r in local if r.entity == "version"])
        spaces = _namespaces(s, [r.key for r in local if r.entity == "namespace"])
        nodes = _nodes(s, [r.key for r in local if r.entity == "node"])
        early = _early_capability_rows(s, rows, latest)
        caps.update(_capabilities(s, [_cap_key(r.key) for r in early.values() if r.item is None]))
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
            if change.item is None and latest.get((change.entity, change.key)) != seq:
                continue  # superseded: a later change carries the newer state
            if change.item is not None:
                # Passed on as it arrived. Node keys always go, in order, so a key
                # arrives before the entries it signs.
                if change.entity == "node" or latest.get((change.entity, change.key)) == change.seq:
                    if change.entity == "version":
                        row = caps.get(_cap_key(change.key))
                        if row is None or row.deleted_at is not None:
                            continue  # its capability went since
                        add(self._early(early, change, caps))
                    add((seq, change.item))
                continue
            if change.entity == "version":
                # The version's capability changed again later: send its current state
                # first, so the receiver has the capability before its version. (The
                # same item follows again at its own place, where it is a no-op.)
                add(self._early(early, change, caps))
            add((seq, self._local_item(change, caps, versions, spaces, nodes)))
        return out

    def _early(
        self,
        early: dict[str, Change],
        change: Change,
        caps: dict[tuple[str, str], CapabilityRow],
    ) -> tuple[int, dict[str, Any] | None] | None:
        cap_change = early.get(_cap_key_text(change.key))
        if cap_change is None or cap_change.seq < change.seq:  # type: ignore[operator]
            return None
        seq: int = cap_change.seq  # type: ignore[assignment]
        if cap_change.item is not None:
            return seq, cap_change.item
        return seq, self._local_item(cap_change, caps, {}, {})

    def _local_item(
        self,
        change: Change,
        caps: dict[tuple[str, str], CapabilityRow],
        versions: dict[str, VersionRow],
        spaces: dict[str, Namespace],
        nodes: dict[str, Node] | None = None,
    ) -> dict[str, Any] | None:
        entry, op = self._entry(change, caps, versions, spaces, nodes or {})
        if entry is None:
            return None
        return make_item(
            self.key,
            origin=change.origin_node,
            origin_seq=change.seq,  # type: ignore[arg-type]
            entity=change.entity,
            item_key=change.key,
            op=op,
            entry=entry,
            at=change.created_at.isoformat(),
        )

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
        namespace, name = _cap_key(change.key)
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


# ---------------------------------------------------------------- batched lookups


def _cap_key_text(key: str) -> str:
    return key.split("@", 1)[0]


def _cap_key(key: str) -> tuple[str, str]:
    namespace, _, rest = key.partition("/")
    return namespace, rest.partition("@")[0]


def _capability_keys(rows: Iterable[Change]) -> set[tuple[str, str]]:
    return {("capability", _cap_key_text(r.key)) for r in rows if r.entity == "version"}


def _latest_seqs(s: Session, keys: set[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """The newest change sequence number of each (entity, key)."""
    out: dict[tuple[str, str], int] = {}
    by_key = sorted({k for _, k in keys})
    for start in range(0, len(by_key), 500):
        chunk = by_key[start : start + 500]
        stmt = (
            select(Change.entity, Change.key, sa.func.max(Change.seq))
            .where(col(Change.key).in_(chunk))
            .group_by(col(Change.entity), col(Change.key))
        )
        for entity, key, seq in s.exec(stmt):
            out[(entity, key)] = seq
    return out


def _early_capability_rows(
    s: Session, rows: list[Change], latest: dict[tuple[str, str], int]
) -> dict[str, Change]:
    """For versions in ``rows`` whose capability changed again after them: that
    capability's newest change."""
    wanted = {
        latest[("capability", _cap_key_text(r.key))]
        for r in rows
        if r.entity == "version"
        and ("capability", _cap_key_text(r.key)) in latest
        and latest[("capability", _cap_key_text(r.key))] > r.seq  # type: ignore[operator]
    }
    if not wanted:
        return {}
    found = s.exec(select(Change).where(col(Change.seq).in_(sorted(wanted)))).all()
    return {c.key: c for c in found}


def _capabilities(
    s: Session, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], CapabilityRow]:
    wanted = sorted(set(keys))
    out: dict[tuple[str, str], CapabilityRow] = {}
    for start in range(0, len(wanted), 400):
        chunk = wanted[start : start + 400]
        pairs = set(chunk)
        # Two IN lists, not a row-value IN: SQLite answers that one with a full scan.
        stmt = select(CapabilityRow).where(
            col(CapabilityRow.namespace).in_({ns for ns, _ in chunk}),
            col(CapabilityRow.name).in_({name for _, name in chunk}),
        )
        for row in s.exec(stmt):
            if (row.namespace, row.name) in pairs:
                out[(row.namespace, row.name)] = row
    return out


def _versions(
    s: Session, caps: dict[tuple[str, str], CapabilityRow], keys: list[str]
) -> dict[str, VersionRow]:
    by_id = {row.id: row for row in caps.values()}
    wanted = []
    for key in keys:
        row = caps.get(_cap_key(key))
        if row is not None:
            wanted.append((row.id, key.rsplit("@", 1)[1]))
    out: dict[str, VersionRow] = {}
    pairs = set(wanted)
    ids = sorted({cid for cid, _ in wanted})
    for start in range(0, len(ids), 400):
        stmt = select(VersionRow).where(col(VersionRow.capability_id).in_(ids[start : start + 400]))
        for vrow in s.exec(stmt):
            if (vrow.capability_id, vrow.version) in pairs:
                cap = by_id[vrow.capability_id]
                out[f"{cap.namespace}/{cap.name}@{vrow.version}"] = vrow
    return out


def _nodes(s: Session, keys: list[str]) -> dict[str, Node]:
    if not keys:
        return {}
    return {n.id: n for n in s.exec(select(Node).where(col(Node.id).in_(sorted(set(keys)))))}


def _namespaces(s: Session, keys: list[str]) -> dict[str, Namespace]:
    if not keys:
        return {}
    rows = s.exec(select(Namespace).where(col(Namespace.id).in_(sorted(set(keys))))).all()
    return {ns.id: ns for ns in rows}
