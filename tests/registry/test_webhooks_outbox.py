"""The webhook outbox, on SQLite and PostgreSQL: deliveries are written in the
transaction of the change they report (a change rolled back leaves none), go only to
the subscriptions that want them (a restricted capability's events stay with its
namespace's), and access requests and peers' health make their events too. Delivery
itself is tested end to end in tests/end_to_end/test_webhooks.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from tests.conftest import bearer
from tests.realservers import free_port
from yunnao.app import create_app
from yunnao.cascade.prober import Prober
from yunnao.plugins.errors import Conflict
from yunnao.registry import schemas
from yunnao.registry.health import HealthBoard
from yunnao.registry.webhooks.events import EVENTS, peer_event
from yunnao.settings import Settings

NODE = "sd.qd"
NS = f"{NODE}.traffic"


class Node:
    def __init__(self, client: TestClient, settings: Settings) -> None:
        self.client, self.settings = client, settings
        self.app = client.app

    def headers(self, role: str, *scopes: str, subject: str = "li", dept: str | None = None):
        return bearer(self.settings.key_path, NODE, role, *scopes, subject=subject,
                      department=dept)  # fmt: skip

    def subscribe(self, scope: str, *events: str) -> str:
        role = "admin" if scope == NODE else "author"
        resp = self.client.post(
            "/v1/webhooks", headers=self.headers(role, scope),
            json={"scope": scope, "url": "https://hooks.example.org/yunnao",
                  "events": list(events or EVENTS)},
        )  # fmt: skip
        assert resp.status_code == 201, resp.text
        return resp.json()["id"]

    def outbox(self, webhook_id: str) -> list[dict]:
        with self.app.state.catalog.store.engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT event, payload FROM webhook_delivery WHERE webhook_id = :w "
                        "ORDER BY seq"), {"w": webhook_id},
            ).all()  # fmt: skip
        return [{"event": e, **json.loads(p)} for e, p in rows]


@pytest.fixture
def node(database_url: str, tmp_path: Path) -> Iterator[Node]:
    # The node's sender runs here too (the leader's duty) and does not get through to
    # hooks.example.org: the rows stay, and these tests read them.
    settings = Settings(node_id=NODE, data_dir=tmp_path, database_url=database_url,
                        plugins=False)  # fmt: skip
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield Node(client, settings)


def spec(version: str, classification: str = "internal") -> schemas.PublishRequest:
    return schemas.PublishRequest(version=version, title="流量", classification=classification)


def test_deliveries_are_written_with_the_change_and_only_where_wanted(node: Node) -> None:
    store = node.app.state.catalog.store
    mine = node.subscribe(NS, "version.published", "version.retired")
    whole = node.subscribe(NODE)  # every event type
    other = node.subscribe(f"{NODE}.water", "version.published")

    store.publish(NS, "flow", spec("1.0.0"))
    store.publish(NS, "secret", spec("1.0.0", "restricted"))
    store.publish(NS, "draft", spec("1.0.0").model_copy(update={"status": "draft"}))
    store.transition(NS, "flow", "1.0.0", "deprecated")  # not asked for by `mine`
    store.transition(NS, "flow", "1.0.0", "retired")

    assert [(d["event"], d["data"]["name"]) for d in node.outbox(mine)] == [
        ("version.published", "flow"),
        ("version.published", "secret"),  # its own namespace sees restricted entries
        ("version.retired", "flow"),
    ]
    # The node's subscription: everything, but not the restricted capability's events.
    assert [(d["event"], d["data"]["name"]) for d in node.outbox(whole)] == [
        ("version.published", "flow"),
        ("version.deprecated", "flow"),
        ("version.retired", "flow"),
    ]
    assert node.outbox(other) == []

    # A change that rolls back leaves no delivery.
    with pytest.raises(Conflict):
        store.publish_many([(NS, "new", spec("1.0.0")), (NS, "flow", spec("1.0.0"))])
    assert [d["data"]["name"] for d in node.outbox(mine)] == ["flow", "secret", "flow"]
    payload = node.outbox(mine)[0]
    assert payload["type"] == "version.published" and payload["timestamp"]
    assert payload["data"]["path"] == f"/v1/capabilities/{NS}/flow/versions/1.0.0"


def test_access_requests_make_their_events(node: Node) -> None:
    store = node.app.state.catalog.store
    hook = node.subscribe(NS, "access.requested", "access.granted", "access.refused")
    ruled = schemas.PublishRequest(version="1.0.0", title="流量",
                                   access={"invoke": {"departments": [NS]}})  # fmt: skip
    store.publish(NS, "flow", ruled)
    water = f"{NODE}.water"
    for who in ("wang", "chen"):
        resp = node.client.post(
            f"/v1/capabilities/{NS}/flow/access-requests", json={"reason": "月度报表"},
            headers=node.headers("consumer", water, subject=who, dept=water),
        )  # fmt: skip
        assert resp.status_code == 201, resp.text
    ids = [d["data"]["id"] for d in node.outbox(hook)]
    author = node.headers("author", NS)
    ok = node.client.post(f"/v1/access-requests/{ids[0]}/approve", json={}, headers=author)
    assert ok.status_code == 200, ok.text
    no = node.client.post(f"/v1/access-requests/{ids[1]}/refuse", json={"reason": "数据敏感"},
                          headers=author)  # fmt: skip
    assert no.status_code == 200, no.text
    got = [(d["event"], d["data"]["requester"], d["data"]["status"]) for d in node.outbox(hook)]
    assert got == [
        ("access.requested", "wang", "pending"),
        ("access.requested", "chen", "pending"),
        ("access.granted", "wang", "approved"),
        ("access.refused", "chen", "refused"),
    ]
    assert node.outbox(hook)[-1]["data"]["decision_reason"] == "数据敏感"


def test_a_peer_that_stops_answering_and_comes_back_is_told(node: Node) -> None:
    hook = node.subscribe(NODE, "peer.unreachable", "peer.reachable")
    webhooks = node.app.state.webhooks
    board = HealthBoard(NODE)
    told: list[tuple[str, bool]] = []

    def changed(peer: str, up: bool, detail: str | None) -> None:
        told.append((peer, up))
        webhooks.emit([peer_event(peer, up, detail)])

    class Peer:  # a linked child at a port nothing listens on
        id, relation, url = f"{NODE}.shinan", "child", f"http://127.0.0.1:{free_port()}"
        pull, last_sync_at = False, None

    prober = Prober(board=board, peers=None, assertion=lambda _: "x",  # type: ignore[arg-type]
                    engine=node.app.state.catalog.store.engine, timeout=0.5,
                    changed=changed)  # fmt: skip

    async def probes(n: int) -> None:
        import httpx

        prober._client = httpx.AsyncClient()
        try:
            for _ in range(n):
                await prober.probe(Peer)  # type: ignore[arg-type]
        finally:
            await prober._client.aclose()

    anyio.run(probes, 3)  # down after two failed probes; told once
    assert told == [(Peer.id, False)]
    assert [(d["event"], d["data"]["peer"]) for d in node.outbox(hook)] == [
        ("peer.unreachable", Peer.id)
    ]


def test_a_node_subscription_to_access_requests_is_an_admins(node: Node) -> None:
    body = {"scope": NODE, "url": "https://hooks.example.org/yunnao"}
    operator = node.headers("operator", NODE)
    asks = node.client.post("/v1/webhooks", headers=operator,
                            json={**body, "events": ["access.requested"]})  # fmt: skip
    assert asks.status_code == 403, asks.text
    peers = node.client.post("/v1/webhooks", headers=operator,
                             json={**body, "events": ["peer.unreachable"]})  # fmt: skip
    assert peers.status_code == 201, peers.text
    # An admin's subscription to them: the operator neither lists it nor reads its log.
    made = node.subscribe(NODE, "access.requested")
    listed = node.client.get("/v1/webhooks", headers=operator).json()["items"]
    assert [h["id"] for h in listed] == [peers.json()["id"]]
    assert node.client.get(f"/v1/webhooks/{made}/deliveries", headers=operator).status_code == 404
