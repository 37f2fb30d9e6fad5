"""RFC 9457 problem details: the one place where errors become HTTP responses."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from yunnao.plugins.errors import YunnaoError

PROBLEM_BASE = "https://yunnao.dev/problems/"
MEDIA_TYPE = "application/problem+json"

log = logging.getLogger("yunnao.http")


class ProblemResponse(JSONResponse):
    media_type = MEDIA_TYPE


def problem(
    status: int,
    slug: str,
    title: str,
    detail: str,
    *,
    instance: str | None = None,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    if errors:
        body["errors"] = errors
    body.update(extra)
    return ProblemResponse(body, status_code=status, headers=headers)


_HEADERS_BY_STATUS = {401: {"WWW-Authenticate": 'Bearer realm="yunnao"'}}


def problem_of(exc: YunnaoError, instance: str | None = None) -> dict[str, Any]:
    """The problem document of ``exc`` as data (for stored jobs and callbacks)."""
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + exc.slug,
        "title": exc.title,
        "status": exc.status,
        "detail": exc.detail,
    }
    if instance:
        body["instance"] = instance
    if exc.errors:
        body["errors"] = [e.as_dict() for e in exc.errors]
    body.update(exc.extra)
    return body


def headers_of(exc: YunnaoError) -> dict[str, str] | None:
    headers = dict(_HEADERS_BY_STATUS.get(exc.status, {}))
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return headers or None


async def yunnao_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, YunnaoError)
    return problem(
        exc.status,
        exc.slug,
        exc.title,
        exc.detail,
        instance=request.url.path,
        errors=[e.as_dict() for e in exc.errors],
        headers=headers_of(exc),
        **_request_id(request),
        **exc.extra,
    )


def _request_id(request: Request) -> dict[str, str]:
    rid = getattr(request.state, "request_id", None)
    return {"request_id": rid} if rid else {}


_HTTP_SLUGS = {404: ("not-found", "Not found"), 405: ("method-not-allowed", "Method not allowed")}


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (no such route, wrong method) as problems too."""
    assert isinstance(exc, HTTPException)
    slug, title = _HTTP_SLUGS.get(exc.status_code, ("http-error", "HTTP error"))
    detail = {
        404: f"no resource at {request.url.path}",
        405: f"{request.method} is not allowed on {request.url.path}",
    }.get(exc.status_code, str(exc.detail))
    return problem(
        exc.status_code, slug, title, detail, instance=request.url.path, headers=exc.headers
    )


async def unexpected_error(request: Request, exc: Exception) -> Response:
    """Anything unplanned: logged with an id the caller can quote; no traceback leaks."""
    error_id = uuid.uuid4().hex[:16]
    log.exception("unhandled error %s on %s %s", error_id, request.method, request.url.path)
    return problem(
        500,
        "internal-error",
        "Internal error",
        f"the node failed to handle this request; quote error id {error_id} to its operator",
        instance=request.url.path,
        error_id=error_id,
        **_request_id(request),
    )


EXCEPTION_HANDLERS = {
    YunnaoError: yunnao_error,
    HTTPException: http_error,
    Exception: unexpected_error,
}
