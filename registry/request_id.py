"""Request ids: every response carries ``X-Request-Id``, the caller's own when it sent
a sane one, else a fresh one, so a call can be traced through logs, usage records and
problem documents (which repeat it as ``request_id``)."""

from __future__ import annotations

import random
import re

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "x-request-id"
_SANE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        offered = next(
            (v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), ""
        )
        # 96 random bits from the process's PRNG: unique enough to trace, and free of the
        # system call uuid4 makes on every request.
        rid = offered if _SANE.match(offered) else f"{random.getrandbits(96):024x}"
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["X-Request-Id"] = rid
            await send(message)

        await self.app(scope, receive, send_with_id)
