"""The change feed a parent node reads: ordered, signed, current, restricted-free."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.cascade_support import signed_capability
from tests.conftest import NODE_ID, Node, _node, assert_problem
from yunnao.cascade.apply import Applier
from yunnao.cascade.compaction import compact
from yunnao.cascade.feed import Compacted, Feed, signed_part
from yunnao.cascade.peers import PeerStore
from yunnao.cascade.policy import Reader, may_send, refusal
from yunnao.cascade.signing import sign, verify
from yunnao.plugins.errors import CheckpointMoved
from yunnao.registry import db
from yunnao.registry.identity import tokens
from yunnao.registry.store import RegistryStore

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
    assert len(set(seqs)) == len(seqs)
    keys = [(i["entity"], i["key"], i["op"]) for i in items]
    # In log order, except that a capability that changed after its version was
    # published comes (in its current state) before that version.
    cap, ver = ("capability", f"{NS}/flow", "upsert"), ("version", f"{NS}/flow@1.0.0", "upsert")
    assert keys.index(cap) < keys.index(ver)
    assert [s for s, k in zip(seqs, keys, strict=True) if k != cap] == sorted(
        s for s, k in zip(seqs, keys, strict=True) if k != cap
    )
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
    # An operator of one department is not an operator of the node.
    assert_problem(node.client.get(FEED, headers=node.auth("operator", f"{NODE_ID}.traffic")), 403)
    assert_problem(node.client.get(FEED, params={"limit": 0}, headers=_peer(node)), 400)


def _contents(engine: Any, under: str) -> dict[str, Any]:
    """Live capabilities under node ``under`` with their versions, as stored."""
    with engine.connect() as conn:
        caps = conn.execute(
            sa.text(
                "SELECT id, namespace, name, content_hash, status, latest_version, classification "
                "FROM capability WHERE deleted_at IS NULL"
            )
        ).all()
        out = {}
        for cid, ns, name, digest, status, latest, classification in caps:
            if not ns.startswith(under + "."):
                continue
            versions = conn.execute(
                sa.text(
                    "SELECT version, status, content_hash FROM capability_version "
                    "WHERE capability_id = :c ORDER BY version"
                ),
                {"c": cid},
            ).all()
            out[f"{ns}/{name}"] = (
                digest,
                status,
                latest,
                classification,
                [tuple(v) for v in versions],
            )
        return out


@pytest.fixture
def district(tmp_path: Path) -> Iterator[Node]:
    """A SQLite node in a directory of its own (``database_url`` may be SQLite too)."""
    yield from _node(f"sqlite:///{tmp_path / 'district' / 'registry.db'}", tmp_path / "district")


def test_a_feed_applies_to_a_parent_store_once_and_compacts(
    district: Node, database_url: str
) -> None:
    """The apply path and compaction on both stores: a child's feed (read over HTTP)
    applied into a parent's store, then applied again, then compacted."""
    admin = district.auth("admin", NODE_ID)
    district.publish(NS, "open", classification="public", tags=["a", "b"])
    district.publish(NS, "staff", classification="internal")
    district.publish(NS, "secret", classification="restricted")
    district.publish(NS, "gone", classification="public")
    district.publish(NS, "open", version="1.1.0", title="open v1.1", classification="public")
    resp = district.client.post(
        f"/v1/capabilities/{NS}/open/versions/1.0.0/lifecycle",
        json={"status": "deprecated"},
        headers=admin,
    )
    assert resp.status_code == 200
    assert district.client.delete(f"/v1/capabilities/{NS}/gone", headers=admin).status_code == 204
    items = _all(district)
    head = district.client.get(FEED, headers=_peer(district)).json()["head"]

    engine = db.create_engine(database_url)
    try:
        parent = RegistryStore(engine, "sd")
        key = Ed25519PrivateKey.generate()
        peers = PeerStore(parent, key)
        child_key = tokens.load_or_create_key(district.settings.key_path)
        peer = peers.add(
            NODE_ID,
            relation="child",
            public_key=tokens.public_key_text(child_key),
            url=None,
            pull=False,
            push=False,
        )
        applier = Applier("sd", key, parent.transaction)
        outcome = applier.apply(peer, items, since=0, next_seq=head, head=head)
        assert outcome.rejected == [] and outcome.applied == len(items)
        child_engine = db.create_engine(district.settings.db_url)
        expected = {
            k: v for k, v in _contents(child_engine, NODE_ID).items() if v[3] != "restricted"
        }
        child_engine.dispose()
        assert _contents(engine, NODE_ID) == expected
        assert set(expected) == {f"{NS}/open", f"{NS}/staff"}

        # Junk from a linked node is rejected and recorded, whatever its shape.
        junk = [
            {"entity": "x" * 100, "key": 123, "origin": ["sd"]},
            {**items[0], "key": "k" * 2000},
            "not an item",
            None,
        ]
        bad = applier.apply(peers.get(NODE_ID), junk, since=head, next_seq=head, head=head)
        assert bad.applied == 0 and len(bad.rejected) == len(junk)
        assert len(peers.rejections(NODE_ID)) == len(junk)

        # The same page again: refused whole (the checkpoint has moved) ...
        with pytest.raises(CheckpointMoved):
            applier.apply(peer, items, since=0, next_seq=head, head=head)
        # ... and its entries, offered at the checkpoint, change nothing.
        again = applier.apply(peers.get(NODE_ID), items, since=head, next_seq=head, head=head)
        assert again.applied == 0 and again.skipped == len(items)
        assert _contents(engine, NODE_ID) == expected

        # Compaction keeps what a follower from 0 needs, and sends the others to 0.
        feed = Feed(engine, "sd", key)
        whole = feed.page(0, 1000, Reader("operator")).items
        newest = feed.head()
        through, removed = compact(feed, keep_days=0)
        assert 0 < through < newest and removed > 0
        with pytest.raises(Compacted):
            feed.page(1, 1000, Reader("operator"))
        # The newest change stays (no sequence number is handed out twice), so a
        # follower that had everything is not sent back to the start.
        assert feed.head() == newest
        assert feed.page(newest, 1000, Reader("operator")).items == []
        after = feed.page(0, 1000, Reader("operator")).items
        assert {(i["key"], i["origin_seq"]) for i in after} <= {
            (i["key"], i["origin_seq"]) for i in whole
        }
        live = {i["key"] for i in after if i["entity"] == "capability" and i["op"] == "upsert"}
        assert live == set(expected)
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("relation", "peer", "origin", "key", "classification", "share", "refused"),
    [
        # from a child: its subtree only, namespaces their origin owns, never restricted
        ("child", "sd.qd.a", "sd.qd.a", "sd.qd.a.x/cap", "public", "all", None),
        ("child", "sd.qd.a", "sd.qd.a.b", "sd.qd.a.b.x/cap", "internal", "up", None),
        ("child", "sd.qd.a", "sd.qd.b", "sd.qd.b.x/cap", "public", "all", "neither child"),
        ("child", "sd.qd.a", "sd.qd.a", "sd.qd.b.x/cap", "public", "all", "belongs to node"),
        ("child", "sd.qd.a", "sd.qd.a", "sd.qd.a.x/cap", "restricted", "up", "never leave"),
        # from the parent: not this node's own subtree, internal only when shared sideways
        ("parent", "sd", "sd.qe", "sd.qe.x/cap", "public", "all", None),
        ("parent", "sd", "sd.qe", "sd.qe.x/cap", "internal", "all", None),
        ("parent", "sd", "sd.qe", "sd.qe.x/cap", "internal", "up", "not share sideways"),
        ("parent", "sd", "sd.qd", "sd.qd.x/cap", "public", "all", "this node or below"),
        # the capability's origin_node is the node that signed it
        ("child", "sd.qd.a", "sd.qd.a", "sd.qd.a.x/cap@sd.qd", "public", "all", "signed it"),
        ("child", "sd.qd.a", "sd.qd.a", "sd.qd.a.x/cap@sd.qd.b", "public", "all", "signed it"),
    ],
)
def test_the_receiving_side_enforces_ownership_and_classification(
    relation: str,
    peer: str,
    origin: str,
    key: str,
    classification: str,
    share: str,
    refused: str | None,
) -> None:
    key, _, labelled = key.partition("@")  # "@node": the origin_node the entry names
    item = {
        "origin": origin,
        "entity": "capability",
        "key": key,
        "op": "upsert",
        "entry": {
            "classification": classification,
            "share": share,
            "origin_node": labelled or origin,
        },
    }
    this = "sd.qd"
    answer = refusal(item, this_node=this, peer=peer, relation=relation)
    if refused is None:
        assert answer is None
    else:
        assert answer is not None and refused in answer[0] and answer[1], answer
    # The sending side agrees: what is refused here it does not send either, except an
    # ownership forgery, which only the receiving side can catch.
    reader = Reader("parent") if relation == "child" else Reader("child", this)
    sent = may_send(item, this_node=peer, reader=reader)
    assert sent == (refused is None) or refused in ("belongs to node", "signed it")


@pytest.mark.parametrize(
    ("op", "origin", "key", "refused"),
    [
        # a followed parent withdraws what it passed on, wherever it came from ...
        ("delete", "sd", "sd.qe.x/cap", None),
        ("delete", "sd", "sd.y/cap", None),
        ("delete", "sd.qe", "sd.qe.a.x/cap", None),
        # ... but never deletes (or changes) an entry of this node or its subtree
        ("delete", "sd", "sd.qd.x/cap", "in this node's subtree"),
        ("delete", "sd", "sd.qd.a.x/cap", "in this node's subtree"),
        ("upsert", "sd", "sd.qd.a.x/cap", "in this node's subtree"),
        # a tombstone by another node than the parent names only that node's subtree
        ("delete", "sd.qe", "sd.qf.x/cap", "belongs to node"),
    ],
)
def test_a_parent_never_takes_what_is_not_its_own(
    op: str, origin: str, key: str, refused: str | None
) -> None:
    namespace, _, name = key.partition("/")
    entry: dict[str, Any] = {"namespace": namespace, "name": name}
    if op == "upsert":
        entry |= {"origin_node": origin, "classification": "public", "share": "all"}
    item = {"origin": origin, "entity": "capability", "key": key, "op": op, "entry": entry}
    answer = refusal(item, this_node="sd.qd", peer="sd", relation="parent")
    if refused is None:
        assert answer is None
    else:
        assert answer is not None and refused in answer[0] and answer[1], answer
    # Nor does a parent's feed offer a child anything of the child's own subtree.
    if refused == "in this node's subtree":
        assert not may_send(item, this_node="sd", reader=Reader("child", "sd.qd"))
    # A key of a node in this node's subtree is not the parent's to vouch for.
    node = {"origin": "sd", "entity": "node", "key": "sd.qd.a.b", "op": "upsert", "entry": {}}
    vouched = refusal(node, this_node="sd.qd", peer="sd", relation="parent")
    assert vouched is not None and vouched[1]


def test_a_peer_changes_only_the_replicas_it_sent(database_url: str) -> None:
    """A node that links a grandchild directly takes that grandchild's entries from it
    only: the child between them may not delete (or re-send) them."""
    engine = db.create_engine(database_url)
    try:
        store = RegistryStore(engine, "sd.qd")
        key = Ed25519PrivateKey.generate()
        peers, applier = PeerStore(store, key), Applier("sd.qd", key, store.transaction)
        a_key, b_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        for peer_id, peer_key in (("sd.qd.a", a_key), ("sd.qd.a.b", b_key)):
            peers.add(
                peer_id,
                relation="child",
                public_key=tokens.public_key_text(peer_key),
                url=None,
                pull=False,
                push=False,
            )
        ref = "sd.qd.a.b.x/cap"

        def send(peer_id: str, item: dict[str, Any]) -> Any:
            peer = peers.get(peer_id)
            assert peer is not None
            at = peer.checkpoint
            return applier.apply(peer, [item], since=at, next_seq=at, head=at)

        assert send("sd.qd.a.b", signed_capability(b_key, "sd.qd.a.b", ref)).applied == 1
        # The child in between vouches for a deletion, or passes on b's own item: refused.
        for item in (
            signed_capability(a_key, "sd.qd.a", ref, op="delete", seq=2),
            signed_capability(b_key, "sd.qd.a.b", ref, seq=3),
        ):
            outcome = send("sd.qd.a", item)
            assert outcome.applied == 0 and len(outcome.rejected) == 1
            assert "came through sd.qd.a.b, not through sd.qd.a" in outcome.rejected[0][0]
        assert _contents(engine, "sd.qd.a.b").keys() == {ref}
        # Unlinked, b's entries are the child's to pass on again.
        peers.remove("sd.qd.a.b")
        assert (
            send("sd.qd.a", signed_capability(a_key, "sd.qd.a", ref, op="delete", seq=4)).applied
            == 1
        )
        assert _contents(engine, "sd.qd.a.b") == {}
    finally:
        engine.dispose()


def test_a_narrowed_entry_goes_to_followers_as_a_tombstone(node: Node) -> None:
    """Made internal, an entry a following child may not hold is withdrawn from it, also
    when the child reads the feed again from 0 after a compaction; the parent still gets
    the entry itself."""
    admin = node.auth("admin", NODE_ID)
    assert node.publish(NS, "census", classification="public").status_code == 201
    assert node.publish(NS, "staff", classification="internal").status_code == 201
    resp = node.client.patch(
        f"/v1/capabilities/{NS}/census", json={"classification": "internal"}, headers=admin
    )
    assert resp.status_code == 200
    feed: Feed = node.client.app.state.cascade.feed  # type: ignore[attr-defined]
    public = tokens.load_or_create_key(node.settings.key_path).public_key()
    child = Reader("child", "sd.qe")

    def withdrawals(since: int) -> list[dict[str, Any]]:
        items = feed.page(since, 1000, child).items
        assert not [i for i in items if i["op"] == "upsert" and i["entity"] != "namespace"]
        for item in items:
            assert verify(public, signed_part(item), item["signature"])
        return [i for i in items if i["op"] == "delete"]

    first = withdrawals(0)
    assert {i["key"] for i in first} == {f"{NS}/census", f"{NS}/staff"}
    assert all(i["origin"] == NODE_ID and i["entry"].keys() == {"namespace", "name"} for i in first)
    parent = feed.page(0, 1000, Reader("parent")).items
    assert ("capability", f"{NS}/census", "upsert") in {
        (i["entity"], i["key"], i["op"]) for i in parent
    }
    compact(feed, keep_days=0)
    assert withdrawals(0) == first  # the same tombstones: applying them again is a no-op
