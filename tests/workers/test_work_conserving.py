"""Work-conserving replanning: a zone is replanned the moment capacity frees or grows.

No replanning tick runs in these tests (`run_ticks=False`): every change seen here comes
from the event itself.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi.testclient import TestClient
from support.fleet_helpers import WorkerSession, energy_report, register
from support.helpers import FakeClock, bearer, burn_in_job

# About an hour of burn-in on the estimate (sleeps dominate).
HOUR_JOB = {"config": {"steps": 3590, "size": 8, "step_sleep_s": 1.0}}


def _submit(client: TestClient, key: str, name: str) -> dict:
    body = burn_in_job(name=name, max_delay_minutes=0, **HOUR_JOB)
    response = client.post("/v1/jobs", json=body, headers=bearer(key))
    assert response.status_code == 201, response.text
    return response.json()


def _get(client: TestClient, key: str, job_id: str) -> dict:
    return client.get(f"/v1/jobs/{job_id}", headers=bearer(key)).json()


def _at(raw: str) -> datetime:
    return datetime.fromisoformat(raw)


def _one_busy_worker(client: TestClient, key: str) -> tuple[WorkerSession, dict, dict]:
    """One CPU worker running job A; job B (to start now) waits behind it."""
    worker = WorkerSession(client, register(client, host="cpu-1"))
    first = _submit(client, key, "a")
    assert first["state"] == "ready", first["state_reason"]
    claimed = worker.claim()
    assert claimed is not None and claimed["job"]["id"] == first["id"]
    second = _submit(client, key, "b")
    assert second["state"] == "scheduled", second["state_reason"]
    assert _at(second["planned_start"]) >= _at(first["planned_end"]) - timedelta(minutes=15)
    return worker, first, second


def test_a_job_ending_early_moves_the_queue_up_at_once(
    client: TestClient, team_key: str, clock: FakeClock
) -> None:
    worker, first, second = _one_busy_worker(client, team_key)
    clock.advance(minutes=5)  # A ends 55 minutes before its estimate
    report = energy_report(1, clock.now - timedelta(minutes=5), 300, 100)
    done = worker.job_call(first["id"], "complete", energy=report, result={})
    assert done.status_code == 200, done.text
    after = _get(client, team_key, second["id"])
    assert after["state"] == "ready", after["state_reason"]
    assert _at(after["planned_start"]) == clock.now
    assert worker.claim()["job"]["id"] == second["id"]


def test_a_worker_joining_takes_waiting_work_at_once(
    client: TestClient, team_key: str, clock: FakeClock
) -> None:
    _, _, second = _one_busy_worker(client, team_key)
    clock.advance(seconds=20)  # the first worker is still alive (no missed heartbeat yet)
    newcomer = WorkerSession(client, register(client, host="cpu-2"))
    after = _get(client, team_key, second["id"])
    assert after["state"] == "ready", after["state_reason"]
    assert newcomer.claim()["job"]["id"] == second["id"]


def test_cancelling_a_waiting_job_frees_its_window_at_once(
    client: TestClient, team_key: str, clock: FakeClock
) -> None:
    register(client, host="cpu-1")
    first = _submit(client, team_key, "a")
    second = _submit(client, team_key, "b")
    assert (first["state"], second["state"]) == ("ready", "scheduled")
    clock.advance(minutes=2)
    cancelled = client.post(f"/v1/jobs/{first['id']}/cancel", headers=bearer(team_key))
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    after = _get(client, team_key, second["id"])
    assert after["state"] == "ready", after["state_reason"]
    assert _at(after["planned_start"]) == clock.now


def test_a_claim_promotes_jobs_whose_window_opened_between_ticks(
    client: TestClient, team_key: str, clock: FakeClock
) -> None:
    worker = WorkerSession(client, register(client, host="cpu-1"))
    body = burn_in_job(name="later", max_delay_minutes=24 * 60, **HOUR_JOB)
    job = client.post("/v1/jobs", json=body, headers=bearer(team_key)).json()
    if job["state"] == "ready":  # the trace made now the best window: nothing to show
        return
    assert worker.claim() is None
    clock.now = _at(job["planned_start"]) + timedelta(seconds=30)
    claimed = worker.claim()
    assert claimed is not None and claimed["job"]["id"] == job["id"]
    events = client.get(f"/v1/jobs/{job['id']}/events", headers=bearer(team_key)).json()
    assert [e["to_state"] for e in events][-2:] == ["ready", "running"]
