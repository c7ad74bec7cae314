"""kill -9 of a worker at different points of a job, with real processes on loopback.

Whatever the moment of the kill, the job ends `succeeded` exactly once, its attempts never
overlap (a new attempt starts only after the old lease was taken back), and its energy report
has an entry for every attempt. GREENWINDOW_FAULT_SEEDS (e.g. "1,2,3,4,5") runs more seeds.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.helpers import bearer
from support.procs import Service, WorkerAgent, engine_for, events, make_ready, wait_until

pytestmark = pytest.mark.slow

SEEDS = [int(s) for s in os.environ.get("GREENWINDOW_FAULT_SEEDS", "1").split(",")]
STEPS = 30
JOB = {
    "name": "burn-in",
    "kind": "burn-in",
    "config": {"steps": STEPS, "size": 8, "checkpoint_every": 3, "step_sleep_s": 0.1},
    # "Start now": the planner makes it ready at once, and again after a requeue.
    "max_delay_minutes": 0,
}


def progress_step(service: Service, key: str, job_id: str) -> int:
    job = service.get(f"/v1/jobs/{job_id}", key)
    return int((job.get("progress") or {}).get("step") or 0)


def artifact_count(service: Service, key: str, job_id: str) -> int:
    return len(service.get(f"/v1/jobs/{job_id}/artifacts", key))


def wait_for_kill_point(
    point: str, rng: random.Random, service: Service, key: str, job: str
) -> None:
    """Block until the moment `point` describes (plus a seeded random offset)."""
    if point == "claim":
        # Registration and the first claim happen in the first second of the agent's life.
        time.sleep(rng.uniform(0.0, 1.5))
    elif point == "mid-run":
        target = rng.randint(2, STEPS // 2)
        wait_until(lambda: progress_step(service, key, job) >= target, 60, f"step {target}")
    elif point == "checkpoint-upload":
        # Checkpoints go up every 3 steps (0.3 s): a kill shortly after the first lands
        # around the next upload.
        wait_until(lambda: artifact_count(service, key, job) >= 1, 60, "a first checkpoint")
        time.sleep(rng.uniform(0.0, 0.4))
    elif point == "completion":
        # Progress arrives with the 1 s heartbeats, about 10 steps apart: the last one before
        # the end may report any of the last 10 steps, or the job may finish first.
        def near_the_end() -> bool:
            job_now = service.get(f"/v1/jobs/{job}", key)
            step = int((job_now.get("progress") or {}).get("step") or 0)
            return step >= STEPS - 10 or job_now["state"] == "succeeded"

        wait_until(near_the_end, 60, "the last steps")
        time.sleep(rng.uniform(0.0, 1.0))
    else:
        raise ValueError(point)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("point", ["claim", "mid-run", "checkpoint-upload", "completion"])
def test_job_survives_worker_kill(database_url: str, tmp_path: Path, point: str, seed: int) -> None:
    rng = random.Random(f"{point}-{seed}")
    service = Service(database_url, tmp_path / "service")
    service.start()
    first = WorkerAgent(service.url, tmp_path / "worker-1")
    second = WorkerAgent(service.url, tmp_path / "worker-2", max_jobs=1)
    engine = engine_for(database_url)
    try:
        key = service.new_team()
        submitted = httpx.post(f"{service.url}/v1/jobs", json=JOB, headers=bearer(key))
        assert submitted.status_code == 201, submitted.text
        job_id = submitted.json()["id"]
        make_ready(engine, job_id)
        first.start()
        try:
            wait_for_kill_point(point, rng, service, key, job_id)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nfirst worker:\n{first.log_tail()}") from None
        first.kill9()
        second.start()
        wait_until(
            lambda: service.get(f"/v1/jobs/{job_id}", key)["state"] == "succeeded",
            90,
            f"the job to succeed after the kill:\n{second.log_tail()}",
        )
        assert_one_success_and_sequential_attempts(events(engine, job_id))
        assert_energy_covers_attempts(service.get(f"/v1/jobs/{job_id}/energy", key), job_id)
    finally:
        first.kill9()
        second.stop()
        service.stop()
        engine.dispose()


def assert_one_success_and_sequential_attempts(history: list[dict[str, Any]]) -> None:
    """One success; each attempt runs only after the previous one left `running`."""
    assert [e["to_state"] for e in history].count("succeeded") == 1, history
    running_attempt: int | None = None
    for event in history:
        if event["from_state"] is None:
            continue  # the submission, or a note the worker logged (not a state change)
        if event["to_state"] == "running":
            assert running_attempt is None, (
                f"attempt {event['attempt']} started during attempt {running_attempt}: {history}"
            )
            running_attempt = event["attempt"]
        elif event["from_state"] == "running":
            assert event["attempt"] == running_attempt, history
            running_attempt = None
    assert history[-1]["to_state"] == "succeeded", history


def assert_energy_covers_attempts(report: dict[str, Any], job_id: str) -> None:
    attempts = report["attempts"]
    numbers = [a["attempt"] for a in attempts]
    assert numbers == list(range(1, len(numbers) + 1)), (job_id, attempts)
    assert attempts[-1]["outcome"] == "succeeded", attempts
    assert all(a["outcome"] in {"lost", "succeeded", "released", "failed"} for a in attempts)
    assert report["state"] == "succeeded" and report["kwh"]["cpu"] > 0
