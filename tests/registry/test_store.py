"""The store under concurrency and failure, and its migrations, on SQLite and PostgreSQL."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from yunnao.app import SchemaOutOfDate, create_app
from yunnao.plugins.errors import Conflict
from yunnao.registry import db, facets, lifecycle, migrate, schemas
from yunnao.registry.access import ANONYMOUS, Identity
from yunnao.registry.search import SearchQuery
from yunnao.registry.store import RegistryStore
from yunnao.settings import Settings


def spec(version: str = "1.0.0", **fields) -> schemas.PublishRequest:
    fields.setdefault("title", "t")
    fields.setdefault("classification", "public")
    return schemas.PublishRequest(version=version, **fields)


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


QUERIES = [
    SearchQuery(per_page=100),
    SearchQuery(q="air", per_page=100),
    SearchQuery(filters={"domain": ["livelihood"], "tag": ["iot"]}, per_page=100),
    SearchQuery(filters={"classification": ["internal", "restricted"]}, sort="name"),
    SearchQuery(sort="-updated", page=2, per_page=3),
]


def answers(store: RegistryStore, identity) -> list:
    out = []
    for query in QUERIES:
        page = store.search(identity, query)
        out.append(([item.id for item in page.items], page.total, page.facets))
    return out


@pytest.mark.parametrize("max_delta", [20_000, 1], ids=["incremental", "rebuild"])
def test_search_index_catches_up_with_writes_from_another_process(
    database_url: str, max_delta: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gateway's warm search index must answer exactly like a cold one after any write
    made through another gateway (another engine on the same database)."""
    monkeypatch.setattr(facets, "_MAX_DELTA_KEYS", max_delta)
    engine, other_engine = db.create_engine(database_url), db.create_engine(database_url)
    writer, reader = RegistryStore(engine, "sd.qd"), RegistryStore(other_engine, "sd.qd")
    author = Identity(subject="w", role="author", scopes=("sd.qd.env",))
    viewers = [ANONYMOUS, author]
    rnd = random.Random(7)
    live: dict[str, list[str]] = {}  # "ns/name" -> versions
    gone: list[str] = []
    seen_totals = set()
    try:
        for step in range(60):
            action = rnd.choice(["new", "new", "version", "patch", "move", "delete", "revive"])
            if action == "new" or not live:
                key = f"sd.qd.{rnd.choice(['env', 'traffic'])}/cap-{step}"
                action = "new"
            else:
                key = rnd.choice(sorted(live))
            ns, name = key.split("/")
            fields = dict(
                title=f"{rnd.choice(['air', 'water', 'noise'])} monitor {step}",
                domain=rnd.choice(["livelihood", "governance"]),
                tags=rnd.sample(["iot", "gis", "vision"], rnd.randint(0, 2)),
                classification=rnd.choice(["public", "internal", "restricted"]),
                status=rnd.choice(["draft", "published"]),
            )
            if action == "new":
                writer.publish(ns, name, spec(**fields))
                live[key] = ["1.0.0"]
            elif action == "version":
                live[key].append(f"1.{len(live[key])}.0")
                writer.publish(ns, name, spec(live[key][-1], **fields))
            elif action == "patch":
                patch = {k: fields[k] for k in ("domain", "tags", "classification")}
                writer.update_metadata(ns, name, schemas.MetaPatch(**patch))
            elif action == "move":
                version = rnd.choice(live[key])
                current = writer.get_version(author if "env" in ns else admin(), ns, name, version)
                targets = sorted(lifecycle.ALLOWED[current[0].status])
                if targets:
                    writer.transition(ns, name, version, rnd.choice(targets))
            elif action == "delete":
                writer.delete(ns, name)
                del live[key]
                gone.append(key)
            elif action == "revive" and gone:
                key = gone.pop()
                ns, name = key.split("/")
                writer.publish(ns, name, spec(**fields))
                live[key] = ["1.0.0"]
            for viewer in viewers:
                warm = answers(reader, viewer)
                cold = answers(RegistryStore(other_engine, "sd.qd"), viewer)
                assert warm == cold, f"step {step} ({action} {key})"
                seen_totals.add(warm[0][1])
        for key in gone:
            assert all(key not in ids for ids, _, _ in answers(reader, author))
        assert len(seen_totals) > 5  # the catalog really changed under the reader
    finally:
        engine.dispose()
        other_engine.dispose()


def admin() -> Identity:
    return Identity(subject="a", role="admin", scopes=("sd.qd",))
