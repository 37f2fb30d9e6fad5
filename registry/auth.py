"""Authentication middleware: turns the ``Authorization`` header into an Identity.

No header means anonymous (routes decide what anonymous callers may do). A header
that is present but wrong is refused at once with 401, never downgraded to anonymous.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from yunnao.plugins.errors import Unauthorized, YunnaoError

from .access import ANONYMOUS, Identity
from .problems import yunnao_error

Verifier = Callable[[str], Identity]


class AuthMiddleware:
    def __init__(self, app: ASGIApp, verify: Verifier) -> None:
        self.app = app
        self.verify = verify

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        header = request.headers.get("authorization")
        identity = ANONYMOUS
        if header is not None:
            scheme, _, token = header.partition(" ")
            try:
                if scheme.lower() != "bearer" or not token.strip():
                    raise Unauthorized("Authorization header must be 'Bearer <token>'")
                identity = self.verify(token.strip())
            except YunnaoError as exc:  # 401, or 503 when the identity provider is down
                response = await yunnao_error(request, exc)
                await response(scope, receive, send)
                return
        scope.setdefault("state", {})["identity"] = identity
        await self.app(scope, receive, send)


def identity_of(request: Request) -> Identity:
    return getattr(request.state, "identity", ANONYMOUS)
