"""Images through the gateway, between two real nodes: a district publishing the example
``frame-quality`` (a JPEG or PNG snapshot in, measures and an edge map out) and the city
that pulls it. A multipart upload, a raw ``image/jpeg`` body, base64 JSON and a V2
``BYTES`` tensor (tritonclient, binary data) reach it at the district and through the
city; a corrupt JPEG is 422 and an oversized one 413, naming the field, refused before
the capability runs (at the city: before the call is forwarded).

    sd.qd (city) ── pulls ── sd.qd.shinan (district, the example plugins)
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from PIL import Image

from tests.cascade_support import Site, until
from tests.conftest import assert_problem
from tests.realservers.yunnao_node import YunnaoProcess

pytestmark = pytest.mark.slow

CITY, SHINAN = "sd.qd", "sd.qd.shinan"
REF = f"{SHINAN}.urban/frame-quality"


def _jpeg(width: int = 96, height: int = 64) -> bytes:
    """A frame made for the test: a bright square on a dark road, as JPEG."""
    frame = np.full((height, width, 3), 40, dtype=np.uint8)
    frame[16:48, 32:64] = 220
    out = io.BytesIO()
    Image.fromarray(frame).save(out, format="JPEG", quality=95)
    return out.getvalue()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, Site]]:
    root = tmp_path_factory.mktemp("media")
    city = Site(CITY, YunnaoProcess(root / CITY, "--node-id", CITY))
    shinan = Site(SHINAN, YunnaoProcess(root / SHINAN, "--node-id", SHINAN, "--publish-plugins"))
    try:
        for site in (city, shinan):
            site.proc.start(timeout=180)
        city.cascade("add-child", SHINAN, "--child-url", shinan.url)
        shinan.cascade("add-parent", CITY, "--parent-url", city.url)
        until(lambda: REF in city.contents(SHINAN), 90, "the city has frame-quality")
        yield city, shinan
    finally:
        for site in (city, shinan):
            site.proc.stop()


def _measured(resp: httpx.Response) -> dict:
    assert resp.status_code == 200, resp.text
    out = resp.json()["output"]
    assert (out["width"], out["height"]) == (96, 64)
    # The bright square's outline is in the edge map, a PNG picture of the frame's size.
    edges = np.asarray(Image.open(io.BytesIO(base64.b64decode(out["edges"]))))
    assert edges.shape == (64, 96) and edges[16, 40] == 255 and edges[2, 2] == 0
    return out


@pytest.mark.parametrize("where", ["district", "city"])
def test_a_multipart_upload_a_raw_jpeg_and_base64_json_reach_it(
    pair: tuple[Site, Site], where: str
) -> None:
    city, shinan = pair
    site = shinan if where == "district" else city
    url = f"{site.url}/v1/invoke/{REF}"
    jpeg = _jpeg()
    form = httpx.post(url, files={"frame": ("snap.jpg", jpeg, "image/jpeg")},
                      data={"edge_threshold": "0.3"}, timeout=60)  # fmt: skip
    measured = _measured(form)
    raw = httpx.post(url, content=jpeg, params={"edge_threshold": "0.3"},
                     headers={"Content-Type": "image/jpeg"}, timeout=60)  # fmt: skip
    assert _measured(raw) == measured
    as_json = httpx.post(url, json={"input": {"frame": base64.b64encode(jpeg).decode(),
                                              "edge_threshold": 0.3}}, timeout=60)  # fmt: skip
    assert _measured(as_json) == measured


@pytest.mark.parametrize("where", ["district", "city"])
def test_a_corrupt_and_an_oversized_jpeg_are_refused_naming_the_field(
    pair: tuple[Site, Site], where: str
) -> None:
    city, shinan = pair
    site = shinan if where == "district" else city
    url = f"{site.url}/v1/invoke/{REF}"
    broken = _jpeg()[:300]  # the header, then nothing
    rid = f"broken-{where}-{uuid.uuid4().hex[:8]}"
    resp = httpx.post(url, content=broken, timeout=60,
                      headers={"Content-Type": "image/jpeg", "X-Request-Id": rid})  # fmt: skip
    body = assert_problem(resp, 422, field="input.frame")
    assert "image" in body["detail"]
    # Refused where it entered, before any runtime (at the city: not forwarded).
    until(lambda: site.usage_records(rid), 10, "the refusal's usage record")
    assert site.usage_records(rid) == [(f"{SHINAN}.urban", "frame-quality", 422)]
    if where == "city":
        ok = f"ok-{uuid.uuid4().hex[:8]}"
        sent = httpx.post(url, content=_jpeg(), timeout=60,
                          headers={"Content-Type": "image/jpeg", "X-Request-Id": ok})  # fmt: skip
        assert sent.status_code == 200, sent.text
        until(lambda: shinan.usage_records(ok), 10, "a good call reaches the district")
        assert shinan.usage_records(rid) == []
    not_an_image = httpx.post(url, files={"frame": ("x.jpg", b"GIF89a nothing", "image/jpeg")})
    assert_problem(not_an_image, 422, field="input.frame")
    # 9 MB of noise as PNG: more than the 8 MB the capability declares.
    noise = np.random.default_rng(1).integers(0, 256, (1800, 1800, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(noise).save(out, format="PNG", compress_level=0)
    big = httpx.post(url, content=out.getvalue(), headers={"Content-Type": "image/png"},
                     timeout=120)  # fmt: skip
    body = assert_problem(big, 413, field="input.frame")
    assert "8.0 MB" in body["detail"]
    # A raw body for a capability without a file field says so.
    other = httpx.post(f"{site.url}/v1/invoke/{SHINAN}.urban/scene-stats", content=_jpeg(),
                       headers={"Content-Type": "image/jpeg"})  # fmt: skip
    assert_problem(other, 422, field="field")


@pytest.mark.parametrize("where", ["district", "city"])
def test_v2_callers_send_the_frame_as_a_bytes_tensor(pair: tuple[Site, Site], where: str) -> None:
    city, shinan = pair
    site = shinan if where == "district" else city
    client = triton.InferenceServerClient(site.url.removeprefix("http://"))
    frame = triton.InferInput("frame", [1], "BYTES")
    frame.set_data_from_numpy(np.array([_jpeg()], dtype=object), binary_data=True)
    threshold = triton.InferInput("edge_threshold", [1], "FP64")
    threshold.set_data_from_numpy(np.array([0.3]), binary_data=False)
    wanted = [triton.InferRequestedOutput(n, binary_data=True) for n in ("width", "edges")]
    result = client.infer(REF.replace("/", "."), [frame, threshold], outputs=wanted)
    assert result.as_numpy("width").tolist() == [96]
    png = result.as_numpy("edges")[0]  # the picture's own bytes
    assert Image.open(io.BytesIO(png)).size == (96, 64)
    client.close()


def test_the_pages_snippets_upload_the_file_as_copied(
    pair: tuple[Site, Site], tmp_path: Path
) -> None:
    city, _ = pair
    page = httpx.get(f"{city.url}/c/{REF}")
    assert page.status_code == 200, page.text
    found = dict(re.findall(r'<code id="snippet-([a-z]+)">(.*?)</code>', page.text, re.S))
    curl, python = html.unescape(found["curl"]), html.unescape(found["python"])
    assert "-F frame=@frame.jpg" in curl and "files={'frame': open('frame.jpg', 'rb')}" in python
    (tmp_path / "frame.jpg").write_bytes(_jpeg())
    ran = subprocess.run(["bash", "-c", curl], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["output"]["width"] == 96
    ran = subprocess.run([sys.executable, "-c", python], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert "'width': 96" in ran.stdout
