"""Traffic splits (issue 21): ``traffic_split``, one row per capability: the stable
version, a canary (a version and its share of the calls that name no version), a shadow
(a version every such call is mirrored to), the rule that rolls the split back, and a
note of the last rollback.

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "traffic_split",
        sa.Column("namespace", sa.String(370), primary_key=True),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("stable", sa.String(128), nullable=False),
        sa.Column("canary", sa.String(128), nullable=True),
        sa.Column("share", sa.Float, nullable=False),
        sa.Column("shadow", sa.String(128), nullable=True),
        sa.Column("max_error_rate", sa.Float, nullable=False),
        sa.Column("min_calls", sa.Integer, nullable=False),
        sa.Column("window_s", sa.Float, nullable=False),
        sa.Column("set_by", sa.String(500), nullable=True),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("note", sa.String(500), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("traffic_split")
