"""Engines and transactions for the registry store.

SQLite (the embedded default) runs in WAL mode so readers never wait for the writer.
Writes go through :func:`write_session`, which serializes writers on both stores
(``BEGIN IMMEDIATE`` on SQLite, a transaction-scoped advisory lock on PostgreSQL):
the change log's sequence numbers are then handed out in commit order, which is what
the cascade feed's ``since=SEQ`` relies on.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlmodel import Session

# Arbitrary constant naming the registry's write lock among PostgreSQL advisory locks.
_PG_WRITE_LOCK = 7_305_826_001


def create_engine(url: str, **kwargs: Any) -> sa.Engine:
    """An engine for ``url`` with the store's per-dialect settings applied."""
    sa_url = sa.make_url(url)
    if sa_url.get_backend_name() == "sqlite":
        if sa_url.database and sa_url.database != ":memory:":
            Path(sa_url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            sa_url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs
        )
        _configure_sqlite(engine)
        return engine
    return sa.create_engine(sa_url, pool_pre_ping=True, **kwargs)


def _configure_sqlite(engine: sa.Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take over transaction control from pysqlite so BEGIN IMMEDIATE is possible.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        mode = "IMMEDIATE" if conn.get_execution_options().get("yunnao_write") else "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {mode}")


def is_sqlite(engine: sa.Engine) -> bool:
    return engine.dialect.name == "sqlite"


@contextmanager
def read_session(engine: sa.Engine) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as session:
        yield session


@contextmanager
def write_session(engine: sa.Engine) -> Iterator[Session]:
    """A session whose transaction commits on success and rolls back on any error."""
    with (
        engine.connect().execution_options(yunnao_write=True) as conn,
        Session(bind=conn, expire_on_commit=False) as session,
    ):
        if engine.dialect.name == "postgresql":
            session.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_WRITE_LOCK})
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


@contextmanager
def row_write(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A Core transaction for rows outside the catalog (jobs, usage records): no change
    log and no registry write lock (PostgreSQL row locks suffice); on SQLite it still
    begins IMMEDIATE, so a read-then-write cannot deadlock."""
    with engine.connect().execution_options(yunnao_write=True) as conn, conn.begin():
        yield conn
