"""Image and file types of the SDK: their schemas, what a capability receives, what a
bad file is refused with (naming the field), and image outputs."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image as Pillow
from pydantic import BaseModel

from yunnao.plugins import File, Image, capability, file, image
from yunnao.plugins.errors import ValidationFailed
from yunnao.plugins.media import ImageSpec, MediaError, media_fields


def _encoded(picture: Pillow.Image, fmt: str = "PNG") -> str:
    out = io.BytesIO()
    picture.save(out, format=fmt)
    return base64.b64encode(out.getvalue()).decode()


RED_LEFT = Pillow.fromarray(
    np.concatenate([np.full((4, 3, 3), (255, 0, 0), np.uint8), np.zeros((4, 5, 3), np.uint8)], 1)
)


class Boxes(BaseModel):
    count: int
    marked: Image


@capability(name="probe", title="probe")
def probe(frame: Image, gray: image(mode="L", formats=("png",)) = None, raw: File = b"") -> Boxes:
    return Boxes(count=int(frame.shape[1]), marked=frame)


def test_the_schema_says_what_is_accepted() -> None:
    fields = media_fields(probe.input_schema)
    assert fields["frame"] == {
        "kind": "image", "formats": ["jpeg", "png"], "max_bytes": 10 << 20,
        "max_pixels": 40_000_000, "mode": "RGB", "output": "image/png",
    }  # fmt: skip
    assert fields["gray"]["formats"] == ["png"] and fields["raw"]["kind"] == "file"
    frame = probe.input_schema["properties"]["frame"]
    assert (frame["type"], frame["contentEncoding"]) == ("string", "base64")
    assert probe.input_schema["properties"]["gray"]["contentMediaType"] == "image/png"
    assert media_fields(probe.output_schema)["marked"]["kind"] == "image"


def test_the_capability_receives_a_decoded_array_in_its_mode() -> None:
    seen = {}

    @capability(name="modes", title="modes")
    def modes(
        rgb: Image, bgr: image(mode="BGR"), gray: image(mode="L"), blob: file(max_bytes=10)
    ) -> int:
        seen.update(rgb=rgb, bgr=bgr, gray=gray, blob=blob)
        return 0

    png = _encoded(RED_LEFT)
    modes.run({"rgb": png, "bgr": f"data:image/png;base64,{png}", "gray": png,
               "blob": base64.b64encode(b"0123456789").decode()})  # fmt: skip
    assert seen["rgb"].shape == (4, 8, 3) and seen["rgb"][0, 0].tolist() == [255, 0, 0]
    assert seen["bgr"][0, 0].tolist() == [0, 0, 255]
    assert seen["gray"].shape == (4, 8) and seen["gray"][0, 0] == 76  # ITU-R 601 luma of red
    assert seen["blob"] == b"0123456789"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (base64.b64encode(b"not a picture").decode(), "not a readable JPEG or PNG image"),
        ("%%%", "not base64"),
        (_encoded(RED_LEFT, "JPEG")[:61], "not base64"),  # cut mid-quad
        (base64.b64encode(base64.b64decode(_encoded(RED_LEFT, "JPEG"))[:200]).decode(), "image"),
        (_encoded(RED_LEFT, "BMP"), "not a readable JPEG or PNG image"),  # a format not accepted
    ],
)
def test_a_bad_file_is_refused_naming_the_field(value: str, message: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        probe.run({"frame": value})
    assert caught.value.errors[0].field == "input.frame"
    assert message in caught.value.errors[0].message


def test_limits_are_checked_before_decoding() -> None:
    big = _encoded(Pillow.new("RGB", (300, 300)))
    with pytest.raises(MediaError) as caught:
        ImageSpec(max_bytes=100).check(base64.b64decode(big))
    assert caught.value.too_large and "more than the" in str(caught.value)
    with pytest.raises(MediaError) as caught:
        ImageSpec(max_pixels=1000).check(base64.b64decode(big))
    assert caught.value.too_large and "300 × 300 pixels" in str(caught.value)


def test_image_outputs_are_base64_pictures() -> None:
    out = probe.run({"frame": _encoded(RED_LEFT)})
    assert out["count"] == 8
    back = Pillow.open(io.BytesIO(base64.b64decode(out["marked"])))
    assert back.format == "PNG" and back.size == (8, 4)
    assert np.asarray(back)[0, 0].tolist() == [255, 0, 0]

    @capability(name="pillow-out", title="p")
    def pillow_out(n: int) -> image(output_format="jpeg"):
        return Pillow.new("RGB", (n, n), (0, 128, 0))

    jpeg = Pillow.open(io.BytesIO(base64.b64decode(pillow_out.run({"n": 5}))))
    assert jpeg.format == "JPEG" and jpeg.size == (5, 5)
