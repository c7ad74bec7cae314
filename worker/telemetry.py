"""Live training telemetry for job heartbeats (docs/worker-protocol.md, "telemetry").

The job process sends, with each progress message, the step's figures and every rank's torch
memory counters; the agent adds what NVML says about each rank's GPU and cleans the result
into the agreed heartbeat shape: finite numbers only, a non-finite figure sent as null and
named in ``nonfinite``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from worker.metering.nvml import GpuInfo

# One entry per rank; no job spans more GPUs than a worker registers (64 at most).
MAX_RANKS = 64
STEP_FIELDS = ("step_time_s", "samples_per_s", "loss", "grad_norm", "kl", "mel")
TORCH_FIELDS = ("torch_allocated_mib", "torch_reserved_mib", "torch_peak_mib")
# Readings a rank may take itself (a job process with NVML) when the agent has no handle.
NVML_FIELDS = ("util_pct", "mem_used_mib", "mem_total_mib", "temp_c", "power_w")
MIB = 1024 * 1024
NVML_TEMPERATURE_GPU = 0  # pynvml's NVML_TEMPERATURE_GPU


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _finite_or_none(value: Any) -> float | None:
    number = _number(value)
    return number if number is not None and math.isfinite(number) else None


def nvml_readings(nvml: Any, handle: Any) -> dict[str, float | None]:
    """Utilisation, memory, temperature and power of one GPU; None for what it cannot read."""
    reads = {
        "util_pct": lambda: nvml.nvmlDeviceGetUtilizationRates(handle).gpu,
        "mem_used_mib": lambda: nvml.nvmlDeviceGetMemoryInfo(handle).used / MIB,
        "mem_total_mib": lambda: nvml.nvmlDeviceGetMemoryInfo(handle).total / MIB,
        "temp_c": lambda: nvml.nvmlDeviceGetTemperature(handle, NVML_TEMPERATURE_GPU),
        "power_w": lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,
    }
    out: dict[str, float | None] = {}
    for key, read in reads.items():
        try:
            out[key] = _finite_or_none(float(read()))
        except Exception:  # noqa: BLE001 - unsupported on this GPU (or a failed read): null
            out[key] = None
    return out


def heartbeat_telemetry(
    raw: Any, gpus: Sequence[tuple[GpuInfo, Any]], nvml: Any | None
) -> dict[str, Any] | None:
    """The heartbeat's ``progress.telemetry`` from a job process's figures, or None.

    ``gpus`` are the job's GPUs in rank order (rank r runs on the r-th visible device), read
    through ``nvml`` (a pynvml-like module); a rank without one keeps its own readings.
    """
    if not isinstance(raw, dict):
        return None
    out: dict[str, Any] = {}
    nonfinite: list[str] = []
    for key in STEP_FIELDS:
        number = _number(raw.get(key))
        if number is not None and not math.isfinite(number):
            nonfinite.append(key)
            number = None
        out[key] = number
    ranks = raw.get("ranks")
    entries: list[dict[str, Any]] = []
    for position, rank in enumerate(ranks[:MAX_RANKS] if isinstance(ranks, list) else []):
        if not isinstance(rank, dict):
            continue
        rank_number = rank.get("rank")
        rank_id = rank_number if isinstance(rank_number, int) and rank_number >= 0 else position
        entry: dict[str, Any] = {"rank": rank_id}
        if rank_id < len(gpus) and nvml is not None:
            info, handle = gpus[rank_id]
            entry["index"] = info.index
            entry.update(nvml_readings(nvml, handle))
        else:
            device = rank.get("index")
            entry["index"] = device if isinstance(device, int) and device >= 0 else rank_id
            entry.update({key: _finite_or_none(rank.get(key)) for key in NVML_FIELDS})
        for key in TORCH_FIELDS:
            entry[key] = _finite_or_none(rank.get(key)) or 0.0
        entries.append(entry)
    out["gpus"] = sorted(entries, key=lambda entry: entry["rank"])
    if nonfinite:
        out["nonfinite"] = nonfinite
    return out
