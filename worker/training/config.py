"""The `gpt-sovits-finetune` job config: validated at submit by the service, run by the worker.

Kept free of torch imports so the service can validate configs cheaply.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


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
    grad_clip: float = Field(default=1.0, gt=0)
    save_every_steps: int = Field(default=50, ge=1)
    keep_last_checkpoints: int = Field(default=2, ge=1, le=100)
    seed: int = Field(default=1234, ge=0)
    pretrained_s1: str | None = None
    pretrained_s2: str | None = None

    @model_validator(mode="after")
    def _one_length(self) -> FinetuneConfig:
        # Neither given: the original WebUI's default fine-tune length.
        if self.epochs is None and self.max_steps is None:
            self.epochs = 8
        return self
