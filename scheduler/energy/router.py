"""HTTP endpoint of the per-job energy report."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from scheduler.deps import SchedulingDep, SessionDep, UserDep
from scheduler.energy.report import energy_report
from scheduler.jobs import service as jobs

router = APIRouter(prefix="/v1/jobs", tags=["energy"])


@router.get("/{job_id}/energy")
def job_energy(
    job_id: str, session: SessionDep, scheduling: SchedulingDep, principal: UserDep
) -> dict[str, Any]:
    """Measured kWh (GPU, CPU, RAM), kg CO2e per time bucket, attempts and the power timeline."""
    job = jobs.get_job(session, job_id, team_id=principal.team_scope)
    return energy_report(session, job, scheduling=scheduling)
