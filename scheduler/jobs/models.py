"""Fine-tune jobs and their state history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    column,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from scheduler.db.base import Base, JSONType, UTCDateTime, new_id
from scheduler.jobs.states import JobState
from scheduler.teams.models import Team

_STATES = ", ".join(f"'{s.value}'" for s in JobState)


def _state_column() -> Enum:
    """A job state as the column's type: stored as the same lowercase strings in a
    VARCHAR(16) (no database enum, so adding a state needs no type migration), read back as
    JobState, and an unknown string is refused before it reaches the database."""
    return Enum(
        JobState,
        native_enum=False,
        create_constraint=False,  # the CHECK constraint below is the schema's own
        length=16,
        values_callable=lambda states: [state.value for state in states],
        validate_strings=True,
    )


class Job(Base):
    """A queued, running or finished fine-tune."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(f"state IN ({_STATES})", name="state"),
        CheckConstraint("gpus BETWEEN 1 AND 8", name="gpus"),
        UniqueConstraint("team_id", "idempotency_key"),
        Index("ix_jobs_state_priority", "state", "priority", "planned_start"),
        # The claim's order over ready jobs (migration 0011, scheduling/occupancy.py).
        Index(
            "ix_jobs_claim_order",
            "zone",
            column("priority").desc(),
            "planned_start",
            "id",
            postgresql_where=text("state = 'ready'"),
            sqlite_where=text("state = 'ready'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(26), primary_key=True, default=new_id)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(64))
    dataset: Mapped[dict[str, Any]] = mapped_column(JSONType)
    config: Mapped[dict[str, Any]] = mapped_column(JSONType)
    gpus: Mapped[int] = mapped_column(Integer)
    deadline: Mapped[datetime] = mapped_column(UTCDateTime)
    # Earliest start the submission asked for (None: as soon as admitted).
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime)
    interruptible: Mapped[bool] = mapped_column(Boolean, default=False)
    objective: Mapped[str] = mapped_column(String(16))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    zone: Mapped[str] = mapped_column(String(64))
    # Zones a submission allowed (None: only `zone`), and the expected kg CO2e it would
    # have emitted in the first of them, for the saving of the zone chosen.
    zones: Mapped[list[str] | None] = mapped_column(JSONType)
    first_zone_kg_co2e: Mapped[float | None] = mapped_column(Float)
    # The base a worker must hold to run the job: config.base, or for `job:<id>` the base of
    # that earlier job (resolved at submit).
    base: Mapped[str] = mapped_column(String(64), default="none")
    idempotency_key: Mapped[str | None] = mapped_column(String(200))
    request_hash: Mapped[str | None] = mapped_column(String(64))

    state: Mapped[JobState] = mapped_column(_state_column(), index=True)
    state_reason: Mapped[str] = mapped_column(Text, default="")
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    # The plan: filled on submit and revised by each replanning tick.
    planned_start: Mapped[datetime | None] = mapped_column(UTCDateTime)
    planned_end: Mapped[datetime | None] = mapped_column(UTCDateTime)
    planned_intervals: Mapped[list[list[str]]] = mapped_column(JSONType, default=list)
    estimated_duration_s: Mapped[float] = mapped_column(Float, default=0.0)
    estimated_kwh: Mapped[float] = mapped_column(Float, default=0.0)
    estimated_kg_co2e: Mapped[float] = mapped_column(Float, default=0.0)
    run_now_kg_co2e: Mapped[float] = mapped_column(Float, default=0.0)
    reserved_kg_co2e: Mapped[float] = mapped_column(Float, default=0.0)
    # The moment whose budget period holds the reservation (the planned start when reserved).
    reserved_counts_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    # Execution: attempt + lease token fence every worker write.
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    infra_restarts: Mapped[int] = mapped_column(Integer, default=0)
    lease_token: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    worker_id: Mapped[str | None] = mapped_column(String(26))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # Set by the planner for an interruptible job it moves out of a dirty window.
    pause_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    error: Mapped[str | None] = mapped_column(Text)

    actual_kwh: Mapped[float | None] = mapped_column(Float)
    actual_kg_co2e: Mapped[float | None] = mapped_column(Float)

    team: Mapped[Team] = relationship(lazy="joined")


class JobEvent(Base):
    """A state change (or notable event) of a job, with its reason and time."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    from_state: Mapped[JobState | None] = mapped_column(_state_column())
    to_state: Mapped[JobState] = mapped_column(_state_column())
    reason: Mapped[str] = mapped_column(Text, default="")
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
