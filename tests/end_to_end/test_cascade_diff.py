"""Reconciliation between real nodes: rows deleted and changed behind the city's back
are named exactly by ``yunnao cascade diff``, while replication goes on; ``--repair``
fetches them again (checked as replication checks them) and drops an extra; the diff
then finds the two nodes in agreement."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator

import httpx
import pytest

from tests.cascade_support import Site, until
from tests.realservers.yunnao_node import YunnaoProcess

pytestmark = pytest.mark.slow

CITY, SHINAN = "sd.qd", "sd.qd.shinan"
NS = f"{SHINAN}.traffic"


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, Site]]:
    root = tmp_path_factory.mktemp("diff")
    city = Site(CITY, YunnaoProcess(root / CITY, "--node-id", CITY))
    shinan = Site(SHINAN, YunnaoProcess(root / SHINAN, "--node-id", SHINAN))
    try:
        for site in (city, shinan):
            site.proc.start(timeout=120)
        city.cascade("add-child", SHINAN, "--child-url", shinan.url)
        shinan.cascade("add-parent", CITY, "--parent-url", city.url)
        yield city, shinan
    finally:
        for site in (city, shinan):
            site.proc.stop()


def _behind_its_back(site: Site, *statements: tuple[str, tuple]) -> None:
    db = sqlite3.connect(site.data_dir / "registry.db")
    try:
        for sql, args in statements:
            db.execute(sql, args)
        db.commit()
    finally:
        db.close()


def _ghost(site: Site, of: str) -> None:
    """A copy of a capability row under another name."""
    db = sqlite3.connect(site.data_dir / "registry.db")
    db.row_factory = sqlite3.Row
    try:
        row = dict(db.execute(f"SELECT * FROM capability WHERE id = {of}").fetchone())
        row.pop("id")
        row["name"] = "ghost"
        columns = ", ".join(row)
        db.execute(f"INSERT INTO capability ({columns}) VALUES ({', '.join('?' * len(row))})",
                   tuple(row.values()))  # fmt: skip
        db.commit()
    finally:
        db.close()


def test_the_diff_names_what_was_changed_behind_its_back_and_repair_restores_it(
    pair: tuple[Site, Site],
) -> None:
    city, shinan = pair
    for name in ("flow", "parking", "signals"):
        shinan.publish("traffic", name, classification="public")
    shinan.publish("traffic", "flow", version="1.1.0", classification="public")
    wanted = {f"{NS}/flow", f"{NS}/parking", f"{NS}/signals"}
    until(lambda: wanted <= set(city.contents(SHINAN)), message="the city has them")
    # flow@1.1.0 too (it may arrive a page after the names): what "before" means
    until(lambda: len(city.contents(SHINAN)[f"{NS}/flow"][5]) == 2, message="flow@1.1.0")
    before = city.contents(SHINAN)
    assert city.cascade("diff", SHINAN).returncode == 0  # in agreement

    cid = lambda name: f"(SELECT id FROM capability WHERE namespace = '{NS}' AND name = '{name}')"  # noqa: E731
    _behind_its_back(
        city,
        # parking: gone whole (its version goes with it)
        (f"DELETE FROM capability_version WHERE capability_id = {cid('parking')}", ()),
        (f"DELETE FROM capability_tag WHERE capability_id = {cid('parking')}", ()),
        (f"DELETE FROM capability WHERE id = {cid('parking')}", ()),
        # flow@1.1.0: one version lost
        (f"DELETE FROM capability_version WHERE capability_id = {cid('flow')} "
         "AND version = '1.1.0'", ()),
        # signals: its title changed, and its kept hash with it
        (f"UPDATE capability SET title = 'x', content_hash = 'x' WHERE id = {cid('signals')}", ()),
    )  # fmt: skip

    _ghost(city, cid("flow"))  # an entry the district never had, as if it came through it

    # Replication goes on meanwhile: a new publish at the district arrives as usual.
    shinan.publish("traffic", "lanes", classification="public")
    until(lambda: f"{NS}/lanes" in city.contents(SHINAN), message="replication goes on")

    found = city.cascade("diff", SHINAN, "--json", check=False)
    assert found.returncode == 1, found.stderr  # they differ
    got = json.loads(found.stdout)
    assert got["missing"] == [f"{NS}/flow@1.1.0", f"{NS}/parking", f"{NS}/parking@1.0.0"]
    assert got["different"] == [f"{NS}/signals"]
    assert got["extra"] == [f"{NS}/ghost"]
    plain = city.cascade("diff", SHINAN, check=False)
    assert plain.returncode == 1 and f"{NS}/parking@1.0.0" in plain.stdout

    # Over HTTP, an author may not look; an operator may, and only an admin repairs.
    url = f"{city.url}/v1/cascade/peers/{SHINAN}"
    assert httpx.get(f"{url}/diff", headers=city.auth("author")).status_code == 403
    assert httpx.post(f"{url}/repair", headers=city.auth("operator")).status_code == 403

    # The operator page links the same comparison, in Chinese.
    ops = httpx.get(f"{city.url}/ops", headers=city.auth("operator"))
    assert f'href="/ops/peers/{SHINAN}/diff"' in ops.text
    page = httpx.get(f"{city.url}/ops/peers/{SHINAN}/diff", headers=city.auth("operator"))
    assert page.status_code == 200 and "本节点的副本与对方不一致" in page.text
    assert f"<code>{NS}/ghost</code>" in page.text and 'id="repair"' not in page.text
    as_admin = httpx.get(f"{city.url}/ops/peers/{SHINAN}/diff", headers=city.auth("admin"))
    assert 'id="repair"' in as_admin.text  # only an admin is offered the repair

    repaired = city.cascade("diff", SHINAN, "--repair", "--json")
    fixed = json.loads(repaired.stdout)
    assert fixed["repaired"] and fixed["rejected"] == [] and fixed["removed"] == 1
    assert fixed["applied"] == 4  # parking and its version, flow@1.1.0, signals
    after = city.contents(SHINAN)
    assert {k: after[k] for k in before} == before
    assert f"{NS}/ghost" not in after
    assert city.cascade("diff", SHINAN).returncode == 0

    # The peer gone: a 503 problem saying so, not an internal error.
    shinan.proc.stop()
    gone = httpx.get(f"{url}/diff", headers=city.auth("operator"), timeout=60)
    assert gone.status_code == 503, gone.text
    assert gone.headers["content-type"].startswith("application/problem+json")
    assert f"cannot reach {SHINAN}" in gone.json()["detail"]
