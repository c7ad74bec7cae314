"""Data types of the planner: the slot grid, jobs to plan, running jobs, and the plan."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

import numpy as np

Objective = Literal["carbon", "cost", "balanced"]
OBJECTIVES: tuple[str, ...] = ("carbon", "cost", "balanced")


def to_utc(moment: datetime) -> datetime:
    """Return `moment` in UTC; naive datetimes are taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


@dataclass(frozen=True, eq=False)
class SlotGrid:
    """Equal-length slots from `start`: carbon intensity (g/kWh) and optional price per kWh."""

    start: datetime
    step_minutes: int
    intensity: np.ndarray
    price: np.ndarray | None = None
    _step: timedelta = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.step_minutes <= 0:
            raise ValueError("step_minutes must be positive")
        object.__setattr__(self, "_step", timedelta(minutes=self.step_minutes))
        intensity = np.asarray(self.intensity, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(intensity)):
            raise ValueError("intensity must be finite")
        object.__setattr__(self, "intensity", intensity)
        object.__setattr__(self, "start", to_utc(self.start))
        if self.price is not None:
            price = np.asarray(self.price, dtype=np.float64).reshape(-1)
            if price.shape != intensity.shape:
                raise ValueError("price must have one value per slot")
            object.__setattr__(self, "price", price)

    @property
    def n_slots(self) -> int:
        """Number of slots."""
        return int(self.intensity.shape[0])

    @property
    def step(self) -> timedelta:
        """Slot length."""
        return self._step

    @property
    def end(self) -> datetime:
        """End of the last slot."""
        return self.start + self.n_slots * self.step

    def slot_start(self, index: int) -> datetime:
        """Start time of slot `index` (may lie past the grid)."""
        return self.start + index * self._step

    def ceil_index(self, moment: datetime) -> int:
        """First slot that starts at or after `moment`."""
        offset = (to_utc(moment) - self.start) / self.step
        return math.ceil(offset - 1e-9)

    def floor_index(self, moment: datetime) -> int:
        """Index of the slot boundary at or before `moment`."""
        offset = (to_utc(moment) - self.start) / self.step
        return math.floor(offset + 1e-9)


@dataclass(frozen=True)
class PlanJob:
    """A queued job, as the planner sees it.

    `running` marks an interruptible job that is running now and may be re-planned: its
    remaining work continues in slot 0 without a resume overhead.
    """

    id: str
    duration_minutes: float
    power_kw: float
    gpus: int = 1
    earliest_start: datetime | None = None
    deadline: datetime | None = None
    interruptible: bool = False
    objective: Objective = "carbon"
    priority: int = 0
    min_chunk_minutes: float = 0.0
    resume_overhead_minutes: float = 0.0
    running: bool = False

    def __post_init__(self) -> None:
        if self.duration_minutes <= 0:
            raise ValueError(f"job {self.id}: duration must be positive")
        if self.gpus < 0 or self.power_kw < 0:
            raise ValueError(f"job {self.id}: gpus and power must not be negative")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"job {self.id}: unknown objective {self.objective!r}")


@dataclass(frozen=True)
class RunningJob:
    """A job that holds `gpus` GPUs until `until` and is not re-planned."""

    id: str
    gpus: int
    until: datetime


@dataclass(frozen=True)
class SlotJob:
    """A job in slot units on a grid (internal form shared by planner, baselines and MILP).

    `release` is the first allowed slot, `deadline` the exclusive end slot, `duration` the
    slots of work, `min_chunk` the shortest chunk in slots, `overhead` the extra run time
    per resume in slots (fractional), `order` the submission order (FIFO tie-break).
    """

    id: str
    duration: int
    power_kw: float
    gpus: int
    release: int
    deadline: int
    interruptible: bool = False
    objective: Objective = "carbon"
    priority: int = 0
    min_chunk: int = 1
    overhead: float = 0.0
    running: bool = False
    order: int = 0

    @property
    def slack(self) -> int:
        """Slots the job may be delayed and still meet its deadline."""
        return self.deadline - self.release - self.duration


@dataclass
class JobPlan:
    """The planned run of one job and what it is expected to cost."""

    job_id: str
    intervals: list[tuple[datetime, datetime]]
    slots: list[int]
    kwh: float
    kg_co2e: float
    cost: float | None
    saving_kg: float
    saving_percent: float
    feasible: bool
    explanation: str

    @property
    def start(self) -> datetime | None:
        """Start of the first interval, if any."""
        return self.intervals[0][0] if self.intervals else None

    @property
    def end(self) -> datetime | None:
        """End of the last interval, if any."""
        return self.intervals[-1][1] if self.intervals else None


@dataclass
class Plan:
    """A plan for a queue: one JobPlan per job and the GPUs used per slot."""

    jobs: dict[str, JobPlan]
    gpus_used: np.ndarray
    grid: SlotGrid

    @property
    def total_kg_co2e(self) -> float:
        """Expected kg CO2e of all planned jobs."""
        return float(sum(p.kg_co2e for p in self.jobs.values()))
