"""Seeds a service with teams, budgets and jobs over HTTP, one job run to its end by a worker."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from fastapi.testclient import TestClient

from support.helpers import WORKER_TOKEN, admin_headers, bearer, burn_in_job, tiny_dataset_zip

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


def gpu_telemetry(rank: int = 0, index: int = 0, **figures: Any) -> dict[str, Any]:
    """One GPU's figures in a heartbeat's `progress.telemetry` (as tests/telemetry sends)."""
    base: dict[str, Any] = {
        "rank": rank,
        "index": index,
        "util_pct": 95.0,
        "mem_used_mib": 20_000.0,
        "mem_total_mib": 81_559.0,
        "torch_allocated_mib": 12_000.0,
        "torch_reserved_mib": 14_000.0,
        "torch_peak_mib": 15_000.0,
        "temp_c": 61.0,
        "power_w": 410.0,
    }
    base.update(figures)
    return base


def telemetry_heartbeat(
    client: Client,
    running: RunningJob,
    *,
    step: int,
    gpus: list[dict[str, Any]],
    **figures: Any,
) -> dict[str, Any]:
    """A heartbeat carrying `progress.telemetry`; returns the job's answer."""
    snapshot = {"step_time_s": 0.42, "samples_per_s": 19.0, "loss": 2.5, "grad_norm": 1.2}
    snapshot.update(figures, gpus=gpus)
    answer = client.post(
        f"/v1/workers/{running.worker_id}/jobs/{running.job_id}/heartbeat",
        json={
            **running.fence,
            "progress": {
                "stage": "burn-in",
                "step": step,
                "total_steps": 50,
                "loss": snapshot["loss"],
                "telemetry": snapshot,
            },
        },
        headers=running.headers,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def phase(
    name: str, started: datetime, seconds: float, kwh: float, steps: int = 0, samples: int = 0
) -> dict[str, Any]:
    """One phase of an attempt report (preparation or a training stage)."""
    return {
        "name": name,
        "started_at": _iso(started),
        "ended_at": _iso(started + timedelta(seconds=seconds)),
        "kwh": kwh,
        "optimizer_steps": steps,
        "samples": samples,
    }


def upload_dataset(client: Client, team_key: str) -> str:
    response = client.post(
        "/v1/datasets",
        content=tiny_dataset_zip(),
        headers={**bearer(team_key), "content-type": "application/zip"},
    )
    assert response.status_code == 201, response.text
    dataset_id = response.json()["id"]
    # A served app validates uploads in the background: wait (bounded) until it is ready.
    for _ in range(200):
        state = client.get(f"/v1/datasets/{dataset_id}", headers=bearer(team_key)).json()["state"]
        if state != "validating":
            break
        time.sleep(0.05)
    assert state == "ready", state
    return dataset_id


def run_finetune(
    client: Client, team_key: str, dataset_id: str, now: datetime, s1_kwh: float
) -> str:
    """A fine-tune run to success on a one-GPU worker, its report with training phases: s1
    takes `s1_kwh` for 40 optimizer steps and 320 samples, s2 0.006 kWh for 60 and 480."""
    body = {
        "name": "voice",
        "kind": "gpt-sovits-finetune",
        "dataset": {"id": dataset_id},
        "config": {"stage": "both", "max_steps": 4, "model_size": "tiny"},
        "max_delay_minutes": 20,
    }
    submitted = client.post("/v1/jobs", json=body, headers=bearer(team_key))
    assert submitted.status_code == 201, submitted.text
    assert submitted.json()["state"] == "ready", submitted.json()
    worker_body = {
        "host": "web-gpu",
        "zone": "ES",
        "gpus": [{"index": 0, "uuid": "GPU-web-0", "name": "NVIDIA H100", "memory_mib": 81559}],
        "cpu_only": False,
        "version": "t",
    }
    registered = client.post("/v1/workers/register", json=worker_body, headers=bearer(WORKER_TOKEN))
    assert registered.status_code == 201, registered.text
    worker = registered.json()
    headers = bearer(worker["token"])
    claimed = client.post(f"/v1/workers/{worker['worker_id']}/claim", json={}, headers=headers)
    assert claimed.status_code == 200, claimed.text
    claim = claimed.json()
    job_id = claim["job"]["id"]
    assert job_id == submitted.json()["id"]
    energy = report(now, 600, 300.0)
    energy.update(
        attempt=claim["attempt"],
        hardware={"cpu_model": "test cpu", "gpu_model": "NVIDIA H100 80GB HBM3"},
        audio_seconds=3600.0,
        phases=[
            phase("prepare", now, 60, 0.003),
            phase("s1", now + timedelta(seconds=60), 240, s1_kwh, 40, 320),
            phase("s2", now + timedelta(seconds=300), 300, 0.006, 60, 480),
        ],
    )
    fence = {"attempt": claim["attempt"], "lease_token": claim["lease_token"]}
    done = client.post(
        f"/v1/workers/{worker['worker_id']}/jobs/{job_id}/complete",
        json={**fence, "energy": energy, "result": {"status": "succeeded"}},
        headers=headers,
    )
    assert done.status_code == 200, done.text
    return job_id
