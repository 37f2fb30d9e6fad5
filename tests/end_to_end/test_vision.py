"""The vision example on real servers: a district publishing it (people-detect with
OpenCV's HOG detector, face-blur with its Haar cascade, crowd-level as an ONNX model),
called through the city that pulls it; crowd-level bound to a real ``tritonserver`` at
the district (its Python backend running onnxruntime), called through the city over
``/v1/invoke`` and over V2 with the frame as a ``BYTES`` tensor.

    sd.qd (city) ── pulls ── sd.qd.shinan (district, the example plugins, Triton)
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import matplotlib.cbook
import numpy as np
import pytest
import tritonclient.http as triton
from PIL import Image
from yunnao_example_vision.synthetic import crowd, street

from tests.cascade_support import Site, until
from tests.realservers.triton import TritonProcess
from tests.realservers.yunnao_node import YunnaoProcess

pytestmark = pytest.mark.slow

CITY, SHINAN = "sd.qd", "sd.qd.shinan"
NS = f"{SHINAN}.urban"


def _jpeg(frame: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    return data.tobytes()


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, Site, Any]]:
    root = tmp_path_factory.mktemp("vision")
    server = TritonProcess(root / "triton")
    runtimes = {"triton": {"url": server.url, "repository": str(server.repository)}}
    city = Site(CITY, YunnaoProcess(root / CITY, "--node-id", CITY))
    shinan = Site(SHINAN, YunnaoProcess(root / SHINAN, "--node-id", SHINAN, "--publish-plugins",
                                        env={"YUNNAO_RUNTIMES": json.dumps(runtimes)}))  # fmt: skip
    try:
        server.start()
        for site in (city, shinan):
            site.proc.start(timeout=180)
        city.cascade("add-child", SHINAN, "--child-url", shinan.url)
        shinan.cascade("add-parent", CITY, "--parent-url", city.url)
        wanted = {f"{NS}/people-detect", f"{NS}/face-blur", f"{NS}/crowd-level"}
        until(lambda: wanted <= set(city.contents(SHINAN)), 90, "the city has them")
        yield city, shinan, server
    finally:
        for site in (city, shinan):
            site.proc.stop()
        server.stop()


def _call(site: Site, name: str, frame: bytes, **kw: Any) -> dict[str, Any]:
    resp = httpx.post(f"{site.url}/v1/invoke/{NS}/{name}", timeout=120,
                      files={"frame": ("frame.jpg", frame, "image/jpeg")}, **kw)  # fmt: skip
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_the_people_in_a_frame_are_found_through_the_city(tree: tuple[Site, Site, Any]) -> None:
    city, _, _ = tree
    frame, drawn = street(3, seed=4)
    out = _call(city, "people-detect", _jpeg(frame))["output"]
    assert out["count"] == 3
    for person, box in zip(drawn, out["boxes"], strict=True):
        cx, cy = person.x + person.width / 2, person.y + person.height / 2
        assert box["x"] <= cx <= box["x"] + box["width"]
        assert box["y"] <= cy <= box["y"] + box["height"]
    annotated = Image.open(io.BytesIO(base64.b64decode(out["annotated"])))
    assert annotated.format == "JPEG" and annotated.size == (640, 360)


def test_a_face_is_blurred_for_signed_in_staff_through_the_city(
    tree: tuple[Site, Site, Any],
) -> None:
    city, _, _ = tree
    portrait = Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    upload = {"frame": ("p.jpg", portrait.read_bytes(), "image/jpeg")}
    anonymous = httpx.post(f"{city.url}/v1/invoke/{NS}/face-blur", files=upload, timeout=60)
    assert anonymous.status_code == 404  # internal: not for anonymous callers
    out = _call(city, "face-blur", portrait.read_bytes(), headers=city.auth("consumer"))
    assert out["output"]["count"] == 1


def test_crowd_level_runs_on_triton_and_answers_over_v2_through_the_city(
    tree: tuple[Site, Site, Any],
) -> None:
    city, shinan, server = tree
    version = f"{shinan.url}/v1/capabilities/{NS}/crowd-level/versions/1.0.0/runtime"
    bound = httpx.put(version, json={"type": "triton"}, headers=shinan.auth("operator"),
                      timeout=60)  # fmt: skip
    assert bound.status_code == 200, bound.text
    until(lambda: city.get(f"{NS}/crowd-level").json().get("runtime") == "triton", 60,
          "the city sees the binding")  # fmt: skip
    rng = np.random.default_rng(21)
    empty, packed = _jpeg(crowd(rng, 0)), _jpeg(crowd(rng, 18))
    first = _call(city, "crowd-level", empty)
    assert first["output"]["level"] == "empty", first
    client = triton.InferenceServerClient(city.url.removeprefix("http://"), network_timeout=120)
    frame = triton.InferInput("frame", [1], "BYTES")
    frame.set_data_from_numpy(np.array([packed], dtype=object), binary_data=True)
    result = client.infer(f"{NS}.crowd-level", [frame])
    assert result.as_numpy("level")[0] in (b"crowded", "crowded")
    client.close()
    # It ran inside Triton: the district's wrapper entry is loaded there, and ready.
    base = server.url if "://" in server.url else f"http://{server.url}"
    index = httpx.post(f"{base}/v2/repository/index", json={}, timeout=30).json()
    loaded = [m for m in index if "crowd-level" in m["name"]]
    assert loaded and loaded[0]["state"] == "READY", index
