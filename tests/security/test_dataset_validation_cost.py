"""Dataset validation cannot be made to burn the service's CPU.

Attacks covered here:
- a small zip whose `.list` names one wav thousands of times: each distinct clip is decoded
  once (counted, not timed);
- lists with more lines, or more audio seconds, than the per-dataset caps (settings);
- validation work on the request path: audio is decoded by a background task that moves
  the dataset from `validating` to `ready` or `invalid`, and jobs (and previews) are
  refused for a dataset that is not `ready`, naming `dataset.id`; workers claim only jobs
  whose dataset is `ready`.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from fastapi.testclient import TestClient
from sqlalchemy import update
from support.helpers import FakeClock, admin_headers, bearer
from support.world import sqlite_settings_in

from scheduler.app import create_app
from scheduler.datasets import validation
from scheduler.datasets.models import Dataset
from scheduler.db.session import session_scope
from scheduler.maintenance import resume_dataset_validation


def silent_wav(seconds: float) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(int(16_000 * seconds)), 16_000, format="WAV")
    return buffer.getvalue()


def one_wav_many_lines(lines: int, seconds: float = 0.5) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("wavs/a.wav", silent_wav(seconds))
        archive.writestr("voice.list", "a.wav|spk|en|hello\n" * lines)
    return buffer.getvalue()


def client_with(tmp_path: Path, template: Path, **settings: Any) -> Iterator[TestClient]:
    base = sqlite_settings_in(tmp_path, template).model_copy(update=settings)
    app = create_app(base, clock=FakeClock(), run_ticks=False)
    with TestClient(app) as client:
        yield client


@pytest.fixture
def client(tmp_path: Path, sqlite_template: Path) -> Iterator[TestClient]:
    yield from client_with(tmp_path, sqlite_template)


@pytest.fixture
def key(client: TestClient) -> str:
    created = client.post("/v1/teams", json={"name": "alpha"}, headers=admin_headers())
    assert created.status_code == 201, created.text
    return str(created.json()["api_key"])


def upload(client: TestClient, key: str, data: bytes) -> Any:
    return client.post(
        "/v1/datasets", content=data, headers={**bearer(key), "content-type": "application/zip"}
    )


def test_eight_thousand_lines_of_one_wav_decode_it_once(
    client: TestClient, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    decodes = []
    real_probe = validation.probe_audio

    def counting_probe(data: bytes) -> tuple[int, int]:
        decodes.append(len(data))
        return real_probe(data)

    monkeypatch.setattr(validation, "probe_audio", counting_probe)
    response = upload(client, key, one_wav_many_lines(8_000))
    assert response.status_code == 201, response.text
    dataset = client.get(f"/v1/datasets/{response.json()['id']}", headers=bearer(key)).json()
    assert dataset["state"] == "ready", dataset
    assert dataset["utterances"] == 8_000
    assert dataset["audio_seconds"] == pytest.approx(8_000 * 0.5)
    assert len(decodes) == 1


def test_too_many_lines_are_refused_at_upload(tmp_path: Path, sqlite_template: Path) -> None:
    for client in client_with(tmp_path, sqlite_template, dataset_max_lines=100):
        team = client.post("/v1/teams", json={"name": "alpha"}, headers=admin_headers()).json()
        response = upload(client, team["api_key"], one_wav_many_lines(101))
        assert response.status_code == 422, response.text
        assert response.json()["field"] == "list"
        assert "101 annotated lines; at most 100" in response.json()["detail"]
        assert upload(client, team["api_key"], one_wav_many_lines(100)).status_code == 201


def test_too_much_audio_makes_the_dataset_invalid(tmp_path: Path, sqlite_template: Path) -> None:
    for client in client_with(tmp_path, sqlite_template, dataset_max_audio_seconds=60):
        team = client.post("/v1/teams", json={"name": "alpha"}, headers=admin_headers()).json()
        response = upload(client, team["api_key"], one_wav_many_lines(121, seconds=0.5))
        assert response.status_code == 201, response.text
        dataset = client.get(
            f"/v1/datasets/{response.json()['id']}", headers=bearer(team["api_key"])
        ).json()
        assert dataset["state"] == "invalid"
        assert "more than 60 s of audio by line 121" in dataset["state_reason"]


def _set_state(client: TestClient, dataset_id: str, **values: Any) -> None:
    with session_scope(client.app.state.session_factory) as session:  # type: ignore[attr-defined]
        session.execute(update(Dataset).where(Dataset.id == dataset_id).values(**values))


def test_jobs_and_previews_need_a_ready_dataset(client: TestClient, key: str) -> None:
    dataset_id = upload(client, key, one_wav_many_lines(4)).json()["id"]
    body = {
        "name": "voice",
        "dataset": {"id": dataset_id},
        "config": {"stage": "s1", "max_steps": 4, "model_size": "tiny"},
        "max_delay_minutes": 600,
    }
    for state, reason, expected in (
        ("validating", "", "still being validated"),
        ("invalid", "line 3: 'a.wav' is not decodable audio", "is invalid: line 3"),
    ):
        _set_state(client, dataset_id, state=state, state_reason=reason)
        for path in ("/v1/jobs", "/v1/plan/preview"):
            refused = client.post(path, json=body, headers=bearer(key))
            assert refused.status_code == 422, (path, refused.text)
            assert refused.json()["field"] == "dataset.id" and expected in refused.json()["detail"]
    _set_state(client, dataset_id, state="ready", state_reason="")
    assert client.post("/v1/jobs", json=body, headers=bearer(key)).status_code == 201


def test_a_validation_cut_short_is_picked_up_again(client: TestClient, key: str) -> None:
    dataset_id = upload(client, key, one_wav_many_lines(4)).json()["id"]
    clock: FakeClock = client.app.state.clock  # type: ignore[attr-defined]
    _set_state(
        client,
        dataset_id,
        state="validating",
        audio_seconds=0.0,
        created_at=clock.now - timedelta(minutes=1),
    )
    assert resume_dataset_validation(client.app) == 0  # too recent: maybe still running
    _set_state(client, dataset_id, created_at=clock.now - timedelta(hours=1))
    assert resume_dataset_validation(client.app) == 1  # type: ignore[arg-type]
    dataset = client.get(f"/v1/datasets/{dataset_id}", headers=bearer(key)).json()
    assert dataset["state"] == "ready" and dataset["audio_seconds"] == pytest.approx(2.0)


def test_a_job_is_claimed_only_while_its_dataset_is_ready(client: TestClient, key: str) -> None:
    from support.world import make_ready, register_worker

    dataset_id = upload(client, key, one_wav_many_lines(4)).json()["id"]
    body = {
        "name": "voice",
        "dataset": {"id": dataset_id},
        "config": {"stage": "s1", "max_steps": 4, "model_size": "tiny"},
        "max_delay_minutes": 600,
    }
    job = client.post("/v1/jobs", json=body, headers=bearer(key))
    assert job.status_code == 201, job.text
    make_ready(client, job.json()["id"])
    worker_id, token = register_worker(client)
    claim_path = f"/v1/workers/{worker_id}/claim"
    _set_state(client, dataset_id, state="invalid", state_reason="found bad later")
    assert client.post(claim_path, json={}, headers=bearer(token)).status_code == 204
    _set_state(client, dataset_id, state="ready", state_reason="")
    claimed = client.post(claim_path, json={}, headers=bearer(token))
    assert claimed.status_code == 200 and claimed.json()["job"]["id"] == job.json()["id"]
