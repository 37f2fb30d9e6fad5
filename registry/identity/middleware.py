"""The identity middleware: :class:`AuthMiddleware` turns the ``Authorization`` header
(or the web pages' session cookie) into an Identity, and :class:`AssertionUse`, after it,
holds a linked node's assertion to the purpose and route it was made for, once.

No header means anonymous (routes decide what anonymous callers may do). A header
that is present but wrong is refused at once with 401, never downgraded to anonymous.

The web pages carry a session token in a cookie instead. It counts only for the pages,
never for the API (``/v1``, ``/v2``, ``/metrics``), so another site cannot make a
signed-in browser call the API. The two kinds of token are kept apart by audience: the
cookie must hold a web page session (``verify_session``: audience ``<node>#ui``, see
:mod:`~yunnao.registry.identity.tokens`), and ``Authorization`` must hold an API credential
(``verify``, which refuses session tokens with 401), so a session token copied out of a
browser writes nothing through the API, and an API token set as a cookie signs nobody
in. A cookie that does not verify (expired, or not a session) makes the visitor
anonymous, and the page offers to sign in again.

A bearer token that verified is remembered (:class:`VerifiedTokens`): the same token
again within ``CACHE_SECONDS`` and before its ``exp`` is the same identity without
checking its signature again (which costs more than the rest of a call). Only tokens
whose verification depends on nothing but their bytes, a key and the clock are: never
an API key (revocable, and already cached for a few seconds where it is checked), never
a linked node's assertion (each is held to one use by :class:`AssertionUse`), never a
refusal. A key rotated or withdrawn stops a remembered token within ``CACHE_SECONDS``.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable

import anyio.to_thread
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from yunnao.plugins.errors import Unauthorized, YunnaoError

from ..access import ANONYMOUS, Identity
from ..problems import yunnao_error
from .apikeys import is_api_key
from .assertions import check_use
from .forwarded import Forwarded
from .replay import OneTimeIds

Verifier = Callable[[str], Identity]
SESSION_COOKIE = "yunnao_session"
_API_PREFIXES = ("/v1/", "/v2/", "/metrics", "/openapi.json")
CACHE_SECONDS = 60.0
CACHE_SIZE = 4096


class VerifiedTokens:
    """Bearer tokens that verified, with their identity, until their ``exp`` (at most
    ``CACHE_SECONDS``); bounded (emptied when full). Used on the event loop only."""

    def __init__(self, verify: Verifier) -> None:
        self.verify = verify
        self._known: dict[str, tuple[float, Identity]] = {}

    def __call__(self, token: str) -> Identity:
        now = time.time()
        hit = self._known.get(token)
        if hit is not None and hit[0] > now:
            return hit[1]
        identity = self.verify(token)  # raises for a token that does not verify
        if is_api_key(token) or isinstance(identity, Forwarded):
            return identity
        expires = _expiry(token)
        if expires is not None and expires > now:
            if len(self._known) >= CACHE_SIZE:
                self._known.clear()
            self._known[token] = (min(expires, now + CACHE_SECONDS), identity)
        return identity


def _expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT that has just verified (None: none readable)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        exp = claims.get("exp") if isinstance(claims, dict) else None
    except (IndexError, ValueError):
        return None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


class AuthMiddleware:
    def __init__(
        self, app: ASGIApp, verify: Verifier, verify_session: Verifier | None = None
    ) -> None:
        self.app = app
        self.verify = VerifiedTokens(verify)  # API credentials (the Authorization header)
        self.verify_session = verify_session  # web page sessions (the cookie); None: none

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
                if cookie and self.verify_session is not None:
                    try:
                        identity = self.verify_session(cookie)
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


class AssertionUse:
    """Middleware after authentication: :func:`check_use` on every request made with a
    linked node's assertion."""

    def __init__(self, app: ASGIApp, seen: OneTimeIds | None = None) -> None:
        self.app = app
        self.seen = seen or OneTimeIds()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            identity = scope.get("state", {}).get("identity")
            if isinstance(identity, Forwarded):
                try:
                    args = (identity, scope["method"], scope["path"], self.seen)
                    if self.seen.blocking:  # the store's record: off the event loop
                        await anyio.to_thread.run_sync(check_use, *args)
                    else:
                        check_use(*args)
                except YunnaoError as exc:
                    response = await yunnao_error(Request(scope), exc)
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)
