"""Several processes on one store: one-time assertion ids shared by them, and usage
records found by capability.

- ``used_assertion``: a linked node's assertion id, once a process of this node has
  accepted it, until it expires; every process (``serve --workers N``, gateways on one
  PostgreSQL) refuses it the second time.
- ``usage_record`` gains an index on (namespace, name, at): a capability's recent calls
  are read without scanning every call of the week.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "used_assertion",
        sa.Column("key", sa.String(700), primary_key=True),
        sa.Column("expires", sa.Float, nullable=False, index=True),
    )
    op.create_index(
        "ix_usage_record_namespace_name_at", "usage_record", ["namespace", "name", "at"]
    )


def downgrade() -> None:
    op.drop_index("ix_usage_record_namespace_name_at", table_name="usage_record")
    op.drop_table("used_assertion")
