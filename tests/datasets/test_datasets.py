"""Dataset uploads: validation of the zip and its annotation list, storage, reads, download."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support.dataset_zips import build_zip, good_members, wav_bytes
from support.fleet_helpers import register
from support.helpers import admin_headers, bearer

from scheduler.datasets.validation import DatasetInvalid, Limits, validate_zip


def upload_raw(client: TestClient, key: str, data: bytes, name: str = "alice") -> object:
    return client.post(
        "/v1/datasets",
        params={"name": name},
        content=data,
        headers={**bearer(key), "content-type": "application/zip"},
    )


def test_good_zip_is_stored_and_readable(client: TestClient, team_key: str) -> None:
    data = build_zip(good_members(3, seconds=0.5))
    response = upload_raw(client, team_key, data)
    assert response.status_code == 201, response.text
    assert response.json()["state"] == "validating"  # the audio is decoded off the request
    dataset = client.get(f"/v1/datasets/{response.json()['id']}", headers=bearer(team_key)).json()
    assert dataset["state"] == "ready" and dataset["state_reason"] == ""
    assert dataset["utterances"] == 3 and dataset["audio_seconds"] == pytest.approx(1.5)
    assert dataset["languages"] == ["en"] and dataset["speakers"] == 1
    assert dataset["sha256"] == hashlib.sha256(data).hexdigest() and dataset["size"] == len(data)

    assert client.get("/v1/datasets", headers=bearer(team_key)).json()[0]["id"] == dataset["id"]
    one = client.get(f"/v1/datasets/{dataset['id']}", headers=bearer(team_key))
    assert one.json()["name"] == "alice"
    archive = client.get(f"/v1/datasets/{dataset['id']}/archive", headers=bearer(team_key))
    assert archive.status_code == 200 and archive.content == data

    # A worker fetches it only while it runs a job on it (test_worker_data_access.py);
    # another team cannot see it at all.
    worker = register(client)
    by_worker = client.get(f"/v1/datasets/{dataset['id']}/archive", headers=bearer(worker["token"]))
    assert by_worker.status_code == 404
    other = client.post("/v1/teams", json={"name": "beta"}, headers=admin_headers()).json()
    for path in (f"/v1/datasets/{dataset['id']}", f"/v1/datasets/{dataset['id']}/archive"):
        assert client.get(path, headers=bearer(other["api_key"])).status_code == 404
    assert client.get("/v1/datasets", headers=bearer(other["api_key"])).json() == []


def test_multipart_upload_and_job_reference(client: TestClient, team_key: str) -> None:
    data = build_zip(good_members(2), compress=True)
    response = client.post(
        "/v1/datasets",
        files={"file": ("voices.zip", data, "application/zip")},
        headers=bearer(team_key),
    )
    assert response.status_code == 201, response.text
    assert response.json()["name"] == "voices.zip"
    dataset_id = response.json()["id"]
    body = {
        "name": "voice",
        "dataset": {"id": dataset_id},
        "config": {"stage": "s1", "max_steps": 4, "model_size": "tiny"},
        "max_delay_minutes": 600,
    }
    assert client.post("/v1/jobs", json=body, headers=bearer(team_key)).status_code == 201
    unknown = client.post(
        "/v1/jobs", json={**body, "dataset": {"id": "NOPE"}}, headers=bearer(team_key)
    )
    assert unknown.status_code == 422 and unknown.json()["field"] == "dataset.id"


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({**good_members(1), "../../etc/evil.wav": b"x"}, "escapes the archive"),
        ({**good_members(1), "/abs/evil.wav": b"x"}, "absolute path"),
        ({"wavs/clip0.wav": wav_bytes()}, "no .list annotation file"),
        ({**good_members(1), "second.list": b"a.wav|s|en|t\n"}, "exactly one .list"),
        (
            {
                "wavs/clip0.wav": wav_bytes(),
                "a.list": b"clip0.wav|alice|en|hi\nclip1.wav|alice|en|x\n",
            },
            "line 2: audio file 'clip1.wav' is not in the zip",
        ),
        (
            {"wavs/clip0.wav": wav_bytes(), "a.list": b"clip0.wav|alice|en|hi\nclip0.wav|alice\n"},
            "line 2: expected wav_path|speaker|language|text",
        ),
        (
            {"wavs/clip0.wav": wav_bytes(), "a.list": b"clip0.wav|alice|klingon|hi\n"},
            "line 1: unknown language 'klingon'",
        ),
    ],
)
def test_bad_zips_are_refused_naming_the_problem(
    client: TestClient, team_key: str, members: dict[str, bytes], message: str, settings: object
) -> None:
    response = upload_raw(client, team_key, build_zip(members))
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]
    stored = Path(settings.data_dir) / "datasets"  # type: ignore[attr-defined]
    leftovers = [p for p in stored.rglob("*") if p.is_file()]
    assert leftovers == []  # a refused upload leaves nothing behind
    assert client.get("/v1/datasets", headers=bearer(team_key)).json() == []


def test_undecodable_audio_makes_the_dataset_invalid(
    client: TestClient, team_key: str, settings: object
) -> None:
    members = {"wavs/clip0.wav": b"RIFF not really audio", "a.list": b"clip0.wav|alice|en|hi\n"}
    response = upload_raw(client, team_key, build_zip(members))
    assert response.status_code == 201, response.text  # the audio is decoded afterwards
    dataset = client.get(f"/v1/datasets/{response.json()['id']}", headers=bearer(team_key)).json()
    assert dataset["state"] == "invalid"
    assert "line 1: 'wavs/clip0.wav' is not decodable audio" in dataset["state_reason"]
    stored = Path(settings.data_dir) / "datasets"  # type: ignore[attr-defined]
    assert [p for p in stored.rglob("*") if p.is_file()] == []


def test_symlinks_and_non_zips_are_refused(client: TestClient, team_key: str) -> None:
    linked = build_zip(good_members(1), symlinks={"wavs/link.wav": "/etc/passwd"})
    response = upload_raw(client, team_key, linked)
    assert response.status_code == 422 and "symbolic link" in response.json()["detail"]
    garbage = upload_raw(client, team_key, b"PK\x03\x04 definitely not a zip")
    assert garbage.status_code == 422 and "not a readable zip" in garbage.json()["detail"]
    wrong_type = client.post(
        "/v1/datasets", content=b"{}", headers={**bearer(team_key), "content-type": "text/plain"}
    )
    assert wrong_type.status_code == 422 and wrong_type.json()["field"] == "content-type"


def test_zip_bombs_are_refused(tmp_path: Path) -> None:
    # 50 MB of zeros deflate to ~50 kB: the ratio check catches it without unpacking.
    bomb = tmp_path / "bomb.zip"
    bomb.write_bytes(build_zip({**good_members(1), "pad.bin": bytes(50_000_000)}, compress=True))
    with pytest.raises(DatasetInvalid, match="zip bomb"):
        validate_zip(bomb)
    many = tmp_path / "many.zip"
    many.write_bytes(build_zip({**good_members(1), **{f"f{i}": b"" for i in range(30)}}))
    with pytest.raises(DatasetInvalid, match="at most 10"):
        validate_zip(many, Limits(max_members=10))
    big = tmp_path / "big.zip"
    big.write_bytes(build_zip(good_members(2)))
    with pytest.raises(DatasetInvalid, match="unpacks to more than"):
        validate_zip(big, Limits(max_uncompressed_bytes=10_000))


def test_upload_over_the_size_limit_is_413(
    client: TestClient, team_key: str, settings: object
) -> None:
    limit = client.app.state.settings.max_upload_bytes
    client.app.state.settings.max_upload_bytes = 4096
    try:
        response = upload_raw(client, team_key, build_zip(good_members(3)))
    finally:
        client.app.state.settings.max_upload_bytes = limit
    assert response.status_code == 413


def test_claims_skip_jobs_whose_dataset_is_not_ready(client: TestClient, team_key: str) -> None:
    """On both databases: the claim's dataset filter reads the job's JSON dataset id."""
    from sqlalchemy import update
    from support.fleet_helpers import make_ready

    from scheduler.datasets.models import Dataset
    from scheduler.db.session import session_scope

    dataset_id = upload_raw(client, team_key, build_zip(good_members(2))).json()["id"]
    body = {
        "name": "voice",
        "dataset": {"id": dataset_id},
        "config": {"stage": "s1", "max_steps": 4, "model_size": "tiny"},
        "max_delay_minutes": 600,
    }
    job_id = client.post("/v1/jobs", json=body, headers=bearer(team_key)).json()["id"]
    make_ready(client.app, job_id)  # type: ignore[arg-type]
    worker = register(client)
    claim = f"/v1/workers/{worker['worker_id']}/claim"

    def set_state(state: str) -> None:
        factory = client.app.state.session_factory  # type: ignore[attr-defined]
        with session_scope(factory) as session:
            session.execute(update(Dataset).where(Dataset.id == dataset_id).values(state=state))

    set_state("validating")
    assert client.post(claim, json={}, headers=bearer(worker["token"])).status_code == 204
    set_state("ready")
    claimed = client.post(claim, json={}, headers=bearer(worker["token"]))
    assert claimed.status_code == 200 and claimed.json()["job"]["id"] == job_id
