"""Names that collide: two clips with one file name in a dataset, artifacts differing by case."""

from __future__ import annotations

import hashlib
import io
import warnings
import zipfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support.helpers import bearer, tiny_dataset_zip
from support.world import make_ready, register_worker

from scheduler.settings import Settings


def with_extra_members(base: bytes, extra: dict[str, bytes]) -> bytes:
    """A copy of a valid dataset zip with more members (duplicated names allowed)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(base)) as source, zipfile.ZipFile(buffer, "w") as target:
        for info in source.infolist():
            target.writestr(info, source.read(info))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zipfile warns about a duplicate name: wanted here
            for name, data in extra.items():
                target.writestr(name.split("#")[0], data)
    return buffer.getvalue()


def first_wav(archive: bytes) -> tuple[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(archive)) as source:
        name = next(n for n in source.namelist() if n.endswith(".wav"))
        return name, source.read(name)


def leftovers(settings: Settings) -> list[Path]:
    root = Path(settings.data_dir)
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def _clashing_zips() -> dict[str, bytes]:
    base = tiny_dataset_zip()
    name, data = first_wav(base)
    clip = name.rsplit("/", 1)[-1]
    stem, suffix = clip.rsplit(".", 1)
    return {
        "same name in another folder": with_extra_members(base, {f"elsewhere/{clip}": b"junk"}),
        "same name differing by case": with_extra_members(
            base, {f"elsewhere/{stem.upper()}.{suffix.upper()}": data}
        ),
        "the same member twice": with_extra_members(base, {f"{name}#again": b"not audio"}),
    }


@pytest.mark.parametrize("case", sorted(_clashing_zips()))
def test_two_clips_with_one_file_name_are_refused(
    sqlite_client: TestClient, alpha_key: str, sqlite_settings: Settings, case: str
) -> None:
    response = sqlite_client.post(
        "/v1/datasets",
        content=_clashing_zips()[case],
        headers={**bearer(alpha_key), "content-type": "application/zip"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "file"
    assert "two audio files named" in response.json()["detail"]
    assert leftovers(sqlite_settings) == []


def test_the_same_zip_without_the_clash_is_accepted(
    sqlite_client: TestClient, alpha_key: str
) -> None:
    response = sqlite_client.post(
        "/v1/datasets",
        content=tiny_dataset_zip(),
        headers={**bearer(alpha_key), "content-type": "application/zip"},
    )
    assert response.status_code == 201, response.text


def test_artifact_names_differing_only_by_case_are_refused(
    sqlite_client: TestClient, alpha_key: str, sqlite_settings: Settings
) -> None:
    job = sqlite_client.post(
        "/v1/jobs",
        json={"name": "b", "kind": "burn-in", "config": {"steps": 5}, "max_delay_minutes": 600},
        headers=bearer(alpha_key),
    ).json()["id"]
    make_ready(sqlite_client, job)
    worker_id, token = register_worker(sqlite_client)
    claim = sqlite_client.post(f"/v1/workers/{worker_id}/claim", json={}, headers=bearer(token))
    assert claim.status_code == 200, claim.text

    def put(name: str, data: bytes) -> int:
        response = sqlite_client.put(
            f"/v1/jobs/{job}/artifacts/{name}",
            content=data,
            headers={
                **bearer(token),
                "X-Attempt": str(claim.json()["attempt"]),
                "X-Lease-Token": claim.json()["lease_token"],
                "X-Content-SHA256": hashlib.sha256(data).hexdigest(),
            },
        )
        if response.status_code == 422:
            assert response.json()["field"] == "name"
        return response.status_code

    assert put("adapter.safetensors", b"first") == 201
    assert put("Adapter.safetensors", b"second") == 422
    assert put("ADAPTER.SAFETENSORS", b"third") == 422
    assert put("adapter.safetensors", b"replaced") == 201  # the same name may be replaced
    listed = sqlite_client.get(f"/v1/jobs/{job}/artifacts", headers=bearer(alpha_key)).json()
    assert [a["name"] for a in listed] == ["adapter.safetensors"]
    stored = [p.read_bytes() for p in leftovers(sqlite_settings)]
    assert b"second" not in stored and b"third" not in stored
