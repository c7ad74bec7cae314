"""Response bodies for carbon signals and plan previews."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class IntensityPointRead(BaseModel):
    t: datetime
    g_per_kwh: float


class ForecastRead(BaseModel):
    zone: str
    source: str = Field(description="Where the values come from, e.g. trace:ES, electricitymaps.")
    signal_type: str = Field(description="average or marginal")
    origin: str = Field(
        description="provider | stored_forecast | forecaster | constant: which fallback served"
    )
    reason: str
    generated_at: datetime | None
    step_minutes: int
    points: list[IntensityPointRead]
    history: list[IntensityPointRead] = Field(
        default_factory=list, description="Observed values before now, when asked for."
    )


class PlanPreview(BaseModel):
    zone: str
    planned_start: datetime | None
    planned_end: datetime | None
    planned_intervals: list[list[datetime]]
    estimated_duration_s: float
    estimated_kwh: float
    estimated_kg_co2e: float
    run_now_kg_co2e: float
    saving_kg_co2e: float
    saving_percent: float
    state_reason: str
