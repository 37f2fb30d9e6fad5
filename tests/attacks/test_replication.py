"""Replication never takes what is not the sender's.

- An ancestor's tombstone removes replicas only, never a node's own entries.
- Narrowing an entry (public → internal) withdraws it from followers sideways.
- A capability's origin node is the node whose key signed it, under the sending peer.
- What a rejection keeps (and logs) is bounded and escaped, whatever a peer sends.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.attacks.conftest import CITY, LAOSHAN, SHINAN, Federation
from tests.cascade_support import Site, signed_capability, until
from tests.realservers.yunnao_node import YunnaoProcess
from yunnao.registry.identity import assertions, tokens

pytestmark = pytest.mark.slow

AT = "2026-11-27T00:00:00+00:00"


def _capability(
    key: Any, *, origin: str, namespace: str, name: str, origin_node: str, seq: int = 10**9
) -> dict[str, Any]:
    """A capability upsert signed with ``key``, naming ``origin_node`` in its entry."""
    return signed_capability(
        key, origin, f"{namespace}/{name}", seq=seq, origin_node=origin_node, title="forged"
    )


def _tombstone(key: Any, *, origin: str, namespace: str, name: str, seq: int) -> dict[str, Any]:
    return signed_capability(key, origin, f"{namespace}/{name}", "delete", seq)


def _push(city: Site, sender: Site, items: list[Any]) -> httpx.Response:
    """POST a batch of ``sender``'s (as its node) at the city's checkpoint for it; the city
    also pulls ``sender``, so a batch that lost the race is sent again from the new one."""
    bearer = assertions.issue(sender.key, node_id=sender.node_id, audience=CITY, purpose="cascade")
    headers = {"Authorization": f"Bearer {bearer}"}
    checkpoint = city.peers()[sender.node_id]["checkpoint"]
    for _ in range(10):
        body = {"since": checkpoint, "next": checkpoint, "head": checkpoint, "items": items}
        resp = httpx.post(f"{city.url}/v1/cascade/ingest", json=body, headers=headers, timeout=120)
        if resp.status_code != 409:
            return resp
        checkpoint = resp.json()["checkpoint"]
    raise AssertionError(f"the city's checkpoint for {sender.node_id} kept moving")


def _rejections(site: Site, peer: str, limit: int = 500) -> list[dict[str, Any]]:
    resp = httpx.get(
        f"{site.url}/v1/cascade/rejections",
        params={"peer": peer, "limit": limit},
        headers=site.auth("operator"),
    )
    assert resp.status_code == 200, resp.text
    return resp.json()["items"]


# ---------------------------------------------------------------- (a) own entries stay


class _FakeParent:
    """A compromised parent: serves a node id, a key and a fixed feed of its choosing."""

    def __init__(self, node_id: str, items: list[dict[str, Any]], key: Ed25519PrivateKey) -> None:
        self.node_id = node_id
        self.items = items
        self.head = len(items)
        info = {
            "id": node_id,
            "title": "",
            "public_key": tokens.public_key_text(key),
            "parent": None,
            "children": [],
        }
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                query = parse_qs(url.query)
                if url.path == "/v1/cascade/node":
                    self._answer(info)
                elif url.path == "/v1/cascade/changes":
                    since = int(query.get("since", ["0"])[0])
                    if since >= outer.head:
                        threading.Event().wait(min(float(query.get("wait", ["0"])[0]), 0.5))
                        page = {"node": node_id, "items": [], "next": since, "head": outer.head}
                    else:
                        page = {
                            "node": node_id,
                            "items": outer.items,
                            "next": outer.head,
                            "head": outer.head,
                        }
                    self._answer(page)
                else:
                    self.send_error(404)

            def _answer(self, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                # The district may have stopped waiting (a long poll it gave up on).
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> _FakeParent:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


DISTRICT = f"{CITY}.h4own"


@pytest.fixture
def lone_district(tmp_path: Path) -> Iterator[Site]:
    site = Site(DISTRICT, YunnaoProcess(tmp_path / DISTRICT, "--node-id", DISTRICT))
    site.proc.start(timeout=120)
    try:
        yield site
    finally:
        site.proc.stop()


def test_a_parents_tombstone_never_deletes_a_districts_own_entry(lone_district: Site) -> None:
    district = lone_district
    district.publish("water", "meter", classification="public")
    own = f"{DISTRICT}.water/meter"
    before = district.get(own).json()
    # The city (compromised, or sweeping after a resync) signs with its own key a
    # tombstone of the district's own capability, and a replica it may send.
    city_key = Ed25519PrivateKey.generate()
    items = [
        _tombstone(city_key, origin=CITY, namespace=f"{DISTRICT}.water", name="meter", seq=7),
        _capability(
            city_key, origin=CITY, namespace=f"{CITY}.h4city", name="parks", origin_node=CITY
        ),
    ]
    with _FakeParent(CITY, items, city_key) as parent:
        district.cascade("add-parent", CITY, "--parent-url", parent.url, "--follow")
        until(
            lambda: district.peers()[CITY]["checkpoint"] >= parent.head,
            60,
            "the district applied its parent's page",
        )
    # The district's own entry is untouched, and the tombstone is a recorded rejection.
    resp = district.get(own)
    assert resp.status_code == 200, resp.text
    assert resp.json() == before
    assert district.contents(DISTRICT).keys() == {own}
    assert district.peers()[CITY]["rejected"] == 1
    [rejected] = _rejections(district, CITY)
    assert rejected["key"] == own and rejected["origin"] == CITY
    assert "in this node's subtree" in rejected["reason"]
    # What the parent may send still applies: the city's own entry is a replica here.
    assert f"{CITY}.h4city/parks" in district.contents(CITY)


# ---------------------------------------------------------------- (b) narrowing withdraws


def test_narrowing_an_entry_withdraws_it_from_a_sibling(federation: Federation) -> None:
    shinan, city, laoshan = federation.shinan, federation.city, federation.laoshan
    ref = f"{SHINAN}.h4narrow/census"
    shinan.publish("h4narrow", "census", classification="public")
    until(lambda: laoshan.get(ref).status_code == 200, 60, "public entry reached the sibling")

    resp = httpx.patch(
        f"{shinan.url}/v1/capabilities/{ref}",
        json={"classification": "internal"},
        headers=shinan.auth(),
    )
    assert resp.status_code == 200, resp.text
    # The city holds the narrowed entry (internal goes up) ...
    until(
        lambda: (
            city.get(ref, headers=city.auth("consumer")).json().get("classification") == "internal"
        ),
        60,
        "the city has the internal entry",
    )
    # ... and the sibling, which may not hold an internal entry of shinan's, has no copy.
    until(
        lambda: laoshan.get(ref, headers=laoshan.auth()).status_code == 404,
        60,
        "withdrawn at the sibling",
    )
    assert laoshan.get(ref).status_code == 404
    assert f"{SHINAN}.h4narrow/census" not in laoshan.contents(SHINAN)
    # Widened again, it comes back whole (capability and version).
    resp = httpx.patch(
        f"{shinan.url}/v1/capabilities/{ref}",
        json={"classification": "public"},
        headers=shinan.auth(),
    )
    assert resp.status_code == 200, resp.text
    until(lambda: laoshan.get(ref).status_code == 200, 60, "public again at the sibling")
    until(
        lambda: laoshan.get(f"{ref}/versions").json().get("items"),
        60,
        "its version is back at the sibling",
    )


# ---------------------------------------------------------------- (c) origin_node


def test_a_district_cannot_label_its_entries_with_another_origin(federation: Federation) -> None:
    city, laoshan = federation.city, federation.laoshan
    ns = f"{LAOSHAN}.h4origin"
    before_city, before_laoshan = city.contents(CITY), city.contents(LAOSHAN)
    rejected_before = city.peers()[LAOSHAN]["rejected"]
    key = laoshan.key
    batch = [
        # laoshan's own namespace, signed by laoshan, but labelled the city's or a sibling's
        _capability(key, origin=LAOSHAN, namespace=ns, name="as-city", origin_node=CITY),
        _capability(key, origin=LAOSHAN, namespace=ns, name="as-sibling", origin_node=SHINAN),
        # the city's namespace, and the city as origin, signed by laoshan
        _capability(key, origin=LAOSHAN, namespace=f"{CITY}.h4origin", name="x", origin_node=CITY),
        _capability(key, origin=CITY, namespace=f"{CITY}.h4origin", name="y", origin_node=CITY),
    ]
    resp = _push(city, laoshan, batch)
    assert resp.status_code == 200, resp.text
    assert resp.json()["applied"] == 0 and resp.json()["rejected"] == len(batch), resp.text
    assert city.peers()[LAOSHAN]["rejected"] >= rejected_before + len(batch)
    # The city shows nothing new, under any origin.
    assert city.contents(CITY) == before_city
    assert city.contents(LAOSHAN) == before_laoshan
    for name in ("as-city", "as-sibling"):
        assert city.get(f"{ns}/{name}", headers=city.auth()).status_code == 404
    reasons = {r["key"]: r["reason"] for r in _rejections(city, LAOSHAN, 50)}
    assert f"{SHINAN!r}, but {LAOSHAN} signed it" in reasons[f"{ns}/as-sibling"]
    assert f"{CITY!r}, but {LAOSHAN} signed it" in reasons[f"{ns}/as-city"]

    # Its true origin still applies (and goes again the same way).
    good = _capability(key, origin=LAOSHAN, namespace=ns, name="true", origin_node=LAOSHAN)
    assert _push(city, laoshan, [good]).json()["applied"] == 1
    assert city.contents(LAOSHAN)[f"{ns}/true"][4] == LAOSHAN
    gone = _tombstone(key, origin=LAOSHAN, namespace=ns, name="true", seq=10**9 + 1)
    assert _push(city, laoshan, [gone]).json()["applied"] == 1
    assert city.contents(LAOSHAN) == before_laoshan


# ---------------------------------------------------------------- (d) bounded rejections


def _stored_rejections(site: Site, peer: str, after: int) -> tuple[int, int, int]:
    """(rows, total size of the kept items, newest id) of ``peer``'s rejections."""
    db = sqlite3.connect(f"file:{site.data_dir / 'registry.db'}?mode=ro", uri=True)
    try:
        rows, size = db.execute(
            "SELECT count(*), coalesce(sum(length(item)), 0) FROM cascade_rejection "
            "WHERE peer = ? AND id > ?",
            (peer, after),
        ).fetchone()
        newest = db.execute("SELECT coalesce(max(id), 0) FROM cascade_rejection").fetchone()[0]
        return rows, size, newest
    finally:
        db.close()


def test_a_flood_of_rejected_junk_is_kept_bounded(federation: Federation) -> None:
    city, laoshan = federation.city, federation.laoshan
    _, _, newest = _stored_rejections(city, LAOSHAN, 0)
    # 200 malformed items of 64 KiB junk each: 12.5 MiB in one batch.
    junk = [
        {"origin": LAOSHAN, "entity": "capability", "key": f"junk-{i}", "blob": "z" * (64 << 10)}
        for i in range(200)
    ]
    resp = _push(city, laoshan, junk)
    assert resp.status_code == 200, resp.text
    assert resp.json()["applied"] == 0 and resp.json()["rejected"] == len(junk)

    # Every item is counted, but what is kept is bounded: at most 100 rows and a summary,
    # each item cut to a few KiB.
    rows, size, _ = _stored_rejections(city, LAOSHAN, newest)
    assert 0 < rows <= 101 and size <= 101 * 5000, (rows, size)
    listed = _rejections(city, LAOSHAN, 500)
    assert any("100 more rejected items of this batch were not kept" in r["reason"] for r in listed)
    kept = [r for r in listed if (r["key"] or "").startswith("junk-")]
    assert len(kept) == 100
    # Only the first few are logged one by one.
    logged = [line for line in city.proc.output().splitlines() if '"junk-' in line]
    assert 0 < len(logged) <= 20, len(logged)


def test_a_peer_cannot_write_lines_into_the_log(federation: Federation) -> None:
    city, laoshan = federation.city, federation.laoshan
    forged = "WARNING yunnao.cascade: h4-forged-line all entries verified"
    # Keys with a line break, a Unicode line separator and a next-line character, each
    # of which would start a line of the sender's choosing in the city's log.
    batch = [
        {"origin": LAOSHAN, "entity": "capability", "key": f"x{brk}{forged}", "op": "upsert"}
        for brk in ("\n", "\r\n", "\u2028", "\x85")
    ]
    resp = _push(city, laoshan, batch)
    assert resp.status_code == 200, resp.text
    assert resp.json()["rejected"] == len(batch)
    until(lambda: city.proc.output().count("h4-forged-line") >= len(batch), 30, "logged")
    lines = city.proc.output().splitlines()
    assert not [line for line in lines if "h4-forged-line" in line and "rejected" not in line]
    # The key is stored as sent, for the operator (JSON escapes it on the way out).
    keys = {r["key"] for r in _rejections(city, LAOSHAN, 50)}
    assert f"x\n{forged}" in keys
