"""The audit's hand computations, run through the real service: per-slot pricing with
provenance, restatements, failed measurements, lost workers and PUE (docs/carbon-accounting.md).

Each test runs on SQLite and PostgreSQL (the `client` fixture is database-parametrised).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from support.fleet_helpers import WorkerSession, energy_report, make_ready, register
from support.helpers import FakeClock, bearer, burn_in_job

from scheduler.budgets.models import LedgerEntry
from scheduler.carbon.models import IntensityPoint
from scheduler.db.session import session_scope
from scheduler.maintenance import run_tick

DAY = datetime(2026, 3, 2, tzinfo=UTC)


def at(hour: int, minute: int = 0) -> datetime:
    return DAY + timedelta(hours=hour, minutes=minute)


def store_points(
    client: TestClient,
    kind: str,
    start: datetime,
    end: datetime,
    g_per_kwh: float,
    *,
    generated_at: datetime,
    step: int = 15,
    source: str = "electricitymaps",
    provenance: str | None = None,
) -> None:
    """Store slots of one intensity value, as the refresh tick would."""
    with session_scope(client.app.state.session_factory) as session:
        moment = start
        while moment < end:
            session.add(
                IntensityPoint(
                    zone="ES",
                    kind=kind,
                    source=source,
                    signal_type="average",
                    generated_at=generated_at,
                    time=moment,
                    step_minutes=step,
                    g_per_kwh=g_per_kwh,
                    provenance=provenance,
                )
            )
            moment += timedelta(minutes=step)


def run_attempt(
    client: TestClient,
    team_key: str,
    clock: FakeClock,
    *,
    start: datetime,
    minutes: float,
    watts: float,
    change: dict[str, Any] | None = None,
) -> str:
    """Submit, claim at `start`, run `minutes` at constant `watts`, complete; the job id."""
    clock.now = start - timedelta(minutes=5)
    job_id = client.post("/v1/jobs", json=burn_in_job(), headers=bearer(team_key)).json()["id"]
    make_ready(client.app, job_id)
    worker = WorkerSession(client, register(client))
    clock.now = start
    worker.claim()
    clock.advance(minutes=minutes)
    report = energy_report(1, start, minutes * 60.0, watts)
    report.update(change or {})
    response = worker.job_call(job_id, "complete", energy=report)
    assert response.status_code == 200, response.text
    return job_id


def energy_of(client: TestClient, team_key: str, job_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/jobs/{job_id}/energy", headers=bearer(team_key))
    assert response.status_code == 200
    return response.json()


def ledger_of(client: TestClient, job_id: str) -> list[LedgerEntry]:
    with session_scope(client.app.state.session_factory) as session:
        entries = list(
            session.scalars(
                select(LedgerEntry).where(LedgerEntry.job_id == job_id).order_by(LedgerEntry.id)
            )
        )
        session.expunge_all()
    return entries


def seed_observed_then_forecast(client: TestClient) -> None:
    """Observed 100 g/kWh up to 14:00; the forecast made at 13:30 says 400 after that."""
    store_points(client, "history", at(10), at(14), 100.0, generated_at=at(14, 5))
    # An old forecast (never better than an observation) and one made after 14:00 (not known
    # when the slot began) must both be ignored.
    store_points(client, "forecast", at(9), at(16), 999.0, generated_at=at(9))
    store_points(client, "forecast", at(13, 30), at(16), 400.0, generated_at=at(13, 30))
    store_points(client, "forecast", at(14), at(16), 777.0, generated_at=at(14, 5))


def test_a_gap_in_observations_prices_only_the_gap_from_the_forecast(
    client: TestClient, team_key: str, clock: FakeClock
) -> None:
    # Audit example 1: 1 kW from 11:00 to 14:10 = 3 kWh at 100 + 1/6 kWh at 400 = 0.367 kg.
    # Before: the partial observation was discarded and the whole run priced from a fallback.
    seed_observed_then_forecast(client)
    job_id = run_attempt(client, team_key, clock, start=at(11), minutes=190, watts=1000.0)
    body = energy_of(client, team_key, job_id)
    assert body["kwh"]["total"] == pytest.approx(3 + 1 / 6)
    assert body["kg_co2e"] == pytest.approx(0.3 + 0.4 / 6)
    assert round(body["kg_co2e"], 3) == 0.367
    slots = body["attempts"][0]["slots"]
    labels = {(s["start"], s["provenance"], s["g_per_kwh"]) for s in slots}
    assert ("2026-03-02T14:00:00Z", "forecast", 400.0) in labels
    assert {s["provenance"] for s in slots if s["start"] < "2026-03-02T14:00"} == {"observed"}
    assert body["observed_share"] == pytest.approx(3 / (3 + 1 / 6))
    assert body["signal"]["provenance"] == pytest.approx(
        {"observed": 3 / (3 + 1 / 6), "forecast": (1 / 6) / (3 + 1 / 6)}
    )
    assert body["signal"]["basis"] == "lifecycle"
    assert body["signal"]["type"] == "average"
    assert body["signal"]["uses"]["budget_charge"] == "average"
    (charge,) = [e for e in ledger_of(client, job_id) if e.kind == "charge"]
    assert charge.kg_co2e == pytest.approx(0.3 + 0.4 / 6)
    assert "basis=lifecycle" in charge.note and "kind=average" in charge.note
    assert "observed 95%" in charge.note and "forecast 5%" in charge.note


def test_restatement_reprices_forecast_slots_once_observed_and_books_an_adjustment(
    client: TestClient, team_key: str, clock: FakeClock
) -> None:
    seed_observed_then_forecast(client)
    job_id = run_attempt(client, team_key, clock, start=at(11), minutes=190, watts=1000.0)
    before = energy_of(client, team_key, job_id)["kg_co2e"]
    # Nothing new observed yet: the tick restates nothing.
    clock.now = at(14, 30)
    assert run_tick(client.app, "restate_emissions") == 0
    # The 14:00 slot is observed at 130 g/kWh.
    store_points(client, "history", at(14), at(14, 15), 130.0, generated_at=at(14, 31))
    clock.now = at(14, 45)
    assert run_tick(client.app, "restate_emissions") == 1
    assert run_tick(client.app, "restate_emissions") == 0  # already observed: idempotent
    body = energy_of(client, team_key, job_id)
    after = 0.3 + 0.13 / 6
    assert body["kg_co2e"] == pytest.approx(after)
    assert body["observed_share"] == pytest.approx(1.0)
    (restatement,) = body["restatements"]
    assert restatement["kg_before"] == pytest.approx(before)
    assert restatement["delta_kg_co2e"] == pytest.approx(after - before)
    (slot,) = restatement["slots"]
    assert slot["before"] == {"g_per_kwh": 400.0, "provenance": "forecast"}
    assert slot["after"] == {"g_per_kwh": 130.0, "provenance": "observed"}
    entries = ledger_of(client, job_id)
    (adjust,) = [e for e in entries if e.kind == "adjust"]
    assert adjust.kg_co2e == pytest.approx(after - before)  # signed: the figure went down
    # The original charge is untouched: history is adjusted, never rewritten.
    (charge,) = [e for e in entries if e.kind == "charge"]
    assert charge.kg_co2e == pytest.approx(before)
    job = client.get(f"/v1/jobs/{job_id}", headers=bearer(team_key)).json()
    assert job["actual_kg_co2e"] == pytest.approx(after)


def test_no_restatement_after_the_window(
    client: TestClient, team_key: str, clock: FakeClock
) -> None:
    seed_observed_then_forecast(client)
    job_id = run_attempt(client, team_key, clock, start=at(11), minutes=190, watts=1000.0)
    store_points(client, "history", at(14), at(14, 15), 130.0, generated_at=at(14, 31))
    clock.now = at(14, 10) + timedelta(days=8)
    assert run_tick(client.app, "restate_emissions") == 0
    assert energy_of(client, team_key, job_id)["restatements"] == []


def test_a_failed_gpu_read_is_charged_as_an_estimate_not_zero(
    client: TestClient, team_key: str, clock: FakeClock
) -> None:
    # Audit example 2: no energy counter and every power read failed. The worker reports
    # gpu_kwh null; the service charges the GPU's enforced power limit over the attempt.
    store_points(client, "history", at(10), at(13), 200.0, generated_at=at(13))
    job_id = run_attempt(
        client,
        team_key,
        clock,
        start=at(11),
        minutes=60,
        watts=100.0,
        change={
            "gpu_kwh": None,
            "gpus": [
                {
                    "index": 0,
                    "uuid": "GPU-x",
                    "name": "T4",
                    "kwh": None,
                    "method": "nvml_power_integration",
                    "power_limit_w": 300.0,
                }
            ],
            "methods": {"gpu": "failed", "cpu": "estimated", "ram": "estimated"},
            "measurement_ok": False,
        },
    )
    body = energy_of(client, team_key, job_id)
    cpu_ram = 100.0 * 3600 * 0.2 / 3.6e6  # the measured CPU and RAM parts of the report
    assert body["kwh"]["gpu"] == pytest.approx(0.3)
    assert body["methods"]["gpu"] == "estimated"
    estimate = body["attempts"][0]["accounting"]["estimates"]["gpu"]
    assert estimate["basis"] == "gpu_power_limit" and estimate["kwh"] == pytest.approx(0.3)
    assert body["kg_co2e"] == pytest.approx((0.3 + cpu_ram) * 0.2)


def test_failed_cpu_ram_measurement_is_estimated_and_a_measured_zero_stays_zero(
    client: TestClient, team_key: str, clock: FakeClock
) -> None:
    store_points(client, "history", at(10), at(13), 200.0, generated_at=at(13))
    job_id = run_attempt(
        client,
        team_key,
        clock,
        start=at(11),
        minutes=60,
        watts=100.0,
        change={"gpu_kwh": 0.0, "cpu_kwh": None, "ram_kwh": None},
    )
    body = energy_of(client, team_key, job_id)
    assert body["kwh"]["gpu"] == 0.0  # measured 0 is 0
    assert body["kwh"]["cpu"] == pytest.approx(0.110)  # 110 W for 1 h, host estimate
    assert body["kwh"]["ram"] == pytest.approx(0.010)
    assert body["methods"] == {"gpu": "measured", "cpu": "estimated", "ram": "estimated"}
    assert body["kg_co2e"] == pytest.approx(0.120 * 0.2)


def test_pue_applies_to_every_component_and_is_shown(
    client: TestClient, team_key: str, clock: FakeClock
) -> None:
    client.app.state.settings.pue_by_zone = {"ES": 1.25}
    store_points(client, "history", at(10), at(13), 200.0, generated_at=at(13))
    job_id = run_attempt(client, team_key, clock, start=at(11), minutes=60, watts=400.0)
    body = energy_of(client, team_key, job_id)
    assert body["pue"] == 1.25 and body["attempts"][0]["pue"] == 1.25
    assert body["kwh"]["total"] == pytest.approx(0.4)
    assert body["facility_kwh"] == pytest.approx(0.5)
    assert body["kg_co2e"] == pytest.approx(0.5 * 0.2)
    (charge,) = [e for e in ledger_of(client, job_id) if e.kind == "charge"]
    assert charge.kwh == pytest.approx(0.5) and "pue=1.25" in charge.note


def test_replayed_trace_is_labelled_replayed_not_observed(
    client: TestClient, team_key: str, clock: FakeClock
) -> None:
    # No stored points: the bundled trace (2022) is replayed onto 2026.
    job_id = run_attempt(client, team_key, clock, start=at(11), minutes=30, watts=400.0)
    body = energy_of(client, team_key, job_id)
    assert {s["provenance"] for s in body["attempts"][0]["slots"]} == {"replayed"}
    assert body["observed_share"] == 0.0
    assert body["signal"]["estimated"] is True
    assert body["signal"]["basis"] == "lifecycle"


def test_a_report_after_the_lease_was_lost_is_kept_as_unattributed_and_charged(
    client: TestClient, team_key: str, clock: FakeClock
) -> None:
    # Before: the worker's report was refused with 409 and its energy charged nowhere.
    store_points(client, "history", at(10), at(13), 200.0, generated_at=at(13))
    clock.now = at(11) - timedelta(minutes=5)
    job_id = client.post("/v1/jobs", json=burn_in_job(), headers=bearer(team_key)).json()["id"]
    make_ready(client.app, job_id)
    worker = WorkerSession(client, register(client))
    clock.now = at(11)
    worker.claim()
    clock.advance(minutes=10)
    worker.job_call(job_id, "heartbeat", energy={"kwh_so_far": 0.05, "watts": 300.0})
    clock.advance(minutes=5)  # the lease (90 s) lapses: the reaper closes the attempt as lost
    run_tick(client.app, "reap_leases")
    heartbeat_kwh = 0.05 + 300.0 * client.app.state.settings.heartbeat_seconds / 3.6e6
    assert energy_of(client, team_key, job_id)["kwh"]["unattributed"] == pytest.approx(
        heartbeat_kwh
    )
    late = energy_report(1, at(11), 12 * 60.0, 400.0)  # 0.08 kWh measured by the worker
    assert worker.job_call(job_id, "complete", energy=late).status_code == 409
    response = worker.job_call(job_id, "orphan-energy", energy=late)
    assert response.status_code == 202, response.text
    # A retry is accepted once, not counted twice; another worker may not send it.
    assert worker.job_call(job_id, "orphan-energy", energy=late).status_code == 202
    other = WorkerSession(client, register(client, host="gpu-02"))
    other.lease = dict(worker.lease)
    assert other.job_call(job_id, "orphan-energy", energy=late).status_code == 404
    body = energy_of(client, team_key, job_id)
    (attempt,) = body["attempts"]
    assert attempt["kwh"]["unattributed"] == pytest.approx(0.08)
    assert attempt["accounting"]["late_report"]["reported_kwh"] == pytest.approx(0.08)
    assert body["kg_co2e"] == pytest.approx(0.08 * 0.2)
    entries = [e for e in ledger_of(client, job_id) if e.kind in ("charge", "adjust")]
    assert sum(e.kg_co2e for e in entries) == pytest.approx(0.08 * 0.2)
    assert any("lost its lease" in e.note for e in entries)


def test_a_run_across_a_month_boundary_is_priced_per_slot_on_each_side(
    client: TestClient, team_key: str, clock: FakeClock
) -> None:
    # Worked example 4: 1 kW from 23:30 on 31 March to 00:30 on 1 April.
    march_end = datetime(2026, 4, 1, tzinfo=UTC)
    hour = timedelta(hours=1)
    store_points(client, "history", march_end - hour, march_end, 300.0, generated_at=march_end)
    store_points(
        client, "history", march_end, march_end + hour, 100.0, generated_at=march_end + hour
    )
    job_id = run_attempt(
        client, team_key, clock, start=march_end - hour / 2, minutes=60, watts=1000.0
    )
    body = energy_of(client, team_key, job_id)
    by_month: dict[str, float] = {}
    for slot in body["attempts"][0]["slots"]:
        month = slot["start"][:7]
        by_month[month] = by_month.get(month, 0.0) + slot["kwh"] * slot["g_per_kwh"] / 1000.0
    assert by_month == pytest.approx({"2026-03": 0.15, "2026-04": 0.05})
    assert body["kg_co2e"] == pytest.approx(0.2)
    assert body["observed_share"] == pytest.approx(1.0)
