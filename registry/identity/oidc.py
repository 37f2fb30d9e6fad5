"""Single sign-on: bearer tokens from an OpenID Connect identity provider.

A node configured with an issuer accepts that provider's signed JWTs: the signing key
is looked up by ``kid`` in the provider's JWKS (found through OIDC discovery unless
given), cached, and fetched again when a token names a key the cache lacks (the
provider rotated its keys). Only asymmetric algorithms are accepted, never ``none``
or a shared-secret HMAC. Claims map to an :class:`~yunnao.registry.access.Identity`:
the subject, a role, and the caller's node and department as its scope.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from yunnao.plugins.errors import Unauthorized, Unavailable

from ..access import ROLES, Identity
from ..names import is_node_id

ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA")
# The key type (JWK ``kty``, and ``crv`` for elliptic curves) each algorithm needs.
KEY_TYPES = {
    **dict.fromkeys(("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"), ("RSA", None)),
    "ES256": ("EC", "P-256"),
    "ES384": ("EC", "P-384"),
    "EdDSA": ("OKP", None),
}


@dataclass(frozen=True)
class OidcConfig:
    issuer: str
    audience: str
    jwks_url: str | None = None  # default: the provider's discovery document's jwks_uri
    leeway: float = 60.0  # seconds of clock skew tolerated on exp, iat and nbf
    role_claim: str = "role"  # a role name, or a list of them (the first known one counts)
    node_claim: str = "node"
    department_claim: str = "department"
    default_role: str = "consumer"
    cache_seconds: float = 300.0  # keys are read again after this long
    refetch_seconds: float = 10.0  # at most this often for a key id not in the cache


class OidcVerifier:
    """Verifies the provider's tokens; thread-safe (the key cache is shared).

    Keys are fetched again when the cache is older than ``cache_seconds``, or when a
    token names a key the cache lacks, but then at most every ``refetch_seconds``, so
    tokens with made-up key ids cannot make the node hammer the provider."""

    def __init__(self, config: OidcConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._jwks_url: str | None = config.jwks_url
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched = -1e9
        self._failure: str | None = None  # why the last fetch failed
        self._document: dict[str, Any] | None = None

    def _key(self, kid: str | None) -> jwt.PyJWK:
        with self._lock:
            age = time.monotonic() - self._fetched
            stale = age > self.config.cache_seconds
            if stale or (kid not in self._keys and age > self.config.refetch_seconds):
                self._fetch()
            if kid is None and len(self._keys) == 1:
                return next(iter(self._keys.values()))
            key = self._keys.get(kid or "")
            failure = self._failure
        if key is None and not self._keys and failure:
            raise Unavailable(f"identity provider keys unreachable: {failure}")
        if key is None:
            raise Unauthorized(f"bearer token signed with key {kid!r}, which the provider lacks")
        return key

    def _fetch(self) -> None:
        # A failed attempt counts as a fetch too, so a provider that is down is asked
        # again only after ``refetch_seconds``, not on every request.
        self._fetched = time.monotonic()
        try:
            url = self._jwks_url = self._jwks_url or self._discover()
            document = httpx.get(url, timeout=5).raise_for_status().json()
            keys = jwt.PyJWKSet.from_dict(document).keys
        except (httpx.HTTPError, ValueError, jwt.PyJWKSetError, Unavailable) as exc:
            self._failure = str(exc.detail if isinstance(exc, Unavailable) else exc)
            if not self._keys:  # nothing to go on: try again after refetch_seconds
                self._fetched -= self.config.cache_seconds - self.config.refetch_seconds
            return  # keep the keys we have
        self._keys = {k.key_id: k for k in keys if k.key_id}
        self._failure = None

    def discovery(self) -> dict[str, Any]:
        """The provider's discovery document (read once, then kept): its endpoints."""
        if self._document is not None:
            return self._document
        where = self.config.issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            document = httpx.get(where, timeout=5).raise_for_status().json()
        except (httpx.HTTPError, ValueError) as exc:
            raise Unavailable(f"identity provider unreachable ({where}): {exc}") from None
        if not isinstance(document, dict) or document.get("issuer") != self.config.issuer:
            raise Unavailable(f"{where} does not describe issuer {self.config.issuer}")
        self._document = document
        return document

    def _discover(self) -> str:
        document = self.discovery()
        if "jwks_uri" not in document:
            raise Unavailable(f"identity provider {self.config.issuer} names no jwks_uri")
        return str(document["jwks_uri"])

    def verify(self, token: str) -> Identity:
        """The identity a provider token carries, or :class:`Unauthorized` saying why it
        is refused (:class:`Unavailable` when the provider's keys cannot be read)."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(f"bearer token is not a JWT: {exc}") from None
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in ALGORITHMS:
            raise Unauthorized(f"bearer token algorithm {alg!r} is not accepted")
        if kid is not None and not isinstance(kid, str):
            raise Unauthorized("bearer token names its key with something other than a string")
        key = self._key(kid)
        self._check_fits(alg, key)
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self.config.audience,
                issuer=self.config.issuer,
                leeway=self.config.leeway,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("bearer token has expired") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized(
                f"bearer token is not for audience {self.config.audience!r}"
            ) from None
        except jwt.InvalidIssuerError:
            raise Unauthorized(f"bearer token was not issued by {self.config.issuer}") from None
        except jwt.InvalidSignatureError:
            raise Unauthorized("bearer token signature does not verify") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(f"bearer token rejected: {exc}") from None
        except (jwt.PyJWTError, TypeError, ValueError) as exc:  # a key the algorithm cannot use
            raise Unauthorized(
                f"bearer token's algorithm {alg} cannot be verified with its key: {exc}"
            ) from None
        return self._identity(claims)

    @staticmethod
    def _check_fits(alg: str, key: jwt.PyJWK) -> None:
        """The token's algorithm must be one its key is for (an ES256 token naming an RSA
        key is refused here, before the signature check could trip over it)."""
        kty, crv = KEY_TYPES[alg]
        data = getattr(key, "_jwk_data", {}) or {}
        if key.key_type != kty or (crv is not None and data.get("crv") != crv):
            raise Unauthorized(
                f"bearer token algorithm {alg} does not fit its key {key.key_id!r} "
                f"(a {key.key_type} key)"
            )
        declared = data.get("alg")
        if isinstance(declared, str) and declared != alg:
            raise Unauthorized(
                f"bearer token algorithm {alg} is not its key's algorithm {declared}"
            )

    def _identity(self, claims: dict[str, Any]) -> Identity:
        cfg = self.config
        offered = claims.get(cfg.role_claim)
        roles = offered if isinstance(offered, list) else [offered]
        role = next((r for r in roles if r in ROLES), cfg.default_role)
        node = claims.get(cfg.node_claim)
        department = claims.get(cfg.department_claim)
        scopes: tuple[str, ...] = ()
        home = dept = None
        if isinstance(node, str) and is_node_id(node):
            home = node
            scope = f"{node}.{department}" if isinstance(department, str) and department else node
            scopes = (scope,) if is_node_id(scope) else (node,)
            dept = scope if scope != node and is_node_id(scope) else None
        return Identity(
            subject=str(claims["sub"]),
            role=role,
            scopes=scopes,
            issuer=cfg.issuer,
            node=home,
            department=dept,
        )
