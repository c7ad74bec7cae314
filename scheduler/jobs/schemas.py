"""Request and response bodies for jobs."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails

from scheduler.telemetry.schemas import HealthWarning, LatestTelemetry
from worker.training.config import FinetuneConfig

JobKind = Literal["gpt-sovits-finetune", "burn-in"]
Objective = Literal["carbon", "cost", "balanced"]
DEFAULT_MAX_DELAY = timedelta(hours=24)
MAX_HORIZON = timedelta(days=31)


class BurnInConfig(BaseModel):
    """The `burn-in` job kind: a torch matmul loop with checkpoints, to prove a worker works."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(default=200, ge=1, le=10_000_000)
    size: int = Field(default=256, ge=8, le=16_384)
    checkpoint_every: int = Field(default=20, ge=1)
    step_sleep_s: float = Field(default=0.0, ge=0, le=60)
    # GPU memory the job needs per device (MiB); without it, estimated from the matrix size.
    memory_mib: int | None = Field(default=None, ge=1, le=4 * 1024 * 1024)


class DatasetRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=64)


class JobCreate(BaseModel):
    """A job submission. Give a `deadline` or a `max_delay_minutes` (default: 24 h of delay).

    `not_before` is the earliest start. `max_delay_minutes` is how long the start may be
    put off past the earliest start (now, or `not_before`); the deadline is then that
    earliest start + the delay + the estimated run time, so 0 means "start now".
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    kind: JobKind = "gpt-sovits-finetune"
    dataset: DatasetRef | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    gpus: int = Field(default=1, ge=1, le=8)
    deadline: AwareDatetime | None = Field(
        default=None,
        description="Latest time the job must have finished by (RFC 3339 with an offset). "
        "Give this or `max_delay_minutes`, not both.",
    )
    max_delay_minutes: int | None = Field(
        default=None,
        ge=0,
        le=int(MAX_HORIZON.total_seconds() // 60),
        description="Start delay: how many minutes the planner may put off the start past the "
        "earliest start (now, or `not_before`). The deadline becomes earliest start + delay + "
        "the estimated run time; 0 starts the job at once. Default 1440 (24 h) when neither "
        "this nor `deadline` is given.",
    )
    not_before: AwareDatetime | None = Field(
        default=None,
        description="Earliest start (RFC 3339 with an offset): the job never starts before it. "
        "At most 31 days ahead; a time already past means now.",
    )
    interruptible: bool = False
    objective: Objective = "carbon"
    priority: int = Field(default=0, ge=-1000, le=1000)
    zone: str | None = Field(default=None, min_length=1, max_length=64)
    zones: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        default=None,
        min_length=1,
        max_length=8,
        description="Grid zones the job may run in, first the preferred one. The planner "
        "picks the zone and the window together from each zone's capacity and signal; the "
        "answer names the zone chosen and the saving against the first. Give this or "
        "`zone`, not both.",
    )

    @field_validator("config")
    @classmethod
    def _finite_numbers(cls, config: dict[str, Any]) -> dict[str, Any]:
        # JSON parsers accept Infinity and NaN; stored, they are not valid JSON any more.
        path = _first_non_finite(config, "config")
        if path is not None:
            raise ValueError(f"{path} must be a finite number")
        return config

    @field_validator("deadline")
    @classmethod
    def _deadline_in_utc_range(cls, value: datetime | None) -> datetime | None:
        # Far-off offsets such as 9999-12-31T23:59:59-14:00 have no UTC equivalent.
        if value is not None:
            try:
                value.astimezone(UTC)
            except OverflowError:
                raise ValueError("deadline is out of range") from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> JobCreate:
        if self.deadline is not None and self.max_delay_minutes is not None:
            raise ValueError("give either deadline or max_delay_minutes, not both")
        if self.zones is not None:
            if self.zone is not None:
                raise ValueError("zones: give either zone or zones, not both")
            if len(set(self.zones)) != len(self.zones):
                raise ValueError("zones: each zone may be listed once")
        if self.kind == "gpt-sovits-finetune":
            if self.dataset is None:
                raise ValueError('dataset: a gpt-sovits-finetune job needs {"id": ...}')
            self.config = _under_config(FinetuneConfig, self.config)
        else:
            # exclude_none: an undeclared memory_mib is not stored (older workers refuse it).
            self.config = BurnInConfig.model_validate(self.config).model_dump(exclude_none=True)
        return self

    def earliest_start(self, now: datetime) -> datetime:
        """When the job may start at the earliest: `not_before`, or now if that is later."""
        if self.not_before is not None and self.not_before > now:
            return self.not_before
        return now

    def resolved_deadline(self, now: datetime, duration_s: float = 0.0) -> datetime:
        """The absolute deadline this submission asks for, given the estimated run time."""
        if self.deadline is not None:
            return self.deadline
        delay = (
            timedelta(minutes=self.max_delay_minutes)
            if self.max_delay_minutes is not None
            else DEFAULT_MAX_DELAY
        )
        return self.earliest_start(now) + delay + timedelta(seconds=max(duration_s, 0.0))


def _first_non_finite(value: Any, path: str) -> str | None:
    """The dotted path of the first infinite or NaN float inside `value`, if any."""
    if isinstance(value, float) and not math.isfinite(value):
        return path
    if isinstance(value, dict):
        for key, item in value.items():
            found = _first_non_finite(item, f"{path}.{key}")
            if found is not None:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _first_non_finite(item, f"{path}.{index}")
            if found is not None:
                return found
    return None


def _under_config(model: type[BaseModel], config: dict[str, Any]) -> dict[str, Any]:
    """Validate a job's config, naming problems `config.<field>` (e.g. `config.base`)."""
    try:
        return model.model_validate(config).model_dump(exclude_none=True)
    except ValidationError as exc:
        details: list[InitErrorDetails] = []
        for error in exc.errors():
            detail = InitErrorDetails(
                type=error["type"], loc=("config", *error["loc"]), input=error.get("input")
            )
            if "ctx" in error:
                detail["ctx"] = error["ctx"]
            details.append(detail)
        raise ValidationError.from_exception_data(exc.title, details) from None


class Progress(BaseModel):
    stage: str | None = None
    step: int | None = None
    total_steps: int | None = None
    loss: float | None = None
    model_config = ConfigDict(extra="allow")


class LiveFigures(BaseModel):
    """A running job's latest heartbeat figures (only on `GET /v1/jobs/{id}` while it runs)."""

    at: datetime | None = Field(description="When the worker last reported.")
    watts: float | None = Field(description="Power of the job's GPUs, CPU and RAM just now.")
    gpu_watts: list[dict[str, Any]] = Field(
        default_factory=list, description="Per GPU of the job's worker: index, uuid, watts."
    )
    kwh_so_far: float = Field(description="Energy so far, all attempts, PUE included.")
    kg_co2e_so_far: float = Field(
        description="Emissions so far: earlier attempts as charged, this one at the mean "
        "intensity of its slots (priced slot by slot when it ends)."
    )
    g_per_kwh: float
    pue: float


class JobRead(BaseModel):
    id: str
    team: str
    name: str
    kind: str
    state: str
    state_reason: str
    submitted_at: datetime
    deadline: datetime
    planned_start: datetime | None
    planned_end: datetime | None
    planned_intervals: list[list[datetime]]
    estimated_duration_s: float
    estimated_kwh: float
    estimated_kg_co2e: float
    expected_saving_kg_co2e: float = Field(
        description="Emissions avoided by the planned window versus starting at submission."
    )
    attempt: int
    gpus: int
    interruptible: bool
    objective: str
    priority: int
    zone: str
    dataset: dict[str, Any]
    config: dict[str, Any]
    progress: Progress | None
    started_at: datetime | None
    finished_at: datetime | None
    actual_kwh: float | None
    actual_kg_co2e: float | None
    error: str | None
    cancel_requested: bool
    live: LiveFigures | None = Field(
        default=None, description="Running jobs, single-job reads: the latest heartbeat figures."
    )
    not_before: datetime | None = Field(
        default=None, description="Earliest start the submission asked for, if any."
    )
    zones: list[str] | None = Field(
        default=None, description="Zones the job could run in (`zone` is the one chosen)."
    )
    zone_saving_kg_co2e: float | None = Field(
        default=None,
        description="Expected emissions avoided by running in `zone` instead of the first "
        "of `zones` (in that zone's best window).",
    )
    telemetry: LatestTelemetry | None = Field(
        default=None,
        description="The latest heartbeat's training telemetry: step time, throughput, "
        "losses, gradient norm and every rank's GPUs (kept after the job stops).",
    )
    health_warnings: list[HealthWarning] = Field(
        default_factory=list,
        description="Health warnings of the telemetry's attempt (each also a job event).",
    )

    @model_validator(mode="before")
    @classmethod
    def _telemetry_from_progress(cls, data: Any) -> Any:
        # The heartbeat stores the checked snapshot under progress.telemetry; it is shown
        # once, as `telemetry`, with its warnings as `health_warnings`.
        if not isinstance(data, dict) or not isinstance(data.get("progress"), dict):
            return data
        progress = dict(data["progress"])
        snapshot = progress.pop("telemetry", None)
        data = {**data, "progress": progress}
        if isinstance(snapshot, dict) and "telemetry" not in data:
            try:
                latest = LatestTelemetry.model_validate(snapshot)
            except ValidationError:
                # Stored before it was checked (or by hand): a read must not fail on it.
                return data
            data["telemetry"] = latest
            data.setdefault("health_warnings", latest.warnings)
        return data


class JobPage(BaseModel):
    items: list[JobRead]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class JobEventRead(BaseModel):
    at: datetime
    from_state: str | None
    to_state: str
    reason: str
    attempt: int
    data: dict[str, Any] | None
