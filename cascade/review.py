"""Review of what children share upward (``YUNNAO_CASCADE_REVIEW``).

A reviewing node holds the capabilities that arrive from its children's subtrees until
one of its reviewers approves them (or a rule does): replication goes on as ever (every
item is verified, the checkpoint moves), but a held capability is not in this node's
catalog, not searchable or callable here, and not in the feed its own parent reads.

- **Held** (``review_held``): the signed items of a capability not approved yet, exactly
  as received, the newest per entity and key. A tombstone from the child drops them.
- **Approved**: the held items are written through the apply path with their origin's
  signatures (:meth:`~yunnao.cascade.apply.Applier.release`), so they enter the catalog
  and the change log, and this node's parent reads them as new changes. Later items of
  an approved capability (new versions, metadata) apply at once.
- **Refused** with a reason: the items stay held; a newer item from the child (a fixed
  version) puts the capability back in the queue.
- **Rules** (``review_rule``) approve on arrival what matches every field they give:
  a namespace (and the departments under it), a classification, a district (a node and
  its subtree).

Each change of state is a ``review`` item this node signs into its change log
(:class:`~yunnao.cascade.items.ReviewEntry`): the policy sends it only down, to the
child whose subtree owns the capability, which keeps it in ``review_upward`` and shows
it on the capability's page (审核中 / 已通过 / 未通过). A district sees these decisions
when it follows its parent (``yunnao cascade add-parent --follow``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlmodel import Session

from yunnao.plugins.errors import NotFound
from yunnao.registry.names import in_scope
from yunnao.registry.tables import (
    CapabilityRow,
    ReviewHeld,
    ReviewRow,
    ReviewRule,
    ReviewUpward,
    utcnow,
)
from yunnao.registry.webhooks import events as webhook_events

from .feed import append_signed
from .items import review_key

State = Literal["pending", "approved", "refused"]

_review = ReviewRow.__table__  # type: ignore[attr-defined]
_held = ReviewHeld.__table__  # type: ignore[attr-defined]
_rule = ReviewRule.__table__  # type: ignore[attr-defined]
_upward = ReviewUpward.__table__  # type: ignore[attr-defined]
_cap = CapabilityRow.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Rule:
    id: str
    namespace: str | None
    classification: str | None
    district: str | None
    created_by: str | None = None
    created_at: datetime | None = None

    def matches(self, namespace: str, classification: str | None, origin: str) -> bool:
        return (
            (self.namespace is None or in_scope(namespace, self.namespace))
            and (self.classification is None or classification == self.classification)
            and (self.district is None or in_scope(origin, self.district))
        )


@dataclass(frozen=True)
class Review:
    """One capability in (or through) this node's review."""

    namespace: str
    name: str
    origin_node: str
    via_node: str
    state: State
    reason: str | None
    decided_by: str | None
    decided_at: datetime | None
    arrived_at: datetime
    rule_id: str | None
    title: str | None
    classification: str | None
    versions: tuple[str, ...] = ()  # held versions (pending and refused ones)


@dataclass(frozen=True)
class Decision:
    """A decision this node received about one of its own subtree's capabilities."""

    namespace: str
    name: str
    reviewer: str
    state: State
    reason: str | None
    decided_at: datetime | None


def _pair(item: dict[str, Any]) -> tuple[str, str]:
    namespace, _, rest = item["key"].partition("/")
    return namespace, rest.split("@", 1)[0]


def _classification(item: dict[str, Any]) -> str | None:
    value = item["entry"].get("classification")
    return value if isinstance(value, str) else None


class Reviews:
    """This node's review: what the apply path holds (:meth:`split`), the queue, the
    decisions (each signed into the change log) and the rules."""

    def __init__(self, node_id: str, key: Ed25519PrivateKey, *, enabled: bool) -> None:
        self.node_id = node_id
        self.key = key
        self.enabled = enabled

    # ------------------------------------------------------------ holding

    def split(
        self, s: Session, via: str, items: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], int]:
        """Of a child's accepted page ``items`` (in order): those to apply now, and how
        many were held. Capability and version items of a capability not approved here
        are held (a rule may approve it on arrival); a tombstone drops what was held of
        it; a capability this node held live before review was on counts as approved."""
        pairs = {_pair(i) for i in items if i["entity"] in ("capability", "version")}
        if not pairs:
            return items, 0
        states = self._states(s, pairs)
        live = self._live(s, [p for p in pairs if p not in states])
        rules: list[Rule] | None = None
        now = utcnow()
        out: list[dict[str, Any]] = []
        held = 0
        asked: dict[tuple[str, str], dict[str, Any]] = {}  # review.requested events
        for item in items:
            if item["entity"] not in ("capability", "version"):
                out.append(item)
                continue
            pair = _pair(item)
            state = states.get(pair)
            if state is None and pair in live:
                self._insert(s, pair, item, via, "approved", now, by="before review")
                state = states[pair] = "approved"
            if item["op"] == "delete":
                # Gone at the child: nothing held stays, and one made again under the
                # name is a new capability, reviewed afresh.
                s.execute(_held.delete().where(_held.c.namespace == pair[0],
                                               _held.c.name == pair[1]))  # fmt: skip
                s.execute(_review.delete().where(_review.c.namespace == pair[0],
                                                 _review.c.name == pair[1]))  # fmt: skip
                states.pop(pair, None)
                asked.pop(pair, None)
                if state == "approved":
                    out.append(item)  # the catalog had it: the deletion goes on up
                continue
            if state is None:
                if rules is None:
                    rules = self.rules(s)
                rule = next((r for r in rules if r.matches(
                    pair[0], _classification(item), item["origin"])), None)  # fmt: skip
                state = "approved" if rule is not None else "pending"
                self._insert(s, pair, item, via, state, now,
                             by=f"rule {rule.id}" if rule else None,
                             rule_id=rule.id if rule else None)  # fmt: skip
                states[pair] = state
                self._announce(s, pair, state, None, now if rule else None)
                if state == "pending":
                    asked[pair] = {"via": via, "origin": item["origin"], "again": False}
            elif state == "refused":  # sent again after a refusal: back in the queue
                s.execute(_review.update().where(
                    _review.c.namespace == pair[0], _review.c.name == pair[1]
                ).values(state="pending", arrived_at=now))  # fmt: skip
                state = states[pair] = "pending"
                self._announce(s, pair, "pending", None, None)
                asked[pair] = {"via": via, "origin": item["origin"], "again": True}
            if state == "approved":
                out.append(item)
                continue
            if self._hold(s, pair, item, now):
                held += 1
            if item["entity"] == "capability":
                s.execute(_review.update().where(
                    _review.c.namespace == pair[0], _review.c.name == pair[1]
                ).values(title=str(item["entry"].get("title", ""))[:200],
                         classification=_classification(item)))  # fmt: skip
        events = [
            webhook_events.Event("review.requested", {
                "namespace": ns, "name": name, "origin": why["origin"], "via": why["via"],
                "again": why["again"], "path": f"/v1/cascade/reviews/{ns}/{name}",
            }) for (ns, name), why in asked.items()
        ]  # fmt: skip
        webhook_events.enqueue(s.connection(), self.node_id, events)  # in this transaction
        return out, held

    def _states(self, s: Session, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
        out: dict[tuple[str, str], str] = {}
        wanted = sorted(set(pairs))
        for start in range(0, len(wanted), 400):
            chunk = wanted[start : start + 400]
            rows = s.execute(
                sa.select(_review.c.namespace, _review.c.name, _review.c.state).where(
                    _review.c.namespace.in_({ns for ns, _ in chunk}),
                    _review.c.name.in_({n for _, n in chunk}),
                )
            )
            out.update({(ns, n): st for ns, n, st in rows if (ns, n) in set(chunk)})
        return out

    def _live(self, s: Session, pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
        out: set[tuple[str, str]] = set()
        for start in range(0, len(pairs), 400):
            chunk = set(pairs[start : start + 400])
            rows = s.execute(
                sa.select(_cap.c.namespace, _cap.c.name).where(
                    _cap.c.namespace.in_({ns for ns, _ in chunk}),
                    _cap.c.name.in_({n for _, n in chunk}),
                    _cap.c.deleted_at.is_(None),
                )
            )
            out.update(pair for row in rows if (pair := (row[0], row[1])) in chunk)
        return out

    def _insert(
        self,
        s: Session,
        pair: tuple[str, str],
        item: dict[str, Any],
        via: str,
        state: str,
        now: datetime,
        *,
        by: str | None,
        rule_id: str | None = None,
    ) -> None:
        decided = state != "pending"
        s.execute(sa.insert(_review).values(
            namespace=pair[0], name=pair[1], origin_node=item["origin"], via_node=via,
            state=state, arrived_at=now, rule_id=rule_id, decided_by=by,
            decided_at=now if decided else None, classification=_classification(item),
            title=str(item["entry"].get("title", ""))[:200] if item["entity"] == "capability"
            else None,
        ))  # fmt: skip

    def _hold(self, s: Session, pair: tuple[str, str], item: dict[str, Any], now: datetime) -> bool:
        """Keep ``item`` (unless a newer item of its entry is kept already)."""
        kept = s.execute(
            sa.select(_held.c.origin_seq).where(
                _held.c.entity == item["entity"], _held.c.key == item["key"]
            )
        ).scalar()
        if kept is not None and kept > item["origin_seq"]:
            return False
        if kept is not None:
            s.execute(_held.delete().where(_held.c.entity == item["entity"],
                                           _held.c.key == item["key"]))  # fmt: skip
        s.execute(sa.insert(_held).values(
            entity=item["entity"], key=item["key"], namespace=pair[0], name=pair[1],
            origin_seq=item["origin_seq"], item=item, held_at=now,
        ))  # fmt: skip
        return True

    def drop_via(self, s: Session, via: str, keep: set[str]) -> int:
        """End of a resync with ``via``: forget what is held of capabilities it no
        longer has (``keep``: ``namespace/name`` of those it has)."""
        rows = s.execute(
            sa.select(_review.c.namespace, _review.c.name).where(
                _review.c.via_node == via, _review.c.state != "approved"
            )
        ).all()
        gone = [(ns, n) for ns, n in rows if f"{ns}/{n}" not in keep]
        for ns, n in gone:
            s.execute(_held.delete().where(_held.c.namespace == ns, _held.c.name == n))
            s.execute(_review.delete().where(_review.c.namespace == ns, _review.c.name == n))
        return len(gone)

    # ------------------------------------------------------------ deciding

    def waiting(self, s: Session, via: str) -> set[str]:
        """``namespace/name`` of the capabilities from ``via`` that wait for a decision
        here (pending or refused): not in the catalog on purpose."""
        rows = s.execute(
            sa.select(_review.c.namespace, _review.c.name).where(
                _review.c.via_node == via, _review.c.state != "approved"
            )
        )
        return {f"{ns}/{n}" for ns, n in rows}

    def get(self, s: Session, namespace: str, name: str) -> Review:
        row = s.execute(
            sa.select(_review).where(_review.c.namespace == namespace, _review.c.name == name)
        ).first()
        if row is None:
            raise NotFound(f"{namespace}/{name} is not in this node's review")
        return self._review(row._mapping, self._held_versions(s, [(namespace, name)]))

    def take_held(self, s: Session, namespace: str, name: str) -> list[dict[str, Any]]:
        """The held items of a capability, capability first, then in origin order;
        removed from the hold (the caller applies them in the same transaction)."""
        rows = s.execute(sa.select(_held.c.item).where(
            _held.c.namespace == namespace, _held.c.name == name)).scalars().all()  # fmt: skip
        s.execute(_held.delete().where(_held.c.namespace == namespace, _held.c.name == name))
        items = [_loaded(i) for i in rows]
        return sorted(items, key=lambda i: (i["entity"] != "capability", i["origin_seq"]))

    def decide(
        self, s: Session, namespace: str, name: str, *, state: State, by: str, reason: str | None
    ) -> None:
        """Record a reviewer's decision and sign it into the change log (it travels down
        to the capability's district)."""
        now = utcnow()
        s.execute(_review.update().where(_review.c.namespace == namespace,
                                         _review.c.name == name).values(
            state=state, decided_by=by, decided_at=now, reason=reason, rule_id=None))  # fmt: skip
        self._announce(s, (namespace, name), state, reason, now)

    def _announce(
        self,
        s: Session,
        pair: tuple[str, str],
        state: str,
        reason: str | None,
        decided_at: datetime | None,
    ) -> None:
        entry = {
            "namespace": pair[0], "name": pair[1], "reviewer": self.node_id, "state": state,
            "reason": reason, "decided_at": decided_at.isoformat() if decided_at else None,
        }  # fmt: skip
        append_signed(s, self.key, origin=self.node_id, entity="review",
                      item_key=review_key(pair[0], pair[1], self.node_id), op="upsert",
                      entry=entry)  # fmt: skip

    def queue(
        self, s: Session, *, state: State | None, limit: int, offset: int
    ) -> tuple[list[Review], int]:
        """Reviews, oldest arrival first for ``pending``, newest decision first
        otherwise; and how many there are."""
        where = [] if state is None else [_review.c.state == state]
        total = s.execute(sa.select(sa.func.count()).select_from(_review).where(*where)).scalar()
        order = (
            [_review.c.arrived_at, _review.c.namespace, _review.c.name]
            if state == "pending"
            else [_review.c.decided_at.desc(), _review.c.namespace, _review.c.name]
        )
        rows = s.execute(
            sa.select(_review).where(*where).order_by(*order).limit(limit).offset(offset)
        ).all()
        versions = self._held_versions(s, [(r.namespace, r.name) for r in rows])
        return [self._review(r._mapping, versions) for r in rows], int(total or 0)

    def _held_versions(
        self, s: Session, pairs: list[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[str, ...]]:
        out: dict[tuple[str, str], list[str]] = {}
        for ns, n in pairs:
            keys = s.execute(sa.select(_held.c.key).where(
                _held.c.namespace == ns, _held.c.name == n, _held.c.entity == "version"
            )).scalars()  # fmt: skip
            out[(ns, n)] = sorted(k.split("@", 1)[1] for k in keys)
        return {k: tuple(v) for k, v in out.items()}

    @staticmethod
    def _review(row: Any, versions: dict[tuple[str, str], tuple[str, ...]]) -> Review:
        pair = (row["namespace"], row["name"])
        return Review(
            namespace=row["namespace"], name=row["name"], origin_node=row["origin_node"],
            via_node=row["via_node"], state=row["state"], reason=row["reason"],
            decided_by=row["decided_by"], decided_at=row["decided_at"],
            arrived_at=row["arrived_at"], rule_id=row["rule_id"], title=row["title"],
            classification=row["classification"], versions=versions.get(pair, ()),
        )  # fmt: skip

    # ------------------------------------------------------------ rules

    def rules(self, s: Session) -> list[Rule]:
        rows = s.execute(sa.select(_rule).order_by(_rule.c.created_at, _rule.c.id))
        return [Rule(r.id, r.namespace, r.classification, r.district, r.created_by,
                     r.created_at) for r in rows]  # fmt: skip

    def add_rule(
        self,
        s: Session,
        *,
        namespace: str | None,
        classification: str | None,
        district: str | None,
        by: str,
    ) -> Rule:
        rule = Rule(uuid.uuid4().hex, namespace, classification, district, by, utcnow())
        s.execute(sa.insert(_rule).values(
            id=rule.id, namespace=namespace, classification=classification,
            district=district, created_by=by, created_at=rule.created_at,
        ))  # fmt: skip
        return rule

    def remove_rule(self, s: Session, rule_id: str) -> bool:
        return bool(s.execute(_rule.delete().where(_rule.c.id == rule_id)).rowcount)


def take_decision(s: Session, node_id: str, entry: dict[str, Any]) -> None:
    """At a child (``node_id``): keep a decision a node above sent down about one of
    this node's subtree's capabilities (the newest per capability and reviewer), and
    tell the subscriptions of its namespace (and of the node) in this transaction."""
    where = (
        _upward.c.namespace == entry["namespace"],
        _upward.c.name == entry["name"],
        _upward.c.reviewer == entry["reviewer"],
    )
    s.execute(_upward.delete().where(*where))
    s.execute(sa.insert(_upward).values(
        namespace=entry["namespace"], name=entry["name"], reviewer=entry["reviewer"],
        state=entry["state"], reason=entry.get("reason"), received_at=utcnow(),
        decided_at=_instant(entry.get("decided_at")),
    ))  # fmt: skip
    data = {k: entry.get(k) for k in ("namespace", "name", "reviewer", "state", "reason",
                                      "decided_at")}  # fmt: skip
    event = webhook_events.Event("review.decided", data, entry["namespace"])
    webhook_events.enqueue(s.connection(), node_id, [event])


def decisions(s: Session, namespace: str, name: str) -> list[Decision]:
    """The decisions the nodes above sent down about ``namespace/name``, nearest first."""
    rows = s.execute(
        sa.select(_upward).where(_upward.c.namespace == namespace, _upward.c.name == name)
    ).all()
    out = [Decision(r.namespace, r.name, r.reviewer, r.state, r.reason, r.decided_at)
           for r in rows]  # fmt: skip
    return sorted(out, key=lambda d: -d.reviewer.count("."))


def _instant(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo is not None else None


def _loaded(item: Any) -> dict[str, Any]:
    if isinstance(item, str):  # SQLite may hand JSON back as text
        return json.loads(item)
    return item
