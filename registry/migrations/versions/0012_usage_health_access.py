"""The officials' product: where callers come from, daily usage aggregates, probe
tallies and access requests.

- ``usage_record`` gains ``caller_node``, ``caller_department`` and ``forwarded_by``.
- ``usage_daily``: one origin node's calls of a capability on a day (Beijing time), by
  outcome and by where callers came from, with a latency histogram; a node's own rows
  and, at its parent, the rows its signed feed items carried up.
- ``probe_daily``: this node's live probes of another node per day.
- ``access_request``: requests to call a capability (权限申请) and their decisions.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)
COUNTS = (
    "calls", "ok", "errors", "refused", "invalid",
    "same_department", "other_department", "other_node",
)  # fmt: skip


def upgrade() -> None:
    with op.batch_alter_table("usage_record") as batch:
        batch.add_column(sa.Column("caller_node", sa.String(330), nullable=True))
        batch.add_column(sa.Column("caller_department", sa.String(370), nullable=True))
        batch.add_column(sa.Column("forwarded_by", sa.String(330), nullable=True))
    op.create_table(
        "usage_daily",
        sa.Column("node", sa.String(330), primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("namespace", sa.String(370), primary_key=True),
        sa.Column("name", sa.String(64), primary_key=True),
        *(sa.Column(c, sa.Integer, nullable=False, server_default="0") for c in COUNTS),
        sa.Column("latency_hist", JSON, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "probe_daily",
        sa.Column("node", sa.String(330), primary_key=True),
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("probes", sa.Integer, nullable=False, server_default="0"),
        sa.Column("ok", sa.Integer, nullable=False, server_default="0"),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "access_request",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("namespace", sa.String(370), nullable=False, index=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("requester", sa.String(500), nullable=False, index=True),
        sa.Column("requester_node", sa.String(330), nullable=False),
        sa.Column("requester_department", sa.String(370), nullable=True),
        sa.Column("via", sa.String(330), nullable=True),
        sa.Column("reason", sa.String(2000), nullable=False),
        sa.Column("expires_at", TS, nullable=True),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("decided_by", sa.String(500), nullable=True),
        sa.Column("decision_reason", sa.String(2000), nullable=True),
        sa.Column("created_at", TS, nullable=False, index=True),
        sa.Column("decided_at", TS, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("access_request")
    op.drop_table("probe_daily")
    op.drop_table("usage_daily")
    with op.batch_alter_table("usage_record") as batch:
        batch.drop_column("forwarded_by")
        batch.drop_column("caller_department")
        batch.drop_column("caller_node")
