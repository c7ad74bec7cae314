"""Carbon budgets per team and the ledger that makes their use auditable."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from scheduler.budgets.schemas import BudgetMode, Period
from scheduler.db.base import Base, JSONType, UTCDateTime


class Budget(Base):
    """A team's limit in kg CO2e per period, with threshold actions."""

    __tablename__ = "budgets"
    __table_args__ = (
        CheckConstraint("limit_kg_co2e > 0", name="positive_limit"),
        CheckConstraint("mode IN ('hard', 'soft')", name="mode"),
        CheckConstraint("period IN ('day', 'week', 'month', 'quarter', 'year')", name="period"),
    )

    team_id: Mapped[str] = mapped_column(
        ForeignKey("teams.id", ondelete="CASCADE"), primary_key=True
    )
    period: Mapped[Period] = mapped_column(String(16))
    limit_kg_co2e: Mapped[float] = mapped_column(Float)
    mode: Mapped[BudgetMode] = mapped_column(String(8))
    thresholds: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    # Which thresholds already fired in which period, so each fires once per period.
    fired: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LedgerEntry(Base):
    """One reserve / release / charge / adjust movement on a team's carbon account."""

    __tablename__ = "budget_ledger"
    __table_args__ = (
        CheckConstraint("kind IN ('reserve', 'release', 'charge', 'adjust')", name="kind"),
        # Only adjustments are signed: they correct earlier charges up or down.
        CheckConstraint("kind = 'adjust' OR kg_co2e >= 0", name="non_negative"),
        Index("ix_budget_ledger_team_counts_at", "team_id", "counts_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[str | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), index=True
    )
    # When the entry was written.
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    # The moment whose budget period the entry counts in: a reservation's planned start, a
    # release's reservation, a charge's energy use (charges are split at UTC midnights, where
    # every period begins, so each piece lies in exactly one period).
    counts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    kind: Mapped[str] = mapped_column(String(8))
    kg_co2e: Mapped[float] = mapped_column(Float)
    kwh: Mapped[float] = mapped_column(Float, default=0.0)
    note: Mapped[str] = mapped_column(String(512), default="")
