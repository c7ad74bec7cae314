"""Mixed-precision policy: which autocast dtype to use and whether a GradScaler is needed."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch

Precision = Literal["bf16", "fp16", "fp32"]


def resolve_precision(requested: str, device: torch.device) -> Precision:
    """auto = bf16 where the GPU supports it, fp16 on older GPUs, fp32 on CPU."""
    if requested != "auto":
        return requested  # type: ignore[return-value]  # the CLI offers only these names
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


@dataclass
class Amp:
    """Autocast context and loss scaler for one precision on one device."""

    precision: Precision
    device: torch.device
    scaler: torch.amp.GradScaler

    @classmethod
    def create(cls, requested: str, device: torch.device) -> Amp:
        """Policy for a requested precision (auto|bf16|fp16|fp32) on device."""
        precision = resolve_precision(requested, device)
        # fp16 needs loss scaling to keep small gradients from flushing to zero; bf16 does not.
        scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
        return cls(precision, device, scaler)

    @property
    def dtype(self) -> torch.dtype | None:
        """Autocast dtype, None for fp32."""
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Autocast region for forward passes (losses switch it off themselves)."""
        if self.dtype is None:
            yield
            return
        with torch.autocast(self.device.type, dtype=self.dtype):
            yield
