"""Imports every ORM model so the metadata is complete (Alembic and tests use it)."""

from __future__ import annotations

from scheduler.budgets.models import Budget, LedgerEntry
from scheduler.db.base import Base
from scheduler.jobs.models import Job, JobEvent
from scheduler.teams.models import ApiKey, Team

metadata = Base.metadata

__all__ = ["ApiKey", "Budget", "Job", "JobEvent", "LedgerEntry", "Team", "metadata"]
