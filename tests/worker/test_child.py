"""Child-process helpers: progress throttling and the workload dispatch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import worker.child as child
from worker.child import ChildSpec, run_workload


def test_progress_is_throttled_but_events_are_not(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(child.time, "monotonic", lambda: now[0])
    sent: list[dict[str, Any]] = []
    report = child._throttled(sent.append, every_seconds=0.1)
    report({"type": "progress", "step": 1})
    report({"type": "progress", "step": 2})  # same instant: dropped
    report({"type": "event", "message": "kept"})
    now[0] += 0.15
    report({"type": "progress", "step": 3})
    assert [m.get("step", m.get("message")) for m in sent] == [1, "kept", 3]


def test_run_workload_returns_plain_data(tmp_path: Path) -> None:
    spec = ChildSpec(kind="burn-in", config={"steps": 4, "size": 4, "checkpoint_every": 2},
                     work_dir=str(tmp_path), dataset_dir=None, gpus=1, cuda_visible_devices="")
    result = run_workload(spec, report=lambda m: None, stop_requested=lambda: None)
    assert result["type"] == "result" and result["status"] == "succeeded"
    assert result["steps"] == 4
    assert result["checkpoint"] == str(tmp_path / "checkpoints" / "burnin.pt")
    assert set(result["metrics"]) == {"final_mean_abs"}


def test_finetune_without_dataset_is_refused(tmp_path: Path) -> None:
    spec = ChildSpec(kind="gpt-sovits-finetune", config={}, work_dir=str(tmp_path),
                     dataset_dir=None, gpus=1, cuda_visible_devices="")
    with pytest.raises(ValueError, match="needs a dataset"):
        run_workload(spec, report=lambda m: None, stop_requested=lambda: None)
