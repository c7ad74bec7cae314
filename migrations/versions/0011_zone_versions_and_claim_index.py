"""zone_versions (per-zone cache versions) and an index in the claim's order

Revision ID: 0011
Revises: 0009
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "zone_versions",
        sa.Column("zone", sa.String(64), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("signal_version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("zone", name=op.f("pk_zone_versions")),
    )
    # The claim picks `WHERE state = 'ready' AND zone = ? ORDER BY priority DESC,
    # planned_start, id`: only ready rows, already in that order, so the first fitting row
    # is read without sorting the whole ready set.
    op.create_index(
        "ix_jobs_claim_order",
        "jobs",
        ["zone", sa.column("priority").desc(), "planned_start", "id"],
        postgresql_where=sa.text("state = 'ready'"),
        sqlite_where=sa.text("state = 'ready'"),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_jobs_claim_order",
        table_name="jobs",
        postgresql_where=sa.text("state = 'ready'"),
        sqlite_where=sa.text("state = 'ready'"),
    )
    op.drop_table("zone_versions")
