"""Live health and the circuit breaker between real nodes: a city and two districts, each
a `yunnao serve` process, the city pulling both. A district frozen with SIGSTOP is seen
unreachable by the city within 15 s, its capabilities are marked unavailable, and a call
through the city fails within a second once the breaker is open; after SIGCONT everything
is back within 15 s.

    sd.qd (city) ── pulls, probes ── sd.qd.shinan (the example plugins run here)
                 └─ pulls, probes ── sd.qd.laoshan
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.cascade_support import Site, until
from tests.realservers.yunnao_node import YunnaoProcess

pytestmark = pytest.mark.slow

CITY, SHINAN, LAOSHAN = "sd.qd", "sd.qd.shinan", "sd.qd.laoshan"
REF = f"{SHINAN}.traffic/flow-forecast"
BODY = {"input": {"counts": list(range(1, 25)), "hour": 5}}


@dataclass
class Tree:
    city: Site
    shinan: Site
    laoshan: Site


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tree]:
    root = tmp_path_factory.mktemp("health")
    tree = Tree(
        city=Site(CITY, YunnaoProcess(root / CITY, "--node-id", CITY)),
        shinan=Site(SHINAN, YunnaoProcess(root / SHINAN, "--node-id", SHINAN, "--publish-plugins")),
        laoshan=Site(LAOSHAN, YunnaoProcess(root / LAOSHAN, "--node-id", LAOSHAN)),
    )
    sites = (tree.city, tree.shinan, tree.laoshan)
    try:
        for site in sites:
            site.proc.start(timeout=120)
        for district in (tree.shinan, tree.laoshan):
            tree.city.cascade("add-child", district.node_id, "--child-url", district.url)
            district.cascade("add-parent", CITY, "--parent-url", tree.city.url)
        yield tree
    finally:
        for site in sites:
            pid = site.proc.proc.pid if site.proc.proc is not None else None
            if pid is not None and site.proc.proc.poll() is None:  # type: ignore[union-attr]
                os.kill(pid, signal.SIGCONT)
            site.proc.stop()


def nodes(site: Site) -> dict[str, dict[str, Any]]:
    resp = httpx.get(f"{site.url}/v1/health/nodes", headers=site.auth("consumer"), timeout=10)
    assert resp.status_code == 200, resp.text
    return {n["node"]: n for n in resp.json()["items"]}


def district_health(site: Site) -> list[dict[str, Any]]:
    """The health objects of the search results for the district's capabilities."""
    resp = httpx.get(f"{site.url}/v1/capabilities", params={"node": SHINAN}, timeout=10)
    assert resp.status_code == 200, resp.text
    items = resp.json()["items"]
    assert items
    return [item["health"] for item in items]


def overview_state(site: Site, node: str) -> str | None:
    """The state the city's overview page shows for ``node`` (signed in on the page)."""
    with httpx.Client(base_url=site.url, timeout=10) as client:
        signed = client.post("/signin", data={"subject": "王芳", "role": "operator"})
        assert signed.status_code == 303, signed.text
        page = client.get("/overview")
    assert page.status_code == 200, page.text
    found = re.search(rf'data-node="{re.escape(node)}" data-state="(\w+)"', page.text)
    if found is not None and found.group(1) == "down":
        assert "不可达" in page.text
    return found.group(1) if found else None


def call(site: Site) -> httpx.Response:
    return httpx.post(f"{site.url}/v1/invoke/{REF}", json=BODY, timeout=60)


def test_a_frozen_district_is_unreachable_fast_and_back_after(tree: Tree) -> None:
    city, shinan = tree.city, tree.shinan
    anonymous = httpx.get(f"{city.url}/v1/health/nodes", timeout=10)
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"].startswith("application/problem+json")

    until(lambda: city.get(REF).status_code == 200, 60, "the district's capability at the city")
    until(
        lambda: {nodes(city)[n]["state"] for n in (SHINAN, LAOSHAN)} == {"ok"},
        30,
        "both districts probed ok",
    )
    shown = nodes(city)
    assert shown[CITY]["relation"] == "self" and shown[SHINAN]["relation"] == "child"
    assert shown[SHINAN]["latency_ms"] is not None
    assert all(h["reachable"] and h["state"] == "ok" for h in district_health(city))
    assert city.get(REF).json()["health"]["reachable"] is True
    assert call(city).status_code == 200
    card = httpx.get(f"{city.url}/", params={"node": SHINAN}, timeout=10)
    assert 'data-reachable="true"' in card.text and "可用" in card.text

    assert shinan.proc.proc is not None
    os.kill(shinan.proc.proc.pid, signal.SIGSTOP)
    try:
        until(lambda: overview_state(city, SHINAN) == "down", 15, "不可达 on the overview")
        assert nodes(city)[SHINAN]["state"] == "down"
        down = nodes(city)
        assert down[SHINAN]["reachable"] is False and down[SHINAN]["since"]
        assert down[LAOSHAN]["state"] == "ok"  # the other district is not affected
        assert not any(h["reachable"] for h in district_health(city))
        assert city.get(REF).json()["health"]["state"] == "down"
        # The pages say so: the result card, and the capability page instead of waiting.
        card = httpx.get(f"{city.url}/", params={"node": SHINAN}, timeout=10)
        assert 'data-reachable="false"' in card.text and "不可用" in card.text
        shown_page = httpx.get(f"{city.url}/c/{REF}", timeout=10)
        assert f'data-unreachable="{SHINAN}"' in shown_page.text
        assert "不可达" in shown_page.text

        started = time.monotonic()
        refused = call(city)
        took = time.monotonic() - started
        assert refused.status_code == 503, refused.text
        assert took < 1.0, f"the breaker should answer at once, took {took:.2f} s"
        problem = refused.json()
        assert SHINAN in problem["detail"] and "unreachable since" in problem["detail"]
        assert "(Beijing time)" in problem["detail"]
        assert refused.headers.get("retry-after")
    finally:
        os.kill(shinan.proc.proc.pid, signal.SIGCONT)

    until(lambda: nodes(city)[SHINAN]["state"] == "ok", 15, "district seen ok again")
    assert overview_state(city, SHINAN) == "ok"
    until(lambda: all(h["reachable"] for h in district_health(city)), 15, "available again")
    until(lambda: call(city).status_code == 200, 15, "calls through the city again")


def test_probes_are_counted_per_day(tree: Tree) -> None:
    city = tree.city
    until(lambda: nodes(city)[LAOSHAN]["state"] == "ok", 30, "laoshan probed")
    assert city.proc.stop()  # the counts are written at shutdown at the latest
    db = sqlite3.connect(f"file:{city.data_dir / 'registry.db'}?mode=ro", uri=True)
    try:
        rows = {n: (p, ok) for n, p, ok in db.execute("SELECT node, probes, ok FROM probe_daily")}
    finally:
        db.close()
    assert set(rows) >= {SHINAN, LAOSHAN}
    assert all(0 < ok <= probes for probes, ok in rows.values())
