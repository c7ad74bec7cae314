"""Per-step hardware telemetry (torch memory counters, NVML where present) and TensorBoard logs."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


class GpuProbe:
    """Reads utilisation, power, temperature and energy of one GPU through NVML, if available."""

    def __init__(self, device: torch.device, nvml: Any | None = None) -> None:
        self.device = device
        self.handle = None
        # The pynvml module (or a stand-in with its functions): untyped.
        self.nvml: Any = nvml
        if device.type != "cuda":
            return
        try:
            if self.nvml is None:
                import pynvml

                self.nvml = pynvml
            self.nvml.nvmlInit()
            index = device.index if device.index is not None else 0
            self.handle = self.nvml.nvmlDeviceGetHandleByIndex(index)
        except Exception as err:  # noqa: BLE001 - any NVML failure just means no GPU telemetry
            log.info("NVML unavailable: %s", err)
            self.handle = None

    def energy_mj(self) -> float | None:
        """Total energy counter in millijoules, None where unsupported."""
        if self.handle is None:
            return None
        try:
            return float(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))
        except Exception:  # noqa: BLE001 - older GPUs have no energy counter
            return None

    def sample(self) -> dict[str, float]:
        """Memory counters (CUDA) and NVML readings; empty on CPU."""
        out: dict[str, float] = {}
        if self.device.type == "cuda" and torch.cuda.is_available():
            mib = 1024 * 1024
            out["mem_allocated_mb"] = torch.cuda.memory_allocated(self.device) / mib
            out["mem_reserved_mb"] = torch.cuda.memory_reserved(self.device) / mib
            out["mem_peak_mb"] = torch.cuda.max_memory_allocated(self.device) / mib
        if self.handle is None:
            return out
        readings = {
            "gpu_util_pct": lambda: self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu,
            "power_w": lambda: self.nvml.nvmlDeviceGetPowerUsage(self.handle) / 1000.0,
            "temperature_c": lambda: self.nvml.nvmlDeviceGetTemperature(self.handle, 0),
            "energy_mj": lambda: self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle),
        }
        for key, read in readings.items():
            try:
                out[key] = float(read())
            except Exception:  # noqa: BLE001 - a missing reading is skipped, not fatal
                continue
        return out


class TensorBoardLog:
    """Scalar events under work_dir/tensorboard (only the main rank writes)."""

    def __init__(self, directory: Path | None) -> None:
        self.writer = None
        if directory is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(directory))

    def scalars(self, prefix: str, values: Mapping[str, Any], step: int) -> None:
        """Log every numeric value as prefix/key."""
        if self.writer is None:
            return
        for key, value in values.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                self.writer.add_scalar(f"{prefix}/{key}", value, step)

    def close(self) -> None:
        """Flush and close the event file."""
        if self.writer is not None:
            self.writer.close()
