"""Street frames made for tests and training: standing people drawn as silhouettes on a
textured road, in BGR (as OpenCV takes them). Nothing here is downloaded.

``street(people=3)`` is a frame with its people's boxes; ``scenes(n)`` is a labelled
set for the crowd-level model (:mod:`.train`)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

LEVELS = ("empty", "sparse", "busy", "crowded")  # 0 people, 1-3, 4-8, 9 or more
LEVELS_ZH = ("无人", "稀疏", "较多", "拥挤")


def level_of(people: int) -> int:
    return 0 if people == 0 else 1 if people <= 3 else 2 if people <= 8 else 3


@dataclass(frozen=True)
class Drawn:
    """A person drawn into a frame: the box around the silhouette."""

    x: int
    y: int
    width: int
    height: int


def person(frame: np.ndarray, x: int, y: int, height: int, shade: int = 40) -> Drawn:
    """Draw a standing person whose silhouette's top left is ``(x, y)``."""
    s = height / 160.0
    colour = (shade, shade, shade)

    def at(a: float, b: float) -> tuple[int, int]:
        return int(x + a * s), int(y + b * s)

    cv2.ellipse(frame, at(32, 14), (int(11 * s), int(13 * s)), 0, 0, 360, colour, -1)  # head
    cv2.rectangle(frame, at(28, 26), at(36, 32), colour, -1)  # neck
    torso = np.array([at(16, 32), at(48, 32), at(50, 88), at(14, 88)], np.int32)
    cv2.fillPoly(frame, [torso], colour)
    arm, leg = max(1, int(8 * s)), max(1, int(11 * s))
    cv2.line(frame, at(16, 34), at(6, 84), colour, arm)
    cv2.line(frame, at(48, 34), at(58, 84), colour, arm)
    cv2.line(frame, at(24, 86), at(20, 156), colour, leg)
    cv2.line(frame, at(40, 86), at(44, 156), colour, leg)
    return Drawn(x, y, int(64 * s), height)


def background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A plain wall and a road, with sensor noise and a random brightness."""
    base = int(rng.integers(150, 200))
    frame = np.full((height, width, 3), base, np.uint8)
    noisy = frame + rng.normal(0, 8, frame.shape)
    frame = noisy.clip(0, 255).astype(np.uint8)
    road = int(height * 0.83)
    frame[road:] = np.clip(frame[road:].astype(int) - 50, 0, 255).astype(np.uint8)
    return frame


def street(
    people: int = 3, *, seed: int = 0, width: int = 640, height: int = 360
) -> tuple[np.ndarray, list[Drawn]]:
    """A frame with ``people`` standing side by side (not overlapping), and their boxes."""
    rng = np.random.default_rng(seed)
    frame = background(rng, height, width)
    ground = int(height * 0.83)
    slot = width // max(people, 1)
    drawn = []
    for i in range(people):
        tall = int(rng.integers(int(height * 0.45), int(height * 0.56)))
        wide = int(64 * tall / 160)
        x = i * slot + int(rng.integers(0, max(1, slot - wide)))
        drawn.append(person(frame, x, ground - tall, tall, shade=int(rng.integers(20, 70))))
    return frame, drawn


def crowd(rng: np.random.Generator, people: int, width: int = 320, height: int = 180) -> np.ndarray:
    """A frame for the crowd-level model: ``people`` anywhere, overlapping as crowds do."""
    frame = background(rng, height, width)
    ground = int(height * 0.83)
    for _ in range(people):
        tall = int(rng.integers(int(height * 0.25), int(height * 0.6)))
        x = int(rng.integers(-10, width - 10))
        foot = ground + int(rng.integers(-6, int(height * 0.15)))
        person(frame, x, foot - tall, tall, shade=int(rng.integers(15, 90)))
    return frame


def scenes(n: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """``n`` crowd frames with their levels (0-3), people counts spread over all levels."""
    rng = np.random.default_rng(seed)
    frames, levels = [], []
    for i in range(n):
        people = (0, int(rng.integers(1, 4)), int(rng.integers(4, 9)), int(rng.integers(9, 25)))[
            i % 4
        ]
        frames.append(crowd(rng, people))
        levels.append(level_of(people))
    return frames, np.array(levels)


def clip(path: str, frames: int, fps: int = 10) -> bytes:
    """A video clip (MJPG in AVI, which OpenCV writes everywhere) of street frames with 0,
    1, 2, 3, 0, ... people, five frames each; written to ``path``, its bytes returned."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (640, 360))
    for i in range(frames):
        writer.write(street((i // 5) % 4, seed=i)[0])
    writer.release()
    with open(path, "rb") as written:
        return written.read()
