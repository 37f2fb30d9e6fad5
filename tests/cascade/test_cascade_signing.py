"""Signing own entries when they are written (not each time the feed is read), rows
written without the signer signed once on first read, and long polls woken by writes
of this process at once and by other processes' writes on the same store."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.conftest import NODE_ID, Node
from yunnao.cascade.apply import Applier
from yunnao.cascade.feed import Feed, signed_part
from yunnao.cascade.peers import PeerStore
from yunnao.cascade.policy import Reader
from yunnao.cascade.signing import sign, verify
from yunnao.registry import db, migrate, schemas
from yunnao.registry.identity import tokens
from yunnao.registry.store import RegistryStore

NS = f"{NODE_ID}.traffic"
FEED = "/v1/cascade/changes"


def _stored_items(engine: sa.Engine) -> dict[int, Any]:
    """Own capability and version changes: seq -> the item kept with the change."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT seq, item FROM change WHERE entity IN ('capability', 'version') "
                "AND origin_node = :n ORDER BY seq"
            ),
            {"n": NODE_ID},
        ).all()
    return {seq: json.loads(item) if isinstance(item, str) else item for seq, item in rows}


def _feed(node: Node) -> list[dict[str, Any]]:
    page = node.client.get(
        FEED, params={"since": 0, "limit": 1000}, headers=node.auth("operator", NODE_ID)
    )
    assert page.status_code == 200, page.text
    return page.json()["items"]


def _apply_at_parent(node: Node, items: list[dict[str, Any]], tmp_path: Path) -> None:
    """Apply ``items`` into a parent's store of its own: every one verified there."""
    engine = db.create_engine(f"sqlite:///{tmp_path / 'parent.db'}")
    migrate.upgrade(engine)
    try:
        parent = RegistryStore(engine, "sd")
        key = Ed25519PrivateKey.generate()
        child_key = tokens.load_or_create_key(node.settings.key_path)
        peer = PeerStore(parent, key).add(
            NODE_ID,
            relation="child",
            public_key=tokens.public_key_text(child_key),
            url=None,
            pull=False,
            push=False,
        )
        outcome = Applier("sd", key, parent.transaction).apply(
            peer, items, since=0, next_seq=1, head=1
        )
        assert outcome.rejected == [] and outcome.applied == len(items)
    finally:
        engine.dispose()


def test_entries_signed_when_written_verify_at_the_parent(node: Node, tmp_path: Path) -> None:
    admin = node.auth("admin", NODE_ID)
    assert node.publish(NS, "flow", title="流量", classification="public").status_code == 201
    assert node.publish(NS, "staff", classification="internal").status_code == 201
    patch = node.client.patch(f"/v1/capabilities/{NS}/flow", json={"summary": "v2"}, headers=admin)
    assert patch.status_code == 200

    engine = db.create_engine(node.settings.db_url)
    try:
        stored = _stored_items(engine)
    finally:
        engine.dispose()
    # Every own capability and version change carries its signed item from its write.
    assert stored and all(item is not None for item in stored.values())
    items = _feed(node)
    # The feed passes on exactly what was signed when written (for the current states).
    own = [i for i in items if i["entity"] in ("capability", "version")]
    assert own and all(stored[i["origin_seq"]] == i for i in own)
    flow = next(i for i in own if i["key"] == f"{NS}/flow")
    assert flow["entry"]["summary"] == "v2"
    _apply_at_parent(node, items, tmp_path)


def test_rows_written_without_the_signer_are_signed_once_on_first_read(
    node: Node, tmp_path: Path
) -> None:
    # Another process of this node without the signer (or a store written before it).
    engine = db.create_engine(node.settings.db_url)
    try:
        store = RegistryStore(engine, NODE_ID)
        spec = schemas.PublishRequest(version="1.0.0", title="旧", classification="internal")
        store.publish(NS, "old", spec)
        assert set(_stored_items(engine).values()) == {None}

        key = tokens.load_or_create_key(node.settings.key_path)
        first = Feed(engine, NODE_ID, key).page(0, 1000, Reader("parent")).items
        stored = _stored_items(engine)
        assert all(item is not None for item in stored.values())  # written back once
        own = [i for i in first if i["entity"] in ("capability", "version")]
        assert own and all(stored[i["origin_seq"]] == i for i in own)

        # Read again, the kept items go as they are, not signed again: marked here (as
        # only a test would), the mark comes back.
        seq = own[0]["origin_seq"]
        marked = {**own[0], "at": "kept"}
        with engine.begin() as conn:
            change = sa.table("change", sa.column("seq"), sa.column("item", sa.JSON))
            conn.execute(change.update().where(change.c.seq == seq).values(item=marked))
        again = Feed(engine, NODE_ID, key).page(0, 1000, Reader("parent")).items
        assert marked in again
        with engine.begin() as conn:
            conn.execute(change.update().where(change.c.seq == seq).values(item=own[0]))

        # A kept item that no longer holds the entry's state is not sent: the node now
        # shares internal entries sideways, so the entry (its share) changed.
        sharing = Feed(engine, NODE_ID, key, share_internal=True)
        again = sharing.page(0, 1000, Reader("parent")).items
        before = next(i for i in first if i["key"] == f"{NS}/old")
        now = next(i for i in again if i["key"] == f"{NS}/old")
        assert before["entry"]["share"] == "up" and now["entry"]["share"] == "all"
        assert now["signature"] != before["signature"]
    finally:
        engine.dispose()
    _apply_at_parent(node, first, tmp_path)


def test_kept_items_are_signed_again_when_the_node_key_is_replaced(node: Node) -> None:
    assert node.publish(NS, "flow", classification="public").status_code == 201
    engine = db.create_engine(node.settings.db_url)
    try:
        new_key = Ed25519PrivateKey.generate()
        items = Feed(engine, NODE_ID, new_key).page(0, 1000, Reader("parent")).items
        own = [i for i in items if i["entity"] in ("capability", "version")]
        assert own and all(
            verify(new_key.public_key(), signed_part(i), i["signature"]) for i in own
        )
        # ... and kept so: what is stored now is signed with the new key.
        assert all(
            verify(new_key.public_key(), signed_part(i), i["signature"])
            for i in _stored_items(engine).values()
        )
    finally:
        engine.dispose()


def test_a_long_poll_wakes_on_a_write_by_another_process(node: Node) -> None:
    """A write through another engine on the same store (as another process's would
    be) does not notify this process: the watcher's poll of the head finds it."""
    auth = node.auth("operator", NODE_ID)
    head = node.client.get(FEED, headers=auth).json()["head"]
    result: dict[str, Any] = {}

    def poll() -> None:
        resp = node.client.get(FEED, params={"since": head, "wait": 30}, headers=auth)
        result.update(resp.json())

    waiter = threading.Thread(target=poll)
    waiter.start()
    engine = db.create_engine(node.settings.db_url)
    try:
        spec = schemas.PublishRequest(version="1.0.0", title="他处", classification="public")
        RegistryStore(engine, NODE_ID).publish(NS, "elsewhere", spec)
    finally:
        engine.dispose()
    waiter.join(timeout=20)  # well before the 30-second wait ends
    assert not waiter.is_alive(), "the long poll did not answer on the other write"
    assert f"{NS}/elsewhere" in [i["key"] for i in result["items"]], result


def test_an_idle_node_does_not_read_the_head(node: Node) -> None:
    feed = node.client.app.state.cascade.feed  # type: ignore[attr-defined]
    auth = node.auth("operator", NODE_ID)
    head = node.client.get(FEED, headers=auth).json()["head"]
    resp = node.client.get(FEED, params={"since": head, "wait": 0.3}, headers=auth)
    assert resp.status_code == 200 and resp.json()["items"] == []
    assert feed.watcher.reads >= 1
    # Nobody waits now: the watcher stops reading the head ...
    for _ in range(200):
        if not feed.watcher.polling:
            break
        threading.Event().wait(0.05)
    assert not feed.watcher.polling
    reads = feed.watcher.reads
    # ... and another long poll's worth of time goes by without a read.
    threading.Event().wait(0.5)
    assert feed.watcher.reads == reads


def test_signed_bytes_are_the_canonical_json_of_the_signed_part() -> None:
    # The city writes an item's entry once for its hash and its signature: the bytes
    # must be exactly those of the canonical JSON of the item without its signature.
    import hashlib
    import random

    from tests.registry.test_hashing import _value
    from yunnao.cascade.signing import item_checks, signed_bytes
    from yunnao.registry.hashing import canonical_json, content_hash

    rng = random.Random(3)
    key = Ed25519PrivateKey.generate()
    other = Ed25519PrivateKey.generate().public_key()
    for n in range(1500):
        entry = _value(rng)
        entry = entry if isinstance(entry, dict) else {"v": entry}
        item: dict[str, Any] = {
            "origin": rng.choice(["sd.qd", "sd.qd.shinan", "中"]),
            "origin_seq": rng.choice([1, n + 1, 2**63 - 1, 2**70]),
            "entity": "capability",
            "key": rng.choice(["a/b", "x\u2028y", 'q"\\']),
            "op": "upsert",
            "content_hash": content_hash(entry),
            "entry": entry,
            "at": "2026-11-30T05:00:00+00:00",
        }
        if n % 7 == 0:
            item["extra"] = _value(rng)  # not a feed item's members: the general way
        item["signature"] = sign(key, item)
        data, entry_json = signed_bytes(item)
        assert data == canonical_json(signed_part(item))
        assert entry_json == canonical_json(entry)
        assert hashlib.sha256(entry_json).hexdigest() == item["content_hash"]
        assert item_checks(item, key.public_key())
        assert not item_checks(item, other)
        assert not item_checks({**item, "content_hash": "0" * 64}, key.public_key())
    lone = {**item, "key": "\udc80"}
    assert not item_checks(lone, key.public_key())
    for bad in ("", "AAAA", "!!!", item["signature"][:-2], item["signature"] + "AA"):
        assert not item_checks({**item, "signature": bad}, key.public_key())
