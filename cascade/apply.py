"""Applying a peer's feed here: verify every item, apply the good ones, record the rest,
and move the peer's checkpoint, all in one transaction.

An item is applied only when it is well formed, its origin may send it through this
peer (:func:`~yunnao.cascade.policy.refusal`), it touches no entry of this node's own
and no replica that came through another linked peer, this node holds a key for its
origin and the signature and content hash check out. Anything else is rejected: logged,
counted on the peer and kept in ``cascade_rejection``, never applied. An item no newer
than what this node already applied from the same origin is skipped, so a batch read
twice changes nothing. What a rejection keeps is bounded (:mod:`.rejections`).

At a node that reviews what its children share (:mod:`.review`), their capabilities
that are not approved here are held instead of written; approving writes them
(:meth:`Applier.release`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlmodel import Session

from yunnao.plugins.errors import CheckpointMoved, Conflict
from yunnao.registry import replica
from yunnao.registry.hashing import content_hash
from yunnao.registry.tables import Peer, utcnow
from yunnao.registry.webhooks import events as webhook_events

from . import items as shapes
from . import usage_items
from .feed import append_signed, signed_part
from .policy import refusal
from .rejections import keep_rejections, log_rejections
from .review import Reviews, take_decision
from .signing import item_checks, verify

log = logging.getLogger("yunnao.cascade")

_peer = Peer.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Checked:
    """What :meth:`Applier.check_ahead` found of a page's items before it is applied
    (on another thread, while the previous page is written): each item's shape problem
    (or None), and for items whose signature and content hash checked out, the origin
    key (hex) they checked out with. Applying uses a result only for the very same item
    objects and only where the key held then is that key; anything else is checked then."""

    items: Sequence[Any]
    problems: dict[int, str | None]  # id(item) -> shape problem
    verified: dict[int, str]  # id(item) -> the hex key its signature verified with


@dataclass
class Outcome:
    applied: int = 0
    skipped: int = 0
    rejected: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    checkpoint: int = 0
    held: int = 0  # items held for this node's review (cascade/review.py)
    seen: list[tuple[str, str]] = field(default_factory=list)  # (entity, key) of every item


def _public_key(hex_key: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(bytes.fromhex(hex_key))


class Applier:
    def __init__(
        self,
        node_id: str,
        key: Ed25519PrivateKey,
        transaction: Callable[[], Any],
        *,
        review: bool = False,
    ) -> None:
        self.node_id = node_id
        self.key = key  # signs the tombstones of a resync's sweep
        self.transaction = transaction  # the registry store's write transaction
        # What children share upward waits for this node's review (when ``review``).
        self.reviews = Reviews(node_id, key, enabled=review)
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._known: dict[str, str] = {}  # the node keys (hex) the last apply held

    def _key(self, hex_key: str) -> Ed25519PublicKey:
        key = self._keys.get(hex_key)
        if key is None:
            key = self._keys[hex_key] = _public_key(hex_key)
        return key

    def check_ahead(self, items: Sequence[Any]) -> Checked:
        """Check the shape, signature and content hash of ``items`` now, without the
        store, against the node keys the last apply held (and the keys the page's own node
        items carry): the expensive, stateless part of :meth:`apply`, done on another
        thread while the previous page is written."""
        keys = dict(self._known)
        problems: dict[int, str | None] = {}
        verified: dict[int, str] = {}
        for raw in items:
            wrong = problems[id(raw)] = shapes.problem(raw)
            if wrong is not None:
                continue
            hex_key = keys.get(raw["origin"])
            if hex_key is None:
                continue
            if self._signed(raw, hex_key):
                verified[id(raw)] = hex_key
                if raw["entity"] == "node" and raw["key"] != raw["origin"]:
                    keys[raw["entry"]["id"]] = raw["entry"]["public_key"]
        return Checked(items=items, problems=problems, verified=verified)

    def _signed(self, item: dict[str, Any], hex_key: str) -> bool:
        """Whether ``item`` is signed with ``hex_key`` and its entry has its hash."""
        return item_checks(item, self._key(hex_key))

    def apply(
        self,
        peer: Peer,
        items: Sequence[Any],
        *,
        since: int,
        next_seq: int,
        head: int,
        advance: bool = True,
        checked: Checked | None = None,
        again: bool = False,
    ) -> Outcome:
        """Apply one page of ``peer``'s feed (positions ``since`` → ``next_seq``) and
        move its checkpoint to ``next_seq``, unless ``advance`` is False (a resync moves
        it only at its end). Raises :class:`CheckpointMoved` when the checkpoint is not
        at ``since``. ``checked``: what :meth:`check_ahead` found of these ``items``.
        ``again``: write items this node applied before once more (a repair after its
        copy was changed behind its back); never an older state than it holds."""
        outcome = Outcome(checkpoint=next_seq if advance else since)
        if checked is not None and checked.items is not items:
            checked = None
        with self.transaction() as s:
            _at_checkpoint(s, peer, since)
            keys = replica.node_keys(s)
            self._known = dict(keys)
            linked = frozenset(s.execute(sa.select(_peer.c.id)).scalars())
            keyed = [
                (i["entity"], i["key"])
                for i in items
                if isinstance(i, dict)
                and isinstance(i.get("entity"), str)
                and isinstance(i.get("key"), str)
            ]
            done = replica.last_applied(s, keyed)
            held = replica.holders(
                s, [_cap_pair(key) for entity, key in keyed if entity in ("capability", "version")]
            )
            check = partial(self._check, peer, keys=keys, linked=linked, done=done,
                            held=held, outcome=outcome, checked=checked, again=again)  # fmt: skip
            accepted = [item for raw in items if (item := check(raw)) is not None]
            self._store(s, peer, accepted, outcome)
            self.checkpoint(
                s,
                peer,
                since=since,
                to=next_seq if advance else since,
                head=head,
                applied=outcome.applied,
                rejected=len(outcome.rejected),
                caught_up=advance and next_seq >= head,
            )
            keep_rejections(s, peer.id, outcome.rejected)
        log_rejections(peer.id, outcome.rejected)
        return outcome

    def checkpoint(
        self,
        s: Session,
        peer: Peer,
        *,
        since: int,
        to: int,
        head: int,
        applied: int = 0,
        rejected: int = 0,
        caught_up: bool = True,
    ) -> None:
        """Move ``peer``'s checkpoint from ``since`` to ``to`` in transaction ``s``, or
        raise :class:`CheckpointMoved` when it is no longer at ``since``."""
        now = utcnow()
        values: dict[str, Any] = {
            "checkpoint": to,
            "head": head,
            "applied": _peer.c.applied + applied,
            "rejected": _peer.c.rejected + rejected,
            "last_sync_at": now,
            "failures": 0,
            "last_error": None,
        }
        if caught_up:
            values["caught_up_at"] = now
        moved = s.execute(
            _peer.update()
            .where(_peer.c.id == peer.id, _peer.c.checkpoint == since)
            .values(**values)
        )
        if moved.rowcount != 1:
            raise CheckpointMoved(peer.id, since, -1)

    def sweep(self, peer: Peer, keep: set[str], *, since: int, to: int, head: int) -> int:
        """End a resync: delete the capabilities that came through ``peer`` and are not
        in ``keep`` (``namespace/name``), and move its checkpoint from ``since`` to
        ``to``; returns how many went."""
        gone = 0
        with self.transaction() as s:
            for namespace, name in replica.live_capabilities_via(s, peer.id):
                if f"{namespace}/{name}" not in keep:
                    replica.delete_capability(s, namespace, name, at=utcnow())
                    self.log_sweep(s, namespace, name)
                    gone += 1
            self.reviews.drop_via(s, peer.id, keep)  # what was held of those, too
            self.checkpoint(s, peer, since=since, to=to, head=head)
            s.execute(
                _peer.update()
                .where(_peer.c.id == peer.id)
                .values(resync_pending=False, resyncs=_peer.c.resyncs + 1)
            )
        if gone:
            log.warning("resync with %s deleted %d capabilities it no longer has", peer.id, gone)
        return gone

    def reset(self, peer: Peer, *, since: int) -> None:
        """Start a pushing child's resync: its pages start again from 0."""
        with self.transaction() as s:
            _at_checkpoint(s, peer, since)
            s.execute(
                _peer.update()
                .where(_peer.c.id == peer.id)
                .values(checkpoint=0, resync_pending=True)
            )

    def log_sweep(self, s: Session, namespace: str, name: str) -> None:
        """Log the deletion of a cascaded capability its peer no longer has, as a
        tombstone this node signs (nodes above accept it from an ancestor of the owner)."""
        append_signed(
            s,
            self.key,
            origin=self.node_id,
            entity="capability",
            item_key=f"{namespace}/{name}",
            op="delete",
            entry={"namespace": namespace, "name": name},
        )

    def _check(
        self,
        peer: Peer,
        raw: Any,
        keys: dict[str, str],
        linked: frozenset[str],
        done: dict[tuple[str, str], tuple[str, int]],
        held: dict[tuple[str, str], tuple[str | None, bool]],
        outcome: Outcome,
        checked: Checked | None = None,
        again: bool = False,
    ) -> dict[str, Any] | None:
        """``raw`` when it may be applied; otherwise None, with the rejection or skip
        recorded on ``outcome``."""
        if checked is not None and id(raw) in checked.problems:
            wrong = checked.problems[id(raw)]
        else:
            wrong = shapes.problem(raw)
        if wrong is not None:
            outcome.rejected.append((wrong, raw if isinstance(raw, dict) else {"raw": raw}))
            return None
        item: dict[str, Any] = raw
        entity, key, origin = item["entity"], item["key"], item["origin"]
        outcome.seen.append((entity, key))
        refused = refusal(
            item, this_node=self.node_id, peer=peer.id, relation=peer.relation, linked=linked
        )
        if refused is not None:
            reason, is_rejection = refused
            if is_rejection:
                outcome.rejected.append((reason, item))
            else:
                outcome.skipped += 1
            return None
        taken = self._taken(peer, entity, key, held, linked)
        if taken is not None:
            outcome.rejected.append((taken, item))
            return None
        hex_key = keys.get(origin)
        if hex_key is None:
            outcome.rejected.append((f"no registered key for origin {origin}", item))
            return None
        if entity == "node" and key == origin and item["entry"]["public_key"] != hex_key:
            outcome.rejected.append((f"node {origin} may name itself but not re-key itself", item))
            return None
        ahead = checked is not None and checked.verified.get(id(raw)) == hex_key
        if not ahead and not self._signed(item, hex_key):
            # Rejected; the reason, the long way.
            if verify(self._key(hex_key), signed_part(item), item["signature"]) and (
                content_hash(item["entry"]) != item["content_hash"]
            ):
                outcome.rejected.append(("content hash does not match the entry", item))
            else:
                outcome.rejected.append((f"signature is not {origin}'s", item))
            return None
        last = done.get((entity, key))
        seen = last is not None and last[0] == origin
        if seen and (last[1], not again) > (item["origin_seq"], False):  # type: ignore[index]
            # Applied before (a replayed or repeated item); ``again``: only if newer here.
            outcome.skipped += 1
            return None
        done[(entity, key)] = (origin, item["origin_seq"])
        if entity == "node":  # its key verifies the items after it
            keys[item["entry"]["id"]] = item["entry"]["public_key"]
        return item

    def _taken(
        self,
        peer: Peer,
        entity: str,
        key: str,
        held: dict[tuple[str, str], tuple[str | None, bool]],
        linked: frozenset[str],
    ) -> str | None:
        """Why an item from ``peer`` may not touch the capability it names here, or None:
        a peer changes only replicas it sent itself (or none yet), never this node's own
        entries, and never a live replica another linked peer sent."""
        if entity not in ("capability", "version"):
            return None
        found = held.get(_cap_pair(key))
        if found is None:
            return None
        via, live = found
        if via is None:
            return f"{_cap_key(key)} is this node's own entry: no linked node may change it"
        if live and via != peer.id and via in linked:
            return f"{_cap_key(key)} came through {via}, not through {peer.id}"
        return None

    def _store(
        self, s: Session, peer: Peer, accepted: list[dict[str, Any]], outcome: Outcome
    ) -> None:
        """Write the accepted items of one page, less what waits for this node's review
        (a child's capabilities not approved here yet)."""
        if self.reviews.enabled and peer.relation == "child":
            accepted, held = self.reviews.split(s, peer.id, accepted)
            outcome.held += held
        self._write(s, peer.id, accepted, outcome)

    def release(self, namespace: str, name: str, *, by: str) -> int:
        """Approve a held capability: write its held items (checked when they arrived,
        signed by their origin) as replication would have, so it enters the catalog and
        the feed to this node's parent, and sign the decision. Returns the items written."""
        outcome = Outcome()
        with self.transaction() as s:
            review = self.reviews.get(s, namespace, name)
            if review.state == "approved":
                raise Conflict(f"{namespace}/{name} is approved already")
            found = replica.holders(s, [(namespace, name)]).get((namespace, name))
            linked = frozenset(s.execute(sa.select(_peer.c.id)).scalars())
            if found is not None and (
                found[0] is None
                or (found[1] and found[0] != review.via_node and found[0] in linked)
            ):
                raise Conflict(
                    f"{namespace}/{name} is held here through "
                    f"{found[0] or 'this node itself'} now, not {review.via_node}"
                )
            items = self.reviews.take_held(s, namespace, name)
            self.reviews.decide(s, namespace, name, state="approved", by=by, reason=None)
            self._write(s, review.via_node, items, outcome)
        return outcome.applied

    def refuse(self, namespace: str, name: str, *, by: str, reason: str) -> None:
        """Refuse a held capability with ``reason`` (its items stay held; a newer one
        from the child puts it back in the queue), and sign the decision."""
        with self.transaction() as s:
            review = self.reviews.get(s, namespace, name)
            if review.state != "pending":
                raise Conflict(
                    f"{namespace}/{name} is {review.state}: only pending ones are refused"
                )
            self.reviews.decide(s, namespace, name, state="refused", by=by, reason=reason)

    def _write(
        self, s: Session, via: str, accepted: list[dict[str, Any]], outcome: Outcome
    ) -> None:
        """Write accepted items that came through ``via``. Replication is state-based, so
        only the last item of each entry in the page is written (all are logged, in
        order); capabilities and versions go in a few batched statements."""
        last = {_slot(item): i for i, item in enumerate(accepted)}
        deleted = {
            item["key"]
            for i, item in enumerate(accepted)
            if item["entity"] == "capability" and item["op"] == "delete" and last[_slot(item)] == i
        }
        caps: list[tuple[dict[str, Any], datetime]] = []
        versions: list[tuple[dict[str, Any], datetime]] = []
        version_items: list[dict[str, Any]] = []
        logged: list[dict[str, Any]] = []
        for i, item in enumerate(accepted):
            entity, entry = item["entity"], item["entry"]
            if entity == "version" and item["key"].split("@", 1)[0] in deleted:
                outcome.skipped += 1  # its capability is deleted later in this page
                continue
            logged.append(item)
            if last[_slot(item)] != i:
                continue  # a later item in this page carries the newer state
            at = datetime.fromisoformat(item["at"]) if _aware(item["at"]) else utcnow()
            if entity == "node":
                replica.put_node(s, entry, self_named=item["origin"] == entry["id"])
            elif entity == "namespace":
                replica.put_namespace(s, entry["id"], item["origin"], entry)
            elif entity == "usage":
                usage_items.apply(s, entry)
            elif entity == "review":
                take_decision(s, self.node_id, entry)
            elif entity == "capability" and item["op"] == "delete":
                replica.delete_capability(s, entry["namespace"], entry["name"], at=at)
            elif entity == "capability":
                caps.append((entry, at))
            else:
                versions.append((entry, at))
                version_items.append(item)
        replica.put_capabilities(s, caps, via=via)
        missing = {id(version_items[i]) for i in replica.put_versions(s, versions)}
        if missing:
            # Its capability went here since (an ordering of the feed, not an attack).
            log.info("skipped %d versions of capabilities this node no longer holds", len(missing))
            outcome.skipped += len(missing)
            logged = [item for item in logged if id(item) not in missing]
        replica.log(s, logged)
        arrived = [_arrival(via, i) for i in logged if i["entity"] in ("capability", "version")]
        webhook_events.enqueue(s.connection(), self.node_id, arrived)  # in this transaction
        # A node/day's usage item supersedes the last one whole: keep only the newest.
        usage_items.drop_superseded(s, [i["key"] for i in logged if i["entity"] == "usage"])
        outcome.applied += len(logged)


def _arrival(peer: str, item: dict[str, Any]) -> webhook_events.Event:
    """The webhook event of a capability or version applied from ``peer``."""
    entry = item["entry"]
    data = {
        "peer": peer, "origin": item["origin"], "entity": item["entity"], "op": item["op"],
        "key": item["key"], "namespace": entry.get("namespace"), "name": entry.get("name"),
        "version": entry.get("version"),
    }  # fmt: skip
    return webhook_events.Event("cascade.entry_arrived", data, entry.get("namespace"))


def _at_checkpoint(s: Session, peer: Peer, since: int) -> None:
    current = s.execute(sa.select(_peer.c.checkpoint).where(_peer.c.id == peer.id)).scalar_one()
    if current != since:
        raise CheckpointMoved(peer.id, since, current)


def _cap_key(key: str) -> str:
    return key.split("@", 1)[0]


def _cap_pair(key: str) -> tuple[str, str]:
    namespace, _, name = _cap_key(key).partition("/")
    return namespace, name


def _aware(text: str) -> bool:
    try:
        return datetime.fromisoformat(text).tzinfo is not None
    except ValueError:
        return False


def _slot(item: dict[str, Any]) -> tuple[str, str, bool]:
    """What a later item of the same page supersedes: the same entry, except that a
    node's naming of itself (its titles) and a node vouching for it (its key) are two
    states, both written."""
    entity, key = item["entity"], item["key"]
    return entity, key, entity == "node" and item["origin"] == key
