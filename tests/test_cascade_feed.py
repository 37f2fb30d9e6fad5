"""The change feed a parent node reads: ordered, signed, current, restricted-free."""

from __future__ import annotations

import threading
import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.conftest import NODE_ID, Node, assert_problem
from yunnao.cascade.feed import signed_part
from yunnao.cascade.signing import sign, verify
from yunnao.registry import tokens

NS = f"{NODE_ID}.traffic"
FEED = "/v1/cascade/changes"


def _peer(node: Node) -> dict[str, str]:
    return node.auth("operator", NODE_ID)


def _all(node: Node, limit: int = 1000) -> list[dict[str, Any]]:
    items, since = [], 0
    while True:
        page = node.client.get(FEED, params={"since": since, "limit": limit}, headers=_peer(node))
        assert page.status_code == 200, page.text
        body = page.json()
        items += body["items"]
        if body["next"] >= body["head"]:
            return items
        assert body["next"] > since
        since = body["next"]


def test_the_feed_carries_current_signed_entries_in_order(node: Node) -> None:
    admin = node.auth("admin", NODE_ID)
    assert node.publish(NS, "flow", title="流量", classification="public").status_code == 201
    assert node.publish(NS, "secret", classification="restricted").status_code == 201
    assert node.publish(NS, "gone", classification="internal").status_code == 201
    patch = node.client.patch(f"/v1/capabilities/{NS}/flow", json={"summary": "v2"}, headers=admin)
    assert patch.status_code == 200
    assert node.client.delete(f"/v1/capabilities/{NS}/gone", headers=admin).status_code == 204

    items = _all(node)
    seqs = [i["origin_seq"] for i in items]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    keys = [(i["entity"], i["key"], i["op"]) for i in items]
    assert ("capability", f"{NS}/gone", "delete") in keys
    # The first upsert of `flow` is superseded by the patch: only the current state goes.
    flows = [i for i in items if i["key"] == f"{NS}/flow"]
    assert len(flows) == 1 and flows[0]["entry"]["summary"] == "v2"
    assert ("version", f"{NS}/flow@1.0.0", "upsert") in keys
    version = next(i for i in items if i["key"] == f"{NS}/flow@1.0.0")["entry"]
    assert version["status"] == "published" and "input_schema" in version
    # Restricted entries never leave the node; a deleted one leaves only its tombstone.
    assert not [k for k in keys if "secret" in k[1]]
    assert [k for k in keys if "gone" in k[1]] == [("capability", f"{NS}/gone", "delete")]

    public = tokens.load_or_create_key(node.settings.key_path).public_key()
    for item in items:
        assert item["origin"] == NODE_ID
        assert verify(public, signed_part(item), item["signature"])
    forged = dict(items[0], entry={**items[0]["entry"], "title": "forged"})
    assert not verify(public, signed_part(forged), forged["signature"])
    other = Ed25519PrivateKey.generate()
    assert not verify(public, signed_part(items[0]), sign(other, signed_part(items[0])))


def test_pages_resume_where_they_stopped(sqlite_node: Node) -> None:
    node = sqlite_node
    for i in range(5):
        assert node.publish(NS, f"cap-{i}", classification="public").status_code == 201
    whole = _all(node)
    paged = _all(node, limit=2)
    assert [i["origin_seq"] for i in paged] == [i["origin_seq"] for i in whole]


def test_a_long_poll_answers_when_a_change_arrives(sqlite_node: Node) -> None:
    node = sqlite_node
    head = node.client.get(FEED, headers=_peer(node)).json()["head"]
    result: dict[str, Any] = {}

    def poll() -> None:
        started = time.monotonic()
        resp = node.client.get(FEED, params={"since": head, "wait": 10}, headers=_peer(node))
        result.update(resp.json(), elapsed=time.monotonic() - started)

    waiter = threading.Thread(target=poll)
    waiter.start()
    time.sleep(0.5)
    assert node.publish(NS, "late", classification="public").status_code == 201
    waiter.join(timeout=15)
    # One transaction: the namespace, capability and version appear together.
    assert f"{NS}/late" in [i["key"] for i in result["items"]], result
    assert result["elapsed"] < 5  # answered on the change, not at the end of the wait


def test_only_linked_nodes_read_the_feed(sqlite_node: Node) -> None:
    node = sqlite_node
    assert_problem(node.client.get(FEED), 401)
    assert_problem(node.client.get(FEED, headers=node.auth("consumer", NODE_ID)), 403)
    assert_problem(node.client.get(FEED, params={"limit": 0}, headers=_peer(node)), 400)
