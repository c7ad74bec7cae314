"""Request and response bodies for carbon budgets and usage."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Period = Literal["day", "week", "month", "quarter", "year"]
ThresholdAction = Literal["notify", "hold_new", "deny_submit"]
BudgetMode = Literal["hard", "soft"]


class Threshold(BaseModel):
    model_config = ConfigDict(extra="forbid")

    percent: float = Field(gt=0, le=1000, description="Share of the limit, e.g. 80.")
    action: ThresholdAction


class BudgetSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    period: Period
    # At least a microgram: a vanishing limit turns a share of it into an infinite percentage.
    limit_kg_co2e: float = Field(ge=1e-9, le=1e9)
    mode: BudgetMode = "hard"
    thresholds: list[Threshold] = Field(default_factory=list, max_length=20)

    @field_validator("thresholds")
    @classmethod
    def _sorted_unique(cls, thresholds: list[Threshold]) -> list[Threshold]:
        keys = [(t.percent, t.action) for t in thresholds]
        if len(set(keys)) != len(keys):
            raise ValueError("duplicate threshold")
        return sorted(thresholds, key=lambda t: t.percent)


class BudgetRead(BaseModel):
    period: Period
    period_start: datetime
    period_end: datetime
    limit_kg_co2e: float
    mode: BudgetMode
    thresholds: list[Threshold]
    actual_kg_co2e: float = Field(description="Measured emissions charged in this period.")
    committed_kg_co2e: float = Field(
        description="Reserved estimates of admitted jobs that have not finished."
    )
    forecast_kg_co2e: float = Field(
        description="actual + committed + the period's run-rate extrapolated to its end."
    )
    remaining_kg_co2e: float = Field(description="limit - actual - committed.")
    state: Literal["ok", "warning", "exhausted"]


class UsagePoint(BaseModel):
    start: datetime
    kwh: float
    kg_co2e: float
    jobs: int


class LedgerRead(BaseModel):
    at: datetime = Field(description="When the entry was written.")
    counts_at: datetime = Field(
        description="The moment whose budget period the entry counts in: a reservation's "
        "planned start, a release's reservation, a charge's energy use (split per UTC day)."
    )
    kind: Literal["reserve", "release", "charge", "adjust"] = Field(
        description="adjust: a signed correction of earlier charges (restatement, late report)."
    )
    kg_co2e: float
    kwh: float
    job_id: str | None
    note: str


class BurnPointRead(BaseModel):
    at: datetime
    actual_kg_co2e: float = Field(description="Charged in this period up to `at`.")
    committed_kg_co2e: float = Field(description="Reserved for this period and outstanding.")


class BurnHistory(BaseModel):
    period_start: datetime
    period_end: datetime
    limit_kg_co2e: float
    points: list[BurnPointRead] = Field(
        description="After each ledger entry of the period, in the order written (at most 400)."
    )
