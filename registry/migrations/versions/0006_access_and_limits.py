"""Access rules per capability, a rate limit per API key, and shared rate-limit buckets.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("capability") as batch:
        batch.add_column(sa.Column("access", JSON, nullable=False, server_default="{}"))
    with op.batch_alter_table("api_key") as batch:
        batch.add_column(sa.Column("rate_limit", sa.String(64), nullable=True))
    op.create_table(
        "rate_bucket",
        sa.Column("key", sa.String(400), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("stamp", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )


def downgrade() -> None:
    op.drop_table("rate_bucket")
    with op.batch_alter_table("api_key") as batch:
        batch.drop_column("rate_limit")
    with op.batch_alter_table("capability") as batch:
        batch.drop_column("access")
