"""Live scheduling: estimates, placing jobs in windows, and the replanning tick."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from scheduler.jobs.models import Job
from scheduler.jobs.states import JobState
from scheduler.settings import Settings

# A conservative grid intensity (g/kWh) for estimates when no signal is available.
FALLBACK_INTENSITY = 500.0


class Scheduling:
    """The scheduling context shared by request handlers and maintenance ticks."""

    def __init__(self, settings: Settings, clock: Callable[[], datetime]) -> None:
        self.settings = settings
        self.clock = clock

    @property
    def default_zone(self) -> str:
        return self.settings.zone

    def check_zone(self, zone: str) -> None:
        """Accept any zone name; unknown zones plan on the fallback signal."""

    def validate_submission(self, session: Session, job: Job) -> None:
        """Checks that need the database (e.g. that the dataset exists)."""

    def estimate(self, session: Session, job: Job, *, now: datetime) -> None:
        """Fill the job's expected duration and energy."""
        steps = job.config.get("max_steps") or job.config.get("steps") or 100
        duration_s = float(steps) * 2.0 + 120.0
        job.estimated_duration_s = duration_s
        job.estimated_kwh = job.gpus * self.settings.default_gpu_watts * duration_s / 3.6e6

    def place_new_job(self, session: Session, job: Job, *, now: datetime) -> tuple[JobState, str]:
        """Give a new job its planned window; returns the state and reason it should take."""
        job.planned_start = now
        job.planned_end = now + timedelta(seconds=job.estimated_duration_s)
        job.planned_intervals = [[job.planned_start.isoformat(), job.planned_end.isoformat()]]
        job.estimated_kg_co2e = job.estimated_kwh * FALLBACK_INTENSITY / 1000.0
        job.run_now_kg_co2e = job.estimated_kg_co2e
        return JobState.READY, "ready: runs as soon as a worker is free"
