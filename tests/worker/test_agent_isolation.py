"""The agent's whole loading path against a malicious checkpoint (FAKE service, real child).

See tests/security/test_worker_isolation.py for the attacks this belongs to.
"""

from __future__ import annotations

import io
import logging
import tarfile
from pathlib import Path
from typing import Any

import pytest
import torch
from support.fake_worker_service import CHECKPOINT, FLEET_TOKEN, FakeService
from support.helpers import tiny_dataset_zip

from worker.agent import Agent, AgentOptions
from worker.client import WorkerClient
from worker.metering.nvml import Nvml


class _Payload:
    """Unpickling this runs ``exec``: it writes the marker file, as an attacker's code would."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",))


@pytest.mark.slow  # a job process
def test_agent_resuming_a_malicious_checkpoint_fails_cleanly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Through the worker's whole loading path: the agent restores the job's checkpoint
    artifact, the training child loads it, the job fails with one clean line."""
    marker = tmp_path / "marker"
    staging = tmp_path / "staging" / "checkpoints"
    staging.mkdir(parents=True)
    torch.save({"format": 1, "config": _Payload(marker)}, staging / "ckpt-000001-s1-step1.pt")
    bundle = io.BytesIO()
    with tarfile.open(fileobj=bundle, mode="w") as archive:
        archive.add(staging, arcname="checkpoints")
    service = FakeService(heartbeat_seconds=0.5)
    service.datasets["ds-1"] = tiny_dataset_zip()
    job = service.add_job(
        "gpt-sovits-finetune",
        {"model_size": "tiny", "max_steps": 2, "batch_size": 2, "stage": "s1"},
        dataset_id="ds-1",
    )
    service.artifacts[job.id] = {CHECKPOINT: bundle.getvalue()}
    work_dir = tmp_path / "work"
    nvml = Nvml(None, error="no driver")
    agent = Agent(
        WorkerClient("http://service", FLEET_TOKEN, transport=service.transport()),
        AgentOptions(
            work_dir=work_dir,
            zone="ES",
            cpu_only=True,
            poll_seconds=0.05,
            max_jobs=1,
            sample_seconds=0.1,
            codecarbon=False,
        ),
        nvml=nvml,
        gpus=[],
    )
    with caplog.at_level(logging.ERROR, logger="greenwindow.worker"):
        agent.run()
    assert not marker.exists()
    verb, body = job.finishes[-1]
    assert verb == "fail"
    error = body["error"]
    assert "refused to load ckpt-000001-s1-step1.pt" in error
    assert "\n" not in error and "Traceback" not in error
    assert str(tmp_path) not in error and "/jobs/" not in error
    # The worker's own log keeps the whole story.
    assert any("Traceback" in record.getMessage() for record in caplog.records)
    assert not any((work_dir / "jobs").iterdir())  # the attempt directory is gone
