"""Daily usage aggregates from usage records: outcome and caller splits, the latency
histogram and its percentiles, the Beijing day boundary, restricted capabilities folded
into their namespace, and recent() over the origin's rows; on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from yunnao.registry import db, schemas, usage_daily
from yunnao.registry.store import RegistryStore
from yunnao.registry.tables import UsageDaily, UsageRecord, utcnow
from yunnao.registry.usage_daily import BUCKETS_MS, beijing_day, percentile

NODE = "sd.qd"


def spec(classification: str = "public") -> schemas.PublishRequest:
    return schemas.PublishRequest(version="1.0.0", title="t", classification=classification)


@pytest.fixture
def engine(database_url: str):
    engine = db.create_engine(database_url)
    store = RegistryStore(engine, NODE)
    store.publish("sd.qd.traffic", "flow", spec())
    store.publish("sd.qd.traffic", "secret", spec("restricted"))
    store.publish("sd.qd.env", "air", spec("internal"))
    yield engine
    engine.dispose()


def record(engine: sa.Engine, *rows: dict) -> None:
    base = {"caller": None, "version": "1.0.0", "runtime": "inprocess", "mode": "sync"}
    base |= dict.fromkeys(("caller_node", "caller_department", "forwarded_by"))
    with engine.begin() as conn:
        conn.execute(sa.insert(UsageRecord.__table__), [{**base, **r} for r in rows])  # type: ignore[attr-defined]


def call(ns: str, name: str, status: int, ms: float, at: datetime, **who) -> dict:
    return {"namespace": ns, "name": name, "status": status, "latency_ms": ms, "at": at, **who}


def test_beijing_day_turns_at_16_utc() -> None:
    assert beijing_day(datetime(2026, 11, 29, 15, 59, 59, tzinfo=UTC)) == "2026-11-29"
    assert beijing_day(datetime(2026, 11, 29, 16, 0, 0, tzinfo=UTC)) == "2026-11-30"
    assert beijing_day(datetime(2026, 11, 29, 16, 0, 0)) == "2026-11-30"  # naive: UTC
    start, end = usage_daily.day_bounds("2026-11-30")
    assert start == datetime(2026, 11, 29, 16, tzinfo=UTC)
    assert end == datetime(2026, 11, 30, 16, tzinfo=UTC)


def test_percentile_is_the_upper_bound_of_the_bucket_holding_the_call() -> None:
    hist = [0] * len(BUCKETS_MS)
    assert percentile(hist, 0.5) is None
    assert percentile([], 0.5) is None
    hist[BUCKETS_MS.index(10)] = 50  # 50 calls in (5, 10] ms
    hist[BUCKETS_MS.index(200)] = 49
    hist[-1] = 1  # one beyond the last finite bound
    assert percentile(hist, 0.5) == 10
    assert percentile(hist, 50) == 10  # percent
    assert percentile(hist, 0.51) == 200
    assert percentile(hist, 0.99) == 200
    assert percentile(hist, 1.0) == BUCKETS_MS[-2]  # finite: "at least 30 s"
    assert percentile(hist, 0) == 10
    assert BUCKETS_MS[-1] == float("inf")
    assert list(BUCKETS_MS) == sorted(BUCKETS_MS)


def test_refresh_splits_outcomes_and_callers_and_folds_restricted(engine: sa.Engine) -> None:
    now = utcnow()
    today = beijing_day(now)
    start, _ = usage_daily.day_bounds(today)
    at = start + (now - start) / 2  # within today, before now
    traffic = {"caller_node": NODE, "caller_department": "sd.qd.traffic"}
    env = {"caller_node": NODE, "caller_department": "sd.qd.env"}
    record(
        engine,
        call("sd.qd.traffic", "flow", 200, 0.5, at, **traffic),  # same dept, bucket 0
        call("sd.qd.traffic", "flow", 200, 7, at, **env),  # other dept, (5, 10]
        call("sd.qd.traffic", "flow", 200, 7, at),  # anonymous: other dept
        call("sd.qd.traffic", "flow", 500, 40000, at, caller_node="sd.qd.shinan"),  # other node
        call("sd.qd.traffic", "flow", 403, 0.1, at, forwarded_by="sd"),  # other node, refused
        call("sd.qd.traffic", "flow", 429, 0.1, at, **traffic),
        call("sd.qd.traffic", "flow", 422, 0.2, at, **env),  # invalid
        call("sd.qd.traffic", "secret", 200, 3, at, **traffic),
        call("sd.qd.traffic", "secret", 504, 3, at, **traffic),
        call("sd.qd.env", "air", 200, 150, at, **env),
        call("sd.qd.env", "air", 200, 150, start - timedelta(seconds=1), **env),  # yesterday
        call("sd.qd.shinan.traffic", "x", 200, 1, at),  # a forwarded call: not this node's
    )
    assert usage_daily.refresh(engine, NODE) == 4  # flow, "" (secret), air today; air yesterday
    assert usage_daily.refresh(engine, NODE) == 0  # nothing changed, nothing written
    got = {(r.day, r.namespace, r.name): r for r in usage_daily.rows(engine, today, today)}
    assert set(got) == {
        (today, "sd.qd.traffic", "flow"),
        (today, "sd.qd.traffic", ""),
        (today, "sd.qd.env", "air"),
    }
    flow = got[(today, "sd.qd.traffic", "flow")]
    assert (flow.calls, flow.ok, flow.errors, flow.refused, flow.invalid) == (7, 3, 1, 2, 1)
    assert (flow.same_department, flow.other_department, flow.other_node) == (2, 3, 2)
    expected = [0] * len(BUCKETS_MS)
    expected[0], expected[BUCKETS_MS.index(10)], expected[-1] = 1, 2, 1
    assert flow.latency_hist == expected  # the calls that ran only
    folded = got[(today, "sd.qd.traffic", "")]
    assert (folded.calls, folded.ok, folded.errors, folded.same_department) == (2, 1, 1, 2)
    assert all(r.node == NODE for r in got.values())
    yesterday = usage_daily.last_days(2)[0]
    (old,) = usage_daily.rows(engine, yesterday, yesterday)
    assert (old.namespace, old.name, old.calls) == ("sd.qd.env", "air", 1)
    assert usage_daily.rows(engine, yesterday, today, nodes=["sd.qd.shinan"]) == []

    # A later call changes only its own row.
    record(engine, call("sd.qd.traffic", "flow", 200, 7, at, **traffic))
    assert usage_daily.refresh(engine, NODE) == 1
    (flow,) = [r for r in usage_daily.rows(engine, today, today) if r.name == "flow"]
    assert (flow.calls, flow.same_department) == (8, 3)


def test_recent_reads_the_origin_rows(engine: sa.Engine) -> None:
    today = beijing_day(utcnow())
    hist = [0] * len(BUCKETS_MS)
    hist[BUCKETS_MS.index(50)] = 3
    hist[BUCKETS_MS.index(100)] = 1
    figures = {
        ("sd.qd.shinan.traffic", "jam"): {
            "calls": 5, "ok": 3, "errors": 1, "refused": 1, "invalid": 0,
            "same_department": 1, "other_department": 1, "other_node": 3,
            "latency_hist": hist,
        }
    }  # fmt: skip
    # The district's own rows carried up, and a row some other node claims for it.
    assert usage_daily.replace_day(engine, "sd.qd.shinan", today, figures) == 1
    assert usage_daily.replace_day(engine, "sd.qd", today, figures) == 1
    assert usage_daily.replace_day(engine, "sd.qd.shinan", today, figures) == 0
    # Calls forwarded from here: counted at the origin, so not again where its rows are;
    # the only figures here for a node whose rows never come (a sibling's, followed).
    now = utcnow()
    record(
        engine,
        call("sd.qd.shinan.traffic", "jam", 200, 7, now, forwarded_by=None),
        call("sd.qd.laoshan.roads", "x", 200, 7, now),
        call("sd.qd.laoshan.roads", "x", 503, 3, now),
        call("sd.qd.laoshan.roads", "x", 403, 0.1, now),
        call("sd.qd.laoshan.roads", "x", 200, 7, now - timedelta(days=8)),  # too old
    )
    keys = [("sd.qd.shinan.traffic", "jam"), ("sd.qd.env", "air"), ("sd.qd.laoshan.roads", "x")]
    got = usage_daily.recent(engine, keys)
    assert got[("sd.qd.shinan.traffic", "jam")] == usage_daily.RecentStats(5, 0.75, 50.0)
    assert got[("sd.qd.env", "air")] == usage_daily.RecentStats(0, None, None)
    assert got[("sd.qd.laoshan.roads", "x")] == usage_daily.RecentStats(3, 0.5, 5.0)
    # Replacing a day drops the rows no longer in it.
    assert usage_daily.replace_day(engine, "sd.qd.shinan", today, {}) == 1
    assert usage_daily.rows(engine, today, today, nodes=["sd.qd.shinan"]) == []
    assert [r.node for r in usage_daily.rows(engine, today, today)] == ["sd.qd"]
    assert isinstance(usage_daily.rows(engine, today, today)[0], UsageDaily)
