"""Runs one job in a spawned child process, so a crash or a kill never takes the agent down.

The child sends dicts to the agent over a queue: ``progress`` and ``event`` messages from
the workload, then one ``result`` (or ``error``). The agent asks it to stop through a shared
integer the workload polls between steps. The child ignores SIGINT/SIGTERM: the agent owns
shutdown and turns it into a checkpoint-and-stop request.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import queue
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

STOP_CODES = {None: 0, "pause": 1, "stop": 2}
STOP_REASONS = {code: reason for reason, code in STOP_CODES.items()}

KIND_BURNIN = "burn-in"
KIND_FINETUNE = "gpt-sovits-finetune"
JOB_KINDS = (KIND_BURNIN, KIND_FINETUNE)
# The agent reads the queue a few times a second; more progress messages would only cost
# pickling in the training loop.
PROGRESS_EVERY_SECONDS = 0.1


@dataclass(frozen=True)
class ChildSpec:
    """Everything a child needs to run one job attempt (picklable)."""

    kind: str
    config: dict[str, Any]
    work_dir: str
    dataset_dir: str | None
    gpus: int
    cuda_visible_devices: str
    # The worker's --models directory, the job's resolved base, and for a continuation the
    # earlier job's adapter file per stage.
    models_dir: str | None = None
    base: str | None = None
    continued_from: dict[str, str] | None = None


def run_workload(
    spec: ChildSpec,
    report: Callable[[dict[str, Any]], None],
    stop_requested: Callable[[], str | None],
) -> dict[str, Any]:
    """Run the job's workload in this process and return its result as plain data."""
    work_dir = Path(spec.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    if spec.kind == KIND_BURNIN:
        from worker.burnin import BurninConfig, run_burnin

        result: Any = run_burnin(
            BurninConfig.model_validate(spec.config),
            work_dir,
            report=report,
            stop_requested=stop_requested,
        )
    elif spec.kind == KIND_FINETUNE:
        # Imported here: torch and the model code load only in the child.
        from worker.training.config import FinetuneConfig
        from worker.training.runner import run_finetune

        if spec.dataset_dir is None:
            raise ValueError("gpt-sovits-finetune needs a dataset")
        result = run_finetune(
            FinetuneConfig.model_validate(spec.config),
            Path(spec.dataset_dir),
            work_dir,
            gpus=spec.gpus,
            report=report,
            stop_requested=stop_requested,
            models_dir=Path(spec.models_dir) if spec.models_dir else None,
            base=spec.base,
            continued_from={k: Path(v) for k, v in (spec.continued_from or {}).items()},
        )
    else:
        raise ValueError(f"unknown job kind {spec.kind!r}")
    return {
        "type": "result",
        "status": result.status,
        "steps": _steps(result.steps),
        "outputs": [str(path) for path in result.outputs],
        "checkpoint": str(result.checkpoint) if result.checkpoint else None,
        "metrics": _plain(result.metrics),
    }


def _steps(steps: Any) -> int | dict[str, int]:
    # The fine-tune counts steps per stage ({"s1": 40, "s2": 60}); burn-in has one counter.
    if isinstance(steps, dict):
        return {str(stage): int(count) for stage, count in steps.items()}
    return int(steps)


def _plain(metrics: Any) -> dict[str, Any]:
    # Metrics cross a process boundary and then go out as JSON: keep plain values only.
    if not isinstance(metrics, dict):
        return {}
    return {
        str(key): value
        for key, value in metrics.items()
        if isinstance(value, (int, float, str, bool, type(None)))
    }


def _throttled(
    send: Callable[[dict[str, Any]], None], every_seconds: float = PROGRESS_EVERY_SECONDS
) -> Callable[[dict[str, Any]], None]:
    """Forward every event but at most one progress message per ``every_seconds``."""
    last = [float("-inf")]

    def report(message: dict[str, Any]) -> None:
        if message.get("type") == "progress":
            now = time.monotonic()
            if now - last[0] < every_seconds:
                return
            last[0] = now
        send(message)

    return report


PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> bool:
    """Have the kernel SIGKILL this process when its parent dies (Linux); True when set.

    Without it a `kill -9` of the agent would leave the training process running, holding
    the GPU, with nobody metering or charging its energy. The kernel ties the signal to the
    parent *thread*: the agent starts children from the thread that supervises them, which
    lives as long as the child. If the parent died before the call, exit now.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent_pid:
        os._exit(1)  # the agent is already gone: nobody would meter this run
    return True


def child_main(
    spec_data: dict[str, Any], messages: Any, stop_flag: Any, parent_pid: int | None = None
) -> None:
    """Entry point of the child process."""
    if parent_pid is not None:
        die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    spec = ChildSpec(**spec_data)
    # Set before torch initialises CUDA, so the job sees only its GPUs, in NVML's order.
    os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    os.environ["CUDA_VISIBLE_DEVICES"] = spec.cuda_visible_devices
    try:
        outcome = run_workload(
            spec,
            report=_throttled(messages.put),
            stop_requested=lambda: STOP_REASONS.get(stop_flag.value),
        )
    except BaseException:
        messages.put({"type": "error", "error": traceback.format_exc()[-4000:]})
        messages.close()
        messages.join_thread()
        raise SystemExit(1) from None
    messages.put(outcome)
    messages.close()
    messages.join_thread()  # flush the queue before the process exits


class ChildJob:
    """The agent's handle on a running child process."""

    def __init__(self, spec: ChildSpec) -> None:
        context = multiprocessing.get_context("spawn")
        self._messages = context.Queue()
        self._stop_flag = context.RawValue("i", 0)
        self.process = context.Process(
            target=child_main,
            args=(asdict(spec), self._messages, self._stop_flag, os.getpid()),
            name=f"greenwindow-job-{spec.kind}",
        )

    def start(self) -> None:
        """Start the child."""
        self.process.start()

    def request_stop(self, reason: str) -> None:
        """Ask the workload to checkpoint and stop (``pause``) or just stop (``stop``)."""
        # "stop" wins over "pause" if both are asked for.
        self._stop_flag.value = max(self._stop_flag.value, STOP_CODES[reason])

    def messages(self, wait_seconds: float = 0.0) -> list[dict[str, Any]]:
        """Messages received so far; waits up to ``wait_seconds`` for the first one."""
        received: list[dict[str, Any]] = []
        try:
            received.append(
                self._messages.get(timeout=wait_seconds)
                if wait_seconds > 0
                else self._messages.get_nowait()
            )
            while True:
                received.append(self._messages.get_nowait())
        except queue.Empty:
            pass
        return received

    def is_alive(self) -> bool:
        """True while the child runs."""
        return self.process.is_alive()

    @property
    def exitcode(self) -> int | None:
        """The child's exit code (negative: killed by that signal)."""
        return self.process.exitcode

    def kill(self) -> None:
        """Kill the child (SIGKILL) and reap it."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=10)

    def close(self) -> None:
        """Release the queue and process resources."""
        self._messages.close()
        self._messages.cancel_join_thread()
        if not self.process.is_alive():
            self.process.close()
