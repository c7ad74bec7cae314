"""Request and response bodies of the worker protocol (docs/worker-protocol.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


class GpuInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    index: int = Field(ge=0, le=1024)
    uuid: str = Field(min_length=1, max_length=128)
    name: str = Field(default="", max_length=200)
    memory_mib: int | None = Field(default=None, ge=0)


class WorkerRegister(BaseModel):
    model_config = ConfigDict(extra="ignore")

    host: str = Field(min_length=1, max_length=255)
    # Without a zone the worker is placed in the service's default zone.
    zone: str | None = Field(default=None, min_length=1, max_length=64)
    gpus: list[GpuInfo] = Field(default_factory=list, max_length=64)
    cpu_only: bool = False
    version: str = Field(default="", max_length=64)
    # Base models found in the worker's --models directory; `none` is always held.
    bases: list[str] = Field(default_factory=list, max_length=16)


class WorkerRegistered(BaseModel):
    worker_id: str
    token: str
    heartbeat_seconds: int
    lease_seconds: int


class GpuWatts(BaseModel):
    uuid: str = Field(max_length=128)
    watts: float = Field(ge=0)


class WorkerHeartbeat(BaseModel):
    model_config = ConfigDict(extra="ignore")

    gpu_watts: list[GpuWatts] = Field(default_factory=list, max_length=64)


class WorkerRead(BaseModel):
    id: str
    host: str
    zone: str
    gpus: list[dict[str, Any]]
    gpu_count: int
    cpu_only: bool
    version: str
    registered_at: datetime
    last_seen_at: datetime
    alive: bool
    gpu_watts: list[dict[str, Any]]
    running_jobs: list[str]
    bases: list[str] = Field(default_factory=lambda: ["none"])


class ClaimedJob(BaseModel):
    id: str
    name: str
    kind: str
    config: dict[str, Any]
    dataset: dict[str, Any] | None
    gpus: int
    interruptible: bool
    zone: str
    # The base the worker must use (for config.base job:<id>, the one that job ran on).
    base: str = "none"


class ResumeFrom(BaseModel):
    artifact: str
    sha256: str
    attempt: int


class ClaimResponse(BaseModel):
    job: ClaimedJob
    attempt: int
    lease_token: str
    lease_expires_at: datetime
    resume_from: ResumeFrom | None = None
    # The prepared dataset an earlier attempt uploaded: reused instead of preparing again.
    prepared_from: ResumeFrom | None = None


class Fence(BaseModel):
    """The fencing pair every job write carries."""

    model_config = ConfigDict(extra="ignore")

    attempt: int = Field(ge=1)
    lease_token: str = Field(min_length=1, max_length=64)


class WorkerEvent(BaseModel):
    """Something the worker wants in the job's history (resumed, checkpoint refused...)."""

    model_config = ConfigDict(extra="ignore")

    type: str = Field(default="event", max_length=64)
    message: str = Field(default="", max_length=2000)


# Energy figures: finite and not negative (1e308 kWh or NaN would poison every sum after it).
Kwh = Annotated[float | None, Field(ge=0, allow_inf_nan=False)]
Watts = Annotated[float | None, Field(ge=0, allow_inf_nan=False)]


class GpuEnergy(BaseModel):
    model_config = ConfigDict(extra="allow")

    kwh: Kwh = None


class PowerSample(BaseModel):
    model_config = ConfigDict(extra="allow")

    watts: Watts = None


def _rfc3339(value: str) -> str:
    """An RFC 3339 time with a zone, kept as the worker wrote it (reports are stored as sent)."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("must be an RFC 3339 time, e.g. 2026-12-01T05:00:00Z") from None
    if moment.tzinfo is None:
        raise ValueError("must carry a time zone (e.g. a trailing Z)")
    return value


Rfc3339 = Annotated[str, Field(max_length=40), AfterValidator(_rfc3339)]


class EnergyPhase(BaseModel):
    """The part of an attempt's measured energy spent in one phase of a fine-tune."""

    name: Literal["prepare", "s1", "s2"]
    started_at: Rfc3339
    ended_at: Rfc3339
    kwh: float = Field(ge=0, allow_inf_nan=False)
    optimizer_steps: int = Field(default=0, ge=0)
    samples: int = Field(default=0, ge=0)


class EnergyReport(BaseModel):
    """The numbers of an attempt report (or a heartbeat's energy so far) that are accounted;
    other keys pass through as the worker sent them."""

    model_config = ConfigDict(extra="allow")

    gpu_kwh: Kwh = None
    cpu_kwh: Kwh = None
    ram_kwh: Kwh = None
    kwh_so_far: Kwh = None
    watts: Watts = None
    duration_s: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    gpus: list[GpuEnergy] | None = Field(default=None, max_length=64)
    timeline: list[PowerSample] | None = Field(default=None, max_length=100_000)
    phases: list[EnergyPhase] | None = Field(default=None, max_length=8)
    # Total duration of the training audio, for kWh per training-audio hour.
    audio_seconds: float | None = Field(default=None, ge=0, allow_inf_nan=False)

    def as_dict(self) -> dict[str, Any]:
        """The report as the worker sent it (validated numbers as floats)."""
        return self.model_dump(exclude_unset=True)


class JobHeartbeat(Fence):
    progress: dict[str, Any] | None = None
    energy: EnergyReport | None = None
    events: list[WorkerEvent] = Field(default_factory=list, max_length=100)


class JobHeartbeatResponse(BaseModel):
    action: Literal["continue", "cancel", "pause"]
    lease_expires_at: datetime


class JobComplete(Fence):
    energy: EnergyReport | None = None
    result: dict[str, Any] | None = None


class JobFail(Fence):
    energy: EnergyReport | None = None
    error: str = Field(default="", max_length=20_000)
    retryable: bool = False
    cancelled: bool = False


class JobRelease(Fence):
    energy: EnergyReport | None = None
    reason: Literal["paused", "shutdown"] = "shutdown"


class JobOrphanEnergy(Fence):
    """The energy report of an attempt whose lease was lost before it could report (range-
    checked like every report; the service also caps it at what the job could draw)."""

    energy: EnergyReport


class JobFinished(BaseModel):
    job_id: str
    state: str
    state_reason: str
