"""Expected duration, GPU-hours and energy of a GPT-SoVITS fine-tune, before it has run.

Priors (documented guesses, to be replaced by measurements as jobs finish):

- Dataset: GPT-SoVITS slices reference audio into clips of about `SECONDS_PER_CLIP`
  seconds, so one epoch is `ceil(clips / (batch_size x gpus x grad_accum))` optimiser steps
  per stage.
- Speed: seconds per optimiser step at batch size 8, mixed precision, on an A100, per
  stage and model size (`STEP_SECONDS_A100`); other GPUs scale by `GpuPrior.speed`
  (relative throughput); fp32 runs `FP32_SLOWDOWN` times slower on GPUs; step time grows
  with batch size and gradient accumulation (linear in samples per step) and a little with
  the LoRA rank; several GPUs add `MULTI_GPU_OVERHEAD` per step for gradient exchange;
  gradient checkpointing recomputes the forward pass of each checkpointed segment in the
  backward pass, `GRAD_CHECKPOINT_SLOWDOWN` times the step time (about one more forward
  pass of the three that make a step).
- Power: `GpuPrior.watts` per GPU at typical training load plus `HOST_WATTS` for the host.
- Fixed cost: `SETUP_MINUTES` for loading models and data per stage.
- Margin: priors are multiplied by `PRIOR_MARGIN` (late is worse than early).

Learning: `EstimateModel.observe(signature, gpu_model, seconds, kwh)` records a measured
run; estimates for that signature and GPU model blend the observed mean (with a small
`LEARNED_MARGIN`) with the prior, the prior counting as `PRIOR_WEIGHT` observations. The
model is pure: the service stores the observations and rebuilds it.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field

from worker.training.config import FinetuneConfig

SECONDS_PER_CLIP = 7.0
STEP_SECONDS_A100 = {
    ("s1", "v2"): 0.30,
    ("s2", "v2"): 0.65,
    ("s1", "tiny"): 0.03,
    ("s2", "tiny"): 0.05,
}
FP32_SLOWDOWN = 1.8
MULTI_GPU_OVERHEAD = 0.10
GRAD_CHECKPOINT_SLOWDOWN = 1.3
SETUP_MINUTES = 2.0
HOST_WATTS = 120.0
PRIOR_MARGIN = 1.25
LEARNED_MARGIN = 1.05
PRIOR_WEIGHT = 2.0


@dataclass(frozen=True)
class GpuPrior:
    """Relative training throughput (A100 = 1) and typical power draw in watts per device."""

    speed: float
    watts: float


GPU_PRIORS: dict[str, GpuPrior] = {
    "A100": GpuPrior(speed=1.0, watts=300.0),
    "H100": GpuPrior(speed=2.0, watts=550.0),
    "L4": GpuPrior(speed=0.35, watts=70.0),
    "T4": GpuPrior(speed=0.18, watts=65.0),
    "RTX 4090": GpuPrior(speed=0.85, watts=350.0),
    "CPU": GpuPrior(speed=0.02, watts=90.0),
}
_FALLBACK_GPU = "T4"  # unknown models get a slow prior: better late estimates than misses


@dataclass(frozen=True)
class Estimate:
    """Expected run: minutes, GPU-hours, kWh, average kW, and where the figures come from."""

    duration_minutes: float
    gpu_hours: float
    kwh: float
    power_kw: float
    source: str
    observations: int = 0


def normalise_gpu_model(name: str) -> str:
    """Map a device name such as `NVIDIA A100-SXM4-80GB` to a prior key (case-insensitive)."""
    upper = name.upper().replace("GEFORCE", "").replace("NVIDIA", "").strip()
    for key in sorted(GPU_PRIORS, key=len, reverse=True):
        if key.upper() in upper or key.upper().replace(" ", "") in upper.replace(" ", ""):
            return key
    return name.strip() or _FALLBACK_GPU


def _prior_for(gpu_model: str) -> GpuPrior:
    return GPU_PRIORS.get(normalise_gpu_model(gpu_model), GPU_PRIORS[_FALLBACK_GPU])


def _stages(config: FinetuneConfig) -> list[str]:
    return ["s1", "s2"] if config.stage == "both" else [config.stage]


def optimiser_steps(config: FinetuneConfig, audio_minutes: float, gpus: int = 1) -> int:
    """Optimiser steps per stage: `max_steps`, or epochs over the sliced clips."""
    if config.max_steps is not None:
        return config.max_steps
    clips = max(1, math.ceil(audio_minutes * 60.0 / SECONDS_PER_CLIP))
    samples_per_step = config.batch_size * config.grad_accum * max(gpus, 1)
    return (config.epochs or 1) * max(1, math.ceil(clips / samples_per_step))


def prior_estimate(
    config: FinetuneConfig, audio_minutes: float, gpus: int = 1, gpu_model: str = "A100"
) -> Estimate:
    """Expected run from the documented priors alone (margin included)."""
    prior = _prior_for(gpu_model)
    is_cpu = normalise_gpu_model(gpu_model) == "CPU"
    devices = max(gpus, 1)
    steps = optimiser_steps(config, audio_minutes, devices)
    seconds = 0.0
    for stage in _stages(config):
        per_step = STEP_SECONDS_A100[(stage, config.model_size)]
        per_step *= config.batch_size * config.grad_accum / 8.0
        per_step *= 1.0 + 0.1 * config.lora_rank / 128.0
        if config.precision == "fp32" or is_cpu:
            per_step *= FP32_SLOWDOWN
        if devices > 1:
            per_step *= 1.0 + MULTI_GPU_OVERHEAD
        if config.grad_checkpointing:
            per_step *= GRAD_CHECKPOINT_SLOWDOWN
        seconds += steps * per_step / prior.speed + SETUP_MINUTES * 60.0
    seconds *= PRIOR_MARGIN
    hours = seconds / 3600.0
    power_kw = (prior.watts * (1 if is_cpu else devices) + HOST_WATTS) / 1000.0
    return Estimate(
        duration_minutes=seconds / 60.0,
        gpu_hours=hours * (0 if is_cpu else devices),
        kwh=power_kw * hours,
        power_kw=power_kw,
        source="prior",
    )


def config_signature(config: FinetuneConfig, audio_minutes: float, gpus: int = 1) -> str:
    """A short key for runs that should take about as long: the config, data size and GPUs."""
    fields = config.model_dump(
        include={
            "stage",
            "model_size",
            "epochs",
            "max_steps",
            "batch_size",
            "grad_accum",
            "lora_rank",
            "lora_ffn",
            "precision",
            "grad_checkpointing",
        }
    )
    # Data size in 10 % buckets: close dataset sizes share their measurements.
    fields["audio_bucket"] = round(math.log(max(audio_minutes, 0.1)) / math.log(1.1))
    fields["gpus"] = gpus
    text = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class _Tally:
    count: int = 0
    seconds: float = 0.0
    kwh: float = 0.0


@dataclass
class EstimateModel:
    """Priors blended with measured runs per (config signature, GPU model)."""

    tallies: dict[tuple[str, str], _Tally] = field(default_factory=dict)

    def observe(self, signature: str, gpu_model: str, seconds: float, kwh: float) -> None:
        """Record one measured run."""
        if seconds <= 0 or kwh < 0:
            raise ValueError("a measured run needs positive seconds and non-negative kWh")
        tally = self.tallies.setdefault((signature, normalise_gpu_model(gpu_model)), _Tally())
        tally.count += 1
        tally.seconds += seconds
        tally.kwh += kwh

    def estimate(
        self,
        config: FinetuneConfig,
        audio_minutes: float,
        gpus: int = 1,
        gpu_model: str = "A100",
    ) -> Estimate:
        """Expected run: the prior, moved toward the measured mean as runs accumulate."""
        prior = prior_estimate(config, audio_minutes, gpus, gpu_model)
        key = (config_signature(config, audio_minutes, gpus), normalise_gpu_model(gpu_model))
        tally = self.tallies.get(key)
        if tally is None or tally.count == 0:
            return prior
        weight = tally.count / (tally.count + PRIOR_WEIGHT)
        seen_minutes = tally.seconds / tally.count / 60.0 * LEARNED_MARGIN
        seen_kwh = tally.kwh / tally.count * LEARNED_MARGIN
        minutes = weight * seen_minutes + (1 - weight) * prior.duration_minutes
        kwh = weight * seen_kwh + (1 - weight) * prior.kwh
        hours = minutes / 60.0
        return Estimate(
            duration_minutes=minutes,
            gpu_hours=prior.gpu_hours / prior.duration_minutes * minutes,
            kwh=kwh,
            power_kw=kwh / hours if hours > 0 else prior.power_kw,
            source="blended",
            observations=tally.count,
        )
