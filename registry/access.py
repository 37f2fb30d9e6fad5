"""The policy module: may this identity do this action on this entry?

Every decision about a caller is made here, by :func:`decide` (or :func:`require`, which
raises its refusal): the catalog API, the gateway, the cascade's operator routes, the
audit and key routes and ``/metrics`` ask it, and the web UI is to ask it too. Search
asks :func:`discoverable`, the same rule in a form it can evaluate once per combination
of inputs and then look up for the whole catalog (:mod:`~yunnao.registry.facets`).

An identity holds one **role** scoped to nodes or namespaces (a scope covers itself and
everything under it; ``sd.qd`` covers the node and all its departments), plus the node
and department it belongs to. Roles, least to most:

=========  ==============================================================
consumer   discover and invoke
auditor    discover; read the audit log (never invokes)
reviewer   discover; approve or refuse what child nodes share upward (never
           invokes; see cascade/review.py)
author     consumer, plus publish and change entries of its scopes; title
           its departments
operator   consumer, plus rebind runtimes of its scopes; read node status;
           title the node and its departments
admin      everything in its scopes: grants (access rules), node links,
           API keys, audit log
=========  ==============================================================

Discovery combines the entry's **classification** with its own **access rules**
(:class:`~yunnao.registry.schemas.Access`):

- ``public``: anyone, anonymous callers included;
- ``internal``: signed-in callers;
- ``restricted``: only the **members** of the department that owns it and the subjects
  it names in ``grants``;

then, for public and internal entries, the ``discover`` rule (nodes, departments,
roles) must match. Invoking needs discovery, a role that invokes, and the ``invoke``
rule. Members and granted subjects are never narrowed by rules.

A scope says where a role applies, not whose staff the caller is: a consumer or author
scoped to the whole node is not a member of each of its departments. A member belongs
to the owning department: its department claim (of a department of the caller's own
node) lies at or below the entry's namespace, or, for this node's own entries, one of
its scopes does. Node admins and auditors scoped over the namespace keep sight of
everything there for administration, and each request that saw an entry only through
that sight is recorded in the audit log (:data:`SIGHT`).

A grant names a subject together with the node that vouches for it (a plain subject is
one of the node owning the entry), so the same subject name issued by another node, or
claimed by a linked node for a caller, matches nothing; a grant past its ``expires_at``
matches nobody, at every node. Drafts and entries whose
versions are all retired are seen only by those who may write their namespace. What a
caller may not discover is answered as absent (404), so probing reveals nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any

from yunnao.plugins.errors import Forbidden, NotFound, Unauthorized, YunnaoError

from .names import in_scope, namespace_node
from .schemas import Access, AccessRule, Grant

ROLES: tuple[str, ...] = ("admin", "operator", "author", "consumer", "auditor", "reviewer")
LISTED_STATUSES = ("published", "deprecated")


class Action(StrEnum):
    DISCOVER = "discover"
    INVOKE = "invoke"
    PUBLISH = "publish"
    UPDATE = "update"
    TRANSITION = "transition"
    DELETE = "delete"
    GRANT = "grant"  # change an entry's access rules
    BIND = "bind"  # rebind a version to another runtime
    # bind to a runtime that reaches outside the node (another node, host, URL,
    # directory, cluster or model): see registry/bindings.py
    BIND_EXTERNAL = "bind-external"
    READ_NODE = "read-node"  # cascade status, peers, rejections; metrics
    MANAGE_NODE = "manage-node"  # link and unlink nodes, compact, API keys
    AUDIT = "audit"  # read and verify the audit log
    NAME_NODE = "name-node"  # set this node's titles
    NAME = "name"  # create a department, set its titles
    REVIEW = "review"  # approve or refuse what children share upward (cascade/review.py)


# Which roles may take each action at all (scope and entry rules come on top).
ROLE_ACTIONS: dict[Action, frozenset[str]] = {
    Action.DISCOVER: frozenset(ROLES),
    Action.INVOKE: frozenset({"admin", "operator", "author", "consumer"}),
    Action.PUBLISH: frozenset({"admin", "author"}),
    Action.UPDATE: frozenset({"admin", "author"}),
    Action.TRANSITION: frozenset({"admin", "author"}),
    Action.DELETE: frozenset({"admin", "author"}),
    Action.GRANT: frozenset({"admin"}),
    Action.BIND: frozenset({"admin", "operator", "author"}),
    Action.BIND_EXTERNAL: frozenset({"admin", "operator"}),
    Action.READ_NODE: frozenset({"admin", "operator"}),
    Action.MANAGE_NODE: frozenset({"admin"}),
    Action.AUDIT: frozenset({"admin", "auditor"}),
    Action.NAME_NODE: frozenset({"admin", "operator"}),
    Action.NAME: frozenset({"admin", "operator", "author"}),
    Action.REVIEW: frozenset({"admin", "reviewer"}),
}
NODE_ACTIONS = frozenset(
    {
        Action.READ_NODE,
        Action.MANAGE_NODE,
        Action.AUDIT,
        Action.BIND_EXTERNAL,
        Action.NAME_NODE,
        Action.REVIEW,
    }
)
WRITER_ROLES = ROLE_ACTIONS[Action.UPDATE]
# Roles that keep sight of every entry in their scopes, for administration (audited).
ADMINISTRATIVE_ROLES = frozenset({"admin", "auditor"})

# The namespaces whose entries the current request saw only through administrative
# sight. The audit middleware sets a fresh set per request; the policy adds to it (also
# from worker threads, which run in a copy of the request's context holding that set).
SIGHT: ContextVar[set[str] | None] = ContextVar("yunnao_sight", default=None)


def note_sight(namespaces: Iterable[str]) -> None:
    """Record that the current request saw entries of ``namespaces`` through
    administrative sight only."""
    seen = SIGHT.get()
    if seen is not None:
        seen.update(namespaces)


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
    # Where the caller belongs, for access rules: a node id, and a department
    # (a namespace-shaped id such as sd.qd.traffic).
    node: str | None = None
    department: str | None = None
    # This caller's own rate limit (an API key's), overriding the node's default.
    rate_limit: str | None = None

    @property
    def authenticated(self) -> bool:
        return self.subject is not None

    def in_scope(self, namespace: str) -> bool:
        return any(in_scope(namespace, s) for s in self.scopes)

    def writes(self, namespace: str) -> bool:
        return self.role in WRITER_ROLES and self.in_scope(namespace)

    @property
    def own_department(self) -> str | None:
        """The caller's department, if it is a department of the caller's own node (a
        claim naming another node's department counts for nothing)."""
        dept = self.department
        if dept is None or self.node is None or namespace_node(dept) != self.node:
            return None
        return dept

    def member_of(self, namespace: str, *, local: bool = True) -> bool:
        """Does the caller belong to the department owning ``namespace``: its department
        lies at or below it, or (``local``: this node's own entry) one of its scopes does?"""
        dept = self.own_department
        if dept is not None and in_scope(dept, namespace):
            return True
        return local and any(in_scope(s, namespace) for s in self.scopes)

    def administers(self, namespace: str, *, local: bool = True) -> bool:
        """Administrative sight: an admin or auditor scoped over this node's own entry."""
        return local and self.role in ADMINISTRATIVE_ROLES and self.in_scope(namespace)

    def may_invoke(self, namespace: str, name: str) -> bool:
        """Within this API key's capability limit (always, for other credentials)."""
        if self.capabilities is None:
            return True
        return f"{namespace}/{name}" in self.capabilities or f"{namespace}/*" in self.capabilities


ANONYMOUS = Identity()


@dataclass(frozen=True)
class Entry:
    """What a decision needs of its target: a capability (namespace, classification,
    status, access rules), a namespace (for publish) or a node id (node actions)."""

    namespace: str
    classification: str = "public"
    status: str = "published"
    access: Access = field(default_factory=Access)
    # This node's own entry, not one received from a linked node: scopes count only
    # here (the staff of a cascaded entry's namespace are at its origin).
    local: bool = True

    @classmethod
    def of(cls, row: Any) -> Entry:
        """The entry of a capability row (anything with those attributes)."""
        return cls(
            row.namespace,
            row.classification,
            row.status,
            access_rules(row.access),
            local=row.via_node is None,
        )


@dataclass(frozen=True)
class Decision:
    allowed: bool
    status: int = 200  # when refused: 401 (no credentials), 403, or 404 (hidden)
    reason: str = ""

    def raise_if_refused(self) -> None:
        if self.allowed:
            return
        error: type[YunnaoError] = {401: Unauthorized, 404: NotFound}.get(self.status, Forbidden)
        raise error(self.reason)


ALLOW = Decision(True)


@lru_cache(maxsize=4096)
def _parsed(text: str) -> Access:
    return Access.model_validate_json(text)


def access_rules(value: Access | dict[str, Any] | None) -> Access:
    """A stored ``access`` column (a dict) as :class:`Access`, parsed once per value."""
    if isinstance(value, Access):
        return value
    if not value:
        return _EMPTY
    return _parsed(json.dumps(value, sort_keys=True))


_EMPTY = Access()


def matches(identity: Identity, rule: AccessRule) -> bool:
    """Does ``identity`` match every list ``rule`` gives?"""
    if not (rule.nodes or rule.departments or rule.roles):
        return True
    if not identity.authenticated:
        return False
    if rule.roles and identity.role not in rule.roles:
        return False
    if rule.nodes and not (identity.node and any(in_scope(identity.node, n) for n in rule.nodes)):
        return False
    dept = identity.own_department
    return not rule.departments or bool(dept and any(in_scope(dept, d) for d in rule.departments))


def grant_matches(
    identity: Identity, grant: str | Grant, owner: str, *, now: datetime | None = None
) -> bool:
    """Does ``grant`` (in an entry owned by node ``owner``) name ``identity``: the same
    subject, vouched for by the same node, and not expired (``expires_at`` past ``now``)?"""
    if identity.subject is None or identity.node is None:
        return False
    if isinstance(grant, str):
        return grant == identity.subject and identity.node == owner
    if grant.expires_at is not None and grant.expires_at <= (now or datetime.now(UTC)):
        return False
    return grant.subject == identity.subject and grant.node == identity.node


def granted(identity: Identity, access: Access, owner: str) -> bool:
    """Is ``identity`` among the subjects ``access`` grants (entry owned by ``owner``)?"""
    return any(grant_matches(identity, g, owner) for g in access.grants)


def discoverable(
    identity: Identity,
    *,
    classification: str,
    status: str,
    staff: bool,
    writable: bool,
    granted: bool = False,
    access: Access = _EMPTY,
) -> bool:
    """May ``identity`` discover a live capability with these properties? ``staff``: a
    member of the owning department, or administrative sight over it
    (:meth:`Identity.member_of`, :meth:`Identity.administers`); ``writable``: this
    node's own entry, in a namespace the identity may write (:meth:`Identity.writes`);
    ``granted``: the entry's grants name the identity (:func:`granted`)."""
    if status not in LISTED_STATUSES:
        return writable
    if staff or granted:
        return True
    if classification == "restricted":
        return False
    if classification != "public" and not identity.authenticated:
        return False
    return matches(identity, access.discover)


def _need_credentials(identity: Identity, action: Action) -> Decision | None:
    if identity.authenticated and identity.peer is None:
        return None
    # Linked nodes forward callers for discovery and calls only: scopes never cross nodes.
    what = "a token of this node" if identity.peer is not None else "a bearer token"
    return Decision(False, 401, f"{action.value} needs {what} (see `yunnao token create`)")


def decide(identity: Identity, action: Action, entry: Entry) -> Decision:
    """May ``identity`` take ``action`` on ``entry``? For :data:`NODE_ACTIONS` the
    entry's ``namespace`` is the node id; for publish, the namespace published into."""
    roles = ROLE_ACTIONS[action]
    ns = entry.namespace
    scoped = identity.in_scope(ns) and entry.local
    if action in (Action.DISCOVER, Action.INVOKE):
        member = identity.member_of(ns, local=entry.local)
        sight = not member and identity.administers(ns, local=entry.local)
        facts = {
            "classification": entry.classification,
            "status": entry.status,
            "writable": scoped and identity.writes(ns),
            "granted": granted(identity, entry.access, namespace_node(ns)),
            "access": entry.access,
        }
        if not discoverable(identity, staff=member or sight, **facts):
            return Decision(False, 404, f"no capability in {ns} by that name")
        if sight and not discoverable(identity, staff=False, **facts):
            note_sight((ns,))
        if action is Action.DISCOVER:
            return ALLOW
        if identity.authenticated and identity.role not in roles:
            return Decision(False, 403, f"role {identity.role} may not invoke capabilities")
        if member or facts["granted"]:
            return ALLOW
        if matches(identity, entry.access.invoke):
            return ALLOW
        if sight:
            note_sight((ns,))
            return ALLOW
        who = _describe(identity)
        return Decision(False, 403, f"this capability's access rules do not let {who} invoke it")
    refused = _need_credentials(identity, action)
    if refused is not None:
        return refused
    wanted = " or ".join(sorted(roles))
    if identity.role not in roles:
        return Decision(False, 403, f"role {identity.role} may not {action.value}; needs {wanted}")
    if not scoped:
        where = f"node {ns}" if action in NODE_ACTIONS else f"namespace {ns!r}"
        scopes = ", ".join(identity.scopes) or "nothing"
        return Decision(
            False,
            403,
            f"token is scoped to {scopes}; {action.value} in {where} needs {wanted} scoped to it",
        )
    return ALLOW


def require(identity: Identity, action: Action, entry: Entry | str) -> None:
    """:func:`decide`, raising the refusal (401, 403 or 404) as a problem."""
    if isinstance(entry, str):
        entry = Entry(entry)
    decide(identity, action, entry).raise_if_refused()


def may_discover(identity: Identity, row: Any) -> bool:
    """Discovery of one capability row (tombstones are never discoverable)."""
    if row.deleted_at is not None:
        return False
    return decide(identity, Action.DISCOVER, Entry.of(row)).allowed


def _describe(identity: Identity) -> str:
    if not identity.authenticated:
        return "anonymous callers"
    parts = [f"role {identity.role}"]
    if identity.node:
        parts.append(f"of node {identity.node}")
    if identity.department:
        parts.append(f"department {identity.department}")
    return " ".join(parts)


def require_role(identity: Identity, action: Action) -> None:
    """Raise unless ``identity`` holds a role that may take ``action`` somewhere (for
    routes that learn the namespace only later, and must not answer strangers first)."""
    refused = _need_credentials(identity, action)
    if refused is None and identity.role not in ROLE_ACTIONS[action]:
        wanted = " or ".join(sorted(ROLE_ACTIONS[action]))
        refused = Decision(
            False, 403, f"role {identity.role} may not {action.value}; needs {wanted}"
        )
    if refused is not None:
        refused.raise_if_refused()
