"""training telemetry: per-attempt downsampled history, health-check state, job efficiency

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "job_telemetry_points",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=26), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("weight", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=True),
        sa.Column("stage", sa.String(length=16), nullable=True),
        sa.Column("values", JSON, nullable=False),
        sa.Column("gpus", JSON, nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name=op.f("fk_job_telemetry_points_job_id_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_telemetry_points")),
    )
    op.create_index(
        "ix_job_telemetry_points_job_attempt_seq",
        "job_telemetry_points",
        ["job_id", "attempt", "seq"],
        unique=False,
    )
    op.create_table(
        "job_telemetry_state",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=26), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("stride", sa.Integer(), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column("next_seq", sa.Integer(), nullable=False),
        sa.Column("heartbeats", sa.Integer(), nullable=False),
        sa.Column("low_util_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("peak_mib", sa.Float(), nullable=True),
        sa.Column("window", JSON, nullable=False),
        sa.Column("warnings", JSON, nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name=op.f("fk_job_telemetry_state_job_id_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_telemetry_state")),
        sa.UniqueConstraint(
            "job_id", "attempt", name=op.f("uq_job_telemetry_state_job_id_attempt")
        ),
    )
    op.create_index(
        op.f("ix_job_telemetry_state_job_id"), "job_telemetry_state", ["job_id"], unique=False
    )
    op.create_table(
        "job_efficiency",
        sa.Column("job_id", sa.String(length=26), nullable=False),
        sa.Column("team_id", sa.String(length=26), nullable=False),
        sa.Column("signature", sa.String(length=32), nullable=False),
        sa.Column("gpu_model", sa.String(length=64), nullable=False),
        sa.Column("figures", JSON, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name=op.f("fk_job_efficiency_job_id_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_job_efficiency")),
    )
    op.create_index(op.f("ix_job_efficiency_team_id"), "job_efficiency", ["team_id"], unique=False)
    op.create_index(
        op.f("ix_job_efficiency_signature"), "job_efficiency", ["signature"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_job_efficiency_signature"), table_name="job_efficiency")
    op.drop_index(op.f("ix_job_efficiency_team_id"), table_name="job_efficiency")
    op.drop_table("job_efficiency")
    op.drop_index(op.f("ix_job_telemetry_state_job_id"), table_name="job_telemetry_state")
    op.drop_table("job_telemetry_state")
    op.drop_index("ix_job_telemetry_points_job_attempt_seq", table_name="job_telemetry_points")
    op.drop_table("job_telemetry_points")
