"""What a "try it" post shows: the call through the gateway as the visitor, and its
outcome for the page: the output rendered by the output schema (and as raw JSON), or
the problem with its field errors in the page's language (and the problem document as
the API answers it)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.types import Message

from yunnao.plugins.errors import ValidationFailed, YunnaoError
from yunnao.registry.http import read_body
from yunnao.registry.identity.middleware import identity_of

from . import forms, i18n, outputs, problems_i18n


async def _form(request: Request) -> dict[str, Any]:
    """The posted form: text as text, an uploaded file as its bytes. The body is read
    first, within the node's upload limit, so a huge upload is refused (413) unread."""
    invoker = request.app.state.invoker
    raw = await read_body(request, invoker.max_upload_bytes)

    async def replay() -> Message:
        return {"type": "http.request", "body": raw, "more_body": False}

    form = await Request(request.scope, replay).form(max_files=16, max_fields=64)
    try:
        out: dict[str, Any] = {}
        for key, value in form.items():
            out[key] = await value.read() if isinstance(value, UploadFile) else str(value)
        return out
    finally:
        await form.close()


def _problem(exc: YunnaoError) -> dict[str, Any]:
    problem: dict[str, Any] = {
        "type": f"https://yunnao.dev/problems/{exc.slug}",
        "title": exc.title,
        "status": exc.status,
        "detail": exc.detail,
    }
    if exc.errors:
        problem["errors"] = [e.as_dict() for e in exc.errors]
    problem.update({k: v for k, v in exc.extra.items() if isinstance(v, str | int)})
    return problem


async def outcome(request: Request, check: Callable[[Request], None]) -> dict[str, Any]:
    """Invoke ``namespace/name`` with the posted form (once ``check`` lets the request
    through); the context ``_result.html`` renders (``ok``, ``code``, ``body`` the raw
    JSON, and ``output_html`` or ``field_errors``)."""
    namespace, name = request.path_params["namespace"], request.path_params["name"]
    _ = i18n.translator(i18n.language(request))
    gateway = request.app.state.invoker.gateway
    started = time.perf_counter()
    sent: dict[str, Any] = {}

    def parse(call: Any) -> Any:
        sent["schema"] = dict(call.target.input_schema)
        sent["output_schema"] = dict(call.target.output_schema)
        sent["data"] = forms.parse(form, forms.fields(sent["schema"]))
        return sent["data"]

    result: dict[str, Any]
    try:
        check(request)
        form = await _form(request)
        answer = await gateway.call(
            identity_of(request),
            namespace,
            name,
            parse,
            timeout=request.app.state.invoker.default_timeout,
            client=request.client.host if request.client else None,
            request_id=request.state.request_id,
        )
        result = {
            "ok": True,
            "code": 200,
            "body": json.dumps(answer.output, ensure_ascii=False, indent=2),
            "version": answer.call.target.version,
            "output_html": outputs.render(answer.output, dict(answer.call.target.output_schema), _),
        }
    except YunnaoError as exc:
        result = {
            "ok": False,
            "code": exc.status,
            "body": json.dumps(_problem(exc), ensure_ascii=False, indent=2),
            "detail": exc.detail,
            "field_errors": problems_i18n.localize(
                list(exc.errors), _, schema=sent.get("schema"), data=sent.get("data")
            ),
            "invalid": isinstance(exc, ValidationFailed),
        }
    result["ms"] = round((time.perf_counter() - started) * 1000, 1)
    result["request_id"] = request.state.request_id
    return result
