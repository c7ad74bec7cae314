"""The job life cycle: the one retry policy for every way an attempt ends, what
`end_attempt` does to the job and its budget, and the claim going through the state machine."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from support.fleet_helpers import WorkerSession, make_ready, register
from support.helpers import FakeClock, admin_headers, bearer, burn_in_job

from scheduler.budgets.models import LedgerEntry
from scheduler.db.session import session_scope
from scheduler.energy.models import JobAttempt
from scheduler.jobs import lifecycle
from scheduler.jobs.lifecycle import Outcome, decide
from scheduler.jobs.models import Job, JobEvent
from scheduler.jobs.states import ALLOWED, IllegalTransition, JobState
from scheduler.scheduling.service import promote_due
from scheduler.workers import service as workers
from scheduler.workers.models import Worker

MAX_RESTARTS = 2
S, F, C, D = JobState.SCHEDULED, JobState.FAILED, JobState.CANCELLED, JobState.SUCCEEDED

# (outcome, retryable) x (restarts left, cancel requested) -> (state, spends a restart).
POLICY: dict[tuple[Outcome, bool, bool, bool], tuple[JobState, bool]] = {
    # A success is a success, whatever else happened meanwhile.
    (Outcome.SUCCEEDED, False, True, False): (D, False),
    (Outcome.SUCCEEDED, False, False, False): (D, False),
    (Outcome.SUCCEEDED, False, True, True): (D, False),
    (Outcome.SUCCEEDED, False, False, True): (D, False),
    # The worker stopped on the user's cancel.
    (Outcome.CANCELLED, False, True, False): (C, False),
    (Outcome.CANCELLED, False, False, False): (C, False),
    (Outcome.CANCELLED, False, True, True): (C, False),
    (Outcome.CANCELLED, False, False, True): (C, False),
    # A retryable failure retries while restarts remain.
    (Outcome.FAILED, True, True, False): (S, True),
    (Outcome.FAILED, True, False, False): (F, False),
    (Outcome.FAILED, True, True, True): (C, False),
    (Outcome.FAILED, True, False, True): (C, False),
    # Any other failure fails.
    (Outcome.FAILED, False, True, False): (F, False),
    (Outcome.FAILED, False, False, False): (F, False),
    (Outcome.FAILED, False, True, True): (C, False),
    (Outcome.FAILED, False, False, True): (C, False),
    # A lost worker is an infrastructure failure: retried while restarts remain.
    (Outcome.LOST, False, True, False): (S, True),
    (Outcome.LOST, False, False, False): (F, False),
    (Outcome.LOST, False, True, True): (C, False),
    (Outcome.LOST, False, False, True): (C, False),
    # A release (pause, shutdown) resumes later and spends no restart.
    (Outcome.RELEASED, False, True, False): (S, False),
    (Outcome.RELEASED, False, False, False): (S, False),
    (Outcome.RELEASED, False, True, True): (C, False),
    (Outcome.RELEASED, False, False, True): (C, False),
}


def _job(*, restarts_left: bool, cancel_requested: bool) -> Job:
    return Job(
        attempt=3,
        infra_restarts=0 if restarts_left else MAX_RESTARTS,
        cancel_requested=cancel_requested,
    )


@pytest.mark.parametrize(("case", "expected"), sorted(POLICY.items()))
def test_one_policy_for_every_way_an_attempt_ends(
    case: tuple[Outcome, bool, bool, bool], expected: tuple[JobState, bool]
) -> None:
    outcome, retryable, restarts_left, cancel_requested = case
    job = _job(restarts_left=restarts_left, cancel_requested=cancel_requested)
    decision = decide(
        job, outcome, max_infra_restarts=MAX_RESTARTS, retryable=retryable, error="CUDA OOM"
    )
    assert (decision.target, decision.spends_restart) == expected
    # The policy only reads the job; end_attempt applies it.
    assert job.infra_restarts == (0 if restarts_left else MAX_RESTARTS)


def test_the_reasons_say_what_happened() -> None:
    fresh = _job(restarts_left=True, cancel_requested=False)
    spent = _job(restarts_left=False, cancel_requested=False)
    lost = "worker lost (lease expired at 2026-03-02T09:00:00Z)"
    retry = decide(fresh, Outcome.FAILED, max_infra_restarts=2, retryable=True, error="OOM")
    assert retry.reason.startswith("attempt 3 failed (OOM): retry 1 of 2")
    assert decide(spent, Outcome.FAILED, max_infra_restarts=2, error="bad\n  data").reason == (
        "failed: bad data"
    )
    assert decide(spent, Outcome.LOST, max_infra_restarts=2, lost=lost).reason == (
        f"{lost}: gave up after 2 restarts"
    )
    assert decide(fresh, Outcome.LOST, max_infra_restarts=2, lost=lost).reason == (
        f"{lost}: resumes from its last checkpoint"
    )
    cancelled = _job(restarts_left=True, cancel_requested=True)
    assert decide(cancelled, Outcome.LOST, max_infra_restarts=2, lost=lost).reason == (
        f"cancelled by user; {lost}"
    )
    assert decide(fresh, Outcome.RELEASED, max_infra_restarts=2, paused=True).reason == (
        lifecycle.PAUSED_REASON
    )
    assert decide(fresh, Outcome.RELEASED, max_infra_restarts=2).reason == (
        lifecycle.SHUTDOWN_REASON
    )


# -- end_attempt on a real database --------------------------------------------------------


def _running_job(client: TestClient, team_key: str) -> tuple[str, WorkerSession]:
    """A submitted burn-in job, claimed by a freshly registered worker."""
    job_id = client.post("/v1/jobs", json=burn_in_job(), headers=bearer(team_key)).json()["id"]
    app: FastAPI = client.app  # type: ignore[assignment]
    make_ready(app, job_id)
    worker = WorkerSession(client, register(client))
    claimed = worker.claim()
    assert claimed is not None and claimed["job"]["id"] == job_id
    return job_id, worker


def _end(client: TestClient, job_id: str, outcome: Outcome, **options: Any) -> None:
    app: FastAPI = client.app  # type: ignore[assignment]
    with session_scope(app.state.session_factory) as session:
        job = session.get(Job, job_id)
        assert job is not None
        lifecycle.end_attempt(
            session,
            job,
            outcome,
            report=None,
            now=app.state.clock(),
            scheduling=app.state.scheduling,
            max_infra_restarts=MAX_RESTARTS,
            **options,
        )


def _state(
    client: TestClient, job_id: str
) -> tuple[Job, list[JobEvent], list[LedgerEntry], list[str]]:
    """The job, its history, its ledger entries and its attempts' outcomes, as stored."""
    app: FastAPI = client.app  # type: ignore[assignment]
    with session_scope(app.state.session_factory) as session:
        job = session.get(Job, job_id)
        assert job is not None
        events = list(
            session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id))
        )
        ledger = list(
            session.scalars(
                select(LedgerEntry).where(LedgerEntry.job_id == job_id).order_by(LedgerEntry.id)
            )
        )
        outcomes = list(
            session.scalars(select(JobAttempt.outcome).where(JobAttempt.job_id == job_id))
        )
        session.expunge_all()
    return job, events, ledger, outcomes


def test_a_retried_failure_is_requeued_with_its_lease_dropped(
    client: TestClient, team_key: str
) -> None:
    job_id, _ = _running_job(client, team_key)
    _end(client, job_id, Outcome.FAILED, retryable=True, error="CUDA error: out of memory")
    job, events, ledger, outcomes = _state(client, job_id)
    assert job.state is JobState.SCHEDULED
    assert job.infra_restarts == 1
    assert job.lease_token is None and job.lease_expires_at is None
    assert job.error == "CUDA error: out of memory"
    assert (events[-1].from_state, events[-1].to_state) == (JobState.RUNNING, JobState.SCHEDULED)
    assert outcomes == ["failed"]
    # The attempt's energy is charged; the job has not ended, so its reservation stands.
    assert [e.kind for e in ledger if e.kind == "charge"]
    assert job.reserved_kg_co2e > 0 and job.finished_at is None


def test_a_lost_worker_past_its_restarts_fails_the_job_and_settles_the_budget(
    client: TestClient, team_key: str, clock: FakeClock
) -> None:
    job_id, _ = _running_job(client, team_key)
    app: FastAPI = client.app  # type: ignore[assignment]
    with session_scope(app.state.session_factory) as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.infra_restarts = MAX_RESTARTS
    _end(client, job_id, Outcome.LOST)
    job, events, ledger, outcomes = _state(client, job_id)
    assert job.state is JobState.FAILED
    assert job.error is not None and "gave up after 2 restarts" in job.error
    assert job.finished_at == clock.now
    assert job.reserved_kg_co2e == 0.0
    assert ledger[-1].kind == "release" and "reservation released" in ledger[-1].note
    assert events[-1].to_state is JobState.FAILED
    assert outcomes == ["lost"]


def test_a_release_while_a_cancel_is_pending_cancels(client: TestClient, team_key: str) -> None:
    job_id, _ = _running_job(client, team_key)
    cancel = client.post(f"/v1/jobs/{job_id}/cancel", headers=bearer(team_key))
    assert cancel.status_code in (200, 202), cancel.text
    _end(client, job_id, Outcome.RELEASED, paused=True)
    job, events, _, _ = _state(client, job_id)
    assert job.state is JobState.CANCELLED
    assert job.infra_restarts == 0
    assert job.pause_requested is False
    assert events[-1].reason == "cancelled by user"


# -- the claim and promotion go through the state machine ----------------------------------


def test_the_claim_goes_through_the_state_machine(
    client: TestClient, team_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = client.post("/v1/jobs", json=burn_in_job(), headers=bearer(team_key)).json()["id"]
    app: FastAPI = client.app  # type: ignore[assignment]
    make_ready(app, job_id)
    worker_id = register(client)["worker_id"]
    now = app.state.clock()
    # A state machine in which a ready job may not start: the claim must refuse.
    monkeypatch.setitem(ALLOWED, JobState.READY, ALLOWED[JobState.READY] - {JobState.RUNNING})
    with pytest.raises(IllegalTransition):
        with session_scope(app.state.session_factory) as session:
            worker = session.get(Worker, worker_id)
            assert worker is not None
            workers.claim(session, worker, now=now, lease_seconds=60)
    job, events, _, _ = _state(client, job_id)
    assert job.state is JobState.READY and job.attempt == 0
    assert JobState.RUNNING not in {e.to_state for e in events}
    monkeypatch.undo()
    # With the real state machine the same claim succeeds, and says so in the history.
    with session_scope(app.state.session_factory) as session:
        worker = session.get(Worker, worker_id)
        assert worker is not None
        claim = workers.claim(session, worker, now=now, lease_seconds=60)
        assert claim is not None and claim.job.id == job_id
    job, events, _, _ = _state(client, job_id)
    assert job.state is JobState.RUNNING and job.attempt == 1
    assert (events[-1].from_state, events[-1].to_state) == (JobState.READY, JobState.RUNNING)
    assert events[-1].data == {"worker_id": worker_id, "host": "gpu-01"}


def test_promotion_of_due_jobs_goes_through_the_state_machine(
    client: TestClient, team_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app: FastAPI = client.app  # type: ignore[assignment]
    now = app.state.clock()
    job_id = client.post("/v1/jobs", json=burn_in_job(), headers=bearer(team_key)).json()["id"]
    with session_scope(app.state.session_factory) as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.state, job.planned_start = JobState.SCHEDULED, now
    monkeypatch.setitem(ALLOWED, JobState.SCHEDULED, ALLOWED[JobState.SCHEDULED] - {JobState.READY})
    with pytest.raises(IllegalTransition):
        with session_scope(app.state.session_factory) as session:
            promote_due(session, "ES", now=now)
    assert _state(client, job_id)[0].state is JobState.SCHEDULED
    monkeypatch.undo()
    with session_scope(app.state.session_factory) as session:
        assert promote_due(session, "ES", now=now) == 1
    job, events, _, _ = _state(client, job_id)
    assert job.state is JobState.READY
    assert (events[-1].from_state, events[-1].to_state) == (JobState.SCHEDULED, JobState.READY)


def test_the_team_sees_no_difference_in_the_state_strings(
    client: TestClient, team_key: str
) -> None:
    """The column holds JobState; the API and the database still hold the lowercase words."""
    job_id, _ = _running_job(client, team_key)
    body = client.get(f"/v1/jobs/{job_id}", headers=bearer(team_key)).json()
    assert body["state"] == "running"
    listed = client.get("/v1/jobs?state=running", headers=bearer(team_key)).json()
    assert [job["id"] for job in listed["items"]] == [job_id]
    app: FastAPI = client.app  # type: ignore[assignment]
    with session_scope(app.state.session_factory) as session:
        raw = session.execute(text("SELECT state FROM jobs WHERE id = :id"), {"id": job_id})
        assert raw.scalar_one() == "running"
    assert client.get("/v1/jobs?state=bogus", headers=admin_headers()).status_code == 422
