"""The audit log: writes, invocation decisions and refused credentials recorded,
hash-chained so that changing or removing an event is detected, readable by auditors."""

from __future__ import annotations

import json
import subprocess

import sqlalchemy as sa

from tests.conftest import NODE_ID, Node, assert_problem
from tests.realservers.yunnao_node import YUNNAO
from yunnao.registry import db

NS = f"{NODE_ID}.traffic"


def _events(node: Node, **params: object) -> list[dict]:
    node.client.app.state.audit.flush()  # type: ignore[attr-defined]
    resp = node.client.get("/v1/audit", params=params, headers=node.auth("auditor", NODE_ID))
    assert resp.status_code == 200, resp.text
    return resp.json()["items"]


def test_writes_and_refusals_are_recorded_with_who_and_what(node: Node) -> None:
    assert node.publish(NS, "flow", classification="public").status_code == 201
    assert_problem(node.publish(NS, "x", headers=node.auth("consumer")), 403)
    assert_problem(
        node.client.get("/v1/capabilities", headers={"Authorization": "Bearer nonsense"}), 401
    )
    node.client.get("/v1/capabilities")  # an allowed read is not an event
    events = _events(node)
    published = [e for e in events if e["action"] == "publishVersion"]
    assert [(e["actor"], e["role"], e["status"], e["outcome"]) for e in published] == [
        ("tester", "author", 201, "ok"),
        ("tester", "consumer", 403, "denied"),
    ]
    assert published[0]["path"] == f"/v1/capabilities/{NS}/flow/versions"
    failed_login = [e for e in events if e["action"] == "authenticate"]
    assert failed_login and failed_login[0]["actor"] is None and failed_login[0]["status"] == 401
    assert all(e["request_id"] for e in events)
    assert not [e for e in events if e["method"] == "GET" and e["status"] == 200]
    # Filters, and JSON lines for export.
    assert len(_events(node, outcome="denied")) == 2
    lines = node.client.get(
        "/v1/audit", params={"format": "jsonl"}, headers=node.auth("auditor", NODE_ID)
    )
    assert lines.headers["content-type"].startswith("application/jsonl")
    assert [json.loads(x)["seq"] for x in lines.text.splitlines()] == [e["seq"] for e in events]


def test_the_chain_detects_a_changed_or_removed_event(node: Node) -> None:
    for name in ("a", "b", "c"):
        assert node.publish(NS, name, classification="public").status_code == 201
    events = _events(node)
    verdict = node.client.get("/v1/audit/verify", headers=node.auth("auditor", NODE_ID)).json()
    assert (
        verdict["ok"] and verdict["events"] == len(events) and verdict["head"] == events[-1]["hash"]
    )

    engine = db.create_engine(node.settings.db_url)
    try:
        with engine.begin() as conn:  # someone rewrites history in the database
            conn.execute(
                sa.text("UPDATE audit_event SET actor = 'someone-else' WHERE seq = :s"),
                {"s": events[1]["seq"]},
            )
        verdict = node.client.get("/v1/audit/verify", headers=node.auth("auditor", NODE_ID)).json()
        assert not verdict["ok"] and verdict["broken_at"] == events[1]["seq"]
        assert verdict["reason"] == "the event was changed"
        with engine.begin() as conn:
            conn.execute(
                sa.text("UPDATE audit_event SET actor = :a WHERE seq = :s"),
                {"a": events[1]["actor"], "s": events[1]["seq"]},
            )
            conn.execute(sa.text("DELETE FROM audit_event WHERE seq = :s"), {"s": events[1]["seq"]})
        verdict = node.client.get("/v1/audit/verify", headers=node.auth("auditor", NODE_ID)).json()
        assert not verdict["ok"] and verdict["broken_at"] == events[2]["seq"]
        assert "removed or changed" in verdict["reason"]
    finally:
        engine.dispose()


def test_only_auditors_and_admins_read_the_log(sqlite_node: Node) -> None:
    node = sqlite_node
    assert_problem(node.client.get("/v1/audit"), 401)
    assert_problem(node.client.get("/v1/audit", headers=node.auth("author", NODE_ID)), 403)
    dept = node.auth("auditor", f"{NODE_ID}.traffic")
    assert_problem(node.client.get("/v1/audit/verify", headers=dept), 403)
    assert node.client.get("/v1/audit", headers=node.auth("admin", NODE_ID)).status_code == 200


def test_yunnao_audit_verify_reads_the_store(sqlite_node: Node) -> None:
    node = sqlite_node
    assert node.publish(NS, "flow", classification="public").status_code == 201
    node.client.app.state.audit.flush()  # type: ignore[attr-defined]
    args = [YUNNAO, "audit", "verify", "--database-url", node.settings.db_url, "--json"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ok"] is True
    engine = db.create_engine(node.settings.db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE audit_event SET status = 200"))
    engine.dispose()
    broken = subprocess.run(args[:-1], capture_output=True, text=True, timeout=60)
    assert broken.returncode == 1 and "BROKEN" in broken.stdout
