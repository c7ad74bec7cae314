"""Jobs: submission with budget admission and idempotency, reads, cancellation.

State changes and the reservation ledger are the life cycle's (`lifecycle.py`)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from scheduler.budgets import service as budgets
from scheduler.errors import Conflict, InvalidInput, NotFound
from scheduler.jobs import lifecycle
from scheduler.jobs.models import Job, JobEvent
from scheduler.jobs.schemas import MAX_HORIZON, JobCreate
from scheduler.jobs.states import TERMINAL, WAITING, JobState
from scheduler.scheduling.service import Scheduling
from scheduler.teams.models import Team

MAX_PAGE = 200


def _request_hash(spec: JobCreate) -> str:
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _existing_for_key(session: Session, team: Team, key: str, request_hash: str) -> Job | None:
    job = session.scalar(select(Job).where(Job.team_id == team.id, Job.idempotency_key == key))
    if job is not None and job.request_hash != request_hash:
        raise Conflict(
            "Idempotency-Key was already used for a different request", field="Idempotency-Key"
        )
    return job


def draft(
    session: Session, *, team: Team, spec: JobCreate, now: datetime, scheduling: Scheduling
) -> tuple[Job, JobState, str]:
    """An unsaved job for `spec`: validated, estimated and placed around the queue; returns it
    with the state and reason its plan implies (submission saves it, a preview does not)."""
    if spec.deadline is not None and spec.deadline <= now:
        raise InvalidInput("deadline is in the past", field="deadline")
    if spec.not_before is not None:
        if spec.not_before > now + MAX_HORIZON:
            raise InvalidInput(
                f"not_before is more than {MAX_HORIZON.days} days ahead", field="not_before"
            )
        if spec.deadline is not None and spec.not_before >= spec.deadline:
            raise InvalidInput("not_before must be before the deadline", field="not_before")
    if spec.deadline is not None and spec.deadline > now + MAX_HORIZON:
        # The same bound as max_delay_minutes: the planner looks no further ahead.
        raise InvalidInput(f"deadline is more than {MAX_HORIZON.days} days ahead", field="deadline")
    not_before = spec.earliest_start(now)
    job = Job(
        team_id=team.id,
        name=spec.name,
        kind=spec.kind,
        dataset=spec.dataset.model_dump() if spec.dataset else {},
        config=spec.config,
        gpus=spec.gpus,
        # Relative deadlines are fixed once the run time is estimated, below.
        deadline=spec.resolved_deadline(now),
        not_before=not_before if not_before > now else None,
        interruptible=spec.interruptible,
        objective=spec.objective,
        priority=spec.priority,
        zone=spec.zones[0] if spec.zones else spec.zone or scheduling.default_zone,
        zones=list(spec.zones) if spec.zones else None,
        base="none",  # a fine-tune's is resolved by validate_submission
        state=JobState.SCHEDULED,
        submitted_at=now,
        updated_at=now,
        attempt=0,
        infra_restarts=0,
        cancel_requested=False,
        planned_intervals=[],
    )
    scheduling.validate_submission(session, job)
    scheduling.estimate(session, job, now=now)
    job.deadline = spec.resolved_deadline(now, job.estimated_duration_s)
    if job.zones and len(job.zones) > 1:
        state, reason = scheduling.place_in_best_zone(session, job, job.zones, now=now)
    else:
        state, reason = scheduling.place_new_job(session, job, now=now)
    return job, state, reason


def submit(
    session: Session,
    *,
    team: Team,
    spec: JobCreate,
    idempotency_key: str | None,
    now: datetime,
    scheduling: Scheduling,
) -> tuple[Job, bool]:
    """Admit and plan a job; returns (job, created). A repeated Idempotency-Key returns the
    job the first request created."""
    request_hash = _request_hash(spec)
    if idempotency_key is not None:
        existing = _existing_for_key(session, team, idempotency_key, request_hash)
        if existing is not None:
            return existing, False
    job, state, reason = draft(session, team=team, spec=spec, now=now, scheduling=scheduling)
    job.idempotency_key = idempotency_key
    job.request_hash = request_hash
    admission = budgets.admit(session, team, job.estimated_kg_co2e, now=now, at=job.planned_start)
    if admission.decision == "deny":
        raise budgets.deny_error(admission)
    if admission.decision == "hold":
        state, reason = JobState.HELD, admission.reason
    job.state, job.state_reason = state, reason
    if state != JobState.HELD:
        lifecycle.note_reservation(job, now=now)  # in the INSERT, not an UPDATE after it
    if idempotency_key is None:
        session.add(job)
        session.flush()  # no race to lose, so no savepoint (two statements fewer)
    else:
        try:
            # A savepoint, so that losing an idempotency race leaves the session usable.
            # The job joins the session inside it: begin_nested() first flushes what is
            # pending, and that INSERT would fail outside the savepoint.
            with session.begin_nested():
                session.add(job)
                session.flush()
        except IntegrityError:
            existing = _existing_for_key(session, team, idempotency_key, request_hash)
            if existing is None:
                raise
            return existing, False
    if state != JobState.HELD:
        lifecycle.reserve(session, job, now=now)
    lifecycle.record_event(
        session,
        job,
        to_state=job.state,
        reason=job.state_reason,
        now=now,
        data=admission.numbers or None,
    )
    return job, True


def readmit_held(session: Session, *, now: datetime, scheduling: Scheduling) -> int:
    """Admit held jobs whose team's budget can now cover them (e.g. after a period rolled)."""
    admitted = 0
    held = session.scalars(
        select(Job).where(Job.state == JobState.HELD).order_by(Job.priority.desc(), Job.id)
    )
    for job in list(held):
        team = session.get(Team, job.team_id)
        assert team is not None
        # Placed first so admission judges the budget period the job would run in; a job
        # that stays held keeps that tentative plan, which no other placement counts.
        state, reason = scheduling.place_new_job(session, job, now=now)
        admission = budgets.admit(
            session, team, job.estimated_kg_co2e, now=now, at=job.planned_start
        )
        if admission.decision != "admit":
            continue
        lifecycle.transition(session, job, state, reason=reason, now=now)
        lifecycle.reserve(session, job, now=now)
        admitted += 1
    return admitted


def get_job(session: Session, job_id: str, *, team_id: str | None) -> Job:
    """A job by id; `team_id` restricts to that team (another team's job is NotFound)."""
    job = session.get(Job, job_id)
    if job is None or (team_id is not None and job.team_id != team_id):
        raise NotFound(f"unknown job '{job_id}'", field="job_id")
    return job


def list_jobs(
    session: Session,
    *,
    team_id: str | None,
    state: str | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[Job], str | None]:
    """Jobs newest first, `limit` per page; the cursor is the last id of the previous page."""
    if state is not None and state not in {s.value for s in JobState}:
        raise InvalidInput(
            f"unknown state '{state}'; one of {', '.join(s.value for s in JobState)}", field="state"
        )
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}", field="limit")
    query = select(Job).order_by(Job.id.desc()).limit(limit + 1)
    if team_id is not None:
        query = query.where(Job.team_id == team_id)
    if state is not None:
        query = query.where(Job.state == JobState(state))
    if cursor:
        query = query.where(Job.id < cursor)
    jobs = list(session.scalars(query))
    next_cursor = jobs[limit - 1].id if len(jobs) > limit else None
    return jobs[:limit], next_cursor


def events(session: Session, job: Job) -> list[JobEvent]:
    """The job's history, oldest first."""
    return list(
        session.scalars(select(JobEvent).where(JobEvent.job_id == job.id).order_by(JobEvent.id))
    )


def cancel(
    session: Session, job: Job, *, now: datetime, scheduling: Scheduling | None = None
) -> Job:
    """Cancel a waiting job at once; a running one is asked to stop through its worker.

    With `scheduling`, the zone is replanned at once: the cancelled job's window is free.
    """
    state = JobState(job.state)
    if state in TERMINAL:
        raise Conflict(f"job {job.id} already {state.value}", field="state")
    if state in WAITING:
        lifecycle.transition(session, job, JobState.CANCELLED, reason="cancelled by user", now=now)
        lifecycle.release_reservation(session, job, now=now, note="job cancelled before it ran")
        if scheduling is not None:
            scheduling.replan_now(session, job.zone, now=now)
        return job
    if not job.cancel_requested:
        job.cancel_requested = True
        job.state_reason = "cancel requested; the worker is stopping the job"
        job.updated_at = now
        lifecycle.record_event(session, job, to_state=job.state, reason=job.state_reason, now=now)
    return job
