"""Review of what children share upward, in process, on SQLite and PostgreSQL: a city
(reviewing) applies a district's real feed pages; what it holds is neither in its
catalog nor in the feed its parent reads until approved; decisions are signed items that
go down to the district only and are kept there; rules approve on arrival; a child can
send no decision up, a parent none about another subtree."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.cascade.test_cascade_feed import FEED, NS
from tests.conftest import NODE_ID, Node, _node
from yunnao.cascade.apply import Applier
from yunnao.cascade.feed import Feed, make_item
from yunnao.cascade.items import review_key
from yunnao.cascade.peers import PeerStore
from yunnao.cascade.policy import Reader, may_send, refusal
from yunnao.cascade.review import decisions
from yunnao.plugins.errors import Conflict, NotFound
from yunnao.registry import db
from yunnao.registry.access import ANONYMOUS, Identity
from yunnao.registry.db import read_session
from yunnao.registry.identity import tokens
from yunnao.registry.outbound import OutboundGuard
from yunnao.registry.search import SearchQuery
from yunnao.registry.store import RegistryStore
from yunnao.registry.webhooks.subscriptions import NewWebhook, Webhooks

CITY = "sd"


@pytest.fixture
def district(tmp_path: Path) -> Iterator[Node]:
    yield from _node(f"sqlite:///{tmp_path / 'district' / 'registry.db'}", tmp_path / "district")


class City:
    def __init__(self, engine: sa.Engine, district: Node) -> None:
        self.engine = engine
        self.store = RegistryStore(engine, CITY)
        self.key = Ed25519PrivateKey.generate()
        self.feed = Feed(engine, CITY, self.key)
        self.store.signer = self.feed.sign_logged
        self.peers = PeerStore(self.store, self.key)
        child_key = tokens.load_or_create_key(district.settings.key_path)
        self.peers.add(NODE_ID, relation="child", public_key=tokens.public_key_text(child_key),
                       url=None, pull=False, push=False)  # fmt: skip
        self.applier = Applier(CITY, self.key, self.store.transaction, review=True)
        self.district = district
        self.since = 0

    def sync(self) -> Any:
        """Apply what the district's feed has after the last sync."""
        d = self.district
        page = d.client.get(FEED, params={"since": self.since, "limit": 1000},
                            headers=d.auth("operator", NODE_ID)).json()  # fmt: skip
        peer = self.peers.get(NODE_ID)
        assert peer is not None
        outcome = self.applier.apply(peer, page["items"], since=peer.checkpoint,
                                     next_seq=page["next"], head=page["head"])  # fmt: skip
        assert outcome.rejected == [], outcome.rejected
        self.since = page["next"]
        return outcome

    def found(self, q: str) -> set[str]:
        hits = self.store.search(ANONYMOUS, SearchQuery(q=q)).items
        return {f"{h.namespace}/{h.name}" for h in hits}

    def up(self) -> list[tuple[str, str]]:
        """What the city's parent (the province) would read: capability and version keys."""
        items = self.feed.page(0, 10_000, Reader("parent")).items
        kinds = ("capability", "version")
        return sorted((i["entity"], i["key"]) for i in items if i["entity"] in kinds)

    def down(self, child: str = NODE_ID) -> list[dict[str, Any]]:
        return [i for i in self.feed.page(0, 10_000, Reader("child", child)).items
                if i["entity"] == "review"]  # fmt: skip


@pytest.fixture
def city(database_url: str, district: Node) -> Iterator[City]:
    engine = db.create_engine(database_url)
    try:
        yield City(engine, district)
    finally:
        engine.dispose()


def _keep_at_district(district: Node, city: City, items: list[dict[str, Any]]) -> Any:
    """Apply the city's items at the district, which follows the city."""
    state = district.client.app.state.cascade  # type: ignore[attr-defined]
    peer = state.peers.get(CITY) or state.peers.add(
        CITY, relation="parent", public_key=tokens.public_key_text(city.key), url=None,
        pull=False, push=False)  # fmt: skip
    return state.applier.apply(peer, items, since=peer.checkpoint, next_seq=peer.checkpoint + 1,
                               head=peer.checkpoint + 1)  # fmt: skip


def _decisions(district: Node, name: str) -> list[tuple[str, str, str | None]]:
    engine = district.client.app.state.cascade.feed.engine  # type: ignore[attr-defined]
    with read_session(engine) as s:
        return [(d.reviewer, d.state, d.reason) for d in decisions(s, NS, name)]


def test_held_until_approved_then_in_the_catalog_and_the_feed_up(
    city: City, district: Node
) -> None:
    made = district.publish(NS, "flow", classification="public", title="客流 flow")
    assert made.status_code == 201
    outcome = city.sync()
    assert outcome.held == 2  # the capability and its version
    assert city.found("flow") == set()  # not in the catalog, not searchable
    assert city.up() == []  # not in what the province reads
    with pytest.raises(NotFound):
        city.store.describe(ANONYMOUS, NS, "flow")
    # The district hears "pending", signed by the city, and only the district does.
    (pending,) = city.down()
    assert pending["entry"]["state"] == "pending" and pending["origin"] == CITY
    assert city.down("sd.ln") == []
    assert not any(i["entity"] == "review" for i in city.feed.page(0, 10_000).items)
    assert _keep_at_district(district, city, [pending]).applied == 1
    assert _decisions(district, "flow") == [(CITY, "pending", None)]

    # A second version while held is held too; the newer metadata replaces the older.
    district.publish(NS, "flow", version="1.1.0", classification="public", title="客流 v2")
    assert city.sync().held == 2
    with city.store.transaction() as s:
        queue, total = city.applier.reviews.queue(s, state="pending", limit=10, offset=0)
    assert total == 1 and queue[0].versions == ("1.0.0", "1.1.0")
    assert queue[0].title == "客流 v2" and queue[0].via_node == NODE_ID

    assert city.applier.release(NS, "flow", by="reviewer-1") == 3
    assert city.found("flow") == {f"{NS}/flow"}
    cap, _ = city.store.describe(ANONYMOUS, NS, "flow")
    assert cap.title == "客流 v2" and cap.origin_node == NODE_ID
    # Up: with the district's own signatures, as if replicated just now.
    assert city.up() == [
        ("capability", f"{NS}/flow"),
        ("version", f"{NS}/flow@1.0.0"),
        ("version", f"{NS}/flow@1.1.0"),
    ]
    up = [i for i in city.feed.page(0, 10_000).items if i["entity"] == "capability"]
    assert {i["origin"] for i in up} == {NODE_ID}
    with pytest.raises(Conflict):
        city.applier.release(NS, "flow", by="reviewer-1")

    # Approved once: a later version applies at once.
    district.publish(NS, "flow", version="1.2.0", classification="public", title="客流 v2")
    assert city.sync().held == 0
    assert ("version", f"{NS}/flow@1.2.0") in city.up()

    approved = [i for i in city.down() if i["entry"]["state"] == "approved"]
    assert len(approved) == 1 and approved[0]["key"] == review_key(NS, "flow", CITY)
    _keep_at_district(district, city, approved)
    assert _decisions(district, "flow") == [(CITY, "approved", None)]


def test_refused_with_a_reason_stays_out_until_sent_again(city: City, district: Node) -> None:
    district.publish(NS, "faces", classification="internal")
    city.sync()
    city.applier.refuse(NS, "faces", by="reviewer-1", reason="涉及人脸，须先做隐私评估")
    assert city.up() == [] and city.found("faces") == set()
    refused = [i for i in city.down() if i["entry"]["state"] == "refused"]
    assert refused[0]["entry"]["reason"] == "涉及人脸，须先做隐私评估"
    _keep_at_district(district, city, refused)
    assert _decisions(district, "faces") == [(CITY, "refused", "涉及人脸，须先做隐私评估")]
    with pytest.raises(Conflict):
        city.applier.refuse(NS, "faces", by="reviewer-1", reason="again")

    # A fixed version puts it back in the queue, and tells the district so.
    district.publish(NS, "faces", version="1.0.1", classification="internal")
    assert city.sync().held == 2
    with city.store.transaction() as s:
        assert city.applier.reviews.get(s, NS, "faces").state == "pending"
    assert city.down()[-1]["entry"]["state"] == "pending"


def test_a_tombstone_drops_what_was_held(city: City, district: Node) -> None:
    district.publish(NS, "gone", classification="public")
    city.sync()
    assert district.client.delete(f"/v1/capabilities/{NS}/gone",
                                  headers=district.auth()).status_code == 204  # fmt: skip
    assert city.sync().held == 0
    with city.store.transaction() as s, pytest.raises(NotFound):
        city.applier.reviews.get(s, NS, "gone")
    with city.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM review_held")).scalar() == 0
    assert city.up() == []  # the deletion of something never shown does not go up


def test_rules_approve_on_arrival(city: City, district: Node) -> None:
    with city.store.transaction() as s:
        rule = city.applier.reviews.add_rule(s, namespace=NS, classification="public",
                                             district=None, by="admin")  # fmt: skip
    district.publish(NS, "open", classification="public")
    district.publish(NS, "staff", classification="internal")  # the rule wants public
    assert city.sync().held == 2
    assert city.found("open") == {f"{NS}/open"} and city.found("staff") == set()
    with city.store.transaction() as s:
        review = city.applier.reviews.get(s, NS, "open")
    assert review.state == "approved" and review.rule_id == rule.id
    states = {i["entry"]["name"]: i["entry"]["state"] for i in city.down()}
    assert states == {"open": "approved", "staff": "pending"}


def test_no_decision_travels_up_or_about_another_subtree(city: City, district: Node) -> None:
    """A child cannot send its parent a decision; a parent cannot decide about a node
    outside the reader's subtree, nor in another reviewer's name."""
    dkey = tokens.load_or_create_key(district.settings.key_path)

    def review(origin: str, key: Ed25519PrivateKey, ns: str, reviewer: str) -> dict[str, Any]:
        entry = {"namespace": ns, "name": "x", "reviewer": reviewer, "state": "approved",
                 "reason": None, "decided_at": None}  # fmt: skip
        return make_item(key, origin=origin, origin_seq=1, entity="review",
                         item_key=review_key(ns, "x", reviewer), op="upsert", entry=entry,
                         at="2026-11-30T00:00:00+00:00")  # fmt: skip

    peer = city.peers.get(NODE_ID)
    assert peer is not None
    up = city.applier.apply(peer, [review(NODE_ID, dkey, f"{NODE_ID}.x", NODE_ID)],
                            since=0, next_seq=1, head=1)  # fmt: skip
    assert [r for r, _ in up.rejected] == [
        "review decisions travel down the node tree only, not from a child"
    ]
    other = _keep_at_district(district, city, [review(CITY, city.key, "sd.ln.x", CITY)])
    assert "outside this node's subtree" in other.rejected[0][0]
    forged = _keep_at_district(district, city, [review(CITY, city.key, NS, "sd.qd")])
    assert other.applied == forged.applied == 0 and forged.rejected


def test_review_off_applies_at_once(database_url: str, district: Node) -> None:
    engine = db.create_engine(database_url)
    try:
        city = City(engine, district)
        city.applier = Applier(CITY, city.key, city.store.transaction)
        district.publish(NS, "flow", classification="public")
        assert city.sync().held == 0
        assert city.found("flow") == {f"{NS}/flow"}
        # Review switched on later: what the catalog already shows stays approved.
        city.applier = Applier(CITY, city.key, city.store.transaction, review=True)
        district.publish(NS, "flow", version="1.1.0", classification="public")
        district.publish(NS, "new", classification="public")
        assert city.sync().held == 2  # only the new capability's two items
        assert ("version", f"{NS}/flow@1.1.0") in city.up()
        with city.store.transaction() as s:
            assert city.applier.reviews.get(s, NS, "flow").decided_by == "before review"
    finally:
        engine.dispose()


def _outbox(engine: sa.Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT payload FROM webhook_delivery ORDER BY seq")).all()
    return [json.loads(p) for (p,) in rows]


def test_webhooks_tell_the_reviewers_and_the_district(city: City, district: Node) -> None:
    operator = Identity(subject="ops", role="operator", scopes=(CITY,), issuer=CITY, node=CITY)
    hooks = Webhooks(city.engine, CITY, OutboundGuard())
    url = "https://hooks.example.org/review"
    hooks.create(operator, NewWebhook(scope=CITY, url=url, events=["review.requested"]))
    state = district.client.app.state  # type: ignore[attr-defined]
    author = Identity(subject="d", role="author", scopes=(NS,), issuer=NODE_ID, node=NODE_ID)
    state.webhooks.create(author, NewWebhook(
        scope=NS, url="https://hooks.example.org/district", events=["review.decided"]))  # fmt: skip

    district.publish(NS, "flow", classification="public")
    district.publish(NS, "flow", version="1.0.1", classification="public")
    city.sync()
    asked = [d["data"] for d in _outbox(city.engine)]
    assert [(a["namespace"], a["name"], a["origin"], a["again"]) for a in asked] == [
        (NS, "flow", NODE_ID, False)  # once, not once per item
    ]
    city.applier.refuse(NS, "flow", by="reviewer-1", reason="缺少说明")
    _keep_at_district(district, city, city.down())
    told = [(d["type"], d["data"]["state"], d["data"]["reason"])
            for d in _outbox(state.cascade.feed.engine)]  # fmt: skip
    # Replication is state-based: the district, reading after the refusal, gets that only.
    assert told == [("review.decided", "refused", "缺少说明")]


def test_deleted_then_made_again_is_reviewed_afresh(city: City, district: Node) -> None:
    district.publish(NS, "flow", classification="public")
    city.sync()
    city.applier.release(NS, "flow", by="reviewer-1")
    assert district.client.delete(f"/v1/capabilities/{NS}/flow",
                                  headers=district.auth()).status_code == 204  # fmt: skip
    city.sync()
    assert city.found("flow") == set()
    assert ("capability", f"{NS}/flow") in city.up()  # the deletion travels up
    district.publish(NS, "flow", version="2.0.0", classification="public")
    assert city.sync().held == 2
    with city.store.transaction() as s:
        assert city.applier.reviews.get(s, NS, "flow").state == "pending"


def test_a_grandparents_decision_reaches_the_district_through_its_parent() -> None:
    """The province reviews what the city passed on; its decision goes down through the
    city (which keeps it, as it keeps every item it passes down) to the district, and
    never up."""
    ns = "sd.qd.shinan.traffic"
    item = {"origin": "sd", "entity": "review", "key": review_key(ns, "flow", "sd"),
            "op": "upsert", "entry": {"namespace": ns, "name": "flow", "reviewer": "sd",
                                      "state": "approved"}}  # fmt: skip
    assert may_send(item, this_node="sd", reader=Reader("child", "sd.qd"))
    assert not may_send(item, this_node="sd", reader=Reader("child", "sd.yt"))
    assert refusal(item, this_node="sd.qd", peer="sd", relation="parent") is None
    assert may_send(item, this_node="sd.qd", reader=Reader("child", "sd.qd.shinan"))
    assert not may_send(item, this_node="sd.qd", reader=Reader("parent"))
    assert not may_send(item, this_node="sd.qd", reader=Reader("child", "sd.qd.laoshan"))
    assert refusal(item, this_node="sd.qd.shinan", peer="sd.qd", relation="parent") is None
