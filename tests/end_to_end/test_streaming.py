"""Streamed calls between three real nodes: the district's ``video-people`` (a generator:
one count per sampled frame of a clip) is called at the province, two hops above it,
with ``Accept: text/event-stream``; its counts arrive as server-sent events, and the
usage record at the origin has the stream's length and duration. A caller that goes away
after two items stops the work at the origin: every node records the stream as ended by
the caller (499), and the district's generator ran far short of the clip.

    sd (province) ── pulls ── sd.qd (city) ── pulls ── sd.qd.shinan (district, examples)
"""

from __future__ import annotations

import html
import json
import re
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from yunnao_example_vision.synthetic import clip

from tests.cascade_support import Site, until
from tests.conftest import assert_problem
from tests.realservers.yunnao_node import YunnaoProcess

pytestmark = pytest.mark.slow

PROVINCE, CITY, SHINAN = "sd", "sd.qd", "sd.qd.shinan"
REF = f"{SHINAN}.urban/video-people"


def _clip(path: Path, frames: int) -> bytes:
    return clip(str(path), frames)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, Site, Site]]:
    root = tmp_path_factory.mktemp("streams")
    # The district decodes and scans video frames on every core it has: on a loaded 2-core
    # machine it once answered two health probes in a row later than the 2 s default, and
    # the city then called it unreachable mid-test. This module is about streams.
    env = {"YUNNAO_HEALTH_PROBE_TIMEOUT": "15"}

    def site(node_id: str, *args: str) -> Site:
        return Site(node_id, YunnaoProcess(root / node_id, "--node-id", node_id, *args, env=env))

    province, city = site(PROVINCE), site(CITY)
    shinan = site(SHINAN, "--publish-plugins")
    sites = (province, city, shinan)
    try:
        for site in sites:
            site.proc.start(timeout=180)
        province.cascade("add-child", CITY, "--child-url", city.url)
        city.cascade("add-parent", PROVINCE, "--parent-url", province.url)
        city.cascade("add-child", SHINAN, "--child-url", shinan.url)
        shinan.cascade("add-parent", CITY, "--parent-url", city.url)
        until(lambda: REF in province.contents(SHINAN), 90, "the province has video-people")
        yield province, city, shinan
    finally:
        for site in sites:
            site.proc.stop()


def _records(site: Site, request_id: str) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(f"file:{site.data_dir / 'registry.db'}?mode=ro", uri=True)
    try:
        return db.execute(
            "SELECT mode, status, items, latency_ms FROM usage_record WHERE request_id = ?",
            (request_id,),
        ).fetchall()
    finally:
        db.close()


def _events(resp: httpx.Response) -> Iterator[tuple[str, Any]]:
    kind = "message"
    for line in resp.iter_lines():
        if line.startswith("event:"):
            kind = line[6:].strip()
        elif line.startswith("data:"):
            yield kind, json.loads(line[5:])


def test_a_stream_passes_two_hops_and_is_recorded(
    tree: tuple[Site, Site, Site], tmp_path: Path
) -> None:
    province, city, shinan = tree
    clip = _clip(tmp_path / "short.avi", 20)
    rid = f"stream-{uuid.uuid4().hex[:8]}"
    headers = {
        "Accept": "text/event-stream",
        "Content-Type": "video/x-msvideo",
        "X-Request-Id": rid,
    }
    with httpx.stream("POST", f"{province.url}/v1/invoke/{REF}", content=clip, headers=headers,
                      params={"every": 5}, timeout=120) as resp:  # fmt: skip
        assert resp.status_code == 200, resp.read()
        assert resp.headers["content-type"].startswith("text/event-stream")
        seen = list(_events(resp))
    items = [data for kind, data in seen if kind == "item"]
    assert [(i["frame"], i["count"]) for i in items] == [(0, 0), (5, 1), (10, 2), (15, 3)]
    assert seen[-1][0] == "end" and seen[-1][1]["items"] == 4
    for site in (shinan, city, province):  # one record at each node, with the stream's length
        until(lambda s=site: _records(s, rid), 10, f"{site.node_id}'s usage record")
        ((mode, status, count, took),) = _records(site, rid)
        assert (mode, status, count) == ("stream", 200, 4) and took > 0
    # Without Accept: text/event-stream, the same call answers once, with every item.
    once = httpx.post(f"{province.url}/v1/invoke/{REF}", content=clip, params={"every": 5},
                      headers={"Content-Type": "video/x-msvideo"}, timeout=120)  # fmt: skip
    assert once.status_code == 200, once.text
    assert [i["count"] for i in once.json()["output"]] == [0, 1, 2, 3]


def test_a_caller_who_goes_away_stops_the_work_at_the_origin(
    tree: tuple[Site, Site, Site], tmp_path: Path
) -> None:
    province, city, shinan = tree
    frames = 200
    clip = _clip(tmp_path / "long.avi", frames)
    rid = f"gone-{uuid.uuid4().hex[:8]}"
    headers = {
        "Accept": "text/event-stream",
        "Content-Type": "video/x-msvideo",
        "X-Request-Id": rid,
    }
    with httpx.stream("POST", f"{province.url}/v1/invoke/{REF}", content=clip, headers=headers,
                      params={"every": 1}, timeout=120) as resp:  # fmt: skip
        assert resp.status_code == 200
        got = 0
        for kind, _ in _events(resp):
            got += kind == "item"
            if got == 2:
                break  # and close the connection
    for site in (province, city, shinan):
        until(lambda s=site: _records(s, rid), 60, f"{site.node_id} records the ended stream")
        ((mode, status, count, _),) = _records(site, rid)
        assert (mode, status) == ("stream", 499), (site.node_id, status)
        assert count < frames // 2, (site.node_id, count)  # far short of the clip


def test_streams_are_refused_before_they_start_when_the_input_is_wrong(
    tree: tuple[Site, Site, Site],
) -> None:
    province, _, _ = tree
    headers = {"Accept": "text/event-stream"}
    bad = httpx.post(f"{province.url}/v1/invoke/{REF}", json={"input": {"every": 0}},
                     headers=headers, timeout=60)  # fmt: skip
    body = assert_problem(bad, 422)
    assert {e["field"] for e in body["errors"]} >= {"input.clip", "input.every"}
    keyed = httpx.post(f"{province.url}/v1/invoke/{REF}", json={"input": {}},
                       headers={**headers, "Idempotency-Key": "k1"}, timeout=60)  # fmt: skip
    assert_problem(keyed, 422, field="Idempotency-Key")


def test_the_pages_curl_snippet_streams_as_copied(
    tree: tuple[Site, Site, Site], tmp_path: Path
) -> None:
    province, _, _ = tree
    page = httpx.get(f"{province.url}/c/{REF}")
    assert page.status_code == 200 and 'id="streams"' in page.text
    found = dict(re.findall(r'<code id="snippet-([a-z]+)">(.*?)</code>', page.text, re.S))
    curl = html.unescape(found["curl"])
    assert "Accept: text/event-stream" in curl and "-F clip=@clip.bin" in curl
    (tmp_path / "clip.bin").write_bytes(_clip(tmp_path / "clip.avi", 20))
    ran = subprocess.run(["bash", "-c", curl], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.count("event: item") == 4 and "event: end" in ran.stdout
