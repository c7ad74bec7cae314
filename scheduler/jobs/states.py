"""The job state machine: the states and the only transitions allowed between them."""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    """Where a job is in its life."""

    HELD = "held"
    SCHEDULED = "scheduled"
    READY = "ready"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
# Waiting: the job has not started (or was paused) and has not ended, so a cancel ends it at
# once and dashboards count it as queued. `held` belongs here: a job held by its team's budget
# is waiting for admission, not running, and a cancel must not wait for a worker.
WAITING = frozenset({JobState.HELD, JobState.SCHEDULED, JobState.READY, JobState.PAUSED})
# The planner's queue: the waiting jobs that were admitted, whose plans hold GPUs and may be
# moved to `ready`. A held job is left out on purpose: its budget has not admitted it, so a
# replan must neither promote it (that would run it past its budget) nor count its tentative
# plan against the capacity of admitted jobs; `readmit_held` admits it first.
QUEUED = WAITING - {JobState.HELD}

ALLOWED: dict[JobState, frozenset[JobState]] = {
    JobState.HELD: frozenset(
        {JobState.SCHEDULED, JobState.READY, JobState.CANCELLED, JobState.FAILED}
    ),
    JobState.SCHEDULED: frozenset(
        {JobState.READY, JobState.HELD, JobState.CANCELLED, JobState.FAILED}
    ),
    JobState.READY: frozenset(
        {JobState.RUNNING, JobState.SCHEDULED, JobState.HELD, JobState.CANCELLED}
    ),
    JobState.RUNNING: frozenset(
        {
            JobState.SUCCEEDED,
            JobState.FAILED,
            JobState.CANCELLED,
            JobState.PAUSED,
            JobState.SCHEDULED,  # lease expired: requeued to resume from its checkpoint
        }
    ),
    JobState.PAUSED: frozenset({JobState.SCHEDULED, JobState.READY, JobState.CANCELLED}),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


class IllegalTransition(ValueError):
    """A transition the state machine does not allow."""


def check_transition(current: JobState, target: JobState) -> None:
    """Raise IllegalTransition unless current -> target is allowed."""
    if target not in ALLOWED[current]:
        raise IllegalTransition(f"a {current} job cannot become {target}")
