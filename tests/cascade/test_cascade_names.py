"""Titles travel up the cascade in signed entries, between real nodes:

    sd (province) ── pulls ── sd.qd (city) ── pulls ── sd.qd.shinan
                                          └── pushed to by ── sd.qd.laoshan

A district names itself and its departments; the city and the province show those
names, verified against the district's own signature. A child names only its own
subtree: a title it sends for another node or another node's department is rejected.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.cascade_support import Site, until
from tests.realservers.yunnao_node import YunnaoProcess
from yunnao.cascade.feed import make_item
from yunnao.registry.identity import assertions

pytestmark = pytest.mark.slow

SHINAN, LAOSHAN, CITY, PROVINCE = "sd.qd.shinan", "sd.qd.laoshan", "sd.qd", "sd"
TRAFFIC = f"{SHINAN}.traffic"
LICANG = "sd.qd.licang"  # a district the city has not linked


@dataclass
class Tree:
    province: Site
    city: Site
    shinan: Site
    laoshan: Site


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tree]:
    root = tmp_path_factory.mktemp("cascade-names")

    def site(node_id: str) -> Site:
        proc = YunnaoProcess(root / node_id, "--node-id", node_id, env={"YUNNAO_PLUGINS": "false"})
        return Site(node_id, proc)

    tree = Tree(site(PROVINCE), site(CITY), site(SHINAN), site(LAOSHAN))
    sites = (tree.province, tree.city, tree.shinan, tree.laoshan)
    try:
        for s in sites:
            s.proc.start(timeout=120)
        city = tree.city
        city.cascade("add-child", SHINAN, "--child-url", tree.shinan.url)
        tree.shinan.cascade("add-parent", CITY, "--parent-url", city.url)
        laoshan_key = httpx.get(f"{tree.laoshan.url}/v1/cascade/node").json()["public_key"]
        city.cascade("add-child", LAOSHAN, "--public-key", laoshan_key, "--push-only")
        tree.laoshan.cascade("add-parent", CITY, "--parent-url", city.url, "--push")
        tree.province.cascade("add-child", CITY, "--child-url", city.url)
        city.cascade("add-parent", PROVINCE, "--parent-url", tree.province.url)
        yield tree
    finally:
        for s in sites:
            s.proc.stop()


def _titles(site: Site) -> dict[str, tuple[str, str]]:
    """Every title ``site`` knows: departments as its API lists them, nodes (as
    ``node:<id>``) straight from its store."""
    spaces = httpx.get(f"{site.url}/v1/namespaces", headers=site.auth("admin")).json()["items"]
    out = {i["id"]: (i["title_zh"], i["title_en"]) for i in spaces}
    db = sqlite3.connect(f"file:{site.data_dir / 'registry.db'}?mode=ro", uri=True)
    try:
        for id_, zh, en in db.execute("SELECT id, title, title_en FROM node"):
            out[f"node:{id_}"] = (zh, en)
    finally:
        db.close()
    return out


def test_a_district_s_names_reach_the_city_and_the_province(tree: Tree) -> None:
    shinan = tree.shinan
    resp = httpx.patch(
        f"{shinan.url}/v1/node",
        json={"title_zh": "市南区", "title_en": "Shinan District"},
        headers=shinan.auth("operator"),
    )
    assert resp.status_code == 200, resp.text
    resp = httpx.put(
        f"{shinan.url}/v1/namespaces/{TRAFFIC}",
        json={"title_zh": "市南区交通运输局", "title_en": "Shinan Transport Bureau"},
        headers=shinan.auth("admin"),
    )
    assert resp.status_code == 201, resp.text
    shinan.publish("traffic", "flow", title="客流预测", classification="public")
    want = {
        f"node:{SHINAN}": ("市南区", "Shinan District"),
        TRAFFIC: ("市南区交通运输局", "Shinan Transport Bureau"),
    }
    for site, child in ((tree.city, SHINAN), (tree.province, CITY)):
        site.cascade("sync", child)  # now, not after a backoff from before the links
        try:
            until(lambda s=site: all(_titles(s).get(k) == v for k, v in want.items()), 30)
        except AssertionError:
            raise AssertionError(f"titles at {site.node_id}: {_titles(site)}") from None
    # The province's catalog page shows the district's and the department's names.
    page = httpx.get(f"{tree.province.url}/").text
    assert '<span class="named">市南区交通运输局</span>' in page
    assert '<span class="named">市南区</span>' in page

    # A new title replaces the old one up the tree; a cleared one is cleared.
    resp = httpx.patch(
        f"{shinan.url}/v1/namespaces/{TRAFFIC}",
        json={"title_en": ""},
        headers=shinan.auth("admin"),
    )
    assert resp.status_code == 200
    tree.city.cascade("sync", SHINAN)
    tree.province.cascade("sync", CITY)
    until(
        lambda: _titles(tree.province).get(TRAFFIC) == ("市南区交通运输局", ""),
        30,
        "cleared title at the province",
    )


def _ingest(tree: Tree, sender: Site, items: list[dict[str, Any]]) -> httpx.Response:
    checkpoint = tree.city.peers()[sender.node_id]["checkpoint"]
    bearer = assertions.issue(sender.key, node_id=sender.node_id, audience=CITY, purpose="cascade")
    return httpx.post(
        f"{tree.city.url}/v1/cascade/ingest",
        json={"since": checkpoint, "next": checkpoint, "head": checkpoint, "items": items},
        headers={"Authorization": f"Bearer {bearer}"},
        timeout=30,
    )


def _signed(signer: Site, origin: str, entity: str, entry: dict[str, Any]) -> dict[str, Any]:
    return make_item(
        signer.key,
        origin=origin,
        origin_seq=10**9,
        entity=entity,
        item_key=entry["id"],
        op="upsert",
        entry=entry,
        at="2026-11-29T00:00:00+00:00",
    )


def test_a_child_names_only_its_own_subtree(tree: Tree) -> None:
    city, laoshan, shinan = tree.city, tree.laoshan, tree.shinan
    until(lambda: city.peers()[LAOSHAN]["lag_entries"] == 0, 30, "laoshan caught up")
    before = _titles(city)
    shinan_key = httpx.get(f"{shinan.url}/v1/cascade/node").json()["public_key"]
    laoshan_key = httpx.get(f"{laoshan.url}/v1/cascade/node").json()["public_key"]
    forged = {"title": "伪造", "title_en": "forged"}
    batch = [
        # Laoshan names a sibling district, claims shinan as the origin of shinan's name,
        # names a department of shinan's.
        _signed(laoshan, LAOSHAN, "node", {"id": LICANG, "public_key": laoshan_key, **forged}),
        _signed(laoshan, SHINAN, "node", {"id": SHINAN, "public_key": shinan_key, **forged}),
        _signed(laoshan, LAOSHAN, "namespace", {"id": TRAFFIC, "node_id": LAOSHAN, **forged}),
        # ... names itself with another key (re-keying itself through its own feed).
        _signed(laoshan, LAOSHAN, "node", {"id": LAOSHAN, "public_key": shinan_key, **forged}),
        # ... names itself with a control character.
        _signed(
            laoshan,
            LAOSHAN,
            "node",
            {"id": LAOSHAN, "public_key": laoshan_key, "title": "崂山\u202e区"},
        ),
    ]
    # Nodes the city linked itself (shinan, the city) are the city's to know: an item
    # from laoshan naming them is ignored by rule.
    ignored = [
        _signed(laoshan, LAOSHAN, "node", {"id": SHINAN, "public_key": shinan_key, **forged}),
        _signed(laoshan, LAOSHAN, "node", {"id": CITY, "public_key": laoshan_key, **forged}),
    ]
    resp = _ingest(tree, laoshan, [*batch, *ignored])
    assert resp.status_code == 200, resp.text
    outcome = resp.json()
    assert (outcome["applied"], outcome["rejected"], outcome["skipped"]) == (0, len(batch), 2)
    assert _titles(city) == before
    reasons = " | ".join(
        r["reason"]
        for r in httpx.get(
            f"{city.url}/v1/cascade/rejections",
            params={"peer": LAOSHAN, "limit": len(batch)},
            headers=city.auth("operator"),
        ).json()["items"]
    )
    assert f"may not vouch for the key of {LICANG}" in reasons
    assert "neither child sd.qd.laoshan nor below it" in reasons
    assert "belongs to node sd.qd.shinan" in reasons
    assert "may name itself but not re-key itself" in reasons
    assert "malformed" in reasons

    # Its own name, under its own key, is taken.
    own = _signed(laoshan, LAOSHAN, "node", {"id": LAOSHAN, "public_key": laoshan_key,
                                             "title": "崂山区", "title_en": "Laoshan"})  # fmt: skip
    assert _ingest(tree, laoshan, [own]).json()["applied"] == 1
    assert _titles(city)[f"node:{LAOSHAN}"] == ("崂山区", "Laoshan")
