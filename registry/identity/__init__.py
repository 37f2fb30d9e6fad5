"""Identity: every credential a caller of this node may present, and the middleware
that turns it into an :class:`~yunnao.registry.access.Identity`.

The kinds of credential, and who issues each:

- **Node token** (:mod:`.tokens`): an EdDSA JWT signed with this node's own Ed25519
  key (``iss`` and ``aud`` = this node's id), for people and scripts; issued by the
  node's operator (``yunnao token create``). The same module loads or creates the key.
- **Web page session** (:mod:`.tokens`): a JWT of the same key for the audience
  ``<node id>#ui``, in the pages' cookie only, never accepted by the API; issued by this
  node's sign-in pages (single sign-on, or the loopback-only dev sign-in).
- **API key** (:mod:`.apikeys`): ``yk_<id>_<secret>`` for machine callers, stored as a
  hash; issued by this node's administrators (``POST /v1/keys``, ``yunnao key create``).
- **Identity provider token** (:mod:`.oidc`): a JWT of the configured OpenID Connect
  provider, verified against its published keys; issued by that provider.
- **Linked node's assertion** (:mod:`.assertions`): a short-lived JWT a parent or child
  node signs with its own key, for reading or pushing the cascade feed or for one
  forwarded call (carrying the caller); issued by that node
  (:class:`~.assertions.AssertionIssuer` issues this node's own). It yields a
  :class:`~.forwarded.Forwarded` identity, and each invoke assertion is good for one
  request (:mod:`.replay` keeps the one-time ids).

The order :class:`~.credentials.Credentials` (the one dispatcher) tries a bearer
token in: API key (by its ``yk_`` prefix) → the identity provider (by the token's
``iss``) → this node's own tokens (``iss`` absent or this node) → a linked node's
assertion (``iss`` a linked node, verified with the key registered for it); any other
issuer is refused with 401. A session cookie is only ever a web page session.

The middleware (:mod:`.middleware`): :class:`~.middleware.AuthMiddleware` calls the
dispatcher once per request and sets the identity that routes read with
:func:`~.middleware.identity_of`; :class:`~.middleware.AssertionUse` then holds an
assertion to its purpose, its route and one use.

This package imports only from ``yunnao.registry`` and ``yunnao.plugins``; linked nodes
(the cascade's peer table) reach the dispatcher through the
:class:`~.credentials.LinkedNodes` protocol.
"""
