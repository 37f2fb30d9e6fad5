"""What the cascade's routes work with: the :class:`Cascade` object a node keeps in
``app.state.cascade``, and the checks they share on a request (this node's operators, the
linked node that sent it)."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from yunnao.plugins.errors import Forbidden, Unauthorized
from yunnao.registry.access import Action, require
from yunnao.registry.identity.middleware import identity_of

from .apply import Applier
from .feed import Feed
from .peers import PeerStore
from .sync import Replicator


@dataclass
class Cascade:
    """What the cascade routes work with (``app.state.cascade``)."""

    node_id: str
    title: str
    public_key: str
    feed: Feed
    peers: PeerStore
    applier: Applier
    replicator: Replicator
    max_batch_bytes: int = 64 << 20


def cascade_of(request: Request) -> Cascade:
    return request.app.state.cascade


def check_operator(request: Request, *, admin: bool = False) -> None:
    """A local token of this node's operators (admin for changes)."""
    action = Action.MANAGE_NODE if admin else Action.READ_NODE
    require(identity_of(request), action, cascade_of(request).node_id)


def linked_node(request: Request, relation: str | None = None) -> str:
    """The linked node that sent the request (optionally: of ``relation``)."""
    identity = identity_of(request)
    if identity.peer is None:
        raise Unauthorized("this is for linked nodes: send an assertion signed by your node key")
    if relation is not None:
        peer = cascade_of(request).peers.get(identity.peer)
        if peer is None or peer.relation != relation:
            raise Forbidden(f"node {identity.peer} is not linked here as a {relation}")
    return identity.peer
