"""Access requests (权限申请) on one node: who may ask and decide, approval as an
(optionally expiring) grant that the next call honours, refusal with its reason, and the
audit trail; grant expiry, and that grants without expiry hash as before."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from tests.conftest import assert_problem, bearer
from tests.runtime_support import NAMESPACE, rt_capabilities
from yunnao.app import create_app
from yunnao.registry import schemas
from yunnao.registry.access import Identity, grant_matches
from yunnao.registry.hashing import content_hash
from yunnao.registry.store import compact_access
from yunnao.settings import Settings

NODE = "sd.qd"
NS = NAMESPACE  # sd.qd.rt
OTHER = f"{NODE}.water"
CAP = f"/v1/capabilities/{NS}/ruled"


class One:
    def __init__(self, client: TestClient, settings: Settings) -> None:
        self.client = client
        self.settings = settings

    def headers(self, role: str, *scopes: str, subject: str, dept: str | None = None) -> dict:
        return bearer(self.settings.key_path, NODE, role, *scopes, subject=subject, department=dept)

    def asker(self, subject: str = "wang") -> dict:
        """A consumer of another department: finds the capability, may not call it."""
        return self.headers("consumer", OTHER, subject=subject, dept=OTHER)

    def invoke(self, headers: dict) -> int:
        resp = self.client.post(
            f"/v1/invoke/{NS}/ruled", json={"input": {"name": "a"}}, headers=headers
        )
        return resp.status_code


@pytest.fixture
def one(tmp_path: Path) -> Iterator[One]:
    settings = Settings(node_id=NODE, data_dir=tmp_path, plugins=False)
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        greet = rt_capabilities()["greet"]
        publisher = app.state.catalog.publisher
        version = publisher.publish(greet, namespace=NS).version
        copy = dataclasses.replace(greet, name="ruled")
        model_uri = publisher.models.log(copy, namespace=NS, node=NODE).model_uri
        body = {
            "version": "1.0.0",
            "title": "限定调用的问候",
            "classification": "internal",
            # Anyone signed in finds it; only its own department calls it.
            "access": {"invoke": {"departments": [NS]}},
            "input_schema": version.input_schema,
            "output_schema": version.output_schema,
            "runtime": version.runtime.model_dump(),
            "model_uri": model_uri,
        }
        admin = bearer(settings.key_path, NODE, "admin", NODE, subject="root")
        resp = client.post(f"{CAP}/versions", json=body, headers=admin)
        assert resp.status_code == 201, resp.text
        yield One(client, settings)


def _ask(one: One, headers: dict, **body: object) -> dict:
    resp = one.client.post(
        f"{CAP}/access-requests", json={"reason": "季度报表需要", **body}, headers=headers
    )
    assert resp.status_code == 201, resp.text
    return resp.json()


def test_a_request_approved_by_the_department_lets_the_requester_call(one: One) -> None:
    asker = one.asker()
    assert one.invoke(asker) == 403
    made = _ask(one, asker)
    assert made["status"] == "pending" and made["requester"] == "wang"
    assert made["requester_node"] == NODE and made["requester_department"] == OTHER
    assert made["title"] == "限定调用的问候" and made["via"] is None
    # One pending request per capability and requester.
    again = one.client.post(f"{CAP}/access-requests", json={"reason": "x"}, headers=asker)
    assert "pending" in assert_problem(again, 409)["detail"]

    author = one.headers("author", NS, subject="li")
    listed = one.client.get("/v1/access-requests?status=pending", headers=author).json()
    assert [i["id"] for i in listed["items"]] == [made["id"]] and listed["total"] == 1
    # Another department's author sees none of them, and may not decide.
    stranger = one.headers("author", OTHER, subject="zhao")
    assert one.client.get("/v1/access-requests", headers=stranger).json()["items"] == []
    assert_problem(
        one.client.post(f"/v1/access-requests/{made['id']}/approve", json={}, headers=stranger), 403
    )
    # A consumer may not list at all.
    assert_problem(one.client.get("/v1/access-requests", headers=asker), 403)

    resp = one.client.post(f"/v1/access-requests/{made['id']}/approve", json={}, headers=author)
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "approved" and resp.json()["decided_by"] == "li"
    assert one.invoke(asker) == 200
    # The grant is in the capability's access rules, for the subject of this node.
    cap = one.client.get(CAP, headers=author).json()
    assert {"subject": "wang", "node": NODE} in cap["access"]["grants"]
    # Decided once; the requester sees the decision.
    assert_problem(
        one.client.post(
            f"/v1/access-requests/{made['id']}/refuse", json={"reason": "x"}, headers=author
        ),
        409,
    )
    mine = one.client.get(f"{CAP}/access-requests/mine", headers=asker).json()["items"]
    assert [m["status"] for m in mine] == ["approved"]
    # Now allowed: asking again is a conflict.
    assert (
        "already"
        in assert_problem(
            one.client.post(f"{CAP}/access-requests", json={"reason": "x"}, headers=asker), 409
        )["detail"]
    )

    one.client.app.state.audit.flush()  # type: ignore[attr-defined]
    actions = {e.action for e in one.client.app.state.audit.events(limit=1000)}  # type: ignore[attr-defined]
    assert {"createAccessRequest", "approveAccessRequest"} <= actions


def test_a_refusal_carries_its_reason_to_the_requester(one: One) -> None:
    asker = one.asker("chen")
    made = _ask(one, asker)
    admin = one.headers("admin", NODE, subject="root")
    no_reason = one.client.post(f"/v1/access-requests/{made['id']}/refuse", json={}, headers=admin)
    assert_problem(no_reason, 422, field="reason")
    resp = one.client.post(
        f"/v1/access-requests/{made['id']}/refuse",
        json={"reason": "涉及个人信息，不予开放"},
        headers=admin,
    )
    assert resp.status_code == 200, resp.text
    mine = one.client.get(f"{CAP}/access-requests/mine", headers=asker).json()["items"]
    assert mine[0]["status"] == "refused" and mine[0]["decision_reason"] == "涉及个人信息，不予开放"
    assert one.invoke(asker) == 403
    # Refused: the requester may ask again, and withdraw that.
    second = _ask(one, asker)
    resp = one.client.post(f"/v1/access-requests/{second['id']}/withdraw", headers=asker)
    assert resp.json()["status"] == "withdrawn"
    # Someone else cannot withdraw another's request.
    other = _ask(one, one.asker("sun"))
    assert_problem(
        one.client.post(f"/v1/access-requests/{other['id']}/withdraw", headers=asker), 404
    )
    one.client.app.state.audit.flush()  # type: ignore[attr-defined]
    actions = [e.action for e in one.client.app.state.audit.events(limit=1000)]  # type: ignore[attr-defined]
    assert "refuseAccessRequest" in actions and "withdrawAccessRequest" in actions


def test_who_may_ask(one: One) -> None:
    # Anonymous callers are refused; hidden capabilities look absent.
    assert_problem(one.client.post(f"{CAP}/access-requests", json={"reason": "x"}), 401)
    missing = one.client.post(
        f"/v1/capabilities/{NS}/nothing/access-requests", json={"reason": "x"}, headers=one.asker()
    )
    assert_problem(missing, 404)
    # Its own department may already call it.
    member = one.headers("consumer", NS, subject="zhou", dept=NS)
    assert_problem(
        one.client.post(f"{CAP}/access-requests", json={"reason": "x"}, headers=member), 409
    )
    # Bounds: a reason is needed, at most 2000 characters; an expiry lies ahead.
    for body, field in (({"reason": ""}, "reason"), ({"reason": "x" * 2001}, "reason"),
                        ({"reason": "x", "expires_at": "2000-01-01T00:00:00Z"}, "expires_at"),
                        ({"reason": "x", "whatever": 1}, "whatever")):  # fmt: skip
        resp = one.client.post(f"{CAP}/access-requests", json=body, headers=one.asker())
        assert_problem(resp, 422, field=field)


def test_an_expiring_grant_stops_counting(one: One) -> None:
    asker = one.asker("qian")
    soon = datetime.now(UTC) + timedelta(days=30)
    made = _ask(one, asker, expires_at=soon.isoformat())
    admin = one.headers("admin", NODE, subject="root")
    resp = one.client.post(f"/v1/access-requests/{made['id']}/approve", json={}, headers=admin)
    assert resp.status_code == 200, resp.text
    assert datetime.fromisoformat(resp.json()["expires_at"]) == soon.replace(
        microsecond=soon.microsecond
    )
    assert one.invoke(asker) == 200
    # Set the grant's expiry into the past, as time passing would: it counts for nothing.
    cap = one.client.get(CAP, headers=admin)
    access = cap.json()["access"]
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    access["grants"] = [{**g, "expires_at": past} for g in access["grants"]]
    resp = one.client.patch(
        CAP, json={"access": access}, headers={**admin, "If-Match": cap.headers["etag"]}
    )
    assert resp.status_code == 200, resp.text
    assert one.invoke(asker) == 403


def test_grant_expiry_and_unchanged_hashes() -> None:
    me = Identity(subject="wang", role="consumer", node="sd.qd.shinan")
    now = datetime(2027, 1, 1, tzinfo=UTC)
    live = schemas.Grant(subject="wang", node="sd.qd.shinan", expires_at=now + timedelta(hours=1))
    dead = schemas.Grant(subject="wang", node="sd.qd.shinan", expires_at=now - timedelta(hours=1))
    assert grant_matches(me, live, "sd.qd", now=now)
    assert not grant_matches(me, dead, "sd.qd", now=now)
    # An entry's access rules written before expiry existed hash exactly as they did.
    old = {
        "grants": ["li", {"subject": "wang", "node": "sd.qd.shinan"}],
        "invoke": {"roles": ["author"]},
    }
    parsed = schemas.Access.model_validate(old)
    assert compact_access(parsed) == old
    assert content_hash(compact_access(parsed)) == content_hash(old)
    assert "expires_at" not in parsed.model_dump_json()
    with pytest.raises(ValueError, match="time zone"):
        schemas.Grant(subject="wang", node="sd.qd", expires_at=datetime(2027, 1, 1))
