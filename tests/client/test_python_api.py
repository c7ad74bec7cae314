"""The Python API for scripts: typed answers, tolerant parsing, and the CLI's errors."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import update
from support.cli_driver import SERVER, AppTransport, Cli
from support.helpers import ADMIN_TOKEN, WORKER_TOKEN, bearer
from test_files_and_admin import _job_with_artifact

from scheduler.client import (
    ApiError,
    Artifact,
    BudgetStatus,
    ClientConfig,
    ClientError,
    ConnectionFailed,
    Dataset,
    EnergyReport,
    GreenwindowClient,
    Job,
    NewKey,
    Team,
    UnexpectedResponse,
)
from scheduler.db.session import session_scope
from scheduler.jobs.models import Job as JobRow
from worker.training.sample import write_sample_dataset


def _api(client: TestClient, key: str) -> GreenwindowClient:
    return GreenwindowClient(
        ClientConfig(server=SERVER, api_key=key), transport=AppTransport(client)
    )


def test_submit_a_dataset_job_and_read_it_back_typed(
    client: TestClient, team_key: str, tmp_path: Path
) -> None:
    write_sample_dataset(tmp_path / "voice", n_utterances=3, engine="synthetic")
    with _api(client, team_key) as gw:
        dataset = gw.upload_dataset(tmp_path / "voice", sleep=lambda _: None)
        assert isinstance(dataset, Dataset)
        assert (dataset.name, dataset.utterances, dataset.ready) == ("voice", 3, True)
        assert [d.id for d in gw.datasets()] == [dataset.id]

        job = gw.submit("ft", dataset=dataset, config={"max_steps": 2}, priority=5)
        assert isinstance(job, Job) and isinstance(job.submitted_at, datetime)
        assert job.dataset is not None and job.dataset["id"] == dataset.id
        assert (job.config["max_steps"], job.raw["priority"], job.finished) == (2, 5, False)
        assert gw.job(job.id).id == job.id
        assert [listed.id for listed in gw.jobs()] == [job.id]

        cancelled = gw.cancel(job.id)
        assert cancelled.id == job.id and (cancelled.cancel_requested or cancelled.finished)


def test_artifacts_download_and_energy_are_typed(
    client: TestClient, team_key: str, tmp_path: Path
) -> None:
    data = b"\x01adapter" * 500
    job_id = _job_with_artifact(client, team_key, data)
    with _api(client, team_key) as gw:
        (artifact,) = gw.artifacts(job_id)
        assert isinstance(artifact, Artifact)
        assert (artifact.name, artifact.size) == ("adapter.safetensors", len(data))
        assert artifact.sha256 == hashlib.sha256(data).hexdigest()
        (path,) = gw.download(job_id, out_dir=tmp_path / "out")
        assert path == tmp_path / "out" / "adapter.safetensors" and path.read_bytes() == data
        with pytest.raises(ClientError, match="no artifact 'nope' \\(it has: adapter"):
            gw.download(job_id, ["nope"], out_dir=tmp_path)

        report = gw.energy(job_id)
        assert isinstance(report, EnergyReport)
        assert report.job_id == job_id and report.kwh.total == 0.0 and report.state == "running"


def test_admin_calls_are_typed(client: TestClient, team_key: str) -> None:
    with _api(client, ADMIN_TOKEN) as admin:
        created = admin.create_team("beta")
        assert isinstance(created, NewKey) and created.api_key.startswith("gw_")
        assert created.api_key not in repr(created)
        rotated = admin.create_key("beta")
        teams = {team.name: team for team in admin.teams()}
        assert isinstance(teams["beta"], Team)
        assert rotated.key_id in {key.id for key in teams["beta"].keys}
        admin.revoke_key("beta", rotated.key_id)
        revoked = {k.id: k for k in admin.teams()[0].keys if k.id == rotated.key_id}
        assert all(k.revoked_at is not None for k in revoked.values())

        budget = admin.set_budget("beta", 2.5, thresholds=[(80, "notify")])
        assert isinstance(budget, BudgetStatus)
        assert (budget.limit_kg_co2e, budget.period, budget.state) == (2.5, "month", "ok")
        assert budget.thresholds == [{"percent": 80.0, "action": "notify"}]
    with _api(client, created.api_key) as beta:
        assert beta.budget("beta").remaining_kg_co2e == 2.5


def test_wait_returns_the_final_job(client: TestClient, team_key: str) -> None:
    job_id = _job_with_artifact(client, team_key, b"x")
    sleeps: list[float] = []
    with _api(client, team_key) as gw:
        with pytest.raises(ClientError, match="still running after 2 s"):
            gw.wait(job_id, timeout_s=2, interval_s=1, sleep=sleeps.append)
        assert sleeps == [1, 1]
        with session_scope(client.app.state.session_factory) as session:
            session.execute(update(JobRow).where(JobRow.id == job_id).values(state="failed"))
        final = gw.wait(job_id, sleep=sleeps.append)
        assert final.state == "failed" and final.finished and not final.succeeded


def test_errors_are_the_cli_lines(cli: Cli, client: TestClient, team_key: str) -> None:
    shown = cli("status", "no-such-job")
    assert shown.exit_code == 1
    with _api(client, team_key) as gw, pytest.raises(ApiError) as caught:
        gw.job("no-such-job")
    assert caught.value.status_code == 404
    assert shown.stderr.strip() == f"error: {caught.value}"

    denied = cli("admin", "teams", "list")
    with _api(client, team_key) as gw, pytest.raises(ApiError) as caught:
        gw.teams()
    assert denied.stderr.strip() == f"error: {caught.value}"


def test_an_unreachable_server_is_one_line() -> None:
    with GreenwindowClient(server="http://127.0.0.1:9", api_key="k") as gw:
        with pytest.raises(ConnectionFailed) as caught:
            gw.job("j")
    assert str(caught.value) == "cannot reach http://127.0.0.1:9: connection refused"


def _job_json(**extra: object) -> dict[str, object]:
    return {
        "id": "j1",
        "team": "alpha",
        "name": "ft",
        "kind": "gpt-sovits-finetune",
        "state": "running",
        "submitted_at": "2026-12-01T05:00:00Z",
        "progress": {"step": 3, "total_steps": 10, "loss": 0.5, "stage": "s1", "lr": 1e-4},
        **extra,
    }


def _mock(body: object, status: int = 200) -> GreenwindowClient:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=json.dumps(body).encode())

    return GreenwindowClient(
        ClientConfig(server="http://x", api_key="k"), transport=httpx.MockTransport(answer)
    )


def test_fields_the_service_adds_later_do_not_break_parsing() -> None:
    telemetry = {"gpus": [{"index": 0, "watts": 212.5}], "kwh_so_far": 0.01}
    job = _mock(_job_json(telemetry=telemetry, live={"watts": 250.0, "future": 1})).job("j1")
    assert job.raw["telemetry"] == telemetry and job.telemetry == telemetry  # type: ignore[attr-defined]
    assert job.progress is not None and (job.progress.step, job.progress.loss) == (3, 0.5)
    assert job.live is not None and job.live.watts == 250.0 and job.live.kwh_so_far is None
    # Fields the older service leaves out fall back to their defaults.
    assert job.deadline is None and job.actual_kwh is None and job.attempt == 0
    with pytest.raises(ValidationError):
        job.state = "succeeded"  # frozen: a result is a snapshot, not a handle


def test_an_answer_of_the_wrong_shape_is_one_line() -> None:
    missing_state = _job_json()
    del missing_state["state"]
    with pytest.raises(UnexpectedResponse, match="^the server's Job does not parse: state: "):
        _mock(missing_state).job("j1")
    with pytest.raises(UnexpectedResponse, match="expected a list of Artifact"):
        _mock({"detail": "?"}).artifacts("j1")
    with pytest.raises(ApiError, match="^503 draining$"):
        _mock({"detail": "draining"}, status=503).job("j1")


def test_scripts_resolve_server_and_key_like_the_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GREENWINDOW_SERVER", "http://gw.example:8000/")
    monkeypatch.setenv("GREENWINDOW_API_KEY", "gw_secret")
    monkeypatch.setenv("GREENWINDOW_CLIENT_CONFIG", "/nonexistent/client.toml")
    with GreenwindowClient() as gw:
        assert gw.config.server == "http://gw.example:8000" and gw.config.api_key == "gw_secret"
    with GreenwindowClient(server="http://other") as gw:
        assert gw.config.server == "http://other"


def test_the_worker_token_gets_a_typed_workers_list(client: TestClient) -> None:
    client.post(
        "/v1/workers/register",
        json={"host": "h1", "zone": "ES", "gpus": [], "cpu_only": True, "version": "t"},
        headers=bearer(WORKER_TOKEN),
    )
    with _api(client, ADMIN_TOKEN) as admin:
        (worker,) = admin.workers()
    assert (worker.host, worker.zone, worker.cpu_only, worker.alive) == ("h1", "ES", True, True)
