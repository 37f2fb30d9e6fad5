"""Request parsing shared by the HTTP routes: bounded JSON bodies, validated models and
query strings, and the JSON responses that carry ETags.

Every JSON document a caller sends is read by :func:`parse_json`: bad JSON, nesting
deeper than :data:`MAX_JSON_DEPTH` (checked before parsing, so the parser never
recurses that deep) and integers longer than Python converts (4300 digits) are all a
400 problem, never a 500."""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any, TypeVar

import numpy as np
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

# Arrays and objects inside one another: far more than any capability's input, schema
# or feed item needs, far less than what makes Python's parser (or anything that walks
# the result recursively) run out of stack.
MAX_JSON_DEPTH = 100
_STRINGS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = np.zeros(256, dtype=np.int64)
_STEP[[ord("["), ord("{")]], _STEP[[ord("]"), ord("}")]] = 1, -1


def json_depth(raw: bytes) -> int:
    """How deeply arrays and objects nest in the JSON text ``raw`` (brackets inside
    strings do not count). Cheap: C-speed scans, in numpy over the brackets alone."""
    opened = raw.count(b"[") + raw.count(b"{")
    if opened <= 1:
        return opened
    brackets = _STRINGS.sub(b"", raw).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    return int(np.cumsum(_STEP[np.frombuffer(brackets, dtype=np.uint8)]).max())


def parse_json(
    raw: bytes | str, *, what: str = "request body", max_depth: int = MAX_JSON_DEPTH
) -> Any:
    """``raw`` parsed as JSON, or :class:`BadRequest` (400) saying why not: not JSON,
    nested deeper than ``max_depth``, or holding a number Python will not convert."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    # Nesting never exceeds the brackets opened: a body with few of them (every call's
    # envelope) needs no scan.
    opened = data.count(b"[") + data.count(b"{")
    depth = json_depth(data) if opened > max_depth else opened
    if depth > max_depth:
        raise BadRequest(
            f"{what} nests arrays and objects {depth} deep; at most {max_depth} are accepted",
            extra={"max_depth": max_depth},
        )
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"{what} is not valid JSON: {exc}") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of over 4300 digits
        raise BadRequest(f"{what} holds a value that cannot be read: {exc}") from None


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


async def read_json(request: Request, max_bytes: int, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """The JSON body, parsed: 415, 413 or 400 naming what was wrong."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise UnsupportedMediaType(
            f"send the body as application/json (got {ctype or 'no content type'})"
        )
    raw = await read_body(request, max_bytes)
    return parse_json(raw, max_depth=max_depth)


async def read_model(
    request: Request, model: type[M], max_bytes: int, *, max_depth: int = MAX_JSON_DEPTH
) -> M:
    """Parse the JSON body into ``model``: 415, 413, 400 or 422 naming what was wrong."""
    return validate_model(model, await read_json(request, max_bytes, max_depth=max_depth))


def validate_model(model: type[M], data: Any) -> M:
    """``data`` as ``model``, or 422 naming each field that is wrong."""
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


def is_loopback(host: str | None) -> bool:
    """Is ``host`` (a listen address or a client address) this machine's loopback:
    127.0.0.0/8, ::1 (also IPv4-mapped) or ``localhost``."""
    if not host:
        return False
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback
