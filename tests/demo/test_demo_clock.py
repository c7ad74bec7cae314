"""The demo's accelerated clock, its scaled lease settings and the worker's grid-time transport."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from scheduler.demo import (
    DEMO_JOBS,
    DemoClock,
    GridTimeTransport,
    job_body,
    map_timestamps,
    scaled_timing,
)
from scheduler.jobs.schemas import JobCreate
from scheduler.settings import Settings

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def test_clock_runs_at_its_rate_and_never_jumps_when_the_rate_changes() -> None:
    clock = DemoClock.start(3600.0, at=START)
    time.sleep(0.05)
    first = clock()
    assert first - START >= timedelta(seconds=0.05 * 3600 * 0.9)
    clock.set_rate(1.0)
    after_change = clock()
    assert after_change >= first
    # At rate 1 grid time moves with the wall clock: far less than before in the same pause.
    time.sleep(0.05)
    assert clock() - after_change < timedelta(seconds=5)


def test_real_times_map_onto_the_same_function_as_the_clock() -> None:
    clock = DemoClock.start(100.0, at=START)
    real = datetime.now(UTC)
    mapped = clock.to_grid(real)
    assert abs((mapped - clock()).total_seconds()) < 100 * 0.5
    later = clock.to_grid(real + timedelta(seconds=2))
    assert later - mapped == pytest.approx(timedelta(seconds=200), abs=timedelta(seconds=0.01))


@pytest.mark.parametrize("speedup", [1.0, 720.0, 3600.0])
def test_scaled_timing_is_valid_and_outlasts_a_real_heartbeat(speedup: float) -> None:
    timing = scaled_timing(speedup)
    # A worker talks every real second, i.e. `speedup` grid seconds: it must stay alive
    # (three heartbeat periods) and keep its lease across at least two such gaps.
    assert 3 * timing["heartbeat_seconds"] > speedup
    assert timing["lease_seconds"] > 2 * speedup
    Settings(admin_token="a" * 20, **timing)  # accepted by the settings validation


def test_map_timestamps_moves_only_rfc3339_strings() -> None:
    def shift(moment: datetime) -> datetime:
        return moment + timedelta(hours=1)

    body = {
        "started_at": "2026-03-02T09:00:00Z",
        "timeline": [{"t": "2026-03-02T09:00:05.5+00:00", "watts": 20.0}],
        "note": "not a time 2026-03-02",
        "attempt": 1,
    }
    mapped = map_timestamps(body, shift)
    assert mapped["started_at"] == "2026-03-02T10:00:00Z"
    assert mapped["timeline"][0]["t"] == "2026-03-02T10:00:05.500000Z"
    assert mapped["note"] == body["note"] and mapped["attempt"] == 1


def test_transport_rewrites_worker_reports_and_the_heartbeat_period() -> None:
    seen: list[dict] = []

    def service(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/workers/register":
            return httpx.Response(
                201, json={"worker_id": "w1", "heartbeat_seconds": 720, "lease_seconds": 2880}
            )
        seen.append(json.loads(request.content))
        return httpx.Response(200, json={})

    clock = DemoClock.start(720.0, at=START)
    # The service side is a fake in memory; the transport's rewriting is the real code.
    transport = GridTimeTransport(clock, real_heartbeat_s=1.0, inner=httpx.MockTransport(service))
    client = httpx.Client(transport=transport, base_url="http://svc")
    registered = client.post("/v1/workers/register", json={}).json()
    assert registered["heartbeat_seconds"] == 1.0
    assert registered["lease_seconds"] == pytest.approx(4.0)
    real_start = datetime.now(UTC).isoformat()
    client.post("/v1/workers/w1/jobs/j1/complete", json={"energy": {"started_at": real_start}})
    grid_start = datetime.fromisoformat(seen[0]["energy"]["started_at"].replace("Z", "+00:00"))
    # Mapped onto the demo clock (hours ahead of the wall clock here), not left as sent.
    assert abs((grid_start - clock()).total_seconds()) < 720 * 0.5
    assert grid_start.year == 2026 and grid_start.month == 3


def test_demo_jobs_are_valid_submissions_with_different_objectives() -> None:
    bodies = [job_body(job, "gpt-sovits-finetune", "ds1", 24) for job in DEMO_JOBS]
    for body in bodies:
        spec = JobCreate.model_validate(body)
        assert spec.config["model_size"] == "tiny"
        assert spec.config["max_steps"] == 24
    assert len({b["objective"] for b in bodies}) == 3
    assert len({b["max_delay_minutes"] for b in bodies}) == 3
    assert sum(b["interruptible"] for b in bodies) == 1
    burn_in = JobCreate.model_validate(job_body(DEMO_JOBS[0], "burn-in", None, 24))
    assert burn_in.kind == "burn-in"
