"""Other nodes' entries kept in this store (cascaded): written as their origin sent them.

The cascade verifies an entry (signature, ownership, policy) before it gets here; these
functions only store it, in the caller's write transaction, with the same search index,
tags and change log as a local write. Core statements rather than the ORM: an initial
sync applies hundreds of thousands of entries.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from . import lifecycle, names, schemas, search
from .hashing import content_hash, json_text
from .tables import (
    CapabilityRow,
    CapabilityTag,
    Change,
    Namespace,
    Node,
    VersionRow,
    utcnow,
)

META_FIELDS = tuple(schemas.CapabilityMeta.model_fields)


_SINCE_SIGNED = {"access": {}, "summary_en": "", "description_en": ""}


def _meta(entry: dict[str, Any]) -> dict[str, Any]:
    # Entries signed before capabilities had access rules (or English texts) carry none.
    return {
        f: entry.get(f, _SINCE_SIGNED[f]) if f in _SINCE_SIGNED else entry[f] for f in META_FIELDS
    }


VERSION_FIELDS = tuple(schemas.VersionSpec.model_fields)

_cap = CapabilityRow.__table__  # type: ignore[attr-defined]
_ver = VersionRow.__table__  # type: ignore[attr-defined]
_tag = CapabilityTag.__table__  # type: ignore[attr-defined]
_change = Change.__table__  # type: ignore[attr-defined]
_ns = Namespace.__table__  # type: ignore[attr-defined]
_node = Node.__table__  # type: ignore[attr-defined]


def node_keys(s: Session) -> dict[str, str]:
    """The public key (hex) of every node this store knows one for."""
    rows = s.execute(
        sa.select(_node.c.id, _node.c.public_key).where(_node.c.public_key.is_not(None))
    )
    return {node: key for node, key in rows}


def last_applied(
    s: Session, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], tuple[str, int]]:
    """For each (entity, key): the origin and origin sequence of its newest change here."""
    by_key = sorted({k for _, k in keys})
    newest: dict[tuple[str, str], int] = {}
    for start in range(0, len(by_key), 500):
        chunk = by_key[start : start + 500]
        stmt = (
            sa.select(_change.c.entity, _change.c.key, sa.func.max(_change.c.seq))
            .where(_change.c.key.in_(chunk))
            .group_by(_change.c.entity, _change.c.key)
        )
        for entity, key, seq in s.execute(stmt):
            newest[(entity, key)] = seq
    out: dict[tuple[str, str], tuple[str, int]] = {}
    seqs = sorted(newest.values())
    for start in range(0, len(seqs), 500):
        stmt = sa.select(
            _change.c.entity,
            _change.c.key,
            _change.c.origin_node,
            _change.c.origin_seq,
            _change.c.seq,
        ).where(_change.c.seq.in_(seqs[start : start + 500]))
        for entity, key, origin, origin_seq, seq in s.execute(stmt):
            out[(entity, key)] = (origin, origin_seq if origin_seq is not None else seq)
    return out


def log(s: Session, items: list[dict[str, Any]]) -> None:
    """Append applied items to this node's change log (its feed passes them on)."""
    if not items:
        return
    now = utcnow()
    rows = [
        {
            "entity": item["entity"],
            "key": item["key"],
            "op": item["op"],
            "content_hash": item["content_hash"],
            "origin_node": item["origin"],
            "origin_seq": item["origin_seq"],
            "item": item,
            "created_at": now,
        }
        for item in items
    ]
    if s.get_bind().dialect.name != "sqlite":
        s.execute(_change.insert(), rows)
        return
    # SQLite keeps JSON as text: the items go in as text written by orjson where it
    # writes what json reads back the same (json_text), not through json.dumps each.
    for row in rows:
        row["item_text"] = json_text(row.pop("item"))
    stmt = _change.insert().values(item=sa.type_coerce(sa.bindparam("item_text"), sa.Text))
    s.execute(stmt, rows)


def put_node(s: Session, entry: dict[str, Any], *, self_named: bool = False) -> None:
    """Record (or re-key) a node another node vouched for; or, ``self_named``, take the
    titles a node gave itself (its key stays the one vouched for)."""
    titles = {"title": entry.get("title", ""), "title_en": entry.get("title_en", "")}
    if self_named:
        s.execute(_node.update().where(_node.c.id == entry["id"]).values(**titles))
        return
    values = {"parent_id": entry.get("parent_id"), "public_key": entry["public_key"]}
    if s.execute(sa.select(_node.c.id).where(_node.c.id == entry["id"])).first() is None:
        s.execute(_node.insert().values(id=entry["id"], created_at=utcnow(), **titles, **values))
    else:
        s.execute(_node.update().where(_node.c.id == entry["id"]).values(**values))


def put_namespace(s: Session, namespace: str, owner: str, entry: dict[str, Any]) -> None:
    """Record a department its node sent, with its titles. Entries signed before
    departments had English titles carry no ``title_en``: those change a title only
    when they name one."""
    titles = {"title": entry.get("title", ""), "title_en": entry.get("title_en", "")}
    if "title_en" not in entry:
        titles = {k: v for k, v in titles.items() if v}
    if s.execute(sa.select(_ns.c.id).where(_ns.c.id == namespace)).first() is not None:
        if titles:
            s.execute(_ns.update().where(_ns.c.id == namespace).values(**titles))
        return
    if s.execute(sa.select(_node.c.id).where(_node.c.id == owner)).first() is None:
        s.execute(_node.insert().values(id=owner, title="", created_at=utcnow()))
    s.execute(_ns.insert().values(id=namespace, node_id=owner, created_at=utcnow(), **titles))


def _chunks(values: list[Any], size: int = 400) -> Iterable[list[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _capability_ids(
    s: Session, pairs: Iterable[tuple[str, str]], *, live_only: bool = False
) -> dict[tuple[str, str], tuple[int, datetime | None]]:
    out: dict[tuple[str, str], tuple[int, datetime | None]] = {}
    for chunk in _chunks(sorted(set(pairs))):
        wanted = set(chunk)
        # Two IN lists, not a row-value IN: SQLite answers that one with a full scan.
        stmt = sa.select(_cap.c.id, _cap.c.namespace, _cap.c.name, _cap.c.deleted_at).where(
            _cap.c.namespace.in_({ns for ns, _ in chunk}), _cap.c.name.in_({n for _, n in chunk})
        )
        if live_only:
            stmt = stmt.where(_cap.c.deleted_at.is_(None))
        for cid, ns, name, deleted in s.execute(stmt):
            if (ns, name) in wanted:
                out[(ns, name)] = (cid, deleted)
    return out


def put_capabilities(s: Session, items: list[tuple[dict[str, Any], datetime]], *, via: str) -> None:
    """Store capabilities' metadata as their origin sent it (``(entry, at)`` pairs, one
    per capability). A new one waits for its versions as a draft, so it is not listed
    before it has one."""
    if not items:
        return
    for namespace in {e["namespace"] for e, _ in items}:
        put_namespace(s, namespace, names.namespace_node(namespace), {})
    found = _capability_ids(s, [(e["namespace"], e["name"]) for e, _ in items])
    inserts, updates, indexed = [], [], []
    for entry, at in items:
        meta = _meta(entry)
        values = {
            **meta,
            "origin_node": entry["origin_node"],
            "via_node": via,
            "content_hash": content_hash(meta),
            "updated_at": at,
            "ever_shared": True,
        }
        pair = (entry["namespace"], entry["name"])
        if pair not in found:
            inserts.append(
                {
                    **values,
                    "namespace": pair[0],
                    "name": pair[1],
                    "status": "draft",
                    "created_at": at,
                }
            )
        else:
            cid, deleted = found[pair]
            revived = {"deleted_at": None, "created_at": at if deleted is not None else None}
            updates.append({f"v_{k}": v for k, v in {**values, **revived}.items()} | {"b_id": cid})
    if inserts:
        rows = s.execute(
            _cap.insert().returning(
                _cap.c.id, _cap.c.namespace, _cap.c.name, sort_by_parameter_order=True
            ),
            inserts,
        ).all()
        for cid, ns, name in rows:
            found[(ns, name)] = (cid, None)
    if updates:
        columns = [
            *META_FIELDS,
            "origin_node",
            "via_node",
            "content_hash",
            "updated_at",
            "ever_shared",
            "deleted_at",
        ]
        stmt = (
            _cap.update()
            .where(_cap.c.id == sa.bindparam("b_id"))
            .values(
                {c: sa.bindparam(f"v_{c}") for c in columns}
                | {"created_at": sa.func.coalesce(sa.bindparam("v_created_at"), _cap.c.created_at)}
            )
        )
        s.execute(stmt, updates)
    ids = []
    for entry, _ in items:
        cid = found[(entry["namespace"], entry["name"])][0]
        ids.append(cid)
        meta = _meta(entry)
        indexed.append(search.Document(cid, entry["name"], **{f: meta[f] for f in search.TEXT}))
    for chunk in _chunks(ids):
        s.execute(_tag.delete().where(_tag.c.capability_id.in_(chunk)))
    tags = [
        {"capability_id": cid, "tag": tag}
        for cid, (e, _) in zip(ids, items, strict=True)
        for tag in e["tags"]
    ]
    if tags:
        s.execute(_tag.insert(), tags)
    search.index_many(s, indexed)


def delete_capability(s: Session, namespace: str, name: str, *, at: datetime) -> bool:
    """Tombstone a cascaded capability (False when there was none live)."""
    found = s.execute(
        sa.select(_cap.c.id).where(
            _cap.c.namespace == namespace, _cap.c.name == name, _cap.c.deleted_at.is_(None)
        )
    ).first()
    if found is None:
        return False
    s.execute(
        _cap.update().where(_cap.c.id == found.id).values(deleted_at=at, updated_at=at, tags=[])
    )
    s.execute(_tag.delete().where(_tag.c.capability_id == found.id))
    s.execute(_ver.delete().where(_ver.c.capability_id == found.id))
    search.unindex(s, found.id)
    return True


def put_versions(s: Session, items: list[tuple[dict[str, Any], datetime]]) -> list[int]:
    """Store versions as their origin sent them (``(entry, at)`` pairs, one per version);
    returns the positions of those whose capability is not here."""
    if not items:
        return []
    caps = _capability_ids(s, [(e["namespace"], e["name"]) for e, _ in items], live_only=True)
    missing = [i for i, (e, _) in enumerate(items) if (e["namespace"], e["name"]) not in caps]
    present = [(e, at) for e, at in items if (e["namespace"], e["name"]) in caps]
    wanted = [(caps[(e["namespace"], e["name"])][0], e["version"]) for e, _ in present]
    existing: dict[tuple[int, str], int] = {}
    for chunk in _chunks(sorted({cid for cid, _ in wanted})):
        stmt = sa.select(_ver.c.id, _ver.c.capability_id, _ver.c.version).where(
            _ver.c.capability_id.in_(chunk)
        )
        for vid, cid, number in s.execute(stmt):
            existing[(cid, number)] = vid
    inserts, updates = [], []
    latest_at: dict[int, datetime] = {}
    for (cid, number), (entry, at) in zip(wanted, present, strict=True):
        body = {f: entry[f] for f in VERSION_FIELDS}
        published = entry.get("published_at")
        values = {
            **body,
            "status": entry["status"],
            "content_hash": content_hash({"version": number, **body}),
            "updated_at": at,
            "published_at": datetime.fromisoformat(published) if published else None,
        }
        latest_at[cid] = max(at, latest_at.get(cid, at))
        if (cid, number) in existing:
            updates.append(
                {f"v_{k}": v for k, v in values.items()} | {"b_id": existing[(cid, number)]}
            )
        else:
            inserts.append({**values, "capability_id": cid, "version": number, "created_at": at})
    if inserts:
        s.execute(_ver.insert(), inserts)
    if updates:
        columns = [*VERSION_FIELDS, "status", "content_hash", "updated_at", "published_at"]
        stmt = (
            _ver.update()
            .where(_ver.c.id == sa.bindparam("b_id"))
            .values({c: sa.bindparam(f"v_{c}") for c in columns})
        )
        s.execute(stmt, updates)
    _refresh_current(s, latest_at)
    return missing


def _refresh_current(s: Session, touched: dict[int, datetime]) -> None:
    """Point each touched capability at its current version (as the origin does)."""
    by_cap: dict[int, list[Any]] = {}
    for chunk in _chunks(sorted(touched)):
        # Only the runtime's type, read in SQL: not each version's whole binding parsed.
        kind = _ver.c.runtime["type"].as_string().label("runtime")
        rows = s.execute(
            sa.select(_ver.c.capability_id, _ver.c.version, _ver.c.status, kind).where(
                _ver.c.capability_id.in_(chunk)
            )
        )
        for row in rows:
            by_cap.setdefault(row.capability_id, []).append(row)
    updates = []
    for cid, rows in by_cap.items():
        for status in lifecycle.CURRENT_PREFERENCE:
            candidates = [r for r in rows if r.status == status]
            if candidates:
                newest = names.sort_versions([r.version for r in candidates])[0]
                current = next(r for r in candidates if r.version == newest)
                updates.append(
                    {
                        "b_id": cid,
                        "v_latest_version": current.version,
                        "v_status": current.status,
                        "v_runtime": current.runtime,
                        "v_updated_at": touched[cid],
                    }
                )
                break
    if updates:
        stmt = (
            _cap.update()
            .where(_cap.c.id == sa.bindparam("b_id"))
            .values(
                {
                    c: sa.bindparam(f"v_{c}")
                    for c in ("latest_version", "status", "runtime", "updated_at")
                }
            )
        )
        s.execute(stmt, updates)


def holders(
    s: Session, pairs: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], tuple[str | None, bool]]:
    """For each (namespace, name) this store has a capability row for: the peer it came
    through (None for this node's own entries) and whether it is live."""
    out: dict[tuple[str, str], tuple[str | None, bool]] = {}
    for chunk in _chunks(sorted(set(pairs))):
        wanted = set(chunk)
        stmt = sa.select(_cap.c.namespace, _cap.c.name, _cap.c.via_node, _cap.c.deleted_at).where(
            _cap.c.namespace.in_({ns for ns, _ in chunk}), _cap.c.name.in_({n for _, n in chunk})
        )
        for ns, name, via, deleted in s.execute(stmt):
            if (ns, name) in wanted:
                out[(ns, name)] = (via, deleted is None)
    return out


def live_capabilities_via(s: Session, peer: str) -> list[tuple[str, str]]:
    """(namespace, name) of every live capability that came through ``peer``."""
    rows = s.execute(
        sa.select(_cap.c.namespace, _cap.c.name).where(
            _cap.c.via_node == peer, _cap.c.deleted_at.is_(None)
        )
    )
    return [(ns, name) for ns, name in rows]
