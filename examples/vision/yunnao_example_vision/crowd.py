"""Crowd level (人群密度等级) of a camera frame: a small classifier trained on generated
street scenes (:mod:`.train`), exported to ONNX and run with onnxruntime, wherever the
capability runs: in the node, or in NVIDIA Triton's Python backend when its version is
bound to ``triton`` (``kind: KIND_GPU`` there on a machine with a GPU).

The model reads the frame as a 40 × 24 grayscale thumbnail and its share of dark pixels
per band, and answers one of four levels: empty (无人), sparse (稀疏, 1-3 people),
busy (较多, 4-8), crowded (拥挤, 9 or more).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, Field

from yunnao.plugins import capability, image

from .synthetic import LEVELS, LEVELS_ZH

MODEL = Path(__file__).with_name("crowd_model.onnx")
THUMB = (40, 24)  # width, height
BANDS = 8


def features(frame: np.ndarray) -> np.ndarray:
    """The model's input for one BGR (or grayscale) frame: float32, shape (1, 968)."""
    gray = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    small = cv2.resize(gray, THUMB, interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    dark = (small < 0.45).astype(np.float32)
    bands = dark.reshape(THUMB[1], BANDS, THUMB[0] // BANDS).mean(axis=(0, 2))
    return np.concatenate([small.reshape(-1), bands]).astype(np.float32)[None, :]


class Crowd(BaseModel):
    level: Literal["empty", "sparse", "busy", "crowded"]
    level_zh: str = Field(description="the level in Chinese: 无人, 稀疏, 较多 or 拥挤")
    confidence: float = Field(description="the model's probability of that level, 0-1")


@capability(
    name="crowd-level",
    title="人群密度等级",
    version="1.0.0",
    summary="How crowded a camera view is (empty, sparse, busy, crowded): a small ONNX "
    "model, served in process or on Triton",
    kind="model",
    domain="governance",
    tags=["vision", "camera", "crowd", "onnx", "image"],
    classification="public",
    owner="Public Security Bureau",
    contact="ai-video@example.gov.cn",
    license="Apache-2.0",
    requirements=[
        "numpy==2.4.6",
        "onnxruntime==1.32.0",
        "opencv-python-headless==4.14.0.94",
        "pillow==13.0.0",
    ],
    artifacts={"model": MODEL},
    runtime={"type": "inprocess"},
)
class CrowdLevel:
    def __init__(self, artifacts: dict[str, Path]) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1  # one frame is small; callers run in parallel
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                     if p in onnxruntime.get_available_providers()]  # fmt: skip
        self.session = onnxruntime.InferenceSession(
            str(artifacts["model"]), options, providers=providers
        )
        self.input = self.session.get_inputs()[0].name

    def __call__(self, frame: image(mode="BGR", max_bytes=8 << 20)) -> Crowd:
        """Reads the whole frame (any size; it is scaled down first)."""
        _labels, probabilities = self.session.run(None, {self.input: features(frame)})
        scores = np.asarray(probabilities, dtype=np.float64).reshape(-1)
        best = int(np.argmax(scores))
        return Crowd(
            level=LEVELS[best], level_zh=LEVELS_ZH[best], confidence=round(float(scores[best]), 4)
        )
