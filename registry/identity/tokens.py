"""Node keys and node-signed bearer tokens.

Each node holds an Ed25519 private key (created on first start, mode 0600). A token is
a JWT signed with it (``alg=EdDSA``): ``iss`` is the node id, ``sub`` the holder,
``role`` one of :data:`~yunnao.registry.access.ROLES`, ``ns`` the namespace scopes and
``dept`` (optional) the holder's department, for capabilities' access rules.
The same key will sign cascaded entries.

API tokens name the node itself as their audience (``aud`` = node id). The web pages'
session cookie holds a token for another audience, ``<node id>#ui`` (also marked
``use: "ui"``): the API refuses it (401) and the pages refuse API tokens as cookies, so a
session cookie that leaks (or is set by the dev sign-in) never writes through the API.
A session keeps the identity it was made for, the identity provider's included
(``idp``: who vouched for the subject, ``home``: the subject's node).
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from yunnao.plugins.errors import Unauthorized

from ..access import ROLES, Identity

ALGORITHM = "EdDSA"
LEEWAY_SECONDS = 30
UI_USE = "ui"


def ui_audience(node_id: str) -> str:
    """The audience of the web pages' session tokens (never accepted by the API)."""
    return f"{node_id}#{UI_USE}"


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """Read the node key at ``path``, creating it (0600) when it does not exist yet."""
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} does not hold an Ed25519 private key")
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return key


def public_key_text(key: Ed25519PrivateKey) -> str:
    """The public half as the hex of its 32 raw bytes, for display and for peers."""
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        .hex()
    )


def issue(
    key: Ed25519PrivateKey,
    *,
    node_id: str,
    subject: str,
    role: str,
    scopes: list[str],
    ttl: timedelta,
    department: str | None = None,
) -> str:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; one of: {', '.join(ROLES)}")
    now = datetime.now(UTC)
    claims = {
        "iss": node_id,
        "aud": node_id,
        "sub": subject,
        "role": role,
        "ns": scopes,
        "iat": now,
        "exp": now + ttl,
        "jti": uuid.uuid4().hex,
    }
    if department is not None:
        claims["dept"] = department
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def issue_session(
    key: Ed25519PrivateKey, *, node_id: str, identity: Identity, ttl: timedelta
) -> str:
    """A session token for the web pages, carrying ``identity``: its audience is
    ``<node id>#ui``, which the API never accepts."""
    if identity.subject is None or identity.role not in ROLES:
        raise ValueError("a session is made for a signed-in identity with a role")
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "iss": node_id,
        "aud": ui_audience(node_id),
        "use": UI_USE,
        "sub": identity.subject,
        "role": identity.role,
        "ns": list(identity.scopes),
        "iat": now,
        "exp": now + ttl,
        "jti": uuid.uuid4().hex,
        "idp": identity.issuer or node_id,
        "home": identity.node,
    }
    if identity.department is not None:
        claims["dept"] = identity.department
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def _decode(
    public_key: Ed25519PublicKey, node_id: str, token: str, audience: str
) -> dict[str, Any]:
    what = "session" if audience != node_id else "bearer token"
    try:
        return jwt.decode(
            token,
            public_key,
            algorithms=[ALGORITHM],
            audience=audience,
            issuer=node_id,
            leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "iat", "sub", "iss", "aud"]},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized(f"{what} has expired") from None
    except jwt.InvalidAudienceError:
        if audience == node_id and _audience_of(token) == ui_audience(node_id):
            raise Unauthorized(
                "bearer token is a web page session, which the API does not accept: use a "
                "node token (yunnao token create) or an API key"
            ) from None
        if audience != node_id:
            raise Unauthorized(f"{what} is not a web page session of node {node_id!r}") from None
        raise Unauthorized(f"{what} was not issued for node {node_id!r}") from None
    except jwt.InvalidIssuerError:
        raise Unauthorized(f"{what} was not issued by node {node_id!r}") from None
    except jwt.InvalidTokenError as exc:
        raise Unauthorized(f"{what} rejected: {exc}") from None


def _audience_of(token: str) -> Any:
    try:
        return jwt.decode(token, options={"verify_signature": False}).get("aud")
    except jwt.InvalidTokenError:
        return None


def _identity(claims: dict[str, Any], issuer: str, node: str | None) -> Identity:
    role, scopes = claims.get("role"), claims.get("ns", [])
    if role not in ROLES or not isinstance(scopes, list):
        raise Unauthorized("bearer token carries no valid role or namespace scopes")
    dept = claims.get("dept")
    return Identity(
        subject=str(claims["sub"]),
        role=role,
        scopes=tuple(map(str, scopes)),
        issuer=issuer,
        node=node,
        department=dept if isinstance(dept, str) else None,
    )


def verify(public_key: Ed25519PublicKey, node_id: str, token: str) -> Identity:
    """The identity an API token carries, or :class:`Unauthorized` saying why it is
    refused (a web page session token is refused)."""
    claims = _decode(public_key, node_id, token, node_id)
    if claims.get("use") == UI_USE:  # belt and braces: the audience already differs
        raise Unauthorized("bearer token is a web page session, which the API does not accept")
    return _identity(claims, node_id, node_id)


def verify_session(public_key: Ed25519PublicKey, node_id: str, token: str) -> Identity:
    """The identity a web page session token carries; API tokens (audience: the node),
    API keys and identity provider tokens are refused."""
    claims = _decode(public_key, node_id, token, ui_audience(node_id))
    if claims.get("use") != UI_USE:
        raise Unauthorized("not a web page session token")
    idp, home = claims.get("idp"), claims.get("home")
    return _identity(
        claims,
        idp if isinstance(idp, str) and idp else node_id,
        home if isinstance(home, str) and home else None,
    )
