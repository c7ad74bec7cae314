"""The agent and base models: what it registers, and a `job:<id>` continuation fetching the
earlier job's adapters (against the FAKE service, jobs in real child processes)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from support.fake_worker_service import FLEET_TOKEN, FakeService
from support.helpers import tiny_dataset_zip

from worker.agent import Agent, AgentOptions
from worker.client import WorkerClient
from worker.metering.nvml import Nvml

TINY_S1 = {"stage": "s1", "model_size": "tiny", "batch_size": 2, "lora_rank": 4}


def run_one(service: FakeService, work: Path) -> None:
    client = WorkerClient("http://service", FLEET_TOKEN, transport=service.transport())
    options = AgentOptions(
        work_dir=work,
        zone="ES",
        cpu_only=True,
        poll_seconds=0.05,
        max_jobs=1,
        sample_seconds=0.1,
        codecarbon=False,
    )
    Agent(client, options, nvml=Nvml(None, error="no driver"), gpus=[]).run()


def test_a_continuation_downloads_and_trains_on_the_earlier_adapters(tmp_path: Path) -> None:
    service = FakeService(heartbeat_seconds=0.5)
    service.datasets["ds-1"] = tiny_dataset_zip()
    parent = service.add_job("gpt-sovits-finetune", {**TINY_S1, "max_steps": 2}, dataset_id="ds-1")
    # Service job ids are ULIDs (letters and digits).
    del service.jobs[parent.id]
    parent.id = "01PARENTJOB"
    service.jobs[parent.id] = parent
    run_one(service, tmp_path / "first")
    assert parent.finishes[-1][0] == "complete", parent.finishes[-1][1].get("error")
    # A worker without --models registers only the random-init base.
    assert service.registrations[0]["bases"] == ["none"]

    child = service.add_job(
        "gpt-sovits-finetune",
        # A learning rate too small to move anything: what comes out is where it started.
        {**TINY_S1, "max_steps": 1, "base": f"job:{parent.id}", "s1_learning_rate": 1e-12},
        dataset_id="ds-1",
    )
    run_one(service, tmp_path / "second")
    verb, body = child.finishes[-1]
    assert verb == "complete", body.get("error")
    assert ("GET", f"/v1/jobs/{parent.id}/artifacts/s1_lora.safetensors") in service.requests
    adapter_config = json.loads(service.artifacts[child.id]["adapter_config.json"])
    assert adapter_config["continued_from"] == parent.id and adapter_config["base"] == "none"
    # It started from the parent's adapters (LoRA B trained away from zero), not afresh.
    parent_weights, child_weights = (
        _tensors(tmp_path / f"{job.id}.safetensors", service.artifacts[job.id])
        for job in (parent, child)
    )
    assert parent_weights.keys() == child_weights.keys()
    b_keys = [k for k in parent_weights if k.endswith("lora.b")]
    assert b_keys and any(parent_weights[k].abs().sum() > 0 for k in b_keys)
    for key, value in parent_weights.items():
        torch.testing.assert_close(child_weights[key], value, atol=1e-3, rtol=0)


def _tensors(path: Path, artifacts: dict[str, bytes]) -> dict[str, torch.Tensor]:
    path.write_bytes(artifacts["s1_lora.safetensors"])
    with safe_open(str(path), framework="pt") as handle:
        return {key: handle.get_tensor(key).float() for key in handle.keys()}


def test_a_continuation_whose_earlier_result_is_gone_fails(tmp_path: Path) -> None:
    service = FakeService(heartbeat_seconds=0.5)
    service.datasets["ds-1"] = tiny_dataset_zip()
    child = service.add_job(
        "gpt-sovits-finetune",
        {**TINY_S1, "max_steps": 1, "base": "job:01GONE"},
        dataset_id="ds-1",
    )
    run_one(service, tmp_path)
    verb, body = child.finishes[-1]
    assert verb == "fail" and "could not prepare inputs" in body["error"]
