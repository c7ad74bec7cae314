"""GPU memory a job needs per device, before it has run, and which workers can hold it.

Priors (documented guesses, replaced by measurements as jobs report `torch_peak_mib`):

- Static memory per stage and model size (`STATIC_MIB`): the CUDA context, the frozen
  weights, the adapters with their Adam states and the allocator's working set.
- Activations per sample of the micro-batch (`ACTIVATION_MIB_PER_SAMPLE`) at mixed
  precision; the micro-batch is `batch_size` per device (gradient accumulation adds no
  activations). fp32 doubles activations and adds `FP32_STATIC_FACTOR` to the static part.
- Gradient checkpointing keeps `CHECKPOINT_ACTIVATION_SHARE` of the activations (the rest
  is recomputed in the backward pass, which costs time: see
  `estimate.GRAD_CHECKPOINT_SLOWDOWN`).
- A full fine-tune (`lora_rank` 0) also holds gradients and Adam states of every weight
  (`FULL_FINETUNE_MIB`); LoRA's adapters grow a little with the rank.
- `both` needs the larger of its two stages (they run one after the other).
- Margin: priors are multiplied by `PRIOR_MARGIN`.

Learning: `MemoryModel.observe(signature, peak_mib)` records an attempt's measured peak
(the largest `torch_peak_mib` any rank reported); the need for that signature blends the
largest peak seen (with `LEARNED_MARGIN`; memory is sized for the worst step, not the mean)
with the prior, the prior counting as `PRIOR_WEIGHT` observations. Pure: the service
stores the peaks and rebuilds the model.

A declared `config.memory_mib` is used as given.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from worker.training.config import FinetuneConfig

STATIC_MIB = {
    ("s1", "v2"): 3_000.0,
    ("s2", "v2"): 4_500.0,
    ("s1", "tiny"): 300.0,
    ("s2", "tiny"): 400.0,
}
ACTIVATION_MIB_PER_SAMPLE = {
    ("s1", "v2"): 550.0,
    ("s2", "v2"): 900.0,
    ("s1", "tiny"): 20.0,
    ("s2", "tiny"): 30.0,
}
FULL_FINETUNE_MIB = {
    ("s1", "v2"): 2_400.0,
    ("s2", "v2"): 1_200.0,
    ("s1", "tiny"): 50.0,
    ("s2", "tiny"): 50.0,
}
LORA_MIB_PER_RANK = 2.0
FP32_ACTIVATION_FACTOR = 2.0
FP32_STATIC_FACTOR = 1.3
CHECKPOINT_ACTIVATION_SHARE = 0.35
PRIOR_MARGIN = 1.2
LEARNED_MARGIN = 1.1
PRIOR_WEIGHT = 2.0
# Burn-in: a CUDA context plus its three square fp32 matrices.
BURN_IN_CONTEXT_MIB = 300.0


@dataclass(frozen=True)
class MemoryNeed:
    """GPU memory per device (MiB) and where the figure comes from."""

    mib: float
    source: str  # declared, prior, blended
    observations: int = 0


def memory_signature(config: FinetuneConfig) -> str:
    """Runs that should peak alike: what sets the per-device memory, not the run length."""
    fields = config.model_dump(
        include={
            "stage",
            "model_size",
            "batch_size",
            "lora_rank",
            "lora_ffn",
            "precision",
            "grad_checkpointing",
        }
    )
    text = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _stages(config: FinetuneConfig) -> list[str]:
    return ["s1", "s2"] if config.stage == "both" else [config.stage]


def prior_need_mib(config: FinetuneConfig) -> float:
    """Per-device memory from the documented priors alone (margin included)."""
    needs = []
    for stage in _stages(config):
        key = (stage, config.model_size)
        static = STATIC_MIB[key]
        if config.lora_rank == 0:
            static += FULL_FINETUNE_MIB[key]
        else:
            static += LORA_MIB_PER_RANK * config.lora_rank * (2 if config.lora_ffn else 1)
        activations = ACTIVATION_MIB_PER_SAMPLE[key] * config.batch_size
        if config.precision == "fp32":
            static *= FP32_STATIC_FACTOR
            activations *= FP32_ACTIVATION_FACTOR
        if config.grad_checkpointing:
            activations *= CHECKPOINT_ACTIVATION_SHARE
        needs.append(static + activations)
    return max(needs) * PRIOR_MARGIN


def burn_in_need_mib(config: dict[str, Any]) -> float:
    size = int(config.get("size") or 256)
    return BURN_IN_CONTEXT_MIB + 3 * size * size * 4 / 2**20


@dataclass
class MemoryModel:
    """Priors blended with the largest measured peak per memory signature."""

    peaks: dict[str, tuple[int, float]] = field(default_factory=dict)

    def observe(self, signature: str, peak_mib: float) -> None:
        """Record one attempt's measured peak."""
        if not peak_mib > 0:
            raise ValueError("a measured peak must be positive")
        count, largest = self.peaks.get(signature, (0, 0.0))
        self.peaks[signature] = (count + 1, max(largest, peak_mib))

    def finetune_need(self, config: FinetuneConfig) -> MemoryNeed:
        if config.memory_mib is not None:
            return MemoryNeed(float(config.memory_mib), "declared")
        prior = prior_need_mib(config)
        count, largest = self.peaks.get(memory_signature(config), (0, 0.0))
        if count == 0:
            return MemoryNeed(prior, "prior")
        weight = count / (count + PRIOR_WEIGHT)
        mib = weight * largest * LEARNED_MARGIN + (1 - weight) * prior
        return MemoryNeed(mib, "blended", count)

    def need(self, kind: str, config: dict[str, Any]) -> MemoryNeed | None:
        """The need of a stored job (its validated config); None when it cannot be told."""
        if kind == "burn-in":
            declared = config.get("memory_mib")
            if isinstance(declared, int | float) and declared > 0:
                return MemoryNeed(float(declared), "declared")
            return MemoryNeed(burn_in_need_mib(config), "prior")
        try:
            parsed = FinetuneConfig.model_validate(config)
        except ValidationError:
            return None
        return self.finetune_need(parsed)


def worker_memory_mib(gpus: list[dict[str, Any]] | None, cpu_only: bool) -> int | None:
    """Memory of the worker's smallest GPU (a job's every device must hold it); None for a
    CPU-only worker or one that did not register every GPU's memory (not known: not
    filtered, the worker's own micro-batch probe sizes the job)."""
    if cpu_only or not gpus:
        return None
    sizes: list[int] = []
    for gpu in gpus:
        size = gpu.get("memory_mib")
        if not isinstance(size, int) or size <= 0:
            return None
        sizes.append(size)
    return min(sizes)


def fits(need: MemoryNeed | None, worker_mib: int | None) -> bool:
    """Whether a device of `worker_mib` holds the need (unknown on either side: yes)."""
    return need is None or worker_mib is None or need.mib <= worker_mib
