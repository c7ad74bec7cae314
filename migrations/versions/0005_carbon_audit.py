"""carbon audit: intensity provenance and basis, attempt restatements, signed ledger adjustments

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("intensity_points", schema=None) as batch_op:
        batch_op.add_column(sa.Column("provenance", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("basis", sa.String(length=16), nullable=True))
    with op.batch_alter_table("job_attempts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("accounting", JSON, nullable=True))
    op.create_table(
        "energy_restatements",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("attempt_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kg_before", sa.Float(), nullable=False),
        sa.Column("kg_after", sa.Float(), nullable=False),
        sa.Column("slots", JSON, nullable=False),
        sa.Column("reason", sa.String(length=256), nullable=False),
        sa.ForeignKeyConstraint(
            ["attempt_id"],
            ["job_attempts.id"],
            name=op.f("fk_energy_restatements_attempt_id_job_attempts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_energy_restatements")),
    )
    with op.batch_alter_table("energy_restatements", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_energy_restatements_attempt_id"), ["attempt_id"], unique=False
        )
    # A restatement may lower an attempt's emissions: the ledger gets an `adjust` kind whose
    # kg is signed; every other kind stays non-negative.
    with op.batch_alter_table("budget_ledger", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_budget_ledger_kind"), type_="check")
        batch_op.drop_constraint(op.f("ck_budget_ledger_non_negative"), type_="check")
        batch_op.create_check_constraint(
            "kind", "kind IN ('reserve', 'release', 'charge', 'adjust')"
        )
        batch_op.create_check_constraint("non_negative", "kind = 'adjust' OR kg_co2e >= 0")


def downgrade() -> None:
    op.execute("DELETE FROM budget_ledger WHERE kind = 'adjust'")
    with op.batch_alter_table("budget_ledger", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_budget_ledger_kind"), type_="check")
        batch_op.drop_constraint(op.f("ck_budget_ledger_non_negative"), type_="check")
        batch_op.create_check_constraint("kind", "kind IN ('reserve', 'release', 'charge')")
        batch_op.create_check_constraint("non_negative", "kg_co2e >= 0")
    with op.batch_alter_table("energy_restatements", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_energy_restatements_attempt_id"))
    op.drop_table("energy_restatements")
    with op.batch_alter_table("job_attempts", schema=None) as batch_op:
        batch_op.drop_column("accounting")
    with op.batch_alter_table("intensity_points", schema=None) as batch_op:
        batch_op.drop_column("basis")
        batch_op.drop_column("provenance")
