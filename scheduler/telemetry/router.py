"""HTTP endpoint of a job's telemetry history (for the job page's charts)."""

from __future__ import annotations

from fastapi import APIRouter, Query

from scheduler.deps import SessionDep, UserDep
from scheduler.jobs import service as jobs
from scheduler.telemetry import service
from scheduler.telemetry.schemas import TelemetryHistory

router = APIRouter(prefix="/v1/jobs", tags=["telemetry"])


@router.get("/{job_id}/telemetry", response_model=TelemetryHistory)
def job_telemetry(
    job_id: str,
    session: SessionDep,
    principal: UserDep,
    attempt: int | None = Query(default=None, ge=1, le=1_000_000),
) -> TelemetryHistory:
    """An attempt's telemetry, downsampled to a bounded number of points, and its warnings."""
    job = jobs.get_job(session, job_id, team_id=principal.team_scope)
    return TelemetryHistory.model_validate(service.history(session, job, attempt))
