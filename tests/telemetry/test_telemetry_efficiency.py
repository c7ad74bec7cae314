"""Efficiency figures in the energy report: per stage kWh per optimizer step, kWh per hour
of training audio and Wh per 1,000 samples; preparation and training as separate phases;
the team's median for the same configuration and what estimates learned for it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.fleet_helpers import WorkerSession, energy_report, make_ready, register
from support.helpers import FakeClock, bearer, tiny_dataset_zip

from scheduler.energy.efficiency import efficiency, median_figures, phase_totals
from scheduler.energy.models import JobAttempt

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def phase(name: str, start_s: float, end_s: float, kwh: float, steps: int = 0, samples: int = 0):
    return {
        "name": name,
        "started_at": (T0 + timedelta(seconds=start_s)).isoformat(),
        "ended_at": (T0 + timedelta(seconds=end_s)).isoformat(),
        "kwh": kwh,
        "optimizer_steps": steps,
        "samples": samples,
    }


def attempt(number: int, phases: list[Any], **report: Any) -> JobAttempt:
    return JobAttempt(
        attempt=number, outcome="released", started_at=T0, report={"phases": phases, **report}
    )


def test_figures_per_stage_and_phases_summed_over_attempts() -> None:
    rows = [
        attempt(1, [phase("prepare", 0, 60, 0.002), phase("s1", 60, 360, 0.004, 40, 320)]),
        # The resumed attempt reuses the prepared data: no preparation phase.
        attempt(
            2,
            [phase("s1", 0, 100, 0.002, 20, 160), phase("s2", 100, 700, 0.006, 60, 480)],
            audio_seconds=1800,
        ),
    ]
    figures = efficiency(rows, audio_hours=0.5, signature="sig", gpu_model="H100")
    assert [(p.name, p.attempts) for p in figures.phases] == [
        ("prepare", [1]),
        ("s1", [1, 2]),
        ("s2", [2]),
    ]
    assert figures.phases[1].seconds == 400 and figures.phases[1].optimizer_steps == 60
    s1 = figures.stages["s1"]
    assert s1.kwh == pytest.approx(0.006)
    assert s1.kwh_per_optimizer_step == pytest.approx(0.006 / 60)
    assert s1.kwh_per_audio_hour == pytest.approx(0.012)
    assert s1.wh_per_1k_samples == pytest.approx(6.0 / 0.48)
    training = figures.stages["training"]
    assert training.kwh == pytest.approx(0.012) and training.optimizer_steps == 120
    assert "prepare" not in figures.stages  # preparation is not training work


def test_malformed_phases_are_left_out() -> None:
    rows = [
        attempt(
            1,
            [
                phase("s1", 0, 10, 0.001, 10, 80),
                {"name": "s1", "kwh": -5},
                {"name": "rm -rf", "kwh": 1.0},
                {"name": "s2", "kwh": float("inf")},
                "not a phase",
            ],
        )
    ]
    assert [(p.name, p.kwh) for p in phase_totals(rows)] == [("s1", 0.001)]
    assert phase_totals([attempt(1, None)]) == []  # type: ignore[arg-type]


def test_median_figures_ignore_missing_values() -> None:
    sets = [
        {"s1": {"kwh_per_optimizer_step": 1.0, "wh_per_1k_samples": None}},
        {"s1": {"kwh_per_optimizer_step": 3.0, "wh_per_1k_samples": 4.0}},
        {"s1": {"kwh_per_optimizer_step": 2.0}},
    ]
    medians = median_figures(sets)
    assert medians["s1"]["kwh_per_optimizer_step"] == 2.0
    assert medians["s1"]["wh_per_1k_samples"] == 4.0 and medians["s1"]["kwh_per_audio_hour"] is None


# -- through the API -----------------------------------------------------------------------


def _dataset(client: TestClient, key: str) -> str:
    response = client.post(
        "/v1/datasets",
        content=tiny_dataset_zip(),
        headers={**bearer(key), "content-type": "application/zip"},
    )
    assert response.status_code == 201, response.text
    return response.json()["id"]


def _run_finetune(
    client: TestClient,
    key: str,
    clock: FakeClock,
    worker: WorkerSession,
    dataset_id: str,
    phases: list[dict[str, Any]],
) -> str:
    body = {
        "name": "voice",
        "kind": "gpt-sovits-finetune",
        "dataset": {"id": dataset_id},
        "config": {"stage": "both", "max_steps": 4, "model_size": "tiny"},
        "max_delay_minutes": 600,
    }
    response = client.post("/v1/jobs", json=body, headers=bearer(key))
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    make_ready(client.app, job_id)
    claimed = worker.claim()
    assert claimed is not None and claimed["job"]["id"] == job_id
    started = clock.now
    clock.advance(seconds=600)
    report = energy_report(claimed["attempt"], started, 600, 300.0)
    report.update(phases=phases, audio_seconds=3600.0)
    done = worker.job_call(job_id, "complete", energy=report, result={"ok": True})
    assert done.status_code == 200, done.text
    return job_id


def test_energy_report_efficiency_and_team_baseline(
    client: TestClient, team_key: str, clock: FakeClock
) -> None:
    dataset_id = _dataset(client, team_key)
    worker = WorkerSession(client, register(client, gpus=1))
    first = _run_finetune(
        client,
        team_key,
        clock,
        worker,
        dataset_id,
        [
            phase("prepare", 0, 60, 0.003),
            phase("s1", 60, 300, 0.004, 40, 320),
            phase("s2", 300, 600, 0.006, 60, 480),
        ],
    )
    report = client.get(f"/v1/jobs/{first}/energy", headers=bearer(team_key)).json()
    figures = report["efficiency"]
    assert [p["name"] for p in figures["phases"]] == ["prepare", "s1", "s2"]
    assert figures["phases"][0]["kwh"] == pytest.approx(0.003)
    assert figures["gpu_model"] == "H100" and figures["audio_hours"] == pytest.approx(1.0)
    s1 = figures["stages"]["s1"]
    assert s1["kwh_per_optimizer_step"] == pytest.approx(0.0001)
    assert s1["kwh_per_audio_hour"] == pytest.approx(0.004)
    assert s1["wh_per_1k_samples"] == pytest.approx(12.5)
    assert report["team_baseline"]["jobs"] == 0  # nothing earlier to compare with

    second = _run_finetune(
        client,
        team_key,
        clock,
        worker,
        dataset_id,
        [phase("s1", 0, 300, 0.008, 40, 320), phase("s2", 300, 600, 0.006, 60, 480)],
    )
    report = client.get(f"/v1/jobs/{second}/energy", headers=bearer(team_key)).json()
    assert report["efficiency"]["signature"] == report["team_baseline"]["signature"]
    baseline = report["team_baseline"]
    assert baseline["jobs"] == 1
    assert baseline["stages"]["s1"]["kwh_per_optimizer_step"] == pytest.approx(0.0001)
    assert report["efficiency"]["stages"]["s1"]["kwh_per_optimizer_step"] == pytest.approx(0.0002)
    learned = report["expected_efficiency"]
    assert learned["jobs"] == 2 and learned["gpu_model"] == "H100"
    assert learned["stages"]["s1"]["kwh_per_optimizer_step"] == pytest.approx(0.00015)

    # Another team's job of the same configuration is not in this team's baseline.
    other = client.post(
        "/v1/teams",
        json={"name": "beta"},
        headers={"Authorization": f"Bearer {client.app.state.settings.admin_token}"},
    ).json()["api_key"]
    third = _run_finetune(
        client,
        other,
        clock,
        worker,
        _dataset(client, other),
        [phase("s1", 0, 300, 0.004, 40, 320)],
    )
    report = client.get(f"/v1/jobs/{third}/energy", headers=bearer(other)).json()
    assert report["team_baseline"]["jobs"] == 0
    assert report["expected_efficiency"]["jobs"] == 3
