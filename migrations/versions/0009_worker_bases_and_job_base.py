"""base models: workers.bases (what a worker holds) and jobs.base (what a job needs)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    # Rows from before: workers held only the random-init base, and jobs named paths or
    # nothing, which ran on that base.
    with op.batch_alter_table("workers") as batch:
        batch.add_column(
            sa.Column("bases", JSON, nullable=False, server_default=sa.text("'[\"none\"]'"))
        )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("base", sa.String(length=64), nullable=False, server_default="none")
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("base")
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("bases")
