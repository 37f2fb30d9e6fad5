"""The shape of feed items: what a node accepts from a peer before checking its
signature. Signed does not mean well-formed, so every entry is validated here (a usage
item's figures too: bounded in size, non-negative, and adding up)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from yunnao.registry import names, schemas
from yunnao.registry.titles import Title
from yunnao.registry.usage_daily import BUCKETS_MS

NodeId = Annotated[str, StringConstraints(pattern=names.NODE_ID_RE.pattern)]
Share = Literal["up", "all"]


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NodeEntry(_Entry):
    id: NodeId
    parent_id: NodeId | None = None
    public_key: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    title: Title = ""
    title_en: Title = ""


class NamespaceEntry(_Entry):
    id: Annotated[str, StringConstraints(pattern=names.NAMESPACE_RE.pattern)]
    node_id: NodeId
    title: Title = ""
    title_en: Title = ""


class Tombstone(_Entry):
    namespace: Annotated[str, StringConstraints(pattern=names.NAMESPACE_RE.pattern)]
    name: Annotated[str, StringConstraints(pattern=names.NAME_RE.pattern)]


class CapabilityEntry(schemas.CapabilityMeta, Tombstone):
    origin_node: NodeId
    share: Share


class VersionEntry(Tombstone):
    version: schemas.SemVer
    status: schemas.Status
    published_at: str | None = None
    classification: schemas.Classification
    share: Share
    # The origin validated these schemas; here they only need to be objects.
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    examples: list[schemas.Example] = Field(default_factory=list, max_length=50)
    runtime: schemas.RuntimeBinding
    model_uri: Annotated[str, StringConstraints(max_length=1000)] | None = None
    artifact_uri: Annotated[str, StringConstraints(max_length=1000)] | None = None


MAX_USAGE_ROWS = 10_000  # rows of one usage item (a node's capabilities on one day)
Count = Annotated[int, Field(strict=True, ge=0, le=10**12)]


class UsageRowEntry(_Entry):
    """One capability's (or, name "", a namespace's restricted ones') calls on a day."""

    namespace: Annotated[str, StringConstraints(pattern=names.NAMESPACE_RE.pattern)]
    name: Annotated[str, StringConstraints(max_length=64)]
    calls: Count
    ok: Count
    errors: Count
    refused: Count
    invalid: Count
    same_department: Count
    other_department: Count
    other_node: Count
    latency_hist: Annotated[
        list[Count], Field(min_length=len(BUCKETS_MS), max_length=len(BUCKETS_MS))
    ]

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if value and not names.is_name(value):
            raise ValueError('not a capability name (nor "" for restricted ones)')
        return value

    @model_validator(mode="after")
    def _sums(self) -> UsageRowEntry:
        outcomes = self.ok + self.errors + self.refused + self.invalid
        if self.calls != outcomes:
            raise ValueError(f"calls {self.calls} != ok + errors + refused + invalid {outcomes}")
        callers = self.same_department + self.other_department + self.other_node
        if self.calls != callers:
            raise ValueError(
                f"calls {self.calls} != same_department + other_department + other_node {callers}"
            )
        if sum(self.latency_hist) != self.ok + self.errors:
            raise ValueError(
                f"latency_hist holds {sum(self.latency_hist)} calls, not ok + errors "
                f"{self.ok + self.errors}"
            )
        return self


class UsageEntry(_Entry):
    """A node's own usage rows of one Beijing day."""

    node: NodeId
    day: Annotated[str, StringConstraints(pattern=r"^\d{4}-\d{2}-\d{2}$")]
    rows: Annotated[list[UsageRowEntry], Field(max_length=MAX_USAGE_ROWS)]

    @field_validator("day")
    @classmethod
    def _day(cls, value: str) -> str:
        date.fromisoformat(value)  # a real day
        return value

    @model_validator(mode="after")
    def _own(self) -> UsageEntry:
        seen: set[tuple[str, str]] = set()
        for row in self.rows:
            if names.namespace_node(row.namespace) != self.node:
                raise ValueError(f"namespace {row.namespace} is not node {self.node}'s")
            if (row.namespace, row.name) in seen:
                raise ValueError(f"{row.namespace}/{row.name} appears twice")
            seen.add((row.namespace, row.name))
        return self


class ReviewEntry(_Entry):
    """A reviewing node's decision about a capability a node below it shares upward
    (:mod:`~yunnao.cascade.review`): it travels down only, to the owner's side."""

    namespace: Annotated[str, StringConstraints(pattern=names.NAMESPACE_RE.pattern)]
    name: Annotated[str, StringConstraints(pattern=names.NAME_RE.pattern)]
    reviewer: NodeId
    state: Literal["pending", "approved", "refused"]
    reason: Annotated[str, StringConstraints(max_length=500)] | None = None
    decided_at: str | None = None


def review_key(namespace: str, name: str, reviewer: str) -> str:
    """The item key of ``reviewer``'s decision about ``namespace/name``."""
    return f"{namespace}/{name}#{reviewer}"


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")

    origin: NodeId
    origin_seq: Annotated[int, Field(ge=1)]
    entity: Literal["node", "namespace", "capability", "version", "usage", "review"]
    key: Annotated[str, StringConstraints(max_length=600)]
    op: Literal["upsert", "delete"]
    content_hash: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    entry: dict[str, Any]
    at: str
    signature: Annotated[str, StringConstraints(max_length=200)]


def _expected_key(entity: str, entry: dict[str, Any]) -> str:
    if entity in ("node", "namespace"):
        return entry["id"]
    if entity == "usage":
        return f"{entry['node']}/{entry['day']}"
    if entity == "review":
        return review_key(entry["namespace"], entry["name"], entry["reviewer"])
    key = f"{entry['namespace']}/{entry['name']}"
    return f"{key}@{entry['version']}" if entity == "version" else key


def problem(raw: Any) -> str | None:
    """What is wrong with the shape of ``raw``, or None when it is a well-formed item."""
    try:
        item = Item.model_validate(raw)
        entry = item.entry
        if item.op == "delete":
            if item.entity != "capability":
                return f"only capabilities are deleted, not a {item.entity}"
            Tombstone.model_validate(entry)
        else:
            {
                "node": NodeEntry,
                "namespace": NamespaceEntry,
                "capability": CapabilityEntry,
                "version": VersionEntry,
                "usage": UsageEntry,
                "review": ReviewEntry,
            }[item.entity].model_validate(entry)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(item)"
        return f"malformed item: {where}: {first['msg']}"
    if _expected_key(item.entity, entry) != item.key:
        return f"item key {item.key!r} does not name its entry"
    return None
