"""Images and files as capability inputs and outputs.

    from yunnao.plugins import File, Image, capability, image

    @capability(name="people-count", title="行人计数")
    def people_count(frame: Image) -> int: ...           # JPEG or PNG, as an RGB array

    @capability(name="plate-crop", title="车牌裁剪")
    def plate_crop(frame: image(max_bytes=2_000_000, mode="BGR")) -> Image: ...

An image parameter receives the decoded picture as a numpy array (``uint8``, height ×
width × 3 for ``RGB`` and ``BGR``, height × width for ``L``); a file parameter receives
the bytes. Callers send them however suits them: a ``multipart/form-data`` upload, a
raw ``image/jpeg`` or ``image/png`` body, a base64 string in JSON (``data:`` URIs too),
or a V2 ``BYTES`` tensor; the gateway refuses a file that is too large (413) or not a
readable image of an accepted format (422), naming the field, before the capability
runs. An image output (a numpy array or a Pillow image) goes back as a base64 PNG (or
JPEG) string whose schema says so, which the try-it page shows as a picture.

Decoding uses Pillow (and numpy), imported only when a capability uses these types;
pictures larger than ``max_pixels`` are refused before they are decoded.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

FORMATS = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "bmp": "image/bmp"}
PIL_FORMATS = {"JPEG": "jpeg", "PNG": "png", "WEBP": "webp", "BMP": "bmp"}
DEFAULT_MAX_BYTES = 10 << 20
DEFAULT_MAX_PIXELS = 40_000_000  # about 7,300 × 5,500: a large camera frame
Mode = Literal["RGB", "BGR", "L"]


class MediaError(ValueError):
    """A file that is not what the field accepts; ``too_large`` when it is its size."""

    def __init__(self, message: str, *, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


def payload(value: Any) -> bytes:
    """The bytes of an uploaded value: bytes as they are, a base64 string (optionally a
    ``data:`` URI) decoded."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if not isinstance(value, str):
        raise MediaError("expected a file: bytes, or a base64 string")
    text = value
    if text.startswith("data:"):
        head, sep, text = text.partition(",")
        if not sep or not head.endswith(";base64"):
            raise MediaError("a data: URI must be base64 (data:<type>;base64,<data>)")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise MediaError("not base64 (send the file as base64, or upload it)") from None


def _is_pillow(value: Any) -> bool:
    return all(hasattr(value, a) for a in ("mode", "size", "save", "getpixel"))


def _size(n: int) -> str:
    return f"{n / (1 << 20):.1f} MB" if n >= 1 << 20 else f"{n / 1024:.0f} kB"


def encoded(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True)
class ImageSpec:
    """What an image field accepts, and what the capability receives."""

    formats: tuple[str, ...] = ("jpeg", "png")
    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    mode: Mode = "RGB"
    output_format: str = "png"  # how an image output is encoded

    def __post_init__(self) -> None:
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown or not self.formats:
            raise TypeError(f"image formats are some of {', '.join(FORMATS)}, not {unknown}")
        if self.output_format not in ("png", "jpeg"):
            raise TypeError("an image output is encoded as png or jpeg")
        if self.mode not in ("RGB", "BGR", "L"):
            raise TypeError("an image's mode is RGB, BGR or L (grayscale)")

    @property
    def media_types(self) -> list[str]:
        return [FORMATS[f] for f in self.formats]

    def check(self, data: bytes) -> Any:
        """``data`` opened as an image of an accepted format and size (not yet decoded),
        or :class:`MediaError` saying what is wrong."""
        if len(data) > self.max_bytes:
            raise MediaError(
                f"{_size(len(data))}, more than the {_size(self.max_bytes)} this field accepts",
                too_large=True,
            )
        from PIL import Image, UnidentifiedImageError

        try:
            picture = Image.open(io.BytesIO(data), formats=[f.upper() for f in self.formats])
        except UnidentifiedImageError:
            raise MediaError(
                f"not a readable {' or '.join(f.upper() for f in self.formats)} image"
            ) from None
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise MediaError(f"not a readable image: {exc}") from None
        width, height = picture.size
        if width * height > self.max_pixels:
            raise MediaError(
                f"{width} × {height} pixels, more than the {self.max_pixels:,} this field "
                "accepts", too_large=True,
            )  # fmt: skip
        return picture

    def decode(self, value: Any) -> Any:
        try:
            import numpy as np
        except ImportError:  # pragma: no cover - numpy is in every Yunnao install
            raise TypeError("image parameters need numpy installed") from None
        if isinstance(value, np.ndarray) or _is_pillow(value):  # already a picture
            return value
        picture = self.check(payload(value))
        try:
            picture.load()  # the pixels: a truncated or corrupt file fails here
            converted = picture.convert("L" if self.mode == "L" else "RGB")
        except (OSError, ValueError, SyntaxError) as exc:
            raise MediaError(f"a broken {picture.format} image: {exc}") from None
        array = np.asarray(converted, dtype=np.uint8)
        return array[:, :, ::-1].copy() if self.mode == "BGR" else array

    def encode(self, value: Any) -> str:
        """An image output as base64 PNG (or JPEG)."""
        from PIL import Image

        if isinstance(value, str):
            return value  # already encoded
        if not isinstance(value, Image.Image):
            import numpy as np

            array = np.asarray(value)
            if array.dtype != np.uint8:
                array = np.clip(array, 0, 255).astype(np.uint8)
            if array.ndim == 3 and self.mode == "BGR":
                array = array[:, :, ::-1]
            value = Image.fromarray(array)
        out = io.BytesIO()
        if self.output_format == "jpeg":
            value.convert("RGB").save(out, format="JPEG", quality=90)
        else:
            value.save(out, format="PNG")
        return encoded(out.getvalue())

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            self.decode,
            serialization=core_schema.plain_serializer_function_ser_schema(self.encode),
        )

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        media = self.media_types
        return {
            "type": "string",
            "contentEncoding": "base64",
            "contentMediaType": media[0] if len(media) == 1 else "image/*",
            "x-image": {
                "formats": list(self.formats),
                "max_bytes": self.max_bytes,
                "max_pixels": self.max_pixels,
                "mode": self.mode,
                "output": FORMATS[self.output_format],
            },
        }


@dataclass(frozen=True)
class FileSpec:
    """What a file field accepts: media types (by name only: a capability checks its
    contents) and a size. The capability receives the bytes."""

    media_types: tuple[str, ...] = ("application/octet-stream",)
    max_bytes: int = DEFAULT_MAX_BYTES

    def check(self, data: bytes) -> bytes:
        if len(data) > self.max_bytes:
            raise MediaError(
                f"{_size(len(data))}, more than the {_size(self.max_bytes)} this field accepts",
                too_large=True,
            )
        return data

    def decode(self, value: Any) -> bytes:
        return self.check(payload(value))

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            self.decode,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda b: encoded(b) if isinstance(b, bytes | bytearray) else b
            ),
        )

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "type": "string",
            "contentEncoding": "base64",
            "contentMediaType": self.media_types[0] if len(self.media_types) == 1 else "*/*",
            "x-file": {"media_types": list(self.media_types), "max_bytes": self.max_bytes},
        }


def image(
    *,
    formats: tuple[str, ...] = ("jpeg", "png"),
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    mode: Mode = "RGB",
    output_format: str = "png",
) -> Any:
    """An image type with its own limits, e.g. ``frame: image(max_bytes=2_000_000)``."""
    spec = ImageSpec(tuple(formats), max_bytes, max_pixels, mode, output_format)
    return Annotated[Any, spec]


def file(
    *,
    media_types: tuple[str, ...] = ("application/octet-stream",),
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Any:
    """A file type, e.g. ``report: file(media_types=("application/pdf",))``."""
    return Annotated[bytes, FileSpec(tuple(media_types), max_bytes)]


Image = Annotated[Any, ImageSpec()]
File = Annotated[bytes, FileSpec()]


def media_fields(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The top-level image and file fields of an input or output schema: name -> its
    ``x-image`` or ``x-file`` description (with ``kind``)."""
    out: dict[str, dict[str, Any]] = {}
    for name, prop in (schema.get("properties") or {}).items():
        if not isinstance(prop, dict):
            continue
        if isinstance(prop.get("x-image"), dict):
            out[name] = {"kind": "image", **prop["x-image"]}
        elif isinstance(prop.get("x-file"), dict):
            out[name] = {"kind": "file", **prop["x-file"]}
    return out


def spec_of(described: dict[str, Any]) -> ImageSpec | FileSpec:
    """The spec a schema's ``x-image`` or ``x-file`` describes (as :func:`media_fields`
    gives it), to check an upload with the limits the capability declared."""
    if described.get("kind") == "image":
        formats = tuple(f for f in described.get("formats", ()) if f in FORMATS) or ("jpeg",)
        return ImageSpec(
            formats=formats,
            max_bytes=int(described.get("max_bytes", DEFAULT_MAX_BYTES)),
            max_pixels=int(described.get("max_pixels", DEFAULT_MAX_PIXELS)),
        )
    types = tuple(described.get("media_types") or ("application/octet-stream",))
    return FileSpec(types, int(described.get("max_bytes", DEFAULT_MAX_BYTES)))
