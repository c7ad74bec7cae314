"""Drives a job through the worker protocol over HTTP, as a worker host would (for CLI tests)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient

from support.helpers import WORKER_TOKEN, bearer


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


class ProtocolWorker:
    """A CPU-only worker registered with the fleet token; one claimed job at a time."""

    def __init__(self, client: TestClient, *, zone: str = "ES", watts: float = 0.0) -> None:
        body = {"host": "cli-test", "zone": zone, "gpus": [], "cpu_only": True, "version": "t"}
        response = client.post("/v1/workers/register", json=body, headers=bearer(WORKER_TOKEN))
        assert response.status_code == 201, response.text
        registered = response.json()
        self.client = client
        self.id: str = registered["worker_id"]
        self.headers = bearer(registered["token"])
        self.fence: dict[str, Any] = {}
        if watts:
            beat = client.post(
                f"/v1/workers/{self.id}/heartbeat",
                json={"gpu_watts": [{"uuid": "GPU-cli", "watts": watts}]},
                headers=self.headers,
            )
            assert beat.status_code == 200, beat.text

    def claim(self) -> str:
        """Claim the next ready job; its id."""
        response = self.client.post(f"/v1/workers/{self.id}/claim", json={}, headers=self.headers)
        assert response.status_code == 200, response.text
        claimed = response.json()
        self.fence = {"attempt": claimed["attempt"], "lease_token": claimed["lease_token"]}
        return str(claimed["job"]["id"])

    def call(self, job_id: str, verb: str, **body: Any) -> dict[str, Any]:
        """A fenced job call (heartbeat, complete, fail, release)."""
        response = self.client.post(
            f"/v1/workers/{self.id}/jobs/{job_id}/{verb}",
            json={**self.fence, **body},
            headers=self.headers,
        )
        assert response.status_code == 200, response.text
        return response.json()


def attempt_report(attempt: int, started: datetime, seconds: float, watts: float) -> dict[str, Any]:
    """An attempt energy report in the documented shape, at constant power."""
    kwh = watts * seconds / 3.6e6
    return {
        "attempt": attempt,
        "started_at": _iso(started),
        "ended_at": _iso(started + timedelta(seconds=seconds)),
        "duration_s": seconds,
        "gpus": [],
        "gpu_kwh": 0.0,
        "cpu_kwh": kwh * 0.8,
        "ram_kwh": kwh * 0.2,
        "methods": {"gpu": "none", "cpu": "estimated", "ram": "estimated"},
        "hardware": {"cpu_model": "test cpu"},
        "timeline": [
            {"t": _iso(started + timedelta(seconds=s)), "watts": watts}
            for s in range(0, int(seconds), 10)
        ],
        "codecarbon": {"ok": False},
        "measurement_ok": True,
        "errors": [],
    }
