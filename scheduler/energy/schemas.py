"""Shapes of the efficiency part of the energy report, and of the phases a worker reports.

A worker's attempt report may carry `phases` (data preparation, then each training stage)
and `audio_seconds` (the training audio). They are read defensively here: a phase that is
not well formed is left out of the figures rather than trusted.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

PhaseName = Literal["prepare", "s1", "s2"]


class ReportedPhase(BaseModel):
    """One phase of an attempt as the worker reported it."""

    model_config = ConfigDict(extra="ignore")

    name: PhaseName
    started_at: AwareDatetime | None = None
    ended_at: AwareDatetime | None = None
    kwh: float = Field(ge=0, le=1e6, allow_inf_nan=False)
    optimizer_steps: int | None = Field(default=None, ge=0, le=10**9)
    samples: int | None = Field(default=None, ge=0, le=10**12)


class PhaseTotals(BaseModel):
    """A phase summed over the job's attempts (IT energy, before PUE)."""

    name: str
    kwh: float
    seconds: float
    optimizer_steps: int
    samples: int
    attempts: list[int]


class StageEfficiency(BaseModel):
    """Energy per unit of work of one stage (or `training`, all stages together)."""

    kwh: float
    optimizer_steps: int
    samples: int
    kwh_per_optimizer_step: float | None
    kwh_per_audio_hour: float | None
    wh_per_1k_samples: float | None


class Efficiency(BaseModel):
    signature: str | None = Field(description="Configuration signature the job is compared by.")
    gpu_model: str | None
    audio_hours: float | None
    phases: list[PhaseTotals] = Field(
        description="Preparation and training stages as separate phases."
    )
    stages: dict[str, StageEfficiency]
