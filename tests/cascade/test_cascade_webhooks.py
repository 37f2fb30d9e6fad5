"""Entries arriving by cascade make ``cascade.entry_arrived`` webhook deliveries at the
receiving node, written in the apply's own transaction: one per capability and version
entry applied, none for what was rejected or refused whole. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.cascade.test_cascade_feed import FEED, NS, _all
from tests.conftest import NODE_ID, Node, _node
from yunnao.cascade.apply import Applier
from yunnao.cascade.peers import PeerStore
from yunnao.plugins.errors import CheckpointMoved
from yunnao.registry import db
from yunnao.registry.access import Identity
from yunnao.registry.identity import tokens
from yunnao.registry.outbound import OutboundGuard
from yunnao.registry.store import RegistryStore
from yunnao.registry.webhooks.subscriptions import NewWebhook, Webhooks


@pytest.fixture
def district(tmp_path: Path) -> Iterator[Node]:
    yield from _node(f"sqlite:///{tmp_path / 'district' / 'registry.db'}", tmp_path / "district")


def _outbox(engine: sa.Engine) -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT payload FROM webhook_delivery ORDER BY seq")).all()
    return [json.loads(p) for (p,) in rows]


def test_entries_applied_from_a_child_are_told_to_the_node_subscription(
    district: Node, database_url: str
) -> None:
    district.publish(NS, "open", classification="public")
    district.publish(NS, "staff", classification="internal")
    district.publish(NS, "secret", classification="restricted")  # never leaves the district
    items = _all(district)
    head = district.client.get(FEED, headers=district.auth("operator", NODE_ID)).json()["head"]

    engine = db.create_engine(database_url)
    try:
        parent = RegistryStore(engine, "sd")
        operator = Identity(subject="ops", role="operator", scopes=("sd",), issuer="sd", node="sd")
        hooks = Webhooks(engine, "sd", OutboundGuard())
        hooks.create(operator, NewWebhook(scope="sd", url="https://hooks.example.org/yunnao",
                                          events=["cascade.entry_arrived"]))  # fmt: skip
        key = Ed25519PrivateKey.generate()
        peers = PeerStore(parent, key)
        child_key = tokens.load_or_create_key(district.settings.key_path)
        peer = peers.add(NODE_ID, relation="child", public_key=tokens.public_key_text(child_key),
                         url=None, pull=False, push=False)  # fmt: skip
        applier = Applier("sd", key, parent.transaction)
        outcome = applier.apply(peer, items, since=0, next_seq=head, head=head)
        assert outcome.rejected == []

        arrived = _outbox(engine)
        assert {d["type"] for d in arrived} == {"cascade.entry_arrived"}
        got = sorted((d["data"]["entity"], d["data"]["key"]) for d in arrived)
        assert got == [
            ("capability", f"{NS}/open"),
            ("capability", f"{NS}/staff"),
            ("version", f"{NS}/open@1.0.0"),
            ("version", f"{NS}/staff@1.0.0"),
        ]
        assert {(d["data"]["peer"], d["data"]["origin"]) for d in arrived} == {(NODE_ID, NODE_ID)}

        # A page refused whole, or junk, writes no delivery.
        with pytest.raises(CheckpointMoved):
            applier.apply(peer, items, since=0, next_seq=head, head=head)
        junk = applier.apply(peers.get(NODE_ID), [{"entity": "capability"}], since=head,
                             next_seq=head, head=head)  # fmt: skip
        assert junk.applied == 0 and len(_outbox(engine)) == len(arrived)
    finally:
        engine.dispose()
