"""budget ledger entries count in the period of their planned or measured energy use

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("budget_ledger") as batch:
        batch.add_column(sa.Column("counts_at", sa.DateTime(timezone=True), nullable=True))
    # Entries written before this revision counted when they were written.
    op.execute("UPDATE budget_ledger SET counts_at = at")
    with op.batch_alter_table("budget_ledger") as batch:
        batch.alter_column("counts_at", existing_type=sa.DateTime(timezone=True), nullable=False)
        batch.create_index("ix_budget_ledger_team_counts_at", ["team_id", "counts_at"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("reserved_counts_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(
        "UPDATE jobs SET reserved_counts_at = COALESCE(planned_start, submitted_at) "
        "WHERE reserved_kg_co2e > 0"
    )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("reserved_counts_at")
    with op.batch_alter_table("budget_ledger") as batch:
        batch.drop_index("ix_budget_ledger_team_counts_at")
        batch.drop_column("counts_at")
