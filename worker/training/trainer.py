"""The loop shared by both stages: accumulation, AMP, clipping, fault handling, telemetry."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from worker.training.batches import EpochPlan, TrainingItem, to_device
from worker.training.checkpoint import capture_rng, restore_rng
from worker.training.distributed import DistContext
from worker.training.precision import Amp
from worker.training.stages import Stage
from worker.training.telemetry import GpuProbe, TensorBoardLog

Report = Callable[[dict[str, Any]], None]
StopPoll = Callable[[], str | None]


@dataclass
class TrainerSettings:
    """Loop settings of one stage."""

    total_steps: int
    micro_batch: int
    grad_accum: int
    grad_clip: float
    save_every_steps: int
    seed: int
    precision: str = "auto"


@dataclass
class TrainOutcome:
    """How a stage's loop ended."""

    status: Literal["completed", "paused", "stopped"]
    step: int
    metrics: dict[str, float] = field(default_factory=dict)


def steps_for(plan: EpochPlan, epochs: int | None, max_steps: int | None) -> int:
    """Optimizer steps of a stage: epochs worth of steps, capped by max_steps."""
    by_epochs = epochs * plan.steps_per_epoch if epochs is not None else None
    candidates = [n for n in (by_epochs, max_steps) if n is not None]
    return max(1, min(candidates))


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


class Trainer:
    """Runs optimizer steps of one stage over prepared items until done or asked to stop."""

    def __init__(
        self,
        stage: Stage,
        items: Sequence[TrainingItem],
        settings: TrainerSettings,
        ctx: DistContext,
        *,
        report: Report = lambda event: None,
        stop_requested: StopPoll = lambda: None,
        save: Callable[[dict[str, Any]], Any] | None = None,
        tensorboard: TensorBoardLog | None = None,
        probe: GpuProbe | None = None,
    ) -> None:
        self.stage = stage
        self.items = items
        self.settings = settings
        self.ctx = ctx
        self.report = report
        self.stop_requested = stop_requested
        self.save = save
        self.tensorboard = tensorboard or TensorBoardLog(None)
        self.probe = probe or GpuProbe(ctx.device)
        self.amp = Amp.create(settings.precision, ctx.device)
        self.plan = EpochPlan(
            n_items=len(items),
            batch_items=settings.micro_batch * settings.grad_accum * ctx.world_size,
            seed=settings.seed,
            world_size=ctx.world_size,
        )
        self.step = 0
        # What this attempt did (a resumed stage starts counting again), for the energy phases.
        self.attempt_steps = 0
        self.attempt_samples = 0
        self.micro_batch = settings.micro_batch
        self.skipped_steps = 0
        self.optimizers = stage.build_optimizers()
        self.schedulers = stage.build_schedulers(self.optimizers)
        self.wrapped = self._wrap(stage.models)
        self.last_metrics: dict[str, float] = {}

    def _wrap(self, models: dict[str, nn.Module]) -> dict[str, nn.Module]:
        if not self.ctx.active:
            return dict(models)
        device_ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
        return {k: DistributedDataParallel(m, device_ids=device_ids) for k, m in models.items()}

    # ----- checkpoint state ------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this stage exactly (collective: call on every rank)."""
        rng = self.ctx.gather(capture_rng())
        models = {}
        for key, model in self.stage.models.items():
            trainable = {
                n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad
            }
            buffers = {n: b.detach().cpu().clone() for n, b in model.named_buffers()}
            models[key] = {"params": trainable, "buffers": buffers}
        return {
            "stage": self.stage.name,
            "step": self.step,
            "micro_batch": self.micro_batch,
            "skipped_steps": self.skipped_steps,
            "models": models,
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "scaler": self.amp.scaler.state_dict(),
            "rng": rng,
            "world_size": self.ctx.world_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a state written by state_dict."""
        for key, model in self.stage.models.items():
            params = dict(model.named_parameters())
            buffers = dict(model.named_buffers())
            with torch.no_grad():
                for name, value in state["models"][key]["params"].items():
                    params[name].copy_(value)
                for name, value in state["models"][key]["buffers"].items():
                    buffers[name].copy_(value)
        for key, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][key])
        for key, sched in self.schedulers.items():
            sched.load_state_dict(state["schedulers"][key])
        if state.get("scaler"):
            self.amp.scaler.load_state_dict(state["scaler"])
        self.step = state["step"]
        self.micro_batch = state["micro_batch"]
        self.skipped_steps = state.get("skipped_steps", 0)
        rng = state["rng"]
        restore_rng(rng[self.ctx.rank] if self.ctx.rank < len(rng) else rng[0])

    def checkpoint(self) -> Any:
        """Hand the current state to the save callback (rank 0 writes it)."""
        state = self.state_dict()
        if self.save is not None and self.ctx.is_main:
            return self.save(state)
        return None

    # ----- the loop --------------------------------------------------------------------------

    def run(self) -> TrainOutcome:
        """Train until total_steps, or until stop_requested() says "pause" or "stop"."""
        total = self.settings.total_steps
        while self.step < total:
            request = self.ctx.broadcast(self.stop_requested() if self.ctx.is_main else None)
            if request in ("pause", "stop"):
                self.checkpoint()
                return TrainOutcome(
                    "paused" if request == "pause" else "stopped", self.step, self.last_metrics
                )
            self._one_step()
            if self.step % self.settings.save_every_steps == 0 and self.step < total:
                self.checkpoint()
        return TrainOutcome("completed", self.step, self.last_metrics)

    def _one_step(self) -> None:
        epoch, in_epoch = divmod(self.step, self.plan.steps_per_epoch)
        indices = self.plan.step_items(epoch, in_epoch, self.ctx.rank)
        items = [self.items[i] for i in indices]
        started = time.perf_counter()
        if self.ctx.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.ctx.device)
        metrics = self._step_with_oom_fallback(items)
        if self.ctx.device.type == "cuda":
            torch.cuda.synchronize(self.ctx.device)
        elapsed = max(time.perf_counter() - started, 1e-9)
        self.step += 1
        self.attempt_steps += 1
        self.attempt_samples += len(indices) * self.ctx.world_size
        if self.step % self.plan.steps_per_epoch == 0:
            for scheduler in self.schedulers.values():
                scheduler.step()
        if metrics is not None:
            self._emit_progress(metrics, elapsed, epoch, len(indices) * self.ctx.world_size)

    def _step_with_oom_fallback(self, items: list[TrainingItem]) -> dict[str, float] | None:
        while True:
            try:
                return self._accumulate_and_step(items)
            except RuntimeError as err:
                # Under DDP the other ranks may already wait in an all-reduce for this one, so
                # a rank cannot retry alone; the job fails and resumes from its checkpoint.
                if not _is_oom(err) or self.micro_batch <= 1 or self.ctx.active:
                    raise
                self._zero_grad()
                if self.ctx.device.type == "cuda":
                    torch.cuda.empty_cache()
                old = self.micro_batch
                self.micro_batch = max(1, old // 2)
                accumulation = math.ceil(len(items) / self.micro_batch)
                self._event(
                    f"CUDA OOM at step {self.step + 1}: retrying with micro-batch "
                    f"{self.micro_batch} x accumulation {accumulation}",
                    kind="oom",
                )

    def _zero_grad(self) -> None:
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)

    def _accumulate_and_step(self, items: list[TrainingItem]) -> dict[str, float] | None:
        self._zero_grad()
        chunks = [items[i : i + self.micro_batch] for i in range(0, len(items), self.micro_batch)]
        totals: dict[str, torch.Tensor] = {}
        for index, chunk in enumerate(chunks):
            batch = to_device(self.stage.collate(chunk), self.ctx.device)
            weight = len(chunk) / len(items)
            last = index == len(chunks) - 1
            with self._no_sync(not last), self.amp.autocast():
                out = self.stage.forward(batch, self.wrapped)
            # sum() starts from the int 0, so its type is Tensor | int; the losses are tensors.
            objective = cast(torch.Tensor, sum(loss.float() for loss in out.optimised.values()))
            objective = objective * weight
            if not self.ctx.all_true(bool(torch.isfinite(objective))):
                self._skip(f"non-finite loss at step {self.step + 1}: step skipped")
                return None
            self.amp.scaler.scale(objective).backward()
            named = {
                ("loss" if k == self.stage.export_key else f"loss_{k}"): v
                for k, v in out.optimised.items()
            }
            for key, value in {**named, **out.metrics}.items():
                totals[key] = totals.get(key, 0.0) + value.detach().float() * weight

        norms = {}
        for key, opt in self.optimizers.items():
            self.amp.scaler.unscale_(opt)
            norms[key] = torch.nn.utils.clip_grad_norm_(
                self.stage.trainable_parameters(key), self.settings.grad_clip
            )
        finite_grads = all(bool(torch.isfinite(n)) for n in norms.values())
        if not finite_grads and not self.amp.scaler.is_enabled():
            self._skip(f"non-finite gradient at step {self.step + 1}: step skipped")
            return None
        # With fp16 the scaler itself skips steps whose gradients overflowed.
        for opt in self.optimizers.values():
            self.amp.scaler.step(opt)
        self.amp.scaler.update()

        keys = sorted(totals)
        averaged = self.ctx.mean(torch.stack([totals[k] for k in keys]).detach())
        metrics = {k: float(v) for k, v in zip(keys, averaged.tolist(), strict=True)}
        metrics["grad_norm"] = float(norms[self.stage.export_key])
        for key, norm in norms.items():
            if key != self.stage.export_key:
                metrics[f"grad_norm_{key}"] = float(norm)
        return metrics

    def _no_sync(self, skip_sync: bool) -> contextlib.AbstractContextManager[Any]:
        if not (skip_sync and self.ctx.active):
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        for model in self.wrapped.values():
            stack.enter_context(model.no_sync())  # type: ignore[operator]  # a DDP-wrapped module
        return stack

    def _skip(self, message: str) -> None:
        self._zero_grad()
        self.skipped_steps += 1
        self._event(message, kind="skipped_step")

    def _event(self, message: str, kind: str) -> None:
        if self.ctx.is_main:
            self.report(
                {
                    "type": "event",
                    "kind": kind,
                    "stage": self.stage.name,
                    "step": self.step + 1,
                    "message": message,
                }
            )

    def _emit_progress(
        self, metrics: dict[str, float], elapsed: float, epoch: int, samples: int
    ) -> None:
        lr = self.optimizers[self.stage.export_key].param_groups[0]["lr"]
        event: dict[str, Any] = {
            "type": "progress",
            "stage": self.stage.name,
            "step": self.step,
            "total_steps": self.settings.total_steps,
            "epoch": epoch,
            **metrics,
            "lr": lr,
            "steps_per_s": 1.0 / elapsed,
            "samples_per_s": samples / elapsed,
            "micro_batch": self.micro_batch,
            "precision": self.amp.precision,
            "attempt_steps": self.attempt_steps,
            "attempt_samples": self.attempt_samples,
        }
        hardware = self.probe.sample()
        event.update(hardware)
        self.last_metrics = {k: v for k, v in event.items() if isinstance(v, float)}
        # Every rank's counters, for the heartbeat (a collective: every rank gets here).
        ranks = self.ctx.gather(self._rank_telemetry(hardware))
        event["telemetry"] = {
            "step_time_s": elapsed,
            "samples_per_s": samples / elapsed,
            "loss": metrics.get("loss"),
            "grad_norm": metrics.get("grad_norm"),
            "kl": metrics.get("loss_kl"),
            "mel": metrics.get("loss_mel_l1"),
            "ranks": ranks,
        }
        if self.ctx.is_main:
            self.tensorboard.scalars(self.stage.name, event, self.step)
            self.report(event)

    def _rank_telemetry(self, hardware: dict[str, float]) -> dict[str, Any]:
        """This rank's device and memory counters, in the heartbeat's names."""
        device = self.ctx.device
        return {
            "rank": self.ctx.rank,
            "index": device.index if device.index is not None else self.ctx.rank,
            "torch_allocated_mib": hardware.get("mem_allocated_mb", 0.0),
            "torch_reserved_mib": hardware.get("mem_reserved_mb", 0.0),
            "torch_peak_mib": hardware.get("mem_peak_mb", 0.0),
            "util_pct": hardware.get("gpu_util_pct"),
            "temp_c": hardware.get("temperature_c"),
            "power_w": hardware.get("power_w"),
        }
