"""The feed's batched reads of the store: the rows behind a page of changes, a few
statements per page rather than a few per change; and keeping signed items with their
changes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from yunnao.registry.tables import CapabilityRow, Change, Namespace, Node, VersionRow


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
    found = s.exec(select(Change).where(col(Change.seq).in_(sorted(wanted)))).all()
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
        stmt = select(CapabilityRow).where(
            col(CapabilityRow.namespace).in_({ns for ns, _ in chunk}),
            col(CapabilityRow.name).in_({name for _, name in chunk}),
        )
        for row in s.exec(stmt):
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
        stmt = select(VersionRow).where(col(VersionRow.capability_id).in_(ids[start : start + 400]))
        for vrow in s.exec(stmt):
            if (vrow.capability_id, vrow.version) in pairs:
                cap = by_id[vrow.capability_id]
                out[f"{cap.namespace}/{cap.name}@{vrow.version}"] = vrow
    return out


change_table = Change.__table__  # type: ignore[attr-defined]


def keep_items(s: Session, rows: list[dict[str, Any]]) -> None:
    """Store signed items with their changes (``b_seq``, ``item`` rows), in ``s``."""
    if rows:
        stmt = change_table.update().where(change_table.c.seq == sa.bindparam("b_seq"))
        s.execute(stmt.values(item=sa.bindparam("item")), rows)


def nodes(s: Session, keys: list[str]) -> dict[str, Node]:
    if not keys:
        return {}
    return {n.id: n for n in s.exec(select(Node).where(col(Node.id).in_(sorted(set(keys)))))}


def namespaces(s: Session, keys: list[str]) -> dict[str, Namespace]:
    if not keys:
        return {}
    rows = s.exec(select(Namespace).where(col(Namespace.id).in_(sorted(set(keys))))).all()
    return {ns.id: ns for ns in rows}
