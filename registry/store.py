"""The registry store: every read and write of capabilities, versions and namespaces.

Each write runs in one serialized transaction (:func:`~yunnao.registry.db.write_session`)
that also updates the search index and appends to the change log, so a write is either
wholly there (row, index, change) or not at all. Rows become what the API shows (with
their ETags) in :mod:`.representations`.

Why one module: :class:`RegistryStore`'s reads and writes share its row lookups (visible,
live, owned) and its write transaction, so they stay one class.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from yunnao.plugins.errors import (
    Conflict,
    FieldError,
    Forbidden,
    NotFound,
    ValidationFailed,
)

from . import compat, lifecycle, names, schemas, search
from .access import Identity, may_discover
from .db import read_session, write_session
from .facets import FacetIndex
from .hashing import content_hash
from .models import own_model_rule, own_model_version
from .representations import (
    capability_etag,
    capability_out,
    check_precondition,
    summary_out,
    version_etag,
    version_out,
)
from .tables import (
    CapabilityRow,
    CapabilityTag,
    Change,
    Namespace,
    Node,
    VersionRow,
    utcnow,
)
from .webhooks import events as webhook_events

_META_FIELDS = tuple(schemas.CapabilityMeta.model_fields)
_LOGGED = "yunnao_logged"  # Session.info: the changes a write transaction logged
_VERSION_FIELDS = tuple(schemas.VersionSpec.model_fields)


def compact_access(access: schemas.Access) -> dict[str, Any]:
    """An entry's access rules as stored: only what differs from no rules, so equal
    rules are equal JSON (search groups entries by them)."""
    return access.model_dump(mode="json", exclude_defaults=True)


def _check_model(namespace: str, name: str, spec: schemas.VersionSpec) -> None:
    """A version names no model but its own: ``models:/{namespace}.{name}/N`` of this
    node's MLflow (whether N exists there is the publishing path's check, which can ask
    MLflow). Whatever writes a version goes through here, so no other location is stored."""
    if spec.model_uri is not None and own_model_version(namespace, name, spec.model_uri) is None:
        rule = own_model_rule(namespace, name)
        raise ValidationFailed(
            f"model_uri {spec.model_uri!r} {rule}", errors=[FieldError("model_uri", rule)]
        )
    if spec.artifact_uri is not None and spec.model_uri is None:
        why = "set by the node with the version's model_uri; without a model there is none"
        raise ValidationFailed(f"artifact_uri: {why}", errors=[FieldError("artifact_uri", why)])


def _meta_hash(row: CapabilityRow) -> str:
    return content_hash({f: getattr(row, f) for f in _META_FIELDS})


@dataclass(frozen=True)
class Page:
    items: list[schemas.CapabilitySummary]
    total: int
    facets: dict[str, dict[str, int]]


@dataclass(frozen=True)
class Resolution:
    """What a call resolved to: the version, and what access rules need of its capability."""

    classification: str
    capability_status: str
    version: schemas.Version
    access: dict[str, Any] = field(default_factory=dict)
    origin_node: str = ""
    via_node: str | None = None  # a cascaded entry: the linked node it came through


class RegistryStore:
    """Capabilities of one node, stored in SQLite or PostgreSQL through one engine."""

    def __init__(self, engine: sa.Engine, node_id: str) -> None:
        self.engine = engine
        self.node_id = node_id
        self.facet_index = FacetIndex(node_id)
        # Bumped after every write through this store, so caches in this process (the
        # gateway's resolution cache) see the node's own writes at once.
        self.generation = 0
        self._after_write: list[Callable[[], None]] = []
        # Signs the changes a write logged, in its transaction (the cascade's feed).
        self.signer: Callable[[Session, list[Change]], None] | None = None

    def after_write(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` (thread-safe, cheap, never raising) after every write
        transaction through this store ends, such as the cascade's head watcher."""
        self._after_write.append(hook)

    @contextlib.contextmanager
    def _write(self) -> Iterator[Session]:
        try:
            with write_session(self.engine) as s:
                yield s
                logged = s.info.pop(_LOGGED, None)
                if logged and self.signer is not None:
                    s.flush()  # a change's sequence number is part of what is signed
                    self.signer(s, logged)
        finally:
            self.generation += 1
            for hook in self._after_write:
                hook()

    def _notify(self, s: Session, event: webhook_events.Event | None) -> None:
        """Webhook deliveries of ``event``, in the write's own transaction."""
        if event is not None:
            webhook_events.enqueue(s.connection(), self.node_id, [event])

    def transaction(self) -> contextlib.AbstractContextManager[Session]:
        """A write transaction of this store (serialized, all or nothing), for writes
        made outside it, such as entries applied from other nodes."""
        return self._write()

    # ------------------------------------------------------------ node

    def ensure_node(self, *, title: str = "", public_key: str | None = None) -> None:
        """Record this node (idempotent; refreshes its public key)."""
        with self._write() as s:
            node = s.get(Node, self.node_id)
            if node is None:
                s.add(Node(id=self.node_id, title=title, public_key=public_key))
            elif node.public_key != public_key:
                node.public_key = public_key
                s.add(node)

    # ------------------------------------------------------------ reads

    def describe(
        self, identity: Identity, namespace: str, name: str
    ) -> tuple[schemas.Capability, str]:
        """The full capability (with its version list) and its ETag."""
        with read_session(self.engine) as s:
            row = self._visible(s, identity, namespace, name)
            versions = self._version_numbers(s, row)
            return capability_out(row, versions), capability_etag(row)

    def list_versions(self, identity: Identity, namespace: str, name: str) -> list[schemas.Version]:
        with read_session(self.engine) as s:
            row = self._visible(s, identity, namespace, name)
            rows = s.exec(select(VersionRow).where(VersionRow.capability_id == row.id)).all()
            order = names.sort_versions([v.version for v in rows])
            by_number = {v.version: v for v in rows}
            return [version_out(row, by_number[n]) for n in order]

    def get_version(
        self, identity: Identity, namespace: str, name: str, version: str
    ) -> tuple[schemas.Version, str]:
        with read_session(self.engine) as s:
            row = self._visible(s, identity, namespace, name)
            vrow = self._version_row(s, row, version)
            return version_out(row, vrow), version_etag(vrow)

    def version_numbers(self, namespace: str, name: str) -> list[str]:
        """The version numbers of a live capability, newest first ([] if there is none).
        No access check: for the node's own publishing path."""
        with read_session(self.engine) as s:
            row = self._find(s, namespace, name)
            if row is None or row.deleted_at is not None:
                return []
            return self._version_numbers(s, row)

    def check_compatible(self, namespace: str, name: str, spec: schemas.PublishRequest) -> None:
        """Refuse now (``BreakingChange``) what :meth:`publish` would refuse as breaking
        callers, before a publish does costly work such as logging a model."""
        with read_session(self.engine) as s:
            row = self._find(s, namespace, name)
            if row is not None and row.deleted_at is None:
                compat.check_publish(s, row, spec)

    def resolve(self, namespace: str, name: str, ref: str | None = None) -> Resolution:
        """The version a call of ``namespace/name`` means: ``ref`` a version number,
        ``latest`` (the newest published version) or None (the capability's current
        version). No access check: the caller (the gateway) applies it."""
        with read_session(self.engine) as s:
            row = self._live(s, namespace, name)
            if ref is None:
                number = row.latest_version
            elif ref == "latest":
                published = s.exec(
                    select(VersionRow.version).where(
                        VersionRow.capability_id == row.id, VersionRow.status == "published"
                    )
                ).all()
                number = names.sort_versions(list(published))[0] if published else None
            else:
                number = ref
            if number is None:
                raise NotFound(f"{namespace}/{name} has no {ref or 'current'} version")
            vrow = self._version_row(s, row, number)
            return Resolution(
                classification=row.classification,
                capability_status=row.status,
                access=row.access or {},
                version=version_out(row, vrow),
                origin_node=row.origin_node,
                via_node=row.via_node,
            )

    def discoverable(self, identity: Identity, namespace: str, name: str) -> bool:
        """Does ``namespace/name`` exist for ``identity``?"""
        with read_session(self.engine) as s:
            row = self._find(s, namespace, name)
            return row is not None and may_discover(identity, row)

    def version_of_model(self, namespace: str, name: str, model_uri: str) -> str | None:
        """The version number whose MLflow model is ``model_uri`` (for MLflow aliases)."""
        with read_session(self.engine) as s:
            row = self._live(s, namespace, name)
            return s.exec(
                select(VersionRow.version).where(
                    VersionRow.capability_id == row.id, VersionRow.model_uri == model_uri
                )
            ).first()

    def search(self, identity: Identity, query: search.SearchQuery) -> Page:
        with read_session(self.engine) as s:
            result = search.search(s, self.facet_index, query, identity)
            return Page(
                items=[summary_out(r) for r in result.rows],
                total=result.total,
                facets=result.facets,
            )

    def warm(self) -> None:
        """Load the facet index now rather than on the first search."""
        with read_session(self.engine) as s:
            self.facet_index.current(s.connection())

    def changes(self, since: int = 0, limit: int = 100) -> list[Change]:
        """The change log after ``since``, oldest first."""
        with read_session(self.engine) as s:
            stmt = (
                select(Change).where(col(Change.seq) > since).order_by(col(Change.seq)).limit(limit)
            )
            return list(s.exec(stmt).all())

    # ------------------------------------------------------------ writes

    def publish(self, namespace: str, name: str, spec: schemas.PublishRequest) -> schemas.Version:
        """Publish ``spec`` as a new version (creating the capability on its first)."""
        with self._write() as s:
            return self._publish(s, namespace, name, spec)

    def publish_many(
        self,
        items: Iterable[tuple[str, str, schemas.PublishRequest]],
        *,
        also: Callable[[Session], None] | None = None,
    ) -> int:
        """Publish many versions in one transaction (bulk loads); all or nothing.
        ``also`` (a hook) writes further rows in that transaction, after the versions."""
        count = 0
        with self._write() as s:
            for namespace, name, spec in items:
                self._publish(s, namespace, name, spec)
                count += 1
            if also is not None:
                s.flush()
                also(s)
        return count

    def update_metadata(
        self,
        namespace: str,
        name: str,
        patch: schemas.MetaPatch,
        *,
        if_match: str | None = None,
    ) -> tuple[schemas.Capability, str]:
        with self._write() as s:
            row = self._owned(s, namespace, name)
            check_precondition(if_match, capability_etag(row), f"{namespace}/{name}")
            changes = patch.model_dump(exclude_unset=True)
            if patch.access is not None:
                changes["access"] = compact_access(patch.access)
            elif "access" in changes:
                changes["access"] = {}
            reclassified = changes.get("classification", row.classification) != row.classification
            for key, value in changes.items():
                setattr(row, key, value)
            row.content_hash = _meta_hash(row)
            row.updated_at = utcnow()
            row.ever_shared = row.ever_shared or row.classification != "restricted"
            s.add(row)
            if "tags" in changes:
                self._set_tags(s, row)
            s.flush()
            search.index(s, row)
            self._log(s, "capability", f"{namespace}/{name}", "upsert", row.content_hash)
            if reclassified:
                # Versions carry their capability's classification in the feed: log them
                # again, so the cascade sends them (or stops sending them) accordingly.
                for vrow in s.exec(select(VersionRow).where(VersionRow.capability_id == row.id)):
                    key = f"{namespace}/{name}@{vrow.version}"
                    self._log(s, "version", key, "upsert", vrow.content_hash)
            versions = self._version_numbers(s, row)
            return capability_out(row, versions), capability_etag(row)

    def transition(
        self,
        namespace: str,
        name: str,
        version: str,
        target: str,
        *,
        if_match: str | None = None,
    ) -> tuple[schemas.Version, str]:
        """Move a version along its lifecycle (see :mod:`~yunnao.registry.lifecycle`)."""
        with self._write() as s:
            row = self._owned(s, namespace, name)
            vrow = self._version_row(s, row, version)
            check_precondition(if_match, version_etag(vrow), f"{namespace}/{name}@{version}")
            lifecycle.check(vrow.status, target)
            now = utcnow()
            vrow.status = target
            vrow.updated_at = now
            if target == "published" and vrow.published_at is None:
                vrow.published_at = now
            s.add(vrow)
            self._refresh_current(s, row)
            row.updated_at = now
            s.add(row)
            self._log(s, "version", f"{namespace}/{name}@{version}", "upsert", vrow.content_hash)
            self._notify(s, webhook_events.version_event(row, vrow, target))
            return version_out(row, vrow), version_etag(vrow)

    def set_runtime(
        self,
        namespace: str,
        name: str,
        version: str,
        binding: schemas.RuntimeBinding,
        *,
        if_match: str | None = None,
    ) -> tuple[schemas.Version, str]:
        """Bind a version to another runtime (or reconfigure it) without republishing."""
        with self._write() as s:
            row = self._owned(s, namespace, name)
            vrow = self._version_row(s, row, version)
            check_precondition(if_match, version_etag(vrow), f"{namespace}/{name}@{version}")
            vrow.runtime = binding.model_dump(mode="json")
            body = {f: getattr(vrow, f) for f in _VERSION_FIELDS}
            vrow.content_hash = content_hash({"version": version, **body})
            vrow.updated_at = row.updated_at = utcnow()
            s.add(vrow)
            self._refresh_current(s, row)
            s.add(row)
            s.flush()
            search.index(s, row)
            self._log(s, "version", f"{namespace}/{name}@{version}", "upsert", vrow.content_hash)
            return version_out(row, vrow), version_etag(vrow)

    def delete(self, namespace: str, name: str, *, if_match: str | None = None) -> None:
        """Tombstone a capability: its row stays as a tombstone for the change log, its
        versions, tags and index entry go; a later publish of the name starts afresh."""
        with self._write() as s:
            row = self._owned(s, namespace, name)
            check_precondition(if_match, capability_etag(row), f"{namespace}/{name}")
            row.deleted_at = row.updated_at = utcnow()
            row.tags = []
            s.add(row)
            self._set_tags(s, row)
            s.execute(sa.delete(VersionRow).where(col(VersionRow.capability_id) == row.id))
            search.unindex(s, row.id)  # type: ignore[arg-type]
            self._log(s, "capability", f"{namespace}/{name}", "delete", row.content_hash)

    # ------------------------------------------------------------ internals

    def _publish(
        self, s: Session, namespace: str, name: str, spec: schemas.PublishRequest
    ) -> schemas.Version:
        self._check_owner(namespace)
        _check_model(namespace, name, spec)
        self._ensure_namespace(s, namespace)
        row = s.exec(
            select(CapabilityRow).where(
                CapabilityRow.namespace == namespace, CapabilityRow.name == name
            )
        ).first()
        now = utcnow()
        meta = spec.model_dump(include=set(_META_FIELDS))
        meta["access"] = compact_access(spec.access)
        if row is not None and "access" not in spec.model_fields_set:
            del meta["access"]  # a version published without rules keeps the admin's
        if row is None:
            row = CapabilityRow(
                namespace=namespace,
                name=name,
                origin_node=self.node_id,
                status=spec.status,
                content_hash="",
                created_at=now,
                **meta,
            )
        else:
            numbers = self._version_numbers(s, row)
            if spec.version in numbers:
                raise Conflict(
                    f"{namespace}/{name}@{spec.version} already exists; versions are immutable, "
                    "publish a new version number",
                    errors=[FieldError("version", f"{spec.version} is already taken")],
                )
            compat.check_publish(s, row, spec)
            # The capability describes its newest line: a backport (1.9.1 after 2.0.0)
            # adds a version without rolling the description back.
            if not numbers or names.sort_versions([*numbers, spec.version])[0] == spec.version:
                for key, value in meta.items():
                    setattr(row, key, value)
            if row.deleted_at is not None:
                row.deleted_at, row.created_at = None, now
        row.content_hash = _meta_hash(row)
        row.updated_at = now
        row.ever_shared = row.ever_shared or row.classification != "restricted"
        s.add(row)
        s.flush()
        self._set_tags(s, row)
        body = spec.model_dump(include=set(_VERSION_FIELDS), mode="json")
        vrow = VersionRow(
            capability_id=row.id,  # type: ignore[arg-type]
            version=spec.version,
            status=spec.status,
            content_hash=content_hash({"version": spec.version, **body}),
            created_at=now,
            updated_at=now,
            published_at=now if spec.status == "published" else None,
            **body,
        )
        s.add(vrow)
        s.flush()
        self._refresh_current(s, row)
        s.add(row)
        s.flush()
        search.index(s, row)
        key = f"{namespace}/{name}"
        self._log(s, "capability", key, "upsert", row.content_hash)
        self._log(s, "version", f"{key}@{spec.version}", "upsert", vrow.content_hash)
        self._notify(s, webhook_events.version_event(row, vrow, spec.status))
        return version_out(row, vrow)

    def _ensure_namespace(self, s: Session, namespace: str) -> None:
        if s.get(Namespace, namespace) is not None:
            return
        if s.get(Node, self.node_id) is None:
            s.add(Node(id=self.node_id))
            s.flush()
        s.add(Namespace(id=namespace, node_id=self.node_id))
        s.flush()
        self._log(s, "namespace", namespace, "upsert", content_hash({"id": namespace}))

    def _set_tags(self, s: Session, row: CapabilityRow) -> None:
        s.execute(sa.delete(CapabilityTag).where(col(CapabilityTag.capability_id) == row.id))
        for tag in row.tags:
            s.add(CapabilityTag(capability_id=row.id, tag=tag))  # type: ignore[arg-type]

    def _refresh_current(self, s: Session, row: CapabilityRow) -> None:
        """Point the capability at its current version (see lifecycle.CURRENT_PREFERENCE)."""
        rows = s.exec(
            select(VersionRow.version, VersionRow.status, VersionRow.runtime).where(
                VersionRow.capability_id == row.id
            )
        ).all()
        for status in lifecycle.CURRENT_PREFERENCE:
            candidates = [r for r in rows if r.status == status]
            if candidates:
                newest = names.sort_versions([r.version for r in candidates])[0]
                current = next(r for r in candidates if r.version == newest)
                row.latest_version = current.version
                row.status = current.status
                row.runtime = current.runtime.get("type")
                return

    def _log(self, s: Session, entity: str, key: str, op: str, digest: str) -> None:
        node = self.node_id
        change = Change(entity=entity, key=key, op=op, content_hash=digest, origin_node=node)
        s.add(change)
        s.info.setdefault(_LOGGED, []).append(change)

    def _find(self, s: Session, namespace: str, name: str) -> CapabilityRow | None:
        return s.exec(
            select(CapabilityRow).where(
                CapabilityRow.namespace == namespace, CapabilityRow.name == name
            )
        ).first()

    def _owned(self, s: Session, namespace: str, name: str) -> CapabilityRow:
        """A live capability this node may change: one of its own namespaces'."""
        self._check_owner(namespace)
        return self._live(s, namespace, name)

    def _check_owner(self, namespace: str) -> None:
        owner = names.namespace_node(namespace)
        if owner != self.node_id:
            raise Forbidden(
                f"namespace {namespace!r} belongs to node {owner!r}; this node is "
                f"{self.node_id!r} and may only change its own namespaces"
            )

    def _live(self, s: Session, namespace: str, name: str) -> CapabilityRow:
        row = self._find(s, namespace, name)
        if row is None or row.deleted_at is not None:
            raise NotFound(f"no capability {namespace}/{name}")
        return row

    def _visible(self, s: Session, identity: Identity, namespace: str, name: str) -> CapabilityRow:
        row = self._find(s, namespace, name)
        # Hidden and absent look the same, so probing cannot reveal restricted entries.
        if row is None or not may_discover(identity, row):
            raise NotFound(f"no capability {namespace}/{name}")
        return row

    def _version_row(self, s: Session, row: CapabilityRow, version: str) -> VersionRow:
        vrow = s.exec(
            select(VersionRow).where(
                VersionRow.capability_id == row.id, VersionRow.version == version
            )
        ).first()
        if vrow is None:
            raise NotFound(f"no version {version} of {row.namespace}/{row.name}")
        return vrow

    def _version_numbers(self, s: Session, row: CapabilityRow) -> list[str]:
        numbers = s.exec(select(VersionRow.version).where(VersionRow.capability_id == row.id)).all()
        return names.sort_versions(list(numbers))
