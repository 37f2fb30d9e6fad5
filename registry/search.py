"""Full-text search with facets over the catalog, on SQLite (FTS5) and PostgreSQL (tsvector).

Both stores index the same pre-tokenized text: words are runs of letters and digits,
and each CJK character stands alone, so a Chinese query such as ``交通`` becomes the
phrase ``交 通`` (adjacent characters) and matches wherever that word occurs, with no
segmentation dictionary. The last latin word of a query also matches as a prefix, so
``traff`` finds ``traffic`` while typing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlmodel import Session, col, select

from .tables import CapabilityRow, CapabilityTag

_CJK = (
    "\u3040-\u30ff"  # kana
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # CJK ideographs
    "\uac00-\ud7af"  # hangul syllables
)
_TOKEN = re.compile(rf"[{_CJK}]+|[^\W_{_CJK}]+")
_IS_CJK = re.compile(rf"[{_CJK}]")

# Facet name -> capability column; "tag" is counted through capability_tag.
FACET_COLUMNS: dict[str, Any] = {
    "domain": CapabilityRow.domain,
    "node": CapabilityRow.origin_node,
    "namespace": CapabilityRow.namespace,
    "runtime": CapabilityRow.runtime,
    "classification": CapabilityRow.classification,
    "status": CapabilityRow.status,
    "kind": CapabilityRow.kind,
}
FACETS: tuple[str, ...] = (*FACET_COLUMNS, "tag")
SORTS = ("relevance", "name", "-name", "updated", "-updated")
TAG_FACET_LIMIT = 30

_FTS_WEIGHTS = (10.0, 6.0, 3.0, 4.0, 1.0)  # name, title, summary, tags, description


def tokens(text: str) -> list[str]:
    """Index tokens of ``text``: latin words lowercased, CJK runs split into characters."""
    out: list[str] = []
    for tok in _TOKEN.findall(text):
        if _IS_CJK.match(tok):
            out.extend(tok)
        else:
            out.append(tok.lower())
    return out


def _doc(text: str) -> str:
    return " ".join(tokens(text))


@dataclass(frozen=True)
class Term:
    """One query term: a phrase of CJK characters, or a word (maybe a prefix)."""

    parts: tuple[str, ...]
    prefix: bool = False


def parse_query(q: str) -> list[Term]:
    terms: list[Term] = []
    for tok in _TOKEN.findall(q):
        if _IS_CJK.match(tok):
            terms.append(Term(tuple(tok)))
        else:
            terms.append(Term((tok.lower(),)))
    if terms and len(terms[-1].parts) == 1 and not _IS_CJK.match(terms[-1].parts[0]):
        terms[-1] = Term(terms[-1].parts, prefix=True)
    return terms


def _fts5_query(terms: Sequence[Term]) -> str:
    # Tokens hold only letters and digits, so quoting them is enough to keep FTS5
    # syntax (AND, NEAR, *, :) out of user input.
    out = []
    for t in terms:
        phrase = '"' + " ".join(t.parts) + '"'
        out.append(phrase + ("*" if t.prefix else ""))
    return " AND ".join(out)


def _tsquery(terms: Sequence[Term]) -> str:
    out = []
    for t in terms:
        lex = " <-> ".join(f"'{p}'" for p in t.parts)
        out.append(f"({lex}:*)" if t.prefix else f"({lex})")
    return " & ".join(out)


# ---------------------------------------------------------------- index upkeep


def index(session: Session, row: CapabilityRow) -> None:
    """(Re)index one capability in the current transaction."""
    assert row.id is not None
    if session.get_bind().dialect.name == "sqlite":
        session.execute(sa.text("DELETE FROM capability_fts WHERE rowid = :id"), {"id": row.id})
        session.execute(
            sa.text(
                "INSERT INTO capability_fts (rowid, name, title, summary, tags, description) "
                "VALUES (:id, :name, :title, :summary, :tags, :description)"
            ),
            {
                "id": row.id,
                "name": _doc(row.name),
                "title": _doc(row.title),
                "summary": _doc(row.summary),
                "tags": _doc(" ".join(row.tags)),
                "description": _doc(row.description),
            },
        )
    else:
        session.execute(
            sa.text(
                "INSERT INTO capability_search (capability_id, document) VALUES (:id, "
                "setweight(to_tsvector('simple', :a), 'A') || "
                "setweight(to_tsvector('simple', :b), 'B') || "
                "setweight(to_tsvector('simple', :c), 'C')) "
                "ON CONFLICT (capability_id) DO UPDATE SET document = EXCLUDED.document"
            ),
            {
                "id": row.id,
                "a": _doc(f"{row.name} {row.title}"),
                "b": _doc(f"{row.summary} {' '.join(row.tags)}"),
                "c": _doc(row.description),
            },
        )


def unindex(session: Session, capability_id: int) -> None:
    if session.get_bind().dialect.name == "sqlite":
        session.execute(
            sa.text("DELETE FROM capability_fts WHERE rowid = :id"), {"id": capability_id}
        )
    else:
        session.execute(
            sa.text("DELETE FROM capability_search WHERE capability_id = :id"),
            {"id": capability_id},
        )


# ---------------------------------------------------------------- querying


@dataclass
class SearchQuery:
    """A catalog query. Values within one facet are alternatives (OR), except ``tag``,
    where every tag given must be present (AND); different facets combine with AND."""

    q: str = ""
    filters: dict[str, list[str]] = field(default_factory=dict)
    sort: str = ""
    page: int = 1
    per_page: int = 20
    facets: Sequence[str] = FACETS


@dataclass
class SearchResult:
    rows: list[CapabilityRow]
    total: int
    facets: dict[str, dict[str, int]]


def _match(session: Session, terms: Sequence[Term]) -> tuple[Any, Any] | None:
    """(subquery of matching ids with a rank, rank ordering) or None for no text query."""
    if not terms:
        return None
    if session.get_bind().dialect.name == "sqlite":
        weights = ", ".join(str(w) for w in _FTS_WEIGHTS)
        sub = (
            sa.select(
                sa.literal_column("rowid").label("cid"),
                sa.literal_column(f"bm25(capability_fts, {weights})").label("rank"),
            )
            .select_from(sa.table("capability_fts"))
            .where(sa.literal_column("capability_fts").op("MATCH")(_fts5_query(terms)))
            .subquery("m")
        )
        return sub, sub.c.rank.asc()  # bm25: lower is better
    doc = sa.column("document", postgresql.TSVECTOR)
    tsq = sa.func.to_tsquery(
        sa.literal_column("'simple'::regconfig"), sa.cast(_tsquery(terms), sa.Text)
    )
    sub = (
        sa.select(
            sa.column("capability_id").label("cid"),
            sa.func.ts_rank_cd(doc, tsq).label("rank"),
        )
        .select_from(sa.table("capability_search"))
        .where(doc.op("@@")(tsq))
        .subquery("m")
    )
    return sub, sub.c.rank.desc()


def _conditions(
    filters: dict[str, list[str]], skip: str | None = None
) -> list[sa.ColumnElement[bool]]:
    conds: list[sa.ColumnElement[bool]] = []
    for facet, values in filters.items():
        if facet == skip or not values:
            continue
        if facet == "tag":
            for tag in values:
                conds.append(
                    sa.exists().where(
                        CapabilityTag.capability_id == CapabilityRow.id, CapabilityTag.tag == tag
                    )
                )
        else:
            conds.append(FACET_COLUMNS[facet].in_(values))
    return conds


def search(
    session: Session, query: SearchQuery, visibility: Iterable[sa.ColumnElement[bool]]
) -> SearchResult:
    """Run ``query`` over live capabilities the caller may see (``visibility`` conditions)."""
    base_conds = [col(CapabilityRow.deleted_at).is_(None), *visibility]
    match = _match(session, parse_query(query.q))

    def scoped(stmt: Any) -> Any:
        if match is not None:
            stmt = stmt.join(match[0], match[0].c.cid == CapabilityRow.id)
        return stmt

    conds = base_conds + _conditions(query.filters)
    total = session.execute(
        scoped(sa.select(sa.func.count()).select_from(CapabilityRow)).where(*conds)
    ).scalar_one()

    stmt = scoped(select(CapabilityRow)).where(*conds)
    sort = query.sort or ("relevance" if match is not None else "-updated")
    if sort == "relevance" and match is not None:
        stmt = stmt.order_by(match[1], CapabilityRow.id)
    elif sort in ("name", "-name"):
        order = [CapabilityRow.name, CapabilityRow.namespace]
        stmt = stmt.order_by(*[(c.desc() if sort[0] == "-" else c.asc()) for c in order])
    else:
        updated = CapabilityRow.updated_at
        descending = sort != "updated"
        stmt = stmt.order_by(
            updated.desc() if descending else updated.asc(),
            CapabilityRow.id.desc() if descending else CapabilityRow.id.asc(),
        )
    stmt = stmt.limit(query.per_page).offset((query.page - 1) * query.per_page)
    rows = list(session.exec(stmt).all())

    facets: dict[str, dict[str, int]] = {}
    for facet in query.facets:
        fconds = base_conds + _conditions(query.filters, skip=facet)
        if facet == "tag":
            fstmt = (
                scoped(
                    sa.select(CapabilityTag.tag, sa.func.count())
                    .select_from(CapabilityRow)
                    .join(CapabilityTag, CapabilityTag.capability_id == CapabilityRow.id)
                )
                .where(*fconds)
                .group_by(CapabilityTag.tag)
                .order_by(sa.func.count().desc(), CapabilityTag.tag)
                .limit(TAG_FACET_LIMIT)
            )
        else:
            column = FACET_COLUMNS[facet]
            fstmt = (
                scoped(sa.select(column, sa.func.count()).select_from(CapabilityRow))
                .where(*fconds, column.is_not(None))
                .group_by(column)
                .order_by(sa.func.count().desc(), column)
            )
        facets[facet] = {value: count for value, count in session.execute(fstmt).all()}
    return SearchResult(rows=rows, total=total, facets=facets)
