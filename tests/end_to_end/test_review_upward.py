"""Review of what districts share upward, between three real nodes:

    sd (province) ── pulls ── sd.qd (city, YUNNAO_CASCADE_REVIEW=true) ── pulls ── sd.qd.shinan
                                                     └── followed by the district (decisions down)

A district entry waits at the city (not in its catalog, not callable, not at the
province) until a reviewer approves it, then reaches the province; a refusal reaches the
district with its reason; a rule approves on arrival; only reviewers decide.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.cascade_support import Site, until
from tests.realservers.yunnao_node import YUNNAO, YunnaoProcess

pytestmark = pytest.mark.slow

PROVINCE, CITY, SHINAN = "sd", "sd.qd", "sd.qd.shinan"
NS = f"{SHINAN}.traffic"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, Site, Site]]:
    root = tmp_path_factory.mktemp("review")
    province = Site(PROVINCE, YunnaoProcess(root / PROVINCE, "--node-id", PROVINCE))
    city = Site(CITY, YunnaoProcess(root / CITY, "--node-id", CITY,
                                    env={"YUNNAO_CASCADE_REVIEW": "true"}))  # fmt: skip
    shinan = Site(SHINAN, YunnaoProcess(root / SHINAN, "--node-id", SHINAN))
    sites = (province, city, shinan)
    try:
        for site in sites:
            site.proc.start(timeout=120)
        province.cascade("add-child", CITY, "--child-url", city.url)
        city.cascade("add-parent", PROVINCE, "--parent-url", province.url)
        city.cascade("add-child", SHINAN, "--child-url", shinan.url)
        shinan.cascade("add-parent", CITY, "--parent-url", city.url, "--follow")
        yield province, city, shinan
    finally:
        for site in sites:
            site.proc.stop()


def _review(site: Site, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [YUNNAO, "review", *args, "--url", site.url, "--token", token or site.token("reviewer")],
        env={"PATH": "", "HOME": str(site.data_dir)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def _decisions(site: Site, name: str) -> list[dict[str, Any]]:
    resp = httpx.get(f"{site.url}/v1/cascade/decisions/{NS}/{name}", headers=site.auth("author"))
    assert resp.status_code == 200, resp.text
    return resp.json()["items"]


def _settled(city: Site, province: Site, marker: str) -> None:
    """Publish a city capability and wait until the province has it: the province has
    then read the city's feed past everything the city wrote before."""
    city.publish("office", marker, classification="public")
    until(lambda: f"{CITY}.office/{marker}" in province.contents(CITY), 60, f"{marker} up")


def test_a_district_entry_waits_at_the_city_until_approved_then_reaches_the_province(
    tree: tuple[Site, Site, Site],
) -> None:
    province, city, shinan = tree
    shinan.publish("traffic", "flow", classification="public", title="客流预测")
    shinan.publish("traffic", "faces", classification="internal", title="人脸比对")
    reviewer = city.auth("reviewer")

    def queue() -> set[str]:
        resp = httpx.get(f"{city.url}/v1/cascade/reviews", headers=reviewer)
        assert resp.status_code == 200, resp.text
        return {f"{r['namespace']}/{r['name']}" for r in resp.json()["items"]}

    until(lambda: queue() == {f"{NS}/flow", f"{NS}/faces"}, 60, "both in the city's queue")
    # Held: not in the city's catalog, not callable there, and never at the province.
    assert city.contents(SHINAN) == {}
    assert city.get(f"{NS}/flow", headers=city.auth("admin")).status_code == 404
    call = httpx.post(f"{city.url}/v1/invoke/{NS}/flow", json={"input": {}},
                      headers=city.auth("consumer"))  # fmt: skip
    assert call.status_code == 404, call.text
    _settled(city, province, "first")
    assert province.contents(SHINAN) == {}
    # The district hears 审核中 from the city (it follows the city).
    until(lambda: [d["state"] for d in _decisions(shinan, "flow")] == ["pending"], 60, "pending")
    page = httpx.get(f"{shinan.url}/c/{NS}/flow", headers=shinan.auth("author"))
    assert 'data-state="pending"' in page.text and "审核中" in page.text

    # Only a reviewer (or an admin) of the city decides.
    denied = httpx.post(f"{city.url}/v1/cascade/reviews/{NS}/flow/approve",
                        headers=city.auth("author"))  # fmt: skip
    assert denied.status_code == 403, denied.text
    assert denied.headers["content-type"].startswith("application/problem+json")

    shown = _review(city, "list", "--json")
    assert shown.returncode == 0, shown.stderr
    assert {r["title"] for r in json.loads(shown.stdout)["items"]} == {"客流预测", "人脸比对"}
    approved = _review(city, "approve", f"{NS}/flow")
    assert approved.returncode == 0, approved.stderr

    until(lambda: f"{NS}/flow" in province.contents(SHINAN), 60, "flow reaches the province")
    assert f"{NS}/flow" in city.contents(SHINAN)
    # At the province, it is the district's entry, signed by the district.
    assert province.contents(SHINAN)[f"{NS}/flow"][4] == SHINAN
    until(lambda: [d["state"] for d in _decisions(shinan, "flow")] == ["approved"], 60, "approved")
    page = httpx.get(f"{shinan.url}/c/{NS}/flow", headers=shinan.auth("author"))
    assert 'data-state="approved"' in page.text and "已通过" in page.text

    # A refusal reaches the district with its reason; faces never goes up.
    reason = "涉及人脸信息，须先完成个人信息保护影响评估"
    refused = httpx.post(f"{city.url}/v1/cascade/reviews/{NS}/faces/refuse",
                         json={"reason": reason}, headers=reviewer)  # fmt: skip
    assert refused.status_code == 200 and refused.json()["state"] == "refused", refused.text
    until(lambda: [(d["state"], d["reason"]) for d in _decisions(shinan, "faces")]
          == [("refused", reason)], 60, "the refusal reaches the district")  # fmt: skip
    page = httpx.get(f"{shinan.url}/c/{NS}/faces", headers=shinan.auth("author"))
    assert "未通过" in page.text and f"（{reason}）" in page.text
    status = _review(shinan, "status", f"{NS}/faces", token=shinan.token("author"))
    assert reason in status.stdout, status.stdout + status.stderr
    _settled(city, province, "second")
    assert set(province.contents(SHINAN)) == {f"{NS}/flow"}

    # An approved capability's next version goes up at once.
    shinan.publish("traffic", "flow", version="1.1.0", classification="public", title="客流预测")
    until(lambda: len(province.contents(SHINAN)[f"{NS}/flow"][5]) == 2, 60, "flow 1.1.0 up")


def test_a_rule_approves_on_arrival_and_the_pages_show_the_queue(
    tree: tuple[Site, Site, Site],
) -> None:
    province, city, shinan = tree
    parks = f"{SHINAN}.parks"
    # Only an admin sets rules.
    assert _review(city, "rule-add", "--namespace", parks).returncode != 0
    added = _review(city, "rule-add", "--namespace", parks, "--classification", "public",
                    token=city.token("admin"))  # fmt: skip
    assert added.returncode == 0, added.stderr
    shinan.publish("parks", "benches", classification="public")
    shinan.publish("parks", "staff-rota", classification="internal")  # the rule wants public
    until(lambda: f"{parks}/benches" in province.contents(SHINAN), 60, "benches up at once")
    assert f"{parks}/staff-rota" not in city.contents(SHINAN)

    page = httpx.get(f"{city.url}/review", headers=city.auth("reviewer"))
    assert page.status_code == 200
    assert f'data-review="{parks}/staff-rota"' in page.text and "审核" in page.text
    assert 'action="/review/rules"' not in page.text  # a reviewer sees rules, adds none
    as_admin = httpx.get(f"{city.url}/review", headers=city.auth("admin"))
    assert 'action="/review/rules"' in as_admin.text and parks in as_admin.text
    assert httpx.get(f"{city.url}/review", headers=city.auth("operator")).status_code == 403
    detail = httpx.get(f"{city.url}/review/{parks}/staff-rota", headers=city.auth("reviewer"))
    assert detail.status_code == 200 and 'data-version="1.0.0"' in detail.text

    # The city's diff with the district names what it holds, not as missing.
    diff = city.cascade("diff", SHINAN, "--json", check=False)
    got = json.loads(diff.stdout)
    assert f"{parks}/staff-rota" in got["held"] and got["missing"] == [], got
