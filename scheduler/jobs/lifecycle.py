"""The job life cycle: every change of a job's state, its history, and its budget reservation.

Everything that moves a job between states comes through here, so the state machine
(`states.py`) is checked on every change and each change leaves a `JobEvent`:

- `transition` moves one loaded job; `transition_where` moves whichever jobs match a
  condition in one conditional UPDATE (promotion of due jobs), and `start_attempt` the one
  job a claim selects (its UPDATE built once by `start_statement`); both are race-safe
  because the source state is part of the WHERE.
- The reservation ledger: `reserve` at admission, `move_reservation` when a replan moves the
  job to another budget period, `charge_attempt` when an attempt is measured (it releases
  as much of the reservation), and `release_reservation` when the job ends. The ledger rows
  themselves are written by `scheduler/budgets/service.py`.
- `end_attempt` ends a worker's attempt, whatever ended it: a success, a failure, a
  cancel, a release (pause or shutdown) or a lost lease. One policy (`decide`) picks what
  the job becomes.

Layering (checked by tests/service/test_layers.py): this module sits above budgets, energy
accounting and the fleet, and below the scheduling context, the job service and the worker
service, which call it. It never replans; its callers do, once their change is made.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, Update, bindparam, func, update
from sqlalchemy.orm import Session

from scheduler.budgets import service as budgets
from scheduler.energy import efficiency
from scheduler.energy import service as energy
from scheduler.energy.models import JobAttempt
from scheduler.jobs.models import Job, JobEvent
from scheduler.jobs.states import TERMINAL, JobState, check_transition
from scheduler.workers.models import Worker

# -- history and transitions ---------------------------------------------------------------


def record_event(
    session: Session,
    job: Job,
    *,
    to_state: JobState,
    reason: str,
    now: datetime,
    from_state: JobState | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    """Append a row to the job's history (a state change, or a note in the same state)."""
    session.add(
        JobEvent(
            job_id=job.id,
            at=now,
            from_state=from_state,
            to_state=to_state,
            reason=reason,
            attempt=job.attempt,
            data=data,
        )
    )


def transition(
    session: Session,
    job: Job,
    target: JobState,
    *,
    reason: str,
    now: datetime,
    data: dict[str, Any] | None = None,
) -> None:
    """Move a job to `target` if the state machine allows it, recording why."""
    current = JobState(job.state)
    check_transition(current, target)
    job.state = target
    job.state_reason = reason
    job.updated_at = now
    if target in TERMINAL:
        job.finished_at = now
    record_event(
        session, job, from_state=current, to_state=target, reason=reason, now=now, data=data
    )


def transition_where(
    session: Session,
    *,
    source: JobState,
    target: JobState,
    where: Sequence[ColumnElement[bool]],
    reason: str,
    now: datetime,
    values: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    zone: str | None = None,
) -> list[Job]:
    """Move the `source` jobs matching `where` to `target` in one conditional UPDATE, with
    `values` set alongside; returns the jobs moved, reloaded, each with its event.

    The state machine is checked before anything is written. The source state is part of
    the WHERE, so of concurrent callers each job moves once and the others see no row.
    `zone`, when every matching job is in one zone, names the queue whose version the
    change bumps (scheduling/occupancy.py); without it every zone's is bumped.
    """
    check_transition(source, target)
    fields: dict[str, Any] = {"state": target, "state_reason": reason, "updated_at": now}
    if target in TERMINAL:
        fields["finished_at"] = now
    statement = (
        update(Job)
        .where(Job.state == source, *where)
        .values(**fields, **(values or {}))
        # The whole rows come back: no second read of the moved jobs.
        .returning(Job)
        .execution_options(synchronize_session=False, populate_existing=True)
    )
    if zone is not None:
        statement = statement.execution_options(queue_zone=zone)
    moved = []
    for job in session.scalars(statement).all():
        record_event(
            session, job, from_state=source, to_state=target, reason=reason, now=now, data=data
        )
        moved.append(job)
    return moved


def start_statement(candidate: ColumnElement[Any]) -> Update:
    """The UPDATE that starts an attempt of the ready job `candidate` selects (ready ->
    running), for `start_attempt`.

    Everything that varies per claim is a bound parameter (`b_reason`, `b_now`, `b_token`,
    `b_expires`, `b_worker`, plus whatever `candidate` binds), so a claim can build the
    statement once and run it many times: building it, and its cache key, is a good part
    of a claim's cost. `start_attempt` checks the transition on every run."""
    jobs = cast(Table, Job.__table__)
    now = bindparam("b_now", type_=jobs.c.updated_at.type)
    return (
        update(Job)
        .where(Job.state == JobState.READY, Job.id == candidate)
        .values(
            state=JobState.RUNNING,
            state_reason=bindparam("b_reason", type_=jobs.c.state_reason.type),
            updated_at=now,
            attempt=Job.attempt + 1,
            lease_token=bindparam("b_token", type_=jobs.c.lease_token.type),
            lease_expires_at=bindparam("b_expires", type_=jobs.c.lease_expires_at.type),
            worker_id=bindparam("b_worker", type_=jobs.c.worker_id.type),
            started_at=func.coalesce(Job.started_at, now),
            pause_requested=False,
        )
        # The whole row comes back: no second read of the started job.
        .returning(Job)
        .execution_options(synchronize_session=False, populate_existing=True)
    )


def start_attempt(
    session: Session,
    worker: Worker,
    statement: Update,
    *,
    token: str,
    now: datetime,
    lease_seconds: int,
    params: Mapping[str, Any] | None = None,
) -> Job | None:
    """Start a new attempt of the ready job `statement` (from `start_statement`) selects,
    leased to `worker` under `token`: ready -> running, with its event, and its energy
    record opened. `params` binds the candidate query's own parameters. None when the
    candidate is gone (none left, or another claim took it first).

    Of concurrent claims each job moves once: its state is part of the WHERE."""
    # Checked on every claim, not only when the statement was built.
    check_transition(JobState.READY, JobState.RUNNING)
    reason = f"running on {worker.host}"
    job: Job | None = session.scalars(
        statement,
        {
            **(params or {}),
            "b_reason": reason,
            "b_now": now,
            "b_token": token,
            "b_expires": now + timedelta(seconds=lease_seconds),
            "b_worker": worker.id,
        },
        # The queue whose version the claim bumps (scheduling/occupancy.py).
        execution_options={"queue_zone": worker.zone},
    ).one_or_none()
    if job is None:
        return None
    record_event(
        session,
        job,
        from_state=JobState.READY,
        to_state=JobState.RUNNING,
        reason=reason,
        now=now,
        data={"worker_id": worker.id, "host": worker.host},
    )
    energy.open_attempt(session, job, worker_id=worker.id, now=now)
    return job


# -- the reservation ledger ----------------------------------------------------------------


def reserve(
    session: Session,
    job: Job,
    *,
    now: datetime,
    kg: float | None = None,
    counts_at: datetime | None = None,
    note: str = "estimate reserved at admission",
) -> None:
    """Reserve `kg` (default: the job's estimate) in the period of `counts_at` (default: its
    planned start), and remember both on the job."""
    note_reservation(job, now=now, kg=kg, counts_at=counts_at)
    budgets.reserve(
        session,
        team_id=job.team_id,
        job_id=job.id,
        kg=job.reserved_kg_co2e,
        kwh=job.estimated_kwh,
        now=now,
        counts_at=job.reserved_counts_at or now,
        note=note,
    )


def note_reservation(
    job: Job, *, now: datetime, kg: float | None = None, counts_at: datetime | None = None
) -> None:
    """Set on the job the reservation `reserve` makes (its defaults as there). A submission
    sets it before the job's INSERT, so that `reserve` after it changes nothing on the row
    and no UPDATE follows."""
    job.reserved_kg_co2e = job.estimated_kg_co2e if kg is None else kg
    job.reserved_counts_at = counts_at or job.planned_start or now


def move_reservation(session: Session, job: Job, *, now: datetime) -> None:
    """Move a job's outstanding reservation to the UTC day of its (new) planned start.

    Budget periods begin at UTC midnights, so a move within one day changes no period's
    figures and is not written.
    """
    old, new = job.reserved_counts_at, job.planned_start
    if job.reserved_kg_co2e <= 0 or old is None or new is None or _utc_day(old) == _utc_day(new):
        return
    note = f"reservation moved: replanned from {old.date()} to {new.date()}"
    budgets.release(
        session,
        team_id=job.team_id,
        job_id=job.id,
        kg=job.reserved_kg_co2e,
        now=now,
        counts_at=old,
        note=note,
    )
    reserve(session, job, now=now, kg=job.reserved_kg_co2e, counts_at=new, note=note)


def _utc_day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def release_reservation(session: Session, job: Job, *, now: datetime, note: str) -> None:
    """Give back whatever is still reserved for the job."""
    budgets.release(
        session,
        team_id=job.team_id,
        job_id=job.id,
        kg=job.reserved_kg_co2e,
        now=now,
        counts_at=job.reserved_counts_at or now,
        note=note,
    )
    job.reserved_kg_co2e = 0.0


def charge_attempt(session: Session, job: Job, row: JobAttempt, *, now: datetime) -> None:
    """Charge an attempt as soon as it is measured, so no energy goes uncharged even when the
    job later ends without running again; the same amount of its reservation is released so
    that committed + actual never counts it twice."""
    budgets.charge(
        session,
        team_id=job.team_id,
        job_id=job.id,
        uses=energy.energy_uses(row),
        now=now,
        note=energy.ledger_note(
            f"measured emissions of job {job.id} attempt {row.attempt} ({row.outcome})",
            row.signal,
        ),
    )
    covered = min(row.kg_co2e, job.reserved_kg_co2e)
    if covered > 0:
        budgets.release(
            session,
            team_id=job.team_id,
            job_id=job.id,
            kg=covered,
            now=now,
            counts_at=job.reserved_counts_at or now,
            note=f"attempt {row.attempt} measured: that much of the reservation released",
        )
        job.reserved_kg_co2e -= covered
    job.actual_kwh = (job.actual_kwh or 0.0) + row.total_kwh * energy.attempt_pue(row)
    job.actual_kg_co2e = (job.actual_kg_co2e or 0.0) + row.kg_co2e


def settle(
    session: Session,
    job: Job,
    *,
    now: datetime,
    scheduling: energy.EnergyContext,
    last: JobAttempt | None = None,
) -> None:
    """At a job's end: release what is left of its reservation; its actual totals are the sum
    of its attempts, each charged when it was measured. A success teaches the estimator.

    `last` is the record of the attempt that just ended, when the caller has it: a job on
    its first attempt has no other record (attempts are numbered from 1 by the claim), so
    none is read."""
    if last is not None and job.attempt == 1 and last.attempt == 1:
        rows = [last]
    else:
        rows = energy.attempts(session, job.id)
    job.actual_kwh = sum(row.total_kwh * energy.attempt_pue(row) for row in rows)
    job.actual_kg_co2e = sum(row.kg_co2e for row in rows)
    release_reservation(session, job, now=now, note=f"job {job.state}: reservation released")
    energy.observe_finished(scheduling, session, job, rows)
    efficiency.record(session, job, rows, now=now)


# -- the end of an attempt -----------------------------------------------------------------


class Outcome(StrEnum):
    """How a worker's attempt ended (also the attempt record's `outcome`)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"  # the worker stopped it on the user's cancel
    RELEASED = "released"  # the worker checkpointed and let go: paused, or shutting down
    LOST = "lost"  # the lease expired: the worker is gone


PAUSED_REASON = "paused by planner: resumes in the next low-carbon window"
SHUTDOWN_REASON = "worker shut down; resumes from checkpoint"


@dataclass(frozen=True)
class Decision:
    """What a job becomes when an attempt ends, and why."""

    target: JobState
    reason: str
    # A retry spends one of the job's infrastructure restarts.
    spends_restart: bool = False


def decide(
    job: Job,
    outcome: Outcome,
    *,
    max_infra_restarts: int,
    retryable: bool = False,
    error: str = "",
    paused: bool = False,
    lost: str = "worker lost",
) -> Decision:
    """The one retry policy, for every way an attempt ends:

    - success: succeeded;
    - a cancel (the worker stopped on it, or one was requested while the attempt ran):
      cancelled, whatever else ended the attempt;
    - a release: scheduled again, resuming from its checkpoint (no restart is spent);
    - a retryable failure, or a lost worker: scheduled again while infrastructure restarts
      remain (each retry spends one), failed after that;
    - any other failure: failed.

    `job.infra_restarts` is read as it was before this attempt ended.
    """
    if outcome is Outcome.SUCCEEDED:
        return Decision(JobState.SUCCEEDED, "succeeded")
    if outcome is Outcome.CANCELLED or job.cancel_requested:
        suffix = f"; {lost}" if outcome is Outcome.LOST else ""
        return Decision(JobState.CANCELLED, f"cancelled by user{suffix}")
    if outcome is Outcome.RELEASED:
        return Decision(JobState.SCHEDULED, PAUSED_REASON if paused else SHUTDOWN_REASON)
    restarts = job.infra_restarts
    if (retryable or outcome is Outcome.LOST) and restarts < max_infra_restarts:
        if outcome is Outcome.LOST:
            reason = f"{lost}: resumes from its last checkpoint"
        else:
            reason = (
                f"attempt {job.attempt} failed ({_short(error)}): retry {restarts + 1} of "
                f"{max_infra_restarts}, resumes from its last checkpoint"
            )
        return Decision(JobState.SCHEDULED, reason, spends_restart=True)
    if outcome is Outcome.LOST:
        return Decision(JobState.FAILED, f"{lost}: gave up after {restarts} restarts")
    return Decision(JobState.FAILED, f"failed: {_short(error)}" if error else "failed")


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def end_attempt(
    session: Session,
    job: Job,
    outcome: Outcome,
    *,
    report: dict[str, Any] | None,
    now: datetime,
    scheduling: energy.EnergyContext,
    max_infra_restarts: int = 0,
    retryable: bool = False,
    error: str = "",
    paused: bool = False,
    result: dict[str, Any] | None = None,
    row: JobAttempt | None = None,
) -> Decision:
    """End the running job's current attempt: measure and charge its energy, drop the
    lease, move the job where `decide` says, and settle the budget if the job ended.

    `max_infra_restarts` bounds the retries of failures and lost workers; `error` is a
    failure's one-line public message (the caller cleans what a worker sent); `result` is
    stored on a success's event; `row` is the current attempt's record when the caller
    has it (else it is read). The caller replans the zone afterwards.
    """
    lost = "worker lost"
    if outcome is Outcome.LOST and job.lease_expires_at is not None:
        expired = job.lease_expires_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        lost = f"worker lost (lease expired at {expired})"
    row = energy.close_attempt(
        session, job, outcome=outcome.value, report=report, now=now, scheduling=scheduling, row=row
    )
    charge_attempt(session, job, row, now=now)
    job.lease_token = None
    job.lease_expires_at = None
    decision = decide(
        job,
        outcome,
        max_infra_restarts=max_infra_restarts,
        retryable=retryable,
        error=error,
        paused=paused,
        lost=lost,
    )
    if outcome in (Outcome.FAILED, Outcome.CANCELLED):
        job.error = error or None
    if outcome is Outcome.RELEASED:
        job.pause_requested = False
    if decision.spends_restart:
        job.infra_restarts += 1
    if outcome is Outcome.LOST and decision.target is JobState.FAILED:
        job.error = decision.reason
    transition(
        session,
        job,
        decision.target,
        reason=decision.reason,
        now=now,
        data=(result or None) if outcome is Outcome.SUCCEEDED else None,
    )
    if decision.target in TERMINAL:
        settle(session, job, now=now, scheduling=scheduling, last=row)
    return decision
