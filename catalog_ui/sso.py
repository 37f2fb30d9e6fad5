"""Sign-in through the configured identity provider: the OpenID Connect authorization
code flow with PKCE (S256).

``/signin/sso`` sends the browser to the provider's ``authorization_endpoint`` with a
fresh ``state`` and code challenge, kept (with the verifier, base64url JSON) in a
short-lived cookie of this flow only;
``/signin/callback`` checks the state, redeems the code at the ``token_endpoint`` with
the verifier, checks the access token as the node checks the provider's bearer tokens
(issuer, audience, signature, expiry), and makes a web page session for the identity it
carries: a node-signed token for the pages' audience (``<node>#ui``), never the provider's
token itself, so the cookie's value is worth nothing as an API bearer token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import anyio.to_thread
import httpx
import jwt
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from yunnao.plugins.errors import Forbidden, NotFound, Unauthorized, Unavailable
from yunnao.registry.identity import tokens
from yunnao.registry.identity.middleware import SESSION_COOKIE

FLOW_COOKIE = "yunnao_sso_flow"
FLOW_SECONDS = 600
MAX_SESSION_SECONDS = 8 * 3600


def _provider(request: Request) -> Any:
    sso = request.app.state.sso
    if sso is None:
        raise NotFound("single sign-on is not configured on this node (YUNNAO_OIDC_ISSUER)")
    return sso


def _client_id(request: Request) -> str:
    settings = request.app.state.settings
    return settings.oidc_client_id or settings.oidc_audience


def _callback_url(request: Request) -> str:
    return str(request.url_for("sso_callback"))


async def start(request: Request, next_path: str) -> Response:
    document = await anyio.to_thread.run_sync(_provider(request).discovery)
    endpoint = document.get("authorization_endpoint")
    if not isinstance(endpoint, str):
        raise Unavailable("the identity provider names no authorization_endpoint")
    state, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    query = {
        "response_type": "code",
        "client_id": _client_id(request),
        "redirect_uri": _callback_url(request),
        "scope": "openid profile",
        "state": state,
        "code_challenge": challenge.rstrip(b"=").decode(),
        "code_challenge_method": "S256",
    }
    response = RedirectResponse(f"{endpoint}?{urlencode(query)}", status_code=303)
    flow = json.dumps({"state": state, "verifier": verifier, "next": next_path})
    response.set_cookie(
        FLOW_COOKIE,
        base64.urlsafe_b64encode(flow.encode()).decode(),
        max_age=FLOW_SECONDS,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/signin",
    )
    return response


async def callback(request: Request) -> Response:
    sso = _provider(request)
    try:
        flow = json.loads(base64.urlsafe_b64decode(request.cookies.get(FLOW_COOKIE) or "e30="))
    except ValueError:
        flow = {}
    if not isinstance(flow, dict):
        flow = {}
    state = request.query_params.get("state", "")
    if not flow.get("state") or not hmac.compare_digest(state, str(flow["state"])):
        raise Forbidden("this sign-in was not started here, or took too long: sign in again")
    error = request.query_params.get("error")
    if error:
        why = request.query_params.get("error_description", "")
        raise Unauthorized(f"the identity provider refused the sign-in: {error} {why}".strip())
    code = request.query_params.get("code")
    if not code:
        raise Unauthorized("the identity provider sent no authorization code")
    document = await anyio.to_thread.run_sync(sso.discovery)
    endpoint = document.get("token_endpoint")
    if not isinstance(endpoint, str):
        raise Unavailable("the identity provider names no token_endpoint")
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": _callback_url(request),
        "client_id": _client_id(request),
        "code_verifier": str(flow.get("verifier", "")),
    }
    secret = request.app.state.settings.oidc_client_secret
    if secret:
        form["client_secret"] = secret
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.post(endpoint, data=form)
    except httpx.HTTPError as exc:
        raise Unavailable(f"identity provider unreachable: {exc}") from None
    if answer.status_code != 200:
        raise Unauthorized(f"the identity provider did not redeem the code ({answer.status_code})")
    try:
        token = str(answer.json().get("access_token", ""))
    except (ValueError, AttributeError):
        raise Unauthorized("the identity provider's answer holds no access token") from None
    # The node's own check of the provider's bearer tokens: one it would refuse makes no
    # session (and only the provider's own tokens count here).
    identity = await anyio.to_thread.run_sync(sso.verify, token)
    if not identity.authenticated:
        raise Unauthorized("the identity provider's token names nobody")
    expires = jwt.decode(token, options={"verify_signature": False}).get("exp")
    lifetime = MAX_SESSION_SECONDS
    if isinstance(expires, int | float):
        lifetime = max(60, min(lifetime, int(expires - time.time())))
    settings = request.app.state.settings
    session = tokens.issue_session(
        request.app.state.node_key,
        node_id=settings.node_id,
        identity=identity,
        ttl=timedelta(seconds=lifetime),
    )
    next_path = str(flow.get("next") or "/")
    if not next_path.startswith("/") or next_path.startswith("//"):
        next_path = "/"
    # The federation overview is the staff's landing page, rather than the catalog's first.
    response = RedirectResponse("/overview" if next_path == "/" else next_path, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        session,
        max_age=lifetime,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    response.delete_cookie(FLOW_COOKIE, path="/signin")
    return response
