"""Retention: old usage records and audit events pruned, on SQLite and PostgreSQL. The
daily aggregates stay as they were; the audit chain stays verifiable from the prune's
anchor, and a prune that hides its gap, or cuts younger than six months, is a break."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from yunnao.registry import db, usage_daily
from yunnao.registry.audit import MIN_KEEP_DAYS, PRUNE_ACTION, AuditLog, Event, _prune_path
from yunnao.registry.retention import Retention, prune_usage
from yunnao.registry.tables import UsageDaily, UsageRecord, utcnow
from yunnao.settings import Settings

NODE = "sd.qd"


@pytest.fixture
def engine(database_url: str):
    engine = db.create_engine(database_url)
    yield engine
    engine.dispose()


def _event(days_ago: float, path: str = "/v1/invoke/sd.qd.traffic/flow") -> Event:
    return Event(
        actor="sd.qd/alice", issuer="sd.qd", role="consumer", peer=None,
        action="invokeCapability", method="POST", path=path, status=200,
        at=utcnow() - timedelta(days=days_ago),
    )  # fmt: skip


def _seqs(engine: sa.Engine) -> list[int]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT seq FROM audit_event ORDER BY seq")).scalars())


def test_audit_prune_removes_old_events_and_the_chain_still_verifies(engine) -> None:
    log = AuditLog(engine)
    for days in (400, 300, 250, 100, 10, 0):
        log.record(_event(days))
    log.flush()
    assert log.verify().ok and log.verify().events == 6

    pruned = log.prune(utcnow() - timedelta(days=200))
    assert pruned is not None and (pruned.through, pruned.removed) == (3, 3)
    assert _seqs(engine) == [4, 5, 6, 7]  # 7: the prune's own event, chained after 6
    kept = log.events(since=6)
    assert kept[0].action == PRUNE_ACTION and kept[0].role == "system"
    verdict = log.verify()
    assert verdict.ok, verdict
    assert (verdict.events, verdict.pruned_through) == (4, 3)

    # Events written after the prune chain on; nothing more is old enough: no-op.
    log.record(_event(0))
    log.flush()
    assert log.prune(utcnow() - timedelta(days=200)) is None
    assert log.verify().ok and log.verify().events == 5

    # Removing a kept event behind the log's back is still a break.
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM audit_event WHERE seq = 4"))
    broken = log.verify()
    assert not broken.ok and broken.broken_at == 5


def test_a_prune_younger_than_six_months_is_refused_and_a_forged_one_is_a_break(
    engine,
) -> None:
    log = AuditLog(engine)
    for days in (30, 20, 10):
        log.record(_event(days))
    log.flush()
    with pytest.raises(ValueError, match=f"at least {MIN_KEEP_DAYS} days"):
        log.prune(utcnow() - timedelta(days=15))
    assert _seqs(engine) == [1, 2, 3]

    # Someone with write access removes two events and appends a well-formed prune
    # event anchored on the second: the hashes chain, but the cutoff was 15 days.
    with engine.connect() as conn:
        anchor = conn.execute(sa.text("SELECT hash FROM audit_event WHERE seq = 2")).scalar()
    forged = _event(0, _prune_path(2, anchor, utcnow() - timedelta(days=15)))
    log.record(Event(**{**forged.__dict__, "action": PRUNE_ACTION}))
    log.flush()
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM audit_event WHERE seq <= 2"))
    verdict = log.verify()
    assert not verdict.ok and "younger than 180 days" in verdict.reason


def test_an_interrupted_prune_verifies_and_the_next_one_finishes_it(engine) -> None:
    log = AuditLog(engine)
    for days in (400, 300, 10):
        log.record(_event(days))
    log.flush()
    before = utcnow() - timedelta(days=200)
    with engine.connect() as conn:
        anchor = conn.execute(sa.text("SELECT hash FROM audit_event WHERE seq = 2")).scalar()
    # The prune's event was written, then the process died before deleting anything.
    log.record(
        Event(**{**_event(0, _prune_path(2, anchor, before)).__dict__, "action": PRUNE_ACTION})
    )
    log.flush()
    assert log.verify().ok and log.verify().pruned_through == 2
    pruned = log.prune(before)
    assert pruned is not None and (pruned.through, pruned.removed) == (2, 2)
    assert _seqs(engine) == [3, 4]  # no second prune event
    assert log.verify().ok


def test_usage_prune_keeps_the_daily_figures(engine) -> None:
    now = utcnow()
    base = {"caller": None, "version": "1.0.0", "runtime": "inprocess", "mode": "sync"}
    base |= {"namespace": "sd.qd.traffic", "name": "flow", "status": 200, "latency_ms": 3.0}
    rows = [{**base, "at": now - timedelta(days=d)} for d in (40, 40, 20, 1, 0)]
    with engine.begin() as conn:
        conn.execute(sa.insert(UsageRecord.__table__), rows)  # type: ignore[attr-defined]
    old_day = usage_daily.beijing_day(now - timedelta(days=40))
    usage_daily.refresh_days(engine, NODE, [old_day])

    def daily() -> list[tuple[str, int]]:
        with engine.connect() as conn:
            t = UsageDaily.__table__  # type: ignore[attr-defined]
            return [tuple(r) for r in conn.execute(sa.select(t.c.day, t.c.calls))]

    figures = daily()
    assert figures == [(old_day, 2)]
    with pytest.raises(ValueError, match="at least 7 days"):
        prune_usage(engine, now - timedelta(days=3))
    assert prune_usage(engine, now - timedelta(days=30), batch=1) == 2
    with engine.connect() as conn:
        left = conn.execute(sa.text("SELECT count(*) FROM usage_record")).scalar()
    assert left == 3
    # The rollup recomputes the last days only: the pruned day's figures stay.
    usage_daily.refresh_days(engine, NODE, usage_daily.last_days(2))
    assert (old_day, 2) in daily()


def test_retention_prunes_both_and_settings_refuse_short_retention(engine) -> None:
    log = AuditLog(engine)
    log.record(_event(400))
    log.record(_event(1))
    log.flush()
    base = {"caller": None, "version": "1.0.0", "runtime": "inprocess", "mode": "sync"}
    base |= {"namespace": "sd.qd.traffic", "name": "flow", "status": 200, "latency_ms": 3.0}
    with engine.begin() as conn:
        conn.execute(
            sa.insert(UsageRecord.__table__),  # type: ignore[attr-defined]
            [{**base, "at": utcnow() - timedelta(days=d)} for d in (100, 1)],
        )
    assert not Retention(engine, log).active
    assert Retention(engine, log).prune() == (0, 0)
    assert Retention(engine, log, usage_keep_days=90, audit_keep_days=365).prune() == (1, 1)
    assert log.verify().ok

    for field, value in (("usage_keep_days", 3), ("audit_keep_days", 90)):
        with pytest.raises(ValidationError, match=field):
            Settings(**{field: value})
    assert Settings(audit_keep_days=180, usage_keep_days=7).audit_keep_days == 180
