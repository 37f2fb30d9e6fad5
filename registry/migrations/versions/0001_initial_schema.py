"""Initial schema: nodes, namespaces, capabilities, versions, tags, change log, search index.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def s(name: str, length: int, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.String(length), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "node",
        s("id", 330),
        s("parent_id", 330, nullable=True),
        s("title", 200),
        s("public_key", 200, nullable=True),
        ts("created_at"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "namespace",
        s("id", 370),
        s("node_id", 330),
        s("title", 200),
        ts("created_at"),
        sa.ForeignKeyConstraint(["node_id"], ["node.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_namespace_node_id", "namespace", ["node_id"])
    op.create_table(
        "capability",
        sa.Column("id", sa.Integer(), nullable=False),
        s("namespace", 370),
        s("name", 64),
        s("title", 200),
        s("summary", 500),
        sa.Column("description", sa.Text(), nullable=False),
        s("kind", 16),
        s("domain", 16),
        sa.Column("tags", JSON, nullable=False),
        s("classification", 16),
        s("owner", 500),
        s("contact", 500),
        s("license", 500),
        s("origin_node", 330),
        s("status", 16),
        s("latest_version", 128, nullable=True),
        s("runtime", 32, nullable=True),
        s("content_hash", 64),
        ts("created_at"),
        ts("updated_at"),
        ts("deleted_at", nullable=True),
        sa.ForeignKeyConstraint(["namespace"], ["namespace.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("namespace", "name", name="uq_capability_namespace_name"),
    )
    for col in (
        "classification",
        "domain",
        "namespace",
        "origin_node",
        "runtime",
        "status",
        "updated_at",
    ):
        op.create_index(f"ix_capability_{col}", "capability", [col])
    op.create_table(
        "capability_tag",
        sa.Column("capability_id", sa.Integer(), nullable=False),
        s("tag", 48),
        sa.ForeignKeyConstraint(["capability_id"], ["capability.id"]),
        sa.PrimaryKeyConstraint("capability_id", "tag"),
    )
    op.create_index("ix_capability_tag_tag", "capability_tag", ["tag"])
    op.create_table(
        "capability_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("capability_id", sa.Integer(), nullable=False),
        s("version", 128),
        s("status", 16),
        sa.Column("input_schema", JSON, nullable=False),
        sa.Column("output_schema", JSON, nullable=False),
        sa.Column("examples", JSON, nullable=False),
        sa.Column("runtime", JSON, nullable=False),
        s("model_uri", 1000, nullable=True),
        s("artifact_uri", 1000, nullable=True),
        s("content_hash", 64),
        ts("created_at"),
        ts("updated_at"),
        ts("published_at", nullable=True),
        sa.ForeignKeyConstraint(["capability_id"], ["capability.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("capability_id", "version", name="uq_version"),
    )
    op.create_index("ix_capability_version_capability_id", "capability_version", ["capability_id"])
    op.create_table(
        "change",
        sa.Column("seq", sa.Integer(), nullable=False),
        s("entity", 16),
        s("key", 600),
        s("op", 8),
        s("content_hash", 64),
        s("origin_node", 330),
        ts("created_at"),
        sa.PrimaryKeyConstraint("seq"),
    )
    op.create_index("ix_change_key", "change", ["key"])

    # The full-text index (see yunnao.registry.search): one row per live capability.
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "CREATE VIRTUAL TABLE capability_fts USING fts5("
            "name, title, summary, tags, description, "
            "tokenize = 'unicode61 remove_diacritics 2', prefix = '2 3')"
        )
    else:
        op.create_table(
            "capability_search",
            sa.Column("capability_id", sa.Integer(), nullable=False),
            sa.Column("document", postgresql.TSVECTOR(), nullable=False),
            sa.ForeignKeyConstraint(["capability_id"], ["capability.id"]),
            sa.PrimaryKeyConstraint("capability_id"),
        )
        op.execute(
            "CREATE INDEX ix_capability_search_document ON capability_search USING gin (document)"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE capability_fts")
    else:
        op.drop_table("capability_search")
    for table in (
        "change",
        "capability_version",
        "capability_tag",
        "capability",
        "namespace",
        "node",
    ):
        op.drop_table(table)
