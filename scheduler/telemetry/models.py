"""Per-attempt telemetry history (downsampled) and the state of its health checks."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Float, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from scheduler.db.base import Base, JSONType, UTCDateTime


class TelemetryPoint(Base):
    """Heartbeats of one attempt merged into one point (means; peaks as maxima)."""

    __tablename__ = "job_telemetry_points"
    __table_args__ = (Index("ix_job_telemetry_points_job_attempt_seq", "job_id", "attempt", "seq"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    attempt: Mapped[int] = mapped_column(Integer)
    # Order within the attempt (gaps appear where points were merged).
    seq: Mapped[int] = mapped_column(Integer)
    first_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_at: Mapped[datetime] = mapped_column(UTCDateTime)
    weight: Mapped[int] = mapped_column(Integer, default=1)
    step: Mapped[int | None] = mapped_column(Integer)
    stage: Mapped[str | None] = mapped_column(String(16))
    values: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    gpus: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)


class TelemetryState(Base):
    """Per attempt: the history's resolution, the recent window the health checks read and
    the warnings already raised (each at most once per attempt)."""

    __tablename__ = "job_telemetry_state"
    __table_args__ = (UniqueConstraint("job_id", "attempt"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    stride: Mapped[int] = mapped_column(Integer, default=1)
    points: Mapped[int] = mapped_column(Integer, default=0)
    next_seq: Mapped[int] = mapped_column(Integer, default=0)
    heartbeats: Mapped[int] = mapped_column(Integer, default=0)
    low_util_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The largest torch peak any rank reported: what the job's memory need learns from.
    peak_mib: Mapped[float | None] = mapped_column(Float)
    # Recent per-heartbeat figures: allocated MiB (max over GPUs) and grad norm.
    window: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    warnings: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
