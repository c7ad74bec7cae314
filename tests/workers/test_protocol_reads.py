"""The worker protocol's hot calls read each row once.

Claim, heartbeat and complete run for every job, so what they read is watched here: the
lease fence loads the held attempt's record with the job (no second read of it by the
heartbeat, the plausibility check, the close or the settlement), a first claim looks for
no checkpoint or prepared data (no earlier attempt can have uploaded any), and complete
writes the attempt's record once, priced.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fastapi.testclient import TestClient
from sqlalchemy import event, select
from support.fleet_helpers import WorkerSession, insert_ready_jobs, register
from support.helpers import FakeClock

from scheduler.db.session import session_scope
from scheduler.energy.models import JobAttempt
from scheduler.jobs.models import Job


@contextmanager
def statements(client: TestClient) -> Iterator[list[str]]:
    """The SQL the app runs inside the block, each on one line."""
    seen: list[str] = []

    def keep(_conn, _cursor, statement: str, *_: object) -> None:  # noqa: ANN001
        seen.append(" ".join(statement.split()))

    engine = client.app.state.engine
    event.listen(engine, "before_cursor_execute", keep)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", keep)


def _attempt_reads(seen: list[str]) -> list[str]:
    return [s for s in seen if s.startswith("SELECT") and "job_attempts" in s]


def test_claim_heartbeat_complete_read_the_attempt_only_with_the_fence(
    client: TestClient, team_key: str, clock: FakeClock
) -> None:
    (job_id,) = insert_ready_jobs(client.app, "alpha", 1, now=clock())
    worker = WorkerSession(client, register(client))

    with statements(client) as claim:
        claimed = worker.claim()
    assert claimed is not None and claimed["job"]["id"] == job_id and claimed["attempt"] == 1
    assert claimed["resume_from"] is None and claimed["prepared_from"] is None
    assert not [s for s in claim if "artifacts" in s]

    clock.advance(seconds=30)
    with statements(client) as beat:
        answer = worker.job_call(job_id, "heartbeat", progress={"step": 1})
    assert answer.status_code == 200, answer.text
    (fence,) = _attempt_reads(beat)
    assert "FROM jobs" in fence  # the job and its attempt, in one read

    clock.advance(seconds=30)
    with statements(client) as done:
        finished = worker.job_call(job_id, "complete", result={"loss": 0.1})
    assert finished.status_code == 200, finished.text
    assert finished.json()["state"] == "succeeded"
    assert len(_attempt_reads(done)) == 1  # the fence's
    assert len([s for s in done if s.startswith("UPDATE job_attempts")]) == 1

    # What was skipped was not needed: the attempt is closed, priced and charged.
    with session_scope(client.app.state.session_factory) as session:
        row = session.scalars(select(JobAttempt).where(JobAttempt.job_id == job_id)).one()
        job = session.get(Job, job_id)
        assert row.outcome == "succeeded" and row.last_heartbeat_at is not None
        assert row.total_kwh > 0 and row.kg_co2e > 0 and row.buckets
        assert job is not None and job.actual_kg_co2e == row.kg_co2e
        assert job.reserved_kg_co2e == 0.0


def _fleet_reads(seen: list[str]) -> list[str]:
    return [s for s in seen if s.startswith("SELECT") and "FROM workers" in s]


def test_a_finish_asks_the_fleet_only_when_the_finishing_worker_cannot_answer(
    client: TestClient, team_key: str, clock: FakeClock
) -> None:
    """After a completion the promote-only replan has nothing to do when every waiting job
    is ready and a live worker holds its base: the finishing worker, just authenticated,
    answers that for its own bases without a read of the fleet."""
    first, second, third = insert_ready_jobs(client.app, "alpha", 3, now=clock())
    worker = WorkerSession(client, register(client))
    claimed = worker.claim()
    assert claimed is not None
    with statements(client) as done:
        finished = worker.job_call(claimed["job"]["id"], "complete", result={})
    assert finished.status_code == 200, finished.text
    assert not _fleet_reads(done)  # the other two wait ready on base 'none', which it holds

    with session_scope(client.app.state.session_factory) as session:
        waiting = [j for j in (first, second, third) if j != claimed["job"]["id"]]
        session.get(Job, waiting[0]).base = "gpt-sovits-v2"  # type: ignore[union-attr]
    again = worker.claim()
    assert again is not None and again["job"]["id"] == waiting[1]
    with statements(client) as done:
        finished = worker.job_call(waiting[1], "complete", result={})
    assert finished.status_code == 200, finished.text
    assert _fleet_reads(done)  # a base it does not hold: the fleet is asked (and replanned)
    with session_scope(client.app.state.session_factory) as session:
        # Nobody holds that base: the replan put the job back to wait for one.
        job = session.get(Job, waiting[0])
        assert job is not None and job.state == "scheduled"
