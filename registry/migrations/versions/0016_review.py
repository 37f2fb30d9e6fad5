"""Review of what children share upward (issue 20): held entries, decisions, rules.

- ``review``: one capability from a child's subtree that waits for (or got) this
  node's decision: ``pending``, ``approved`` or ``refused`` with a reason.
- ``review_held``: the signed items of a capability not approved yet, as received
  (the newest per entity and key); written to the catalog on approval.
- ``review_rule``: what is approved without a reviewer (by namespace, classification,
  district).
- ``review_upward``: at a child, the decisions of the nodes above about its subtree's
  capabilities (one per capability and reviewing node).

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "review",
        sa.Column("namespace", sa.String(370), primary_key=True),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("origin_node", sa.String(330), nullable=False),
        sa.Column("via_node", sa.String(330), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("reason", sa.String(500), nullable=True),
        sa.Column("decided_by", sa.String(500), nullable=True),
        sa.Column("decided_at", TS, nullable=True),
        sa.Column("arrived_at", TS, nullable=False),
        sa.Column("rule_id", sa.String(32), nullable=True),
        sa.Column("title", sa.String(200), nullable=True),
        sa.Column("classification", sa.String(16), nullable=True),
    )
    op.create_table(
        "review_held",
        sa.Column("entity", sa.String(16), primary_key=True),
        sa.Column("key", sa.String(600), primary_key=True),
        sa.Column("namespace", sa.String(370), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("origin_seq", sa.BigInteger, nullable=False),
        sa.Column("item", JSON, nullable=False),
        sa.Column("held_at", TS, nullable=False),
    )
    op.create_index("ix_review_held_capability", "review_held", ["namespace", "name"])
    op.create_table(
        "review_rule",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("namespace", sa.String(370), nullable=True),
        sa.Column("classification", sa.String(16), nullable=True),
        sa.Column("district", sa.String(330), nullable=True),
        sa.Column("created_by", sa.String(500), nullable=True),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "review_upward",
        sa.Column("namespace", sa.String(370), primary_key=True),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("reviewer", sa.String(330), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(500), nullable=True),
        sa.Column("decided_at", TS, nullable=True),
        sa.Column("received_at", TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("review_upward")
    op.drop_table("review_rule")
    op.drop_index("ix_review_held_capability", table_name="review_held")
    op.drop_table("review_held")
    op.drop_table("review")
