"""End to end: a real uvicorn server with its ticks, and real worker agent processes.

Short leases and one-second ticks keep it fast; burn-in jobs are tiny. Jobs go through the
real planner (tight deadlines make it start them at once), claims, heartbeats, metering,
artifact uploads, lease expiry after kill -9, and the energy report and budget charge.
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from support.helpers import WORKER_TOKEN, admin_headers, bearer, serve_in_thread

from scheduler.app import create_app
from scheduler.energy import accounting
from scheduler.settings import Settings

pytestmark = pytest.mark.slow
AGENT = Path(__file__).resolve().parents[1] / "support" / "agent_process.py"
REPO = Path(__file__).resolve().parents[2]
# Agents upload a newer checkpoint at most this often while a job runs (production: 60 s).
CHECKPOINT_UPLOAD_SECONDS = "0.5"


class Agents:
    """Worker agent processes, each in its own process group so kill -9 takes its children."""

    def __init__(self, url: str, work_dir: Path) -> None:
        self.url = url
        self.work_dir = work_dir
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> subprocess.Popen[bytes]:
        log = (self.work_dir / f"{name}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, str(AGENT), self.url, WORKER_TOKEN, str(self.work_dir / name)],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "GREENWINDOW_CHECKPOINT_UPLOAD_SECONDS": CHECKPOINT_UPLOAD_SECONDS},
        )
        self.processes[name] = process
        return process

    def worker_id(self, name: str) -> str | None:
        """The worker id the agent logged when it registered."""
        text = (self.work_dir / f"{name}.log").read_text(errors="replace")
        match = re.search(r"registered as worker (\w+)", text)
        return match.group(1) if match else None

    def kill_9(self, name: str) -> None:
        process = self.processes[name]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


@pytest.fixture
def service(settings: Settings, tmp_path: Path) -> Iterator[tuple[str, str, Agents]]:
    # The lease must outlast the agent's start of metering (CodeCarbon takes a few seconds)
    # before its first job heartbeat, and its stopping of a cancelled job, on a loaded machine.
    fast = settings.model_copy(
        update={
            "lease_seconds": 20,
            "heartbeat_seconds": 1,
            "maintenance_seconds": 1,
            "replan_seconds": 1,
        }
    )
    app = create_app(fast, run_ticks=True)
    with serve_in_thread(app) as url:
        team = httpx.post(f"{url}/v1/teams", json={"name": "alpha"}, headers=admin_headers())
        key = team.json()["api_key"]
        budget = httpx.put(
            f"{url}/v1/teams/alpha/budget",
            json={"period": "month", "limit_kg_co2e": 100.0},
            headers=admin_headers(),
        )
        assert budget.status_code == 200, budget.text
        agents = Agents(url, tmp_path)
        try:
            yield url, key, agents
        finally:
            agents.stop_all()


def submit(url: str, key: str, config: dict[str, Any]) -> str:
    body = {"name": "burn-in", "kind": "burn-in", "config": config, "max_delay_minutes": 0}
    response = httpx.post(f"{url}/v1/jobs", json=body, headers=bearer(key))
    assert response.status_code == 201, response.text
    return response.json()["id"]


def get(url: str, key: str, path: str) -> Any:
    response = httpx.get(f"{url}{path}", headers=bearer(key), timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def checkpoint_step(url: str, key: str, job_id: str) -> int:
    """The burn-in step inside the job's current checkpoint.tar."""
    response = httpx.get(
        f"{url}/v1/jobs/{job_id}/artifacts/checkpoint.tar", headers=bearer(key), timeout=30
    )
    assert response.status_code == 200, response.text
    with tarfile.open(fileobj=io.BytesIO(response.content)) as bundle:
        assert bundle.getnames() == ["checkpoints/burnin.pt"]
        member = bundle.extractfile("checkpoints/burnin.pt")
        assert member is not None
        return int(torch.load(io.BytesIO(member.read()), weights_only=True)["step"])


def wait_for(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_burn_in_runs_to_success_with_energy_and_budget_charge(
    service: tuple[str, str, Agents],
) -> None:
    url, key, agents = service
    before = get(url, key, "/v1/teams/alpha/budget")["actual_kg_co2e"]
    agents.start("worker-a")
    job_id = submit(
        url, key, {"steps": 40, "size": 64, "checkpoint_every": 10, "step_sleep_s": 0.1}
    )
    wait_for(lambda: get(url, key, f"/v1/jobs/{job_id}")["state"] == "succeeded", 75, "success")

    job = get(url, key, f"/v1/jobs/{job_id}")
    report = get(url, key, f"/v1/jobs/{job_id}/energy")
    total = report["kwh"]["total"]
    assert total > 0 and report["kg_co2e"] > 0
    assert report["kwh"]["cpu"] > 0 and report["kwh"]["gpu"] == 0  # a CPU-only worker
    (attempt,) = report["attempts"]
    assert attempt["outcome"] == "succeeded" and attempt["kg_co2e"] == pytest.approx(
        report["kg_co2e"]
    )
    # The power timeline integrates to the measured total (same meter, sampled).
    timeline = [(accounting.parse_time(p["t"]), p["watts"]) for p in report["timeline"]]
    ended = accounting.parse_time(attempt["ended_at"])
    assert len(timeline) >= 3
    assert accounting.timeline_kwh(timeline, ended) == pytest.approx(total, rel=0.35)
    assert all(p["g_per_kwh"] > 0 for p in report["timeline"])
    assert report["intensity_g_per_kwh_avg"] == pytest.approx(1000 * report["kg_co2e"] / total)

    assert job["actual_kg_co2e"] == pytest.approx(report["kg_co2e"])
    after = get(url, key, "/v1/teams/alpha/budget")
    assert after["actual_kg_co2e"] - before == pytest.approx(job["actual_kg_co2e"])
    assert after["committed_kg_co2e"] == pytest.approx(0.0)
    artifacts = {a["name"] for a in get(url, key, f"/v1/jobs/{job_id}/artifacts")}
    assert "checkpoint.tar" in artifacts


def test_kill_9_then_lease_expiry_then_another_worker_resumes_from_its_checkpoint(
    service: tuple[str, str, Agents],
) -> None:
    url, key, agents = service
    # Two agents: whichever claims the job is killed, the other one takes over.
    agents.start("worker-a")
    agents.start("worker-b")
    job_id = submit(
        url, key, {"steps": 100, "size": 32, "checkpoint_every": 5, "step_sleep_s": 0.05}
    )

    def stepped_with_a_checkpoint_up() -> bool:
        progress = get(url, key, f"/v1/jobs/{job_id}")["progress"] or {}
        artifacts = get(url, key, f"/v1/jobs/{job_id}/artifacts")
        return (progress.get("step") or 0) >= 10 and any(
            a["name"] == "checkpoint.tar" and a["attempt"] == 1 for a in artifacts
        )

    # Only the periodic upload can put a checkpoint there while the job is still running.
    wait_for(stepped_with_a_checkpoint_up, 40, "the first worker's progress and checkpoint")
    workers = httpx.get(f"{url}/v1/workers", headers=admin_headers()).json()
    holder = next((w["id"] for w in workers if job_id in w["running_jobs"]), None)
    assert holder is not None, "the job ended before it could be killed mid-run"
    victim = next(name for name in agents.processes if agents.worker_id(name) == holder)
    agents.kill_9(victim)
    time.sleep(0.5)  # an upload whose body was already sent is committed by now
    # Attempt 2 starts only once the lease expires: this is what it will resume from.
    (artifact,) = get(url, key, f"/v1/jobs/{job_id}/artifacts")
    assert artifact["name"] == "checkpoint.tar" and artifact["attempt"] == 1
    left_at = checkpoint_step(url, key, job_id)
    assert 5 <= left_at < 100
    wait_for(lambda: get(url, key, f"/v1/jobs/{job_id}")["state"] == "succeeded", 45, "success")

    job = get(url, key, f"/v1/jobs/{job_id}")
    assert job["attempt"] == 2
    events = get(url, key, f"/v1/jobs/{job_id}/events")
    reasons = [e["reason"] for e in events]
    assert any(r.startswith("worker lost (lease expired at") for r in reasons), reasons
    second = [e["reason"] for e in events if e["attempt"] == 2]
    assert "worker resumed: restored checkpoint checkpoint.tar" in second, second
    assert f"worker workload: resumed burn-in from step {left_at}" in second, second
    report = get(url, key, f"/v1/jobs/{job_id}/energy")
    attempts = report["attempts"]
    assert [a["outcome"] for a in attempts] == ["lost", "succeeded"]
    assert attempts[0]["worker"] != attempts[1]["worker"]
    assert not attempts[0]["measurement_ok"] and attempts[0]["kwh"]["total"] > 0
    assert report["kwh"]["total"] == pytest.approx(sum(a["kwh"]["total"] for a in attempts))
    assert report["kg_co2e"] == pytest.approx(sum(a["kg_co2e"] for a in attempts))
    assert job["actual_kg_co2e"] == pytest.approx(report["kg_co2e"])


def test_cancel_of_a_running_job_stops_the_worker(service: tuple[str, str, Agents]) -> None:
    url, key, agents = service
    agents.start("worker-a")
    job_id = submit(
        url, key, {"steps": 100_000, "size": 32, "checkpoint_every": 50, "step_sleep_s": 0.01}
    )
    wait_for(lambda: get(url, key, f"/v1/jobs/{job_id}")["state"] == "running", 40, "running")
    cancel = httpx.post(f"{url}/v1/jobs/{job_id}/cancel", headers=bearer(key))
    assert cancel.status_code == 200 and cancel.json()["cancel_requested"]
    wait_for(lambda: get(url, key, f"/v1/jobs/{job_id}")["state"] == "cancelled", 40, "cancel")
    job = get(url, key, f"/v1/jobs/{job_id}")
    assert job["state_reason"] == "cancelled by user"
    report = get(url, key, f"/v1/jobs/{job_id}/energy")
    assert [a["outcome"] for a in report["attempts"]] == ["cancelled"]
    assert job["actual_kwh"] == pytest.approx(report["kwh"]["total"])
