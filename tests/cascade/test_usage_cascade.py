"""Usage figures up the cascade, between real nodes: a city and two districts, each a
`yunnao serve` process with its own store.

    sd.qd (city, example plugins) ── pulls ── sd.qd.shinan (example plugins, follows the city)
                                 └── pushed to by ── sd.qd.laoshan (push only)

Calls at the district (its own callers, and one forwarded by the city) appear at the
city as the district's signed daily rows with the same sums; the city's own figures
never go down to the district that follows it; forged or inconsistent figures are
rejected with a reason.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.cascade_support import Site, until
from tests.realservers.yunnao_node import YunnaoProcess
from yunnao.cascade.feed import make_item
from yunnao.cascade.usage_items import UsageRollup
from yunnao.registry import db, migrate, schemas, usage_daily
from yunnao.registry.identity import assertions, tokens
from yunnao.registry.store import RegistryStore
from yunnao.registry.tables import UsageRecord, utcnow
from yunnao.registry.usage_daily import BUCKETS_MS

pytestmark = pytest.mark.slow

CITY, SHINAN, LAOSHAN = "sd.qd", "sd.qd.shinan", "sd.qd.laoshan"
FLOW = "traffic/flow-forecast"
COUNTS = list(range(1, 25))
FIGURES = (
    "calls", "ok", "errors", "refused", "invalid",
    "same_department", "other_department", "other_node",
)  # fmt: skip


@dataclass
class Nodes:
    city: Site
    shinan: Site
    laoshan: Site


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    root = tmp_path_factory.mktemp("usage")
    env = {"YUNNAO_USAGE_ROLLUP_INTERVAL": "0.3"}

    def site(node_id: str, *args: str) -> Site:
        return Site(node_id, YunnaoProcess(root / node_id, "--node-id", node_id, *args, env=env))

    tree = Nodes(
        city=site(CITY, "--publish-plugins"),
        shinan=site(SHINAN, "--publish-plugins"),
        laoshan=site(LAOSHAN),
    )
    sites = (tree.city, tree.shinan, tree.laoshan)
    try:
        for s in sites:
            s.proc.start(timeout=120)
        city = tree.city
        city.cascade("add-child", SHINAN, "--child-url", tree.shinan.url)
        tree.shinan.cascade("add-parent", CITY, "--parent-url", city.url, "--follow")
        laoshan_key = httpx.get(f"{tree.laoshan.url}/v1/cascade/node").json()["public_key"]
        city.cascade("add-child", LAOSHAN, "--public-key", laoshan_key, "--push-only")
        tree.laoshan.cascade("add-parent", CITY, "--parent-url", city.url, "--push")
        yield tree
    finally:
        for s in sites:
            s.proc.stop()


def _query(site: Site, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(f"file:{site.data_dir / 'registry.db'}?mode=ro", uri=True)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def _daily(site: Site, node: str) -> dict[tuple[str, str, str], tuple[Any, ...]]:
    """``node``'s usage rows as ``site`` holds them: (day, namespace, name) -> figures."""
    rows = _query(
        site,
        f"SELECT day, namespace, name, {', '.join(FIGURES)}, latency_hist FROM usage_daily "
        "WHERE node = ?",
        node,
    )
    return {r[:3]: r[3:] for r in rows}


def _expected(site: Site, namespace: str, name: str, day: str) -> dict[str, int]:
    """The day's figures of one capability, summed here straight from the usage records."""
    start, end = usage_daily.day_bounds(day)
    out = dict.fromkeys(FIGURES, 0)
    for status, caller_node, dept, forwarded_by, at in _query(
        site,
        "SELECT status, caller_node, caller_department, forwarded_by, at FROM usage_record "
        "WHERE namespace = ? AND name = ?",
        namespace,
        name,
    ):
        when = datetime.fromisoformat(at)
        if when.tzinfo is None:
            when = when.replace(tzinfo=start.tzinfo)
        if not start <= when < end:
            continue
        out["calls"] += 1
        if 200 <= status < 300:
            out["ok"] += 1
        elif status in (401, 403, 429):
            out["refused"] += 1
        elif status < 500:
            out["invalid"] += 1
        else:
            out["errors"] += 1
        if forwarded_by is not None or (caller_node is not None and caller_node != site.node_id):
            out["other_node"] += 1
        elif dept == namespace:
            out["same_department"] += 1
        else:
            out["other_department"] += 1
    return out


def _invoke(site: Site, ref: str, body: dict[str, Any], **kw: Any) -> httpx.Response:
    return httpx.post(f"{site.url}/v1/invoke/{ref}", json=body, timeout=60, **kw)


def test_district_calls_reach_the_city_as_its_signed_rows(nodes: Nodes) -> None:
    city, shinan = nodes.city, nodes.shinan
    ref = f"{SHINAN}.{FLOW}"
    good = {"input": {"counts": COUNTS, "hour": 5}}
    traffic = shinan.auth("consumer", "li.na", department=f"{SHINAN}.traffic")
    env = shinan.auth("consumer", "zhao.lei", department=f"{SHINAN}.env")
    assert _invoke(shinan, ref, good).status_code == 200  # anonymous: another department
    assert _invoke(shinan, ref, good, headers=traffic).status_code == 200  # its own
    assert _invoke(shinan, ref, good, headers=env).status_code == 200
    assert _invoke(shinan, ref, {"input": {"hour": 99}}, headers=env).status_code == 422
    until(lambda: city.get(ref).status_code == 200, 30, "the district's capability at the city")
    forwarded = _invoke(city, ref, good, headers=city.auth("consumer", "wang.li"))
    assert forwarded.status_code == 200, forwarded.text
    city_ref = f"{CITY}.{FLOW}"
    assert _invoke(city, city_ref, good).status_code == 200  # the city's own calls

    day = usage_daily.beijing_day(utcnow())
    expected = _expected(shinan, f"{SHINAN}.traffic", "flow-forecast", day)
    assert expected["calls"] == 5 and expected["other_node"] == 1
    assert expected["same_department"] == 1 and expected["invalid"] == 1

    def arrived() -> bool:
        row = _daily(city, SHINAN).get((day, f"{SHINAN}.traffic", "flow-forecast"))
        return row is not None and dict(zip(FIGURES, row[:-1], strict=True)) == expected

    until(arrived, 60, "the district's figures at the city")
    # The city holds exactly the district's own rows, histogram and all.
    until(lambda: _daily(city, SHINAN) == _daily(shinan, SHINAN), 30, "same rows")
    hist = json.loads(_daily(city, SHINAN)[(day, f"{SHINAN}.traffic", "flow-forecast")][-1])
    assert len(hist) == len(BUCKETS_MS) and sum(hist) == 4  # the calls that ran
    # The forwarded call is the district's to count: the city has no rows for it.
    assert all(ns.startswith(f"{CITY}.") for _, ns, _ in _daily(city, CITY))
    assert not [k for k in _daily(city, CITY) if k[1].startswith(f"{SHINAN}.")]
    # The city's own figures go up, never down to the district that follows it.
    until(lambda: (day, f"{CITY}.traffic", "flow-forecast") in _daily(city, CITY), 30, "city")
    assert _query(shinan, "SELECT DISTINCT node FROM usage_daily") == [(SHINAN,)]
    as_child = assertions.issue(shinan.key, node_id=SHINAN, audience=CITY, purpose="cascade")
    feed = httpx.get(
        f"{city.url}/v1/cascade/changes",
        params={"since": 0, "limit": 2000},
        headers={"Authorization": f"Bearer {as_child}"},
    ).json()["items"]
    assert feed and not [i for i in feed if i["entity"] == "usage"]
    as_operator = httpx.get(
        f"{city.url}/v1/cascade/changes",
        params={"since": 0, "limit": 2000},
        headers=city.auth("operator"),
    ).json()["items"]
    usage = {i["key"]: i for i in as_operator if i["entity"] == "usage"}
    assert {f"{CITY}/{day}", f"{SHINAN}/{day}"} <= set(usage)
    # Passed on as the district signed it, and one item per node and day in the log.
    assert usage[f"{SHINAN}/{day}"]["origin"] == SHINAN
    for site, node in ((city, SHINAN), (shinan, SHINAN), (city, CITY)):
        (count,) = _query(
            site, "SELECT count(*) FROM change WHERE entity = 'usage' AND key = ?", f"{node}/{day}"
        )
        assert count == (1,)
    # recent() at the city reads the district's rows for its capability.
    stats = _recent(city, (f"{SHINAN}.traffic", "flow-forecast"))
    assert stats.calls == 5 and stats.success_rate == 1.0 and stats.p50_ms is not None

    # The city's assessment of the district for the day equals the district's own usage
    # records summed here, over all of its capabilities.
    totals = dict.fromkeys(FIGURES, 0)
    for ns, name in _query(shinan, "SELECT DISTINCT namespace, name FROM usage_record"):
        if ns.startswith(f"{SHINAN}."):
            for figure, value in _expected(shinan, ns, name, day).items():
                totals[figure] += value
    report = httpx.get(
        f"{city.url}/v1/assessment",
        params={"from": day, "to": day, "by": "district"},
        headers=city.auth("auditor"),
        timeout=30,
    )
    assert report.status_code == 200, report.text
    (row,) = [r for r in report.json()["items"] if r["id"] == SHINAN]
    assert {f: row[f] for f in FIGURES} == totals


def _recent(site: Site, key: tuple[str, str]) -> usage_daily.RecentStats:
    engine = db.create_engine(f"sqlite:///{site.data_dir / 'registry.db'}")
    try:
        return usage_daily.recent(engine, [key])[key]
    finally:
        engine.dispose()


# ---------------------------------------------------------------- forged figures


def _row(namespace: str, name: str = "x", **figures: int) -> dict[str, Any]:
    hist = [0] * len(BUCKETS_MS)
    hist[3] = figures.get("ok", 1)
    return {
        "namespace": namespace,
        "name": name,
        "calls": 1, "ok": 1, "errors": 0, "refused": 0, "invalid": 0,
        "same_department": 0, "other_department": 1, "other_node": 0,
        "latency_hist": hist,
        **figures,
    }  # fmt: skip


def _usage_item(signer: Site, origin: str, node: str, rows: list[dict[str, Any]]) -> dict:
    day = usage_daily.beijing_day(utcnow())
    return make_item(
        signer.key,
        origin=origin,
        origin_seq=10**9,
        entity="usage",
        item_key=f"{node}/{day}",
        op="upsert",
        entry={"node": node, "day": day, "rows": rows},
        at="2026-11-29T00:00:00+00:00",
    )


def test_forged_and_inconsistent_figures_are_rejected(nodes: Nodes) -> None:
    city, laoshan, shinan = nodes.city, nodes.laoshan, nodes.shinan
    until(lambda: city.peers()[LAOSHAN]["lag_entries"] == 0, 30, "laoshan caught up")
    checkpoint = city.peers()[LAOSHAN]["checkpoint"]
    rejected_before = city.peers()[LAOSHAN]["rejected"]
    before = _query(city, "SELECT * FROM usage_daily ORDER BY 1, 2, 3, 4")
    roads = f"{LAOSHAN}.roads"
    batch = [
        # Laoshan signing figures for its sibling.
        _usage_item(laoshan, LAOSHAN, SHINAN, [_row(f"{SHINAN}.traffic")]),
        # Shinan's own figures, sent by laoshan: not laoshan's subtree.
        _usage_item(shinan, SHINAN, SHINAN, [_row(f"{SHINAN}.traffic")]),
        # Laoshan's own, but the sums do not add up, or name another node's department.
        _usage_item(laoshan, LAOSHAN, LAOSHAN, [_row(roads, calls=2)]),
        _usage_item(laoshan, LAOSHAN, LAOSHAN, [_row(roads, other_node=1)]),
        _usage_item(laoshan, LAOSHAN, LAOSHAN, [_row(roads, ok=-1, calls=0, other_department=0)]),
        _usage_item(laoshan, LAOSHAN, LAOSHAN, [_row(roads, latency_hist=[1])]),
        _usage_item(laoshan, LAOSHAN, LAOSHAN, [_row(f"{SHINAN}.traffic")]),
    ]
    bearer = assertions.issue(laoshan.key, node_id=LAOSHAN, audience=CITY, purpose="cascade")
    resp = httpx.post(
        f"{city.url}/v1/cascade/ingest",
        json={"since": checkpoint, "next": checkpoint, "head": checkpoint, "items": batch},
        headers={"Authorization": f"Bearer {bearer}"},
        timeout=30,
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["applied"] == 0 and resp.json()["rejected"] == len(batch)
    assert city.peers()[LAOSHAN]["rejected"] == rejected_before + len(batch)
    assert _query(city, "SELECT * FROM usage_daily ORDER BY 1, 2, 3, 4") == before
    listed = httpx.get(
        f"{city.url}/v1/cascade/rejections",
        params={"peer": LAOSHAN, "limit": len(batch)},
        headers=city.auth("operator"),
    ).json()["items"]
    reasons = " | ".join(r["reason"] for r in listed)
    assert "a node sends only its own" in reasons
    assert "neither child sd.qd.laoshan nor below it" in reasons
    assert "ok + errors + refused + invalid" in reasons
    assert "same_department + other_department + other_node" in reasons
    assert "greater than or equal to 0" in reasons
    assert "latency_hist" in reasons
    assert f"namespace {SHINAN}.traffic is not node {LAOSHAN}'s" in reasons

    # Laoshan's own, well-formed figures apply and replace its day.
    good = _usage_item(laoshan, LAOSHAN, LAOSHAN, [_row(roads)])
    page = {"since": checkpoint, "next": checkpoint, "head": checkpoint, "items": [good]}
    bearer = assertions.issue(laoshan.key, node_id=LAOSHAN, audience=CITY, purpose="cascade")
    resp = httpx.post(
        f"{city.url}/v1/cascade/ingest",
        json=page,
        headers={"Authorization": f"Bearer {bearer}"},
        timeout=30,
    )
    assert resp.json()["applied"] == 1, resp.text
    assert [k[1:] for k in _daily(city, LAOSHAN)] == [(roads, "x")]


def test_a_node_signs_restricted_figures_without_their_names(tmp_path: Path) -> None:
    engine = db.create_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    migrate.upgrade(engine)
    store = RegistryStore(engine, CITY)
    spec = schemas.PublishRequest(version="1.0.0", title="t", classification="restricted")
    store.publish(f"{CITY}.police", "plates", spec)
    record = {
        "at": utcnow(), "namespace": f"{CITY}.police", "name": "plates", "mode": "sync",
        "status": 200, "latency_ms": 3.0,
    }  # fmt: skip
    with engine.begin() as conn:
        conn.execute(sa.insert(UsageRecord.__table__), [record])  # type: ignore[attr-defined]
    rollup = UsageRollup(engine, CITY, tokens.load_or_create_key(tmp_path / "node_key.pem"))
    assert rollup.roll() == [usage_daily.beijing_day(utcnow())]
    assert rollup.roll() == []  # unchanged: nothing more to send
    (item,) = [c.item for c in store.changes(limit=100) if c.entity == "usage"]
    assert [(r["namespace"], r["name"], r["calls"]) for r in item["entry"]["rows"]] == [
        (f"{CITY}.police", "", 1)
    ]
    assert "plates" not in json.dumps(item)
    engine.dispose()
