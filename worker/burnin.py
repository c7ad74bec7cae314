"""The ``burn-in`` job: a small torch matmul loop that exercises the worker without the model.

Each step multiplies a state matrix by a fixed random matrix and squashes it with tanh, so
the result depends on every step and a resumed run can be compared with an unbroken one.
Every ``checkpoint_every`` steps (and on a stop request) the step counter and state are saved
to ``work_dir/checkpoints/burnin.pt``; a run finds that file and resumes from it.

Config: ``{"steps": 200, "size": 256, "checkpoint_every": 20, "step_sleep_s": 0}``, plus
``seed`` and, for tests of the agent, ``fail_at_step`` (raise) and ``exit_at_step``
(kill the process without cleanup).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

CHECKPOINT_NAME = "burnin.pt"


class BurninConfig(BaseModel):
    """Parameters of a burn-in job."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(default=200, ge=1, le=10_000_000)
    size: int = Field(default=256, ge=1, le=16_384)
    checkpoint_every: int = Field(default=20, ge=1)
    step_sleep_s: float = Field(default=0.0, ge=0.0, le=60.0)
    seed: int = Field(default=0, ge=0)
    fail_at_step: int | None = None
    exit_at_step: int | None = None
    # The per-device GPU memory the service places the job by; the run itself ignores it.
    memory_mib: int | None = Field(default=None, ge=1)


@dataclass
class BurninResult:
    """How a burn-in run ended; same shape as the fine-tune runner's result."""

    status: str  # "succeeded" | "paused" | "stopped"
    steps: int
    outputs: list[Path] = field(default_factory=list)
    checkpoint: Path | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


def checkpoint_path(work_dir: Path) -> Path:
    """Where a burn-in run in ``work_dir`` keeps its checkpoint."""
    return work_dir / "checkpoints" / CHECKPOINT_NAME


def _save(path: Path, step: int, state: Any) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save({"step": step, "state": state}, partial)
    os.replace(partial, path)  # a crash mid-write never leaves a torn checkpoint


def run_burnin(
    config: BurninConfig,
    work_dir: Path,
    *,
    report: Callable[[dict[str, Any]], None] = lambda event: None,
    stop_requested: Callable[[], str | None] = lambda: None,
) -> BurninResult:
    """Run (or resume) the matmul loop; ``stop_requested`` returning "pause"/"stop" ends it."""
    import torch

    generator = torch.Generator().manual_seed(config.seed)
    weight = torch.randn(config.size, config.size, generator=generator) / config.size**0.5
    state = torch.randn(config.size, config.size, generator=generator)
    step = 0
    ckpt = checkpoint_path(work_dir)
    if ckpt.exists():
        saved = torch.load(ckpt, weights_only=True)
        step, state = int(saved["step"]), saved["state"]
        report({"type": "event", "message": f"resumed burn-in from step {step}"})
    started = time.monotonic()
    first_step = step
    while step < config.steps:
        reason = stop_requested()
        if reason is not None:
            _save(ckpt, step, state)
            status = "paused" if reason == "pause" else "stopped"
            return BurninResult(status=status, steps=step, checkpoint=ckpt)
        if config.fail_at_step == step:
            raise RuntimeError(f"burn-in failure injected at step {step}")
        if config.exit_at_step == step:
            os._exit(3)  # simulates a hard crash: no cleanup, no result
        state = torch.tanh(state @ weight)
        step += 1
        if step % config.checkpoint_every == 0:
            _save(ckpt, step, state)
        elapsed = time.monotonic() - started
        report(
            {
                "type": "progress",
                "stage": "burn-in",
                "step": step,
                "total_steps": config.steps,
                "loss": float(state.abs().mean()),
                "steps_per_s": (step - first_step) / elapsed if elapsed > 0 else None,
            }
        )
        if config.step_sleep_s:
            time.sleep(config.step_sleep_s)
    _save(ckpt, step, state)
    outputs_dir = work_dir / "outputs"
    outputs_dir.mkdir(parents=True, exist_ok=True)
    output = outputs_dir / "burnin_state.pt"
    torch.save(state, output)
    return BurninResult(
        status="succeeded",
        steps=step,
        outputs=[output],
        checkpoint=ckpt,
        metrics={"final_mean_abs": float(state.abs().mean())},
    )
