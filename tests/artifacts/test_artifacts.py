"""Artifact uploads: fenced by the lease, checksum-verified, size-limited, listed, downloaded."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support.fleet_helpers import WorkerSession, make_ready, register
from support.helpers import admin_headers, bearer, burn_in_job

from scheduler.artifacts import storage
from scheduler.artifacts.storage import check_name
from scheduler.errors import InvalidInput


@pytest.fixture
def running(client: TestClient, team_key: str) -> tuple[WorkerSession, str]:
    job_id = client.post("/v1/jobs", json=burn_in_job(), headers=bearer(team_key)).json()["id"]
    make_ready(client.app, job_id)
    worker = WorkerSession(client, register(client))
    worker.claim()
    return worker, job_id


def test_upload_list_download(
    client: TestClient, team_key: str, running: tuple[WorkerSession, str]
) -> None:
    worker, job_id = running
    data = os.urandom(300_000)
    stored = worker.upload(job_id, "adapter.safetensors", data)
    assert stored.status_code == 201, stored.text
    assert stored.json() == {
        "name": "adapter.safetensors",
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    listed = client.get(f"/v1/jobs/{job_id}/artifacts", headers=bearer(team_key)).json()
    assert [(a["name"], a["size"], a["attempt"]) for a in listed] == [
        ("adapter.safetensors", len(data), 1)
    ]
    download = client.get(
        f"/v1/jobs/{job_id}/artifacts/adapter.safetensors", headers=bearer(team_key)
    )
    assert download.status_code == 200 and download.content == data
    by_worker = client.get(
        f"/v1/jobs/{job_id}/artifacts/adapter.safetensors", headers=worker.headers
    )
    assert by_worker.content == data
    # A newer upload under the same name replaces the file and its record.
    assert worker.upload(job_id, "adapter.safetensors", b"v2").status_code == 201
    again = client.get(f"/v1/jobs/{job_id}/artifacts/adapter.safetensors", headers=bearer(team_key))
    assert again.content == b"v2"
    assert len(client.get(f"/v1/jobs/{job_id}/artifacts", headers=bearer(team_key)).json()) == 1

    other = client.post("/v1/teams", json={"name": "beta"}, headers=admin_headers()).json()
    assert (
        client.get(f"/v1/jobs/{job_id}/artifacts", headers=bearer(other["api_key"])).status_code
        == 404
    )
    stranger = register(client, host="stranger")
    assert (
        client.get(f"/v1/jobs/{job_id}/artifacts", headers=bearer(stranger["token"])).status_code
        == 404
    )


def test_checksum_mismatch_is_422_and_keeps_nothing(
    client: TestClient, team_key: str, running: tuple[WorkerSession, str], settings: object
) -> None:
    worker, job_id = running
    response = worker.upload(job_id, "checkpoint.tar", b"payload", sha256="0" * 64)
    assert response.status_code == 422 and "checksum mismatch" in response.json()["detail"]
    assert client.get(f"/v1/jobs/{job_id}/artifacts", headers=bearer(team_key)).json() == []
    store = Path(settings.artifact_dir) / job_id  # type: ignore[attr-defined]
    assert [p for p in store.iterdir()] == []


def test_bad_names_and_headers(running: tuple[WorkerSession, str]) -> None:
    worker, job_id = running
    for name in ("a" * 129, "bad name", "x;rm", "caf\u00e9.bin"):
        response = worker.upload(job_id, name, b"x")
        assert response.status_code == 422, (name, response.status_code)
        assert response.json()["field"] == "name"
    for name in ("..", ".", ".upload-123"):  # clients normalise dot segments, so check directly
        with pytest.raises(InvalidInput):
            check_name(name)
    missing = worker.client.put(
        f"/v1/jobs/{job_id}/artifacts/ok.bin", content=b"x", headers=worker.headers
    )
    assert missing.status_code == 422 and "x-attempt" in missing.json()["detail"].lower()
    not_hex = worker.upload(job_id, "ok.bin", b"x", sha256="z" * 64)
    assert not_hex.status_code == 422 and not_hex.json()["field"] == "X-Content-SHA256"


def test_team_keys_cannot_upload(
    client: TestClient, team_key: str, running: tuple[WorkerSession, str]
) -> None:
    worker, job_id = running
    headers = {
        **bearer(team_key),
        "X-Attempt": "1",
        "X-Lease-Token": worker.lease["lease_token"],
        "X-Content-SHA256": hashlib.sha256(b"x").hexdigest(),
    }
    response = client.put(f"/v1/jobs/{job_id}/artifacts/x.bin", content=b"x", headers=headers)
    assert response.status_code == 401


def test_size_limit_is_413(client: TestClient, running: tuple[WorkerSession, str]) -> None:
    worker, job_id = running
    settings = client.app.state.settings
    limit, settings.max_upload_bytes = settings.max_upload_bytes, 2048
    try:
        response = worker.upload(job_id, "big.bin", os.urandom(10_000))
    finally:
        settings.max_upload_bytes = limit
    assert response.status_code == 413


def test_full_disk_is_507_and_leaves_no_temp_file(
    client: TestClient, running: tuple[WorkerSession, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    worker, job_id = running

    def disk_full(_fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    # The disk filling up is simulated at the last write barrier of the upload.
    monkeypatch.setattr(storage.os, "fsync", disk_full)
    response = worker.upload(job_id, "checkpoint.tar", b"data")
    assert response.status_code == 507 and "the disk is full" in response.json()["detail"]
    store = Path(client.app.state.settings.artifact_dir) / job_id
    assert list(store.iterdir()) == []


def test_store_that_is_a_file_is_507(
    client: TestClient, running: tuple[WorkerSession, str]
) -> None:
    worker, job_id = running
    store = Path(client.app.state.settings.artifact_dir)
    store.parent.mkdir(parents=True, exist_ok=True)
    store.write_text("not a directory")  # e.g. a misconfigured GREENWINDOW_ARTIFACT_DIR
    response = worker.upload(job_id, "checkpoint.tar", b"data")
    assert response.status_code == 507
    assert "cannot store the upload" in response.json()["detail"]
