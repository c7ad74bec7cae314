"""A fine-tune paused and resumed, against the real service: one TensorBoard run with
continuous steps, and the second attempt reuses the first one's prepared dataset.

The job is long (30,000 steps): the first attempt is paused by the service, the second
released by its worker's shutdown, so the test never races a stop against the end of
training on a fast machine.
"""

from __future__ import annotations

import io
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from support.helpers import WORKER_TOKEN, admin_headers, bearer, serve_in_thread, tiny_dataset_zip

from scheduler.app import create_app
from scheduler.db.session import session_scope
from scheduler.jobs.models import Job
from scheduler.settings import Settings
from worker.agent import Agent, AgentOptions
from worker.client import WorkerClient
from worker.metering.nvml import Nvml

pytestmark = pytest.mark.slow  # a real server and job processes

STEPS = 30_000


@pytest.fixture
def service(settings: Settings) -> Iterator[tuple[Any, str]]:
    app = create_app(settings.model_copy(update={"heartbeat_seconds": 1}), run_ticks=False)
    with serve_in_thread(app) as url:
        yield app, url


def set_job(app: Any, job_id: str, **values: Any) -> None:
    with session_scope(app.state.session_factory) as session:
        session.execute(update(Job).where(Job.id == job_id).values(**values))


def get(url: str, key: str, path: str) -> Any:
    response = httpx.get(f"{url}{path}", headers=bearer(key), timeout=60)
    assert response.status_code == 200, response.text
    return response


def wait_until(predicate: Any, seconds: float = 300, about: Any = None) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"condition not reached in time: {about and about()}"
        time.sleep(0.5)


def scalar_steps(logs: Path, tag: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(logs))
    accumulator.Reload()
    return [event.step for event in accumulator.Scalars(tag)]


# The database is not what this test is about.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_paused_job_keeps_one_tensorboard_run_and_its_prepared_data(
    service: tuple[Any, str], tmp_path: Path
) -> None:
    app, url = service
    key = httpx.post(f"{url}/v1/teams", json={"name": "alpha"}, headers=admin_headers()).json()[
        "api_key"
    ]
    uploaded = httpx.post(
        f"{url}/v1/datasets",
        content=tiny_dataset_zip(utterances=4),
        headers={**bearer(key), "content-type": "application/zip"},
    )
    assert uploaded.status_code == 201, uploaded.text
    submitted = httpx.post(
        f"{url}/v1/jobs",
        headers=bearer(key),
        json={
            "name": "voice",
            "dataset": {"id": uploaded.json()["id"]},
            "interruptible": True,
            "config": {
                "stage": "s1",
                "model_size": "tiny",
                "max_steps": STEPS,
                "batch_size": 1,
                "save_every_steps": 1000,
            },
            "max_delay_minutes": 0,
        },
    )
    assert submitted.status_code == 201, submitted.text
    job_id = submitted.json()["id"]
    set_job(app, job_id, state="ready")

    options = AgentOptions(
        work_dir=tmp_path,
        zone="ES",
        cpu_only=True,
        poll_seconds=0.1,
        max_jobs=2,
        sample_seconds=0.2,
        codecarbon=False,
    )
    agent = Agent(
        WorkerClient(url, WORKER_TOKEN), options, nvml=Nvml(None, error="CPU-only"), gpus=[]
    )
    runner = threading.Thread(target=agent.run, daemon=True)
    runner.start()

    def step() -> int:
        return (get(url, key, f"/v1/jobs/{job_id}").json().get("progress") or {}).get("step") or 0

    def state() -> str:
        return get(url, key, f"/v1/jobs/{job_id}").json()["state"]

    def attempt() -> int:
        return get(url, key, f"/v1/jobs/{job_id}").json()["attempt"]

    # Attempt 1: a few steps, then the service pauses it. The paused job goes back to the
    # queue and, with a free slot and no delay allowed, the same agent claims it at once:
    # the 'scheduled' state in between can last less than a poll, so wait for attempt 2.
    wait_until(lambda: state() == "running")
    wait_until(lambda: step() >= 3, about=lambda: get(url, key, f"/v1/jobs/{job_id}").json())
    set_job(app, job_id, pause_requested=True)
    wait_until(
        lambda: attempt() == 2 and state() == "running",
        about=lambda: get(url, key, f"/v1/jobs/{job_id}").json(),
    )
    resumed_at = step()
    # Attempt 2 resumes, trains a few more steps and is released when its worker shuts down.
    wait_until(
        lambda: step() >= resumed_at + 3, about=lambda: get(url, key, f"/v1/jobs/{job_id}").json()
    )
    agent.request_shutdown()
    runner.join(timeout=300)
    assert not runner.is_alive()
    assert get(url, key, f"/v1/jobs/{job_id}").json()["attempt"] == 2

    artifacts = {a["name"]: a for a in get(url, key, f"/v1/jobs/{job_id}/artifacts").json()}
    assert {"tensorboard-1.tar", "tensorboard-2.tar", "tensorboard", "prepared.tar"} <= set(
        artifacts
    )
    assert artifacts["prepared.tar"]["attempt"] == 1  # the second attempt did not prepare anew

    # One tar, one run directory, the steps of both attempts continuing without a gap.
    merged = get(url, key, f"/v1/jobs/{job_id}/artifacts/tensorboard").content
    with tarfile.open(fileobj=io.BytesIO(merged)) as bundle:
        names = bundle.getnames()
        assert len(names) >= 2 and {Path(n).parent.as_posix() for n in names} == {"tensorboard"}
        bundle.extractall(tmp_path / "merged", filter="data")
    steps = scalar_steps(tmp_path / "merged" / "tensorboard", "s1/loss")
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 6

    events = get(url, key, f"/v1/jobs/{job_id}/events").json()
    text = [f"{e['attempt']}: {e['reason']} {e.get('data') or ''}" for e in events]
    reused = [line for line in text if "reused the prepared dataset of attempt 1" in line]
    assert reused and all(line.startswith("2:") for line in reused), text
    # Semantic tokens are computed only for clips missing from the prepared directory.
    prepared = [line for line in text if "prepared semantic" in line]
    assert len(prepared) == 1 and prepared[0].startswith("1:"), text
