"""The feed's batched reads of the store: the rows behind a page of changes, a few
statements per page rather than a few per change; and keeping signed items with their
changes.

Rows are read with SQLAlchemy Core, not as ORM objects (building those was a quarter of
the feed's time): each row has the ORM object's attributes (``row.seq``, ``row.name``),
read only. Kept items are read as their JSON text and parsed by orjson, or by ``json``
where orjson refuses the text (``NaN``, lone surrogates, integers past 64 bits), so the
values are exactly those ``json`` would give.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any, NamedTuple

import orjson
import sqlalchemy as sa
from sqlmodel import Session, col, select

from yunnao.registry import schemas
from yunnao.registry.tables import CapabilityRow, Change, Namespace, Node, VersionRow

_change = Change.__table__  # type: ignore[attr-defined]
_cap = CapabilityRow.__table__  # type: ignore[attr-defined]
_ver = VersionRow.__table__  # type: ignore[attr-defined]
_ns = Namespace.__table__  # type: ignore[attr-defined]
_node = Node.__table__  # type: ignore[attr-defined]


# Only what a feed item is made of (timestamps that are not sent are not parsed).
_CAP_COLUMNS = [
    _cap.c[name]
    for name in (
        "id",
        "namespace",
        "name",
        "deleted_at",
        "classification",
        "ever_shared",
        "origin_node",
        *schemas.CapabilityMeta.model_fields,
    )
]
_VERSION_COLUMNS = [
    _ver.c[name]
    for name in (
        "capability_id",
        "version",
        "status",
        "published_at",
        *schemas.VersionSpec.model_fields,
    )
]


class Logged(NamedTuple):
    """A change log row as the feed reads it (the attributes of :class:`Change`)."""

    seq: int
    entity: str
    key: str
    op: str
    content_hash: str
    origin_node: str
    created_at: datetime
    origin_seq: int | None
    item: dict[str, Any] | None


_LOGGED_COLUMNS = [
    *(_change.c[name] for name in Logged._fields[:-1]),
    sa.cast(_change.c.item, sa.Text).label("item"),
]


def parse_item(text: str | None) -> Any:
    """A kept item's JSON text as ``json.loads`` reads it."""
    if text is None:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def changes(s: Session, where: Any, limit: int | None = None) -> list[Logged]:
    """The change log rows matching ``where``, in order."""
    stmt = sa.select(*_LOGGED_COLUMNS).where(where).order_by(_change.c.seq)
    if limit is not None:
        stmt = stmt.limit(limit)
    return [Logged(*row[:-1], parse_item(row[-1])) for row in s.execute(stmt)]


def cap_key_text(key: str) -> str:
    return key.split("@", 1)[0]


def cap_key(key: str) -> tuple[str, str]:
    namespace, _, rest = key.partition("/")
    return namespace, rest.partition("@")[0]


def capability_keys(rows: Iterable[Change]) -> set[tuple[str, str]]:
    return {("capability", cap_key_text(r.key)) for r in rows if r.entity == "version"}


def latest_seqs(s: Session, keys: set[tuple[str, str]]) -> dict[tuple[str, str], int]:
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


def early_capability_rows(
    s: Session, rows: list[Change], latest: dict[tuple[str, str], int]
) -> dict[str, Change]:
    """For versions in ``rows`` whose capability changed again after them: that
    capability's newest change."""
    wanted = {
        latest[("capability", cap_key_text(r.key))]
        for r in rows
        if r.entity == "version"
        and ("capability", cap_key_text(r.key)) in latest
        and latest[("capability", cap_key_text(r.key))] > r.seq  # type: ignore[operator]
    }
    if not wanted:
        return {}
    found = changes(s, _change.c.seq.in_(sorted(wanted)))
    return {c.key: c for c in found}


def capabilities(
    s: Session, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], CapabilityRow]:
    wanted = sorted(set(keys))
    out: dict[tuple[str, str], CapabilityRow] = {}
    for start in range(0, len(wanted), 400):
        chunk = wanted[start : start + 400]
        pairs = set(chunk)
        # Two IN lists, not a row-value IN: SQLite answers that one with a full scan.
        stmt = sa.select(*_CAP_COLUMNS).where(
            _cap.c.namespace.in_({ns for ns, _ in chunk}),
            _cap.c.name.in_({name for _, name in chunk}),
        )
        for row in s.execute(stmt):
            if (row.namespace, row.name) in pairs:
                out[(row.namespace, row.name)] = row
    return out


def versions(
    s: Session, caps: dict[tuple[str, str], CapabilityRow], keys: list[str]
) -> dict[str, VersionRow]:
    by_id = {row.id: row for row in caps.values()}
    wanted = []
    for key in keys:
        row = caps.get(cap_key(key))
        if row is not None:
            wanted.append((row.id, key.rsplit("@", 1)[1]))
    out: dict[str, VersionRow] = {}
    pairs = set(wanted)
    ids = sorted({cid for cid, _ in wanted})
    for start in range(0, len(ids), 400):
        stmt = sa.select(*_VERSION_COLUMNS).where(
            _ver.c.capability_id.in_(ids[start : start + 400])
        )
        for vrow in s.execute(stmt):
            if (vrow.capability_id, vrow.version) in pairs:
                cap = by_id[vrow.capability_id]
                out[f"{cap.namespace}/{cap.name}@{vrow.version}"] = vrow
    return out


change_table = _change


def keep_items(s: Session, rows: list[dict[str, Any]]) -> None:
    """Store signed items with their changes (``b_seq``, ``item`` rows), in ``s``."""
    if rows:
        stmt = change_table.update().where(change_table.c.seq == sa.bindparam("b_seq"))
        s.execute(stmt.values(item=sa.bindparam("item")), rows)


def nodes(s: Session, keys: list[str]) -> dict[str, Node]:
    if not keys:
        return {}
    return {n.id: n for n in s.execute(sa.select(_node).where(_node.c.id.in_(sorted(set(keys)))))}


def namespaces(s: Session, keys: list[str]) -> dict[str, Namespace]:
    if not keys:
        return {}
    rows = s.execute(sa.select(_ns).where(_ns.c.id.in_(sorted(set(keys))))).all()
    return {ns.id: ns for ns in rows}
