"""Helpers for worker-protocol tests: register workers, make jobs claimable, drive leases."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import update

from scheduler.db.session import session_scope
from scheduler.jobs.models import Job
from scheduler.teams.models import Team
from support.helpers import WORKER_TOKEN, bearer


def register(
    client: TestClient, *, zone: str = "ES", gpus: int = 0, host: str = "gpu-01"
) -> dict[str, Any]:
    """Register a worker (CPU-only when gpus == 0); returns the registration answer."""
    body = {
        "host": host,
        "zone": zone,
        "gpus": [
            {"index": i, "uuid": f"GPU-{host}-{i}", "name": "NVIDIA H100", "memory_mib": 81559}
            for i in range(gpus)
        ],
        "cpu_only": gpus == 0,
        "version": "test",
    }
    response = client.post("/v1/workers/register", json=body, headers=bearer(WORKER_TOKEN))
    assert response.status_code == 201, response.text
    return response.json()


def make_ready(app: FastAPI, *job_ids: str, **values: Any) -> None:
    """Put jobs in `ready` directly: these tests are about claims, not about the planner."""
    with session_scope(app.state.session_factory) as session:
        session.execute(update(Job).where(Job.id.in_(job_ids)).values(state="ready", **values))


def insert_ready_jobs(
    app: FastAPI, team_name: str, count: int, *, now: datetime, zone: str = "ES"
) -> list[str]:
    """Insert `count` ready one-GPU jobs straight into the database (fast setup for load)."""
    ids = []
    with session_scope(app.state.session_factory) as session:
        team = session.query(Team).filter_by(name=team_name).one()
        for i in range(count):
            job = Job(
                team_id=team.id,
                name=f"load-{i}",
                kind="burn-in",
                dataset={},
                config={"steps": 1},
                gpus=1,
                deadline=now + timedelta(hours=1),
                interruptible=False,
                objective="carbon",
                priority=0,
                zone=zone,
                state="ready",
                state_reason="ready",
                submitted_at=now,
                updated_at=now,
                planned_start=now,
                planned_intervals=[],
                attempt=0,
                infra_restarts=0,
                cancel_requested=False,
                pause_requested=False,
            )
            session.add(job)
            session.flush()
            ids.append(job.id)
    return ids


class WorkerSession:
    """One registered worker talking the protocol through a test client."""

    def __init__(self, client: TestClient, registration: dict[str, Any]) -> None:
        self.client = client
        self.id = registration["worker_id"]
        self.headers = bearer(registration["token"])
        self.lease: dict[str, Any] = {}

    def claim(self) -> dict[str, Any] | None:
        response = self.client.post(f"/v1/workers/{self.id}/claim", json={}, headers=self.headers)
        if response.status_code == 204:
            return None
        assert response.status_code == 200, response.text
        claimed = response.json()
        self.lease = {"attempt": claimed["attempt"], "lease_token": claimed["lease_token"]}
        return claimed

    def job_call(self, job_id: str, verb: str, **body: Any) -> Any:
        return self.client.post(
            f"/v1/workers/{self.id}/jobs/{job_id}/{verb}",
            json={**self.lease, **body},
            headers=self.headers,
        )

    def upload(self, job_id: str, name: str, data: bytes, sha256: str | None = None) -> Any:
        headers = {
            **self.headers,
            "X-Attempt": str(self.lease["attempt"]),
            "X-Lease-Token": self.lease["lease_token"],
            "X-Content-SHA256": sha256 or hashlib.sha256(data).hexdigest(),
        }
        return self.client.put(f"/v1/jobs/{job_id}/artifacts/{name}", content=data, headers=headers)


def energy_report(
    attempt: int,
    started: datetime,
    seconds: float,
    watts: float,
    *,
    gpu_share: float = 0.8,
) -> dict[str, Any]:
    """An attempt report as a worker would send it: constant power sampled every 10 s."""
    kwh = watts * seconds / 3.6e6
    points = [
        {"t": (started + timedelta(seconds=s)).isoformat().replace("+00:00", "Z"), "watts": watts}
        for s in range(0, int(seconds), 10)
    ]
    return {
        "attempt": attempt,
        "started_at": started.isoformat(),
        "ended_at": (started + timedelta(seconds=seconds)).isoformat(),
        "duration_s": seconds,
        "gpus": [{"index": 0, "uuid": "GPU-x", "name": "NVIDIA H100", "kwh": kwh * gpu_share}],
        "gpu_kwh": kwh * gpu_share,
        "cpu_kwh": kwh * (1 - gpu_share) * 0.75,
        "ram_kwh": kwh * (1 - gpu_share) * 0.25,
        "methods": {"gpu": "measured", "cpu": "estimated", "ram": "estimated"},
        "hardware": {"gpu_model": "NVIDIA H100", "driver": "550.54", "cpu_model": "test"},
        "timeline": points,
        "codecarbon": {"ok": True, "kg_co2e": 0.0001, "cpu_kwh": 0.0, "ram_kwh": 0.0},
        "measurement_ok": True,
        "errors": [],
    }
