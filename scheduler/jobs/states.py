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
WAITING = frozenset({JobState.HELD, JobState.SCHEDULED, JobState.READY, JobState.PAUSED})

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
