"""The shape of feed items: what a node accepts from a peer before checking its
signature. Signed does not mean well-formed, so every entry is validated here."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from yunnao.registry import names, schemas
from yunnao.registry.titles import Title

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


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")

    origin: NodeId
    origin_seq: Annotated[int, Field(ge=1)]
    entity: Literal["node", "namespace", "capability", "version"]
    key: Annotated[str, StringConstraints(max_length=600)]
    op: Literal["upsert", "delete"]
    content_hash: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    entry: dict[str, Any]
    at: str
    signature: Annotated[str, StringConstraints(max_length=200)]


def _expected_key(entity: str, entry: dict[str, Any]) -> str:
    if entity in ("node", "namespace"):
        return entry["id"]
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
            }[item.entity].model_validate(entry)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(item)"
        return f"malformed item: {where}: {first['msg']}"
    if _expected_key(item.entity, entry) != item.key:
        return f"item key {item.key!r} does not name its entry"
    return None
