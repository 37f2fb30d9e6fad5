"""Uploaded packages and the jobs that publish them.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "package",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("namespace", sa.String(370), nullable=False),
        sa.Column("distribution", sa.String(200), nullable=False),
        sa.Column("version", sa.String(128), nullable=False),
        sa.Column("filename", sa.String(300), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("environment", sa.String(64), nullable=True),
        sa.Column("uploaded_by", JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_package_namespace", "package", ["namespace"])
    op.create_index("ix_package_environment", "package", ["environment"])
    op.create_table(
        "publish_job",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("namespace", sa.String(370), nullable=False),
        sa.Column("filename", sa.String(300), nullable=False),
        sa.Column("package_id", sa.String(64), nullable=True),
        sa.Column("caller", JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("log", JSON, nullable=False),
        sa.Column("error", JSON, nullable=True),
        sa.Column("result", JSON, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_publish_job_namespace", "publish_job", ["namespace"])
    op.create_index("ix_publish_job_status", "publish_job", ["status"])
    op.create_index("ix_publish_job_created_at", "publish_job", ["created_at"])


def downgrade() -> None:
    op.drop_table("publish_job")
    op.drop_table("package")
