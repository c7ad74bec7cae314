"""The CLI without curl: dataset uploads, artifact downloads checked by sha256, admin actions."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from support.cli_driver import Cli
from support.helpers import ADMIN_TOKEN, WORKER_TOKEN, FakeClock, bearer

from scheduler.client.config import ClientConfig
from scheduler.client.files import zip_dataset_dir
from scheduler.client.http import ClientError, JsonClient
from scheduler.db.session import session_scope
from scheduler.jobs.models import Job
from worker.training.sample import write_sample_dataset


@pytest.fixture
def admin(cli: Cli) -> Cli:
    return Cli(cli.client, {**cli.env, "GREENWINDOW_API_KEY": ADMIN_TOKEN})


@pytest.fixture
def dataset_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "voice"
    write_sample_dataset(directory, n_utterances=3, engine="synthetic")
    (directory / "notes.txt").write_text("not part of the dataset")
    return directory


def test_upload_a_directory_list_and_show(cli: Cli, dataset_dir: Path) -> None:
    uploaded = cli("datasets", "upload", str(dataset_dir), "--name", "voice-a")
    assert uploaded.exit_code == 0, uploaded.output
    dataset_id = uploaded.stdout.split()[2]
    assert "3 utterances" in uploaded.stdout
    listed = cli("datasets", "list", "--json")
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["id"], r["name"], r["utterances"]) for r in rows] == [(dataset_id, "voice-a", 3)]
    shown = cli("datasets", "show", dataset_id)
    assert shown.exit_code == 0 and "voice-a" in shown.stdout and "sha256" in shown.stdout


def test_a_directory_is_zipped_with_its_list_and_audio_only(
    dataset_dir: Path, tmp_path: Path
) -> None:
    with zipfile.ZipFile(zip_dataset_dir(dataset_dir, tmp_path / "d.zip")) as archive:
        names = archive.namelist()
    assert "sample.list" in names and all(n.endswith((".list", ".wav")) for n in names)
    with pytest.raises(ClientError, match="no .list"):
        zip_dataset_dir(dataset_dir / "wavs", tmp_path / "e.zip")


def test_submit_uploads_a_local_dataset_first(cli: Cli, dataset_dir: Path) -> None:
    done = cli(
        "submit", "--name", "from-dir", "--dataset", str(dataset_dir), "--set", "max_steps=2"
    )
    assert done.exit_code == 0, done.output
    job_id = done.stdout.splitlines()[0].split()[-1]
    job = json.loads(cli("status", job_id, "--json").stdout)
    datasets = [json.loads(line) for line in cli("datasets", "list", "--json").stdout.splitlines()]
    assert job["dataset"]["id"] == datasets[0]["id"]


def _job_with_artifact(client: TestClient, team_key: str, data: bytes) -> str:
    """A running burn-in job whose worker stored one artifact, `adapter.safetensors`."""
    job_id = client.post(
        "/v1/jobs", json={"name": "a", "kind": "burn-in", "config": {}}, headers=bearer(team_key)
    ).json()["id"]
    registered = client.post(
        "/v1/workers/register",
        json={"host": "h", "zone": "ES", "gpus": [], "cpu_only": True, "version": "t"},
        headers=bearer(WORKER_TOKEN),
    ).json()
    with session_scope(client.app.state.session_factory) as session:
        session.execute(update(Job).where(Job.id == job_id).values(state="ready"))
    worker = bearer(registered["token"])
    claim = client.post(f"/v1/workers/{registered['worker_id']}/claim", json={}, headers=worker)
    lease = claim.json()
    stored = client.put(
        f"/v1/jobs/{job_id}/artifacts/adapter.safetensors",
        content=data,
        headers={
            **worker,
            "X-Attempt": str(lease["attempt"]),
            "X-Lease-Token": lease["lease_token"],
            "X-Content-SHA256": hashlib.sha256(data).hexdigest(),
        },
    )
    assert stored.status_code in (200, 201), stored.text
    return job_id


def test_artifacts_and_a_checked_download(
    cli: Cli, client: TestClient, team_key: str, tmp_path: Path
) -> None:
    data = b"\x00weights" * 1000
    job_id = _job_with_artifact(client, team_key, data)
    listed = cli("artifacts", job_id)
    assert listed.exit_code == 0 and "adapter.safetensors" in listed.stdout
    out = tmp_path / "out"
    fetched = cli("download", job_id, "--out", str(out))
    assert fetched.exit_code == 0, fetched.output
    assert (out / "adapter.safetensors").read_bytes() == data and "sha256 ok" in fetched.stdout
    missing = cli("download", job_id, "nope.bin", "--out", str(out))
    assert missing.exit_code == 1
    assert "no artifact 'nope.bin' (it has: adapter.safetensors)" in missing.stderr


def test_a_corrupt_download_is_never_kept(tmp_path: Path) -> None:
    def corrupt(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"tampered")

    client = JsonClient(
        ClientConfig(server="http://x", api_key="k"), transport=httpx.MockTransport(corrupt)
    )
    artifact = {"name": "adapter.safetensors", "sha256": hashlib.sha256(b"good").hexdigest()}
    with pytest.raises(ClientError, match="does not match"):
        client.download_artifact("job", artifact, tmp_path)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ClientError, match="not a plain file name"):
        client.download_artifact("job", {"name": "../evil", "sha256": ""}, tmp_path)


def test_admin_teams_keys_budget_tariff_workers(admin: Cli, cli: Cli, tmp_path: Path) -> None:
    created = admin("admin", "teams", "create", "beta")
    assert created.exit_code == 0, created.output
    beta_key = created.stdout.split("api key: ")[1].split()[0]
    assert "cannot be shown again" in created.stderr
    assert "beta" in admin("admin", "teams", "list").stdout

    rotated = admin("admin", "keys", "create", "beta")
    key_id = rotated.stdout.split()[1]
    revoked = admin("admin", "keys", "revoke", "beta", key_id)
    assert revoked.exit_code == 0 and f"key {key_id} of beta revoked" in revoked.stdout

    budget = admin("admin", "budget", "set", "beta", "--limit", "2.5", "--threshold", "80:notify")
    assert budget.exit_code == 0, budget.output
    assert "2.5 kg CO2e per month (hard)" in budget.stdout
    shown = admin("admin", "budget", "show", "beta")
    assert shown.exit_code == 0 and "monthly" not in shown.stderr and "limit" in shown.stdout
    bad = admin("admin", "budget", "set", "beta", "--limit", "1", "--threshold", "eighty")
    assert bad.exit_code == 1 and "PERCENT:ACTION" in bad.stderr

    tariff = tmp_path / "tariff.yaml"
    tariff.write_text(
        "timezone: Europe/Madrid\ndefault_price: 0.16\nwindows:\n"
        "  - {days: [sat, sun], start: '00:00', end: '00:00', price: 0.10}\n"
    )
    set_tariff = admin("admin", "tariff", "set", "ES", str(tariff))
    assert set_tariff.exit_code == 0, set_tariff.output
    assert "1 windows, timezone Europe/Madrid" in set_tariff.stdout
    assert admin("admin", "workers").stdout.strip() == "no workers registered"

    # A team key is not an admin key: one line, exit 1.
    denied = cli("admin", "teams", "list", env={**cli.env, "GREENWINDOW_API_KEY": beta_key})
    assert denied.exit_code == 1 and denied.stderr.startswith("error: 403")


def test_the_python_client_waits_for_the_end(cli: Cli, client: TestClient, team_key: str) -> None:
    from support.cli_driver import AppTransport

    job_id = _job_with_artifact(client, team_key, b"x")
    api = JsonClient(
        ClientConfig(server="http://testserver", api_key=team_key),
        transport=AppTransport(client),
    )
    sleeps: list[float] = []
    with pytest.raises(ClientError, match="still running after 2 s"):
        api.wait(job_id, timeout_s=2, interval_s=1, sleep=sleeps.append)
    assert sleeps == [1, 1]
    api.cancel(job_id)
    with session_scope(client.app.state.session_factory) as session:
        session.execute(update(Job).where(Job.id == job_id).values(state="cancelled"))
    assert api.wait(job_id, sleep=sleeps.append)["state"] == "cancelled"


def test_budget_history_from_the_command_line(cli: Cli, admin: Cli, clock: FakeClock) -> None:
    assert admin("admin", "budget", "set", "alpha", "--limit", "1").exit_code == 0
    for _ in range(15):
        clock.advance(minutes=10)
        cli("submit", "--name", "b", "--kind", "burn-in")
    shown = cli("budget", "alpha", "--history")
    assert shown.exit_code == 0, shown.output
    rows = [line for line in shown.stdout.splitlines() if "% of 1 kg CO2e" in line]
    assert len(rows) == 12  # 16 points (start + 15 reservations), spread to 12
    raw = json.loads(cli("budget", "alpha", "--history", "--json").stdout)
    assert len(raw["points"]) == 16 and raw["points"][-1]["actual_kg_co2e"] == 0.0
