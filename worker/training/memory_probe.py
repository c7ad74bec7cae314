"""Pick the largest micro-batch that fits the device's free memory, before training starts.

A short probe with the real model: forward and backward on a batch made of the longest
training item repeated (the worst case the epoch plan can hand a step), at the configured
micro-batch, then halving until it fits. The effective batch stays the same: the trainer
splits each optimizer step's items into micro-batches and accumulates their gradients.
Under DDP every rank probes its own device and all take the smallest answer.

The probe leaves the models as it found them: gradients dropped, buffers and the random
number generators restored, so a probed run trains exactly like an unprobed one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.distributed as dist

from worker.training.batches import TrainingItem, to_device
from worker.training.checkpoint import capture_rng, restore_rng
from worker.training.stages import Stage

MIB = 1024 * 1024
# Training also holds optimizer state and suffers fragmentation: keep a margin of free memory.
CUDA_HEADROOM = 0.85


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


class MemoryBudget(Protocol):
    """Runs one trial and says whether it fitted the memory there is."""

    def fits(self, trial: Callable[[], None]) -> bool:
        """Run ``trial``; False if it ran out of memory or used more than the budget."""
        ...


@dataclass
class CudaBudget:
    """The GPU's free memory (torch.cuda.mem_get_info), less a headroom."""

    device: torch.device
    headroom: float = CUDA_HEADROOM

    def fits(self, trial: Callable[[], None]) -> bool:
        """Run ``trial``; True when its peak allocation stayed within the free memory."""
        torch.cuda.empty_cache()
        free, _ = torch.cuda.mem_get_info(self.device)
        base = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        try:
            trial()
        except RuntimeError as err:
            if not _is_oom(err):
                raise
            return False
        finally:
            torch.cuda.empty_cache()
        peak = torch.cuda.max_memory_allocated(self.device) - base
        return peak <= free * self.headroom


@dataclass
class SavedTensorBudget:
    """A cap on the bytes autograd keeps for the backward pass (activations).

    Activation memory is what grows with the micro-batch, so this measures the same thing a
    GPU runs out of; it works on any device, which lets the probe be exercised on a CPU.
    """

    cap_mib: float
    # A different cap on some ranks of a DDP job, as on a host whose GPUs differ.
    rank_caps_mib: dict[int, float] = field(default_factory=dict)

    def fits(self, trial: Callable[[], None]) -> bool:
        """Run ``trial`` with every saved tensor counted; False once the cap is passed."""
        used = [0]
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        cap_mib = self.rank_caps_mib.get(rank, self.cap_mib)
        cap = cap_mib * MIB

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            used[0] += tensor.numel() * tensor.element_size()
            if used[0] > cap:
                raise torch.OutOfMemoryError(f"saved tensors passed the {cap_mib} MiB cap")
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            try:
                trial()
            except RuntimeError as err:
                if not _is_oom(err):
                    raise
                return False
        return True


def default_budget(device: torch.device) -> MemoryBudget | None:
    """The GPU's free memory on CUDA; none elsewhere (a CPU's RAM is not probed)."""
    return CudaBudget(device) if device.type == "cuda" else None


def candidates(largest: int) -> list[int]:
    """The micro-batches to try, largest first: ``largest`` then halving down to 1."""
    sizes, size = [], max(1, largest)
    while True:
        sizes.append(size)
        if size == 1:
            return sizes
        size = max(1, size // 2)


def longest_item(items: Sequence[TrainingItem]) -> TrainingItem:
    """The item with the most audio (and so the longest token and frame sequences)."""
    return max(items, key=lambda item: (len(item.wav32k), len(item.semantic)))


@contextlib.contextmanager
def _left_as_found(stage: Stage) -> Iterator[None]:
    rng = capture_rng()
    buffers = {
        key: {n: b.detach().clone() for n, b in model.named_buffers()}
        for key, model in stage.models.items()
    }
    modes = {key: model.training for key, model in stage.models.items()}
    try:
        yield
    finally:
        with torch.no_grad():
            for key, model in stage.models.items():
                current = dict(model.named_buffers())
                for name, value in buffers[key].items():
                    current[name].copy_(value)
                model.train(modes[key])
                for param in model.parameters():
                    param.grad = None
        restore_rng(rng)


def probe_micro_batch(
    stage: Stage,
    items: Sequence[TrainingItem],
    largest: int,
    device: torch.device,
    budget: MemoryBudget,
    *,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
) -> int:
    """The largest micro-batch (``largest`` or a halving of it) whose step fits ``budget``.

    1 when even that does not fit: training then tries, and the OOM back-off reports it.
    """
    worst = longest_item(items)

    def trial(size: int) -> Callable[[], None]:
        def run() -> None:
            batch = to_device(stage.collate([worst] * size), device)
            with autocast():
                out = stage.forward(batch, stage.models)
            losses = [loss.float() for loss in out.optimised.values()]
            objective = losses[0]
            for loss in losses[1:]:
                objective = objective + loss
            objective.backward()

        return run

    with _left_as_found(stage):
        for size in candidates(largest):
            if budget.fits(trial(size)):
                return size
            for model in stage.models.values():
                for param in model.parameters():
                    param.grad = None
    return 1
