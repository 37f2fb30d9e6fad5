"""Who may send what to whom: ownership by the node tree, and classification.

The node tree is the dotted node ids themselves: ``sd.qd.shinan`` is a child of
``sd.qd``, a descendant of ``sd``. The rules, enforced both where a feed is served and
where it is applied:

- Up (a child's feed, read by its parent or pushed to it): only entries whose origin is
  the child or one of its descendants, signed by their origin.
- Down (a parent's feed, followed by a child): everything the parent holds except the
  child's own subtree, and ``internal`` entries only where their owner shares them
  sideways (its node's ``cascade_share_internal`` setting, signed into each entry).
- ``restricted`` entries never leave their node.
- An entry is only ever changed by its owner's side of the tree: a node's own subtree
  never takes a change of its entries from its parent (a tombstone included), and a
  capability names as its ``origin_node`` the node whose key signed it.
- Narrowing withdraws: a capability a follower may no longer hold (made ``internal`` or
  ``restricted``) goes to it as a tombstone this node signs (:func:`withdrawn`).
- Usage figures (entity ``usage``, key ``<node>/<day>``) travel up only, never to a
  child, and a node signs only its own: the key names the origin itself.
- Review decisions (entity ``review``, :mod:`~yunnao.cascade.review`) travel down only,
  to the child whose subtree owns the capability; a node takes one only from its
  parent, signed by an ancestor that names itself as the reviewer, about its own subtree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from yunnao.registry.names import in_scope, namespace_node


def in_subtree(node: str, root: str) -> bool:
    """``node`` is ``root`` or below it."""
    return in_scope(node, root)


def below(node: str, root: str) -> bool:
    """``node`` is strictly below ``root``."""
    return node != root and in_scope(node, root)


@dataclass(frozen=True)
class Reader:
    """Who reads this node's feed: its parent, one of its children, or an operator of
    this node (who sees what a parent would)."""

    relation: Literal["parent", "child", "operator"]
    node: str | None = None


def share_of(classification: str, share_internal: bool) -> str:
    """What an owner allows for an entry: ``all`` (any linked node) or ``up`` (its
    ancestors only)."""
    if classification == "public" or (classification == "internal" and share_internal):
        return "all"
    return "up"


def owner_of(item: dict[str, Any]) -> str | None:
    """The node that owns what ``item`` changes (None for a node's key)."""
    if item["entity"] == "node":
        return None
    key = item["key"]
    if item["entity"] == "usage":
        return key.split("/", 1)[0]
    namespace = key if item["entity"] == "namespace" else key.split("/", 1)[0]
    return namespace_node(namespace)


def may_send(item: dict[str, Any], *, this_node: str, reader: Reader) -> bool:
    """Whether ``item`` (a feed item of this node) may go to ``reader``."""
    origin = item["origin"]
    entry = item.get("entry") or {}
    owner = owner_of(item)
    if entry.get("classification") == "restricted":
        return False
    if item["entity"] == "usage" and reader.relation == "child":
        return False  # usage figures go up only
    if item["entity"] == "review":  # down only, to the side of the tree that owns it
        child = reader.node if reader.relation == "child" else None
        return child is not None and owner is not None and in_subtree(owner, child)
    if reader.relation in ("parent", "operator"):
        # Not a tombstone this node signed for an entry from above (a resync's sweep of
        # what its parent sent): the parent would refuse it.
        return in_subtree(origin, this_node) and (owner is None or in_subtree(owner, this_node))
    assert reader.node is not None
    if in_subtree(origin, reader.node) or (owner is not None and in_subtree(owner, reader.node)):
        return False  # the child's own entries, and its descendants'
    if item["entity"] == "node" and in_subtree(entry.get("id", ""), reader.node):
        return False
    return not (entry.get("classification") == "internal" and entry.get("share") != "all")


def withdrawn(item: dict[str, Any], *, this_node: str, reader: Reader) -> bool:
    """Whether ``item``, a capability ``reader`` may not have for its classification
    alone, goes to it as a tombstone instead: a follower may hold a copy from before the
    entry was narrowed, and leaving the item out would leave that copy behind."""
    if reader.relation != "child" or item["entity"] != "capability" or item["op"] != "upsert":
        return False
    assert reader.node is not None
    owner = owner_of(item)
    if in_subtree(item["origin"], reader.node) or (owner and in_subtree(owner, reader.node)):
        return False
    return not may_send(item, this_node=this_node, reader=reader)


def refusal(
    item: dict[str, Any],
    *,
    this_node: str,
    peer: str,
    relation: str,
    linked: frozenset[str] = frozenset(),
) -> tuple[str, bool] | None:
    """Why ``item``, received from ``peer`` (this node's ``relation``), must not be
    applied, or None when it may be. The flag says whether it is a rejection (logged and
    counted) rather than an entry this node ignores by rule. ``linked``: the nodes this
    node registered keys for itself, which no other node may re-key here."""
    origin, entity, key = item["origin"], item["entity"], item["key"]
    entry = item["entry"]
    if relation == "child":
        if not in_subtree(origin, peer):
            return f"origin {origin} is neither child {peer} nor below it", True
    elif in_subtree(origin, this_node):
        return f"origin {origin} is this node or below it: its entries are not the parent's", True
    if entity == "usage":
        if relation != "child":
            return "usage figures travel up the node tree only, not from a parent", True
        named = key.split("/", 1)[0]
        if named != origin:
            return f"usage of node {named} signed by {origin}: a node sends only its own", True
        return None
    if entity == "review":
        if relation != "parent":
            return "review decisions travel down the node tree only, not from a child", True
        if not below(this_node, origin):
            return f"node {origin} is not above this node: it reviews nothing of it", True
        if entry.get("reviewer") != origin:
            return f"a decision of {entry.get('reviewer')!r} signed by {origin}", True
        owner = namespace_node(key.split("/", 1)[0])
        if not in_subtree(owner, this_node):
            return f"a decision about node {owner}'s entry, outside this node's subtree", True
        return None
    if entity == "node":
        described = key
        if described == origin and described != this_node:
            # A node naming itself: only its titles are taken (the applier checks that
            # the key is the one held for it already).
            return None
        if described == this_node or described in linked:
            return "this node registered that key itself", False
        if relation == "parent" and in_subtree(described, this_node):
            return (
                f"node {described} is in this node's subtree: not the parent's to vouch for",
                True,
            )
        ancestor_or_parent = below(described, origin) or (relation == "parent" and origin == peer)
        if not ancestor_or_parent:
            return f"node {origin} may not vouch for the key of {described}", True
        return None
    namespace = key.split("/", 1)[0] if entity != "namespace" else key
    owner = namespace_node(namespace)
    if relation == "parent" and in_subtree(owner, this_node):
        # An ancestor never deletes (or changes) a node's own entries, nor those of the
        # node's subtree, which reach it from below only.
        return (
            f"namespace {namespace} belongs to node {owner}, in this node's subtree: "
            f"the parent {peer} may not change it"
        ), True
    # A tombstone may also come from an ancestor of the owner: after reading a compacted
    # feed again, a node deletes what its child no longer has and vouches for that; and
    # a followed parent withdraws what it passed on before (an entry narrowed since).
    withdrawal = item["op"] == "delete" and (
        below(owner, origin) or (relation == "parent" and origin == peer)
    )
    if owner != origin and not withdrawal:
        return f"namespace {namespace} belongs to node {owner}, not to origin {origin}", True
    if entity == "capability" and item["op"] == "upsert" and entry.get("origin_node") != origin:
        return (
            f"entry names origin node {entry.get('origin_node')!r}, but {origin} signed it"
        ), True
    if item["op"] == "upsert":
        classification = entry.get("classification")
        if classification == "restricted":
            return "restricted entries never leave their node", True
        if relation == "parent" and classification == "internal" and entry.get("share") != "all":
            return "internal entry its owner does not share sideways", True
    return None
