"""A small populated service for security tests: two teams, keys, a worker, jobs and files."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import update

from scheduler.db.session import session_scope
from scheduler.jobs.models import Job
from scheduler.settings import Settings
from support.helpers import (
    ADMIN_TOKEN,
    WORKER_TOKEN,
    admin_headers,
    bearer,
    burn_in_job,
    tiny_dataset_zip,
)


def sqlite_settings_in(directory: Path, template: Path) -> Settings:
    """Settings for a copy of the migrated SQLite template inside `directory`."""
    path = directory / "greenwindow.db"
    shutil.copy(template, path)
    return Settings(
        database_url=f"sqlite:///{path}",
        data_dir=directory / "data",
        admin_token=ADMIN_TOKEN,
        worker_token=WORKER_TOKEN,
    )


# The callers every route is tried with.
PRINCIPALS = ("none", "wrong", "revoked", "other", "own", "fleet", "worker", "admin")


@dataclass
class World:
    """Handles on the objects of a populated service; `own` is team alpha, `other` is beta."""

    client: TestClient
    own_key: str
    other_key: str
    revoked_key: str
    spare_key_ids: list[str] = field(default_factory=list)
    worker_id: str = ""
    worker_token: str = ""
    queued_job: str = ""
    running_job: str = ""
    lease: dict[str, Any] = field(default_factory=dict)
    dataset_id: str = ""
    artifact_name: str = "notes.txt"

    def headers(self, principal: str) -> dict[str, str]:
        """The Authorization header a principal sends (none sends nothing)."""
        tokens = {
            "none": None,
            "wrong": "definitely-not-a-key",
            "revoked": self.revoked_key,
            "other": self.other_key,
            "own": self.own_key,
            "fleet": WORKER_TOKEN,
            "worker": self.worker_token,
            "admin": ADMIN_TOKEN,
        }
        token = tokens[principal]
        return {} if token is None else bearer(token)

    def submit(self, key: str | None = None) -> str:
        """Submit a burn-in job for a team (alpha by default); returns its id."""
        response = self.client.post(
            "/v1/jobs", json=burn_in_job(), headers=bearer(key or self.own_key)
        )
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def new_key_id(self) -> str:
        """A fresh key of alpha (to revoke)."""
        response = self.client.post("/v1/teams/alpha/keys", headers=admin_headers())
        assert response.status_code == 201, response.text
        return response.json()["key_id"]


def make_ready(client: TestClient, *job_ids: str) -> None:
    """Move jobs to `ready` in the database: these tests are not about the planner."""
    with session_scope(client.app.state.session_factory) as session:  # type: ignore[attr-defined]
        session.execute(update(Job).where(Job.id.in_(job_ids)).values(state="ready"))


def register_worker(client: TestClient, host: str = "gpu-sec") -> tuple[str, str]:
    """Register a CPU-only worker in zone ES; returns (worker id, worker token)."""
    body = {"host": host, "zone": "ES", "gpus": [], "cpu_only": True, "version": "test"}
    response = client.post("/v1/workers/register", json=body, headers=bearer(WORKER_TOKEN))
    assert response.status_code == 201, response.text
    answer = response.json()
    return answer["worker_id"], answer["token"]


def build_world(client: TestClient) -> World:
    """Create teams alpha and beta, revoke a key, upload a dataset, run a job on a worker."""
    teams = {}
    for name in ("alpha", "beta"):
        response = client.post("/v1/teams", json={"name": name}, headers=admin_headers())
        assert response.status_code == 201, response.text
        teams[name] = response.json()
    revoked = client.post("/v1/teams/alpha/keys", headers=admin_headers()).json()
    gone = client.delete(f"/v1/teams/alpha/keys/{revoked['key_id']}", headers=admin_headers())
    assert gone.status_code == 200, gone.text
    world = World(
        client=client,
        own_key=teams["alpha"]["api_key"],
        other_key=teams["beta"]["api_key"],
        revoked_key=revoked["api_key"],
    )
    upload = client.post(
        "/v1/datasets?name=voice",
        files={"file": ("voice.zip", tiny_dataset_zip(), "application/zip")},
        headers=bearer(world.own_key),
    )
    assert upload.status_code == 201, upload.text
    world.dataset_id = upload.json()["id"]

    world.worker_id, world.worker_token = register_worker(client)
    world.running_job = world.submit()
    make_ready(client, world.running_job)
    claim = client.post(
        f"/v1/workers/{world.worker_id}/claim", json={}, headers=bearer(world.worker_token)
    )
    assert claim.status_code == 200, claim.text
    world.lease = {k: claim.json()[k] for k in ("attempt", "lease_token")}
    data = b"checkpoint notes"
    stored = client.put(
        f"/v1/jobs/{world.running_job}/artifacts/{world.artifact_name}",
        content=data,
        headers={
            **bearer(world.worker_token),
            "X-Attempt": str(world.lease["attempt"]),
            "X-Lease-Token": world.lease["lease_token"],
            "X-Content-SHA256": hashlib.sha256(data).hexdigest(),
        },
    )
    assert stored.status_code == 201, stored.text
    # Submitted after the claim, so it stays queued and the worker has nothing else to take.
    world.queued_job = world.submit()
    return world
