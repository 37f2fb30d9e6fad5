"""Images and files through the gateway (:mod:`yunnao.plugins.media`).

A call to a capability with image or file fields may come as:

- ``application/json``: the file as a base64 string (or ``data:`` URI) in its field;
- ``multipart/form-data``: a part per field (files as file parts; other fields as
  text, read as JSON unless the field is a string), or an ``input`` part holding the
  JSON object;
- a raw ``image/jpeg``, ``image/png``, ``image/webp``, ``video/mp4``,
  ``video/x-msvideo``, ``video/quicktime`` or ``application/octet-stream`` body: the file
  of the only media field (``?field=`` names one), other fields in the query string.

Whatever the form, the input becomes the JSON object (files base64-encoded) that every
runtime, and a forwarded call to another node, receives. Before any runtime runs,
:func:`check` opens each file with the limits the capability declared: one too large is
413, one that is not a readable image of an accepted format 422, both naming the field.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.types import Message

from yunnao.plugins.errors import FieldError, PayloadTooLarge, ValidationFailed
from yunnao.plugins.media import MediaError, encoded, media_fields, payload, spec_of
from yunnao.registry.http import read_body

RAW_TYPES = frozenset({
    "image/jpeg", "image/png", "image/webp", "application/octet-stream",
    "video/mp4", "video/x-msvideo", "video/quicktime",
})  # fmt: skip
MULTIPART = "multipart/form-data"
RESERVED = frozenset({"timeout", "field"})  # query parameters that are not input fields
MAX_PARTS = 64


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def is_upload(request: Request) -> bool:
    """Whether the body is a form or a raw file rather than a JSON envelope."""
    ctype = media_type(request)
    return ctype == MULTIPART or ctype in RAW_TYPES


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{field}: {message}", errors=[FieldError(field, message)])


def _text_value(schema: dict[str, Any], name: str, text: str) -> Any:
    """A form or query value for field ``name``: as it is for a string field, else
    read as JSON (a number, a boolean, an array...)."""
    prop = (schema.get("properties") or {}).get(name) or {}
    if prop.get("type") == "string":
        return text
    try:
        return json.loads(text)
    except ValueError:
        if prop.get("type") is None:
            return text
        raise _invalid(f"input.{name}", f"not JSON ({prop.get('type')} expected)") from None


async def read_upload(request: Request, schema: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    """The input object of a form or raw-file call to a capability with input
    ``schema``; files of more than ``max_bytes`` in all are refused (413)."""
    raw = await read_body(request, max_bytes)
    media = media_fields(schema)
    if media_type(request) == MULTIPART:
        return await _from_form(request, raw, schema, max_bytes)
    field = request.query_params.get("field")
    if field is None:
        if len(media) != 1:
            names = ", ".join(sorted(media)) or "none"
            raise _invalid("field", f"name the file's field with ?field= (its files: {names})")
        field = next(iter(media))
    elif field not in media:
        raise _invalid("field", f"{field!r} is not an image or file field of this capability")
    inputs = {k: _text_value(schema, k, v) for k, v in request.query_params.items()
              if k not in RESERVED}  # fmt: skip
    inputs[field] = encoded(raw)
    return inputs


async def _from_form(
    request: Request, raw: bytes, schema: dict[str, Any], max_bytes: int
) -> dict[str, Any]:
    async def replay() -> Message:
        return {"type": "http.request", "body": raw, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(
            max_files=MAX_PARTS, max_fields=MAX_PARTS, max_part_size=max_bytes
        )
    except Exception as exc:  # the multipart parser's own errors, on a malformed body
        raise _invalid("body", f"not a readable multipart/form-data body: {exc}") from None
    inputs: dict[str, Any] = {}
    try:
        for name, value in form.multi_items():
            if name == "timeout":
                continue
            if name == "input":
                text = await value.read() if isinstance(value, UploadFile) else value
                try:
                    given = json.loads(text)
                except ValueError:
                    raise _invalid("input", "the input part must be a JSON object") from None
                if not isinstance(given, dict):
                    raise _invalid("input", "the input part must be a JSON object")
                inputs.update(given)
            elif isinstance(value, UploadFile):
                inputs[name] = encoded(await value.read())
            else:
                inputs[name] = _text_value(schema, name, value)
    finally:
        await form.close()
    return inputs


def form_timeout(request: Request) -> float | None:
    """``?timeout=`` of a form or raw-file call."""
    text = request.query_params.get("timeout")
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise _invalid("timeout", "a number of seconds") from None
    if not value > 0:
        raise _invalid("timeout", "more than 0")
    return value


def check(media: dict[str, dict[str, Any]], inputs: Any) -> None:
    """Open every file of ``inputs`` with its field's declared limits (``media``, as
    :func:`~yunnao.plugins.media.media_fields` gives them); raise 413 or 422 naming
    the first bad field."""
    if not isinstance(inputs, dict):
        return
    for name, described in media.items():
        value = inputs.get(name)
        if value is None:
            continue
        field = f"input.{name}"
        try:
            spec_of(described).check(payload(value))
        except MediaError as exc:
            if exc.too_large:
                raise PayloadTooLarge(
                    f"{field}: {exc}", errors=[FieldError(field, str(exc))]
                ) from None
            raise _invalid(field, str(exc)) from None
