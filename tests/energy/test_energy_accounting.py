"""Carbon accounting arithmetic, and the energy report's consistency over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from support.fleet_helpers import WorkerSession, energy_report, make_ready, register
from support.helpers import FakeClock, admin_headers, bearer, burn_in_job

from scheduler.db.session import session_scope
from scheduler.energy import accounting

T0 = datetime(2026, 3, 2, 9, 50, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_energy_is_split_at_slot_boundaries_by_the_timeline_shape() -> None:
    timeline = [(at(0), 1000.0), (at(10), 3000.0)]  # 1 kW before 10:00, 3 kW after
    buckets = accounting.energy_by_bucket(
        total_kwh=1.2, started_at=at(0), ended_at=at(20), timeline=timeline, step_minutes=60
    )
    assert [b[0] for b in buckets] == [datetime(2026, 3, 2, 9, tzinfo=UTC), at(10)]
    assert [b[1] for b in buckets] == pytest.approx([0.3, 0.9])


def test_measured_total_wins_over_the_sampled_integral() -> None:
    timeline = [(at(0), 500.0), (at(5), 500.0)]
    assert accounting.timeline_kwh(timeline, at(20)) == pytest.approx(500 * 1200 / 3.6e6)
    buckets = accounting.energy_by_bucket(
        total_kwh=0.25, started_at=at(0), ended_at=at(20), timeline=timeline, step_minutes=15
    )
    assert sum(kwh for _, kwh in buckets) == pytest.approx(0.25)
    # 15-minute slots: 09:45 holds 09:50-10:00, 10:00 holds 10:00-10:10 (equal power).
    assert [kwh for _, kwh in buckets] == pytest.approx([0.125, 0.125])


def test_without_a_timeline_energy_is_spread_evenly() -> None:
    buckets = accounting.energy_by_bucket(
        total_kwh=0.9, started_at=at(-20), ended_at=at(70), timeline=[], step_minutes=60
    )
    # 09:30-10:00 (30 min), 10:00-11:00 (60 min): a third and two thirds.
    assert [kwh for _, kwh in buckets] == pytest.approx([0.3, 0.6])
    instant = accounting.energy_by_bucket(
        total_kwh=0.1, started_at=at(0), ended_at=at(0), timeline=[], step_minutes=60
    )
    assert instant == [(datetime(2026, 3, 2, 9, tzinfo=UTC), 0.1)]
    assert (
        accounting.energy_by_bucket(
            total_kwh=0.0, started_at=at(0), ended_at=at(5), timeline=[], step_minutes=60
        )
        == []
    )


def test_kg_is_bucket_energy_times_bucket_intensity() -> None:
    energy = [(datetime(2026, 3, 2, 9, tzinfo=UTC), 0.6), (at(10), 0.6)]
    intensity = {energy[0][0]: 200.0, energy[1][0]: 400.0}
    buckets = accounting.price_buckets(energy, intensity.__getitem__)
    assert accounting.total_kg(buckets) == pytest.approx(0.6 * 0.2 + 0.6 * 0.4)
    assert accounting.weighted_intensity(buckets) == pytest.approx(300.0)
    assert accounting.weighted_intensity([]) is None


def test_report_parsing_tolerates_missing_parts() -> None:
    # A missing or null part is unknown (None), never 0; a measured 0 stays 0.
    assert accounting.report_parts({"gpu_kwh": 0.5, "cpu_kwh": None, "ram_kwh": 0}) == {
        "gpu": 0.5,
        "cpu": None,
        "ram": 0.0,
    }
    assert accounting.report_parts({"gpu_kwh": "x", "cpu_kwh": -1.0, "ram_kwh": True}) == {
        "gpu": None,
        "cpu": None,
        "ram": None,
    }
    points = accounting.parse_timeline(
        [{"t": "2026-03-02T09:50:01Z", "watts": 5}, {"t": "garbage", "watts": 1}, {"watts": 2}]
    )
    assert points == [(datetime(2026, 3, 2, 9, 50, 1, tzinfo=UTC), 5.0)]


def test_energy_report_is_consistent(client: TestClient, team_key: str, clock: FakeClock) -> None:
    job_id = client.post("/v1/jobs", json=burn_in_job(), headers=bearer(team_key)).json()["id"]
    make_ready(client.app, job_id)
    worker = WorkerSession(client, register(client))
    worker.claim()
    started = clock.now
    clock.advance(minutes=80)  # the attempt crosses an hour boundary: two intensity slots
    report = energy_report(1, started, 80 * 60.0, 400.0)
    assert worker.job_call(job_id, "complete", energy=report).status_code == 200

    energy = client.get(f"/v1/jobs/{job_id}/energy", headers=bearer(team_key))
    assert energy.status_code == 200
    body = energy.json()
    kwh = body["kwh"]
    assert kwh["total"] == pytest.approx(kwh["gpu"] + kwh["cpu"] + kwh["ram"])
    assert kwh["total"] == pytest.approx(400.0 * 80 * 60 / 3.6e6)
    timeline = [(accounting.parse_time(p["t"]), p["watts"]) for p in body["timeline"]]
    ended = started + timedelta(minutes=80)
    assert accounting.timeline_kwh(timeline, ended) == pytest.approx(kwh["total"], rel=1e-6)

    # Recompute independently, second by second, from the signal the service accounts with.
    with session_scope(client.app.state.session_factory) as session:
        signal = client.app.state.scheduling.accounting_signal(session, "ES", started, ended)
        series = signal.series
        per_second = kwh["total"] / (80 * 60)
        expected = sum(
            per_second * series.value_at(started + timedelta(seconds=s)) / 1000.0
            for s in range(80 * 60)
        )
    assert body["kg_co2e"] == pytest.approx(expected, rel=1e-9)
    assert body["intensity_g_per_kwh_avg"] == pytest.approx(1000 * expected / kwh["total"])
    assert {k: body["signal"][k] for k in ("zone", "source", "type", "estimated")} == {
        "zone": "ES",
        "source": series.source,
        "type": "average",
        "estimated": signal.estimated,
    }
    # No stored observation: every slot is the bundled trace replayed onto this date.
    assert body["signal"]["provenance"] == {"replayed": 1.0}
    assert {p["g_per_kwh"] for p in body["timeline"]} == {
        series.value_at(started),
        series.value_at(ended - timedelta(seconds=1)),
    }
    assert body["methods"] == {"gpu": "measured", "cpu": "estimated", "ram": "estimated"}
    assert body["codecarbon"]["kg_co2e"] == pytest.approx(0.0001)
    assert body["duration_s"] == pytest.approx(80 * 60)
    assert isinstance(body["saving_vs_run_now_kg_co2e"], float)
    (attempt,) = body["attempts"]
    assert attempt["attempt"] == 1 and attempt["measurement_ok"]
    assert attempt["kg_co2e"] == pytest.approx(body["kg_co2e"])
    assert attempt["hardware"]["gpu_model"] == "NVIDIA H100"

    job = client.get(f"/v1/jobs/{job_id}", headers=bearer(team_key)).json()
    assert job["actual_kg_co2e"] == pytest.approx(body["kg_co2e"])
    other = client.post("/v1/teams", json={"name": "beta"}, headers=admin_headers()).json()
    assert (
        client.get(f"/v1/jobs/{job_id}/energy", headers=bearer(other["api_key"])).status_code == 404
    )
    assert client.get(f"/v1/jobs/{job_id}/energy", headers=admin_headers()).status_code == 200
