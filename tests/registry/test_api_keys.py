"""API keys for machine callers: shown once, stored as a hash, scoped, expiring and
revocable; only a node admin manages them."""

from __future__ import annotations

import time

import sqlalchemy as sa

from tests.conftest import NODE_ID, Node, assert_problem
from yunnao.registry import db

NS = f"{NODE_ID}.traffic"


def _key(node: Node, **body: object) -> dict:
    resp = node.client.post(
        "/v1/keys", json={"name": "app-42", **body}, headers=node.auth("admin", NODE_ID)
    )
    assert resp.status_code == 201, resp.text
    assert resp.headers["cache-control"] == "no-store"
    return resp.json()


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_a_key_is_shown_once_and_stored_as_a_hash(node: Node) -> None:
    made = _key(node, role="author", scopes=[NS])
    assert made["key"].startswith(f"yk_{made['id']}_") and made["subject"] == "app:app-42"
    listed = node.client.get("/v1/keys", headers=node.auth("admin", NODE_ID)).json()["items"]
    assert [k["id"] for k in listed] == [made["id"]] and "key" not in listed[0]
    engine = db.create_engine(node.settings.db_url)
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT * FROM api_key")).mappings().one()
    engine.dispose()
    assert made["key"] not in str(dict(stored)) and len(stored["secret_hash"]) == 64
    # It works as its role and scopes say: an author of sd.qd.traffic publishes there.
    body = {"version": "1.0.0", "title": "流量", "classification": "internal"}
    resp = node.client.post(
        f"/v1/capabilities/{NS}/flow/versions", json=body, headers=_bearer(made["key"])
    )
    assert resp.status_code == 201, resp.text
    other = node.client.post(
        f"/v1/capabilities/{NODE_ID}.water/x/versions", json=body, headers=_bearer(made["key"])
    )
    assert_problem(other, 403)


def test_wrong_revoked_and_expired_keys_are_refused(node: Node) -> None:
    made = _key(node)
    good = _bearer(made["key"])
    assert node.client.get("/v1/capabilities", headers=good).status_code == 200
    for bad, says in (
        (made["key"][:-4] + "AAAA", "not valid"),
        (f"yk_{'0' * 12}_{'x' * 43}", "not valid"),
        ("yk_nothing", "malformed"),
    ):
        assert (
            says
            in assert_problem(node.client.get("/v1/capabilities", headers=_bearer(bad)), 401)[
                "detail"
            ]
        )
    revoked = node.client.delete(f"/v1/keys/{made['id']}", headers=node.auth("admin", NODE_ID))
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    refused = assert_problem(node.client.get("/v1/capabilities", headers=good), 401)
    assert "revoked" in refused["detail"]
    short = _key(node, expires_in_days=1 / 86400)  # one second
    time.sleep(1.2)
    expired = node.client.get("/v1/capabilities", headers=_bearer(short["key"]))
    assert "expired" in assert_problem(expired, 401)["detail"]


def test_only_a_node_admin_manages_keys(sqlite_node: Node) -> None:
    node = sqlite_node
    assert_problem(node.client.post("/v1/keys", json={"name": "x"}), 401)
    author = node.auth("author", NODE_ID)
    assert_problem(node.client.post("/v1/keys", json={"name": "x"}, headers=author), 403)
    dept_admin = node.auth("admin", f"{NODE_ID}.traffic")
    assert_problem(node.client.get("/v1/keys", headers=dept_admin), 403)
    admin = node.auth("admin", NODE_ID)
    bad = node.client.post(
        "/v1/keys",
        json={"name": "x", "role": "king", "capabilities": ["no-slash"], "scopes": ["Bad Scope"]},
        headers=admin,
    )
    body = assert_problem(bad, 422)
    assert {e["field"] for e in body["errors"]} >= {"role", "capabilities[0]", "scopes[0]"}
    assert_problem(node.client.delete("/v1/keys/nope", headers=admin), 404)
