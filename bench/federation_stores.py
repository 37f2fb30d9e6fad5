"""The stores of ``bench/federation.py``: loading a district's catalog straight through
its store, and the same catalog (and the calls' usage records) on PostgreSQL, measured
for the sizing of a province's database."""

from __future__ import annotations

import itertools
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.catalog_gen import entries
from tests.realservers.postgres import PostgresServer
from yunnao.cascade.feed import Feed
from yunnao.registry import db, migrate
from yunnao.registry.identity import tokens
from yunnao.registry.store import RegistryStore
from yunnao.runtimes.gateway.usage import Usage, UsageLog

BATCH = 1000
USAGE_ROWS = 20_000  # enough 8 KiB pages for a per-row figure
USAGE_COLUMNS = (
    "at", "caller", "namespace", "name", "version", "runtime", "mode", "status",
    "latency_ms", "request_id", "error_id", "caller_node", "caller_department", "forwarded_by",
)  # fmt: skip


def load(data_dir: Path, node_id: str, count: int, url: str | None = None) -> tuple[str, float]:
    """Publish ``count`` entries into ``node_id``'s store (its SQLite file under
    ``data_dir``, or ``url``), public and internal but never restricted: all of them go
    up; (node id, seconds)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    engine = db.create_engine(url or f"sqlite:///{data_dir / 'registry.db'}")
    migrate.upgrade(engine)
    store = RegistryStore(engine, node_id)
    key = tokens.load_or_create_key(data_dir / "node_key.pem")
    store.ensure_node(public_key=tokens.public_key_text(key))
    items = (
        (ns, name, spec)
        if spec.classification != "restricted"
        else (ns, name, spec.model_copy(update={"classification": "internal"}))
        for ns, name, spec in entries(count, node_id)
    )
    start = time.perf_counter()
    while batch := list(itertools.islice(items, BATCH)):
        store.publish_many(batch)
    seconds = time.perf_counter() - start
    engine.dispose()
    return node_id, seconds


def usage_records(store: Path) -> list[Usage]:
    """The usage records a node's SQLite store holds."""
    conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        rows = conn.execute(f"SELECT {', '.join(USAGE_COLUMNS)} FROM usage_record").fetchall()
    finally:
        conn.close()
    out = []
    for row in rows:
        fields = dict(zip(USAGE_COLUMNS, row, strict=True))
        at = datetime.fromisoformat(str(fields["at"]))
        fields["at"] = at if at.tzinfo else at.replace(tzinfo=UTC)
        out.append(Usage(**fields))
    return out


PG_GROUPS = {
    "capability": "capabilities and tags",
    "capability_tag": "capabilities and tags",
    "capability_version": "versions",
    "change": "change log (feed)",
    "usage_record": "usage records",
}


def read_feed(engine: sa.Engine, node_id: str, key: Any) -> None:
    """Read the whole feed as the parent would, so that the change log holds what it
    holds at a linked district (items signed on first read are kept)."""
    feed, since = Feed(engine, node_id, key), 0
    while True:
        page = feed.page(since, 500)
        if page.next >= page.head:
            return
        since = page.next


def postgres(work: Path, node_id: str, count: int, usage: list[Usage]) -> dict[str, Any]:
    """Load ``count`` capabilities as ``node_id`` into a fresh PostgreSQL store, and
    write ``usage`` (real records of the calls, over and over) with the node's usage
    writer; then sizes by part (tables with their indexes and TOAST) and the rates."""
    server = PostgresServer().start()
    try:
        url = server.create_database("federation")
        _, seconds = load(work, node_id, count, url)
        engine = db.create_engine(url)
        read_feed(engine, node_id, tokens.load_or_create_key(work / "node_key.pem"))
        writer = UsageLog(engine)
        records = list(itertools.islice(itertools.cycle(usage), USAGE_ROWS)) if usage else []
        for record in records:
            writer.record(record)
        writer.flush()
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM ANALYZE"))
            sizes = conn.execute(
                sa.text(
                    "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = 'public' AND c.relkind = 'r'"
                )
            ).all()
            caps = conn.execute(sa.text("SELECT count(*) FROM capability")).scalar_one()
        engine.dispose()
    finally:
        server.stop()
    parts: dict[str, int] = {}
    for table, size in sizes:
        group = PG_GROUPS.get(table, "search index" if table == "capability_search" else "other")
        parts[group] = parts.get(group, 0) + int(size)
    return {
        "capabilities": caps,
        "rate": count / seconds,
        "parts": parts,
        "usage_rows": len(records),
    }
