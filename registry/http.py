"""Request parsing shared by the HTTP routes: bounded JSON bodies, validated models and
query strings, and the JSON responses that carry ETags."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from yunnao.plugins.errors import (
    BadRequest,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationFailed,
    field_errors,
)

M = TypeVar("M", bound=BaseModel)


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refusing (413) more than ``max_bytes`` without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(
            f"request body of {declared} bytes exceeds the {max_bytes}-byte limit"
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"request body exceeds the {max_bytes}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_model(request: Request, model: type[M], max_bytes: int) -> M:
    """Parse the JSON body into ``model``: 415, 413, 400 or 422 naming what was wrong."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise UnsupportedMediaType(
            f"send the body as application/json (got {ctype or 'no content type'})"
        )
    raw = await read_body(request, max_bytes)
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = field_errors(exc)
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ValidationFailed(f"{first.field}: {first.message}{more}", errors=errors) from None


def parse_query(model: type[M], data: dict[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = field_errors(exc)
        raise BadRequest(
            "invalid query parameter " + "; ".join(f"{e.field}: {e.message}" for e in errors),
            errors=errors,
        ) from None


def json_response(
    model: BaseModel, *, status: int = 200, etag: str | None = None, **headers: str
) -> Response:
    hdrs = dict(headers)
    if etag:
        hdrs["ETag"] = etag
    return JSONResponse(model.model_dump(mode="json"), status_code=status, headers=hdrs)


def not_modified(request: Request, etag: str) -> Response | None:
    """A 304 when the caller's ``If-None-Match`` already names ``etag``."""
    offered = request.headers.get("if-none-match")
    if offered and (offered.strip() == "*" or etag in {t.strip() for t in offered.split(",")}):
        return Response(status_code=304, headers={"ETag": etag})
    return None
