"""Imports every ORM model so the metadata is complete (Alembic and tests use it)."""

from __future__ import annotations

from scheduler.artifacts.models import Artifact
from scheduler.budgets.models import Budget, LedgerEntry
from scheduler.carbon.models import IntensityPoint, Tariff, ZoneSignalStatus
from scheduler.datasets.models import Dataset
from scheduler.db.base import Base
from scheduler.energy.models import JobAttempt, JobEfficiency
from scheduler.jobs.models import Job, JobEvent
from scheduler.scheduling.models import ZoneVersion
from scheduler.teams.models import ApiKey, Team
from scheduler.telemetry.models import TelemetryPoint, TelemetryState
from scheduler.web.models import DashboardSession
from scheduler.webhooks.models import WebhookDelivery
from scheduler.workers.models import Worker

metadata = Base.metadata

__all__ = [
    "ApiKey",
    "Artifact",
    "Budget",
    "DashboardSession",
    "Dataset",
    "IntensityPoint",
    "Job",
    "JobAttempt",
    "JobEfficiency",
    "JobEvent",
    "LedgerEntry",
    "Tariff",
    "Team",
    "TelemetryPoint",
    "TelemetryState",
    "WebhookDelivery",
    "Worker",
    "ZoneSignalStatus",
    "ZoneVersion",
    "metadata",
]
