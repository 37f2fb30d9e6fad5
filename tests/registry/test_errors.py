"""Bad input gets a clear RFC 9457 problem naming what was wrong, and changes nothing."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from tests.conftest import Node, assert_problem

NS = "sd.qd.traffic"
PUBLISH = f"/v1/capabilities/{NS}/flow/versions"


def changes(node: Node) -> int:
    return len(node.client.app.state.catalog.store.changes(limit=10_000))


def post_raw(node: Node, body: bytes, content_type: str = "application/json", path=PUBLISH):
    return node.client.post(
        path, content=body, headers={**node.auth(), "Content-Type": content_type}
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"version": "1.0", "title": "t"}, "version"),
        ({"version": "v1.0.0", "title": "t"}, "version"),
        ({"version": "1.0.0"}, "title"),
        ({"version": "1.0.0", "title": "   "}, "title"),
        ({"version": "1.0.0", "title": "t", "sumary": "typo"}, "sumary"),
        ({"version": "1.0.0", "title": "t", "domain": "sports"}, "domain"),
        ({"version": "1.0.0", "title": "t", "classification": "secret"}, "classification"),
        ({"version": "1.0.0", "title": "t", "status": "retired"}, "status"),
        ({"version": "1.0.0", "title": "t", "tags": ["ok", "bad tag!"]}, "tags[1]"),
        ({"version": "1.0.0", "title": "t", "tags": ["t"] * 33}, "tags"),
        ({"version": "1.0.0", "title": "t", "input_schema": {"type": "integr"}}, "input_schema"),
        ({"version": "1.0.0", "title": "t", "output_schema": {"required": "x"}}, "output_schema"),
        ({"version": "1.0.0", "title": "t", "runtime": {"type": "Triton!"}}, "runtime.type"),
        ({"version": "1.0.0", "title": "t", "runtime": {"kind": "x"}}, "runtime.kind"),
        ({"version": "1.0.0", "title": "t", "examples": [{"output": 1}]}, "examples[0].input"),
        ({"version": "1.0.0", "title": "x" * 201}, "title"),
        (["not", "an", "object"], "(body)"),
    ],
)
def test_invalid_publish_is_422_naming_the_field_and_stores_nothing(
    sqlite_node: Node, body, field
) -> None:
    before = changes(sqlite_node)
    resp = sqlite_node.client.post(PUBLISH, json=body, headers=sqlite_node.auth())
    problem = assert_problem(resp, 422, field=field, slug="validation-failed")
    assert field.split("[")[0].split(".")[0] in problem["detail"] or field == "(body)"
    assert changes(sqlite_node) == before
    assert_problem(sqlite_node.client.get(f"/v1/capabilities/{NS}/flow"), 404)


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/v1/capabilities/sd.qd.Traffic/flow/versions", "namespace"),
        ("/v1/capabilities/traffic/flow/versions", "namespace"),
        ("/v1/capabilities/sd.qd.traffic/Flow/versions", "name"),
        ("/v1/capabilities/sd.qd.traffic/9flow/versions", "name"),
        ("/v1/capabilities/sd.qd.traffic/fl%20ow/versions", "name"),
    ],
)
def test_invalid_names_are_422(sqlite_node: Node, path: str, field: str) -> None:
    resp = sqlite_node.client.post(
        path, json={"version": "1.0.0", "title": "t"}, headers=sqlite_node.auth()
    )
    assert_problem(resp, 422, field=field)
    assert changes(sqlite_node) == 0


def test_malformed_json_is_400(sqlite_node: Node) -> None:
    body = assert_problem(post_raw(sqlite_node, b'{"version": "1.0.0", '), 400, slug="bad-request")
    assert "not valid JSON" in body["detail"]
    assert_problem(post_raw(sqlite_node, b"\xff\xfe"), 400)
    assert changes(sqlite_node) == 0


def test_wrong_media_type_is_415(sqlite_node: Node) -> None:
    resp = post_raw(sqlite_node, b"version=1.0.0", "application/x-www-form-urlencoded")
    assert_problem(resp, 415)


def test_oversized_body_is_413_and_stores_nothing(sqlite_node: Node) -> None:
    limit = sqlite_node.settings.max_body_bytes
    big = {"version": "1.0.0", "title": "t", "description": "x" * (limit + 10)}
    resp = post_raw(sqlite_node, json.dumps(big).encode())
    body = assert_problem(resp, 413, slug="payload-too-large")
    assert str(limit) in body["detail"]

    def chunks():  # no Content-Length: the limit holds while streaming too
        yield b'{"version": "1.0.0", "title": "t", "description": "'
        for _ in range(limit // 1000 + 2):
            yield b"y" * 1000
        yield b'"}'

    resp = sqlite_node.client.post(
        PUBLISH,
        content=chunks(),
        headers={**sqlite_node.auth(), "Content-Type": "application/json"},
    )
    assert_problem(resp, 413)
    assert changes(sqlite_node) == 0


def test_duplicate_version_is_409_and_changes_nothing(node: Node) -> None:
    assert node.publish(NS, "flow", "1.0.0", summary="first").status_code == 201
    before = changes(node)
    resp = node.publish(NS, "flow", "1.0.0", summary="second")
    assert_problem(resp, 409, field="version", slug="conflict")
    assert changes(node) == before
    assert (
        node.client.get(f"/v1/capabilities/{NS}/flow", headers=node.auth()).json()["summary"]
        == "first"
    )


def test_unknown_routes_methods_and_entities_are_problems(sqlite_node: Node) -> None:
    assert_problem(sqlite_node.client.get("/v1/nothing-here"), 404)
    assert_problem(sqlite_node.client.put("/v1/capabilities"), 405)
    assert_problem(sqlite_node.client.get(f"/v1/capabilities/{NS}/missing"), 404)
    sqlite_node.publish(NS, "flow", classification="public")
    assert_problem(sqlite_node.client.get(f"/v1/capabilities/{NS}/flow/versions/9.9.9"), 404)
    resp = sqlite_node.client.post(
        f"/v1/capabilities/{NS}/flow/versions/1.0.0/lifecycle",
        json={"status": "frozen"},
        headers=sqlite_node.auth(),
    )
    assert_problem(resp, 422, field="status")


def test_store_failure_is_500_with_an_error_id_and_no_internals(sqlite_node: Node) -> None:
    engine = sqlite_node.client.app.state.catalog.store.engine
    with engine.begin() as conn:  # a broken store: the tag table vanished
        conn.execute(sa.text("DROP TABLE capability_tag"))
    resp = sqlite_node.publish(NS, "flow")
    body = assert_problem(resp, 500, slug="internal-error")
    assert len(body["error_id"]) == 16 and body["error_id"] in body["detail"]
    for leak in ("sqlite", "capability_tag", "sqlalchemy", 'File "', "Error:"):
        assert leak not in resp.text
    assert changes(sqlite_node) == 0  # the namespace row written before the failure rolled back
