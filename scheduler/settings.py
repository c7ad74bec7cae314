"""The one settings class: every option is an environment variable `GREENWINDOW_<NAME>`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Threads that run the maintenance ticks (APScheduler's executor); each holds at most one
# database connection.
TICK_THREADS = 3
# Threads and connections kept for /healthz and /metrics, which are answered without an
# admission slot.
EXEMPT_REQUEST_THREADS = 2


class SettingsError(RuntimeError):
    """Raised at start when the configuration is invalid; the message names the setting."""


class Settings(BaseSettings):
    """Service and worker configuration, read from the environment (and an optional .env)."""

    model_config = SettingsConfigDict(
        env_prefix="GREENWINDOW_", env_file=".env", extra="ignore", validate_default=True
    )

    data_dir: Path = Path(".greenwindow")
    database_url: str = ""
    admin_token: str | None = Field(default=None, repr=False)
    worker_token: str | None = Field(default=None, repr=False)
    zone: str = "ES"

    # Carbon signal: the bundled trace needs no network and no key.
    carbon_provider: str = "trace"
    carbon_token: str | None = Field(default=None, repr=False)
    carbon_username: str | None = None
    carbon_password: str | None = Field(default=None, repr=False)
    carbon_trace_path: Path | None = None
    # The provider account's plan: "free" calls only the endpoints free tiers include.
    carbon_plan: str = "free"
    # Replaces the provider's API base URL (a proxy, a mirror, a test server).
    carbon_base_url: str | None = None

    # Capacity the planner assumes per zone when no worker has registered yet.
    default_capacity_gpus: int = Field(default=1, ge=0, le=100_000)
    # Estimates before any job has been measured: watts drawn per GPU.
    default_gpu_watts: float = Field(default=300.0, gt=0, le=5_000)

    # The concurrency model: how many requests one process handles at once. The database
    # pool, the worker threads and the admission limit are all derived from it (see
    # `request_slots`, `worker_threads`, `db_pool_size` + `db_max_overflow`), so they agree.
    # Small by default: a request spends most of its time in Python, and one process runs
    # one thread of Python at a time. More admitted requests than that only add GIL
    # contention and lock queues (bench/README.md: 8 beat 24 by 15-30 % in throughput).
    concurrency: int = Field(default=8, ge=1, le=256)
    # The former name of `concurrency`, still honoured when `concurrency` is not set.
    max_concurrent_requests: int | None = Field(default=None, ge=1, le=256)
    # How long a request waits for a pooled connection before it is answered 503.
    db_pool_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    max_request_bytes: int = Field(default=1_048_576, ge=1024)
    max_upload_bytes: int = Field(default=2 * 1024**3, ge=1024)
    # Uploads are admitted in their own small pool, so slow uploads never take API slots;
    # the thread and connection pools count them on top of `concurrency`.
    max_concurrent_uploads: int = Field(default=4, ge=1, le=16)
    # A client must send its request headers within this time (`greenwindow serve`).
    header_timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    # A (non-upload) body must arrive whole within this time; any body, upload or not, may
    # not pause longer than the idle timeout between two chunks.
    body_timeout_seconds: float = Field(default=30.0, gt=0, le=3_600)
    body_idle_timeout_seconds: float = Field(default=15.0, gt=0, le=3_600)
    # With it, /metrics needs this bearer token and includes team-labelled families;
    # without it, /metrics is open and leaves team names and their emissions out.
    metrics_token: str | None = Field(default=None, repr=False)
    # /healthz answers 503 once every request slot has been busy, with none finishing, this long.
    health_saturation_seconds: float = Field(default=30.0, gt=0, le=3_600)
    artifact_dir: Path | None = None

    lease_seconds: int = Field(default=90, ge=5, le=86_400)
    heartbeat_seconds: int = Field(default=15, ge=1, le=3_600)
    max_infra_restarts: int = Field(default=3, ge=0, le=100)
    replan_seconds: int = Field(default=300, ge=1, le=86_400)
    forecast_refresh_seconds: int = Field(default=900, ge=10, le=86_400)
    maintenance_seconds: int = Field(default=10, ge=1, le=3_600)
    # Carbon accounting: power usage effectiveness per zone (facility / IT energy; zones not
    # listed use the default), and how long after an attempt it may still be restated.
    pue_by_zone: Annotated[dict[str, float], NoDecode] = Field(default_factory=dict)
    default_pue: float = Field(default=1.0, ge=1.0, le=3.0)
    restatement_days: int = Field(default=7, ge=0, le=90)
    restatement_seconds: int = Field(default=900, ge=10, le=86_400)

    @field_validator("pue_by_zone", mode="before")
    @classmethod
    def _pue_from_json(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return json.loads(value) if value.strip() else {}
            except ValueError:
                raise ValueError('must be a JSON object of zone to PUE, e.g. {"ES": 1.2}') from None
        return value

    @field_validator("pue_by_zone")
    @classmethod
    def _pue_in_range(cls, value: dict[str, float]) -> dict[str, float]:
        for zone, pue in value.items():
            if not 1.0 <= pue <= 3.0:
                raise ValueError(f"PUE of zone {zone!r} must be between 1.0 and 3.0, not {pue}")
        return value

    def pue(self, zone: str) -> float:
        """Facility energy per unit of IT energy in the zone's data centre."""
        return self.pue_by_zone.get(zone, self.default_pue)

    # Team webhooks: total time per POST, retries (doubling from the base), and whether
    # loopback, link-local, private and metadata addresses may be called.
    webhook_deadline_seconds: float = Field(default=10.0, gt=0, le=300)
    webhook_max_attempts: int = Field(default=8, ge=1, le=100)
    webhook_retry_seconds: float = Field(default=30.0, gt=0, le=86_400)
    webhook_allow_internal: bool = False

    # Per dataset: annotated lines, and seconds of audio summed over the lines.
    dataset_max_lines: int = Field(default=50_000, ge=1, le=10_000_000)
    dataset_max_audio_seconds: float = Field(default=360_000.0, gt=0, le=1e9)

    # Plausibility caps on workers' energy reports: watts per GPU (a GPU's registered power
    # limit, when lower, wins) and for the rest of the host (CPU, RAM).
    max_gpu_watts: float = Field(default=1_500.0, gt=0, le=20_000)
    max_host_watts: float = Field(default=3_000.0, gt=0, le=100_000)

    @field_validator("zone")
    @classmethod
    def _zone_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if value and not value.startswith(("sqlite", "postgresql")):
            raise ValueError("must be an sqlite:// or postgresql:// URL")
        if value.startswith("postgresql://") or value.startswith("postgres://"):
            # psycopg 3 is the driver we ship; accept the plain libpq-style URL users paste.
            value = "postgresql+psycopg://" + value.split("://", 1)[1]
        return value

    @field_validator("carbon_provider")
    @classmethod
    def _known_provider(cls, value: str) -> str:
        known = {"trace", "electricitymaps", "watttime", "ukci"}
        if value not in known:
            raise ValueError(f"must be one of {', '.join(sorted(known))}")
        return value

    @field_validator("carbon_plan")
    @classmethod
    def _known_plan(cls, value: str) -> str:
        # One plan for whichever provider is configured, or one per provider.
        text = value.strip().lower()
        if text in ("free", "paid"):
            return text
        pairs = [part.partition("=") for part in text.split(",") if part.strip()]
        providers = {"trace", "electricitymaps", "watttime", "ukci"}
        if not pairs or any(
            not sep or name.strip() not in providers or plan.strip() not in ("free", "paid")
            for name, sep, plan in pairs
        ):
            raise ValueError(
                "must be free, paid, or provider=plan pairs (electricitymaps=paid,watttime=free)"
            )
        return ",".join(f"{name.strip()}={plan.strip()}" for name, _, plan in pairs)

    @field_validator("carbon_base_url")
    @classmethod
    def _http_base_url(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            return None
        if value is not None and not value.strip().startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value.strip() if value else None

    @model_validator(mode="after")
    def _derived_paths(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'greenwindow.db').as_posix()}"
        if self.artifact_dir is None:
            self.artifact_dir = self.data_dir / "artifacts"
        if self.max_concurrent_requests is not None and "concurrency" not in self.model_fields_set:
            self.concurrency = self.max_concurrent_requests
        self.max_concurrent_requests = self.concurrency
        if self.heartbeat_seconds * 2 > self.lease_seconds:
            raise ValueError(
                "GREENWINDOW_LEASE_SECONDS must be at least twice GREENWINDOW_HEARTBEAT_SECONDS"
            )
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    # -- the concurrency model (README, "Concurrency and connections") ----------

    @property
    def request_slots(self) -> int:
        """Requests handled at once (the rest wait in the admission queue)."""
        return self.concurrency

    @property
    def worker_threads(self) -> int:
        """AnyIO's thread limit: one thread per admitted request or upload (a request uses at
        most one at a time), plus a few for /healthz and /metrics, which skip admission."""
        return self.concurrency + self.max_concurrent_uploads + EXEMPT_REQUEST_THREADS

    @property
    def db_pool_size(self) -> int:
        """Connections kept open: one per admitted request, each holds at most one."""
        return self.concurrency

    @property
    def db_max_overflow(self) -> int:
        """Connections opened beyond the pool size, when busy: uploads, ticks, health."""
        return self.max_concurrent_uploads + TICK_THREADS + EXEMPT_REQUEST_THREADS

    @property
    def db_connections(self) -> int:
        """The most connections one process opens (per engine): count this per replica
        against PostgreSQL's `max_connections`."""
        return self.db_pool_size + self.db_max_overflow


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment, turning validation errors into named messages."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]  # validated right here
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"]) or "settings"
            name = f"GREENWINDOW_{field.upper()}" if error["loc"] else "settings"
            problems.append(f"{name}: {error['msg']}")
        raise SettingsError("invalid configuration: " + "; ".join(problems)) from None
