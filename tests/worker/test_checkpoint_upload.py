"""Checkpoints go up while a job runs, so an attempt lost mid-run leaves one to resume from.

The agent runs real burn-in child processes against the FAKE service
(fake_worker_service.py); a lost worker is simulated by the fake taking the lease back, as
the real service does when a lease expires.
"""

from __future__ import annotations

import io
import os
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from support.fake_worker_service import CHECKPOINT, FLEET_TOKEN, FakeJob, FakeService, Upload

from worker.agent import Agent, AgentOptions
from worker.archives import newest_checkpoint, snapshot_file
from worker.client import WorkerClient
from worker.metering.nvml import Nvml


def burnin(steps: int, sleep: float, **extra: Any) -> dict[str, Any]:
    return {"steps": steps, "size": 8, "checkpoint_every": 5, "step_sleep_s": sleep, **extra}


def make_agent(
    service: FakeService, tmp_path: Path, *, upload_every: float, max_jobs: int = 1
) -> Agent:
    client = WorkerClient("http://service", FLEET_TOKEN, transport=service.transport())
    options = AgentOptions(
        work_dir=tmp_path,
        zone="ES",
        cpu_only=True,
        poll_seconds=0.05,
        max_jobs=max_jobs,
        sample_seconds=0.1,
        codecarbon=False,
        checkpoint_upload_seconds=upload_every,
    )
    return Agent(client, options, nvml=Nvml(None, error="no driver"), gpus=[])


def run_until(agent: Agent, done: Any, seconds: float) -> float:
    """Run the agent until ``done()`` or ``seconds`` pass, then shut it down; the time taken."""
    started = time.monotonic()
    runner = threading.Thread(target=agent.run, daemon=True)
    runner.start()
    while runner.is_alive() and not done() and time.monotonic() - started < seconds:
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    agent.request_shutdown()  # a job still running is released, which the asserts then see
    runner.join(timeout=60)
    assert not runner.is_alive()
    return elapsed


def checkpoint_step(archive: bytes) -> int:
    """The burn-in step saved in a checkpoint.tar, checking the archive's layout."""
    with tarfile.open(fileobj=io.BytesIO(archive)) as bundle:
        assert bundle.getnames() == ["checkpoints/burnin.pt"]
        member = bundle.extractfile("checkpoints/burnin.pt")
        assert member is not None
        saved = torch.load(io.BytesIO(member.read()), weights_only=True)
    return int(saved["step"])


def checkpoint_uploads(service: FakeService, job: FakeJob, attempt: int) -> list[Upload]:
    return [
        u
        for u in service.uploads
        if u.job_id == job.id and u.name == CHECKPOINT and u.attempt == attempt
    ]


def test_newest_checkpoint_ignores_partial_and_hidden_files(tmp_path: Path) -> None:
    assert newest_checkpoint(tmp_path / "missing") is None
    for index, name in enumerate(
        [
            "ckpt-000001-s1-step5.pt",
            "ckpt-000002-s1-step10.pt",
            "ckpt-000003-s1-step15.partial",
            ".tmp",
        ]
    ):
        path = tmp_path / name
        path.write_bytes(b"x")
        os.utime(path, ns=(10**18 + index, 10**18 + index))
    assert newest_checkpoint(tmp_path) == tmp_path / "ckpt-000002-s1-step10.pt"


def test_snapshot_keeps_the_version_it_took_when_the_file_is_replaced(tmp_path: Path) -> None:
    live = tmp_path / "checkpoints" / "burnin.pt"
    live.parent.mkdir()
    live.write_bytes(b"step 5")
    staged = tmp_path / "snapshot" / "checkpoints" / "burnin.pt"
    identity = snapshot_file(live, staged)
    # The workload's next save: write aside, rename over the live file.
    live.with_suffix(".partial").write_bytes(b"step 10, longer")
    os.replace(live.with_suffix(".partial"), live)
    assert staged.read_bytes() == b"step 5"
    assert identity is not None and identity[0] == "burnin.pt"
    assert snapshot_file(live, staged) != identity  # the new version is told apart
    assert snapshot_file(tmp_path / "checkpoints" / "gone.pt", staged) is None


@pytest.mark.slow  # starts job processes
def test_checkpoints_go_up_while_the_job_runs_at_most_once_per_interval(tmp_path: Path) -> None:
    service = FakeService(heartbeat_seconds=0.2)
    job = service.add_job("burn-in", burnin(steps=80, sleep=0.03))
    make_agent(service, tmp_path, upload_every=0.4).run()
    assert [verb for verb, _ in job.finishes] == ["complete"]
    uploads = checkpoint_uploads(service, job, attempt=1)
    steps = [checkpoint_step(u.data) for u in uploads]
    running = [s for s in steps if s < 80]
    assert len(running) >= 2, steps  # several went up before the job ended
    assert steps == sorted(steps) and len(set(running)) == len(running), steps
    assert steps[-1] == 80  # the final checkpoint goes up on completion as before
    # The last upload is the one on completion, which no interval holds back.
    periodic = [u.at for u in uploads[:-1]]
    gaps = [later - earlier for earlier, later in zip(periodic, periodic[1:], strict=False)]
    assert all(gap >= 0.3 for gap in gaps), gaps
    assert sum(e["type"] == "checkpoint_uploaded" for e in job.events()) >= len(running)


@pytest.mark.slow  # starts job processes
def test_an_attempt_lost_mid_run_is_resumed_from_its_last_uploaded_checkpoint(
    tmp_path: Path,
) -> None:
    service = FakeService(heartbeat_seconds=0.2)

    def expire_once_a_checkpoint_is_up(job: FakeJob, body: dict[str, Any]) -> str:
        # What the service does when a lease lapses: the job goes back to the queue.
        uploads = checkpoint_uploads(service, job, attempt=1)
        if job.attempt == 1 and uploads and checkpoint_step(uploads[-1].data) >= 10:
            job.state, job.lease_token = "scheduled", None
        return "continue"

    job = service.add_job(
        "burn-in", burnin(steps=60, sleep=0.05), action_rule=expire_once_a_checkpoint_is_up
    )
    run_until(
        make_agent(service, tmp_path, upload_every=0.2, max_jobs=2),
        lambda: len(job.claims) == 2 and job.state == "succeeded",
        seconds=90,
    )

    assert [verb for verb, _ in job.finishes] == ["complete"]  # attempt 1 wrote nothing more
    assert job.finishes[0][1]["energy"]["attempt"] == 2
    assert job.claims[1]["resume_from"]["artifact"] == CHECKPOINT
    resumed_at = checkpoint_step(checkpoint_uploads(service, job, attempt=1)[-1].data)
    assert resumed_at >= 10
    messages = [e["message"] for e in job.events()]
    assert f"resumed burn-in from step {resumed_at}" in messages
    # The first step attempt 2 reports is past the checkpoint, not a restart from 0.
    assert job.steps_seen(attempt=2)[0] > resumed_at
    # The restored checkpoint is not sent back; only newer ones are.
    later = [checkpoint_step(u.data) for u in checkpoint_uploads(service, job, attempt=2)]
    assert later and min(later) > resumed_at and later[-1] == 60
    assert job.finishes[0][1]["result"]["steps"] == 60


@pytest.mark.slow  # starts job processes
def test_a_409_on_a_checkpoint_upload_stops_the_job(tmp_path: Path) -> None:
    # Heartbeats are 10 s apart, so only the upload can notice the lost lease in time.
    service = FakeService(heartbeat_seconds=10)
    job = service.add_job("burn-in", burnin(steps=10_000, sleep=0.02))

    def take_the_lease(job: FakeJob, name: str) -> None:
        job.lease_token = "now-owned-by-someone-else"

    service.before_upload = take_the_lease
    agent = make_agent(service, tmp_path, upload_every=0.1)
    assert run_until(agent, lambda: False, seconds=9) < 9  # the agent ended on its own
    assert job.finishes == [] and service.uploads == []
    calls = [path for _, path in service.requests]
    first_put = next(i for i, path in enumerate(calls) if "/artifacts/" in path)
    # After the lease is lost only the energy report goes out (kept as unattributed).
    after = [p for p in calls[first_put + 1 :] if f"/jobs/{job.id}/" in p]
    assert after in ([], [f"/v1/workers/worker-1/jobs/{job.id}/orphan-energy"]), calls


@pytest.mark.slow  # starts job processes
def test_a_crashed_job_uploads_its_newest_checkpoint_before_failing(tmp_path: Path) -> None:
    # Step 5 goes up while running; the hour-long interval holds step 10 back until the crash.
    service = FakeService(heartbeat_seconds=0.2)
    job = service.add_job("burn-in", burnin(steps=50, sleep=0.4, exit_at_step=11))
    make_agent(service, tmp_path, upload_every=3600).run()
    verb, body = job.finishes[-1]
    assert verb == "fail" and body["retryable"] is True
    steps = [checkpoint_step(u.data) for u in checkpoint_uploads(service, job, attempt=1)]
    assert steps == [5, 10]
