"""The `gpt-sovits-finetune` job config: validated at submit by the service, run by the worker.

Kept free of torch imports so the service can validate configs cheaply.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Bases a worker can hold. `none` is a random initialisation (demos and tests); every worker
# holds it. `v2` is upstream GPT-SoVITS v2 in a worker's `--models` directory.
BASE_NONE = "none"
BASE_V2 = "v2"
WORKER_BASES = (BASE_NONE, BASE_V2)
JOB_BASE_PREFIX = "job:"
_JOB_BASE = re.compile(r"^job:[0-9A-Za-z]{1,64}$")


def parent_job_id(base: str) -> str | None:
    """The job a `job:<id>` base continues from, else None."""
    return base[len(JOB_BASE_PREFIX) :] if base.startswith(JOB_BASE_PREFIX) else None


FEATURES_STAND_IN = "stand-in"
FEATURES_UPSTREAM = "upstream"


def feature_path(base: str) -> dict[str, str]:
    """Which features a job on this (resolved) base trains on; said in its events, its
    `adapter_config.json` and its energy report."""
    if base == BASE_NONE:
        return {
            "path": FEATURES_STAND_IN,
            "ssl": "log-mel stand-in projected to 768 dims (not HuBERT)",
            "bert": "zeros (no RoBERTa)",
            "semantic": "k-means codebook fitted on this dataset",
        }
    return {
        "path": FEATURES_UPSTREAM,
        "ssl": "chinese-hubert-base last hidden state (transformers)",
        "bert": "chinese-roberta-wwm-ext-large hidden_states[-3] for zh lines, zeros otherwise",
        "semantic": f"base {base} ssl_proj + quantizer",
    }


class FinetuneConfig(BaseModel):
    """Hyper-parameters of one GPT-SoVITS fine-tune (field names are a public contract)."""

    model_config = ConfigDict(extra="forbid")

    stage: Literal["s1", "s2", "both"] = "both"
    model_size: Literal["tiny", "v2"] = "v2"
    epochs: int | None = Field(default=None, ge=1, le=10_000)
    max_steps: int | None = Field(default=None, ge=1, le=1_000_000)
    batch_size: int = Field(default=8, ge=1, le=1024)
    grad_accum: int = Field(default=1, ge=1, le=1024)
    s1_learning_rate: float = Field(default=0.002, gt=0, le=1.0)
    s2_learning_rate: float = Field(default=1e-4, gt=0, le=1.0)
    lora_rank: int = Field(default=32, ge=0, le=1024)
    lora_alpha: float = Field(default=32.0, gt=0)
    lora_ffn: bool = False
    # Module paths trained in full next to the adapters; None = the stage defaults
    # (stage 1: none; stage 2: the reference encoder `ref_enc`).
    lora_trainable_modules: list[str] | None = None
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    grad_checkpointing: bool = False
    # GPU memory the job needs per device (MiB); without it, the service estimates it
    # (scheduler/planning/memory.py) and only workers with that much memory claim the job.
    memory_mib: int | None = Field(default=None, ge=1, le=4 * 1024 * 1024)
    grad_clip: float = Field(default=1.0, gt=0)
    save_every_steps: int = Field(default=50, ge=1)
    keep_last_checkpoints: int = Field(default=2, ge=1, le=100)
    seed: int = Field(default=1234, ge=0)
    # Where training starts: a base the worker holds (`v2`), `none` (random init, demos and
    # tests only) or `job:<id>` (an earlier job's result, same team). Never a path.
    base: str = BASE_NONE

    @field_validator("base")
    @classmethod
    def _known_base(cls, value: str) -> str:
        if value in WORKER_BASES or _JOB_BASE.match(value):
            return value
        raise ValueError(f"base must be one of {', '.join(WORKER_BASES)} or job:<id>")

    @model_validator(mode="after")
    def _one_length(self) -> FinetuneConfig:
        # Neither given: the original WebUI's default fine-tune length.
        if self.epochs is None and self.max_steps is None:
            self.epochs = 8
        return self


def adapter_filename(stage: str, config: FinetuneConfig) -> str:
    """File (and artifact) name of a stage's exported adapter weights."""
    return f"{stage}_{'lora' if config.lora_rank > 0 else 'full'}.safetensors"


def config_stages(config: FinetuneConfig) -> list[str]:
    """The stages a config trains, in training order."""
    return {"s1": ["s1"], "s2": ["s2"], "both": ["s1", "s2"]}[config.stage]
