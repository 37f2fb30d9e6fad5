"""Names people use: English titles for nodes and departments, and a capability's
summary and description in English.

``node.title`` and ``namespace.title`` stay the Chinese title (the one shown by
default); ``title_en`` is the English one. ``capability.summary_en`` and
``description_en`` are optional English texts shown on the English pages (the Chinese
or only texts stay in ``summary`` and ``description``).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("node", "namespace"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(
                sa.Column("title_en", sa.String(200), nullable=False, server_default="")
            )
    with op.batch_alter_table("capability") as batch:
        batch.add_column(sa.Column("summary_en", sa.String(500), nullable=False, server_default=""))
        batch.add_column(sa.Column("description_en", sa.Text, nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("capability") as batch:
        batch.drop_column("description_en")
        batch.drop_column("summary_en")
    for table in ("namespace", "node"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("title_en")
