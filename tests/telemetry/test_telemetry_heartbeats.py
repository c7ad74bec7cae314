"""Telemetry through the job heartbeat: validation, the latest snapshot on job reads, the
bounded per-attempt history and the health warnings (synthetic heartbeat series)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.helpers import FakeClock, bearer
from support.telemetry_helpers import beat, gpu, running_job, telemetry

from scheduler.telemetry.settings import telemetry_settings


@pytest.fixture(autouse=True)
def _default_thresholds(monkeypatch: pytest.MonkeyPatch) -> Any:
    # Thresholds are read from the environment once per process: start each test clean.
    for name in list(__import__("os").environ):
        if name.startswith("GREENWINDOW_TELEMETRY_"):
            monkeypatch.delenv(name)
    telemetry_settings.cache_clear()
    yield
    telemetry_settings.cache_clear()


def events(client: TestClient, key: str, job_id: str) -> list[dict[str, Any]]:
    return client.get(f"/v1/jobs/{job_id}/events", headers=bearer(key)).json()


def warning_events(client: TestClient, key: str, job_id: str) -> list[dict[str, Any]]:
    return [e for e in events(client, key, job_id) if (e["data"] or {}).get("warning")]


def test_job_read_shows_every_ranks_latest_telemetry(
    client: TestClient, team_key: str, clock: FakeClock
) -> None:
    job_id, worker = running_job(client, team_key, gpus=2)
    snapshot = telemetry(
        [gpu(0, 0, util_pct=88.0, temp_c=70.0), gpu(1, 1, util_pct=91.0, temp_c=72.0)],
        loss=1.75,
        grad_norm=0.8,
        kl=0.12,
        mel=0.9,
    )
    clock.advance(seconds=15)
    response = beat(worker, job_id, 10, snapshot)
    assert response.status_code == 200, response.text
    job = client.get(f"/v1/jobs/{job_id}", headers=bearer(team_key)).json()
    shown = job["telemetry"]
    assert shown["loss"] == 1.75 and shown["step_time_s"] == 0.42 and shown["kl"] == 0.12
    assert [(g["rank"], g["index"], g["util_pct"], g["temp_c"]) for g in shown["gpus"]] == [
        (0, 0, 88.0, 70.0),
        (1, 1, 91.0, 72.0),
    ]
    assert shown["attempt"] == 1 and shown["at"].startswith("2026-03-02T09:00:15")
    # Shown once: under `telemetry`, not again inside `progress`.
    assert "telemetry" not in job["progress"] and job["progress"]["step"] == 10
    assert job["live"] is not None and job["health_warnings"] == []


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"gpus": [gpu(util_pct=140.0)]}, "progress.telemetry.gpus.0.util_pct"),
        ({"gpus": [gpu(rank=0, index=i) for i in range(17)]}, "progress.telemetry.gpus"),
        ({"step_time_s": -1.0}, "progress.telemetry.step_time_s"),
        ({"gpus": [gpu(temp_c=900.0)]}, "progress.telemetry.gpus.0.temp_c"),
        ({"gpus": [gpu(torch_reserved_mib=1e12)]}, "progress.telemetry.gpus.0.torch_reserved_mib"),
        ({"gpus": "all"}, "progress.telemetry.gpus"),
    ],
)
def test_bad_telemetry_is_a_422_naming_the_field(
    client: TestClient, team_key: str, bad: dict[str, Any], field: str
) -> None:
    job_id, worker = running_job(client, team_key)
    response = beat(worker, job_id, 1, telemetry(**bad))
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert client.get(f"/v1/jobs/{job_id}", headers=bearer(team_key)).json()["telemetry"] is None


def test_non_finite_numbers_are_refused(client: TestClient, team_key: str) -> None:
    # JSON from a non-compliant encoder may carry NaN; the protocol sends null instead.
    job_id, worker = running_job(client, team_key)
    token = worker.lease["lease_token"]
    body = '{"attempt": 1, "lease_token": "TOKEN", "progress": {"telemetry": {"loss": NaN}}}'
    body = body.replace("TOKEN", token)
    response = client.post(
        f"/v1/workers/{worker.id}/jobs/{job_id}/heartbeat",
        content=body,
        headers={**worker.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 422, response.text


def test_history_is_downsampled_to_a_bounded_number_of_points(
    client: TestClient, team_key: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GREENWINDOW_TELEMETRY_MAX_POINTS_PER_ATTEMPT", "8")
    telemetry_settings.cache_clear()
    job_id, worker = running_job(client, team_key)
    for step in range(50):
        clock.advance(seconds=15)
        # Loss 0..49 and a rising peak: means and maxima must survive the merging.
        snapshot = telemetry([gpu(torch_peak_mib=1000.0 + step)], loss=float(step))
        assert beat(worker, job_id, step, snapshot).status_code == 200
    history = client.get(f"/v1/jobs/{job_id}/telemetry", headers=bearer(team_key)).json()
    points = history["points"]
    assert history["attempt"] == 1 and history["attempts"] == [1]
    assert 4 <= len(points) <= 8
    assert sum(p["weight"] for p in points) == 50
    assert [p["seq"] for p in points] == sorted(p["seq"] for p in points)
    # Weighted means of merged heartbeats: the mean of all losses is kept.
    mean = sum(p["values"]["loss"] * p["weight"] for p in points) / 50
    assert mean == pytest.approx(24.5)
    assert points[-1]["gpus"][0]["torch_peak_mib"] == 1049.0
    assert points[-1]["step"] == 49 and points[0]["first_at"].startswith("2026-03-02T09:00:15")
    assert (
        client.get(f"/v1/jobs/{job_id}/telemetry?attempt=7", headers=bearer(team_key)).json()[
            "points"
        ]
        == []
    )


def test_history_is_the_teams_own(client: TestClient, team_key: str) -> None:
    job_id, worker = running_job(client, team_key)
    beat(worker, job_id, 1, telemetry())
    other = client.post(
        "/v1/teams",
        json={"name": "beta"},
        headers={"Authorization": f"Bearer {client.app.state.settings.admin_token}"},
    ).json()["api_key"]
    assert client.get(f"/v1/jobs/{job_id}/telemetry", headers=bearer(other)).status_code == 404


def test_leak_like_memory_series_raises_one_warning_event(
    client: TestClient, team_key: str, clock: FakeClock
) -> None:
    job_id, worker = running_job(client, team_key)
    # Flat memory first: no warning, even over many heartbeats.
    for step in range(12):
        clock.advance(seconds=15)
        beat(worker, job_id, step, telemetry([gpu(torch_allocated_mib=12_000.0)]))
    assert warning_events(client, team_key, job_id) == []
    # Then allocated memory only grows, 40 MiB a heartbeat: over 10 heartbeats, 360 MiB.
    for i in range(20):
        clock.advance(seconds=15)
        allocated = 12_000.0 + 40.0 * (i + 1)
        beat(worker, job_id, 12 + i, telemetry([gpu(torch_allocated_mib=allocated)]))
    raised = warning_events(client, team_key, job_id)
    assert [e["data"]["warning"] for e in raised] == ["memory_climbing"]  # once, not per beat
    assert raised[0]["data"]["growth_mib"] == pytest.approx(280.0)
    assert raised[0]["data"]["to_mib"] == pytest.approx(12_280.0)
    assert raised[0]["attempt"] == 1 and "grew 280 MiB" in raised[0]["reason"]
    job = client.get(f"/v1/jobs/{job_id}", headers=bearer(team_key)).json()
    assert [w["code"] for w in job["health_warnings"]] == ["memory_climbing"]


def test_memory_that_falls_back_is_not_a_leak(
    client: TestClient, team_key: str, clock: FakeClock
) -> None:
    job_id, worker = running_job(client, team_key)
    for i in range(30):
        clock.advance(seconds=15)
        # A saw-tooth: grows 100 MiB a beat, released every fifth beat.
        allocated = 12_000.0 + 100.0 * (i % 5)
        beat(worker, job_id, i, telemetry([gpu(torch_allocated_mib=allocated)]))
    assert warning_events(client, team_key, job_id) == []


def test_sustained_low_utilisation_warns_after_the_period(
    client: TestClient, team_key: str, clock: FakeClock
) -> None:
    job_id, worker = running_job(client, team_key)
    # Low for 240 s, then busy: below the 300 s default, no warning.
    for step in range(17):
        beat(worker, job_id, step, telemetry([gpu(util_pct=12.0)]))
        clock.advance(seconds=15)
    beat(worker, job_id, 17, telemetry([gpu(util_pct=97.0)]))
    assert warning_events(client, team_key, job_id) == []
    for step in range(18, 45):
        clock.advance(seconds=15)
        beat(worker, job_id, step, telemetry([gpu(util_pct=12.0)]))
    raised = warning_events(client, team_key, job_id)
    assert [e["data"]["warning"] for e in raised] == ["low_gpu_utilisation"]
    assert raised[0]["data"]["util_pct"] == 12.0 and raised[0]["data"]["seconds"] >= 300


def test_fragmentation_exploding_and_non_finite_grad_and_negative_kl(
    client: TestClient, team_key: str, clock: FakeClock
) -> None:
    job_id, worker = running_job(client, team_key)
    steady = telemetry(grad_norm=1.0, kl=0.2)
    for step in range(5):
        clock.advance(seconds=15)
        beat(worker, job_id, step, steady)
    assert warning_events(client, team_key, job_id) == []
    clock.advance(seconds=15)
    # 25x the recent median, though below the absolute limit.
    beat(worker, job_id, 5, telemetry(grad_norm=25.0, kl=0.2))
    clock.advance(seconds=15)
    beat(worker, job_id, 6, telemetry(grad_norm=None, nonfinite=["grad_norm"], kl=-0.05))
    clock.advance(seconds=15)
    fragmented = gpu(torch_allocated_mib=3_000.0, torch_reserved_mib=30_000.0)
    for step in (7, 8):
        beat(worker, job_id, step, telemetry([fragmented], kl=-0.07))
    raised = {e["data"]["warning"]: e["data"] for e in warning_events(client, team_key, job_id)}
    assert set(raised) == {
        "grad_norm_exploding",
        "grad_norm_nonfinite",
        "kl_negative",
        "memory_fragmentation",
    }
    assert raised["grad_norm_exploding"]["grad_norm"] == 25.0
    assert raised["grad_norm_exploding"]["recent_median"] == 1.0
    assert raised["kl_negative"]["kl"] == -0.05  # the first figure; later ones add no event
    assert raised["memory_fragmentation"]["reserved_mib"] == 30_000.0


def test_warnings_are_once_per_attempt(client: TestClient, team_key: str, clock: FakeClock) -> None:
    job_id, worker = running_job(client, team_key)
    beat(worker, job_id, 1, telemetry(grad_norm=5_000.0))
    beat(worker, job_id, 2, telemetry(grad_norm=6_000.0))
    assert len(warning_events(client, team_key, job_id)) == 1
    # The next attempt may raise it again.
    worker.job_call(job_id, "release", reason="shutdown")
    from support.fleet_helpers import make_ready

    make_ready(client.app, job_id)
    assert worker.claim()["attempt"] == 2
    beat(worker, job_id, 3, telemetry(grad_norm=7_000.0))
    raised = warning_events(client, team_key, job_id)
    assert [(e["attempt"], e["data"]["grad_norm"]) for e in raised] == [(1, 5000.0), (2, 7000.0)]
    history = client.get(f"/v1/jobs/{job_id}/telemetry?attempt=1", headers=bearer(team_key))
    assert [w["grad_norm"] for w in history.json()["warnings"]] == [5000.0]


def test_a_stored_snapshot_that_is_not_valid_does_not_break_job_reads(
    client: TestClient, team_key: str
) -> None:
    from support.fleet_helpers import make_ready

    job_id, _ = running_job(client, team_key)
    make_ready(client.app, job_id, progress={"step": 3, "telemetry": {"gpus": "garbage"}})
    job = client.get(f"/v1/jobs/{job_id}", headers=bearer(team_key))
    assert job.status_code == 200, job.text
    assert job.json()["telemetry"] is None and job.json()["progress"]["step"] == 3
