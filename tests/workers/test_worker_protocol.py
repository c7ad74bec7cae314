"""The worker protocol over HTTP: registration, claims, heartbeats, finishing, fencing, reaping."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from support.fleet_helpers import WorkerSession, energy_report, make_ready, register
from support.helpers import WORKER_TOKEN, FakeClock, admin_headers, bearer, burn_in_job

from scheduler.db.session import session_scope
from scheduler.jobs import lifecycle
from scheduler.jobs.models import Job
from scheduler.maintenance import run_tick
from scheduler.workers.fleet import capacity_by_zone


def submit(client: TestClient, key: str, **overrides: object) -> str:
    response = client.post("/v1/jobs", json=burn_in_job(**overrides), headers=bearer(key))
    assert response.status_code == 201, response.text
    return response.json()["id"]


def read(client: TestClient, key: str, job_id: str) -> dict:
    return client.get(f"/v1/jobs/{job_id}", headers=bearer(key)).json()


def test_registration_needs_the_fleet_token(client: TestClient, team_key: str) -> None:
    body = {"host": "h", "zone": "ES", "gpus": [], "cpu_only": True}
    assert client.post("/v1/workers/register", json=body).status_code == 401
    assert (
        client.post("/v1/workers/register", json=body, headers=bearer(team_key)).status_code == 403
    )
    first, second = register(client), register(client, host="gpu-02")
    assert first["token"] != second["token"] and first["lease_seconds"] == 90
    # A worker token only speaks for its own worker, and the fleet token is not a worker token.
    other = client.post(
        f"/v1/workers/{second['worker_id']}/heartbeat", json={}, headers=bearer(first["token"])
    )
    assert other.status_code == 403
    fleet = client.post(
        f"/v1/workers/{first['worker_id']}/claim", json={}, headers=bearer(WORKER_TOKEN)
    )
    assert fleet.status_code == 401
    forged = first["token"][:-4] + "AAAA"
    assert (
        client.post(
            f"/v1/workers/{first['worker_id']}/claim", json={}, headers=bearer(forged)
        ).status_code
        == 401
    )


def test_claim_heartbeat_complete(client: TestClient, team_key: str, clock: FakeClock) -> None:
    client.put(
        "/v1/teams/alpha/budget",
        json={"period": "month", "limit_kg_co2e": 100.0},
        headers=admin_headers(),
    )
    job_id = submit(client, team_key)
    worker = WorkerSession(client, register(client))
    assert worker.claim() is None  # scheduled, not ready yet
    make_ready(client.app, job_id)
    claimed = worker.claim()
    assert claimed is not None
    assert claimed["job"]["id"] == job_id and claimed["attempt"] == 1
    assert claimed["resume_from"] is None and claimed["job"]["config"]["steps"] == 50
    job = read(client, team_key, job_id)
    assert job["state"] == "running" and job["started_at"] is not None

    clock.advance(seconds=30)
    beat = worker.job_call(
        job_id,
        "heartbeat",
        progress={"stage": "burn-in", "step": 10, "total_steps": 50, "loss": 1.5},
        energy={"kwh_so_far": 0.001, "watts": 120.0},
        events=[{"type": "resumed", "message": "restored checkpoint checkpoint.tar", "at": "x"}],
    )
    assert beat.status_code == 200, beat.text
    assert beat.json()["action"] == "continue"
    assert beat.json()["lease_expires_at"] == "2026-03-02T09:02:00Z"  # now + 90 s
    assert read(client, team_key, job_id)["progress"]["step"] == 10

    started = clock.now - timedelta(seconds=30)
    report = energy_report(1, started, 60.0, 300.0)
    clock.advance(seconds=30)
    done = worker.job_call(job_id, "complete", energy=report, result={"steps": 50})
    assert done.status_code == 200 and done.json()["state"] == "succeeded"
    job = read(client, team_key, job_id)
    assert job["state"] == "succeeded"
    assert job["actual_kwh"] == pytest.approx(300.0 * 60 / 3.6e6)
    assert job["actual_kg_co2e"] > 0
    budget = client.get("/v1/teams/alpha/budget", headers=bearer(team_key)).json()
    assert budget["actual_kg_co2e"] == pytest.approx(job["actual_kg_co2e"])
    assert budget["committed_kg_co2e"] == pytest.approx(0.0)
    states = [
        e["to_state"]
        for e in client.get(f"/v1/jobs/{job_id}/events", headers=bearer(team_key)).json()
    ]
    assert states[-3:] == ["running", "running", "succeeded"]
    history = client.get(f"/v1/jobs/{job_id}/events", headers=bearer(team_key)).json()
    assert history[-2]["reason"] == "worker resumed: restored checkpoint checkpoint.tar"
    # Finished: the same lease can no longer write.
    assert worker.job_call(job_id, "heartbeat").status_code == 409


def test_claim_order_and_fit(client: TestClient, team_key: str, clock: FakeClock) -> None:
    now = clock.now
    low = submit(client, team_key, name="low")
    late = submit(client, team_key, name="late", priority=5)
    early = submit(client, team_key, name="early", priority=5)
    big = submit(client, team_key, name="big", priority=10, gpus=2)
    elsewhere = submit(client, team_key, name="elsewhere", priority=10, zone="DE")
    make_ready(client.app, low, planned_start=now)
    make_ready(client.app, late, planned_start=now + timedelta(minutes=5))
    make_ready(client.app, early, planned_start=now - timedelta(minutes=5))
    make_ready(client.app, big, elsewhere)

    cpu = WorkerSession(client, register(client, host="cpu"))
    order = []
    while (claimed := cpu.claim()) is not None:
        order.append(claimed["job"]["id"])
    assert order == [early, late, low]  # priority, then planned start; big and DE do not fit

    two_gpus = WorkerSession(client, register(client, host="g2", gpus=2))
    assert two_gpus.claim()["job"]["id"] == big
    german = WorkerSession(client, register(client, host="de", zone="DE", gpus=1))
    assert german.claim()["job"]["id"] == elsewhere
    assert german.claim() is None


def test_stale_worker_is_fenced_off(client: TestClient, team_key: str, clock: FakeClock) -> None:
    job_id = submit(client, team_key)
    make_ready(client.app, job_id)
    first = WorkerSession(client, register(client, host="first"))
    first.claim()
    assert first.upload(job_id, "checkpoint.tar", b"step-20").status_code == 201

    clock.advance(seconds=91)
    assert run_tick(client.app, "reap_leases") == 1
    assert run_tick(client.app, "reap_leases") == 0  # idempotent
    job = read(client, team_key, job_id)
    assert job["state"] == "scheduled"
    assert job["state_reason"].startswith("worker lost (lease expired at 2026-03-02T09:01:30Z)")

    make_ready(client.app, job_id)
    second = WorkerSession(client, register(client, host="second"))
    claimed = second.claim()
    assert claimed["attempt"] == 2
    assert claimed["resume_from"]["artifact"] == "checkpoint.tar"
    assert claimed["resume_from"]["attempt"] == 1

    # The first worker wakes up: every write it tries is refused and changes nothing.
    for verb, body in (
        ("heartbeat", {"progress": {"step": 99}}),
        ("complete", {"energy": energy_report(1, clock.now, 10, 100)}),
        ("fail", {"error": "boom"}),
        ("release", {"reason": "shutdown"}),
    ):
        response = first.job_call(job_id, verb, **body)
        assert response.status_code == 409, (verb, response.text)
        assert "lease lost" in response.json()["detail"]
    assert first.upload(job_id, "checkpoint.tar", b"stale").status_code == 409
    job = read(client, team_key, job_id)
    assert job["state"] == "running" and job["attempt"] == 2 and job["progress"] is None

    assert (
        second.job_call(job_id, "complete", energy=energy_report(2, clock.now, 20, 100)).json()[
            "state"
        ]
        == "succeeded"
    )
    energy = client.get(f"/v1/jobs/{job_id}/energy", headers=bearer(team_key)).json()
    assert [a["outcome"] for a in energy["attempts"]] == ["lost", "succeeded"]


def test_reaper_requeues_then_fails(client: TestClient, team_key: str, clock: FakeClock) -> None:
    job_id = submit(client, team_key)
    limit = client.app.state.settings.max_infra_restarts
    worker = WorkerSession(client, register(client))
    for restart in range(1, limit + 2):
        make_ready(client.app, job_id)
        assert worker.claim()["attempt"] == restart
        worker.job_call(job_id, "heartbeat", energy={"kwh_so_far": 0.002, "watts": 240.0})
        clock.advance(seconds=120)
        run_tick(client.app, "reap_leases")
        job = read(client, team_key, job_id)
        if restart <= limit:
            assert job["state"] == "scheduled", job
        else:
            assert job["state"] == "failed"
            assert f"gave up after {limit} restarts" in job["state_reason"]
            assert job["error"] == job["state_reason"]
    # Lost attempts are accounted from their last heartbeat's energy, plus the interval after
    # it (the worker died within one heartbeat interval) at the last reported power.
    last_interval = 240.0 * client.app.state.settings.heartbeat_seconds / 3.6e6
    assert job["actual_kwh"] == pytest.approx((0.002 + last_interval) * (limit + 1))


def test_cancel_of_a_running_job(client: TestClient, team_key: str, clock: FakeClock) -> None:
    job_id = submit(client, team_key)
    make_ready(client.app, job_id)
    worker = WorkerSession(client, register(client))
    worker.claim()
    cancel = client.post(f"/v1/jobs/{job_id}/cancel", headers=bearer(team_key))
    assert cancel.json()["state"] == "running" and cancel.json()["cancel_requested"]
    assert worker.job_call(job_id, "heartbeat").json()["action"] == "cancel"
    clock.advance(seconds=5)
    stopped = worker.job_call(
        job_id, "fail", cancelled=True, error="cancelled", energy=energy_report(1, clock.now, 5, 50)
    )
    assert stopped.json()["state"] == "cancelled"
    job = read(client, team_key, job_id)
    assert job["state"] == "cancelled" and job["actual_kwh"] > 0


def test_reaper_finishes_a_cancel_whose_worker_died(
    client: TestClient, team_key: str, clock: FakeClock
) -> None:
    job_id = submit(client, team_key)
    make_ready(client.app, job_id)
    WorkerSession(client, register(client)).claim()
    client.post(f"/v1/jobs/{job_id}/cancel", headers=bearer(team_key))
    clock.advance(seconds=91)
    run_tick(client.app, "reap_leases")
    assert read(client, team_key, job_id)["state"] == "cancelled"


def test_pause_release_and_resume(client: TestClient, team_key: str, clock: FakeClock) -> None:
    job_id = submit(client, team_key, interruptible=True)
    make_ready(client.app, job_id)
    worker = WorkerSession(client, register(client))
    worker.claim()
    # What the planner does when it moves an interruptible job out of a dirty window.
    with session_scope(client.app.state.session_factory) as session:
        session.get(Job, job_id).pause_requested = True
    assert worker.job_call(job_id, "heartbeat").json()["action"] == "pause"
    assert worker.upload(job_id, "checkpoint.tar", b"ckpt").status_code == 201
    released = worker.job_call(
        job_id, "release", reason="paused", energy=energy_report(1, clock.now, 30, 200)
    )
    assert released.json()["state"] == "scheduled"
    assert released.json()["state_reason"] == lifecycle.PAUSED_REASON
    make_ready(client.app, job_id)
    claimed = worker.claim()
    assert claimed["attempt"] == 2 and claimed["resume_from"]["artifact"] == "checkpoint.tar"
    assert worker.job_call(job_id, "heartbeat").json()["action"] == "continue"


def test_retryable_failure_requeues(client: TestClient, team_key: str) -> None:
    job_id = submit(client, team_key)
    make_ready(client.app, job_id)
    worker = WorkerSession(client, register(client))
    worker.claim()
    retried = worker.job_call(job_id, "fail", error="CUDA error: ECC", retryable=True)
    assert (
        retried.json()["state"] == "scheduled" and "retry 1 of 3" in retried.json()["state_reason"]
    )
    make_ready(client.app, job_id)
    worker.claim()
    failed = worker.job_call(job_id, "fail", error="loss is NaN", retryable=False)
    assert failed.json()["state"] == "failed"
    job = read(client, team_key, job_id)
    assert job["error"] == "loss is NaN" and job["attempt"] == 2


def test_capacity_and_worker_list(client: TestClient, team_key: str, clock: FakeClock) -> None:
    cpu = register(client, host="cpu")
    register(client, host="es-2", gpus=2)
    german = register(client, host="de-4", zone="DE", gpus=4)
    app = client.app
    with session_scope(app.state.session_factory) as session:
        assert capacity_by_zone(session, clock.now) == {"ES": 3, "DE": 4}
    clock.advance(seconds=46)  # more than 3 x 15 s without a word from the ES workers
    beat = client.post(
        f"/v1/workers/{german['worker_id']}/heartbeat",
        json={"gpu_watts": [{"uuid": "GPU-de-4-0", "watts": 312.5}]},
        headers=bearer(german["token"]),
    )
    assert beat.json() == {"ok": True}
    with session_scope(app.state.session_factory) as session:
        assert capacity_by_zone(session, clock.now) == {"DE": 4}
    listed = client.get("/v1/workers", headers=admin_headers())
    assert listed.status_code == 200
    by_host = {w["host"]: w for w in listed.json()}
    assert by_host["de-4"]["alive"] and not by_host["cpu"]["alive"]
    assert by_host["de-4"]["gpu_watts"] == [{"uuid": "GPU-de-4-0", "watts": 312.5}]
    assert by_host["cpu"]["id"] == cpu["worker_id"]
    assert client.get("/v1/workers", headers=bearer(team_key)).status_code == 403


def test_lost_attempt_is_charged_even_if_the_job_never_runs_again(
    client: TestClient, team_key: str, clock: FakeClock
) -> None:
    client.put(
        "/v1/teams/alpha/budget",
        json={"period": "month", "limit_kg_co2e": 100.0},
        headers=admin_headers(),
    )
    job_id = submit(client, team_key)
    reserved = client.get("/v1/teams/alpha/budget", headers=bearer(team_key)).json()
    make_ready(client.app, job_id)
    worker = WorkerSession(client, register(client))
    worker.claim()
    worker.job_call(job_id, "heartbeat", energy={"kwh_so_far": 0.004, "watts": 300.0})
    clock.advance(seconds=91)
    run_tick(client.app, "reap_leases")
    budget = client.get("/v1/teams/alpha/budget", headers=bearer(team_key)).json()
    charged = budget["actual_kg_co2e"]
    assert charged > 0
    # The measured share moved from committed to actual: nothing is counted twice.
    assert budget["committed_kg_co2e"] == pytest.approx(
        max(reserved["committed_kg_co2e"] - charged, 0.0)
    )
    # Cancelled while waiting: the lost attempt stays charged, the rest is released.
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=bearer(team_key)).status_code == 200
    budget = client.get("/v1/teams/alpha/budget", headers=bearer(team_key)).json()
    assert budget["actual_kg_co2e"] == pytest.approx(charged)
    assert budget["committed_kg_co2e"] == pytest.approx(0.0)
    # The heartbeat's total plus the interval after it, at its power.
    last_interval = 300.0 * client.app.state.settings.heartbeat_seconds / 3.6e6
    assert read(client, team_key, job_id)["actual_kwh"] == pytest.approx(0.004 + last_interval)
    lost = client.get(f"/v1/jobs/{job_id}/energy", headers=bearer(team_key)).json()["attempts"][0]
    assert lost["outcome"] == "lost" and not lost["measurement_ok"]
    assert lost["kwh"] == pytest.approx(
        {
            "gpu": 0.0,
            "cpu": 0.0,
            "ram": 0.0,
            "unattributed": 0.004 + last_interval,
            "total": 0.004 + last_interval,
        }
    )


def test_a_late_heartbeat_before_the_reaper_keeps_the_lease(
    client: TestClient, team_key: str, clock: FakeClock
) -> None:
    # Nobody else holds the job yet, so a worker that was only slow (a long pause, a network
    # blip) keeps it; only a reclaim fences it off.
    job_id = submit(client, team_key)
    make_ready(client.app, job_id)
    worker = WorkerSession(client, register(client))
    worker.claim()
    clock.advance(seconds=120)
    beat = worker.job_call(job_id, "heartbeat")
    assert beat.status_code == 200 and beat.json()["lease_expires_at"] == "2026-03-02T09:03:30Z"
    assert run_tick(client.app, "reap_leases") == 0
    assert read(client, team_key, job_id)["state"] == "running"
