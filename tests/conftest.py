"""Shared fixtures: real stores (SQLite file, a real PostgreSQL server), a node app driven
over HTTP with httpx (Starlette's TestClient), and tokens signed by that node's key."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from tests.realservers.postgres import PostgresServer
from yunnao.app import create_app
from yunnao.registry import db, migrate
from yunnao.registry.identity import tokens
from yunnao.settings import Settings

NODE_ID = "sd.qd"
TEMPLATE_DB = "yunnao_template"


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session, with a migrated template database
    that each test copies (CREATE DATABASE ... TEMPLATE takes well under a second)."""
    server = PostgresServer().start()
    try:
        engine = db.create_engine(server.create_database(TEMPLATE_DB))
        migrate.upgrade(engine)
        engine.dispose()
        yield server
    finally:
        server.stop()


def _fresh_pg_database(server: PostgresServer) -> tuple[str, str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    return name, server.create_database(name, template=TEMPLATE_DB)


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=[pytest.mark.postgres, pytest.mark.slow])]
)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated registry store: every test using it runs on SQLite and PostgreSQL."""
    if request.param == "sqlite":
        yield _sqlite_copy(request.getfixturevalue("sqlite_template"), tmp_path)
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    name, url = _fresh_pg_database(server)
    yield url
    server.drop_database(name)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite store migrated once for the session, which each test copies: a copy
    takes milliseconds, running every migration again took 0.1-0.4 s a test."""
    path = tmp_path_factory.mktemp("sqlite-template") / "registry.db"
    engine = db.create_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    engine.dispose()
    return path


def _sqlite_copy(template: Path, tmp_path: Path) -> str:
    """A migrated store at ``tmp_path/registry.db``: a copy of ``template`` through
    SQLite's backup API (consistent, whatever its write-ahead log holds)."""
    target = tmp_path / "registry.db"
    source, copy = sqlite3.connect(template), sqlite3.connect(target)
    try:
        source.backup(copy)
    finally:
        source.close()
        copy.close()
    return f"sqlite:///{target}"


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    """A SQLite store (migrated) for tests about HTTP behaviour that does not depend on
    the store."""
    return _sqlite_copy(sqlite_template, tmp_path)


def bearer(
    key_path: Path,
    node_id: str,
    role: str,
    *scopes: str,
    subject: str = "tester",
    department: str | None = None,
    ttl: timedelta = timedelta(hours=1),
) -> dict[str, str]:
    """An Authorization header with a token of node ``node_id`` (key at ``key_path``)."""
    token = tokens.issue(
        tokens.load_or_create_key(key_path),
        node_id=node_id,
        subject=subject,
        role=role,
        scopes=list(scopes),
        ttl=ttl,
        department=department,
    )
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Node:
    """A node app under test: ``client`` speaks HTTP to it, ``token()`` mints credentials."""

    client: TestClient
    settings: Settings

    def token(
        self,
        role: str = "author",
        *scopes: str,
        ttl: timedelta = timedelta(hours=1),
        subject: str = "tester",
        department: str | None = None,
    ) -> str:
        key = tokens.load_or_create_key(self.settings.key_path)
        return tokens.issue(
            key,
            node_id=self.settings.node_id,
            subject=subject,
            role=role,
            scopes=list(scopes),
            ttl=ttl,
            department=department,
        )

    def auth(self, role: str = "author", *scopes: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(role, *(scopes or (NODE_ID,)))}"}

    def publish(
        self,
        namespace: str,
        name: str,
        version: str = "1.0.0",
        headers: dict[str, str] | None = None,
        **fields: Any,
    ) -> httpx.Response:
        body = {"version": version, "title": fields.pop("title", f"{name} title"), **fields}
        return self.client.post(
            f"/v1/capabilities/{namespace}/{name}/versions",
            json=body,
            headers=headers or self.auth(),
        )


def _node(url: str, tmp_path: Path) -> Iterator[Node]:
    settings = Settings(node_id=NODE_ID, data_dir=tmp_path / "node", database_url=url)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield Node(client=client, settings=settings)


@pytest.fixture
def node(database_url: str, tmp_path: Path) -> Iterator[Node]:
    """A node on each store (SQLite and PostgreSQL)."""
    yield from _node(database_url, tmp_path)


@pytest.fixture
def sqlite_node(sqlite_url: str, tmp_path: Path) -> Iterator[Node]:
    """A node on SQLite only, for HTTP-edge behaviour that the store does not change."""
    yield from _node(sqlite_url, tmp_path)


def assert_problem(
    resp: httpx.Response, status: int, *, field: str | None = None, slug: str | None = None
) -> dict[str, Any]:
    """The response is RFC 9457 problem+json with ``status``, naming ``field`` if given."""
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json"), resp.headers
    body = resp.json()
    assert body["status"] == status
    assert body["title"] and body["detail"] and body["type"].startswith("https://")
    if slug:
        assert body["type"].endswith("/" + slug), body
    if field:
        fields = [e["field"] for e in body.get("errors", [])]
        assert field in fields, f"{field!r} not named in {fields}: {body}"
    assert "Traceback" not in resp.text
    return body
