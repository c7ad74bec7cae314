"""Storage faults (disk full, unwritable store, corrupted checkpoints) and workers that come
back after losing their lease, on SQLite and PostgreSQL."""

from __future__ import annotations

import errno
import hashlib
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from support.helpers import WORKER_TOKEN, FakeClock, bearer, burn_in_job

from scheduler.artifacts import storage
from scheduler.db.session import session_scope
from scheduler.jobs.models import Job
from scheduler.maintenance import run_tick
from scheduler.settings import Settings


def make_ready(client: TestClient, job_id: str) -> None:
    """Start the job at once: these tests are about faults, not about the planner."""
    with session_scope(client.app.state.session_factory) as session:  # type: ignore[attr-defined]
        session.execute(update(Job).where(Job.id == job_id).values(state="ready"))


def register_worker(client: TestClient, host: str) -> tuple[str, str]:
    body = {"host": host, "zone": "ES", "gpus": [], "cpu_only": True}
    response = client.post("/v1/workers/register", json=body, headers=bearer(WORKER_TOKEN))
    assert response.status_code == 201, response.text
    return response.json()["worker_id"], response.json()["token"]


class Worker:
    """A registered worker driving the protocol through the test client."""

    def __init__(self, client: TestClient, host: str) -> None:
        self.client = client
        self.id, token = register_worker(client, host)
        self.headers = bearer(token)
        self.lease: dict[str, Any] = {}

    def claim(self) -> dict[str, Any]:
        response = self.client.post(f"/v1/workers/{self.id}/claim", json={}, headers=self.headers)
        assert response.status_code == 200, response.text
        claimed = response.json()
        self.lease = {"attempt": claimed["attempt"], "lease_token": claimed["lease_token"]}
        return claimed

    def call(self, job_id: str, verb: str, **body: Any) -> Any:
        return self.client.post(
            f"/v1/workers/{self.id}/jobs/{job_id}/{verb}",
            json={**self.lease, **body},
            headers=self.headers,
        )

    def upload(self, job_id: str, name: str, data: bytes, sha256: str | None = None) -> Any:
        return self.client.put(
            f"/v1/jobs/{job_id}/artifacts/{name}",
            content=data,
            headers={
                **self.headers,
                "X-Attempt": str(self.lease["attempt"]),
                "X-Lease-Token": self.lease["lease_token"],
                "X-Content-SHA256": sha256 or hashlib.sha256(data).hexdigest(),
            },
        )


def report(attempt: int, clock: FakeClock, *, skew: timedelta = timedelta()) -> dict[str, Any]:
    """An attempt report stamped by a worker whose clock is `skew` off the service's."""
    end = clock.now + skew
    return {
        "attempt": attempt,
        "started_at": (end - timedelta(minutes=1)).isoformat(),
        "ended_at": end.isoformat(),
        "duration_s": 60.0,
        "gpus": [],
        "gpu_kwh": 0.0,
        "cpu_kwh": 0.002,
        "ram_kwh": 0.0005,
        "methods": {"gpu": "none", "cpu": "estimated", "ram": "estimated"},
        "timeline": [],
        "measurement_ok": True,
        "errors": [],
    }


def running_job(client: TestClient, key: str) -> str:
    response = client.post("/v1/jobs", json=burn_in_job(), headers=bearer(key))
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    make_ready(client, job_id)
    return job_id


def stored_files(settings: Settings) -> list[Path]:
    return [p for p in Path(settings.artifact_dir or "").rglob("*") if p.is_file()]


def test_disk_full_on_upload_is_507_and_leaves_nothing(
    client: TestClient, team_key: str, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = running_job(client, team_key)
    worker = Worker(client, "gpu-a")
    worker.claim()

    class FullDisk:
        """A file whose writes fail as on a full disk (a fake of the file system)."""

        def __init__(self, path: Path) -> None:
            self.path = path
            path.write_bytes(b"")

        def write(self, _: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self) -> None: ...

        def fileno(self) -> int:
            return 0

        def close(self) -> None: ...

    monkeypatch.setattr(storage, "open", lambda path, mode: FullDisk(Path(path)), raising=False)
    response = worker.upload(job_id, "checkpoint.tar", b"x" * 10_000)
    assert response.status_code == 507, response.text
    assert "disk is full" in response.json()["detail"]
    assert stored_files(settings) == []
    listed = client.get(f"/v1/jobs/{job_id}/artifacts", headers=bearer(team_key)).json()
    assert listed == []


def test_unwritable_store_is_507_naming_the_cause(
    client: TestClient, team_key: str, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = running_job(client, team_key)
    worker = Worker(client, "gpu-a")
    worker.claim()

    def read_only(path: object, mode: str) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(storage, "open", read_only, raising=False)
    response = worker.upload(job_id, "checkpoint.tar", b"weights")
    assert response.status_code == 507, response.text
    assert "read-only" in response.json()["detail"]
    # The job itself is unharmed: the worker may still heartbeat and finish.
    assert worker.call(job_id, "heartbeat").status_code == 200


def test_corrupted_checkpoint_is_never_offered_for_resume(
    client: TestClient, team_key: str, clock: FakeClock, settings: Settings
) -> None:
    job_id = running_job(client, team_key)
    first = Worker(client, "gpu-a")
    first.claim()
    good = b"good checkpoint at step 40"
    assert first.upload(job_id, "checkpoint.tar", good).status_code == 201
    # A later checkpoint is damaged in transit: its bytes do not match the declared checksum.
    damaged = first.upload(
        job_id, "checkpoint.tar", b"good checkpoint at step 8\x00", hashlib.sha256(b"x").hexdigest()
    )
    assert damaged.status_code == 422 and "checksum mismatch" in damaged.json()["detail"]

    clock.advance(seconds=settings.lease_seconds + 1)
    run_tick(client.app, "reap_leases")  # type: ignore[arg-type]
    make_ready(client, job_id)
    second = Worker(client, "gpu-b")
    claimed = second.claim()
    assert claimed["attempt"] == 2
    assert claimed["resume_from"]["sha256"] == hashlib.sha256(good).hexdigest()
    download = client.get(f"/v1/jobs/{job_id}/artifacts/checkpoint.tar", headers=second.headers)
    assert download.status_code == 200 and download.content == good
    assert download.headers["x-content-sha256"] == hashlib.sha256(good).hexdigest()


def test_worker_back_after_losing_its_lease_is_refused(
    client: TestClient, team_key: str, clock: FakeClock, settings: Settings
) -> None:
    job_id = running_job(client, team_key)
    stale = Worker(client, "gpu-a")
    stale.claim()
    # The worker goes silent (a network partition) past its lease; the reaper takes the job.
    clock.advance(seconds=settings.lease_seconds + 5)
    run_tick(client.app, "reap_leases")  # type: ignore[arg-type]
    make_ready(client, job_id)
    fresh = Worker(client, "gpu-b")
    assert fresh.claim()["attempt"] == 2

    # It comes back with a clock an hour fast and tries every write it knows.
    skew = timedelta(hours=1)
    refused = {
        "heartbeat": stale.call(job_id, "heartbeat"),
        "complete": stale.call(job_id, "complete", energy=report(1, clock, skew=skew), result={}),
        "fail": stale.call(job_id, "fail", energy=report(1, clock, skew=skew), error="x"),
        "release": stale.call(
            job_id, "release", energy=report(1, clock, skew=skew), reason="shutdown"
        ),
        "upload": stale.upload(job_id, "checkpoint.tar", b"stale weights"),
    }
    for verb, response in refused.items():
        assert response.status_code == 409, (verb, response.text)
        assert "lease lost" in response.json()["detail"], verb
    assert stored_files(settings) == []

    # The new owner's clock runs three hours slow: its report is still accepted and the
    # service's own clock decides the lease.
    clock.advance(seconds=30)
    assert fresh.call(job_id, "heartbeat").status_code == 200
    done = fresh.call(
        job_id, "complete", energy=report(2, clock, skew=-timedelta(hours=3)), result={}
    )
    assert done.status_code == 200, done.text
    job = client.get(f"/v1/jobs/{job_id}", headers=bearer(team_key)).json()
    assert job["state"] == "succeeded"
    energy = client.get(f"/v1/jobs/{job_id}/energy", headers=bearer(team_key)).json()
    assert [(a["attempt"], a["outcome"]) for a in energy["attempts"]] == [
        (1, "lost"),
        (2, "succeeded"),
    ]
