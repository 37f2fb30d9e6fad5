"""The names people use over HTTP: a node's titles and its departments', who may set
them, and the problems for bad titles; and the migration that adds English titles."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from tests.conftest import bearer
from yunnao.app import create_app
from yunnao.registry import db
from yunnao.settings import Settings

NODE = "sd.qd.shinan"
NS = f"{NODE}.traffic"


class Named:
    def __init__(self, client: TestClient, settings: Settings) -> None:
        self.client = client
        self.settings = settings

    def headers(self, role: str, *scopes: str) -> dict[str, str]:
        return bearer(self.settings.key_path, NODE, role, *scopes)


@pytest.fixture
def named(tmp_path: Path) -> Iterator[Named]:
    settings = Settings(node_id=NODE, data_dir=tmp_path, plugins=False)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield Named(client, settings)


def test_an_operator_titles_the_node_and_anyone_reads_it(named: Named) -> None:
    body = {"title_zh": "市南区", "title_en": "Shinan District"}
    resp = named.client.patch("/v1/node", json=body, headers=named.headers("operator", NODE))
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"id": NODE, "parent_id": None, **body}
    # A title left out stays; an empty one is cleared.
    resp = named.client.put("/v1/node", json={"title_en": ""}, headers=named.headers("admin", NODE))
    assert resp.json()["title_zh"] == "市南区" and resp.json()["title_en"] == ""
    assert named.client.get("/v1/node").json()["title_zh"] == "市南区"


@pytest.mark.parametrize(
    ("role", "scope", "status"),
    [("author", NODE, 403), ("consumer", NODE, 403), ("operator", f"{NODE}.water", 403)],
)
def test_only_the_node_s_admins_and_operators_title_the_node(
    named: Named, role: str, scope: str, status: int
) -> None:
    resp = named.client.patch(
        "/v1/node", json={"title_zh": "x"}, headers=named.headers(role, scope)
    )
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert named.client.get("/v1/node").json()["title_zh"] == ""
    assert named.client.patch("/v1/node", json={"title_zh": "x"}).status_code == 401


def test_a_department_is_created_and_titled_by_its_author(named: Named) -> None:
    author = named.headers("author", NS)
    body = {"title_zh": "市南区交通运输局", "title_en": "Shinan Transport Bureau"}
    resp = named.client.put(f"/v1/namespaces/{NS}", json=body, headers=author)
    assert resp.status_code == 201, resp.text
    assert resp.json() == {"id": NS, "node_id": NODE, **body}
    resp = named.client.patch(f"/v1/namespaces/{NS}", json={"title_en": "Traffic"}, headers=author)
    assert resp.status_code == 200 and resp.json()["title_zh"] == body["title_zh"]
    assert named.client.put(f"/v1/namespaces/{NS}", json={}, headers=author).status_code == 200
    listed = named.client.get("/v1/namespaces", headers=named.headers("consumer", NODE)).json()
    assert listed["items"] == [
        {"id": NS, "node_id": NODE, "title_zh": body["title_zh"], "title_en": "Traffic"}
    ]
    # Strangers learn nothing of the departments.
    assert named.client.get("/v1/namespaces").status_code == 401
    assert named.client.get(f"/v1/namespaces/{NS}").status_code == 401


def test_an_author_of_another_department_may_not_title_this_one(named: Named) -> None:
    other = named.headers("author", f"{NODE}.water")
    resp = named.client.put(f"/v1/namespaces/{NS}", json={"title_zh": "x"}, headers=other)
    assert resp.status_code == 403, resp.text
    admin = named.headers("admin", NODE)
    resp = named.client.patch(f"/v1/namespaces/{NS}", json={"title_zh": "x"}, headers=admin)
    assert resp.status_code == 404  # PATCH never creates
    assert named.client.get(f"/v1/namespaces/{NS}", headers=admin).status_code == 404


@pytest.mark.parametrize("namespace", ["sd.qd.traffic", "sd.qd.laoshan.water", f"{NODE}.a.b"])
def test_a_department_of_another_node_is_not_this_node_s_to_name(
    named: Named, namespace: str
) -> None:
    admin = named.headers("admin", "sd")  # even a token scoped above this node
    for method in ("PUT", "PATCH"):
        resp = named.client.request(
            method, f"/v1/namespaces/{namespace}", json={"title_zh": "x"}, headers=admin
        )
        assert resp.status_code == 403, resp.text
        assert "only its own node names it" in resp.json()["detail"]


def test_what_is_not_a_namespace_is_a_problem_naming_it(named: Named) -> None:
    admin = named.headers("admin", NODE)
    resp = named.client.put("/v1/namespaces/Bad!", json={"title_zh": "x"}, headers=admin)
    assert resp.status_code == 422, resp.text
    assert resp.json()["errors"][0]["field"] == "namespace"


@pytest.mark.parametrize(
    ("title", "field"),
    [
        ("市南区\u202e", "title_zh"),  # a right-to-left override
        ("a\nb", "title_en"),
        ("x" * 201, "title_zh"),
        ("\u200b", "title_en"),  # zero-width space
    ],
)
def test_titles_with_control_characters_or_too_long_are_problems(
    named: Named, title: str, field: str
) -> None:
    admin = named.headers("admin", NODE)
    for method, path in (("PATCH", "/v1/node"), ("PUT", f"/v1/namespaces/{NS}")):
        resp = named.client.request(method, path, json={field: title}, headers=admin)
        assert resp.status_code == 422, resp.text
        problem = resp.json()
        assert resp.headers["content-type"].startswith("application/problem+json")
        assert problem["errors"][0]["field"] == field
    assert named.client.get("/v1/namespaces", headers=admin).json()["items"] == []
    assert named.client.get("/v1/node").json()["title_zh"] == ""


def test_unknown_fields_are_refused(named: Named) -> None:
    resp = named.client.patch("/v1/node", json={"title": "x"}, headers=named.headers("admin", NODE))
    assert resp.status_code == 422


def test_the_openapi_document_describes_the_routes(named: Named) -> None:
    paths = named.client.get("/openapi.json").json()["paths"]
    assert {"get", "put", "patch"} <= set(paths["/v1/node"])
    assert {"get", "put", "patch"} <= set(paths["/v1/namespaces/{namespace}"])
    assert "get" in paths["/v1/namespaces"]


# ---------------------------------------------------------------- the migration


def test_the_migration_adds_english_titles_and_texts(database_url: str) -> None:
    engine = db.create_engine(database_url)
    try:
        inspector = sa.inspect(engine)
        assert "title_en" in {c["name"] for c in inspector.get_columns("node")}
        assert "title_en" in {c["name"] for c in inspector.get_columns("namespace")}
        capability = {c["name"] for c in inspector.get_columns("capability")}
        assert {"summary_en", "description_en"} <= capability
        with engine.begin() as conn:  # rows written without them get empty texts
            conn.execute(sa.text("INSERT INTO node (id, title, created_at) VALUES ('n', 'x', :t)"),
                         {"t": "2026-01-01T00:00:00+00:00"})  # fmt: skip
            assert conn.execute(sa.text("SELECT title_en FROM node")).scalar_one() == ""
    finally:
        engine.dispose()
