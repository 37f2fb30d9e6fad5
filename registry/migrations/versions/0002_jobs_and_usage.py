"""Asynchronous jobs and usage records of the invocation gateway.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def s(name: str, length: int, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.String(length), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "job",
        s("id", 32),
        s("namespace", 370),
        s("name", 64),
        s("version", 128),
        sa.Column("caller", JSON, nullable=False),
        sa.Column("input", JSON, nullable=True),
        sa.Column("timeout", sa.Float(), nullable=False),
        s("callback_url", 2000, nullable=True),
        s("request_id", 128, nullable=True),
        s("status", 16),
        sa.Column("attempts", sa.Integer(), nullable=False),
        ts("not_before"),
        ts("lease_until", nullable=True),
        sa.Column("output", JSON, nullable=True),
        sa.Column("error", JSON, nullable=True),
        s("callback_status", 16, nullable=True),
        sa.Column("callback_attempts", sa.Integer(), nullable=False),
        ts("created_at"),
        ts("started_at", nullable=True),
        ts("finished_at", nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_job_status", "job", ["status"])
    op.create_index("ix_job_not_before", "job", ["not_before"])
    op.create_index("ix_job_callback_status", "job", ["callback_status"])
    op.create_table(
        "usage_record",
        sa.Column("id", sa.Integer(), nullable=False),
        ts("at"),
        s("caller", 500, nullable=True),
        s("namespace", 370),
        s("name", 64),
        s("version", 128, nullable=True),
        s("runtime", 32, nullable=True),
        s("mode", 8),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        s("request_id", 128, nullable=True),
        s("error_id", 32, nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_usage_record_at", "usage_record", ["at"])
    op.create_index("ix_usage_record_caller", "usage_record", ["caller"])


def downgrade() -> None:
    op.drop_table("usage_record")
    op.drop_table("job")
