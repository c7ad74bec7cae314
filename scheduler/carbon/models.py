"""Stored carbon-intensity points (forecasts and observed history), provider status, tariffs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from scheduler.db.base import Base, JSONType, UTCDateTime


class IntensityPoint(Base):
    """One slot of a zone's intensity: observed history, or part of a forecast batch."""

    __tablename__ = "intensity_points"
    __table_args__ = (
        CheckConstraint("kind IN ('forecast', 'history')", name="kind"),
        Index("ix_intensity_points_lookup", "zone", "kind", "generated_at", "time"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    zone: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(8))
    source: Mapped[str] = mapped_column(String(64))
    signal_type: Mapped[str] = mapped_column(String(16))
    # When the provider produced the batch (forecasts) or when we fetched it (history).
    generated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    time: Mapped[datetime] = mapped_column(UTCDateTime)
    step_minutes: Mapped[int] = mapped_column(Integer)
    g_per_kwh: Mapped[float] = mapped_column(Float)
    # observed | forecast | estimated (by the provider) | replayed | filled; None in rows
    # stored before provenance was recorded (read as observed for history, else forecast).
    provenance: Mapped[str | None] = mapped_column(String(16))
    # Emission-factor basis: lifecycle or direct; None where the provider does not say.
    basis: Mapped[str | None] = mapped_column(String(16))


class ZoneSignalStatus(Base):
    """The outcome of the last forecast refresh per zone, so fallbacks can say why."""

    __tablename__ = "zone_signal_status"

    zone: Mapped[str] = mapped_column(String(64), primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)


class Tariff(Base):
    """A zone's time-of-use electricity price schedule."""

    __tablename__ = "tariffs"

    zone: Mapped[str] = mapped_column(String(64), primary_key=True)
    schedule: Mapped[dict[str, Any]] = mapped_column(JSONType)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
