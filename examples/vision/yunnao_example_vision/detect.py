"""Detectors a city runs on camera frames, with the pretrained models OpenCV ships in its
package (nothing is downloaded): the HOG people detector (Dalal and Triggs' linear SVM)
and the Haar cascade for frontal faces.

- ``people-detect`` 行人检测: people's boxes, and the frame with the boxes drawn;
- ``face-blur`` 人脸打码: the frame with every face blurred (for publishing camera
  footage without identifying anyone), and where the faces were.
"""

from __future__ import annotations

import threading
from typing import Annotated

import cv2
import numpy as np
from pydantic import BaseModel, Field

from yunnao.plugins import capability, image

MAX_SIDE = 960  # larger frames are scaled down to this first: detection is the cost
_local = threading.local()  # OpenCV detectors are not shared between threads


class Box(BaseModel):
    x: int = Field(description="left edge, pixels of the frame sent")
    y: int = Field(description="top edge")
    width: int
    height: int
    confidence: float = Field(description="the detector's score (higher: surer)")


class People(BaseModel):
    count: int = Field(description="people found")
    boxes: list[Box]
    annotated: image(output_format="jpeg") = Field(description="the frame, boxes drawn in red")


class Faces(BaseModel):
    count: int = Field(description="faces found (and blurred)")
    boxes: list[Box]
    blurred: image(output_format="jpeg") = Field(description="the frame, faces blurred")


def _hog() -> cv2.HOGDescriptor:
    hog = getattr(_local, "hog", None)
    if hog is None:
        hog = _local.hog = cv2.HOGDescriptor()
        hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
    return hog


def _faces() -> cv2.CascadeClassifier:
    found = getattr(_local, "faces", None)
    if found is None:
        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
        found = _local.faces = cv2.CascadeClassifier(path)
    return found


def _shrunk(frame: np.ndarray) -> tuple[np.ndarray, float]:
    """The frame at most :data:`MAX_SIDE` wide or high, and the factor back."""
    side = max(frame.shape[:2])
    if side <= MAX_SIDE:
        return frame, 1.0
    factor = side / MAX_SIDE
    small = cv2.resize(frame, (round(frame.shape[1] / factor), round(frame.shape[0] / factor)),
                       interpolation=cv2.INTER_AREA)  # fmt: skip
    return small, factor


@capability(
    name="people-detect",
    title="行人检测",
    version="1.0.0",
    summary="Finds standing people in a camera frame (OpenCV's HOG people detector) and "
    "draws their boxes",
    kind="model",
    domain="governance",
    tags=["vision", "camera", "people", "image"],
    classification="public",
    owner="Public Security Bureau",
    contact="ai-video@example.gov.cn",
    license="Apache-2.0",
    requirements=["numpy==2.4.6", "opencv-python-headless==4.14.0.94", "pillow==13.0.0"],
    runtime={"type": "inprocess"},
)
def people_detect(
    frame: image(mode="BGR", max_bytes=8 << 20),
    min_confidence: Annotated[float, Field(ge=0, le=10)] = 0.5,
    scale: Annotated[float, Field(gt=1, le=1.5)] = 1.05,
) -> People:
    """People standing upright at least about 100 pixels tall; overlapping detections of
    one person are merged (non-maximum suppression)."""
    small, factor = _shrunk(frame)
    found, weights = _hog().detectMultiScale(small, winStride=(4, 4), padding=(8, 8), scale=scale)
    scores = [float(w) for w in np.asarray(weights).reshape(-1)]
    rects = [[int(v) for v in r] for r in found]
    keep = cv2.dnn.NMSBoxes(rects, scores, min_confidence, 0.4) if rects else []
    boxes = []
    annotated = frame.copy()
    for i in sorted(np.asarray(keep).reshape(-1).tolist(), key=lambda i: rects[i][0]):
        x, y, w, h = (round(v * factor) for v in rects[i])
        boxes.append(Box(x=x, y=y, width=w, height=h, confidence=round(scores[i], 3)))
        cv2.rectangle(annotated, (x, y), (x + w, y + h), (0, 0, 255), max(2, round(2 * factor)))
    return People(count=len(boxes), boxes=boxes, annotated=annotated[:, :, ::-1])


@capability(
    name="face-blur",
    title="人脸打码",
    version="1.0.0",
    summary="Blurs every frontal face in a frame (OpenCV's Haar cascade), so footage can be "
    "shared without identifying anyone",
    kind="model",
    domain="governance",
    tags=["vision", "camera", "privacy", "image"],
    classification="internal",
    owner="Public Security Bureau",
    contact="ai-video@example.gov.cn",
    license="Apache-2.0",
    requirements=["numpy==2.4.6", "opencv-python-headless==4.14.0.94", "pillow==13.0.0"],
    runtime={"type": "inprocess"},
)
def face_blur(
    frame: image(mode="BGR", max_bytes=8 << 20),
    min_size: Annotated[int, Field(ge=12, le=512, description="smallest face, pixels")] = 24,
) -> Faces:
    """Faces seen from the front; each is blurred past recognition (a box a little larger
    than the face)."""
    small, factor = _shrunk(frame)
    gray = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY))
    least = max(12, round(min_size / factor))
    found = _faces().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5,
                                      minSize=(least, least))  # fmt: skip
    blurred = frame.copy()
    boxes = []
    for x, y, w, h in sorted(tuple(round(v * factor) for v in r) for r in found):
        boxes.append(Box(x=x, y=y, width=w, height=h, confidence=1.0))
        pad = w // 6
        top, left = max(0, y - pad), max(0, x - pad)
        region = blurred[top : y + h + pad, left : x + w + pad]
        size = max(3, (w // 3) | 1)
        blurred[top : y + h + pad, left : x + w + pad] = cv2.GaussianBlur(region, (size, size), 0)
    return Faces(count=len(boxes), boxes=boxes, blurred=blurred[:, :, ::-1])
