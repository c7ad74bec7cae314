"""The agent end to end against the FAKE service (fake_worker_service.py), jobs in child processes.

These run the real child processes (spawn) and the burn-in workload; only the service and,
where GPUs appear, NVML are fakes.
"""

from __future__ import annotations

import io
import os
import signal
import tarfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.fake_nvml import FakeGpu, FakeNvml
from support.fake_worker_service import CHECKPOINT, FLEET_TOKEN, FakeJob, FakeService
from support.helpers import tiny_dataset_zip

from worker.agent import Agent, AgentOptions
from worker.archives import unpack_zip
from worker.cli import default_tracking_mode, resolve_worker_gpus, run_agent
from worker.client import WorkerClient
from worker.metering.nvml import Nvml

UUID = "GPU-aaaaaaaa-1111-2222-3333-444444444444"


def burnin(steps: int = 40, sleep: float = 0.02, **extra: Any) -> dict[str, Any]:
    return {"steps": steps, "size": 8, "checkpoint_every": 5, "step_sleep_s": sleep, **extra}


def make_agent(
    service: FakeService,
    tmp_path: Path,
    *,
    nvml: Nvml | None = None,
    max_jobs: int = 1,
    **options: Any,
) -> Agent:
    nvml = nvml or Nvml(None, error="no driver")
    gpus = nvml.all_gpus()
    client = WorkerClient("http://service", FLEET_TOKEN, transport=service.transport())
    return Agent(
        client,
        AgentOptions(
            work_dir=tmp_path,
            zone="ES",
            cpu_only=not gpus,
            poll_seconds=0.05,
            max_jobs=max_jobs,
            **{"sample_seconds": 0.1, "codecarbon": False, **options},
        ),
        nvml=nvml,
        gpus=gpus,
    )


def finish(job: FakeJob, index: int = -1) -> tuple[str, dict[str, Any]]:
    return job.finishes[index]


def step_at_least(n: int) -> Any:
    def rule(job: FakeJob, body: dict[str, Any]) -> bool:
        return body.get("progress", {}).get("step", 0) >= n

    return rule


@pytest.mark.slow  # starts job processes
def test_burnin_job_completes_with_artifacts_and_energy(tmp_path: Path) -> None:
    service = FakeService()
    job = service.add_job("burn-in", burnin(steps=20, sleep=0.01))
    make_agent(service, tmp_path, codecarbon=True).run()
    verb, body = finish(job)
    assert verb == "complete" and job.state == "succeeded"
    assert body["result"]["steps"] == 20
    assert set(service.artifacts[job.id]) == {"burnin_state.pt", CHECKPOINT}
    assert sorted(body["result"]["artifacts"]) == ["burnin_state.pt", CHECKPOINT]
    energy = body["energy"]
    assert energy["attempt"] == 1 and energy["gpus"] == [] and energy["methods"]["gpu"] == "none"
    assert energy["measurement_ok"] is True, energy["errors"]
    assert energy["cpu_kwh"] > 0 and energy["ram_kwh"] > 0
    assert service.registrations[0]["cpu_only"] is True
    with tarfile.open(fileobj=io.BytesIO(service.artifacts[job.id][CHECKPOINT])) as bundle:
        assert bundle.getnames() == ["checkpoints/burnin.pt"]
    assert not any((tmp_path / "jobs").iterdir())  # cleaned up once uploaded


@pytest.mark.slow  # starts job processes
def test_heartbeats_carry_progress_and_energy(tmp_path: Path) -> None:
    service = FakeService(heartbeat_seconds=0.1)
    fake = FakeNvml([FakeGpu(UUID, power_mw=150_000)], clock=time.monotonic)
    job = service.add_job("burn-in", burnin(steps=60))
    agent = make_agent(service, tmp_path, nvml=Nvml.open(fake))
    agent.run()
    assert finish(job)[0] == "complete"
    steps = job.steps_seen()
    assert steps and steps == sorted(steps) and steps[-1] <= 60
    last = job.heartbeats[-1]
    assert set(last["progress"]) <= {"stage", "step", "total_steps", "loss", "steps_per_s"}
    assert last["progress"]["total_steps"] == 60
    assert last["energy"]["watts"] == pytest.approx(150.0)
    assert last["energy"]["kwh_so_far"] > 0
    assert service.registrations[0]["gpus"][0]["uuid"] == UUID
    report = finish(job)[1]["energy"]
    assert report["gpus"][0]["uuid"] == UUID
    assert report["gpus"][0]["method"] == "nvml_energy_counter"
    assert report["gpu_kwh"] == pytest.approx(150 * report["duration_s"] / 3.6e6, rel=0.1)


@pytest.mark.slow  # starts job processes
def test_cancel_stops_the_child_and_fails_as_cancelled(tmp_path: Path) -> None:
    service = FakeService()
    reached = step_at_least(3)
    job = service.add_job(
        "burn-in",
        burnin(steps=10_000),
        action_rule=lambda j, b: "cancel" if reached(j, b) else "continue",
    )
    started = time.monotonic()
    make_agent(service, tmp_path).run()
    verb, body = finish(job)
    assert verb == "fail" and body["cancelled"] is True and body["retryable"] is False
    assert job.state == "cancelled" and len(job.finishes) == 1
    assert time.monotonic() - started < 60  # it did not run the 10,000 steps
    # The checkpoint uploader may have sent a checkpoint while the job ran (timing); the
    # cancel itself uploads no outputs.
    assert set(service.artifacts.get(job.id, {})) <= {"checkpoint.tar"}


@pytest.mark.slow  # starts job processes
def test_pause_releases_with_checkpoint_then_resumes(tmp_path: Path) -> None:
    service = FakeService()
    reached = step_at_least(8)

    def pause_first_attempt(job: FakeJob, body: dict[str, Any]) -> str:
        return "pause" if job.attempt == 1 and reached(job, body) else "continue"

    job = service.add_job("burn-in", burnin(steps=30), action_rule=pause_first_attempt)
    make_agent(service, tmp_path, max_jobs=2).run()
    assert [verb for verb, _ in job.finishes] == ["release", "complete"]
    assert job.finishes[0][1]["reason"] == "paused"
    assert job.claims[1]["resume_from"]["artifact"] == CHECKPOINT
    paused_at = max(job.steps_seen(attempt=1))
    resumed_from = min(job.steps_seen(attempt=2))
    assert resumed_from > 1  # the second attempt did not start over
    messages = [event["message"] for event in job.events()]
    assert any(m.startswith("resumed burn-in from step") for m in messages)
    assert int(next(m for m in messages if "from step" in m).split()[-1]) >= min(8, paused_at)
    assert finish(job)[1]["result"]["steps"] == 30


@pytest.mark.slow  # starts job processes
def test_corrupted_checkpoint_is_refused_and_the_job_restarts(tmp_path: Path) -> None:
    service = FakeService()
    job = service.add_job("burn-in", burnin(steps=15, sleep=0.01), corrupt_resume=True)
    service.artifacts[job.id] = {CHECKPOINT: b"an earlier attempt's checkpoint"}
    make_agent(service, tmp_path).run()
    assert finish(job)[0] == "complete"
    kinds = [event["type"] for event in job.events()]
    assert "checkpoint_rejected" in kinds and "resumed" not in kinds
    # The workload found no checkpoint, so it started from scratch.
    messages = [event["message"] for event in job.events()]
    assert not any(m.startswith("resumed burn-in") for m in messages)
    assert finish(job)[1]["result"]["steps"] == 15


@pytest.mark.slow  # starts job processes
def test_child_crash_is_a_retryable_failure(tmp_path: Path) -> None:
    service = FakeService()
    hard = service.add_job("burn-in", burnin(steps=50, exit_at_step=4))
    soft = service.add_job("burn-in", burnin(steps=50, fail_at_step=2))
    agent = make_agent(service, tmp_path, max_jobs=2)
    agent.run()
    verb, body = finish(hard)
    assert verb == "fail" and body["retryable"] is True and body["cancelled"] is False
    assert "exited with code 3" in body["error"]
    assert body["energy"]["attempt"] == 1  # metered in the agent, so the report survives
    verb, body = finish(soft)
    assert verb == "fail" and "injected at step 2" in body["error"]


@pytest.mark.slow  # starts job processes
def test_lease_lost_stops_the_child_without_further_writes(tmp_path: Path) -> None:
    service = FakeService()
    reached = step_at_least(3)
    stolen_at: list[int] = []

    def steal(job: FakeJob, body: dict[str, Any]) -> str:
        if reached(job, body) and not stolen_at:
            job.lease_token = "now-owned-by-someone-else"
            stolen_at.append(len(service.requests))
        return "continue"

    job = service.add_job("burn-in", burnin(steps=10_000), action_rule=steal)
    make_agent(service, tmp_path, lease_lost_grace_seconds=2).run()
    assert job.finishes == [] and stolen_at
    # Checkpoints uploaded while the lease was held are fine; after the loss no finishing
    # call is made, and an upload already in flight is refused by the fence (nothing stored).
    after_loss = list(zip(service.requests, service.statuses, strict=True))[stolen_at[0] :]
    assert not [p for (_, p), _ in after_loss if p.endswith(("/complete", "/fail", "/release"))]
    assert all(status == 409 for (_, p), status in after_loss if "/artifacts/" in p)


@pytest.mark.slow  # starts job processes
def test_unknown_kind_fails(tmp_path: Path) -> None:
    service = FakeService()
    job = service.add_job("mystery", {})
    make_agent(service, tmp_path).run()
    verb, body = finish(job)
    assert verb == "fail" and "unknown job kind" in body["error"]


@pytest.mark.slow  # starts job processes
def test_finetune_job_trains_and_uploads_adapters(tmp_path: Path) -> None:
    service = FakeService(heartbeat_seconds=0.5)
    service.datasets["ds-1"] = tiny_dataset_zip()
    job = service.add_job(
        "gpt-sovits-finetune",
        {"model_size": "tiny", "max_steps": 2, "batch_size": 2, "save_every_steps": 1},
        dataset_id="ds-1",
    )
    # A labelled fake NVML GPU: the job trains on the CPU, the heartbeats read this GPU.
    gpu = FakeGpu(UUID, util_pct=88, temperature_c=67, memory_used_mib=4096)
    make_agent(service, tmp_path, nvml=Nvml.open(FakeNvml([gpu])), keep_job_dirs=True).run()
    [attempt_dir] = (tmp_path / "jobs").glob(f"{job.id}-attempt-1-*")
    dataset_dir = attempt_dir / "dataset"
    assert (dataset_dir / "voice.list").exists()  # the zip was fetched and unpacked
    verb, body = finish(job)
    assert verb == "complete", body.get("error")
    telemetry = [
        b["progress"]["telemetry"] for b in job.heartbeats if "telemetry" in b.get("progress", {})
    ]
    assert telemetry, job.heartbeats
    [reading] = telemetry[-1]["gpus"]
    assert (reading["rank"], reading["util_pct"], reading["temp_c"]) == (0, 88.0, 67.0)
    assert reading["mem_used_mib"] == 4096.0 and telemetry[-1]["step_time_s"] > 0
    energy = body["energy"]
    assert [phase["name"] for phase in energy["phases"]] == ["prepare", "s1", "s2"]
    assert [phase["optimizer_steps"] for phase in energy["phases"]] == [0, 2, 2]
    assert energy["audio_seconds"] == pytest.approx(2.0, rel=0.05)  # two 1 s clips
    assert body["result"]["steps"] == {"s1": 2, "s2": 2}
    assert {"s1_lora.safetensors", "s2_lora.safetensors", CHECKPOINT, "tensorboard-1.tar"} <= set(
        service.artifacts[job.id]
    )
    # Beside the adapters: the merged GPT in GPT-SoVITS's format and the adapter config.
    assert {"gpt_merged.ckpt", "adapter_config.json"} <= set(service.artifacts[job.id])
    assert service.artifacts[job.id]["gpt_merged.ckpt"][:2] == b"PK"


def test_zip_members_cannot_escape(tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("../outside.txt", "x")
    with pytest.raises(ValueError, match="escapes"):
        unpack_zip(archive, tmp_path / "out")
    assert not (tmp_path / "outside.txt").exists()


@pytest.mark.slow  # starts job processes
def test_sigterm_checkpoints_releases_and_returns(tmp_path: Path) -> None:
    service = FakeService()
    job = service.add_job("burn-in", burnin(steps=10_000))
    before = signal.getsignal(signal.SIGTERM)

    def terminate_once_running() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(s >= 3 for s in job.steps_seen()):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=terminate_once_running, daemon=True).start()
    run_agent(
        "http://service",
        FLEET_TOKEN,
        gpus=None,
        zone="ES",
        work_dir=tmp_path,
        cpu_only=True,
        poll_seconds=0.05,
        transport=service.transport(),
        options={"codecarbon": False, "sample_seconds": 0.1},
    )
    verb, body = finish(job)
    assert verb == "release" and body["reason"] == "shutdown"
    assert CHECKPOINT in service.artifacts[job.id]
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.slow  # starts job processes
def test_lease_is_renewed_while_artifacts_upload(tmp_path: Path) -> None:
    service = FakeService(heartbeat_seconds=0.1)
    service.upload_delay_seconds = 0.5
    job = service.add_job("burn-in", burnin(steps=5, sleep=0.0))
    make_agent(service, tmp_path).run()
    assert finish(job)[0] == "complete"
    calls = [path for _, path in service.requests]
    first_upload = next(i for i, p in enumerate(calls) if "/artifacts/" in p)
    completed = next(i for i, p in enumerate(calls) if p.endswith("/complete"))
    beats_during_upload = [
        p for p in calls[first_upload:completed] if p.endswith(f"/jobs/{job.id}/heartbeat")
    ]
    assert beats_during_upload


@pytest.mark.slow  # starts job processes
def test_agent_registers_again_when_the_service_forgets_it(tmp_path: Path) -> None:
    service = FakeService()
    agent = make_agent(service, tmp_path)
    runner = threading.Thread(target=agent.run, daemon=True)
    runner.start()
    deadline = time.monotonic() + 30
    while not service.registrations and time.monotonic() < deadline:
        time.sleep(0.02)
    with service.lock:
        service.worker_tokens.clear()  # e.g. the service's database was reset
        job = service.add_job("burn-in", burnin(steps=3, sleep=0.0))
    runner.join(timeout=60)
    assert len(service.registrations) == 2
    assert finish(job)[0] == "complete"


def test_worker_needs_a_zone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GREENWINDOW_ZONE", raising=False)
    with pytest.raises(SystemExit, match="zone"):
        run_agent(
            "http://service",
            FLEET_TOKEN,
            gpus=None,
            zone=None,
            work_dir=tmp_path,
            cpu_only=True,
            poll_seconds=0.05,
            transport=FakeService().transport(),
        )


def test_worker_gpus_from_nvml_indices() -> None:
    fake = FakeNvml([FakeGpu(UUID), FakeGpu("GPU-bbbbbbbb-0000-0000-0000-000000000000")])
    nvml = Nvml.open(fake)
    assert [info.uuid for info, _ in resolve_worker_gpus(nvml, [1], cpu_only=False)] == [
        "GPU-bbbbbbbb-0000-0000-0000-000000000000"
    ]
    assert len(resolve_worker_gpus(nvml, None, cpu_only=False)) == 2
    assert resolve_worker_gpus(nvml, None, cpu_only=True) == []
    with pytest.raises(SystemExit, match="not found"):
        resolve_worker_gpus(nvml, [5], cpu_only=False)
    without_driver = Nvml.open(FakeNvml([], library_missing=True))
    with pytest.raises(SystemExit, match="--cpu-only"):
        resolve_worker_gpus(without_driver, None, cpu_only=False)


class Unreachable(httpx.BaseTransport):
    """Refuses the first ``failures`` connections, then forwards to the fake service."""

    def __init__(self, inner: httpx.BaseTransport, failures: int) -> None:
        self.inner = inner
        self.failures = failures

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.failures > 0:
            self.failures -= 1
            raise httpx.ConnectError("connection refused")
        return self.inner.handle_request(request)


@pytest.mark.slow  # starts job processes
def test_agent_waits_for_the_service_to_come_up(tmp_path: Path) -> None:
    service = FakeService()
    job = service.add_job("burn-in", burnin(steps=3, sleep=0.0))
    client = WorkerClient(
        "http://service",
        FLEET_TOKEN,
        retries=0,
        transport=Unreachable(service.transport(), failures=3),
    )
    agent = Agent(
        client,
        AgentOptions(
            work_dir=tmp_path,
            zone="ES",
            cpu_only=True,
            poll_seconds=0.01,
            max_jobs=1,
            codecarbon=False,
        ),
        nvml=Nvml(None),
        gpus=[],
    )
    agent.run()
    assert len(service.registrations) == 1
    assert finish(job)[0] == "complete"


def test_tracking_mode_avoids_double_counting_shared_hosts() -> None:
    assert default_tracking_mode(offered_gpus=8, host_gpus=8) == "machine"
    assert default_tracking_mode(offered_gpus=1, host_gpus=8) == "process"
    assert default_tracking_mode(offered_gpus=0, host_gpus=0) == "machine"  # CPU-only
