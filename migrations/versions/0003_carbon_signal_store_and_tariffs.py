"""carbon signal store (forecasts, history, refresh status) and zone tariffs

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "intensity_points",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("zone", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("signal_type", sa.String(length=16), nullable=False),
        sa.Column("generated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("step_minutes", sa.Integer(), nullable=False),
        sa.Column("g_per_kwh", sa.Float(), nullable=False),
        sa.CheckConstraint(
            "kind IN ('forecast', 'history')", name=op.f("ck_intensity_points_kind")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_intensity_points")),
    )
    op.create_index(
        "ix_intensity_points_lookup",
        "intensity_points",
        ["zone", "kind", "generated_at", "time"],
        unique=False,
    )
    op.create_table(
        "zone_signal_status",
        sa.Column("zone", sa.String(length=64), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("zone", name=op.f("pk_zone_signal_status")),
    )
    op.create_table(
        "tariffs",
        sa.Column("zone", sa.String(length=64), nullable=False),
        sa.Column("schedule", JSON, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("zone", name=op.f("pk_tariffs")),
    )


def downgrade() -> None:
    op.drop_table("tariffs")
    op.drop_table("zone_signal_status")
    op.drop_index("ix_intensity_points_lookup", table_name="intensity_points")
    op.drop_table("intensity_points")
