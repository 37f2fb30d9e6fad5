"""The overview and assessment pages without a browser: who may open them, and the
overview's figures leave out the calls of capabilities the visitor may not discover
(as every view of statistics does, docs/security.md)."""

from __future__ import annotations

import re
from datetime import timedelta

import sqlalchemy as sa

from tests.conftest import Node
from yunnao.registry import usage_daily
from yunnao.registry.access import Identity
from yunnao.registry.identity import tokens
from yunnao.registry.identity.middleware import SESSION_COOKIE
from yunnao.registry.tables import UsageRecord, utcnow

NODE = "sd.qd"
NS = f"{NODE}.traffic"


def _session(node: Node, role: str, department: str | None = None) -> None:
    token = tokens.issue_session(
        tokens.load_or_create_key(node.settings.key_path),
        node_id=NODE,
        identity=Identity(
            subject="王芳", role=role, scopes=(NODE,), issuer=NODE, node=NODE, department=department
        ),
        ttl=timedelta(hours=1),
    )
    node.client.cookies.set(SESSION_COOKIE, token)


def _calls(node: Node, page: str) -> int:
    match = re.search(r'id="calls-total">(\d+)<', page)
    assert match, page[-2000:]
    return int(match.group(1))


def test_overview_counts_only_what_the_visitor_may_see(sqlite_node: Node) -> None:
    node = sqlite_node
    assert node.publish(NS, "open", classification="public").status_code == 201
    assert node.publish(NS, "secret", classification="restricted").status_code == 201
    engine = sa.create_engine(node.settings.db_url)
    base = {"caller": "x", "version": "1.0.0", "runtime": "inprocess", "mode": "sync",
            "status": 200, "latency_ms": 12.0, "caller_node": NODE,
            "caller_department": NS}  # fmt: skip
    with engine.begin() as conn:  # what the gateway records of each call
        conn.execute(
            sa.insert(UsageRecord.__table__),  # type: ignore[attr-defined]
            [{**base, "namespace": NS, "name": "open", "at": utcnow()} for _ in range(5)]
            + [{**base, "namespace": NS, "name": "secret", "at": utcnow()} for _ in range(7)],
        )
    usage_daily.refresh(engine, NODE)  # the restricted ones summed under name ""
    engine.dispose()

    resp = node.client.get("/overview", follow_redirects=False)
    assert resp.status_code == 303 and resp.headers["location"] == "/signin?next=/overview"
    _session(node, "consumer", department=f"{NODE}.water")
    page = node.client.get("/overview")
    assert page.status_code == 200
    assert _calls(node, page.text) == 5  # not the restricted department's 7
    assert node.client.get("/assessment").status_code == 403
    assert 'href="/assessment"' not in page.text

    _session(node, "consumer", department=NS)  # a member of the department sees them
    assert _calls(node, node.client.get("/overview").text) == 12

    _session(node, "auditor")
    page = node.client.get("/overview")
    assert _calls(node, page.text) == 12 and 'href="/assessment"' in page.text
    assessment = node.client.get("/assessment", params={"by": "department"})
    assert assessment.status_code == 200 and f'data-id="{NS}"' in assessment.text
    csv = node.client.get("/assessment.csv", params={"by": "department"})
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert f"{NS},".encode() in csv.content
