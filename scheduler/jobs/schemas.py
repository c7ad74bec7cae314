"""Request and response bodies for jobs."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

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


class DatasetRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=64)


class JobCreate(BaseModel):
    """A job submission. Give a `deadline` or a `max_delay_minutes` (default: 24 h of slack)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    kind: JobKind = "gpt-sovits-finetune"
    dataset: DatasetRef | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    gpus: int = Field(default=1, ge=1, le=8)
    deadline: AwareDatetime | None = None
    max_delay_minutes: int | None = Field(
        default=None, ge=0, le=int(MAX_HORIZON.total_seconds() // 60)
    )
    interruptible: bool = False
    objective: Objective = "carbon"
    priority: int = Field(default=0, ge=-1000, le=1000)
    zone: str | None = Field(default=None, min_length=1, max_length=64)

    @model_validator(mode="after")
    def _consistent(self) -> JobCreate:
        if self.deadline is not None and self.max_delay_minutes is not None:
            raise ValueError("give either deadline or max_delay_minutes, not both")
        if self.kind == "gpt-sovits-finetune":
            if self.dataset is None:
                raise ValueError('dataset: a gpt-sovits-finetune job needs {"id": ...}')
            self.config = _under_config(FinetuneConfig, self.config)
        else:
            self.config = BurnInConfig.model_validate(self.config).model_dump()
        return self

    def resolved_deadline(self, now: datetime) -> datetime:
        """The absolute deadline this submission asks for."""
        if self.deadline is not None:
            return self.deadline
        if self.max_delay_minutes is not None:
            return now + timedelta(minutes=self.max_delay_minutes)
        return now + DEFAULT_MAX_DELAY


def _under_config(model: type[BaseModel], config: dict[str, Any]) -> dict[str, Any]:
    """Validate a job's config, naming problems `config.<field>` (e.g. `config.base`)."""
    try:
        return model.model_validate(config).model_dump(exclude_none=True)
    except ValidationError as exc:
        details = [
            {
                "type": error["type"],
                "loc": ("config", *error["loc"]),
                "input": error.get("input"),
                **({"ctx": error["ctx"]} if "ctx" in error else {}),
            }
            for error in exc.errors()
        ]
        raise ValidationError.from_exception_data(exc.title, details) from None  # type: ignore[arg-type]


class Progress(BaseModel):
    stage: str | None = None
    step: int | None = None
    total_steps: int | None = None
    loss: float | None = None
    model_config = ConfigDict(extra="allow")


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
