"""Workers: registration, authentication, fenced claims and the worker's side of a job's
lease (heartbeats, complete, fail, release, the reaper).

The state changes themselves are the job life cycle's (`scheduler/jobs/lifecycle.py`);
liveness and capacity reads are the fleet's (`scheduler/workers/fleet.py`).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Update, bindparam, exists, or_, select
from sqlalchemy.orm import Session, lazyload

from scheduler.artifacts.models import Artifact
from scheduler.datasets.models import Dataset
from scheduler.energy import service as energy
from scheduler.energy.models import JobAttempt
from scheduler.errors import Conflict, InvalidInput, NotFound
from scheduler.jobs import lifecycle
from scheduler.jobs.lifecycle import Outcome
from scheduler.jobs.models import Job
from scheduler.jobs.states import JobState
from scheduler.scheduling.service import Scheduling, promote_due
from scheduler.settings import Settings
from scheduler.telemetry import memory
from scheduler.telemetry import service as telemetry
from scheduler.workers.models import Worker
from scheduler.workers.schemas import WorkerRegister
from worker.errors import public_error
from worker.training.config import BASE_NONE, WORKER_BASES

TOKEN_PREFIX = "gww"
CHECKPOINT_PREFIX = "checkpoint"


def _hash_secret(secret: str) -> str:
    # 256 random bits per token: a fast hash suffices, there is nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


def register(
    session: Session,
    spec: WorkerRegister,
    *,
    now: datetime,
    heartbeat_seconds: int,
    default_zone: str,
    scheduling: Scheduling | None = None,
) -> tuple[Worker, str]:
    """Register a worker; returns it and its token in clear text (shown once). With
    `scheduling`, the worker's zone is replanned at once around the new capacity."""
    secret = secrets.token_urlsafe(32)
    worker = Worker(
        host=spec.host,
        zone=spec.zone or default_zone,
        gpus=[gpu.model_dump() for gpu in spec.gpus],
        gpu_count=0 if spec.cpu_only else len(spec.gpus),
        cpu_only=spec.cpu_only or not spec.gpus,
        version=spec.version,
        token_hash=_hash_secret(secret),
        registered_at=now,
        last_seen_at=now,
        gpu_watts=[],
        heartbeat_seconds=heartbeat_seconds,
        bases=held_bases(spec.bases),
    )
    session.add(worker)
    session.flush()
    if scheduling is not None:
        scheduling.replan_now(session, worker.zone, now=now)
    return worker, f"{TOKEN_PREFIX}_{worker.id}_{secret}"


def held_bases(reported: list[str]) -> list[str]:
    """The bases a worker holds: the known ones it reported, plus `none` (needs no files)."""
    return sorted({BASE_NONE, *(base for base in reported if base in WORKER_BASES)})


def authenticate(session: Session, token: str) -> Worker | None:
    """The worker a per-worker token belongs to, or None."""
    prefix, _, rest = token.partition("_")
    worker_id, _, secret = rest.partition("_")
    if prefix != TOKEN_PREFIX or not worker_id or not secret:
        return None
    worker = session.get(Worker, worker_id)
    if worker is None:
        return None
    if not hmac.compare_digest(worker.token_hash, _hash_secret(secret)):
        return None
    return worker


def heartbeat(
    session: Session, worker: Worker, gpu_watts: list[dict[str, Any]], *, now: datetime
) -> None:
    """Note that the worker is alive, with its GPUs' latest power."""
    worker.last_seen_at = now
    worker.gpu_watts = gpu_watts


@dataclass(frozen=True)
class Claim:
    """A job a worker claimed, with its new lease and the checkpoint to resume from."""

    job: Job
    resume_from: Artifact | None


@functools.cache
def _claim_statement(postgresql: bool) -> Update:
    """The claim's UPDATE, built once (per dialect) and bound per claim: the best ready job
    of the worker's zone that fits its slots and bases, outside its unfit jobs."""
    dataset_id = Job.dataset["id"].as_string()
    candidate = (
        select(Job.id)
        .where(
            Job.state == JobState.READY,
            Job.gpus <= bindparam("b_slots"),
            Job.zone == bindparam("b_zone"),
            # Only jobs whose dataset (if any) passed validation.
            or_(
                dataset_id.is_(None),
                exists().where(Dataset.id == dataset_id, Dataset.state == "ready"),
            ),
            Job.base.in_(bindparam("b_bases", expanding=True)),
            Job.id.not_in(bindparam("b_unfit", expanding=True)),
        )
        .order_by(Job.priority.desc(), Job.planned_start.asc().nulls_last(), Job.id)
        .limit(1)
    )
    if postgresql:
        candidate = candidate.with_for_update(skip_locked=True, of=Job)
    return lifecycle.start_statement(candidate.scalar_subquery())


def claim(session: Session, worker: Worker, *, now: datetime, lease_seconds: int) -> Claim | None:
    """Claim the best ready job that fits the worker, as one fenced UPDATE (ready -> running
    through the life cycle's state machine); None if none fits.

    On PostgreSQL the candidate row is locked with SKIP LOCKED, so concurrent claims take
    different jobs instead of waiting; SQLite serialises writers with BEGIN IMMEDIATE.
    """
    worker.last_seen_at = now
    statement = _claim_statement(session.get_bind().dialect.name == "postgresql")
    params = {
        "b_slots": worker.slots,
        "b_zone": worker.zone,
        "b_bases": worker.bases or [BASE_NONE],
        # Never a job whose memory need this worker's GPUs cannot hold.
        "b_unfit": memory.unfit_job_ids(session, worker),
    }
    token = secrets.token_hex(32)

    def start() -> Job | None:
        return lifecycle.start_attempt(
            session,
            worker,
            statement,
            token=token,
            now=now,
            lease_seconds=lease_seconds,
            params=params,
        )

    job = start()
    # Jobs whose window opened since the last replan are due: promote them, try again.
    if job is None and promote_due(session, worker.zone, now=now):
        job = start()
    if job is None:
        return None
    return Claim(job, latest_checkpoint(session, job.id, before_attempt=job.attempt))


def latest_checkpoint(session: Session, job_id: str, *, before_attempt: int) -> Artifact | None:
    """The newest checkpoint an earlier attempt uploaded."""
    if before_attempt <= 1:
        return None  # uploads carry their (fenced) attempt, which starts at 1
    return session.scalar(
        select(Artifact)
        .where(
            Artifact.job_id == job_id,
            Artifact.attempt < before_attempt,
            Artifact.name.startswith(CHECKPOINT_PREFIX),
        )
        .order_by(Artifact.created_at.desc(), Artifact.id.desc())
        .limit(1)
    )


# Built once: every lease-holding call runs it. The job's team (joined by default) is
# left to load on first use: nothing on the worker protocol's path reads it.
_FENCE = (
    select(Job, JobAttempt)
    .outerjoin(JobAttempt, (JobAttempt.job_id == Job.id) & (JobAttempt.attempt == Job.attempt))
    .where(Job.id == bindparam("job_id"))
    .options(lazyload(Job.team))
    .with_for_update(of=Job)
    .execution_options(populate_existing=True)
)


@dataclass(frozen=True)
class Lease:
    """A running job the calling worker holds, with the record of the held attempt (None
    only for a job whose attempt has no record), both loaded by the fence's one read."""

    worker: Worker
    job: Job
    attempt: JobAttempt | None


def fenced_lease(
    session: Session, worker: Worker, job_id: str, *, attempt: int, lease_token: str
) -> Lease:
    """The running job this worker holds under (attempt, lease token), locked, with its
    current attempt's record; else 404 (unknown job) or 409 (lease lost).

    One read: every lease-holding call (heartbeat, complete, fail, release) needs the
    attempt's record too, so it is joined here instead of read again by each of them.
    """
    found = session.execute(_FENCE, {"job_id": job_id}).one_or_none()
    if found is None:
        raise NotFound(f"unknown job '{job_id}'", field="job_id")
    job, row = found
    holds = (
        job.state == JobState.RUNNING
        and job.attempt == attempt
        and job.worker_id == worker.id
        and job.lease_token is not None
        and hmac.compare_digest(job.lease_token, lease_token)
    )
    if not holds:
        raise Conflict(
            f"lease lost: job {job_id} attempt {attempt} is no longer held by this worker "
            f"(job is {job.state}, attempt {job.attempt})",
            field="lease_token",
        )
    return Lease(worker, job, row)


def fenced_job(
    session: Session, worker: Worker, job_id: str, *, attempt: int, lease_token: str
) -> Job:
    """The running job this worker holds under (attempt, lease token), locked; else 409."""
    return fenced_lease(session, worker, job_id, attempt=attempt, lease_token=lease_token).job


# A report may exceed full power over the server-side wall time by this factor plus the
# grace (clock skew, the metering window around the claim).
ENERGY_MARGIN = 1.25
ENERGY_GRACE_SECONDS = 120.0


def gpu_watts_cap(worker: Worker, settings: Settings) -> float:
    """The most one of this worker's GPUs can draw: its registered power limit if lower."""
    limits = []
    for gpu in worker.gpus or []:
        limit = gpu.get("power_limit_w")
        if limit is None:
            continue
        try:
            limits.append(float(limit))
        except (TypeError, ValueError):
            continue
    usable = [w for w in limits if 0 < w < settings.max_gpu_watts and math.isfinite(w)]
    return max(usable) if usable else settings.max_gpu_watts


def check_energy_plausible(
    session: Session,
    job: Job,
    worker: Worker,
    report: dict[str, Any] | None,
    *,
    now: datetime,
    settings: Settings,
    attempt_row: JobAttempt | None = None,
) -> None:
    """Refuse (422 naming the field) energy no hardware could have used: more than the
    job's GPUs at their power limit, or the host at its cap, over the attempt's wall time
    (measured by the service, from the claim) with a margin. `attempt_row` is the current
    attempt's record when the caller has it (else it is read)."""
    if not report:
        return
    attempt = attempt_row or energy.get_attempt(session, job.id, job.attempt)
    started = attempt.started_at if attempt is not None else (job.started_at or now)
    seconds = max((now - started).total_seconds(), 0.0)
    hours = (seconds * ENERGY_MARGIN + ENERGY_GRACE_SECONDS) / 3600.0
    per_gpu = gpu_watts_cap(worker, settings)
    gpu_kwh = job.gpus * per_gpu * hours / 1000.0
    host_kwh = settings.max_host_watts * hours / 1000.0
    why = (
        f"over the attempt's {seconds:.0f} s, {job.gpus} GPU(s) at {per_gpu:g} W and the "
        f"host at {settings.max_host_watts:g} W"
    )
    caps = {
        "gpu_kwh": gpu_kwh,
        "cpu_kwh": host_kwh,
        "ram_kwh": host_kwh,
        "kwh_so_far": gpu_kwh + host_kwh,
    }
    for key, cap in caps.items():
        value = report.get(key)
        if value is not None and float(value) > cap:
            raise InvalidInput(
                f"energy.{key} = {float(value):g} kWh is more than is possible {why} "
                f"(at most {cap:.6g} kWh)",
                field=f"energy.{key}",
            )
    for index, gpu in enumerate(report.get("gpus") or []):
        value = gpu.get("kwh") if isinstance(gpu, dict) else None
        if value is not None and float(value) > per_gpu * hours / 1000.0:
            raise InvalidInput(
                f"energy.gpus.{index}.kwh = {float(value):g} kWh is more than one GPU at "
                f"{per_gpu:g} W can use in the attempt's {seconds:.0f} s",
                field=f"energy.gpus.{index}.kwh",
            )


def holds_live_lease(job: Job, worker: Worker, now: datetime) -> bool:
    """True while this worker runs the job under an unexpired lease."""
    return (
        job.state == JobState.RUNNING
        and job.worker_id == worker.id
        and job.lease_token is not None
        and job.lease_expires_at is not None
        and job.lease_expires_at > now
    )


def leases_dataset(session: Session, worker: Worker, dataset_id: str, now: datetime) -> bool:
    """True while this worker holds a live lease on a job that trains on the dataset."""
    running = session.scalars(
        select(Job).where(
            Job.worker_id == worker.id,
            Job.state == JobState.RUNNING,
            Job.lease_expires_at > now,
        )
    )
    return any(
        (job.dataset or {}).get("id") == dataset_id and holds_live_lease(job, worker, now)
        for job in running
    )


def job_heartbeat(
    session: Session,
    worker: Worker,
    job: Job,
    *,
    progress: dict[str, Any] | None,
    energy_so_far: dict[str, Any] | None,
    now: datetime,
    lease_seconds: int,
    events: list[dict[str, str]] | None = None,
    attempt_row: JobAttempt | None = None,
) -> str:
    """Renew the lease, keep progress, energy and the worker's events; returns the action.
    `attempt_row` is the current attempt's record when the caller has it (else it is read)."""
    worker.last_seen_at = now
    for event in events or []:
        lifecycle.record_event(
            session,
            job,
            to_state=job.state,
            reason=f"worker {event['type']}: {event['message']}",
            now=now,
            data={"worker_id": worker.id},
        )
    job.lease_expires_at = now + timedelta(seconds=lease_seconds)
    job.updated_at = now
    if progress is not None:
        job.progress = telemetry.record_heartbeat(session, job, progress, now=now)
    energy.note_heartbeat(session, job, energy_so_far, now=now, row=attempt_row)
    if job.cancel_requested:
        return "cancel"
    if job.pause_requested and job.interruptible:
        return "pause"
    return "continue"


def complete(
    session: Session,
    job: Job,
    *,
    report: dict[str, Any] | None,
    result: dict[str, Any] | None,
    now: datetime,
    scheduling: Scheduling,
    attempt_row: JobAttempt | None = None,
    worker: Worker | None = None,
) -> Job:
    """The attempt succeeded: account its energy, settle the budget."""
    lifecycle.end_attempt(
        session,
        job,
        Outcome.SUCCEEDED,
        report=report,
        result=result,
        now=now,
        scheduling=scheduling,
        row=attempt_row,
    )
    # Its GPUs are free now, maybe earlier than estimated: the zone's queue moves up.
    scheduling.replan_now(session, job.zone, now=now, live_worker=worker)
    return job


def fail(
    session: Session,
    job: Job,
    *,
    report: dict[str, Any] | None,
    error: str,
    retryable: bool,
    cancelled: bool,
    now: datetime,
    scheduling: Scheduling,
    max_infra_restarts: int,
    attempt_row: JobAttempt | None = None,
    worker: Worker | None = None,
) -> Job:
    """The attempt failed (or stopped on cancel); `lifecycle.decide` says whether it is
    retried, cancelled or failed."""
    # Workers send one line already; an older or misbehaving one must not leak its
    # tracebacks and paths to the team.
    lifecycle.end_attempt(
        session,
        job,
        Outcome.CANCELLED if cancelled else Outcome.FAILED,
        report=report,
        error=public_error(error) if error else "",
        retryable=retryable,
        now=now,
        scheduling=scheduling,
        max_infra_restarts=max_infra_restarts,
        row=attempt_row,
    )
    scheduling.replan_now(session, job.zone, now=now, live_worker=worker)
    return job


def release(
    session: Session,
    job: Job,
    *,
    report: dict[str, Any] | None,
    reason: str,
    now: datetime,
    scheduling: Scheduling,
    attempt_row: JobAttempt | None = None,
    worker: Worker | None = None,
) -> Job:
    """The worker checkpointed and let go (pause or shutdown): back to scheduled (or
    cancelled, when a cancel was requested meanwhile)."""
    lifecycle.end_attempt(
        session,
        job,
        Outcome.RELEASED,
        report=report,
        paused=reason == "paused",
        now=now,
        scheduling=scheduling,
        row=attempt_row,
    )
    scheduling.replan_now(session, job.zone, now=now, live_worker=worker)
    return job


def reap_expired_leases(
    session: Session, *, now: datetime, max_infra_restarts: int, scheduling: Scheduling
) -> int:
    """Take back running jobs whose lease expired: `lifecycle.decide` requeues them, fails
    them after too many restarts, or cancels them when asked. Idempotent: a reaped job is
    no longer running."""
    expired = session.scalars(
        select(Job)
        .where(Job.state == JobState.RUNNING, Job.lease_expires_at < now)
        .order_by(Job.id)
        .with_for_update(skip_locked=True, of=Job)
    )
    reaped = 0
    for job in list(expired):
        lifecycle.end_attempt(
            session,
            job,
            Outcome.LOST,
            report=None,
            now=now,
            scheduling=scheduling,
            max_infra_restarts=max_infra_restarts,
        )
        reaped += 1
    return reaped
