"""Base models: workers register the bases they hold, jobs name `config.base`, and claims and
planning send a job only where its base is held."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select, update
from support.fleet_helpers import WorkerSession, make_ready
from support.helpers import WORKER_TOKEN, FakeClock, admin_headers, bearer, tiny_dataset_zip

from scheduler.db.session import session_scope
from scheduler.jobs.models import Job
from scheduler.maintenance import run_tick
from scheduler.workers.models import Worker


def register(client: TestClient, host: str, bases: list[str] | None = None) -> WorkerSession:
    body: dict[str, Any] = {"host": host, "zone": "ES", "gpus": [], "cpu_only": True}
    if bases is not None:
        body["bases"] = bases
    response = client.post("/v1/workers/register", json=body, headers=bearer(WORKER_TOKEN))
    assert response.status_code == 201, response.text
    return WorkerSession(client, response.json())


def upload_dataset(client: TestClient, key: str) -> str:
    response = client.post(
        "/v1/datasets",
        content=tiny_dataset_zip(),
        headers={**bearer(key), "content-type": "application/zip"},
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def finetune(dataset_id: str, **config: Any) -> dict[str, Any]:
    return {
        "name": "voice",
        "dataset": {"id": dataset_id},
        "config": {"stage": "s1", "max_steps": 4, "model_size": "tiny", **config},
        "max_delay_minutes": 60,
    }


def submit(client: TestClient, key: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/jobs", json=body, headers=bearer(key))
    assert response.status_code == 201, response.text
    return response.json()


def stored(client: TestClient, job_id: str) -> Job:
    with session_scope(client.app.state.session_factory) as session:
        job = session.get(Job, job_id)
        assert job is not None
        session.expunge(job)
        return job


def test_workers_register_the_bases_they_hold(client: TestClient) -> None:
    register(client, "plain")
    register(client, "models", ["v2", "v9-unknown"])
    workers = client.get("/v1/workers", headers=admin_headers())
    assert workers.status_code == 200, workers.text
    held = {w["host"]: w["bases"] for w in workers.json()}
    with session_scope(client.app.state.session_factory) as session:
        assert {w.host: w.bases for w in session.scalars(select(Worker))} == held
    # `none` needs no files, so every worker holds it; unknown names are not recorded.
    assert held == {"plain": ["none"], "models": ["none", "v2"]}


def test_a_job_is_claimed_only_by_a_worker_holding_its_base(
    client: TestClient, team_key: str
) -> None:
    dataset = upload_dataset(client, team_key)
    plain = register(client, "plain")
    holder = register(client, "holder", ["v2"])
    v2_job = submit(client, team_key, finetune(dataset, base="v2"))["id"]
    make_ready(client.app, v2_job)
    assert plain.claim() is None
    claimed = holder.claim()
    assert claimed is not None and claimed["job"]["id"] == v2_job
    assert claimed["job"]["base"] == "v2" and claimed["job"]["config"]["base"] == "v2"
    # A `none` job (the default) runs anywhere.
    none_job = submit(client, team_key, finetune(dataset))["id"]
    make_ready(client.app, none_job)
    claimed = plain.claim()
    assert claimed is not None and claimed["job"]["id"] == none_job
    assert claimed["job"]["base"] == "none"


def test_a_job_whose_base_no_live_worker_holds_waits_and_says_so(
    client: TestClient, team_key: str, clock: FakeClock
) -> None:
    dataset = upload_dataset(client, team_key)
    register(client, "plain")
    job = submit(client, team_key, finetune(dataset, base="v2"))
    assert job["state"] == "scheduled"
    assert "waiting for a worker holding base 'v2'" in job["state_reason"]
    assert job["planned_start"] is None
    # Jobs on a held base still plan normally beside it.
    other = submit(client, team_key, finetune(dataset))
    assert "waiting for a worker" not in other["state_reason"]
    assert other["planned_start"] is not None

    # A worker with the base joins: the next replan gives the job a window.
    register(client, "holder", ["v2"])
    run_tick(client.app, "replan")
    replanned = client.get(f"/v1/jobs/{job['id']}", headers=bearer(team_key)).json()
    assert replanned["planned_start"] is not None
    assert "waiting for a worker" not in replanned["state_reason"]

    # The holder goes silent (dead after three missed beats): the job waits again.
    clock.advance(minutes=10)
    register(client, "plain-again")
    run_tick(client.app, "replan")
    again = client.get(f"/v1/jobs/{job['id']}", headers=bearer(team_key)).json()
    assert again["state"] == "scheduled"
    assert "waiting for a worker holding base 'v2'" in again["state_reason"]


def test_config_base_replaces_paths_and_is_checked_at_submit(
    client: TestClient, team_key: str
) -> None:
    dataset = upload_dataset(client, team_key)
    for field, value in (("pretrained_s1", "/etc/passwd"), ("pretrained_s2", "/srv/s2G.pth")):
        body = finetune(dataset, **{field: value})
        answer = client.post("/v1/jobs", json=body, headers=bearer(team_key))
        assert answer.status_code == 422 and answer.json()["field"] == f"config.{field}"
    for bad in ("/models/s1.ckpt", "v3", "job:", "job:../x", ""):
        answer = client.post("/v1/jobs", json=finetune(dataset, base=bad), headers=bearer(team_key))
        assert answer.status_code == 422 and answer.json()["field"] == "config.base", bad

    missing = client.post(
        "/v1/jobs", json=finetune(dataset, base="job:01NOSUCHJOB"), headers=bearer(team_key)
    )
    assert missing.status_code == 422 and missing.json()["field"] == "config.base"


def test_job_base_continues_a_succeeded_job_of_the_same_team_only(
    client: TestClient, team_key: str
) -> None:
    dataset = upload_dataset(client, team_key)
    parent = submit(client, team_key, finetune(dataset, base="v2", lora_rank=8))["id"]
    child_body = finetune(dataset, base=f"job:{parent}", lora_rank=8)

    running = client.post("/v1/jobs", json=child_body, headers=bearer(team_key))
    assert running.status_code == 422 and running.json()["field"] == "config.base"
    assert "only a succeeded job" in running.json()["detail"]

    with session_scope(client.app.state.session_factory) as session:
        session.execute(update(Job).where(Job.id == parent).values(state="succeeded"))

    changed = client.post(
        "/v1/jobs",
        json=finetune(dataset, base=f"job:{parent}", lora_rank=16),
        headers=bearer(team_key),
    )
    assert changed.status_code == 422 and "lora_rank" in changed.json()["detail"]
    more_stages = client.post(
        "/v1/jobs",
        json=finetune(dataset, base=f"job:{parent}", lora_rank=8, stage="both"),
        headers=bearer(team_key),
    )
    assert more_stages.status_code == 422 and "s2" in more_stages.json()["detail"]

    child = submit(client, team_key, child_body)
    assert child["config"]["base"] == f"job:{parent}"
    # It runs on its parent's base: only workers holding v2 may claim it.
    assert stored(client, child["id"]).base == "v2"

    # Another team cannot name it, and learns nothing about it.
    other = client.post("/v1/teams", json={"name": "beta"}, headers=admin_headers())
    other_key = other.json()["api_key"]
    other_dataset = upload_dataset(client, other_key)
    foreign = client.post(
        "/v1/jobs",
        json=finetune(other_dataset, base=f"job:{parent}", lora_rank=8),
        headers=bearer(other_key),
    )
    assert foreign.status_code == 422 and foreign.json()["field"] == "config.base"
    assert foreign.json()["detail"] == missing_detail(parent)


def missing_detail(job_id: str) -> str:
    return f"config.base: no fine-tune job '{job_id}' in this team"


def test_energy_report_says_which_features_a_job_trains_on(
    client: TestClient, team_key: str
) -> None:
    dataset = upload_dataset(client, team_key)
    register(client, "holder", ["v2"])
    for base, path in (("none", "stand-in"), ("v2", "upstream")):
        job = submit(client, team_key, finetune(dataset, base=base))
        report = client.get(f"/v1/jobs/{job['id']}/energy", headers=bearer(team_key)).json()
        assert report["model"]["base"] == base
        assert report["model"]["features"]["path"] == path


def test_only_a_worker_running_the_continuation_may_fetch_the_earlier_result(
    client: TestClient, team_key: str, clock: FakeClock
) -> None:
    from support.fleet_helpers import energy_report

    dataset = upload_dataset(client, team_key)
    first, second, bystander = (register(client, host, ["v2"]) for host in ("a", "b", "c"))
    parent = submit(client, team_key, finetune(dataset, base="v2"))["id"]
    make_ready(client.app, parent)
    assert first.claim() is not None
    adapter = b"adapter weights"
    assert first.upload(parent, "s1_lora.safetensors", adapter).status_code in (200, 201)
    report = energy_report(1, clock.now, 10.0, 100.0)
    assert first.job_call(parent, "complete", energy=report).status_code == 200

    child = submit(client, team_key, finetune(dataset, base=f"job:{parent}"))["id"]
    url = f"/v1/jobs/{parent}/artifacts/s1_lora.safetensors"
    # Before anyone runs the continuation, a worker cannot read the team's results.
    assert client.get(url, headers=second.headers).status_code == 404
    make_ready(client.app, child)
    claimed = second.claim()
    assert claimed is not None and claimed["job"]["id"] == child
    fetched = client.get(url, headers=second.headers)
    assert fetched.status_code == 200 and fetched.content == adapter
    assert client.get(url, headers=bystander.headers).status_code == 404
