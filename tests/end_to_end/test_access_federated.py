"""Access requests across the federation, between two real nodes: a city user who may
find a district capability but not call it asks at the city; the request is forwarded to
the district, where its department approves; the grant comes back up with the entry and
the user's call through the city then succeeds. A refusal's reason is seen at the city.

    sd.qd (city) ── pulls ── sd.qd.shinan (district, the example plugins)
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import httpx
import pytest

from tests.cascade_support import Site, until
from tests.realservers.yunnao_node import YunnaoProcess

pytestmark = pytest.mark.slow

CITY, SHINAN = "sd.qd", "sd.qd.shinan"
REF = f"{SHINAN}.env/air-anomaly"  # internal
BODY = {"input": {"readings": [{"station": f"s-{i}", "pm25": 30.0 + i % 3} for i in range(30)]}}


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, Site]]:
    root = tmp_path_factory.mktemp("access")
    city = Site(CITY, YunnaoProcess(root / CITY, "--node-id", CITY))
    shinan = Site(SHINAN, YunnaoProcess(root / SHINAN, "--node-id", SHINAN, "--publish-plugins"))
    try:
        for site in (city, shinan):
            site.proc.start(timeout=120)
        city.cascade("add-child", SHINAN, "--child-url", shinan.url)
        shinan.cascade("add-parent", CITY, "--parent-url", city.url, "--follow")
        # Only the district's own node may call it; everyone signed in may find it.
        admin = shinan.auth("admin", "root")
        got = httpx.get(f"{shinan.url}/v1/capabilities/{REF}", headers=admin)
        assert got.status_code == 200, got.text
        resp = httpx.patch(
            f"{shinan.url}/v1/capabilities/{REF}",
            json={"access": {"invoke": {"nodes": [SHINAN]}}},
            headers={**admin, "If-Match": got.headers["etag"]},
        )
        assert resp.status_code == 200, resp.text
        yield city, shinan
    finally:
        for site in (city, shinan):
            site.proc.stop()


def _grants(site: Site) -> list:
    resp = site.get(REF, headers=site.auth("admin", "root"))
    return resp.json()["access"].get("grants", []) if resp.status_code == 200 else []


def test_a_city_user_asks_the_district_decides_and_the_call_through_the_city_works(
    pair: tuple[Site, Site],
) -> None:
    city, shinan = pair
    user = city.auth("consumer", "wang", scopes=[f"{CITY}.office"], department=f"{CITY}.office")
    # The city knows the rule (the patched entry came up): the user finds it, may not call.
    until(lambda: city.get(REF, headers=user).status_code == 200, 30, REF)
    until(lambda: "nodes" in city.get(REF, headers=user).json()["access"]["invoke"], 30, "rule")
    call = httpx.post(f"{city.url}/v1/invoke/{REF}", json=BODY, headers=user, timeout=60)
    assert call.status_code == 403, call.text

    asked = httpx.post(
        f"{city.url}/v1/capabilities/{REF}/access-requests",
        json={"reason": "市办公室需要汇总空气质量异常"},
        headers=user,
        timeout=30,
    )
    assert asked.status_code == 201, asked.text
    made = asked.json()
    # Recorded at the district, for the city's user, through the city.
    assert (made["requester"], made["requester_node"], made["via"]) == ("wang", CITY, CITY)
    assert made["requester_department"] == f"{CITY}.office"
    db = sqlite3.connect(f"file:{city.data_dir / 'registry.db'}?mode=ro", uri=True)
    assert db.execute("SELECT count(*) FROM access_request").fetchone() == (0,)
    db.close()

    # The district's author of the department sees it and approves it.
    author = shinan.auth("author", "li", scopes=[f"{SHINAN}.env"])
    pending = httpx.get(f"{shinan.url}/v1/access-requests?status=pending", headers=author)
    assert [i["id"] for i in pending.json()["items"]] == [made["id"]]
    done = httpx.post(
        f"{shinan.url}/v1/access-requests/{made['id']}/approve", json={}, headers=author
    )
    assert done.status_code == 200, done.text
    assert {"subject": "wang", "node": CITY} in _grants(shinan)

    # The grant travels up with the entry; the call through the city now succeeds.
    until(lambda: {"subject": "wang", "node": CITY} in _grants(city), 30, "grant at the city")
    call = httpx.post(f"{city.url}/v1/invoke/{REF}", json=BODY, headers=user, timeout=60)
    assert call.status_code == 200, call.text
    # The requester sees the decision at the city (forwarded to the district).
    mine = httpx.get(f"{city.url}/v1/capabilities/{REF}/access-requests/mine", headers=user)
    assert mine.status_code == 200, mine.text
    assert [m["status"] for m in mine.json()["items"]] == ["approved"]


def test_a_refusal_s_reason_is_seen_at_the_city(pair: tuple[Site, Site]) -> None:
    city, shinan = pair
    user = city.auth("consumer", "zhao", scopes=[f"{CITY}.office"], department=f"{CITY}.office")
    until(lambda: city.get(REF, headers=user).status_code == 200, 30, REF)
    asked = httpx.post(
        f"{city.url}/v1/capabilities/{REF}/access-requests",
        json={"reason": "想试一下"},
        headers=user,
        timeout=30,
    )
    assert asked.status_code == 201, asked.text
    # Asking twice is refused by the district, and the answer comes back as given.
    again = httpx.post(
        f"{city.url}/v1/capabilities/{REF}/access-requests", json={"reason": "x"}, headers=user
    )
    assert again.status_code == 409 and "pending" in again.json()["detail"]
    assert again.headers["content-type"].startswith("application/problem+json")
    # A city admin may not decide the district's requests.
    assert (
        httpx.post(
            f"{city.url}/v1/access-requests/{asked.json()['id']}/refuse",
            json={"reason": "x"},
            headers=city.auth("admin", "root"),
        ).status_code
        == 404
    )
    admin = shinan.auth("admin", "root")
    refused = httpx.post(
        f"{shinan.url}/v1/access-requests/{asked.json()['id']}/refuse",
        json={"reason": "数据含个人信息，请走数据共享流程"},
        headers=admin,
    )
    assert refused.status_code == 200, refused.text
    mine = httpx.get(f"{city.url}/v1/capabilities/{REF}/access-requests/mine", headers=user)
    assert mine.status_code == 200, mine.text
    (latest,) = mine.json()["items"]
    assert latest["status"] == "refused"
    assert latest["decision_reason"] == "数据含个人信息，请走数据共享流程"
    call = httpx.post(f"{city.url}/v1/invoke/{REF}", json=BODY, headers=user, timeout=60)
    assert call.status_code == 403
