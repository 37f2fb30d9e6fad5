"""People in a video clip, streamed frame by frame (视频行人计数): the capability is a
generator, so callers who accept server-sent events get each sampled frame's count as
soon as it is known, through every node the call passes; one who stops listening stops
the work (the generator is closed, the clip released and its temporary file removed).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from typing import Annotated

import cv2
from pydantic import BaseModel, Field

from yunnao.plugins import capability, file
from yunnao.plugins.errors import FieldError, ValidationFailed

from .detect import people_detect

VIDEO_TYPES = ("video/mp4", "video/x-msvideo", "video/quicktime", "application/octet-stream")


class FrameCount(BaseModel):
    frame: int = Field(description="the frame's number in the clip, from 0")
    seconds: float = Field(description="its time in the clip")
    count: int = Field(description="people found in it")


@capability(
    name="video-people",
    title="视频行人计数",
    version="1.0.0",
    summary="Counts the people in every n-th frame of a video clip, streaming each count "
    "as soon as it is known",
    kind="model",
    domain="governance",
    tags=["vision", "video", "people", "stream"],
    classification="public",
    owner="Public Security Bureau",
    contact="ai-video@example.gov.cn",
    license="Apache-2.0",
    requirements=["numpy==2.4.6", "opencv-python-headless==4.14.0.94", "pillow==13.0.0"],
    runtime={"type": "inprocess"},
)
def video_people(
    clip: file(media_types=VIDEO_TYPES, max_bytes=16 << 20),
    every: Annotated[int, Field(ge=1, le=250, description="look at every n-th frame")] = 5,
    min_confidence: Annotated[float, Field(ge=0, le=10)] = 0.5,
) -> Iterator[FrameCount]:
    """Decodes the clip (MP4, AVI, MOV) with OpenCV and runs the HOG people detector on
    every ``every``-th frame."""
    handle, path = tempfile.mkstemp(suffix=".video")
    capture = None
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(clip)
        capture = cv2.VideoCapture(path)
        if not capture.isOpened():
            raise ValidationFailed(
                "input.clip: not a video OpenCV can read",
                errors=[FieldError("input.clip", "not a readable video (MP4, AVI, MOV)")],
            )
        rate = capture.get(cv2.CAP_PROP_FPS) or 25.0
        number = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            if number % every == 0:
                found = people_detect.target(frame, min_confidence=min_confidence)
                yield FrameCount(frame=number, seconds=round(number / rate, 3), count=found.count)
            number += 1
    finally:
        if capture is not None:
            capture.release()
        os.unlink(path)
