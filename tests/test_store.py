"""The store under concurrency and failure, and its migrations, on SQLite and PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from yunnao.app import SchemaOutOfDate, create_app
from yunnao.plugins.errors import Conflict
from yunnao.registry import db, migrate, schemas
from yunnao.registry.access import ANONYMOUS
from yunnao.registry.search import SearchQuery
from yunnao.registry.store import RegistryStore
from yunnao.settings import Settings


def spec(version: str = "1.0.0", **fields) -> schemas.PublishRequest:
    return schemas.PublishRequest(
        version=version, title=fields.pop("title", "t"), classification="public", **fields
    )


@pytest.fixture
def store(database_url: str):
    engine = db.create_engine(database_url)
    yield RegistryStore(engine, "sd.qd")
    engine.dispose()


def test_concurrent_writers_get_gapless_ordered_sequence_numbers(store: RegistryStore) -> None:
    def publish(i: int) -> None:
        store.publish(f"sd.qd.d{i % 4}", f"cap-{i}", spec(title=f"capability {i}"))

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(publish, range(40)))
    log = store.changes(limit=1000)
    seqs = [c.seq for c in log]
    assert len(seqs) == 4 + 40 * 2  # 4 namespaces, then capability + version per publish
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # commit order, no gaps
    assert store.search(ANONYMOUS, SearchQuery(per_page=100)).total == 40


def test_publish_many_is_all_or_nothing(store: RegistryStore) -> None:
    items = [("sd.qd.traffic", f"cap-{i}", spec()) for i in range(5)]
    items.append(("sd.qd.traffic", "cap-2", spec()))  # duplicate version inside the batch
    with pytest.raises(Conflict):
        store.publish_many(items)
    assert store.changes() == []
    assert store.search(ANONYMOUS, SearchQuery()).total == 0
    assert store.publish_many(items[:5]) == 5
    assert store.search(ANONYMOUS, SearchQuery()).total == 5


def test_search_index_follows_metadata_in_the_same_transaction(store: RegistryStore) -> None:
    store.publish("sd.qd.env", "air", spec(title="空气质量 air quality"))
    assert store.search(ANONYMOUS, SearchQuery(q="空气")).total == 1
    store.delete("sd.qd.env", "air")
    assert store.search(ANONYMOUS, SearchQuery(q="空气")).total == 0
    assert store.search(ANONYMOUS, SearchQuery(q="air")).total == 0


def test_upgrade_is_idempotent_and_reaches_head(database_url: str) -> None:
    engine = db.create_engine(database_url)
    try:
        assert migrate.upgrade(engine) == migrate.head()
        assert migrate.upgrade(engine) == migrate.head()
        tables = set(sa.inspect(engine).get_table_names())
        assert {
            "node",
            "namespace",
            "capability",
            "capability_version",
            "capability_tag",
            "change",
        } <= tables
    finally:
        engine.dispose()


def test_sqlite_store_runs_in_wal_mode(tmp_path) -> None:
    engine = db.create_engine(f"sqlite:///{tmp_path}/r.db")
    migrate.upgrade(engine)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engine.dispose()


@pytest.mark.slow
@pytest.mark.postgres
def test_node_refuses_an_unmigrated_postgres_store(postgres, tmp_path) -> None:
    url = postgres.create_database("empty_store")
    try:
        settings = Settings(node_id="sd.qd", data_dir=tmp_path, database_url=url)
        with pytest.raises(SchemaOutOfDate, match="yunnao db upgrade"):
            create_app(settings)
    finally:
        postgres.drop_database("empty_store")
