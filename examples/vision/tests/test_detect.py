"""The detectors find what is in frames made for the test, and the crowd-level model
tells the levels apart on scenes it was not trained on."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import cv2
import matplotlib.cbook
import numpy as np
import onnxruntime
import pytest
from PIL import Image
from yunnao_example_vision.crowd import CrowdLevel, features
from yunnao_example_vision.detect import face_blur, people_detect
from yunnao_example_vision.synthetic import crowd, level_of, street
from yunnao_example_vision.train import train


def _jpeg(frame: np.ndarray) -> str:
    ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    return base64.b64encode(data.tobytes()).decode()


def _picture(text: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))).convert("RGB"))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_people_detect_finds_each_person_once(seed: int) -> None:
    frame, drawn = street(3, seed=seed)
    out = people_detect.run({"frame": _jpeg(frame)})
    assert out["count"] == 3, out["boxes"]
    for person, box in zip(drawn, out["boxes"], strict=True):  # both left to right
        cx, cy = person.x + person.width / 2, person.y + person.height / 2
        assert box["x"] <= cx <= box["x"] + box["width"], (person, box)
        assert box["y"] <= cy <= box["y"] + box["height"], (person, box)
        # The box is about the person's size (HOG's window has a margin around them).
        assert person.height <= box["height"] <= 1.7 * person.height, (person, box)
    annotated = _picture(out["annotated"])
    assert annotated.shape == frame.shape
    first = out["boxes"][0]
    red, green, blue = annotated[first["y"] + first["height"] // 2, first["x"] + 1].tolist()
    assert red > 150 and green < 100 and blue < 100  # the box's edge, drawn in red


def test_people_detect_finds_no_one_in_an_empty_street() -> None:
    frame, _ = street(0, seed=3)
    assert people_detect.run({"frame": _jpeg(frame)})["count"] == 0


def test_face_blur_blurs_the_face_and_nothing_else() -> None:
    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    original = np.asarray(Image.open(path).convert("RGB"))
    out = face_blur.run({"frame": base64.b64encode(Path(path).read_bytes()).decode()})
    assert out["count"] == 1
    (box,) = out["boxes"]
    # Her face: in the upper middle of the 512 × 600 portrait.
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    assert 200 < cx < 320 and 150 < cy < 280 and 150 < box["width"] < 300, box
    blurred = _picture(out["blurred"]).astype(int)
    x, y, w, h = box["x"], box["y"], box["width"], box["height"]
    inside = np.abs(blurred[y : y + h, x : x + w] - original[y : y + h, x : x + w]).mean()
    outside = np.abs(blurred[-60:, :100] - original[-60:, :100]).mean()
    assert inside > 8 and outside < 3, (inside, outside)  # JPEG noise only, outside


def test_the_shipped_crowd_model_tells_the_levels_apart() -> None:
    rng = np.random.default_rng(2026)
    model = CrowdLevel.instantiate()
    right = 0
    counts = [0, 1, 2, 3, 5, 7, 10, 14, 20] * 6
    for people in counts:
        frame = crowd(rng, people)
        got = model(frame)
        right += ("empty", "sparse", "busy", "crowded")[level_of(people)] == got.level
    assert right / len(counts) >= 0.8


def test_training_from_generated_scenes_reaches_a_useful_accuracy() -> None:
    data, accuracy = train(n=800, seed=5)
    assert accuracy >= 0.8
    session = onnxruntime.InferenceSession(data)  # a model onnxruntime runs as it is
    frame = crowd(np.random.default_rng(1), 0)
    labels, _ = session.run(None, {session.get_inputs()[0].name: features(frame)})
    assert labels.tolist() == [0]
