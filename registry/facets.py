"""An in-memory columnar index of the catalog's facet fields, kept current from the change log.

Search needs, for every query, the total and eight facet counts over everything that
matches, each count ignoring its own facet's filter. As SQL that is nine scans with
GROUP BY, tens of milliseconds each on SQLite at 100,000 entries. Over a few numpy
arrays (facet values as integer codes, tags as (row, tag) pairs) the same work takes
about a millisecond, which is what keeps search under its latency target
(``bench/search.py``).

The database stays the source of truth. The index holds one position per capability
ever seen (tombstones are masked out, not removed), and the change-log sequence
number it reflects; before each query it reads the log's head and applies the
capabilities changed since, so a search never answers from a stale index and every
process sharing one PostgreSQL store sees every write. Applying is idempotent
(rows are re-read in their current state), so reading the head before the rows is
enough for correctness under any isolation level.

Why one module: the snapshot's arrays are written (rebuild, catch-up) and read
(visibility masks, counts, order) by one class under one lock, so their layout is
defined and used in one place.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlmodel import col

from .access import Identity, access_rules, discoverable, grant_matches, note_sight
from .names import namespace_node
from .tables import CapabilityRow, Change

# Facet name -> capability column holding its value ("tag" is multi-valued, kept apart).
SCALAR_FACETS: dict[str, str] = {
    "domain": "domain",
    "node": "origin_node",
    "namespace": "namespace",
    "runtime": "runtime",
    "classification": "classification",
    "status": "status",
    "kind": "kind",
}
TAG = "tag"
FACETS: tuple[str, ...] = (*SCALAR_FACETS, TAG)
TAG_FACET_LIMIT = 30  # tags are open-ended: count the most frequent only

# Past these, catching up row by row costs more than reloading everything.
_MAX_DELTA_KEYS = 20_000
_MAX_DEAD_FRACTION = 0.25
_VISIBLE_CACHE = 256  # callers whose visibility mask a snapshot keeps

_COLUMNS = (
    CapabilityRow.id,
    CapabilityRow.namespace,
    CapabilityRow.name,
    CapabilityRow.tags,
    CapabilityRow.updated_at,
    CapabilityRow.deleted_at,
    CapabilityRow.access,
    *(getattr(CapabilityRow, c) for c in SCALAR_FACETS.values()),
)


class Vocab:
    """The distinct values of one field and their integer codes. Append-only, so codes
    held by older snapshots stay valid; ``-1`` stands for "no value"."""

    def __init__(self) -> None:
        self.values: list[str] = []
        self.codes: dict[str, int] = {}

    def code(self, value: str | None) -> int:
        if value is None:
            return -1
        code = self.codes.get(value)
        if code is None:
            code = self.codes[value] = len(self.values)
            self.values.append(value)
        return code

    def lookup_table(self, size: int, values: Iterable[str]) -> np.ndarray:
        """A boolean table over codes ``0..size-1`` plus a last, always-False slot that
        code ``-1`` indexes; True for ``values``."""
        lut = np.zeros(size + 1, dtype=bool)
        for v in values:
            code = self.codes.get(v)
            if code is not None and code < size:
                lut[code] = True
        return lut


@dataclass(frozen=True)
class Hits:
    """One query's answer from the index: the page's capability ids in order, the total
    number of matches and the facet counts."""

    ids: list[int]
    total: int
    facets: dict[str, dict[str, int]]


@dataclass
class Snapshot:
    """The index at one change-log sequence number. Never modified once published:
    catching up builds a new snapshot, so concurrent queries need no lock."""

    seq: int
    ids: np.ndarray  # int64 capability id per position
    live: np.ndarray  # bool: a live capability (not a tombstone)
    codes: dict[str, np.ndarray]  # facet -> int32 code per position
    rules: np.ndarray  # int32 code of each position's access rules (FacetIndex.rules)
    updated: np.ndarray  # int64 microseconds since the epoch
    tag_doc: np.ndarray  # int32 position of each (capability, tag) pair
    tag_code: np.ndarray  # int32 tag code of each pair
    sizes: dict[str, int]  # vocabulary size per facet when this snapshot was made
    names: list[tuple[str, str]] = field(repr=False)  # (name, namespace) per position
    visible: dict[Identity, tuple[np.ndarray, np.ndarray | None]] = field(
        default_factory=dict, repr=False
    )

    @property
    def dead(self) -> int:
        return int(self.live.size - np.count_nonzero(self.live))

    @cached_property
    def updated_rank(self) -> np.ndarray:
        """Each position's rank in (updated, id) order: unique integer sort keys."""
        return _rank(np.lexsort((self.ids, self.updated)))

    @cached_property
    def tags_by_position(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The (capability, tag) pairs grouped by position: each position's first pair,
        its number of tags, and the pairs' tag codes in that grouping. Counting the tags
        of a few thousand matches then reads their pairs only, not all of them."""
        order = np.argsort(self.tag_doc, kind="stable")
        count = np.bincount(self.tag_doc, minlength=self.ids.size)
        start = np.zeros(self.ids.size, dtype=np.int64)
        np.cumsum(count[:-1], out=start[1:])
        return start, count, self.tag_code[order]

    @cached_property
    def name_rank(self) -> np.ndarray:
        """Each position's rank in (name, namespace) order."""
        order = sorted(range(self.ids.size), key=self.names.__getitem__)
        return _rank(np.asarray(order, dtype=np.int64))


def _rank(order: np.ndarray) -> np.ndarray:
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size, dtype=np.int64)
    return rank


def _micros(value: Any) -> int:
    return int(value.timestamp() * 1_000_000)


class FacetIndex:
    """The facet index of one store (see the module docstring)."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id  # namespaces of other nodes are never in a caller's scope here
        self.vocab: dict[str, Vocab] = {f: Vocab() for f in FACETS}
        self.rules = Vocab()  # distinct access rules, as canonical JSON
        self._snapshot: Snapshot | None = None
        self._positions: dict[str, int] = {}  # "namespace/name" -> position
        self._names: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    # ------------------------------------------------------------ catching up

    def current(self, conn: sa.Connection) -> Snapshot:
        """The index as of at least the change log's head seen through ``conn``."""
        head = conn.execute(sa.select(sa.func.max(col(Change.seq)))).scalar() or 0
        snap = self._snapshot
        if snap is not None and snap.seq >= head:
            return snap
        with self._lock:
            snap = self._snapshot
            if snap is not None and snap.seq >= head:
                return snap
            keys: list[str] | None = None
            if snap is not None and snap.dead <= _MAX_DEAD_FRACTION * max(snap.ids.size, 1):
                keys = self._changed_keys(conn, snap.seq, head)
            try:
                if keys is None:
                    snap = self._rebuild(conn, head)
                else:
                    assert snap is not None
                    snap = self._apply(conn, snap, keys, head)
            except BaseException:
                self._snapshot = None  # positions may be half-updated: rebuild next time
                raise
            self._snapshot = snap
            return snap

    @staticmethod
    def _changed_keys(conn: sa.Connection, since: int, head: int) -> list[str] | None:
        rows = conn.execute(
            sa.select(col(Change.key))
            .where(
                col(Change.seq) > since,
                col(Change.seq) <= head,
                col(Change.entity).in_(("capability", "version")),
            )
            .distinct()
            .limit(_MAX_DELTA_KEYS + 1)
        ).all()
        if len(rows) > _MAX_DELTA_KEYS:
            return None
        # Version keys are "namespace/name@version": their capability changed too.
        return sorted({r[0].split("@", 1)[0] for r in rows})

    def _rebuild(self, conn: sa.Connection, head: int) -> Snapshot:
        rows = conn.execute(
            sa.select(*_COLUMNS)
            .where(col(CapabilityRow.deleted_at).is_(None))
            .order_by(col(CapabilityRow.id))
        )
        self._positions, self._names = {}, []
        ids: list[int] = []
        updated: list[int] = []
        rules: list[int] = []
        codes: dict[str, list[int]] = {f: [] for f in SCALAR_FACETS}
        tag_doc: list[int] = []
        tag_code: list[int] = []
        tag_vocab = self.vocab[TAG]
        for r in rows:
            pos = len(ids)
            self._positions[f"{r.namespace}/{r.name}"] = pos
            self._names.append((r.name, r.namespace))
            ids.append(r.id)
            updated.append(_micros(r.updated_at))
            rules.append(self._rules_code(r.access))
            for facet, column in SCALAR_FACETS.items():
                codes[facet].append(self.vocab[facet].code(getattr(r, column)))
            for tag in r.tags:
                tag_doc.append(pos)
                tag_code.append(tag_vocab.code(tag))
        return Snapshot(
            seq=head,
            ids=np.asarray(ids, dtype=np.int64),
            live=np.ones(len(ids), dtype=bool),
            codes={f: np.asarray(v, dtype=np.int32) for f, v in codes.items()},
            rules=np.asarray(rules, dtype=np.int32),
            updated=np.asarray(updated, dtype=np.int64),
            tag_doc=np.asarray(tag_doc, dtype=np.int32),
            tag_code=np.asarray(tag_code, dtype=np.int32),
            sizes={f: len(v.values) for f, v in self.vocab.items()},
            names=self._names,
        )

    def _rules_code(self, access: dict[str, Any] | None) -> int:
        return self.rules.code(json.dumps(access or {}, sort_keys=True))

    def _apply(
        self, conn: sa.Connection, snap: Snapshot, keys: Sequence[str], head: int
    ) -> Snapshot:
        found: dict[str, Any] = {}
        pairs = [tuple(k.split("/", 1)) for k in keys]
        for i in range(0, len(pairs), 500):
            chunk = pairs[i : i + 500]
            wanted = set(chunk)
            # Two IN lists, not a row-value IN: SQLite answers that one with a full scan.
            stmt = sa.select(*_COLUMNS).where(
                col(CapabilityRow.namespace).in_({p[0] for p in chunk}),
                col(CapabilityRow.name).in_({p[-1] for p in chunk}),
            )
            for r in conn.execute(stmt):
                if (r.namespace, r.name) in wanted:
                    found[f"{r.namespace}/{r.name}"] = r

        # New capabilities go to the end in id order: positions stay sorted by id, which
        # search's id -> position lookup (searchsorted) relies on.
        appended = sorted(
            (k for k in keys if k not in self._positions and _alive(found.get(k))),
            key=lambda k: found[k].id,
        )
        if appended and _last_id(snap) >= found[appended[0]].id:
            return self._rebuild(conn, head)
        n = snap.ids.size + len(appended)
        ids = np.resize(snap.ids, n)
        live = np.resize(snap.live, n)
        updated = np.resize(snap.updated, n)
        rules = np.resize(snap.rules, n)
        codes = {f: np.resize(a, n) for f, a in snap.codes.items()}
        for k in appended:
            self._positions[k] = len(self._names)
            ns, name = k.split("/", 1)
            self._names.append((name, ns))

        touched: list[int] = []
        new_doc: list[int] = []
        new_code: list[int] = []
        for k in keys:
            pos = self._positions.get(k)
            if pos is None:
                continue  # created and deleted between two queries: never indexed
            touched.append(pos)
            r = found.get(k)
            if not _alive(r):
                live[pos] = False
                continue
            live[pos] = True
            ids[pos] = r.id
            updated[pos] = _micros(r.updated_at)
            rules[pos] = self._rules_code(r.access)
            for facet, column in SCALAR_FACETS.items():
                codes[facet][pos] = self.vocab[facet].code(getattr(r, column))
            for tag in r.tags:
                new_doc.append(pos)
                new_code.append(self.vocab[TAG].code(tag))
        keep = ~np.isin(snap.tag_doc, np.asarray(touched, dtype=np.int32))
        return Snapshot(
            seq=head,
            ids=ids,
            live=live,
            codes=codes,
            rules=rules,
            updated=updated,
            tag_doc=np.concatenate([snap.tag_doc[keep], np.asarray(new_doc, dtype=np.int32)]),
            tag_code=np.concatenate([snap.tag_code[keep], np.asarray(new_code, dtype=np.int32)]),
            sizes={f: len(v.values) for f, v in self.vocab.items()},
            names=self._names,
        )

    # ------------------------------------------------------------ querying

    def query(
        self,
        snap: Snapshot,
        identity: Identity,
        *,
        filters: Mapping[str, Sequence[str]],
        match: tuple[np.ndarray, np.ndarray] | None,
        sort: str,
        offset: int,
        limit: int,
        facets: Sequence[str],
    ) -> Hits:
        """Filter, count facets, sort and page over ``snap``.

        ``match`` is the full-text result, (capability ids, scores where lower ranks
        first), or None for no text query. Values within one facet are alternatives,
        except tags, which must all be present; facets combine with AND. Each facet's
        counts apply every filter but its own, so a user can widen a chosen facet.
        """
        visible, sight_only = self._visible(snap, identity)
        base = snap.live & visible
        score: np.ndarray | None = None
        if match is not None:
            match_ids, match_scores = match
            pos = np.searchsorted(snap.ids, match_ids)
            ok = pos < snap.ids.size
            ok[ok] = snap.ids[pos[ok]] == match_ids[ok]
            matched = np.zeros(snap.ids.size, dtype=bool)
            matched[pos[ok]] = True
            base &= matched
            score = np.full(snap.ids.size, np.inf)
            score[pos[ok]] = match_scores[ok]

        masks = {f: self._mask(snap, f, v) for f, v in filters.items() if v}
        hits = base.copy()
        for m in masks.values():
            hits &= m
        if sight_only is not None and (hits & sight_only).any():
            note_sight(
                self.vocab["namespace"].values[c]
                for c in snap.codes["namespace"][hits & sight_only]
            )

        positions = np.flatnonzero(hits)
        counts: dict[str, dict[str, int]] = {}
        for facet in facets:
            within = positions
            if facet in masks:
                mask = base.copy()
                for other, m in masks.items():
                    if other != facet:
                        mask &= m
                within = np.flatnonzero(mask)
            counts[facet] = self._count(snap, facet, within)

        page = self._order(snap, positions, sort, score, offset + limit)[offset:]
        return Hits(ids=snap.ids[page].tolist(), total=int(positions.size), facets=counts)

    def _visible(self, snap: Snapshot, identity: Identity) -> tuple[np.ndarray, np.ndarray | None]:
        """:func:`~yunnao.registry.access.discoverable` over every position, and the
        positions seen only through administrative sight (None when there are none):
        evaluated once per combination of classification, status, staff, writable,
        granted and access rules, then looked up. Kept per snapshot for the callers seen
        recently (the snapshot never changes)."""
        masks = snap.visible.get(identity)
        if masks is None:
            if len(snap.visible) >= _VISIBLE_CACHE:
                snap.visible.clear()
            masks = snap.visible[identity] = self._visible_masks(snap, identity)
        return masks

    def _visible_masks(
        self, snap: Snapshot, identity: Identity
    ) -> tuple[np.ndarray, np.ndarray | None]:
        ns_values = self.vocab["namespace"].values[: snap.sizes["namespace"]]
        member = np.zeros(len(ns_values) + 1, dtype=np.int64)
        sight = np.zeros(len(ns_values) + 1, dtype=np.int64)
        writable = np.zeros(len(ns_values) + 1, dtype=np.int64)
        own_node = np.zeros(len(ns_values) + 1, dtype=bool)  # owned by the caller's node
        if identity.authenticated:
            for i, ns in enumerate(ns_values):
                local = namespace_node(ns) == self.node_id
                member[i] = identity.member_of(ns, local=local)
                sight[i] = not member[i] and identity.administers(ns, local=local)
                writable[i] = local and identity.writes(ns)
                own_node[i] = namespace_node(ns) == identity.node
        classes = self.vocab["classification"].values[: snap.sizes["classification"]]
        statuses = self.vocab["status"].values[: snap.sizes["status"]]
        # Codes of rules seen by this snapshot: those appended later are not in it.
        rule_sets = [
            access_rules(json.loads(text))
            for text in self.rules.values[: int(snap.rules.max(initial=-1)) + 1]
        ]
        # Grants name a subject with its node: a plain subject is one of the node owning
        # the entry, so whether a rule set grants the caller can depend on the namespace.
        named = np.zeros(len(rule_sets) + 1, dtype=bool)  # {"subject", "node"} matches
        plain = np.zeros(len(rule_sets) + 1, dtype=bool)  # a plain subject matches
        if identity.subject is not None and identity.node is not None:
            for k, rules in enumerate(rule_sets):
                for g in rules.grants:
                    if isinstance(g, str):
                        plain[k] |= g == identity.subject
                    else:
                        named[k] |= grant_matches(identity, g, "")
        lut = np.zeros(
            (len(classes) + 1, len(statuses) + 1, 2, 2, 2, len(rule_sets) + 1), dtype=bool
        )
        for i, c in enumerate(classes):
            for j, st in enumerate(statuses):
                for a, b, g in itertools.product((0, 1), repeat=3):
                    for k, rules in enumerate(rule_sets):
                        lut[i, j, a, b, g, k] = discoverable(
                            identity,
                            classification=c,
                            status=st,
                            staff=bool(a),
                            writable=bool(b),
                            granted=bool(g),
                            access=rules,
                        )
        ns = snap.codes["namespace"]
        cls, status, rules = snap.codes["classification"], snap.codes["status"], snap.rules
        grant = named[rules] | (plain[rules] & own_node[ns])
        mask = lut[cls, status, member[ns] | sight[ns], writable[ns], grant.astype(np.int64), rules]
        if not sight.any():
            return mask, None
        without = lut[cls, status, member[ns], writable[ns], grant.astype(np.int64), rules]
        extra = mask & ~without
        return mask, (extra if extra.any() else None)

    def _mask(self, snap: Snapshot, facet: str, values: Sequence[str]) -> np.ndarray:
        vocab = self.vocab[facet]
        if facet != TAG:
            return vocab.lookup_table(snap.sizes[facet], values)[snap.codes[facet]]
        mask = np.ones(snap.ids.size, dtype=bool)
        for tag in values:
            code = vocab.codes.get(tag)
            has = np.zeros(snap.ids.size, dtype=bool)
            if code is not None:
                has[snap.tag_doc[snap.tag_code == code]] = True
            mask &= has
        return mask

    def _count(self, snap: Snapshot, facet: str, within: np.ndarray) -> dict[str, int]:
        """Counts of ``facet``'s values over the positions ``within`` (gathering their
        codes: a search's matches are usually a small share of the catalog)."""
        size = snap.sizes[facet]
        if facet == TAG:
            start, count, codes = snap.tags_by_position
            n = count[within]
            # The pairs of each position in ``within``: its start, start + 1, ...
            first = np.repeat(start[within] - np.cumsum(n) + n, n)
            counts = np.bincount(codes[first + np.arange(first.size)], minlength=size)
        else:
            codes = snap.codes[facet][within]
            counts = np.bincount(codes[codes >= 0], minlength=size)
        values = self.vocab[facet].values
        present = np.flatnonzero(counts)
        ranked = sorted((-int(counts[c]), values[c]) for c in present)
        if facet == TAG:
            ranked = ranked[:TAG_FACET_LIMIT]
        return {value: -negative for negative, value in ranked}

    @staticmethod
    def _order(
        snap: Snapshot, positions: np.ndarray, sort: str, score: np.ndarray | None, k: int
    ) -> np.ndarray:
        """The first ``k`` of ``positions`` in ``sort`` order (ties broken by id)."""
        if sort == "relevance" and score is not None:
            order = np.lexsort((snap.ids[positions], score[positions]))
            return positions[order[:k]]
        if sort in ("name", "-name"):
            keys = snap.name_rank[positions]
        else:
            keys = snap.updated_rank[positions]
        if sort in ("-name", "-updated", "relevance"):  # relevance without text: newest first
            keys = -keys
        if positions.size > k:
            top = np.argpartition(keys, k - 1)[:k]
            return positions[top[np.argsort(keys[top])]]
        return positions[np.argsort(keys)]


def _last_id(snap: Snapshot) -> int:
    return int(snap.ids[-1]) if snap.ids.size else -1


def _alive(row: Any) -> bool:
    return row is not None and row.deleted_at is None
