"""One-time assertion ids shared by every process serving a node: an assertion accepted
by one process is refused by another on the same store (``serve --workers N``, gateways
sharing PostgreSQL), once; expired ids are purged from the store."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from yunnao.plugins.errors import Unauthorized
from yunnao.registry import db
from yunnao.registry.identity import replay
from yunnao.registry.identity.replay import OneTimeIds, SharedOneTimeIds


def test_a_second_process_refuses_an_assertion_the_first_accepted(database_url: str) -> None:
    # Two engines, as two processes have: nothing shared but the store.
    first, second = db.create_engine(database_url), db.create_engine(database_url)
    try:
        a, b = SharedOneTimeIds(first), SharedOneTimeIds(second)
        expires = time.time() + 300
        a.use("jti-1", expires, peer="sd.qd")
        with pytest.raises(Unauthorized, match="used before"):
            b.use("jti-1", expires, peer="sd.qd")
        with pytest.raises(Unauthorized, match="used before"):
            a.use("jti-1", expires, peer="sd.qd")
        # Another id, or the same id from another peer, is another assertion.
        b.use("jti-2", expires, peer="sd.qd")
        a.use("jti-1", expires, peer="sd.qd.shinan")
        # Per process alone (before the shared record), the second process took it.
        OneTimeIds().use("jti-1", expires, peer="sd.qd")
    finally:
        first.dispose()
        second.dispose()


def test_expired_ids_are_purged_from_the_store(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replay, "_PURGE_EVERY", 3)
    engine = db.create_engine(database_url)
    try:
        ids = SharedOneTimeIds(engine)
        now = time.time()
        ids.use("old-1", now - 10, peer="sd.qd", now=now - 20)
        ids.use("old-2", now - 10, peer="sd.qd", now=now - 20)
        ids.use("new-1", now + 300, peer="sd.qd", now=now)  # the third use purges
        with engine.connect() as conn:
            kept = conn.execute(sa.text("SELECT key FROM used_assertion")).scalars().all()
        assert kept == ["sd.qd new-1"]
    finally:
        engine.dispose()
