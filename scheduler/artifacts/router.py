"""HTTP endpoints for job artifacts: fenced streamed uploads by workers, listing, download."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Header, Request, status
from fastapi.responses import FileResponse
from pydantic import BaseModel
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from scheduler.artifacts import service, storage, tensorboard
from scheduler.context import AppContext
from scheduler.db.session import session_scope
from scheduler.deps import ContextDep, SessionDep, SettingsDep, bearer_token
from scheduler.errors import InvalidInput, NotFound, Unauthorized
from scheduler.jobs.models import Job
from scheduler.jobs.states import JobState
from scheduler.workers import service as workers
from scheduler.workers.auth import Caller, CallerDep
from scheduler.workers.models import Worker

router = APIRouter(prefix="/v1/jobs", tags=["artifacts"])
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class ArtifactRead(BaseModel):
    name: str
    size: int
    sha256: str
    attempt: int
    created_at: datetime


class ArtifactStored(BaseModel):
    name: str
    size: int
    sha256: str


def _check_lease(
    context: AppContext,
    token: str | None,
    job_id: str,
    name: str,
    attempt: int,
    lease_token: str,
) -> None:
    """Refuse (401/404/409) unless the calling worker holds the job's lease; refuse (422) a
    name that clashes by case with one of the job's artifacts."""
    with session_scope(context.session_factory) as session:
        worker = workers.authenticate(session, token or "")
        if worker is None:
            raise Unauthorized("artifact uploads need the worker token of the job's lease holder")
        workers.fenced_job(session, worker, job_id, attempt=attempt, lease_token=lease_token)
        service.refuse_case_clash(session, job_id, name)


@router.put(
    "/{job_id}/artifacts/{name}",
    status_code=status.HTTP_201_CREATED,
    response_model=ArtifactStored,
)
async def upload_artifact(
    job_id: str,
    name: str,
    request: Request,
    context: ContextDep,
    x_attempt: Annotated[int, Header(ge=1)],
    x_lease_token: Annotated[str, Header(min_length=1, max_length=64)],
    x_content_sha256: Annotated[str, Header(min_length=64, max_length=64)],
) -> ArtifactStored:
    """Store a file of the job; the worker must hold the lease and the checksum must match."""
    storage.check_name(name)
    if name == tensorboard.MERGED_NAME:
        raise InvalidInput(
            f"'{name}' is merged by the service: upload tensorboard-<attempt>.tar", field="name"
        )
    expected = x_content_sha256.lower()
    if not SHA256_HEX.fullmatch(expected):
        raise InvalidInput("X-Content-SHA256 must be 64 hex digits", field="X-Content-SHA256")
    settings = context.settings
    token = bearer_token(request)
    # Checked before the body is read, so a stale worker does not upload gigabytes for nothing;
    # no transaction stays open during the upload.
    await run_in_threadpool(_check_lease, context, token, job_id, name, x_attempt, x_lease_token)
    directory = service.job_directory(settings, job_id)
    upload = await storage.receive_to_temp(
        request.stream(), directory, max_bytes=settings.max_upload_bytes
    )
    if upload.sha256 != expected:
        storage.discard(upload)
        raise InvalidInput(
            f"checksum mismatch: the body's SHA-256 is {upload.sha256}, the header said {expected}",
            field="X-Content-SHA256",
        )

    def keep() -> None:
        with session_scope(context.session_factory) as session:
            worker = workers.authenticate(session, token or "")
            assert worker is not None
            try:
                workers.fenced_job(
                    session, worker, job_id, attempt=x_attempt, lease_token=x_lease_token
                )
                service.refuse_case_clash(session, job_id, name)
            except Exception:
                storage.discard(upload)
                raise
            storage.commit_upload(upload, directory / name)
            service.record(
                session,
                job_id=job_id,
                name=name,
                attempt=x_attempt,
                upload=upload,
                now=context.now(),
            )
            if tensorboard.is_part(name):
                service.rebuild_tensorboard(session, settings, job_id, now=context.now())

    await run_in_threadpool(keep)
    return ArtifactStored(name=name, size=upload.size, sha256=upload.sha256)


def _continued_by(session: SessionDep, worker: Worker, job: Job, now: datetime) -> bool:
    """Whether the worker holds a live lease on a job of the same team that continues `job`
    (base job:<id>): it reads the earlier job's adapters, and only while it runs that job."""
    running = session.scalars(
        select(Job).where(
            Job.worker_id == worker.id,
            Job.state == JobState.RUNNING.value,
            Job.team_id == job.team_id,
        )
    )
    return any(
        (other.config or {}).get("base") == f"job:{job.id}"
        and workers.holds_live_lease(other, worker, now)
        for other in running
    )


def visible_job(session: SessionDep, caller: Caller, job_id: str) -> Job:
    """The job if the caller may read its files: its team, the admin, or the worker that
    holds its live lease (not one that ran it once)."""
    job = session.get(Job, job_id)
    if job is not None:
        if caller.worker is not None:
            assert caller.now is not None
            if workers.holds_live_lease(job, caller.worker, caller.now) or _continued_by(
                session, caller.worker, job, caller.now
            ):
                return job
        if caller.worker is None and caller.can_see_team(job.team_id):
            return job
    raise NotFound(f"unknown job '{job_id}'", field="job_id")


@router.get("/{job_id}/artifacts", response_model=list[ArtifactRead])
def list_artifacts(job_id: str, session: SessionDep, caller: CallerDep) -> list[ArtifactRead]:
    """The job's stored files with size, checksum and the attempt that wrote them."""
    visible_job(session, caller, job_id)
    return [
        ArtifactRead.model_validate(a, from_attributes=True)
        for a in service.list_artifacts(session, job_id)
    ]


@router.get("/{job_id}/artifacts/{name}")
def download_artifact(
    job_id: str, name: str, session: SessionDep, settings: SettingsDep, caller: CallerDep
) -> FileResponse:
    """One stored file, streamed."""
    visible_job(session, caller, job_id)
    artifact = service.get_artifact(session, job_id, storage.check_name(name))
    path = service.job_directory(settings, job_id) / artifact.name
    if not path.is_file():
        raise NotFound(f"artifact '{name}' of job {job_id} is missing from the store", field="name")
    return FileResponse(
        path,
        media_type="application/octet-stream",
        filename=artifact.name,
        headers={"X-Content-SHA256": artifact.sha256},
    )
