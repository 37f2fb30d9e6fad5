"""Authentication middleware: turns the ``Authorization`` header into an Identity.

No header means anonymous (routes decide what anonymous callers may do). A header
that is present but wrong is refused at once with 401, never downgraded to anonymous.

The web pages carry the same bearer token in a session cookie instead. It counts only
for the pages, never for the API (``/v1``, ``/v2``, ``/metrics``), so another site cannot
make a signed-in browser call the API; a cookie that no longer verifies (expired) makes
the visitor anonymous, and the page offers to sign in again.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from yunnao.plugins.errors import Unauthorized, YunnaoError

from .access import ANONYMOUS, Identity
from .problems import yunnao_error

Verifier = Callable[[str], Identity]
SESSION_COOKIE = "yunnao_session"
_API_PREFIXES = ("/v1/", "/v2/", "/metrics", "/openapi.json")


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
        if header is None:
            # Pages only: API calls never parse cookies (and never act on them).
            if not scope["path"].startswith(_API_PREFIXES):
                cookie = request.cookies.get(SESSION_COOKIE)
                if cookie:
                    try:
                        identity = self.verify(cookie)
                    except YunnaoError:
                        identity = ANONYMOUS
        else:
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
