"""The catalog API end to end over HTTP, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

from tests.conftest import Node, assert_problem

NS = "sd.qd.traffic"
CAP = f"/v1/capabilities/{NS}/flow-forecast"


def publish_flow(node: Node, version: str = "1.0.0", **fields: object) -> dict:
    body = {
        "title": "交通流量预测 Traffic flow forecast",
        "summary": "Forecasts hourly vehicle counts at an intersection",
        "description": "# Flow\n\nA gradient-boosted model trained on 路口 counts.",
        "kind": "model",
        "domain": "governance",
        "tags": ["traffic", "交通", "forecast"],
        "classification": "public",
        "owner": "Qingdao traffic police",
        "license": "Apache-2.0",
        "input_schema": {
            "type": "object",
            "properties": {"hour": {"type": "integer"}},
            "required": ["hour"],
        },
        "output_schema": {"type": "object", "properties": {"count": {"type": "number"}}},
        "examples": [{"title": "8am", "input": {"hour": 8}, "output": {"count": 420.0}}],
        "runtime": {"type": "inprocess"},
        **fields,
    }
    resp = node.publish(NS, "flow-forecast", version, **body)
    assert resp.status_code == 201, resp.text
    return resp.json()


def test_publish_then_show_versions_and_version(node: Node) -> None:
    created = publish_flow(node)
    assert created["id"] == f"{NS}/flow-forecast@1.0.0"
    assert created["status"] == "published" and created["published_at"]

    cap = node.client.get(CAP)
    assert cap.status_code == 200
    body = cap.json()
    assert body["title"] == "交通流量预测 Traffic flow forecast"
    assert body["latest_version"] == "1.0.0" and body["versions"] == ["1.0.0"]
    assert body["origin_node"] == "sd.qd" and body["runtime"] == "inprocess"
    assert body["tags"] == ["traffic", "交通", "forecast"]

    publish_flow(node, "1.10.0", summary="better")
    publish_flow(node, "1.9.0", summary="backport")
    versions = node.client.get(CAP + "/versions").json()["items"]
    assert [v["version"] for v in versions] == ["1.10.0", "1.9.0", "1.0.0"]  # semver order
    # metadata follows the newest version; a backport does not roll it back
    assert node.client.get(CAP).json()["summary"] == "better"

    v = node.client.get(CAP + "/versions/1.0.0")
    assert v.status_code == 200
    assert v.json()["input_schema"]["required"] == ["hour"]
    assert v.json()["examples"][0]["output"] == {"count": 420.0}


def test_publish_answers_201_with_location(node: Node) -> None:
    resp = node.publish(NS, "flow-forecast", title="x", classification="public")
    assert resp.status_code == 201
    assert resp.headers["location"] == CAP + "/versions/1.0.0"
    assert node.client.get(resp.headers["location"]).status_code == 200


def test_lifecycle_moves_and_refuses_illegal_moves(node: Node) -> None:
    publish_flow(node, "1.0.0", status="draft")
    auth = node.auth()
    path = CAP + "/versions/1.0.0/lifecycle"
    for target in ("published", "deprecated", "published", "deprecated", "retired"):
        resp = node.client.post(path, json={"status": target}, headers=auth)
        assert resp.status_code == 200, resp.text
        assert resp.json()["status"] == target
    for target in ("published", "draft", "deprecated"):
        resp = node.client.post(path, json={"status": target}, headers=auth)
        assert_problem(resp, 409, field="status", slug="illegal-transition")
    assert node.client.get(CAP + "/versions/1.0.0", headers=auth).json()["status"] == "retired"


def test_draft_to_deprecated_is_refused(node: Node) -> None:
    publish_flow(node, "2.0.0", status="draft")
    resp = node.client.post(
        CAP + "/versions/2.0.0/lifecycle", json={"status": "deprecated"}, headers=node.auth()
    )
    body = assert_problem(resp, 409, slug="illegal-transition")
    assert "draft" in body["detail"] and "published" in body["detail"]


def test_catalog_shows_newest_published_version_not_a_newer_draft(node: Node) -> None:
    publish_flow(node, "1.0.0")
    publish_flow(node, "2.0.0-rc.1", status="draft", runtime={"type": "triton"})
    cap = node.client.get(CAP).json()
    assert (cap["latest_version"], cap["status"], cap["runtime"]) == (
        "1.0.0",
        "published",
        "inprocess",
    )
    node.client.post(
        CAP + "/versions/2.0.0-rc.1/lifecycle", json={"status": "published"}, headers=node.auth()
    )
    cap = node.client.get(CAP).json()
    assert (cap["latest_version"], cap["runtime"]) == ("2.0.0-rc.1", "triton")


def test_etag_and_conditional_requests(node: Node) -> None:
    publish_flow(node)
    first = node.client.get(CAP)
    etag = first.headers["etag"]
    assert node.client.get(CAP, headers={"If-None-Match": etag}).status_code == 304

    auth = node.auth()
    ok = node.client.patch(
        CAP, json={"summary": "Hourly counts"}, headers={**auth, "If-Match": etag}
    )
    assert ok.status_code == 200 and ok.headers["etag"] != etag
    assert ok.json()["summary"] == "Hourly counts"

    stale = node.client.patch(
        CAP, json={"summary": "lost update"}, headers={**auth, "If-Match": etag}
    )
    assert_problem(stale, 412, slug="precondition-failed")
    assert node.client.get(CAP).json()["summary"] == "Hourly counts"
    assert node.client.get(CAP, headers={"If-None-Match": etag}).status_code == 200

    v = node.client.get(CAP + "/versions/1.0.0")
    stale_v = node.client.post(
        CAP + "/versions/1.0.0/lifecycle",
        json={"status": "deprecated"},
        headers={**auth, "If-Match": '"not-current"'},
    )
    assert_problem(stale_v, 412)
    fresh_v = node.client.post(
        CAP + "/versions/1.0.0/lifecycle",
        json={"status": "deprecated"},
        headers={**auth, "If-Match": v.headers["etag"]},
    )
    assert fresh_v.status_code == 200


def test_patch_changes_only_given_fields_and_reindexes(node: Node) -> None:
    publish_flow(node)
    resp = node.client.patch(CAP, json={"tags": ["拥堵"], "title": "拥堵预警"}, headers=node.auth())
    assert resp.status_code == 200
    body = resp.json()
    assert body["tags"] == ["拥堵"] and body["summary"].startswith("Forecasts")
    assert node.client.get("/v1/capabilities", params={"q": "拥堵"}).json()["total"] == 1
    assert node.client.get("/v1/capabilities", params={"tag": "traffic"}).json()["total"] == 0


def test_delete_tombstones_and_republish_starts_afresh(node: Node) -> None:
    publish_flow(node, "1.0.0")
    publish_flow(node, "1.1.0")
    auth = node.auth()
    assert node.client.delete(CAP, headers=auth).status_code == 204
    assert_problem(node.client.get(CAP), 404)
    assert_problem(node.client.get(CAP + "/versions/1.0.0"), 404)
    assert node.client.get("/v1/capabilities", params={"q": "flow"}).json()["total"] == 0
    assert_problem(node.client.delete(CAP, headers=auth), 404)

    publish_flow(node, "1.0.0", title="Flow v2 rewrite")
    cap = node.client.get(CAP).json()
    assert cap["versions"] == ["1.0.0"] and cap["title"] == "Flow v2 rewrite"
    assert node.client.get("/v1/capabilities", params={"q": "rewrite"}).json()["total"] == 1


def test_every_write_appends_to_the_change_log_in_order(node: Node) -> None:
    store = node.client.app.state.catalog.store
    publish_flow(node, "1.0.0")
    auth = node.auth()
    node.client.post(CAP + "/versions/1.0.0/lifecycle", json={"status": "deprecated"}, headers=auth)
    node.client.patch(CAP, json={"summary": "s"}, headers=auth)
    node.client.delete(CAP, headers=auth)
    log = [(c.entity, c.key, c.op) for c in store.changes()]
    assert log == [
        ("namespace", NS, "upsert"),
        ("capability", f"{NS}/flow-forecast", "upsert"),
        ("version", f"{NS}/flow-forecast@1.0.0", "upsert"),
        ("version", f"{NS}/flow-forecast@1.0.0", "upsert"),
        ("capability", f"{NS}/flow-forecast", "upsert"),
        ("capability", f"{NS}/flow-forecast", "delete"),
    ]
    seqs = [c.seq for c in store.changes()]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert all(len(c.content_hash) == 64 and c.origin_node == "sd.qd" for c in store.changes())
    assert [c.seq for c in store.changes(since=seqs[2], limit=2)] == seqs[3:5]


def test_openapi_document_is_valid_and_lists_the_catalog(node: Node) -> None:
    from openapi_spec_validator import validate

    spec = node.client.get("/openapi.json").json()
    validate(spec)
    ops = {op["operationId"] for item in spec["paths"].values() for op in item.values()}
    assert {
        "searchCapabilities",
        "getCapability",
        "publishVersion",
        "transitionVersion",
        "updateCapability",
        "deleteCapability",
        "listVersions",
        "getVersion",
        "healthz",
        "readyz",
    } <= ops
    publish = spec["paths"]["/v1/capabilities/{namespace}/{name}/versions"]["post"]
    assert publish["security"] == [{"bearer": []}]
    assert "application/problem+json" in publish["responses"]["422"]["content"]


def test_health_and_readiness(node: Node) -> None:
    assert node.client.get("/healthz").json()["status"] == "ok"
    ready = node.client.get("/readyz")
    assert ready.status_code == 200
    assert {k: v for k, v in ready.json().items() if k != "details"} == {
        "status": "ready",
        "node": "sd.qd",
    }
    assert set(ready.json()["details"]["sandbox"]) >= {"bwrap", "enforce", "workers"}
