"""Node-to-node credentials: short-lived JWTs a node signs with its own key.

A node reading a linked peer's feed, pushing to it, or forwarding a call to it sends
``Authorization: Bearer <assertion>``: ``iss`` is the sending node, ``aud`` the
receiving one, ``purpose`` ``cascade`` or ``invoke``, ``jti`` a fresh id. An invoke
assertion carries the caller (``sub``, ``role``, ``node``, ``dept``; ``sub`` absent for
an anonymous caller), so the origin node's own access rules decide, and binds the call:
``route`` (the one request path it is for), ``visited`` (the nodes the call went
through, the sender last) and ``deadline`` (epoch seconds when the original caller
stops waiting). The receiving node verifies it with the key it registered for that
peer; scopes never cross nodes, so a forwarded caller may invoke and discover, never
write.

A linked node speaks only for its own side of the link:

- a **child** vouches for callers whose node (and department) lies in the child's
  subtree: ``sd.qd.shinan`` may forward its own callers and those of its districts,
  never ``sd.qd.laoshan``'s or the city's;
- the **parent** forwards calls from the rest of the tree (its own callers, its other
  children's, and those its own parent forwarded to it), so it vouches for any caller
  *outside* this node's subtree, never for one of this node's own or its
  descendants' callers (those reach this node directly, or through its children).

An assertion naming a caller outside that is refused with 403. The forwarded caller's
``issuer`` and ``node`` are the ones so checked: what access rules and grants match.
Each invoke assertion is good for one request on its route (see :func:`check_use`, which
the middleware :class:`~yunnao.registry.identity.middleware.AssertionUse` applies); a
cascade assertion only for the cascade routes.
"""

from __future__ import annotations

import dataclasses
import math
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from yunnao.plugins.errors import Forbidden, Unauthorized

from ..access import ROLES, Identity
from ..names import in_scope, is_namespace, is_node_id
from .forwarded import Forwarded
from .replay import OneTimeIds
from .tokens import ALGORITHM, LEEWAY_SECONDS

TTL = timedelta(minutes=5)
PURPOSES = ("cascade", "invoke")
CASCADE_ROUTES = "/v1/cascade/"
INVOKE_ROUTES = "/v1/invoke/"
# Access requests for a cascaded capability go to its origin the same way: a POST of the
# request, or a GET of the requester's own requests (.../access-requests/mine).
ACCESS_REQUEST_ROUTE = re.compile(r"^/v1/capabilities/[^/]+/[^/]+/access-requests(/mine)?$")
MAX_VISITED = 64  # deeper than any node tree; a longer list is not a real call


def issue(
    key: Ed25519PrivateKey,
    *,
    node_id: str,
    audience: str,
    purpose: str,
    caller: Identity | None = None,
    route: str | None = None,
    visited: Sequence[str] = (),
    deadline: float | None = None,
) -> str:
    """An assertion from ``node_id`` to ``audience``. For ``invoke``: the caller, the
    request path it is for, the nodes visited before this one and the deadline."""
    now = datetime.now(UTC)
    claims: dict[str, object] = {
        "iss": node_id,
        "aud": audience,
        "purpose": purpose,
        "iat": now,
        "exp": now + TTL,
        "jti": uuid.uuid4().hex,
    }
    if purpose == "invoke":
        claims["route"] = route
        claims["visited"] = [*visited, node_id]
        if deadline is not None:
            claims["deadline"] = deadline
    if caller is not None and caller.authenticated:
        claims["sub"] = caller.subject
        claims["role"] = caller.role
        claims["origin_iss"] = caller.issuer
        claims["node"] = caller.node or node_id  # a caller of no node is this node's
        if caller.department is not None:
            claims["dept"] = caller.department
    return jwt.encode(claims, key, algorithm=ALGORITHM)


@dataclass(frozen=True)
class AssertionIssuer:
    """This node's assertions to its linked nodes, signed with its key: one for each
    call it forwards (:meth:`invoke`, the remote runtime's), one for each cascade
    request (:meth:`cascade`, the replicator's)."""

    key: Ed25519PrivateKey
    node_id: str

    def invoke(self, audience: str, caller: Identity | None, **bound: Any) -> str:
        """An invoke assertion for ``caller``; ``bound``: ``route``, ``visited``,
        ``deadline`` (see :func:`issue`)."""
        return issue(
            self.key,
            node_id=self.node_id,
            audience=audience,
            purpose="invoke",
            caller=caller,
            **bound,
        )

    def cascade(self, audience: str) -> str:
        """A cascade assertion (reading or pushing the feed)."""
        return issue(self.key, node_id=self.node_id, audience=audience, purpose="cascade")


def issuer_of(token: str) -> str | None:
    """The unverified ``iss`` of a token, to choose the key that verifies it."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return None
    iss = claims.get("iss")
    return iss if isinstance(iss, str) else None


def vouches_for(peer: str, relation: str | None, node_id: str, node: str) -> bool:
    """May linked node ``peer`` (this node's ``relation``) speak for a caller of ``node``
    (a node id, or a department)? See the module's docstring."""
    if relation == "child":
        return in_scope(node, peer)
    if relation == "parent":
        return not in_scope(node, node_id)
    return False


def verify(
    public_key: Ed25519PublicKey,
    *,
    peer: str,
    node_id: str,
    token: str,
    relation: str | None = None,
) -> Forwarded:
    """The identity an assertion from linked node ``peer`` (this node's ``relation``:
    ``child`` or ``parent``) carries: 401 for an assertion that does not verify, 403
    for one naming a caller ``peer`` may not vouch for."""
    try:
        claims = jwt.decode(
            token,
            public_key,
            algorithms=[ALGORITHM],
            audience=node_id,
            issuer=peer,
            leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "iat", "iss", "aud", "jti"]},
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
    jti = claims["jti"]
    if not isinstance(jti, str) or not jti:
        raise Unauthorized(f"assertion from node {peer} has no valid jti")
    # Kept until the assertion can no longer verify (its expiry plus the clock leeway).
    expires = float(claims["exp"]) + LEEWAY_SECONDS
    if purpose == "cascade":
        return Forwarded(peer=peer, issuer=peer, purpose="cascade", jti=jti, expires=expires)
    route, visited, deadline = _binding(claims, peer)
    call = Forwarded(
        peer=peer,
        issuer=peer,
        route=route,
        jti=jti,
        expires=expires,
        visited=visited,
        deadline=deadline,
    )
    if "sub" not in claims:
        return call  # an anonymous caller
    node = claims.get("node", peer)
    if not isinstance(node, str) or not is_node_id(node):
        raise Unauthorized(f"assertion from node {peer} names no valid node for its caller")
    if not vouches_for(peer, relation, node_id, node):
        raise Forbidden(_outside(peer, relation, node_id, f"callers of node {node}"))
    dept = claims.get("dept")
    if dept is not None:
        if not isinstance(dept, str) or not is_namespace(dept):
            raise Unauthorized(f"assertion from node {peer} names no valid department")
        if not vouches_for(peer, relation, node_id, dept):
            raise Forbidden(_outside(peer, relation, node_id, f"department {dept}"))
    origin = claims.get("origin_iss")
    # The caller's issuer as far as this node can tell: a node the peer may speak for
    # (an identity provider's or another node's name is only the peer's word).
    trusted = isinstance(origin, str) and is_node_id(origin)
    issuer = origin if trusted and vouches_for(peer, relation, node_id, origin) else node
    role = claims.get("role")
    return dataclasses.replace(
        call,
        subject=str(claims["sub"]),
        role=role if role in ROLES else None,
        issuer=str(issuer),
        node=node,
        department=dept,
    )


def _binding(claims: dict[str, object], peer: str) -> tuple[str, tuple[str, ...], float | None]:
    route, visited, deadline = (
        claims.get("route"),
        claims.get("visited", []),
        claims.get("deadline"),
    )
    if not isinstance(route, str) or not (
        route.startswith(INVOKE_ROUTES) or ACCESS_REQUEST_ROUTE.match(route)
    ):
        raise Unauthorized(f"assertion from node {peer} names no route to invoke")
    if (
        not isinstance(visited, list)
        or len(visited) > MAX_VISITED
        or not all(isinstance(v, str) and is_node_id(v) for v in visited)
    ):
        raise Unauthorized(f"assertion from node {peer} has no valid list of visited nodes")
    if not visited or visited[-1] != peer:
        visited = [*visited, peer]  # the sender is always a node the call went through
    if deadline is not None and (
        isinstance(deadline, bool)
        or not isinstance(deadline, int | float)
        or not math.isfinite(deadline)
    ):
        raise Unauthorized(f"assertion from node {peer} has no valid deadline")
    return route, tuple(visited), None if deadline is None else float(deadline)


def _outside(peer: str, relation: str | None, node_id: str, what: str) -> str:
    if relation == "child":
        side = f"its own subtree ({peer} and below)"
    elif relation == "parent":
        side = f"the rest of the tree, outside {node_id}'s own subtree"
    else:
        side = "nobody: it is not linked as a parent or child"
    return f"node {peer} may not vouch for {what}: a linked node speaks only for {side}"


def check_use(identity: Identity, method: str, path: str, seen: OneTimeIds) -> None:
    """Refuse (401) an assertion used for what it was not made for: an invoke assertion
    on any request but ``POST`` of its own route (``GET`` for a requester's own access
    requests, ``.../access-requests/mine``), or a second time; a cascade assertion
    outside the cascade routes."""
    if not isinstance(identity, Forwarded):
        return
    peer = identity.peer
    if identity.purpose == "cascade":
        if not path.startswith(CASCADE_ROUTES):
            raise Unauthorized(
                f"assertion from node {peer} is for the cascade routes only, not {method} {path}"
            )
        return
    route = identity.route or ""
    allowed = "GET" if route.endswith("/access-requests/mine") else "POST"
    if method != allowed or path != route:
        raise Unauthorized(
            f"assertion from node {peer} was made for {allowed} {route}, not {method} {path}"
        )
    assert identity.jti is not None and peer is not None
    seen.use(identity.jti, identity.expires, peer=peer)
