"""Node-to-node credentials: short-lived JWTs a node signs with its own key.

A node reading a linked peer's feed, pushing to it, or forwarding a call to it sends
``Authorization: Bearer <assertion>``: ``iss`` is the sending node, ``aud`` the
receiving one, ``purpose`` ``cascade`` or ``invoke``. An invoke assertion carries the
caller (``sub`` and ``role``; ``sub`` absent for an anonymous caller), so the origin
node's own access rules decide. The receiving node verifies it with the key it
registered for that peer; scopes never cross nodes, so a forwarded caller may invoke
and discover, never write.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from yunnao.plugins.errors import Unauthorized
from yunnao.registry.access import ROLES, Identity
from yunnao.registry.names import is_node_id
from yunnao.registry.tokens import ALGORITHM, LEEWAY_SECONDS

TTL = timedelta(minutes=5)
PURPOSES = ("cascade", "invoke")


def issue(
    key: Ed25519PrivateKey,
    *,
    node_id: str,
    audience: str,
    purpose: str,
    caller: Identity | None = None,
) -> str:
    """An assertion from ``node_id`` to ``audience``."""
    now = datetime.now(UTC)
    claims: dict[str, object] = {
        "iss": node_id,
        "aud": audience,
        "purpose": purpose,
        "iat": now,
        "exp": now + TTL,
        "jti": uuid.uuid4().hex,
    }
    if caller is not None and caller.authenticated:
        claims["sub"] = caller.subject
        claims["role"] = caller.role
        claims["origin_iss"] = caller.issuer
        if caller.node is not None:
            claims["node"] = caller.node
        if caller.department is not None:
            claims["dept"] = caller.department
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def issuer_of(token: str) -> str | None:
    """The unverified ``iss`` of a token, to choose the key that verifies it."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return None
    iss = claims.get("iss")
    return iss if isinstance(iss, str) else None


def verify(public_key: Ed25519PublicKey, *, peer: str, node_id: str, token: str) -> Identity:
    """The identity an assertion from linked node ``peer`` carries."""
    try:
        claims = jwt.decode(
            token,
            public_key,
            algorithms=[ALGORITHM],
            audience=node_id,
            issuer=peer,
            leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "iat", "iss", "aud"]},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized(f"assertion from node {peer} has expired") from None
    except jwt.InvalidAudienceError:
        raise Unauthorized(f"assertion from node {peer} is not for node {node_id}") from None
    except jwt.InvalidTokenError as exc:
        raise Unauthorized(f"assertion from node {peer} rejected: {exc}") from None
    purpose = claims.get("purpose")
    if purpose not in PURPOSES:
        raise Unauthorized(f"assertion from node {peer} names no valid purpose")
    if purpose == "cascade" or "sub" not in claims:
        return Identity(peer=peer, issuer=peer)
    role, node, dept = claims.get("role"), claims.get("node"), claims.get("dept")
    return Identity(
        subject=str(claims["sub"]),
        role=role if role in ROLES else None,
        issuer=str(claims.get("origin_iss") or peer),
        peer=peer,
        # Where the caller belongs, as the forwarding node vouches, for access rules.
        node=node if isinstance(node, str) and is_node_id(node) else None,
        department=dept if isinstance(dept, str) else None,
    )
