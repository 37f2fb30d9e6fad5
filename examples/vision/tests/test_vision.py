"""Scene statistics tell a usable frame from a dark, a blank and a blurred one."""

from __future__ import annotations

import numpy as np
from yunnao_example_vision import scene_stats


def street(seed: int = 0, size: int = 64) -> np.ndarray:
    """A synthetic street scene: rectangles (buildings, cars) on a textured road."""
    rng = np.random.default_rng(seed)
    frame = 0.45 + 0.03 * rng.standard_normal((size, size))
    for _ in range(8):
        y, x = rng.integers(0, size - 12, 2)
        h, w = rng.integers(6, 12, 2)
        frame[y : y + h, x : x + w] = rng.uniform(0.05, 0.95)
    return np.clip(frame, 0, 1).astype(np.float32)


def blur(frame: np.ndarray, passes: int = 6) -> np.ndarray:
    for _ in range(passes):
        frame = (
            frame
            + np.roll(frame, 1, 0)
            + np.roll(frame, 1, 1)
            + np.roll(frame, -1, 0)
            + np.roll(frame, -1, 1)
        ) / 5
    return frame


def stats(frame: np.ndarray) -> dict:
    return scene_stats.run({"image": frame.tolist()})


def test_a_street_is_usable_and_its_degradations_are_not() -> None:
    for seed in range(5):
        frame = street(seed)
        good = stats(frame)
        assert good["usable"], good
        assert not stats(frame * 0.2)["usable"]  # night, no lights
        assert not stats(np.full_like(frame, 0.5))["usable"]  # lens covered
        blurred = stats(blur(frame))
        assert blurred["edge_density"] < good["edge_density"] / 2


def test_the_example_finds_the_edge() -> None:
    out = scene_stats.run(scene_stats.examples[0]["input"])
    assert out["edge_density"] == 1.0  # every inner pixel of the 4×4 frame is on the edge
    assert out["brightness"] == 0.5


def test_the_input_is_a_2d_fp32_tensor() -> None:
    prop = scene_stats.input_schema["properties"]["image"]
    assert prop["x-tensor"] == {"datatype": "FP32", "shape": [-1, -1]}
