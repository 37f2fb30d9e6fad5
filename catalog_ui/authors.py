"""What the pages offer a model author: the namespaces a person may publish into, the
lifecycle moves they may make on a capability's versions, and times in Beijing time.

Every answer comes from the policy module (:mod:`yunnao.registry.access`) and the
lifecycle rules (:mod:`yunnao.registry.lifecycle`), as the API's routes ask them: the
pages only decide what to show; each action is checked again when it is taken.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from yunnao.registry import lifecycle, names, schemas
from yunnao.registry.access import ROLE_ACTIONS, Action, Entry, Identity, decide
from yunnao.registry.clock import BEIJING


def _publisher(identity: Identity) -> bool:
    return (
        identity.authenticated
        and identity.peer is None
        and identity.role in ROLE_ACTIONS[Action.PUBLISH]
    )


def covers_node(identity: Identity, node_id: str) -> bool:
    """Does one of the caller's scopes cover every department of ``node_id``?"""
    return _publisher(identity) and identity.in_scope(node_id)


def may_publish(identity: Identity, node_id: str) -> bool:
    """May the caller publish into some namespace of this node (the nav's 发布 link)?"""
    if not _publisher(identity):
        return False
    return any(
        names.in_scope(scope, node_id) or names.in_scope(node_id, scope)
        for scope in identity.scopes
    )


def publish_namespaces(identity: Identity, node_id: str, known: Iterable[str]) -> list[str]:
    """The namespaces of this node the caller may publish into: those it knows
    (``known``) and the caller's own namespace scopes, sorted."""
    if not _publisher(identity):
        return []
    candidates = set(known) | set(identity.scopes)
    return sorted(
        ns
        for ns in candidates
        if names.is_namespace(ns)
        and names.namespace_node(ns) == node_id
        and decide(identity, Action.PUBLISH, Entry(ns)).allowed
    )


def version_actions(
    identity: Identity,
    cap: schemas.Capability,
    versions: Sequence[schemas.Version],
    node_id: str,
) -> dict[str, list[str]] | None:
    """The lifecycle moves the caller may make, per version number (None: the caller
    is no author of this node's capability, and the page shows no author actions)."""
    if names.namespace_node(cap.namespace) != node_id or not may_change(identity, cap.namespace):
        return None
    return {v.version: sorted(lifecycle.ALLOWED[v.status]) for v in versions}


def may_change(identity: Identity, namespace: str) -> bool:
    """May the caller move versions along their lifecycle and edit the metadata here?"""
    return all(
        decide(identity, action, Entry(namespace)).allowed
        for action in (Action.TRANSITION, Action.UPDATE)
    )


def beijing(value: datetime | str | None) -> str:
    """A time as Beijing time, ``2025-03-01 14:05:09`` ("-" for none)."""
    if value is None or value == "":
        return "-"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S")
