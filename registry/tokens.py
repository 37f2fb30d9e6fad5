"""Node keys and node-signed bearer tokens.

Each node holds an Ed25519 private key (created on first start, mode 0600). A token is
a JWT signed with it (``alg=EdDSA``): ``iss`` is the node id, ``sub`` the holder,
``role`` one of :data:`~yunnao.registry.access.ROLES`, ``ns`` the namespace scopes and
``dept`` (optional) the holder's department, for capabilities' access rules.
The same key will sign cascaded entries.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from yunnao.plugins.errors import Unauthorized

from .access import ROLES, Identity

ALGORITHM = "EdDSA"
LEEWAY_SECONDS = 30


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


def verify(public_key: Ed25519PublicKey, node_id: str, token: str) -> Identity:
    """The identity a token carries, or :class:`Unauthorized` saying why it is refused."""
    try:
        claims = jwt.decode(
            token,
            public_key,
            algorithms=[ALGORITHM],
            audience=node_id,
            issuer=node_id,
            leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "iat", "sub", "iss", "aud"]},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("bearer token has expired") from None
    except jwt.InvalidAudienceError:
        raise Unauthorized(f"bearer token was not issued for node {node_id!r}") from None
    except jwt.InvalidIssuerError:
        raise Unauthorized(f"bearer token was not issued by node {node_id!r}") from None
    except jwt.InvalidTokenError as exc:
        raise Unauthorized(f"bearer token rejected: {exc}") from None
    role, scopes = claims.get("role"), claims.get("ns", [])
    if role not in ROLES or not isinstance(scopes, list):
        raise Unauthorized("bearer token carries no valid role or namespace scopes")
    dept = claims.get("dept")
    return Identity(
        subject=str(claims["sub"]),
        role=role,
        scopes=tuple(map(str, scopes)),
        issuer=node_id,
        node=node_id,
        department=dept if isinstance(dept, str) else None,
    )
