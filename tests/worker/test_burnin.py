"""The burn-in workload: progress, checkpoints, stop requests and resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from worker.burnin import BurninConfig, checkpoint_path, run_burnin


def small(**overrides: Any) -> BurninConfig:
    return BurninConfig(**{"steps": 30, "size": 16, "checkpoint_every": 5, **overrides})


def test_full_run_reports_progress_and_writes_outputs(tmp_path: Path) -> None:
    events: list[dict[str, Any]] = []
    result = run_burnin(small(), tmp_path, report=events.append)
    assert result.status == "succeeded" and result.steps == 30
    progress = [e for e in events if e["type"] == "progress"]
    assert [e["step"] for e in progress] == list(range(1, 31))
    assert progress[-1]["total_steps"] == 30
    assert result.checkpoint == checkpoint_path(tmp_path) and result.checkpoint.exists()
    assert [p.name for p in result.outputs] == ["burnin_state.pt"]
    assert torch.load(result.checkpoint, weights_only=True)["step"] == 30


def test_pause_then_resume_equals_an_unbroken_run(tmp_path: Path) -> None:
    unbroken = run_burnin(small(), tmp_path / "a")
    calls = {"n": 0}

    def pause_after_twelve_steps() -> str | None:
        calls["n"] += 1
        return "pause" if calls["n"] > 12 else None

    paused = run_burnin(small(), tmp_path / "b", stop_requested=pause_after_twelve_steps)
    assert paused.status == "paused" and paused.steps == 12
    assert torch.load(paused.checkpoint, weights_only=True)["step"] == 12
    events: list[dict[str, Any]] = []
    resumed = run_burnin(small(), tmp_path / "b", report=events.append)
    assert resumed.status == "succeeded" and resumed.steps == 30
    assert events[0] == {"type": "event", "message": "resumed burn-in from step 12"}
    assert [e["step"] for e in events if e["type"] == "progress"][0] == 13
    assert torch.equal(
        torch.load(unbroken.outputs[0], weights_only=True),
        torch.load(resumed.outputs[0], weights_only=True),
    )


def test_resume_from_periodic_checkpoint_after_crash(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="injected at step 17"):
        run_burnin(small(fail_at_step=17), tmp_path)
    # The last periodic checkpoint (step 15) survives the crash.
    assert torch.load(checkpoint_path(tmp_path), weights_only=True)["step"] == 15
    resumed = run_burnin(small(), tmp_path)
    reference = run_burnin(small(), tmp_path / "ref")
    assert torch.equal(
        torch.load(resumed.outputs[0], weights_only=True),
        torch.load(reference.outputs[0], weights_only=True),
    )


def test_stop_request_returns_stopped(tmp_path: Path) -> None:
    result = run_burnin(small(), tmp_path, stop_requested=lambda: "stop")
    assert result.status == "stopped" and result.steps == 0 and result.outputs == []


def test_config_rejects_unknown_fields() -> None:
    with pytest.raises(ValueError):
        BurninConfig.model_validate({"steps": 10, "bogus": 1})
