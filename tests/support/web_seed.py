"""Seeds a service with teams, budgets and jobs over HTTP, one job run to its end by a worker."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from fastapi.testclient import TestClient

from support.helpers import WORKER_TOKEN, admin_headers, bearer, burn_in_job

Client = TestClient | httpx.Client


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@dataclass
class Seeded:
    """What was created: keys by team, job ids by name."""

    keys: dict[str, str]
    jobs: dict[str, str]


def report(started: datetime, seconds: int, watts: float) -> dict[str, Any]:
    """An attempt energy report in the worker's documented shape, at a stepped power draw."""
    samples = [
        {"t": _iso(started + timedelta(seconds=s)), "watts": watts + (10.0 if s % 20 else 0.0)}
        for s in range(0, seconds, 5)
    ]
    mean = sum(p["watts"] for p in samples) / len(samples)
    kwh = mean * seconds / 3.6e6
    return {
        "attempt": 1,
        "started_at": _iso(started),
        "ended_at": _iso(started + timedelta(seconds=seconds)),
        "duration_s": float(seconds),
        "gpus": [],
        "gpu_kwh": 0.0,
        "cpu_kwh": kwh * 0.75,
        "ram_kwh": kwh * 0.25,
        "methods": {"gpu": "none", "cpu": "estimated", "ram": "estimated"},
        "hardware": {"cpu_model": "test cpu"},
        "timeline": samples,
        "codecarbon": {"ok": False},
        "measurement_ok": True,
        "errors": [],
    }


def run_one_job(client: Client, now: datetime) -> str:
    """Register a CPU worker, claim the ready job and complete it with a report."""
    body = {"host": "web-test", "zone": "ES", "gpus": [], "cpu_only": True, "version": "t"}
    registered = client.post("/v1/workers/register", json=body, headers=bearer(WORKER_TOKEN))
    assert registered.status_code == 201, registered.text
    worker = registered.json()
    headers = bearer(worker["token"])
    claimed = client.post(f"/v1/workers/{worker['worker_id']}/claim", json={}, headers=headers)
    assert claimed.status_code == 200, claimed.text
    claim = claimed.json()
    job_id = claim["job"]["id"]
    fence = {"attempt": claim["attempt"], "lease_token": claim["lease_token"]}
    done = client.post(
        f"/v1/workers/{worker['worker_id']}/jobs/{job_id}/complete",
        json={**fence, "energy": report(now, 120, 95.0), "result": {"status": "succeeded"}},
        headers=headers,
    )
    assert done.status_code == 200, done.text
    return job_id


def seed(client: Client, now: datetime, *, run: bool = True) -> Seeded:
    """Teams alpha and beta with budgets; alpha has a finished job and a deferred one."""
    keys: dict[str, str] = {}
    for name, limit in (("alpha", 2.0), ("beta", 5.0)):
        created = client.post("/v1/teams", json={"name": name}, headers=admin_headers())
        assert created.status_code == 201, created.text
        keys[name] = created.json()["api_key"]
        budget = client.put(
            f"/v1/teams/{name}/budget",
            json={"period": "month", "limit_kg_co2e": limit},
            headers=admin_headers(),
        )
        assert budget.status_code == 200, budget.text
    jobs: dict[str, str] = {}
    # Short slack: planned now, so it is ready for the worker at once.
    urgent = client.post(
        "/v1/jobs",
        json=burn_in_job(name="alpha-urgent", max_delay_minutes=20),
        headers=bearer(keys["alpha"]),
    )
    assert urgent.status_code == 201, urgent.text
    jobs["alpha-urgent"] = urgent.json()["id"]
    if run:
        assert urgent.json()["state"] == "ready", urgent.json()
        assert run_one_job(client, now) == jobs["alpha-urgent"]
    for name, team in (("alpha-deferred", "alpha"), ("beta-nightly", "beta")):
        answer = client.post(
            "/v1/jobs",
            json=burn_in_job(name=name, max_delay_minutes=16 * 60, interruptible=True),
            headers=bearer(keys[team]),
        )
        assert answer.status_code == 201, answer.text
        jobs[name] = answer.json()["id"]
    return Seeded(keys, jobs)


@dataclass
class RunningJob:
    """A job claimed by a worker and not finished: what its heartbeats need."""

    job_id: str
    worker_id: str
    headers: dict[str, str]
    fence: dict[str, Any]


def start_running_job(client: Client, team_key: str, name: str = "alpha-live") -> RunningJob:
    """Submit a job that is ready at once and have a new worker claim it."""
    submitted = client.post(
        "/v1/jobs",
        json=burn_in_job(name=name, max_delay_minutes=20, config={"steps": 50}),
        headers=bearer(team_key),
    )
    assert submitted.status_code == 201, submitted.text
    assert submitted.json()["state"] == "ready", submitted.json()
    body = {"host": "web-live", "zone": "ES", "gpus": [], "cpu_only": True, "version": "t"}
    registered = client.post("/v1/workers/register", json=body, headers=bearer(WORKER_TOKEN))
    assert registered.status_code == 201, registered.text
    worker = registered.json()
    headers = bearer(worker["token"])
    claimed = client.post(f"/v1/workers/{worker['worker_id']}/claim", json={}, headers=headers)
    assert claimed.status_code == 200, claimed.text
    claim = claimed.json()
    assert claim["job"]["id"] == submitted.json()["id"]
    fence = {"attempt": claim["attempt"], "lease_token": claim["lease_token"]}
    return RunningJob(claim["job"]["id"], worker["worker_id"], headers, fence)


def heartbeat(
    client: Client,
    running: RunningJob,
    *,
    step: int,
    watts: float,
    kwh_so_far: float,
    events: list[dict[str, str]] | None = None,
) -> None:
    """One job heartbeat as the worker sends it: progress, energy so far, events."""
    answer = client.post(
        f"/v1/workers/{running.worker_id}/jobs/{running.job_id}/heartbeat",
        json={
            **running.fence,
            "progress": {"stage": "burn-in", "step": step, "total_steps": 50, "loss": 1.0 / step},
            "energy": {"kwh_so_far": kwh_so_far, "watts": watts},
            "events": events or [],
        },
        headers=running.headers,
    )
    assert answer.status_code == 200, answer.text
