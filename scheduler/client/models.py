"""Typed answers of the API for scripts: what `GreenwindowClient` returns.

Each model is frozen and parsed from the API's JSON. Fields the service adds later (it gains
some, e.g. live telemetry) never break parsing: they are kept as extra attributes and in
`.raw`, the JSON object exactly as received. Only the fields a script needs to act on are
required; figures the service may omit default to None.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError

from scheduler.client.errors import UnexpectedResponse

# The states a job does not leave.
FINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})


class ApiModel(BaseModel):
    """A frozen view of one JSON object of the API, tolerant of fields it does not know."""

    model_config = ConfigDict(frozen=True, extra="allow")
    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)

    @classmethod
    def from_api(cls, data: Any) -> Self:
        """Parse one answer; UnexpectedResponse (a ClientError) when its shape is not known."""
        if not isinstance(data, Mapping):
            raise UnexpectedResponse(
                f"expected a {cls.__name__} object from the server, got {type(data).__name__}"
            )
        try:
            model = cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "(body)"
            raise UnexpectedResponse(
                f"the server's {cls.__name__} does not parse: {where}: {first['msg']}"
            ) from None
        model._raw = dict(data)
        return model

    @classmethod
    def list_from_api(cls, data: Any) -> list[Self]:
        """Parse a JSON list of these objects."""
        if not isinstance(data, list):
            raise UnexpectedResponse(
                f"expected a list of {cls.__name__} from the server, got {type(data).__name__}"
            )
        return [cls.from_api(item) for item in data]

    @property
    def raw(self) -> dict[str, Any]:
        """The JSON object as the server sent it (every field, known or not)."""
        return self._raw


class Progress(ApiModel):
    """The trainer's last reported position."""

    stage: str | None = None
    step: int | None = None
    total_steps: int | None = None
    loss: float | None = None


class LiveFigures(ApiModel):
    """A running job's latest heartbeat figures."""

    at: datetime | None = None
    watts: float | None = None
    gpu_watts: list[dict[str, Any]] = []
    kwh_so_far: float | None = None
    kg_co2e_so_far: float | None = None
    g_per_kwh: float | None = None
    pue: float | None = None


class Job(ApiModel):
    """One job as `GET /v1/jobs/{id}` shows it."""

    id: str
    team: str
    name: str
    kind: str
    state: str
    state_reason: str = ""
    submitted_at: datetime
    deadline: datetime | None = None
    planned_start: datetime | None = None
    planned_end: datetime | None = None
    estimated_duration_s: float | None = None
    estimated_kwh: float | None = None
    estimated_kg_co2e: float | None = None
    expected_saving_kg_co2e: float | None = None
    attempt: int = 0
    gpus: int = 1
    zone: str | None = None
    dataset: dict[str, Any] | None = None
    config: dict[str, Any] = {}
    progress: Progress | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    actual_kwh: float | None = None
    actual_kg_co2e: float | None = None
    error: str | None = None
    cancel_requested: bool = False
    live: LiveFigures | None = None

    @property
    def finished(self) -> bool:
        """Whether the job has reached a state it does not leave."""
        return self.state in FINAL_STATES

    @property
    def succeeded(self) -> bool:
        return self.state == "succeeded"


class EnergyBreakdown(ApiModel):
    """kWh by component; `unattributed` is energy known only as a total (a lost worker's)."""

    gpu: float = 0.0
    cpu: float = 0.0
    ram: float = 0.0
    unattributed: float = 0.0
    total: float


class EnergyReport(ApiModel):
    """A job's measured energy and emissions (`GET /v1/jobs/{id}/energy`), PUE excluded in
    `kwh` and included in `facility_kwh`."""

    job_id: str
    state: str
    kwh: EnergyBreakdown
    kg_co2e: float
    pue: float | None = None
    facility_kwh: float | None = None
    intensity_g_per_kwh_avg: float | None = None
    saving_vs_run_now_kg_co2e: float | None = None
    duration_s: float | None = None
    attempts: list[dict[str, Any]] = []
    timeline: list[dict[str, Any]] = []
    signal: dict[str, Any] = {}
    methods: dict[str, Any] = {}


class Dataset(ApiModel):
    """An uploaded training dataset."""

    id: str
    name: str
    size: int
    sha256: str
    utterances: int = 0
    audio_seconds: float = 0.0
    speakers: int = 0
    languages: list[str] = []
    created_at: datetime | None = None
    state: str = "ready"
    state_reason: str = ""

    @property
    def ready(self) -> bool:
        """Whether jobs may use it (validation finished and passed)."""
        return self.state == "ready"


class Artifact(ApiModel):
    """A file a job stored (the adapter, checkpoints, logs)."""

    name: str
    size: int
    sha256: str
    attempt: int = 0
    created_at: datetime | None = None


class BudgetStatus(ApiModel):
    """A team's carbon budget figures for the current period, in kg CO2e."""

    period: str
    period_start: datetime
    period_end: datetime
    limit_kg_co2e: float
    mode: str
    thresholds: list[dict[str, Any]] = []
    actual_kg_co2e: float
    committed_kg_co2e: float
    forecast_kg_co2e: float | None = None
    remaining_kg_co2e: float
    state: str


class BurnPoint(ApiModel):
    at: datetime
    actual_kg_co2e: float
    committed_kg_co2e: float


class BudgetHistory(ApiModel):
    """How a team's budget burned over the current period."""

    period_start: datetime
    period_end: datetime
    limit_kg_co2e: float
    points: list[BurnPoint]


class IntensityPoint(ApiModel):
    t: datetime
    g_per_kwh: float


class Forecast(ApiModel):
    """A zone's carbon-intensity forecast."""

    zone: str
    source: str
    signal_type: str = "average"
    step_minutes: int
    points: list[IntensityPoint]
    history: list[IntensityPoint] = []


class ApiKey(ApiModel):
    """One of a team's keys, without its secret."""

    id: str
    created_at: datetime
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


class Team(ApiModel):
    name: str
    created_at: datetime
    webhook_url: str | None = None
    keys: list[ApiKey] = []


class NewKey(ApiModel):
    """A key just created: the secret is in `api_key`, shown this once."""

    key_id: str
    api_key: str
    name: str | None = None
    webhook_secret: str | None = None

    def __repr__(self) -> str:
        # The secret never lands in a log or a traceback through repr.
        return f"NewKey(key_id={self.key_id!r}, name={self.name!r})"


class Worker(ApiModel):
    """A registered GPU worker."""

    id: str
    host: str
    zone: str
    gpu_count: int = 0
    cpu_only: bool = False
    alive: bool
    last_seen_at: datetime | None = None
    running_jobs: list[str] = []
    gpus: list[dict[str, Any]] = []
