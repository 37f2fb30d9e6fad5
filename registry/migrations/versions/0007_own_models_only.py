"""A version names no model but its own: clear the model locations authors chose.

Until this revision a version's ``model_uri`` was whatever its author sent, and the
in-process runtime handed it to MLflow's loader (a path, a URL, a run, or another
department's registered model). From now on the only model a version of
``namespace/name`` runs is a numbered version of the model this node logged for
``namespace.name`` in its own MLflow: ``models:/{namespace}.{name}/N``.

This revision checks every version of this node's own capabilities (``via_node`` is
NULL; replicas received through the cascade never run here, they are forwarded to
their origin, which checks its own rows). A version whose ``model_uri`` is not of that
form loses it: ``model_uri`` and ``artifact_uri`` become NULL, so nothing can load it
(the version still runs a plugin of its own namespace loaded at the node, or answers
409 not-deployable). So does an ``artifact_uri`` without a model. Each cleared version
gets a new content hash and a change in the change log (so followers receive the
cleared version), and is logged as a warning naming the version and the location it
named. The downgrade does not restore them: the locations were never the node's.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

import hashlib
import json
import logging
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("yunnao.migrations")

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
# As registry.models.MODEL_URI and registry.hashing were when this revision was written.
MODEL_URI = re.compile(
    r"^models:/(?P<name>[a-z0-9][a-z0-9._-]{0,434})/(?P<version>[1-9][0-9]{0,9})$"
)
VERSION_FIELDS = (
    "input_schema",
    "output_schema",
    "examples",
    "runtime",
    "model_uri",
    "artifact_uri",
)

capability = sa.table(
    "capability",
    sa.column("id", sa.Integer),
    sa.column("namespace", sa.String),
    sa.column("name", sa.String),
    sa.column("origin_node", sa.String),
    sa.column("via_node", sa.String),
)
version = sa.table(
    "capability_version",
    sa.column("id", sa.Integer),
    sa.column("capability_id", sa.Integer),
    sa.column("version", sa.String),
    sa.column("input_schema", JSON),
    sa.column("output_schema", JSON),
    sa.column("examples", JSON),
    sa.column("runtime", JSON),
    sa.column("model_uri", sa.String),
    sa.column("artifact_uri", sa.String),
    sa.column("content_hash", sa.String),
    sa.column("updated_at", sa.DateTime(timezone=True)),
)
change = sa.table(
    "change",
    sa.column("entity", sa.String),
    sa.column("key", sa.String),
    sa.column("op", sa.String),
    sa.column("content_hash", sa.String),
    sa.column("origin_node", sa.String),
    sa.column("created_at", sa.DateTime(timezone=True)),
)


def _content_hash(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _own(namespace: str, name: str, model_uri: str) -> bool:
    found = MODEL_URI.match(model_uri)
    return found is not None and found["name"] == f"{namespace}.{name}"


def upgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(
            version,
            capability.c.namespace,
            capability.c.name,
            capability.c.origin_node,
        )
        .select_from(version.join(capability, version.c.capability_id == capability.c.id))
        .where(
            capability.c.via_node.is_(None),
            sa.or_(version.c.model_uri.is_not(None), version.c.artifact_uri.is_not(None)),
        )
    ).mappings()
    now = datetime.now(UTC)
    for row in list(rows):
        uri = row["model_uri"]
        if uri is not None and _own(row["namespace"], row["name"], uri):
            continue
        key = f"{row['namespace']}/{row['name']}@{row['version']}"
        log.warning(
            "0007: %s named the model %r and artifacts %r, which are not a version of its "
            "own model %s.%s in this node's MLflow: cleared, it will not be loaded",
            key,
            uri,
            row["artifact_uri"],
            row["namespace"],
            row["name"],
        )
        body = {f: row[f] for f in VERSION_FIELDS} | {"model_uri": None, "artifact_uri": None}
        digest = _content_hash({"version": row["version"], **body})
        bind.execute(
            version.update()
            .where(version.c.id == row["id"])
            .values(model_uri=None, artifact_uri=None, content_hash=digest, updated_at=now)
        )
        bind.execute(
            change.insert().values(
                entity="version",
                key=key,
                op="upsert",
                content_hash=digest,
                origin_node=row["origin_node"],
                created_at=now,
            )
        )


def downgrade() -> None:
    """Nothing to undo: cleared locations were never the node's to load."""
