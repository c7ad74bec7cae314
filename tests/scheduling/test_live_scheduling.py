"""Live scheduling against the bundled trace: deferral, readiness, fallbacks, tariffs, preview."""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi.testclient import TestClient
from support.helpers import FakeClock, admin_headers, bearer, burn_in_job

from scheduler.carbon.providers.base import ProviderUnavailable
from scheduler.carbon.series import IntensitySeries
from scheduler.maintenance import run_tick


class DownProvider:
    """A provider double that is always down, to exercise the fallbacks."""

    name = "electricitymaps"
    signal_type = "average"

    def current(self, zone: str) -> tuple[datetime, float]:
        raise ProviderUnavailable("electricitymaps: connection refused")

    def history(self, zone: str, start: datetime, end: datetime) -> IntensitySeries:
        raise ProviderUnavailable("electricitymaps: connection refused")

    def forecast(self, zone: str, hours: float = 48) -> IntensitySeries:
        raise ProviderUnavailable("electricitymaps: connection refused")


def _hour_job(**overrides: object) -> dict[str, object]:
    # ~1 h of burn-in on the estimate (sleeps dominate), so windows are visible on the trace.
    return burn_in_job(config={"steps": 3590, "size": 8, "step_sleep_s": 1.0}, **overrides)


def test_forecast_comes_from_the_bundled_trace(client: TestClient, team_key: str) -> None:
    forecast = client.get(
        "/v1/zones/ES/forecast", params={"hours": 48, "history_hours": 24}, headers=bearer(team_key)
    ).json()
    assert forecast["origin"] == "provider" and forecast["source"] == "trace:ES"
    assert forecast["signal_type"] == "average" and forecast["step_minutes"] == 60
    assert 48 <= len(forecast["points"]) <= 50 and len(forecast["history"]) >= 23
    assert all(0 < p["g_per_kwh"] < 1000 for p in forecast["points"])


def test_a_job_with_slack_is_not_planned_dirtier_than_running_now(
    client: TestClient, team_key: str
) -> None:
    job = client.post(
        "/v1/jobs", json=_hour_job(max_delay_minutes=24 * 60), headers=bearer(team_key)
    ).json()
    start, end = (
        datetime.fromisoformat(job["planned_start"]),
        datetime.fromisoformat(job["planned_end"]),
    )
    assert (
        datetime.fromisoformat(job["submitted_at"])
        <= start
        < end
        <= datetime.fromisoformat(job["deadline"])
    )
    assert job["estimated_kg_co2e"] <= job["estimated_kg_co2e"] + job["expected_saving_kg_co2e"]
    assert job["state_reason"]
    if job["expected_saving_kg_co2e"] > 0:
        assert job["state"] == "scheduled" and "deferred" in job["state_reason"]


def test_replan_tick_readies_a_job_when_its_window_opens(
    client: TestClient, team_key: str, clock: FakeClock
) -> None:
    job = client.post(
        "/v1/jobs", json=_hour_job(max_delay_minutes=24 * 60), headers=bearer(team_key)
    ).json()
    clock.now = datetime.fromisoformat(job["planned_start"]) + timedelta(minutes=1)
    run_tick(client.app, "replan")
    after = client.get(f"/v1/jobs/{job['id']}", headers=bearer(team_key)).json()
    assert after["state"] == "ready", after["state_reason"]


def test_tight_deadline_runs_now(client: TestClient, team_key: str) -> None:
    job = client.post(
        "/v1/jobs",
        json=burn_in_job(config={"steps": 10}, max_delay_minutes=20),
        headers=bearer(team_key),
    ).json()
    assert job["state"] == "ready" and job["state_reason"].startswith("runs now")


def test_capacity_is_shared_between_queued_jobs(client: TestClient, team_key: str) -> None:
    # Default capacity is 1 GPU: two one-hour jobs with the same window cannot overlap.
    jobs = [
        client.post(
            "/v1/jobs", json=_hour_job(max_delay_minutes=6 * 60), headers=bearer(team_key)
        ).json()
        for _ in range(2)
    ]
    (a0, a1), (b0, b1) = (
        (datetime.fromisoformat(j["planned_start"]), datetime.fromisoformat(j["planned_end"]))
        for j in jobs
    )
    assert a1 <= b0 or b1 <= a0


def test_provider_down_degrades_to_fallbacks_and_says_why(
    client: TestClient, team_key: str, clock: FakeClock
) -> None:
    scheduling = client.app.state.scheduling
    trace = scheduling.provider
    scheduling.provider = DownProvider()
    first = client.get("/v1/zones/ES/forecast", headers=bearer(team_key)).json()
    assert first["origin"] == "constant" and "no forecast fetched yet" in first["reason"]

    run_tick(client.app, "refresh_forecasts")
    failed = client.get("/v1/zones/ES/forecast", headers=bearer(team_key)).json()
    assert failed["origin"] == "constant" and "connection refused" in failed["reason"]
    submitted = client.post("/v1/jobs", json=_hour_job(), headers=bearer(team_key))
    assert submitted.status_code == 201 and "[signal:" in submitted.json()["state_reason"]

    # With stored history (refreshed earlier from a working provider) the forecaster serves.
    from scheduler.carbon import service as carbon
    from scheduler.db.session import session_scope

    with session_scope(client.app.state.session_factory) as session:
        carbon.refresh_zone(session, trace, "ES", now=clock.now)
        for _ in range(3):
            clock.advance(hours=24)
            trace_history = trace.history("ES", clock.now - timedelta(days=1), clock.now)
            carbon._store(session, "ES", "history", trace_history, clock.now)
    clock.advance(hours=80)  # the stored forecast no longer covers now
    run_tick(client.app, "refresh_forecasts")  # and the provider is still down
    recovered = client.get("/v1/zones/ES/forecast", headers=bearer(team_key)).json()
    assert recovered["origin"] == "forecaster", recovered
    assert "connection refused" in recovered["reason"]


def test_tariff_put_get_and_validation(client: TestClient, team_key: str) -> None:
    builtin = client.get("/v1/zones/ES/tariff", headers=bearer(team_key))
    assert builtin.status_code == 200 and builtin.json()["timezone"] == "Europe/Madrid"
    assert client.get("/v1/zones/XX/tariff", headers=bearer(team_key)).status_code == 404
    schedule = {
        "timezone": "America/Los_Angeles",
        "default_price": 0.30,
        "windows": [
            {
                "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                "start": "00:00",
                "end": "06:00",
                "price": 0.12,
            }
        ],
    }
    assert (
        client.put(
            "/v1/zones/US-CAL-CISO/tariff", json=schedule, headers=bearer(team_key)
        ).status_code
        == 403
    )
    put = client.put("/v1/zones/US-CAL-CISO/tariff", json=schedule, headers=admin_headers())
    assert put.status_code == 200
    got = client.get("/v1/zones/US-CAL-CISO/tariff", headers=bearer(team_key)).json()
    assert got["windows"][0]["price"] == 0.12
    bad = client.put(
        "/v1/zones/XX/tariff",
        json={**schedule, "timezone": "Mars/Olympus"},
        headers=admin_headers(),
    )
    assert bad.status_code == 422 and bad.json()["field"] == "timezone"


def test_plan_preview_creates_nothing(client: TestClient, team_key: str) -> None:
    preview = client.post(
        "/v1/plan/preview", json=_hour_job(max_delay_minutes=12 * 60), headers=bearer(team_key)
    )
    assert preview.status_code == 200, preview.text
    body = preview.json()
    assert body["estimated_kg_co2e"] > 0 and body["saving_kg_co2e"] >= 0
    assert body["run_now_kg_co2e"] >= body["estimated_kg_co2e"]
    assert client.get("/v1/jobs", headers=bearer(team_key)).json()["items"] == []


def test_estimates_learn_from_measured_jobs(client: TestClient, team_key: str) -> None:
    from support.helpers import tiny_dataset_zip

    from scheduler.db.session import session_scope
    from scheduler.jobs.models import Job

    dataset = client.post(
        "/v1/datasets",
        content=tiny_dataset_zip(),
        headers={**bearer(team_key), "content-type": "application/zip"},
    ).json()
    body = {
        "name": "v",
        "dataset": {"id": dataset["id"]},
        "config": {"stage": "s1", "max_steps": 100, "model_size": "tiny"},
        "max_delay_minutes": 600,
    }
    first = client.post("/v1/jobs", json=body, headers=bearer(team_key)).json()
    scheduling = client.app.state.scheduling
    with session_scope(client.app.state.session_factory) as session:
        job = session.get(Job, first["id"])
        for _ in range(5):
            scheduling.observe_measurement(
                session,
                job,
                duration_s=first["estimated_duration_s"] * 10,
                kwh=first["estimated_kwh"] * 10,
                gpu_model="A100",
            )
    second = client.post("/v1/jobs", json=body, headers=bearer(team_key)).json()
    assert second["estimated_kwh"] > 2 * first["estimated_kwh"]
    assert second["estimated_duration_s"] > 2 * first["estimated_duration_s"]
