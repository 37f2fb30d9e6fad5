"""Review decisions (``review`` items) go down only, and only about the receiver's own
subtree, in the reviewer's own name:

- a district cannot push a decision up to its city (to approve something there, or to
  forge the city's word to its parent);
- a compromised parent cannot decide about another district's capability, nor in the
  name of another node (the province); what it may say, it says about the district's
  own capability, and that shows on the district's page.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.attacks.conftest import CITY, LAOSHAN, Federation
from tests.attacks.test_replication import (
    DISTRICT,
    _FakeParent,
    _push,
    _rejections,
    lone_district,  # noqa: F401 (a fixture)
)
from tests.cascade_support import Site, until
from yunnao.cascade.feed import make_item
from yunnao.cascade.items import review_key

pytestmark = pytest.mark.slow

AT = "2026-11-30T00:00:00+00:00"


def _review(
    key: Any, *, origin: str, namespace: str, name: str, reviewer: str, state: str, seq: int
) -> dict[str, Any]:
    entry = {"namespace": namespace, "name": name, "reviewer": reviewer, "state": state,
             "reason": "伪造" if state == "refused" else None, "decided_at": AT}  # fmt: skip
    return make_item(key, origin=origin, origin_seq=seq, entity="review",
                     item_key=review_key(namespace, name, reviewer), op="upsert", entry=entry,
                     at=AT)  # fmt: skip


def test_a_district_cannot_send_a_decision_up(federation: Federation) -> None:
    city, laoshan = federation.city, federation.laoshan
    ns = f"{LAOSHAN}.h4review"
    batch = [
        _review(
            laoshan.key,
            origin=LAOSHAN,
            namespace=ns,
            name="x",
            reviewer=LAOSHAN,
            state="approved",
            seq=10**9,
        ),
        # in the city's name, signed by the district
        _review(
            laoshan.key,
            origin=CITY,
            namespace=ns,
            name="x",
            reviewer=CITY,
            state="approved",
            seq=10**9,
        ),
    ]
    resp = _push(city, laoshan, batch)
    assert resp.status_code == 200, resp.text
    assert resp.json()["applied"] == 0 and resp.json()["rejected"] == 2, resp.text
    reasons = [r["reason"] for r in _rejections(city, LAOSHAN, 50) if r["entity"] == "review"]
    assert "review decisions travel down the node tree only, not from a child" in reasons
    assert any("is neither child" in r for r in reasons)  # the origin it claimed


def test_a_parent_decides_only_about_the_districts_own_in_its_own_name(
    lone_district: Site,  # noqa: F811
) -> None:
    district = lone_district
    district.publish("water", "meter", classification="public")
    ns = f"{DISTRICT}.water"
    city_key = Ed25519PrivateKey.generate()
    items = [
        # about a sibling district's capability
        _review(
            city_key,
            origin=CITY,
            namespace=f"{LAOSHAN}.water",
            name="meter",
            reviewer=CITY,
            state="refused",
            seq=1,
        ),
        # in the province's name, signed by the city
        _review(
            city_key,
            origin=CITY,
            namespace=ns,
            name="meter",
            reviewer="sd",
            state="approved",
            seq=2,
        ),
        # what it may say: its own decision about the district's capability
        _review(
            city_key, origin=CITY, namespace=ns, name="meter", reviewer=CITY, state="refused", seq=3
        ),
    ]
    with _FakeParent(CITY, items, city_key) as parent:
        district.cascade("add-parent", CITY, "--parent-url", parent.url, "--follow")
        until(lambda: district.peers()[CITY]["checkpoint"] >= parent.head, 60,
              "the district applied its parent's page")  # fmt: skip
    assert district.peers()[CITY]["rejected"] == 2
    reasons = {r["key"]: r["reason"] for r in _rejections(district, CITY)}
    assert "outside this node's subtree" in reasons[review_key(f"{LAOSHAN}.water", "meter", CITY)]
    assert "signed by sd.qd" in reasons[review_key(ns, "meter", "sd")]

    got = httpx.get(f"{district.url}/v1/cascade/decisions/{ns}/meter",
                    headers=district.auth("author"))  # fmt: skip
    assert [(d["reviewer"], d["state"]) for d in got.json()["items"]] == [(CITY, "refused")]
    page = httpx.get(f"{district.url}/c/{ns}/meter", headers=district.auth("author"))
    assert "未通过" in page.text and "伪造" in page.text
    # Words, not power: the district's own entry is untouched and still callable there.
    assert district.get(f"{ns}/meter").status_code == 200
