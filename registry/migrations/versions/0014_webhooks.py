"""Webhooks: subscriptions, their durable outbox of deliveries, and each attempt.

- ``webhook``: a subscription of a namespace (by its authors) or of the node (by its
  operators) to some event types, with the address deliveries go to and the secret
  they are signed with (Standard Webhooks).
- ``webhook_delivery``: one event for one subscription, written in the transaction of
  the change it reports; ``seq`` orders a subscription's deliveries, ``state`` is
  ``pending``, ``delivered`` or ``failed`` (given up; redelivery queues it again).
- ``webhook_attempt``: each try of a delivery, with the answer or the error.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "webhook",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("scope", sa.String(370), nullable=False, index=True),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("events", JSON, nullable=False),
        sa.Column("secret", sa.String(100), nullable=False),
        sa.Column("description", sa.String(200), nullable=False, server_default=""),
        sa.Column("created_by", sa.String(500), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_table(
        "webhook_delivery",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(40), nullable=False, unique=True),
        sa.Column("webhook_id", sa.String(32), nullable=False),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", TS, nullable=False),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("delivered_at", TS, nullable=True),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_webhook_delivery_webhook_state_seq", "webhook_delivery", ["webhook_id", "state", "seq"]
    )
    op.create_table(
        "webhook_attempt",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("delivery_id", sa.String(40), nullable=False, index=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("status", sa.Integer, nullable=True),
        sa.Column("error", sa.String(500), nullable=True),
        sa.Column("duration_ms", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("webhook_attempt")
    op.drop_index("ix_webhook_delivery_webhook_state_seq", table_name="webhook_delivery")
    op.drop_table("webhook_delivery")
    op.drop_table("webhook")
