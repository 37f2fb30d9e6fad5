"""What each uploaded package published, and who is running a publish job.

``package_version``: the versions a package published (one row per version, with the
MLflow model it got), recorded in the transaction that records the package and its
registry entries, so the node knows when a package's last version is gone (its code and
environment are then removed). ``package.job_id``: the publish job that recorded it.
``publish_job.runner`` and ``heartbeat_at``: which node process runs a job and when it
last said so, so a job whose node stopped mid-way is failed and cleaned up.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "package_version",
        sa.Column("package_id", sa.String(64), sa.ForeignKey("package.id"), primary_key=True),
        sa.Column("namespace", sa.String(370), primary_key=True),
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("version", sa.String(128), primary_key=True),
        sa.Column("model_uri", sa.String(1000), nullable=True),
    )
    op.create_index(
        "ix_package_version_address", "package_version", ["namespace", "name", "version"]
    )
    with op.batch_alter_table("package") as batch:
        batch.add_column(sa.Column("job_id", sa.String(32), nullable=True))
    with op.batch_alter_table("publish_job") as batch:
        batch.add_column(sa.Column("runner", sa.String(200), nullable=True))
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("publish_job") as batch:
        batch.drop_column("heartbeat_at")
        batch.drop_column("runner")
    with op.batch_alter_table("package") as batch:
        batch.drop_column("job_id")
    op.drop_index("ix_package_version_address", table_name="package_version")
    op.drop_table("package_version")
