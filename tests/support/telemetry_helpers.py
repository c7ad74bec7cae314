"""Synthetic telemetry as the worker sends it in `progress.telemetry`."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from support.fleet_helpers import WorkerSession, make_ready, register
from support.helpers import bearer, burn_in_job


def gpu(rank: int = 0, index: int = 0, **figures: Any) -> dict[str, Any]:
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


def telemetry(gpus: list[dict[str, Any]] | None = None, **figures: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "step_time_s": 0.42,
        "samples_per_s": 19.0,
        "loss": 2.5,
        "grad_norm": 1.2,
        "kl": None,
        "mel": None,
        "gpus": gpus if gpus is not None else [gpu()],
        "nonfinite": [],
    }
    base.update(figures)
    return base


def running_job(client: TestClient, key: str, *, gpus: int = 1) -> tuple[str, WorkerSession]:
    """A burn-in job claimed by a fresh GPU worker."""
    response = client.post("/v1/jobs", json=burn_in_job(gpus=gpus), headers=bearer(key))
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    worker = WorkerSession(client, register(client, gpus=max(gpus, 1)))
    make_ready(client.app, job_id)
    assert worker.claim() is not None
    return job_id, worker


def beat(worker: WorkerSession, job_id: str, step: int, snapshot: dict[str, Any]) -> Any:
    return worker.job_call(
        job_id,
        "heartbeat",
        progress={"stage": "burn-in", "step": step, "total_steps": 1000, "telemetry": snapshot},
    )
