"""The agent against the real service (scheduler.app over real HTTP), running burn-in jobs.

Only the planner is bypassed: jobs are put in `ready` directly, as the worker-protocol tests do.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from support.helpers import WORKER_TOKEN, admin_headers, bearer, burn_in_job, serve_in_thread

from scheduler.app import create_app
from scheduler.db.session import session_scope
from scheduler.jobs.lifecycle import PAUSED_REASON
from scheduler.jobs.models import Job
from scheduler.settings import Settings
from worker.agent import Agent, AgentOptions
from worker.client import WorkerClient
from worker.metering.nvml import Nvml

pytestmark = pytest.mark.slow  # a real server and job processes


@pytest.fixture
def service(settings: Settings) -> Iterator[tuple[Any, str]]:
    # One-second heartbeats, so cancel and pause answers reach the worker quickly.
    fast = settings.model_copy(update={"heartbeat_seconds": 1})
    app = create_app(fast, run_ticks=False)
    with serve_in_thread(app) as url:
        yield app, url


def team_key(url: str) -> str:
    response = httpx.post(f"{url}/v1/teams", json={"name": "alpha"}, headers=admin_headers())
    assert response.status_code == 201, response.text
    return response.json()["api_key"]


def submit_ready(app: Any, url: str, key: str, **overrides: Any) -> str:
    response = httpx.post(f"{url}/v1/jobs", json=burn_in_job(**overrides), headers=bearer(key))
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    set_job(app, job_id, state="ready")
    return job_id


def set_job(app: Any, job_id: str, **values: Any) -> None:
    with session_scope(app.state.session_factory) as session:
        session.execute(update(Job).where(Job.id == job_id).values(**values))


def agent_for(url: str, work_dir: Path, max_jobs: int = 1, codecarbon: bool = False) -> Agent:
    client = WorkerClient(url, WORKER_TOKEN)
    options = AgentOptions(
        work_dir=work_dir,
        zone="ES",
        cpu_only=True,
        poll_seconds=0.1,
        max_jobs=max_jobs,
        sample_seconds=0.2,
        codecarbon=codecarbon,
        keep_job_dirs=True,
    )
    agent = Agent(client, options, nvml=Nvml(None, error="CPU-only"), gpus=[])
    return agent


def job(url: str, key: str, job_id: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/v1/jobs/{job_id}", headers=bearer(key))
    assert response.status_code == 200, response.text
    return response.json()


def events(url: str, key: str, job_id: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{url}/v1/jobs/{job_id}/events", headers=bearer(key))
    assert response.status_code == 200, response.text
    return response.json()


def wait_until(predicate: Any, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_burnin_completes_with_energy_and_artifacts(
    service: tuple[Any, str], tmp_path: Path
) -> None:
    app, url = service
    key = team_key(url)
    job_id = submit_ready(app, url, key, config={"steps": 20, "size": 8, "checkpoint_every": 5})
    agent = agent_for(url, tmp_path, codecarbon=True)
    agent.run()
    assert job(url, key, job_id)["state"] == "succeeded"
    artifacts = httpx.get(f"{url}/v1/jobs/{job_id}/artifacts", headers=bearer(key)).json()
    assert {a["name"] for a in artifacts} == {"burnin_state.pt", "checkpoint.tar"}
    response = httpx.get(f"{url}/v1/jobs/{job_id}/energy", headers=bearer(key))
    assert response.status_code == 200, response.text
    energy = response.json()
    [attempt] = energy["attempts"]
    assert attempt["measurement_ok"] is True, attempt["errors"]
    assert energy["kwh"]["cpu"] > 0 and energy["kwh"]["ram"] > 0 and energy["kwh"]["gpu"] == 0
    assert energy["kg_co2e"] > 0
    assert energy["methods"]["gpu"] == "none" and energy["methods"]["ram"] == "estimated"
    assert energy["codecarbon"]


def test_pause_release_and_resume(service: tuple[Any, str], tmp_path: Path) -> None:
    app, url = service
    key = team_key(url)
    job_id = submit_ready(
        app,
        url,
        key,
        interruptible=True,
        config={"steps": 120, "size": 8, "checkpoint_every": 5, "step_sleep_s": 0.05},
    )
    agent = agent_for(url, tmp_path, max_jobs=2)
    runner = threading.Thread(target=agent.run, daemon=True)
    runner.start()
    wait_until(lambda: ((job(url, key, job_id).get("progress") or {}).get("step") or 0) >= 5)
    set_job(app, job_id, pause_requested=True)
    # The release is in the job's history whatever follows: the promote-only replan after it
    # may make the job ready again at once (when the carbon signal has no better window
    # before its deadline), and the agent then resumes it on its own.
    wait_until(lambda: any(e["reason"] == PAUSED_REASON for e in events(url, key, job_id)))
    artifacts = httpx.get(f"{url}/v1/jobs/{job_id}/artifacts", headers=bearer(key)).json()
    assert "checkpoint.tar" in [a["name"] for a in artifacts]
    with session_scope(app.state.session_factory) as session:  # else ready it by hand
        session.execute(
            update(Job).where(Job.id == job_id, Job.state == "scheduled").values(state="ready")
        )
    runner.join(timeout=120)
    assert not runner.is_alive()
    assert job(url, key, job_id)["state"] == "succeeded"
    resumed = [p for p in (tmp_path / "jobs").glob(f"{job_id}-attempt-2-*/run/checkpoints/*")]
    assert resumed, "the second attempt worked from the restored checkpoint directory"


def test_cancel_through_the_api(service: tuple[Any, str], tmp_path: Path) -> None:
    app, url = service
    key = team_key(url)
    job_id = submit_ready(app, url, key, config={"steps": 100_000, "size": 8, "step_sleep_s": 0.01})
    agent = agent_for(url, tmp_path)
    runner = threading.Thread(target=agent.run, daemon=True)
    runner.start()
    wait_until(lambda: job(url, key, job_id)["state"] == "running")
    response = httpx.post(f"{url}/v1/jobs/{job_id}/cancel", headers=bearer(key))
    assert response.status_code == 200, response.text
    runner.join(timeout=60)
    assert not runner.is_alive()
    assert job(url, key, job_id)["state"] == "cancelled"
