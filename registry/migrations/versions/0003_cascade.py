"""Cascade: linked peers and their checkpoints, rejected entries, and what an applied
change needs to be passed on (its origin sequence and signed item).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def s(name: str, length: int, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.String(length), nullable=nullable)


def big(name: str) -> sa.Column:
    return sa.Column(name, sa.BigInteger(), nullable=False)


def upgrade() -> None:
    op.add_column("change", sa.Column("origin_seq", sa.BigInteger(), nullable=True))
    op.add_column("change", sa.Column("item", JSON, nullable=True))
    op.add_column("capability", s("via_node", 330, nullable=True))
    op.add_column(
        "capability",
        sa.Column("ever_shared", sa.Boolean(), nullable=False, server_default=sa.true()),
    )
    op.create_table(
        "peer",
        s("id", 330),
        s("relation", 8),
        s("url", 2000, nullable=True),
        s("public_key", 200),
        sa.Column("pull", sa.Boolean(), nullable=False),
        sa.Column("push", sa.Boolean(), nullable=False),
        big("checkpoint"),
        big("head"),
        ts("caught_up_at", nullable=True),
        ts("last_sync_at", nullable=True),
        s("last_error", 2000, nullable=True),
        ts("last_error_at", nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        big("applied"),
        big("rejected"),
        sa.Column("resyncs", sa.Integer(), nullable=False),
        sa.Column("resync_pending", sa.Boolean(), nullable=False),
        ts("created_at"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "cascade_rejection",
        sa.Column("id", sa.Integer(), nullable=False),
        ts("at"),
        s("peer", 330),
        s("origin", 330, nullable=True),
        s("entity", 16, nullable=True),
        s("key", 600, nullable=True),
        s("reason", 500),
        sa.Column("item", JSON, nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_cascade_rejection_at", "cascade_rejection", ["at"])
    op.create_index("ix_cascade_rejection_peer", "cascade_rejection", ["peer"])
    op.create_table(
        "cascade_state",
        s("name", 64),
        big("value"),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("cascade_state")
    op.drop_table("cascade_rejection")
    op.drop_table("peer")
    op.drop_column("capability", "ever_shared")
    op.drop_column("capability", "via_node")
    op.drop_column("change", "item")
    op.drop_column("change", "origin_seq")
