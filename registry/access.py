"""Who may see and change what: the access baseline.

- Anyone, signed in or not, may discover ``public`` capabilities.
- A signed-in caller also sees ``internal`` ones, and ``restricted`` ones inside
  the namespaces their token is scoped to.
- Drafts and retired versions-only capabilities are seen only by those who may write
  their namespace.
- Writes need an ``admin`` or ``author`` token scoped to the namespace (a scope
  covers itself and every namespace under it).

The rules live once, in :func:`discoverable`: single reads call it for their row, and
search evaluates it once per combination of (classification, status, in scope,
writable) to mask the whole catalog at once (:mod:`~yunnao.registry.facets`). The
richer policy (roles per node, per-capability ACLs, grants) comes with the identity issue.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from yunnao.plugins.errors import Forbidden, Unauthorized

from .names import in_scope
from .tables import CapabilityRow

ROLES: tuple[str, ...] = ("admin", "operator", "author", "consumer", "auditor")
WRITER_ROLES = frozenset({"admin", "author"})
# Who may rebind a version to another runtime: its authors, and the node's operators.
OPERATOR_ROLES = frozenset({"admin", "operator", "author"})
LISTED_STATUSES = ("published", "deprecated")


@dataclass(frozen=True)
class Identity:
    """The caller of one request. ``subject`` None means anonymous."""

    subject: str | None = None
    role: str | None = None
    scopes: tuple[str, ...] = field(default_factory=tuple)
    issuer: str | None = None
    # The linked node that sent the request (a peer reading the feed, or forwarding a
    # call for ``subject``); None for requests made at this node.
    peer: str | None = None
    # An API key's limit: the capabilities (namespace/name, or namespace/*) it may
    # invoke; None: no limit beyond the role's.
    capabilities: tuple[str, ...] | None = None

    def may_invoke(self, namespace: str, name: str) -> bool:
        if self.capabilities is None:
            return True
        return f"{namespace}/{name}" in self.capabilities or f"{namespace}/*" in self.capabilities

    @property
    def authenticated(self) -> bool:
        return self.subject is not None

    def writes(self, namespace: str) -> bool:
        return self.role in WRITER_ROLES and any(in_scope(namespace, s) for s in self.scopes)


ANONYMOUS = Identity()


def discoverable(
    identity: Identity, *, classification: str, status: str, scoped: bool, writable: bool
) -> bool:
    """May ``identity`` discover a live capability with this classification and status?
    ``scoped``: its namespace is inside one of the identity's scopes; ``writable``: the
    identity may write that namespace (:meth:`Identity.writes`)."""
    listed = status in LISTED_STATUSES
    if not identity.authenticated:
        return classification == "public" and listed
    if classification == "restricted" and not scoped:
        return False
    return listed or writable


def in_scopes(identity: Identity, namespace: str) -> bool:
    return any(in_scope(namespace, s) for s in identity.scopes)


def may_discover(identity: Identity, row: CapabilityRow) -> bool:
    """:func:`discoverable` for one capability row (tombstones are never discoverable)."""
    if row.deleted_at is not None:
        return False
    return discoverable(
        identity,
        classification=row.classification,
        status=row.status,
        scoped=in_scopes(identity, row.namespace),
        writable=identity.writes(row.namespace),
    )


def require_writer(identity: Identity, namespace: str | None) -> None:
    """Raise unless ``identity`` may write ``namespace`` (with None: some namespace)."""
    if not identity.authenticated:
        raise Unauthorized("this operation needs a bearer token (see `yunnao token create`)")
    if identity.role not in WRITER_ROLES:
        raise Forbidden(
            f"role {identity.role!r} may not change the registry; "
            f"writes need one of: {', '.join(sorted(WRITER_ROLES))}"
        )
    if namespace is not None and not identity.writes(namespace):
        scopes = ", ".join(identity.scopes) or "none"
        raise Forbidden(f"token is scoped to {scopes}; it may not write namespace {namespace!r}")


def require_node_role(identity: Identity, node_id: str, roles: frozenset[str]) -> None:
    """Raise unless ``identity`` holds a token of this node itself (not a linked node's
    assertion) with one of ``roles``, scoped to the whole node."""
    wanted = " or ".join(sorted(roles))
    if not identity.authenticated or identity.peer is not None:
        raise Unauthorized(f"this needs a token of this node with role {wanted}")
    if identity.role not in roles or not in_scopes(identity, node_id):
        raise Forbidden(f"this needs role {wanted} scoped to node {node_id}")


def require_operator(identity: Identity, namespace: str) -> None:
    """Raise unless ``identity`` may operate (e.g. rebind runtimes in) ``namespace``."""
    if not identity.authenticated:
        raise Unauthorized("this operation needs a bearer token (see `yunnao token create`)")
    if identity.role not in OPERATOR_ROLES or not in_scopes(identity, namespace):
        raise Forbidden(
            f"role {identity.role!r} scoped to {', '.join(identity.scopes) or 'nothing'} may "
            f"not operate namespace {namespace!r}; needs one of "
            f"{', '.join(sorted(OPERATOR_ROLES))} scoped to it"
        )
