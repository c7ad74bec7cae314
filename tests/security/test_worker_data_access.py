"""A worker reads a dataset or an artifact only while it holds a live lease on a job that
uses it.

Attacks covered here: a worker token downloading another team's dataset archive, or a
dataset its running job does not train on; a worker reading the dataset and artifacts of a
job it finished long ago, or after its lease expired (before the reaper even ran).
"""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi.testclient import TestClient
from support.helpers import FakeClock, admin_headers, bearer, tiny_dataset_zip
from support.world import make_ready, register_worker


def _dataset(client: TestClient, key: str) -> str:
    response = client.post(
        "/v1/datasets",
        content=tiny_dataset_zip(),
        headers={**bearer(key), "content-type": "application/zip"},
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _finetune(client: TestClient, key: str, dataset_id: str) -> str:
    body = {
        "name": "voice",
        "kind": "gpt-sovits-finetune",
        "dataset": {"id": dataset_id},
        "config": {"stage": "s1", "max_steps": 4, "model_size": "tiny"},
        "max_delay_minutes": 600,
    }
    response = client.post("/v1/jobs", json=body, headers=bearer(key))
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _setup(client: TestClient) -> dict[str, Any]:
    keys = {}
    for name in ("alpha", "beta"):
        created = client.post("/v1/teams", json={"name": name}, headers=admin_headers())
        assert created.status_code == 201, created.text
        keys[name] = created.json()["api_key"]
    own = _dataset(client, keys["alpha"])
    unused = _dataset(client, keys["alpha"])
    other = _dataset(client, keys["beta"])
    job = _finetune(client, keys["alpha"], own)
    make_ready(client, job)
    worker_id, token = register_worker(client)
    claim = client.post(f"/v1/workers/{worker_id}/claim", json={}, headers=bearer(token))
    assert claim.status_code == 200, claim.text
    assert claim.json()["job"]["id"] == job
    lease = {k: claim.json()[k] for k in ("attempt", "lease_token")}
    data = b"adapter"
    stored = client.put(
        f"/v1/jobs/{job}/artifacts/s1_lora.safetensors",
        content=data,
        headers={
            **bearer(token),
            "X-Attempt": str(lease["attempt"]),
            "X-Lease-Token": lease["lease_token"],
            "X-Content-SHA256": hashlib.sha256(data).hexdigest(),
        },
    )
    assert stored.status_code == 201, stored.text
    return {
        "keys": keys,
        "own": own,
        "unused": unused,
        "other": other,
        "job": job,
        "worker_id": worker_id,
        "token": token,
        "lease": lease,
    }


def _reads(client: TestClient, w: dict[str, Any]) -> dict[str, int]:
    headers = bearer(w["token"])
    paths = {
        "own": f"/v1/datasets/{w['own']}/archive",
        "unused": f"/v1/datasets/{w['unused']}/archive",
        "other": f"/v1/datasets/{w['other']}/archive",
        "artifacts": f"/v1/jobs/{w['job']}/artifacts",
        "artifact": f"/v1/jobs/{w['job']}/artifacts/s1_lora.safetensors",
    }
    return {name: client.get(path, headers=headers).status_code for name, path in paths.items()}


def test_a_worker_reads_only_what_its_live_lease_needs(sqlite_client: TestClient) -> None:
    w = _setup(sqlite_client)
    assert _reads(sqlite_client, w) == {
        "own": 200,
        "unused": 404,
        "other": 404,
        "artifacts": 200,
        "artifact": 200,
    }


def test_a_finished_job_opens_nothing_to_its_former_worker(sqlite_client: TestClient) -> None:
    w = _setup(sqlite_client)
    done = sqlite_client.post(
        f"/v1/workers/{w['worker_id']}/jobs/{w['job']}/fail",
        json={**w["lease"], "error": "stopped", "retryable": False},
        headers=bearer(w["token"]),
    )
    assert done.status_code == 200, done.text
    clock: FakeClock = sqlite_client.app.state.clock  # type: ignore[attr-defined]
    clock.advance(days=30)
    assert set(_reads(sqlite_client, w).values()) == {404}
    # The team still reads its own files.
    own = bearer(w["keys"]["alpha"])
    assert sqlite_client.get(f"/v1/datasets/{w['own']}/archive", headers=own).status_code == 200
    listed = sqlite_client.get(f"/v1/jobs/{w['job']}/artifacts", headers=own)
    assert listed.status_code == 200 and len(listed.json()) == 1


def test_an_expired_lease_opens_nothing_even_before_the_reaper(
    sqlite_client: TestClient,
) -> None:
    w = _setup(sqlite_client)
    clock: FakeClock = sqlite_client.app.state.clock  # type: ignore[attr-defined]
    clock.advance(seconds=sqlite_client.app.state.settings.lease_seconds + 1)  # type: ignore[attr-defined]
    assert set(_reads(sqlite_client, w).values()) == {404}
