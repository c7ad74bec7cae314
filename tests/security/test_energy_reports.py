"""Workers' energy reports are range-checked before they are accounted.

Attacks covered here: a worker (compromised, or with a broken meter) reporting NaN,
infinite, negative or physically impossible energy (more than the job's GPUs at their power
limit, or the host at its cap, over the attempt's wall time as the service measured it).
Each is a 422 naming the field, the job keeps its lease (nothing accepted is lost), and
the team's budget and the dashboards' JSON keep answering.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.helpers import FakeClock, admin_headers, bearer, burn_in_job
from support.world import make_ready, register_worker

from scheduler.db.session import session_scope
from scheduler.deps import Principal
from scheduler.web import data


def report(**numbers: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "attempt": 1,
        "started_at": "2026-03-02T09:00:00Z",
        "ended_at": "2026-03-02T09:10:00Z",
        "duration_s": 600.0,
        "gpus": [{"index": 0, "uuid": "GPU-x", "kwh": 0.02}],
        "gpu_kwh": 0.02,
        "cpu_kwh": 0.001,
        "ram_kwh": 0.0005,
        "methods": {"gpu": "measured", "cpu": "estimated", "ram": "estimated"},
        "timeline": [{"t": "2026-03-02T09:00:00Z", "watts": 150.0}],
        "measurement_ok": True,
        "errors": [],
    }
    body.update(numbers)
    return body


@pytest.fixture
def running(sqlite_client: TestClient) -> dict[str, Any]:
    """A team's job claimed by a worker ten minutes ago (by the service's clock)."""
    team = sqlite_client.post("/v1/teams", json={"name": "alpha"}, headers=admin_headers())
    key = team.json()["api_key"]
    sqlite_client.put(
        "/v1/teams/alpha/budget",
        json={"period": "month", "limit_kg_co2e": 10.0},
        headers=admin_headers(),
    )
    job = sqlite_client.post("/v1/jobs", json=burn_in_job(), headers=bearer(key)).json()["id"]
    make_ready(sqlite_client, job)
    worker_id, token = register_worker(sqlite_client)
    claim = sqlite_client.post(f"/v1/workers/{worker_id}/claim", json={}, headers=bearer(token))
    assert claim.status_code == 200, claim.text
    clock: FakeClock = sqlite_client.app.state.clock  # type: ignore[attr-defined]
    clock.advance(minutes=10)
    return {
        "key": key,
        "job": job,
        "worker_id": worker_id,
        "token": token,
        "lease": {k: claim.json()[k] for k in ("attempt", "lease_token")},
    }


def call(client: TestClient, w: dict[str, Any], verb: str, content: str) -> Any:
    # Sent as raw text: NaN and Infinity are what Python's json writes, and what must fail.
    return client.post(
        f"/v1/workers/{w['worker_id']}/jobs/{w['job']}/{verb}",
        content=content,
        headers={**bearer(w["token"]), "content-type": "application/json"},
    )


def body(w: dict[str, Any], energy: dict[str, Any]) -> str:
    return json.dumps({**w["lease"], "energy": energy})


@pytest.mark.parametrize(
    ("energy", "field"),
    [
        (report(gpu_kwh=1e308), "energy.gpu_kwh"),
        (report(gpu_kwh=float("inf")), "energy.gpu_kwh"),
        (report(cpu_kwh=float("nan")), "energy.cpu_kwh"),
        (report(ram_kwh=-0.5), "energy.ram_kwh"),
        (report(duration_s=float("inf")), "energy.duration_s"),
        (report(gpus=[{"index": 0, "kwh": -1}]), "energy.gpus.0.kwh"),
        (
            report(timeline=[{"t": "2026-03-02T09:00:00Z", "watts": float("inf")}]),
            "energy.timeline.0.watts",
        ),
        # 10 minutes of one GPU at 1.5 kW, with the margin, is well under 1 kWh.
        (report(gpu_kwh=1.0), "energy.gpu_kwh"),
        (report(gpus=[{"index": 0, "kwh": 0.9}]), "energy.gpus.0.kwh"),
        (report(cpu_kwh=2.0), "energy.cpu_kwh"),
    ],
)
def test_impossible_reports_are_refused_naming_the_field(
    sqlite_client: TestClient, running: dict[str, Any], energy: dict[str, Any], field: str
) -> None:
    for verb in ("complete", "fail", "release"):
        refused = call(sqlite_client, running, verb, body(running, energy))
        assert refused.status_code == 422, (verb, refused.text)
        assert refused.json()["field"] == field, (verb, refused.json())
    # Nothing was accepted: the job still runs under its lease, and a true report is taken.
    job = sqlite_client.get(f"/v1/jobs/{running['job']}", headers=bearer(running["key"])).json()
    assert job["state"] == "running"
    done = call(sqlite_client, running, "complete", body(running, report()))
    assert done.status_code == 200, done.text


def test_heartbeats_carry_only_possible_energy(
    sqlite_client: TestClient, running: dict[str, Any]
) -> None:
    for energy, field in (
        ({"kwh_so_far": 1e308}, "energy.kwh_so_far"),
        ({"kwh_so_far": -1}, "energy.kwh_so_far"),
        ({"kwh_so_far": 0.01, "watts": float("inf")}, "energy.watts"),
    ):
        refused = call(sqlite_client, running, "heartbeat", body(running, energy))
        assert refused.status_code == 422 and refused.json()["field"] == field, refused.text
    fine = call(sqlite_client, running, "heartbeat", body(running, {"kwh_so_far": 0.01}))
    assert fine.status_code == 200, fine.text


def test_the_largest_possible_report_keeps_budgets_and_dashboards_answering(
    sqlite_client: TestClient, running: dict[str, Any]
) -> None:
    # Just under the cap: a GPU at 1.5 kW for the whole 10 minutes plus the margin.
    most = report(gpu_kwh=0.3, gpus=[{"index": 0, "kwh": 0.3}], cpu_kwh=0.5, ram_kwh=0.5)
    done = call(sqlite_client, running, "complete", body(running, most))
    assert done.status_code == 200, done.text
    for headers in (bearer(running["key"]), admin_headers()):
        for path in (
            "/v1/teams/alpha/budget",
            "/v1/teams/alpha/usage",
            f"/v1/jobs/{running['job']}/energy",
        ):
            answer = sqlite_client.get(path, headers=headers)
            assert answer.status_code == 200, (path, answer.text)
    app = sqlite_client.app
    with session_scope(app.state.session_factory) as session:  # type: ignore[attr-defined]
        view = data.budget_overview(session, Principal(kind="admin"), now=app.state.clock())  # type: ignore[attr-defined]
        json.dumps(view, allow_nan=False)  # what the dashboard's JSON response needs
