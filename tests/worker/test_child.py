"""Child-process helpers: progress throttling and the workload dispatch."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
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
    spec = ChildSpec(
        kind="burn-in",
        config={"steps": 4, "size": 4, "checkpoint_every": 2},
        work_dir=str(tmp_path),
        dataset_dir=None,
        gpus=1,
        cuda_visible_devices="",
    )
    result = run_workload(spec, report=lambda m: None, stop_requested=lambda: None)
    assert result["type"] == "result" and result["status"] == "succeeded"
    assert result["steps"] == 4
    assert result["checkpoint"] == str(tmp_path / "checkpoints" / "burnin.pt")
    assert set(result["metrics"]) == {"final_mean_abs"}


def test_finetune_without_dataset_is_refused(tmp_path: Path) -> None:
    spec = ChildSpec(
        kind="gpt-sovits-finetune",
        config={},
        work_dir=str(tmp_path),
        dataset_dir=None,
        gpus=1,
        cuda_visible_devices="",
    )
    with pytest.raises(ValueError, match="needs a dataset"):
        run_workload(spec, report=lambda m: None, stop_requested=lambda: None)


_AGENT_STANDIN = """
import sys, time
from worker.child import ChildJob, ChildSpec
child = ChildJob(ChildSpec(kind="burn-in", config={"steps": 100000, "size": 4,
    "checkpoint_every": 1, "step_sleep_s": 0.05}, work_dir=sys.argv[1], dataset_dir=None,
    gpus=1, cuda_visible_devices=""))
child.start()
print(child.process.pid, flush=True)
time.sleep(600)
"""


def _running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (an unreaped corpse uses no GPU)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_kill_9_of_the_agent_takes_the_training_child_with_it(tmp_path: Path) -> None:
    # A real agent stand-in process starts a real child, then is killed with SIGKILL.
    agent = subprocess.Popen(
        [sys.executable, "-c", _AGENT_STANDIN, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )
    try:
        assert agent.stdout is not None
        child_pid = int(agent.stdout.readline())
        # Wait until the child runs its workload (past interpreter start-up): it checkpoints.
        deadline = time.monotonic() + 60
        while not any(tmp_path.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert any(tmp_path.iterdir()) and _running(child_pid)
        agent.send_signal(signal.SIGKILL)
        agent.wait(timeout=10)
        deadline = time.monotonic() + 5
        while _running(child_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _running(child_pid), "the training child outlived its agent by 5 s"
    finally:
        agent.kill()
        with contextlib.suppress(ProcessLookupError):
            os.kill(child_pid, signal.SIGKILL)
