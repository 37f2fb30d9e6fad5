"""The one dispatcher of API credentials: which verifier a bearer token goes to.

:class:`Credentials` is what the authentication middleware calls with the token of an
``Authorization: Bearer`` header (:meth:`Credentials.verify`) and with the web pages'
session cookie (:meth:`Credentials.verify_session`). A bearer token is tried, in this
order, as:

1. an API key (it reads ``yk_...``): :mod:`.apikeys`;
2. a token of the configured OpenID Connect identity provider (its unverified ``iss``
   is the provider's issuer): :mod:`.oidc`;
3. a token this node signed itself (``iss`` absent or this node's id): :mod:`.tokens`;
4. an assertion of a linked node (``iss`` a node this node links to as parent or
   child): :mod:`.assertions`, verified with that node's registered key and held to
   the side of the tree the link lets it speak for.

Anything else is refused (401). Linked nodes live in the cascade's peer table, which
this package never imports: they are looked up through :class:`LinkedNodes`, which the
composition root fills with the cascade's ``PeerKeys``.
"""

from __future__ import annotations

from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from yunnao.plugins.errors import Unauthorized

from ..access import Identity
from . import assertions, tokens
from .apikeys import ApiKeys, is_api_key
from .oidc import OidcVerifier


class LinkedNodes(Protocol):
    """The nodes this node is linked to (``yunnao.cascade.peers.PeerKeys``)."""

    def key(self, node: str) -> Ed25519PublicKey | None:
        """The public key registered for linked node ``node`` (None: not linked)."""
        ...

    def relation(self, node: str) -> str | None:
        """``child`` or ``parent``: what ``node`` is to this node (None: not linked)."""
        ...


class Credentials:
    """Verifies every kind of credential a caller of this node may present."""

    def __init__(
        self,
        *,
        node_id: str,
        public_key: Ed25519PublicKey,
        api_keys: ApiKeys,
        linked: LinkedNodes,
        sso: OidcVerifier | None = None,
    ) -> None:
        self.node_id = node_id
        self.public_key = public_key  # this node's own key's public half
        self.api_keys = api_keys
        self.linked = linked
        self.sso = sso  # the identity provider's verifier; None: no single sign-on

    def verify(self, token: str) -> Identity:
        """The identity an API credential carries (see the module's docstring for the
        order), or :class:`Unauthorized` (503 when the identity provider is down)."""
        if is_api_key(token):
            return self.api_keys.verify(token)
        issuer = assertions.issuer_of(token)
        if self.sso is not None and issuer == self.sso.config.issuer:
            return self.sso.verify(token)
        if issuer is None or issuer == self.node_id:
            return tokens.verify(self.public_key, self.node_id, token)
        peer_key = self.linked.key(issuer)
        if peer_key is None:
            raise Unauthorized(
                f"token issued by {issuer!r}, which this node does not accept (neither this "
                "node, its identity provider, nor a linked node)"
            )
        return assertions.verify(
            peer_key,
            peer=issuer,
            node_id=self.node_id,
            token=token,
            relation=self.linked.relation(issuer),
        )

    def verify_session(self, token: str) -> Identity:
        """The identity a web page session cookie carries (only this node signs them)."""
        return tokens.verify_session(self.public_key, self.node_id, token)
