"""The change feed: this node's change log as signed, self-contained entries.

A parent (or, pushing, this node) reads ``GET /v1/cascade/changes?since=SEQ`` and
applies what it gets in order. Each item carries the *current* state of what changed
(the full entry of an upsert, or a tombstone), its origin node and origin sequence,
its content hash and the origin's Ed25519 signature over all of that. Replication is
state-based, so an upsert whose entity has changed again since is left out (a later
item carries its newer state), and applying an item twice changes nothing.

Classification is enforced here, on the sending side: ``restricted`` capabilities and
their versions never leave the node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlmodel import Session, col, select

from yunnao.registry import schemas
from yunnao.registry.db import read_session
from yunnao.registry.tables import CapabilityRow, Change, Namespace, VersionRow

from .signing import sign

META_FIELDS = tuple(schemas.CapabilityMeta.model_fields)
VERSION_FIELDS = tuple(schemas.VersionSpec.model_fields)


@dataclass(frozen=True)
class FeedPage:
    items: list[dict[str, Any]]
    next: int  # pass as ``since`` for the next page (covers items left out, too)
    head: int  # the newest sequence number of the log now


def signed_part(item: dict[str, Any]) -> dict[str, Any]:
    """What the origin signs of an item: everything but the signature itself."""
    return {k: v for k, v in item.items() if k != "signature"}


class Feed:
    def __init__(self, engine: sa.Engine, node_id: str, key: Ed25519PrivateKey) -> None:
        self.engine = engine
        self.node_id = node_id
        self.key = key

    def head(self) -> int:
        with read_session(self.engine) as s:
            return s.exec(select(sa.func.max(Change.seq))).one() or 0

    def page(self, since: int, limit: int) -> FeedPage:
        with read_session(self.engine) as s:
            rows = s.exec(
                select(Change).where(col(Change.seq) > since).order_by(col(Change.seq)).limit(limit)
            ).all()
            head = s.exec(select(sa.func.max(Change.seq))).one() or 0
            items = []
            for change in rows:
                entry = self._entry(s, change)
                if entry is None:
                    continue
                item = {
                    "origin": change.origin_node,
                    "origin_seq": change.seq,
                    "entity": change.entity,
                    "key": change.key,
                    "op": change.op,
                    "content_hash": change.content_hash,
                    "entry": entry,
                    "at": change.created_at.isoformat(),
                }
                item["signature"] = sign(self.key, item)
                items.append(item)
            last = rows[-1].seq if rows else since
        return FeedPage(items=items, next=max(last or since, since), head=head)

    # ------------------------------------------------------------ entries

    def _entry(self, s: Session, change: Change) -> dict[str, Any] | None:
        """The current state of what ``change`` changed, or None when it must not (or
        need not) be sent."""
        if change.entity == "namespace":
            ns = s.get(Namespace, change.key)
            return None if ns is None else {"id": ns.id, "node_id": ns.node_id, "title": ns.title}
        namespace, _, rest = change.key.partition("/")
        name, _, version = rest.partition("@")
        row = s.exec(
            select(CapabilityRow).where(
                CapabilityRow.namespace == namespace, CapabilityRow.name == name
            )
        ).first()
        if row is None or row.classification == "restricted":
            return None  # restricted entries never leave their node
        if change.entity == "capability":
            if change.op == "delete":
                # A tombstone only while the capability is still deleted.
                return {"namespace": namespace, "name": name} if row.deleted_at else None
            if row.deleted_at is not None or row.content_hash != change.content_hash:
                return None  # superseded: a later item carries the newer state
            meta = {f: getattr(row, f) for f in META_FIELDS}
            return {"namespace": namespace, "name": name, "origin_node": row.origin_node, **meta}
        if change.entity == "version":
            vrow = s.exec(
                select(VersionRow).where(
                    VersionRow.capability_id == row.id, VersionRow.version == version
                )
            ).first()
            if vrow is None or row.deleted_at is not None:
                return None
            return {
                "namespace": namespace,
                "name": name,
                "version": version,
                "status": vrow.status,
                "published_at": vrow.published_at.isoformat() if vrow.published_at else None,
                **{f: getattr(vrow, f) for f in VERSION_FIELDS},
            }
        return None
