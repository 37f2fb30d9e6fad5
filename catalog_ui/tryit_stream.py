""" "Try it" for a capability that streams (``x-stream``): the form posts here, and the
page (static/app.js) shows each item as it arrives, rendered by the item schema, with a
button that stops the stream (the call's work stops with it, at the origin too).

``POST /c/{namespace}/{name}/try-stream`` answers server-sent events whose ``data`` is
``{"html": ...}``: ``item`` (one rendered item), then ``end`` (the summary line) or
``error`` (the problem, as the one-answer form shows it). A call refused before it
starts (a bad input, a refusal) is answered as the one-answer form answers it: the
result fragment, as HTML.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from markupsafe import Markup, escape
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from yunnao.plugins.errors import ValidationFailed, YunnaoError
from yunnao.registry.identity.middleware import identity_of
from yunnao.runtimes.adapters import sse
from yunnao.runtimes.gateway import streams

from . import forms, i18n, outputs, problems_i18n
from .pages import _check_origin, _render
from .tryit import _form, _problem


def _refused(request: Request, exc: YunnaoError, sent: dict[str, Any]) -> Response:
    _ = i18n.translator(i18n.language(request))
    return _render(
        request,
        "_result.html",
        ok=False,
        code=exc.status,
        body=json.dumps(_problem(exc), ensure_ascii=False, indent=2),
        detail=exc.detail,
        field_errors=problems_i18n.localize(
            list(exc.errors), _, schema=sent.get("schema"), data=sent.get("data")
        ),
        invalid=isinstance(exc, ValidationFailed),
        ms=0,
        request_id=request.state.request_id,
    )


async def try_stream(request: Request) -> Response:
    namespace, name = request.path_params["namespace"], request.path_params["name"]
    invoker = request.app.state.invoker
    sent: dict[str, Any] = {}

    def parse(call: Any) -> Any:
        sent["schema"] = dict(call.target.input_schema)
        sent["items"] = dict(call.target.output_schema)
        sent["data"] = forms.parse(form, forms.fields(sent["schema"]))
        return sent["data"]

    try:
        _check_origin(request)
        form = await _form(request)
        opened = await streams.open_stream(
            invoker.gateway, identity_of(request), namespace, name, parse,
            timeout=invoker.default_timeout, request_id=request.state.request_id,
            client=request.client.host if request.client else None,
        )  # fmt: skip
    except YunnaoError as exc:
        return _refused(request, exc, sent)
    if opened is None:
        return _refused(request, ValidationFailed(f"{namespace}/{name} does not stream"), sent)
    _, events = opened
    _ = i18n.translator(i18n.language(request))
    schema = sent["items"]
    item_schema = {**(schema.get("items") or {}), "$defs": schema.get("$defs", {})}

    async def body() -> AsyncIterator[bytes]:
        try:
            async for kind, data in events:
                if kind == "item":
                    html = outputs.render(data, item_schema, _)
                    yield sse.event("item", {"html": str(html)})
                elif kind == "end":
                    line = _("Done: {n} items in {ms} ms", n=data["items"], ms=data["duration_ms"])
                    yield sse.event("end", {"html": str(escape(line))})
                else:  # the problem's own words, escaped: they may come from another node
                    html = Markup('<p class="detail" data-status="{}">{} {}{}{}</p>').format(
                        data.get("status", 500),
                        _("Error"),
                        data.get("status", 500),
                        _("："),
                        data.get("detail", ""),
                    )
                    yield sse.event("error", {"html": str(html)})
        finally:
            await events.aclose()

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(body(), media_type=sse.MEDIA_TYPE, headers=headers)


def routes() -> list[BaseRoute]:
    return [Route("/c/{namespace}/{name}/try-stream", try_stream, methods=["POST"])]


ACTIONS: dict[Any, str] = {try_stream: "uiTryItStream"}
