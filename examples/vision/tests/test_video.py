"""video-people counts the people in a clip's sampled frames, item by item, and a caller
who stops early stops the decoding (the clip is released, its temporary file gone)."""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path

from yunnao_example_vision.synthetic import clip
from yunnao_example_vision.video import video_people


def test_counts_come_frame_by_frame(tmp_path: Path) -> None:
    data = clip(str(tmp_path / "c.avi"), 20)
    out = video_people.run({"clip": base64.b64encode(data).decode(), "every": 5})
    assert [(i["frame"], i["count"]) for i in out] == [(0, 0), (5, 1), (10, 2), (15, 3)]


def test_stopping_early_releases_the_clip(tmp_path: Path) -> None:
    data = clip(str(tmp_path / "c.avi"), 40)
    before = set(Path(tempfile.gettempdir()).glob("*.video"))
    items = video_people.stream(
        video_people.target, video_people.validate_input({"clip": base64.b64encode(data).decode()})
    )
    assert next(items)["frame"] == 0
    assert set(Path(tempfile.gettempdir()).glob("*.video")) - before  # decoding from its file
    items.close()
    assert set(Path(tempfile.gettempdir()).glob("*.video")) - before == set()
