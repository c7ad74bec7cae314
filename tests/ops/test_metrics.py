"""`/metrics`: parsed with prometheus_client's own parser, figures checked against the API."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from support.helpers import ADMIN_TOKEN, WORKER_TOKEN, FakeClock, admin_headers, bearer, burn_in_job

from scheduler.maintenance import run_tick
from scheduler.metrics import bucket_counts
from scheduler.settings import Settings

METRICS_TOKEN = "test-metrics-token-0123456789abcdef"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """With a metrics token, so scrapes include the team-labelled families."""
    return Settings(
        database_url=database_url,
        data_dir=tmp_path / "data",
        admin_token=ADMIN_TOKEN,
        worker_token=WORKER_TOKEN,
        metrics_token=METRICS_TOKEN,
    )


def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape with the metrics token, keyed by name and sorted labels."""
    response = client.get("/metrics", headers=bearer(METRICS_TOKEN))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def submit(client: TestClient, key: str, **overrides: object) -> dict[str, object]:
    response = client.post("/v1/jobs", json=burn_in_job(**overrides), headers=bearer(key))
    assert response.status_code == 201, response.text
    return response.json()


def test_jobs_by_state_follow_submissions(client: TestClient, team_key: str) -> None:
    before = scrape(client)
    assert before[("greenwindow_jobs", (("state", "scheduled"),))] == 0
    submitted = [submit(client, team_key) for _ in range(3)]
    submit(client, team_key, max_delay_minutes=1)
    client.post(f"/v1/jobs/{submitted[0]['id']}/cancel", headers=bearer(team_key))

    after = scrape(client)
    jobs = client.get("/v1/jobs", headers=bearer(team_key)).json()["items"]
    for state in ("held", "scheduled", "ready", "running", "cancelled", "succeeded"):
        expected = sum(1 for job in jobs if job["state"] == state)
        assert after[("greenwindow_jobs", (("state", state),))] == expected, state
    assert after[("greenwindow_jobs", (("state", "cancelled"),))] == 1
    assert after[("greenwindow_jobs", (("state", "ready"),))] == 1

    waiting_saving = sum(j["expected_saving_kg_co2e"] for j in jobs if j["state"] != "cancelled")
    assert after[("greenwindow_planned_saving_kg_co2e", ())] == pytest.approx(waiting_saving)
    assert after[("greenwindow_planned_saving_kg_co2e", ())] > 0


def test_no_secret_appears_and_labels_are_bounded(client: TestClient, team_key: str) -> None:
    job = submit(client, team_key)
    registered = client.post(
        "/v1/workers/register",
        json={"host": "h", "zone": "ES", "gpus": [], "cpu_only": True},
        headers=bearer(WORKER_TOKEN),
    ).json()
    body = client.get("/metrics", headers=bearer(METRICS_TOKEN)).text
    for secret in (team_key, ADMIN_TOKEN, WORKER_TOKEN, registered["token"]):
        assert secret not in body
    # Job ids are unbounded: they never become labels.
    assert str(job["id"]) not in body
    label_names = {
        name
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        for name in sample.labels
    }
    assert label_names <= {"state", "team", "zone", "source", "worker", "gpu", "tick", "part", "le"}


def test_energy_budget_workers_and_queue_wait(
    client: TestClient, team_key: str, clock: FakeClock
) -> None:
    client.put(
        "/v1/teams/alpha/budget",
        json={"period": "month", "limit_kg_co2e": 2.0},
        headers=admin_headers(),
    )
    job = submit(client, team_key, max_delay_minutes=1)
    registered = client.post(
        "/v1/workers/register",
        json={
            "host": "gpu-01",
            "zone": "ES",
            "cpu_only": False,
            "gpus": [{"index": 0, "uuid": "GPU-a"}, {"index": 1, "uuid": "GPU-b"}],
        },
        headers=bearer(WORKER_TOKEN),
    ).json()
    worker, headers = registered["worker_id"], bearer(registered["token"])
    clock.advance(seconds=40)
    claimed = client.post(f"/v1/workers/{worker}/claim", json={}, headers=headers).json()
    fence = {"attempt": claimed["attempt"], "lease_token": claimed["lease_token"]}
    started = clock.now
    clock.advance(seconds=60)
    report = {
        "attempt": 1,
        "started_at": started.isoformat(),
        "ended_at": clock.now.isoformat(),
        "duration_s": 60.0,
        "gpus": [],
        "gpu_kwh": 0.004,
        "cpu_kwh": 0.0008,
        "ram_kwh": 0.0002,
        "methods": {"gpu": "measured", "cpu": "estimated", "ram": "estimated"},
        "timeline": [],
        "measurement_ok": True,
        "errors": [],
    }
    done = client.post(
        f"/v1/workers/{worker}/jobs/{job['id']}/complete",
        headers=headers,
        json={**fence, "energy": report, "result": {}},
    )
    assert done.status_code == 200, done.text
    # The fleet heartbeat carries the power figures; it also keeps the worker alive.
    beat = client.post(
        f"/v1/workers/{worker}/heartbeat",
        headers=headers,
        json={"gpu_watts": [{"uuid": "GPU-a", "watts": 200.0}, {"uuid": "GPU-b", "watts": 50.5}]},
    )
    assert beat.status_code == 200, beat.text

    samples = scrape(client)
    finished = client.get(f"/v1/jobs/{job['id']}", headers=bearer(team_key)).json()
    team = (("team", "alpha"),)
    assert samples[("greenwindow_energy_kwh_total", team)] == pytest.approx(finished["actual_kwh"])
    assert samples[("greenwindow_emissions_kg_co2e_total", team)] == pytest.approx(
        finished["actual_kg_co2e"]
    )
    budget = client.get("/v1/teams/alpha/budget", headers=bearer(team_key)).json()
    used = (budget["actual_kg_co2e"] + budget["committed_kg_co2e"]) / budget["limit_kg_co2e"]
    assert samples[("greenwindow_budget_used_ratio", team)] == pytest.approx(used)
    assert samples[("greenwindow_workers_alive", ())] == 1
    assert samples[("greenwindow_worker_gpu_watts", (("worker", worker),))] == 250.5
    # Submitted at 09:00, claimed 40 s later.
    assert samples[("greenwindow_job_queue_wait_seconds_count", ())] == 1
    assert samples[("greenwindow_job_queue_wait_seconds_sum", ())] == pytest.approx(40.0)
    assert samples[("greenwindow_job_queue_wait_seconds_bucket", (("le", "60"),))] == 1

    # Three missed heartbeats later the worker no longer counts, nor does its power.
    clock.advance(seconds=3 * registered["heartbeat_seconds"] + 1)
    later = scrape(client)
    assert later[("greenwindow_workers_alive", ())] == 0
    assert ("greenwindow_worker_gpu_watts", (("worker", worker),)) not in later


def test_forecast_age_after_a_refresh(client: TestClient, team_key: str, clock: FakeClock) -> None:
    submit(client, team_key)
    before = scrape(client)
    assert not any(name == "greenwindow_forecast_age_seconds" for name, _ in before)
    assert run_tick(client.app, "refresh_forecasts")  # type: ignore[arg-type]
    refreshed_at = clock.now
    clock.advance(minutes=10)
    samples = scrape(client)
    ages = {
        dict(labels)["zone"]: value
        for (name, labels), value in samples.items()
        if name == "greenwindow_forecast_age_seconds"
    }
    assert samples[("greenwindow_metrics_part_failed", (("part", "forecasts"),))] == 0
    assert set(ages) == {"ES"}
    # At least the ten minutes since the refresh (a provider may stamp its batch earlier).
    assert ages["ES"] >= (clock.now - refreshed_at).total_seconds()


def test_tick_durations_are_reported(client: TestClient) -> None:
    run_tick(client.app, "readmit_held")  # type: ignore[arg-type]
    samples = scrape(client)
    assert samples[("greenwindow_tick_duration_seconds", (("tick", "readmit_held"),))] >= 0


def test_a_missing_table_drops_only_its_metrics(client: TestClient, team_key: str) -> None:
    submit(client, team_key)
    with client.app.state.engine.begin() as connection:  # type: ignore[attr-defined]
        connection.execute(text("DROP TABLE workers"))
    samples = scrape(client)
    assert samples[("greenwindow_metrics_part_failed", (("part", "workers"),))] == 1
    assert ("greenwindow_workers_alive", ()) not in samples
    assert (
        samples[("greenwindow_jobs", (("state", "scheduled"),))]
        + samples[("greenwindow_jobs", (("state", "ready"),))]
        == 1
    )


def test_histogram_buckets_are_cumulative() -> None:
    assert bucket_counts([5.0, 60.0, 61.0, 1e6], [60.0, 300.0]) == [
        ("60", 2.0),
        ("300", 3.0),
        ("+Inf", 4.0),
    ]
    assert bucket_counts([], [1.5]) == [("1.5", 0.0), ("+Inf", 0.0)]
    assert timedelta(hours=24).total_seconds() == 86400
