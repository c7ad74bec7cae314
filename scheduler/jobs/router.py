"""HTTP endpoints for jobs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status

from scheduler.deps import NowDep, Principal, SchedulingDep, SessionDep, UserDep
from scheduler.energy import service as energy
from scheduler.errors import InvalidInput
from scheduler.jobs import service
from scheduler.jobs.models import Job
from scheduler.jobs.schemas import JobCreate, JobEventRead, JobPage, JobRead, LiveFigures
from scheduler.responses import model_response

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


def to_read(job: Job) -> JobRead:
    """The public view of a job."""
    # Validated from a dict, as stored: the intervals are ISO strings and `progress` is the
    # stored dict whose `telemetry` the model lifts out (see JobRead._telemetry_from_progress).
    return JobRead.model_validate(
        {
            "id": job.id,
            "team": job.team.name,
            "name": job.name,
            "kind": job.kind,
            "state": job.state,
            "state_reason": job.state_reason,
            "submitted_at": job.submitted_at,
            "deadline": job.deadline,
            "planned_start": job.planned_start,
            "planned_end": job.planned_end,
            "planned_intervals": job.planned_intervals or [],
            "estimated_duration_s": job.estimated_duration_s,
            "estimated_kwh": job.estimated_kwh,
            "estimated_kg_co2e": job.estimated_kg_co2e,
            "expected_saving_kg_co2e": max(job.run_now_kg_co2e - job.estimated_kg_co2e, 0.0),
            "attempt": job.attempt,
            "gpus": job.gpus,
            "interruptible": job.interruptible,
            "objective": job.objective,
            "priority": job.priority,
            "zone": job.zone,
            "dataset": job.dataset,
            "config": job.config,
            "progress": job.progress,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
            "actual_kwh": job.actual_kwh,
            "actual_kg_co2e": job.actual_kg_co2e,
            "error": job.error,
            "cancel_requested": job.cancel_requested,
            "not_before": job.not_before,
            "zones": job.zones,
            "zone_saving_kg_co2e": (
                None
                if job.first_zone_kg_co2e is None
                else job.first_zone_kg_co2e - job.estimated_kg_co2e
            ),
        }
    )


def find_job(session: SessionDep, principal: Principal, job_id: str) -> Job:
    """The job if the caller may see it; another team's job is a 404."""
    return service.get_job(session, job_id, team_id=principal.team_scope)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=JobRead)
def submit_job(
    body: JobCreate,
    session: SessionDep,
    now: NowDep,
    scheduling: SchedulingDep,
    principal: UserDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Response:
    """Submit a fine-tune; it is admitted against the team's budget and planned at once."""
    if principal.team is None:
        raise InvalidInput(
            "jobs are submitted with a team's key, not the admin token", field="Authorization"
        )
    job, created = service.submit(
        session,
        team=principal.team,
        spec=body,
        idempotency_key=idempotency_key,
        now=now,
        scheduling=scheduling,
    )
    headers = {"Location": f"/v1/jobs/{job.id}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return model_response(
        to_read(job),
        status_code=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        headers=headers,
    )


@router.get("", response_model=JobPage)
def list_jobs(
    session: SessionDep,
    principal: UserDep,
    state: Annotated[str | None, Query(description="Only jobs in this state.")] = None,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=service.MAX_PAGE)] = 50,
) -> JobPage:
    """The caller's jobs, newest first (the admin sees every team's)."""
    jobs, next_cursor = service.list_jobs(
        session, team_id=principal.team_scope, state=state, cursor=cursor, limit=limit
    )
    return JobPage(items=[to_read(job) for job in jobs], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobRead)
def get_job(
    job_id: str,
    session: SessionDep,
    now: NowDep,
    scheduling: SchedulingDep,
    principal: UserDep,
) -> JobRead:
    """One job; while it runs, with its latest heartbeat figures (`live`)."""
    job = find_job(session, principal, job_id)
    read = to_read(job)
    live = energy.live_figures(session, job, scheduling=scheduling, now=now)
    if live is not None:
        read.live = LiveFigures.model_validate(live)
    return read


@router.post("/{job_id}/cancel", response_model=JobRead)
def cancel_job(
    job_id: str,
    session: SessionDep,
    now: NowDep,
    scheduling: SchedulingDep,
    principal: UserDep,
) -> JobRead:
    """Cancel a job: at once if it waits, through its worker if it runs."""
    job = find_job(session, principal, job_id)
    return to_read(service.cancel(session, job, now=now, scheduling=scheduling))


@router.get("/{job_id}/events", response_model=list[JobEventRead])
def job_events(job_id: str, session: SessionDep, principal: UserDep) -> list[JobEventRead]:
    """Every state change of the job, with its reason and time."""
    job = find_job(session, principal, job_id)
    return [
        JobEventRead.model_validate(e, from_attributes=True) for e in service.events(session, job)
    ]
