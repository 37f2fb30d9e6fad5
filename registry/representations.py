"""What the API shows of a stored capability: rows as the catalog's representations
(summary, full capability, version) and their strong ETags, with the ``If-Match`` check
a write makes against them."""

from __future__ import annotations

import hashlib
from typing import Any

from yunnao.plugins.errors import PreconditionFailed

from . import schemas
from .access import access_rules
from .tables import CapabilityRow, VersionRow


def capability_etag(row: CapabilityRow) -> str:
    """Strong ETag of a capability's representation: every write bumps ``updated_at``."""
    seed = f"{row.content_hash}|{row.status}|{row.latest_version}|{row.updated_at.isoformat()}"
    return '"' + hashlib.sha256(seed.encode()).hexdigest()[:32] + '"'


def version_etag(row: VersionRow) -> str:
    seed = f"{row.content_hash}|{row.status}|{row.updated_at.isoformat()}"
    return '"' + hashlib.sha256(seed.encode()).hexdigest()[:32] + '"'


def check_precondition(if_match: str | None, current: str, what: str) -> None:
    if if_match is None:
        return
    offered = {tag.strip() for tag in if_match.split(",")}
    if "*" not in offered and current not in offered:
        raise PreconditionFailed(
            f"{what} has changed since you read it (If-Match {if_match} is not the current "
            f"ETag {current}); read it again and retry"
        )


def _summary_fields(row: CapabilityRow) -> dict[str, Any]:
    return {
        "id": f"{row.namespace}/{row.name}",
        "namespace": row.namespace,
        "name": row.name,
        "title": row.title,
        "summary": row.summary,
        "summary_en": row.summary_en,
        "kind": row.kind,
        "domain": row.domain,
        "tags": row.tags,
        "classification": row.classification,
        "status": row.status,
        "latest_version": row.latest_version,
        "runtime": row.runtime,
        "origin_node": row.origin_node,
        "updated_at": row.updated_at,
    }


def summary_out(row: CapabilityRow) -> schemas.CapabilitySummary:
    return schemas.CapabilitySummary(**_summary_fields(row))


def capability_out(row: CapabilityRow, versions: list[str]) -> schemas.Capability:
    return schemas.Capability(
        **_summary_fields(row),
        description=row.description,
        description_en=row.description_en,
        access=access_rules(row.access),
        owner=row.owner,
        contact=row.contact,
        license=row.license,
        versions=versions,
        created_at=row.created_at,
        content_hash=row.content_hash,
    )


def version_out(row: CapabilityRow, v: VersionRow) -> schemas.Version:
    return schemas.Version(
        id=f"{row.namespace}/{row.name}@{v.version}",
        namespace=row.namespace,
        name=row.name,
        version=v.version,
        status=v.status,  # type: ignore[arg-type]
        input_schema=v.input_schema,
        output_schema=v.output_schema,
        examples=[schemas.Example(**e) for e in v.examples],
        runtime=schemas.RuntimeBinding(**v.runtime),
        model_uri=v.model_uri,
        artifact_uri=v.artifact_uri,
        content_hash=v.content_hash,
        created_at=v.created_at,
        updated_at=v.updated_at,
        published_at=v.published_at,
    )
