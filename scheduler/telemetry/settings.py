"""Thresholds of the telemetry health warnings and the size of the stored history.

Each is an environment variable `GREENWINDOW_TELEMETRY_<NAME>`; the defaults are the
documented ones (docs in README, "Training telemetry").
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class TelemetrySettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GREENWINDOW_TELEMETRY_", env_file=".env", extra="ignore"
    )

    # History: at most this many points per attempt; older ones are merged in pairs.
    max_points_per_attempt: int = Field(default=240, ge=8, le=10_000)
    # Low utilisation: the job's GPUs average below this many percent for this long (an
    # input pipeline that cannot keep the GPU fed).
    low_util_pct: float = Field(default=30.0, ge=0, le=100)
    low_util_seconds: float = Field(default=300.0, gt=0, le=86_400)
    # Memory climbing: torch-allocated memory never falls over this many heartbeats in a row
    # and grows by at least this much in total (a leak, e.g. tensors kept in a list).
    leak_window: int = Field(default=10, ge=3, le=100)
    leak_min_growth_mib: float = Field(default=256.0, gt=0)
    # Fragmentation: reserved at least `frag_ratio` times allocated and at least
    # `frag_min_gap_mib` more (the caching allocator holds memory it cannot reuse).
    frag_ratio: float = Field(default=2.0, gt=1)
    frag_min_gap_mib: float = Field(default=2048.0, ge=0)
    # Exploding gradient norm: above this absolute value, or this many times the median of
    # the recent window (at least 3 earlier heartbeats).
    grad_norm_max: float = Field(default=1000.0, gt=0)
    grad_norm_jump: float = Field(default=10.0, gt=1)
    # KL (stage 2) below this value: it is non-negative in theory, negative means instability.
    kl_min: float = Field(default=-1e-6, le=0)


@lru_cache(maxsize=1)
def telemetry_settings() -> TelemetrySettings:
    """The thresholds from the environment, read once per process."""
    return TelemetrySettings()
