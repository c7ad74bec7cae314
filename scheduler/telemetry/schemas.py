"""The `progress.telemetry` object a job heartbeat carries (docs/worker-protocol.md).

Bounded and range-checked: a worker is not trusted, and these figures are stored, charted
and turned into warnings. NaN or infinite readings are sent as null and named in
`nonfinite`; a number that is sent must be finite and plausible.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

MAX_GPUS = 16
# 4 TiB: more memory than any single accelerator has.
MAX_MIB = 4 * 1024 * 1024

Mib = Annotated[float | None, Field(default=None, ge=0, le=MAX_MIB, allow_inf_nan=False)]
Finite = Annotated[float | None, Field(default=None, ge=-1e30, le=1e30, allow_inf_nan=False)]
TELEMETRY_FIELDS = ("step_time_s", "samples_per_s", "loss", "grad_norm", "kl", "mel")
GPU_FIELDS = (
    "util_pct",
    "mem_used_mib",
    "mem_total_mib",
    "torch_allocated_mib",
    "torch_reserved_mib",
    "torch_peak_mib",
    "temp_c",
    "power_w",
)


class GpuTelemetry(BaseModel):
    """One GPU of one rank: NVML utilisation, memory, temperature and power, and what the
    training process's torch allocator holds on it."""

    model_config = ConfigDict(extra="ignore")

    rank: int = Field(ge=0, le=1023)
    index: int = Field(ge=0, le=1024)
    util_pct: float | None = Field(default=None, ge=0, le=100, allow_inf_nan=False)
    mem_used_mib: Mib = None
    mem_total_mib: Mib = None
    torch_allocated_mib: Mib = None
    torch_reserved_mib: Mib = None
    torch_peak_mib: Mib = None
    temp_c: float | None = Field(default=None, ge=-50, le=150, allow_inf_nan=False)
    power_w: float | None = Field(default=None, ge=0, le=5_000, allow_inf_nan=False)


class Telemetry(BaseModel):
    """A heartbeat's training figures: step time, throughput, losses and every rank's GPUs."""

    model_config = ConfigDict(extra="ignore")

    step_time_s: float | None = Field(default=None, ge=0, le=86_400, allow_inf_nan=False)
    samples_per_s: float | None = Field(default=None, ge=0, le=1e9, allow_inf_nan=False)
    loss: Finite = None
    grad_norm: float | None = Field(default=None, ge=0, le=1e30, allow_inf_nan=False)
    kl: Finite = None
    mel: Finite = None
    gpus: list[GpuTelemetry] = Field(default_factory=list, max_length=MAX_GPUS)
    nonfinite: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list, max_length=32
    )


class HealthWarning(BaseModel):
    """A health warning derived from the telemetry, with the figures that triggered it."""

    model_config = ConfigDict(extra="allow")

    code: str
    message: str
    at: str
    attempt: int


class LatestTelemetry(Telemetry):
    """The latest telemetry snapshot of a job, as its heartbeat delivered it."""

    at: str | None = None
    attempt: int | None = None
    warnings: list[HealthWarning] = Field(default_factory=list)


class TelemetryPoint(BaseModel):
    """One point of an attempt's downsampled history: `weight` heartbeats merged."""

    attempt: int
    seq: int
    first_at: str
    last_at: str
    weight: int
    step: int | None
    stage: str | None
    values: dict[str, float | None]
    gpus: list[dict[str, float | int | None]]


class TelemetryHistory(BaseModel):
    job_id: str
    attempt: int
    attempts: list[int] = Field(description="Attempts that have a history.")
    stride: int = Field(description="Heartbeats per point at the newest resolution.")
    points: list[TelemetryPoint]
    warnings: list[HealthWarning]
