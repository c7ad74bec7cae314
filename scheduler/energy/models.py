"""One row per job attempt: who ran it, its energy report and what it emitted."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Float, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from scheduler.db.base import Base, JSONType, UTCDateTime


class JobAttempt(Base):
    """An attempt of a job: opened at claim, closed with the worker's energy report."""

    __tablename__ = "job_attempts"
    __table_args__ = (UniqueConstraint("job_id", "attempt"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    worker_id: Mapped[str | None] = mapped_column(String(26))
    # running, succeeded, failed, cancelled, released, lost
    outcome: Mapped[str] = mapped_column(String(16), default="running")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Latest heartbeat figures: all we know of an attempt whose worker died.
    kwh_so_far: Mapped[float] = mapped_column(Float, default=0.0)
    last_heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    report: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    gpu_kwh: Mapped[float] = mapped_column(Float, default=0.0)
    cpu_kwh: Mapped[float] = mapped_column(Float, default=0.0)
    ram_kwh: Mapped[float] = mapped_column(Float, default=0.0)
    total_kwh: Mapped[float] = mapped_column(Float, default=0.0)
    kg_co2e: Mapped[float] = mapped_column(Float, default=0.0)
    # Zone, source, signal type and whether the intensity was a forecast.
    signal: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # Per time bucket: start, kWh, g/kWh (so the report can be re-stated).
    buckets: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    # How the figures were obtained: PUE, estimates for failed measurements (with their basis),
    # the last heartbeat interval of a lost worker, a late report, the signal notes.
    accounting: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class EnergyRestatement(Base):
    """A re-pricing of an attempt once better intensity arrived: the figures before and after,
    and the ledger adjustment it wrote. Attempts are never re-priced without one of these."""

    __tablename__ = "energy_restatements"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    attempt_id: Mapped[int] = mapped_column(
        ForeignKey("job_attempts.id", ondelete="CASCADE"), index=True
    )
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    kg_before: Mapped[float] = mapped_column(Float)
    kg_after: Mapped[float] = mapped_column(Float)
    # The slots whose price changed: start, kWh, g/kWh and provenance before and after.
    slots: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    reason: Mapped[str] = mapped_column(String(256), default="")


class JobEfficiency(Base):
    """A finished fine-tune's energy per unit of work, per stage, with the configuration
    signature and GPU model it is compared and learned under."""

    __tablename__ = "job_efficiency"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    team_id: Mapped[str] = mapped_column(String(26), index=True)
    signature: Mapped[str] = mapped_column(String(32), index=True)
    gpu_model: Mapped[str] = mapped_column(String(64))
    # Per stage (and `total`): kwh_per_step, kwh_per_audio_hour, wh_per_1k_samples.
    figures: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
