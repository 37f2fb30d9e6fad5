"""Search as main ranked it before issue 19, kept for the benchmarks' before/after only.

Then the database scored every match: FTS5's ``bm25`` with the column weights on
SQLite, ``ts_rank`` on PostgreSQL (with the planner left to choose its scan). The
matches, filters, facet counts and paging are today's, so the two differ only in
how the matches are found and ranked.
"""

from __future__ import annotations

import numpy as np
import sqlalchemy as sa
from sqlmodel import col, select

from yunnao.registry import search as search_mod
from yunnao.registry.access import Identity
from yunnao.registry.db import read_session
from yunnao.registry.store import RegistryStore


def match_before(
    conn: sa.Connection, terms: list[search_mod.Term], *, ranked: bool
) -> tuple[np.ndarray, np.ndarray]:
    """``registry.search.match`` as it was: the database scores every match."""
    if conn.dialect.name == "sqlite":
        weights = ", ".join(str(w) for w in search_mod._FTS_WEIGHTS)
        score = f"bm25(capability_fts, {weights})" if ranked else "0.0"
        sql = f"SELECT rowid, {score} FROM capability_fts WHERE capability_fts MATCH ?"
        params: tuple[str, ...] = (search_mod._fts5_query(terms),)
    else:
        score = "-ts_rank(document, q)" if ranked else "0.0"
        sql = (
            f"SELECT capability_id, {score} FROM capability_search, "
            "to_tsquery('simple'::regconfig, %s) AS q WHERE document @@ q"
        )
        params = (search_mod._tsquery(terms),)
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    finally:
        cursor.close()
    if not rows:
        return np.empty(0, dtype=np.int64), np.empty(0)
    table = np.asarray(rows, dtype=np.float64)
    ids, scores = table[:, 0].astype(np.int64), table[:, 1]
    order = np.argsort(ids, kind="stable")
    return ids[order], scores[order]


def hits_before(
    store: RegistryStore, identity: Identity, query: search_mod.SearchQuery, **kwargs: object
) -> list[int]:
    """The page's capability ids of ``query``, ranked as before (``kwargs`` override the
    facet index's query arguments)."""
    with read_session(store.engine) as s:
        conn = s.connection()
        snap = store.facet_index.current(conn)
        terms = search_mod.parse_query(query.q)
        sort = query.sort or ("relevance" if terms else "-updated")
        found = match_before(conn, terms, ranked=sort == "relevance") if terms else None
        args: dict[str, object] = {
            "filters": query.filters,
            "match": found,
            "sort": sort,
            "offset": (query.page - 1) * query.per_page,
            "limit": query.per_page,
            "facets": query.facets,
        }
        args.update(kwargs)
        return store.facet_index.query(snap, identity, **args).ids  # type: ignore[arg-type]


def search_before(
    store: RegistryStore, identity: Identity, query: search_mod.SearchQuery
) -> list[int]:
    """What a search cost before: match, facets and the page's rows, read as today."""
    ids = hits_before(store, identity, query)
    with read_session(store.engine) as s:
        rows = search_mod.CapabilityRow
        s.exec(select(rows).where(col(rows.id).in_(ids))).all()
    return ids
