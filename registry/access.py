"""Who may see and change what: the access baseline.

- Anyone, signed in or not, may discover ``public`` capabilities.
- A signed-in caller also sees ``internal`` ones, and ``restricted`` ones inside
  the namespaces their token is scoped to.
- Drafts and retired versions-only capabilities are seen only by those who may write
  their namespace.
- Writes need an ``admin`` or ``author`` token scoped to the namespace (a scope
  covers itself and every namespace under it).

The same rules exist twice, as SQL conditions for search and as a Python predicate
for single reads; they sit side by side here so they change together. The richer
policy (roles per node, per-capability ACLs, grants) comes with the identity issue.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlmodel import col

from yunnao.plugins.errors import Forbidden, Unauthorized

from .names import in_scope
from .tables import CapabilityRow

ROLES: tuple[str, ...] = ("admin", "operator", "author", "consumer", "auditor")
WRITER_ROLES = frozenset({"admin", "author"})
LISTED_STATUSES = ("published", "deprecated")


@dataclass(frozen=True)
class Identity:
    """The caller of one request. ``subject`` None means anonymous."""

    subject: str | None = None
    role: str | None = None
    scopes: tuple[str, ...] = field(default_factory=tuple)
    issuer: str | None = None

    @property
    def authenticated(self) -> bool:
        return self.subject is not None

    def writes(self, namespace: str) -> bool:
        return self.role in WRITER_ROLES and any(in_scope(namespace, s) for s in self.scopes)


ANONYMOUS = Identity()


def _scope_condition(scopes: tuple[str, ...]) -> sa.ColumnElement[bool]:
    ns = col(CapabilityRow.namespace)
    return sa.or_(sa.false(), *[sa.or_(ns == s, ns.startswith(s + ".")) for s in scopes])


def visibility(identity: Identity) -> list[sa.ColumnElement[bool]]:
    """SQL conditions limiting capability rows to those ``identity`` may discover."""
    cls = col(CapabilityRow.classification)
    listed = col(CapabilityRow.status).in_(LISTED_STATUSES)
    if not identity.authenticated:
        return [cls == "public", listed]
    owned = _scope_condition(identity.scopes) if identity.role in WRITER_ROLES else sa.false()
    scoped = _scope_condition(identity.scopes)
    return [
        sa.or_(cls.in_(("public", "internal")), sa.and_(cls == "restricted", scoped)),
        sa.or_(listed, owned),
    ]


def may_discover(identity: Identity, row: CapabilityRow) -> bool:
    """The Python twin of :func:`visibility`, for reads of one capability."""
    if row.deleted_at is not None:
        return False
    listed = row.status in LISTED_STATUSES
    if not identity.authenticated:
        return row.classification == "public" and listed
    scoped = any(in_scope(row.namespace, s) for s in identity.scopes)
    if row.classification == "restricted" and not scoped:
        return False
    return listed or identity.writes(row.namespace)


def require_writer(identity: Identity, namespace: str) -> None:
    """Raise unless ``identity`` may write ``namespace``."""
    if not identity.authenticated:
        raise Unauthorized("this operation needs a bearer token (see `yunnao token create`)")
    if identity.role not in WRITER_ROLES:
        raise Forbidden(
            f"role {identity.role!r} may not change the registry; "
            f"writes need one of: {', '.join(sorted(WRITER_ROLES))}"
        )
    if not identity.writes(namespace):
        scopes = ", ".join(identity.scopes) or "none"
        raise Forbidden(f"token is scoped to {scopes}; it may not write namespace {namespace!r}")
