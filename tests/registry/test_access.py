"""The access baseline: anonymous reads of public entries, token-gated writes inside the
token's namespaces, and nothing revealed that the caller may not discover."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.conftest import Node, assert_problem
from yunnao.registry.identity import tokens

TRAFFIC, ENV = "sd.qd.traffic", "sd.qd.env"


@pytest.fixture
def entries(node: Node) -> Node:
    for ns, name, cls, status in [
        (TRAFFIC, "open-flow", "public", "published"),
        (TRAFFIC, "staff-flow", "internal", "published"),
        (TRAFFIC, "secret-flow", "restricted", "published"),
        (TRAFFIC, "draft-flow", "public", "draft"),
        (ENV, "env-secret", "restricted", "published"),
    ]:
        resp = node.publish(ns, name, title=f"{name} flow", classification=cls, status=status)
        assert resp.status_code == 201, resp.text
    return node


def visible(node: Node, headers: dict[str, str] | None = None) -> tuple[set[str], dict]:
    body = node.client.get("/v1/capabilities", params={"q": "flow"}, headers=headers).json()
    names = {i["name"] for i in body["items"]}
    assert body["total"] == len(names)
    return names, body["facets"]


def test_anonymous_sees_only_published_public_entries_and_counts(entries: Node) -> None:
    names, facets = visible(entries)
    assert names == {"open-flow"}
    assert facets["classification"] == {"public": 1}
    assert facets["status"] == {"published": 1}
    for hidden in ("staff-flow", "secret-flow", "draft-flow"):
        assert_problem(entries.client.get(f"/v1/capabilities/{TRAFFIC}/{hidden}"), 404)
        assert_problem(entries.client.get(f"/v1/capabilities/{TRAFFIC}/{hidden}/versions"), 404)


def test_signed_in_staff_see_internal_and_their_own_restricted(entries: Node) -> None:
    consumer = entries.auth("consumer", TRAFFIC)
    names, facets = visible(entries, consumer)
    assert names == {"open-flow", "staff-flow", "secret-flow"}
    assert facets["classification"] == {"public": 1, "internal": 1, "restricted": 1}
    other = entries.auth("consumer", ENV)
    assert visible(entries, other)[0] == {"open-flow", "staff-flow", "env-secret"}
    assert_problem(
        entries.client.get(f"/v1/capabilities/{TRAFFIC}/secret-flow", headers=other), 404
    )


def test_drafts_are_seen_by_those_who_may_write_them(entries: Node) -> None:
    author = entries.auth("author", TRAFFIC)
    assert "draft-flow" in visible(entries, author)[0]
    assert (
        entries.client.get(f"/v1/capabilities/{TRAFFIC}/draft-flow", headers=author).status_code
        == 200
    )
    assert "draft-flow" not in visible(entries, entries.auth("consumer", TRAFFIC))[0]
    assert "draft-flow" not in visible(entries, entries.auth("author", ENV))[0]


def test_writes_need_a_token(sqlite_node: Node) -> None:
    resp = sqlite_node.client.post(
        f"/v1/capabilities/{TRAFFIC}/x/versions", json={"version": "1.0.0", "title": "t"}
    )
    body = assert_problem(resp, 401, slug="unauthorized")
    assert "token" in body["detail"]
    assert resp.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("role", ["consumer", "operator", "auditor"])
def test_roles_that_do_not_write_are_403(sqlite_node: Node, role: str) -> None:
    resp = sqlite_node.publish(TRAFFIC, "x", headers=sqlite_node.auth(role, TRAFFIC))
    body = assert_problem(resp, 403, slug="forbidden")
    assert role in body["detail"]


def test_writes_only_inside_the_token_namespaces(node: Node) -> None:
    env_author = node.auth("author", ENV)
    resp = node.publish(TRAFFIC, "x", headers=env_author)
    assert "sd.qd.env" in assert_problem(resp, 403)["detail"]
    assert node.publish(ENV, "x", headers=env_author).status_code == 201

    traffic_author = node.auth("author", TRAFFIC)
    cap = f"/v1/capabilities/{ENV}/x"
    assert_problem(node.client.patch(cap, json={"title": "mine"}, headers=traffic_author), 403)
    assert_problem(node.client.delete(cap, headers=traffic_author), 403)
    assert_problem(
        node.client.post(
            cap + "/versions/1.0.0/lifecycle", json={"status": "deprecated"}, headers=traffic_author
        ),
        403,
    )
    assert node.client.get(cap, headers=env_author).json()["title"] != "mine"
    # a node-wide scope covers all of the node's departments
    assert node.publish(TRAFFIC, "y", headers=node.auth("admin", "sd.qd")).status_code == 201


def test_a_node_never_writes_another_nodes_namespace(node: Node) -> None:
    # the token scope (sd.qd) covers sd.qd.shinan.*, but that namespace is owned by the
    # district node sd.qd.shinan, not by this city node
    resp = node.publish("sd.qd.shinan.traffic", "x", headers=node.auth("admin", "sd.qd"))
    body = assert_problem(resp, 403)
    assert "sd.qd.shinan" in body["detail"]
    assert (
        node.client.get("/v1/capabilities", headers=node.auth("admin", "sd")).json()["total"] == 0
    )


def test_bad_tokens_are_401_not_anonymous(sqlite_node: Node, tmp_path) -> None:
    good = sqlite_node.token("author", TRAFFIC)
    other_key = tokens.load_or_create_key(tmp_path / "other.pem")
    cases = {
        "expired": sqlite_node.token("author", TRAFFIC, ttl=timedelta(seconds=-120)),
        "tampered": good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB"),
        "foreign key": tokens.issue(
            other_key,
            node_id="sd.qd",
            subject="eve",
            role="admin",
            scopes=["sd"],
            ttl=timedelta(hours=1),
        ),
        "other node": tokens.issue(
            other_key,
            node_id="sd.qd.shinan",
            subject="eve",
            role="admin",
            scopes=["sd"],
            ttl=timedelta(hours=1),
        ),
        "garbage": "not-a-jwt",
    }
    for why, tok in cases.items():
        resp = sqlite_node.client.get(
            "/v1/capabilities", headers={"Authorization": f"Bearer {tok}"}
        )
        assert resp.status_code == 401, why
        assert_problem(resp, 401)
    for header in ("Basic dXNlcjpwYXNz", "Bearer", "Bearer  ", good):
        resp = sqlite_node.client.get("/v1/capabilities", headers={"Authorization": header})
        assert_problem(resp, 401)
    expired = assert_problem(
        sqlite_node.client.get(
            "/v1/capabilities", headers={"Authorization": f"Bearer {cases['expired']}"}
        ),
        401,
    )
    assert "expired" in expired["detail"]


def test_alg_none_token_is_refused(sqlite_node: Node) -> None:
    import jwt

    forged = jwt.encode(
        {
            "sub": "eve",
            "role": "admin",
            "ns": ["sd"],
            "iss": "sd.qd",
            "aud": "sd.qd",
            "exp": 4102444800,
            "iat": 0,
        },
        key=None,
        algorithm="none",
    )
    resp = sqlite_node.publish(TRAFFIC, "x", headers={"Authorization": f"Bearer {forged}"})
    assert_problem(resp, 401)
