"""Job submission, reads, listing, cancellation and input validation over HTTP."""

from __future__ import annotations

from fastapi.testclient import TestClient
from support.helpers import FakeClock, admin_headers, bearer, burn_in_job, tiny_dataset_zip


def test_submit_read_and_events(client: TestClient, team_key: str) -> None:
    response = client.post("/v1/jobs", json=burn_in_job(), headers=bearer(team_key))
    assert response.status_code == 201, response.text
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    for field in (
        "id",
        "team",
        "name",
        "state",
        "state_reason",
        "submitted_at",
        "deadline",
        "planned_start",
        "planned_end",
        "estimated_kwh",
        "estimated_kg_co2e",
        "attempt",
    ):
        assert field in job
    assert job["team"] == "alpha" and job["state"] in {"scheduled", "ready"}
    assert job["state_reason"] and job["estimated_kwh"] > 0 and job["estimated_kg_co2e"] > 0

    read = client.get(f"/v1/jobs/{job['id']}", headers=bearer(team_key))
    assert read.status_code == 200 and read.json()["id"] == job["id"]
    events = client.get(f"/v1/jobs/{job['id']}/events", headers=bearer(team_key)).json()
    assert events[0]["to_state"] == job["state"] and events[0]["reason"]


def test_finetune_job_validates_its_dataset_and_config(client: TestClient, team_key: str) -> None:
    body = {
        "name": "voice-a",
        "dataset": {"id": "missing"},
        "config": {"stage": "s1", "max_steps": 40, "lora_rank": 8, "model_size": "tiny"},
        "deadline": "2026-03-03T09:00:00Z",
        "interruptible": True,
        "objective": "balanced",
    }
    unknown = client.post("/v1/jobs", json=body, headers=bearer(team_key))
    assert unknown.status_code == 422 and unknown.json()["field"] == "dataset.id"
    uploaded = client.post(
        "/v1/datasets",
        content=tiny_dataset_zip(),
        headers={**bearer(team_key), "content-type": "application/zip"},
    )
    assert uploaded.status_code == 201, uploaded.text
    body["dataset"] = {"id": uploaded.json()["id"]}
    ok = client.post("/v1/jobs", json=body, headers=bearer(team_key))
    assert ok.status_code == 201, ok.text
    assert ok.json()["config"]["lora_rank"] == 8 and ok.json()["estimated_kwh"] > 0
    bad = client.post(
        "/v1/jobs", json={**body, "config": {"stage": "s3"}}, headers=bearer(team_key)
    )
    assert bad.status_code == 422 and "stage" in bad.json()["detail"]
    no_dataset = client.post(
        "/v1/jobs", json={k: v for k, v in body.items() if k != "dataset"}, headers=bearer(team_key)
    )
    assert no_dataset.status_code == 422 and "dataset" in no_dataset.json()["detail"]


def test_bad_input_is_4xx_naming_the_field(client: TestClient, team_key: str) -> None:
    headers = bearer(team_key)
    cases = {
        "gpus": burn_in_job(gpus=9),
        "objective": burn_in_job(objective="cheapest"),
        "deadline": burn_in_job(max_delay_minutes=None, deadline="2020-01-01T00:00:00Z"),
        "priority": burn_in_job(priority="high"),
        "surprise": burn_in_job(surprise=1),
    }
    for field, body in cases.items():
        response = client.post("/v1/jobs", json=body, headers=headers)
        assert response.status_code == 422, (field, response.text)
        assert field in response.json()["detail"], (field, response.json())
    naive = client.post(
        "/v1/jobs",
        json=burn_in_job(max_delay_minutes=None, deadline="2026-03-05T00:00:00"),
        headers=headers,
    )
    assert naive.status_code == 422 and naive.json()["field"] == "deadline"
    malformed = client.post(
        "/v1/jobs", content=b'{"name": ', headers={**headers, "content-type": "application/json"}
    )
    assert malformed.status_code == 400 and "malformed JSON" in malformed.json()["detail"]
    huge = client.post("/v1/jobs", json=burn_in_job(name="x" * 2_000_000), headers=headers)
    assert huge.status_code == 413


def test_idempotency_key_returns_the_same_job(client: TestClient, team_key: str) -> None:
    headers = {**bearer(team_key), "Idempotency-Key": "retry-1"}
    first = client.post("/v1/jobs", json=burn_in_job(), headers=headers)
    again = client.post("/v1/jobs", json=burn_in_job(), headers=headers)
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    other = client.post("/v1/jobs", json=burn_in_job(name="other"), headers=headers)
    assert other.status_code == 409 and other.json()["field"] == "Idempotency-Key"
    listed = client.get("/v1/jobs", headers=bearer(team_key)).json()["items"]
    assert len(listed) == 1


def test_cross_team_access_is_404_and_admin_sees_all(client: TestClient, team_key: str) -> None:
    other_key = client.post("/v1/teams", json={"name": "beta"}, headers=admin_headers()).json()[
        "api_key"
    ]
    job = client.post("/v1/jobs", json=burn_in_job(), headers=bearer(team_key)).json()
    for method, path in (
        ("GET", f"/v1/jobs/{job['id']}"),
        ("POST", f"/v1/jobs/{job['id']}/cancel"),
        ("GET", f"/v1/jobs/{job['id']}/events"),
    ):
        assert client.request(method, path, headers=bearer(other_key)).status_code == 404
    assert client.get("/v1/jobs", headers=bearer(other_key)).json()["items"] == []
    assert len(client.get("/v1/jobs", headers=admin_headers()).json()["items"]) == 1
    assert client.get("/v1/jobs/NOPE", headers=bearer(team_key)).status_code == 404


def test_list_paginates_and_filters(client: TestClient, team_key: str, clock: FakeClock) -> None:
    ids = []
    for i in range(5):
        clock.advance(seconds=1)
        ids.append(
            client.post(
                "/v1/jobs", json=burn_in_job(name=f"j{i}"), headers=bearer(team_key)
            ).json()["id"]
        )
    client.post(f"/v1/jobs/{ids[0]}/cancel", headers=bearer(team_key))
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/jobs", params=params, headers=bearer(team_key)).json()
        seen += [j["id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    cancelled = client.get("/v1/jobs", params={"state": "cancelled"}, headers=bearer(team_key))
    assert [j["id"] for j in cancelled.json()["items"]] == [ids[0]]
    bad = client.get("/v1/jobs", params={"state": "sleeping"}, headers=bearer(team_key))
    assert bad.status_code == 422 and bad.json()["field"] == "state"


def test_cancel_waiting_job_and_cancel_twice(client: TestClient, team_key: str) -> None:
    job = client.post("/v1/jobs", json=burn_in_job(), headers=bearer(team_key)).json()
    cancelled = client.post(f"/v1/jobs/{job['id']}/cancel", headers=bearer(team_key))
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    again = client.post(f"/v1/jobs/{job['id']}/cancel", headers=bearer(team_key))
    assert again.status_code == 409
    states = [
        e["to_state"]
        for e in client.get(f"/v1/jobs/{job['id']}/events", headers=bearer(team_key)).json()
    ]
    assert states[-1] == "cancelled"


def test_worker_token_cannot_use_user_endpoints(client: TestClient) -> None:
    from support.helpers import WORKER_TOKEN

    assert client.get("/v1/jobs", headers=bearer(WORKER_TOKEN)).status_code == 403


def test_healthz(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json()["database"] == "ok"
