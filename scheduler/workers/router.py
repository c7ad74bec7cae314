"""HTTP endpoints of the worker protocol (docs/worker-protocol.md) and the worker list."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response, status
from sqlalchemy.orm import Session

from scheduler.artifacts import service as artifacts_service
from scheduler.deps import AdminDep, NowDep, SchedulingDep, SessionDep, SettingsDep
from scheduler.energy import service as energy_service
from scheduler.jobs.models import Job
from scheduler.responses import model_response
from scheduler.settings import Settings
from scheduler.workers import fleet, service
from scheduler.workers.auth import CurrentWorker, FleetDep
from scheduler.workers.schemas import (
    ClaimedJob,
    ClaimResponse,
    EnergyReport,
    Fence,
    JobComplete,
    JobFail,
    JobFinished,
    JobHeartbeat,
    JobHeartbeatResponse,
    JobOrphanEnergy,
    JobRelease,
    ResumeFrom,
    WorkerHeartbeat,
    WorkerRead,
    WorkerRegister,
    WorkerRegistered,
)

router = APIRouter(prefix="/v1/workers", tags=["workers"])


def _lease(job_id: str, body: Fence, session: SessionDep, worker: CurrentWorker) -> service.Lease:
    # `body` is the route's own body (every lease-holding call extends Fence): FastAPI
    # parses it once and validates it as both. The worker is its own dependency, one that
    # does not need the body, so a caller that is not this worker gets its 401/403 even
    # when the body is invalid too.
    return service.fenced_lease(
        session, worker, job_id, attempt=body.attempt, lease_token=body.lease_token
    )


# The calling worker and the running job it holds under the body's (attempt, lease_token),
# locked for this transaction, with the attempt's record; 404 for an unknown job, 409 once
# the lease is lost.
LeaseDep = Annotated[service.Lease, Depends(_lease)]


@router.post("/register", status_code=status.HTTP_201_CREATED, response_model=WorkerRegistered)
def register(
    body: WorkerRegister,
    session: SessionDep,
    now: NowDep,
    settings: SettingsDep,
    scheduling: SchedulingDep,
    _: FleetDep,
) -> WorkerRegistered:
    """Register a worker host with the fleet token; returns its own token (shown once)."""
    worker, token = service.register(
        session,
        body,
        now=now,
        heartbeat_seconds=settings.heartbeat_seconds,
        default_zone=settings.zone,
        scheduling=scheduling,
    )
    return WorkerRegistered(
        worker_id=worker.id,
        token=token,
        heartbeat_seconds=settings.heartbeat_seconds,
        lease_seconds=settings.lease_seconds,
    )


@router.get("", response_model=list[WorkerRead])
def list_workers(session: SessionDep, now: NowDep, _: AdminDep) -> list[WorkerRead]:
    """Every registered worker, whether it is alive and what it runs (admin)."""
    running = fleet.running_jobs_by_worker(session)
    return [
        WorkerRead(
            id=w.id,
            host=w.host,
            zone=w.zone,
            gpus=w.gpus,
            gpu_count=w.gpu_count,
            cpu_only=w.cpu_only,
            version=w.version,
            registered_at=w.registered_at,
            last_seen_at=w.last_seen_at,
            alive=fleet.is_alive(w, now),
            gpu_watts=w.gpu_watts or [],
            running_jobs=running.get(w.id, []),
            bases=w.bases or ["none"],
        )
        for w in fleet.list_workers(session)
    ]


@router.post("/{worker_id}/heartbeat")
def worker_heartbeat(
    worker_id: str, body: WorkerHeartbeat, session: SessionDep, now: NowDep, worker: CurrentWorker
) -> dict[str, bool]:
    """The worker is alive; its GPUs draw these watts."""
    service.heartbeat(session, worker, [g.model_dump() for g in body.gpu_watts], now=now)
    return {"ok": True}


@router.post("/{worker_id}/claim", response_model=ClaimResponse)
def claim(
    worker_id: str, session: SessionDep, now: NowDep, settings: SettingsDep, worker: CurrentWorker
) -> Response:
    """Claim the best ready job that fits this worker; 204 when none does."""
    claimed = service.claim(session, worker, now=now, lease_seconds=settings.lease_seconds)
    if claimed is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    job = claimed.job
    assert job.lease_token is not None and job.lease_expires_at is not None
    checkpoint = claimed.resume_from
    prepared = artifacts_service.prepared_data(session, job.id, before_attempt=job.attempt)
    return model_response(
        ClaimResponse(
            job=_claimed_job(job),
            attempt=job.attempt,
            lease_token=job.lease_token,
            lease_expires_at=job.lease_expires_at,
            resume_from=(
                ResumeFrom(
                    artifact=checkpoint.name, sha256=checkpoint.sha256, attempt=checkpoint.attempt
                )
                if checkpoint is not None
                else None
            ),
            prepared_from=(
                ResumeFrom(artifact=prepared.name, sha256=prepared.sha256, attempt=prepared.attempt)
                if prepared is not None
                else None
            ),
        )
    )


def _claimed_job(job: Job) -> ClaimedJob:
    return ClaimedJob(
        id=job.id,
        name=job.name,
        kind=job.kind,
        config=job.config,
        dataset=job.dataset or None,
        gpus=job.gpus,
        interruptible=job.interruptible,
        zone=job.zone,
        base=job.base,
    )


@router.post("/{worker_id}/jobs/{job_id}/heartbeat", response_model=JobHeartbeatResponse)
def job_heartbeat(
    worker_id: str,
    job_id: str,
    body: JobHeartbeat,
    session: SessionDep,
    now: NowDep,
    settings: SettingsDep,
    lease: LeaseDep,
) -> Response:
    """Renew the job's lease and report progress; the answer says continue, cancel or pause."""
    job = lease.job
    energy = body.energy.as_dict() if body.energy else None
    service.check_energy_plausible(
        session, job, lease.worker, energy, now=now, settings=settings, attempt_row=lease.attempt
    )
    action = service.job_heartbeat(
        session,
        lease.worker,
        job,
        progress=body.progress,
        energy_so_far=energy,
        now=now,
        lease_seconds=settings.lease_seconds,
        events=[event.model_dump() for event in body.events],
        attempt_row=lease.attempt,
    )
    assert job.lease_expires_at is not None
    return model_response(
        JobHeartbeatResponse(action=action, lease_expires_at=job.lease_expires_at)  # type: ignore[arg-type]  # one of its actions
    )


@router.post("/{worker_id}/jobs/{job_id}/complete", response_model=JobFinished)
def complete(
    worker_id: str,
    job_id: str,
    body: JobComplete,
    session: SessionDep,
    now: NowDep,
    settings: SettingsDep,
    scheduling: SchedulingDep,
    lease: LeaseDep,
) -> Response:
    """The job succeeded; its energy report is accounted and charged."""
    service.complete(
        session,
        lease.job,
        report=_checked_report(session, lease, body.energy, now, settings),
        result=body.result,
        now=now,
        scheduling=scheduling,
        attempt_row=lease.attempt,
        worker=lease.worker,
    )
    return _finished(lease.job)


@router.post("/{worker_id}/jobs/{job_id}/fail", response_model=JobFinished)
def fail(
    worker_id: str,
    job_id: str,
    body: JobFail,
    session: SessionDep,
    now: NowDep,
    settings: SettingsDep,
    scheduling: SchedulingDep,
    lease: LeaseDep,
) -> Response:
    """The attempt failed or stopped on cancel; retryable failures are requeued."""
    service.fail(
        session,
        lease.job,
        report=_checked_report(session, lease, body.energy, now, settings),
        error=body.error,
        retryable=body.retryable,
        cancelled=body.cancelled,
        now=now,
        scheduling=scheduling,
        max_infra_restarts=settings.max_infra_restarts,
        attempt_row=lease.attempt,
        worker=lease.worker,
    )
    return _finished(lease.job)


@router.post("/{worker_id}/jobs/{job_id}/release", response_model=JobFinished)
def release(
    worker_id: str,
    job_id: str,
    body: JobRelease,
    session: SessionDep,
    now: NowDep,
    settings: SettingsDep,
    scheduling: SchedulingDep,
    lease: LeaseDep,
) -> Response:
    """The worker checkpointed and let the job go (pause or shutdown)."""
    service.release(
        session,
        lease.job,
        report=_checked_report(session, lease, body.energy, now, settings),
        reason=body.reason,
        now=now,
        scheduling=scheduling,
        attempt_row=lease.attempt,
        worker=lease.worker,
    )
    return _finished(lease.job)


@router.post("/{worker_id}/jobs/{job_id}/orphan-energy", status_code=status.HTTP_202_ACCEPTED)
def orphan_energy(
    worker_id: str,
    job_id: str,
    body: JobOrphanEnergy,
    session: SessionDep,
    now: NowDep,
    scheduling: SchedulingDep,
    worker: CurrentWorker,
) -> dict[str, Any]:
    """Energy of an attempt this worker ran but lost the lease of: kept as unattributed
    energy of that attempt and charged (once per attempt)."""
    row = energy_service.keep_orphan_report(
        session,
        job_id=job_id,
        worker_id=worker.id,
        attempt=body.attempt,
        report=body.energy.as_dict(),
        now=now,
        scheduling=scheduling,
    )
    return {"job_id": job_id, "attempt": row.attempt, "unattributed_kwh": row.total_kwh}


def _checked_report(
    session: Session,
    lease: service.Lease,
    report: EnergyReport | None,
    now: datetime,
    settings: Settings,
) -> dict[str, Any] | None:
    """The attempt report as a dict, once its figures are physically possible (else 422)."""
    plain = report.as_dict() if report is not None else None
    service.check_energy_plausible(
        session,
        lease.job,
        lease.worker,
        plain,
        now=now,
        settings=settings,
        attempt_row=lease.attempt,
    )
    return plain


def _finished(job: Job) -> Response:
    return model_response(
        JobFinished(job_id=job.id, state=job.state, state_reason=job.state_reason)
    )
