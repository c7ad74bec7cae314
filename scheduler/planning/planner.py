"""The queue planner: when each job runs, what it is expected to emit and cost, and why.

`plan(grid, jobs, capacity, running)` is pure: it takes a slot grid (carbon intensity and
optional price per slot), the queued jobs, the GPU capacity and the jobs already running,
and returns one `JobPlan` per job.

Objectives (per job):

- `carbon`: minimise kg CO2e (intensity x energy).
- `cost`: minimise energy cost (price x energy); without a tariff it falls back to carbon.
- `balanced`: minimise 0.5 x intensity/range + 0.5 x price/range, where each range is the
  spread (max - min) of that signal over the job's own window [earliest start, deadline).
  A slot that is the cleanest and the cheapest of the window scores 0, the dirtiest and
  dearest 1. Without a tariff it falls back to carbon.

Rules: a job never ends after its deadline when an on-time plan is found; one that cannot
make it runs as soon as possible and says so; GPU capacity holds in every slot, the GPUs
of running jobs included; a non-interruptible job gets one contiguous window; an
interruptible one may be split into chunks of at least `min_chunk_minutes`, each resume
adding `resume_overhead_minutes` of run time. Times are rounded to the grid: a job may
start at the first slot boundary at or after its earliest start and must end at the last
slot boundary at or before its deadline. The queue is planned jointly (see `joint.py`).
A small penalty per hour of waiting (`DEFER_PENALTY_PER_HOUR`) keeps jobs from waiting
for gains that are within forecast noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

import numpy as np

from scheduler.planning.joint import LATE, ON_TIME, UNPLACED, plan_queue
from scheduler.planning.types import JobPlan, Plan, PlanJob, RunningJob, SlotGrid, SlotJob

# A job waits only for a gain above this share of the signal's standard deviation per
# hour of waiting: forecasts fade with lead time and later arrivals will want the clean
# hours too. Chosen on online backtests of the four 2022 traces (busy and quiet queues,
# perfect and forecaster modes): 1-2 %/h of the deviation helped, 5 %/h hurt.
DEFER_PENALTY_PER_HOUR = 0.02
_OBJECTIVE_WORDS = {"carbon": "low-carbon", "cost": "cheaper", "balanced": "cleaner, cheaper"}


def capacity_per_slot(
    grid: SlotGrid, capacity: int | Sequence[int] | np.ndarray, running: Sequence[RunningJob] = ()
) -> np.ndarray:
    """GPUs free per slot: the capacity less what running jobs hold (never below zero)."""
    if isinstance(capacity, int | np.integer):
        free = np.full(grid.n_slots, int(capacity), dtype=np.int64)
    else:
        free = np.asarray(capacity, dtype=np.int64).copy()
        if free.shape != (grid.n_slots,):
            raise ValueError("capacity must be an int or one value per slot")
    for held in running:
        until = min(max(grid.ceil_index(held.until), 0), grid.n_slots)
        free[:until] -= held.gpus
    return np.maximum(free, 0)


def to_slot_jobs(
    grid: SlotGrid, jobs: Sequence[PlanJob], now: datetime | None = None
) -> list[SlotJob]:
    """Jobs in slot units on `grid` (release rounded up, deadline rounded down)."""
    first = 0 if now is None else max(grid.ceil_index(now), 0)
    slot_jobs = []
    for order, job in enumerate(jobs):
        release = (
            first if job.earliest_start is None else max(grid.ceil_index(job.earliest_start), first)
        )
        deadline = grid.n_slots if job.deadline is None else grid.floor_index(job.deadline)
        step = grid.step_minutes
        slot_jobs.append(
            SlotJob(
                id=job.id,
                duration=max(1, math.ceil(job.duration_minutes / step - 1e-9)),
                power_kw=job.power_kw,
                gpus=job.gpus,
                release=release,
                deadline=deadline,
                interruptible=job.interruptible,
                objective=job.objective,
                priority=job.priority,
                min_chunk=max(1, math.ceil(job.min_chunk_minutes / step - 1e-9)),
                overhead=job.resume_overhead_minutes / step,
                running=job.running and job.interruptible,
                order=order,
            )
        )
    return slot_jobs


def intervals_of(
    grid: SlotGrid, slots: np.ndarray | Sequence[int]
) -> list[tuple[datetime, datetime]]:
    """Merge sorted slot indices into [start, end) time intervals."""
    intervals: list[tuple[datetime, datetime]] = []
    ordered = sorted(int(s) for s in slots)
    if ordered and ordered[-1] - ordered[0] == len(ordered) - 1:
        return [(grid.slot_start(ordered[0]), grid.slot_start(ordered[-1] + 1))]
    for slot in ordered:
        if intervals and intervals[-1][1] == grid.slot_start(slot):
            intervals[-1] = (intervals[-1][0], grid.slot_start(slot + 1))
        else:
            intervals.append((grid.slot_start(slot), grid.slot_start(slot + 1)))
    return intervals


class _Signal:
    """A per-slot signal with prefix sums, for fast means over slot sets."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values
        self.last = values.shape[0] - 1
        self.cumulative = np.concatenate(([0.0], np.cumsum(values)))

    def mean(self, slots: np.ndarray) -> float:
        """Mean over `slots` (sorted); slots outside the grid take the nearest edge value."""
        first, final = int(slots[0]), int(slots[-1])
        count: int = slots.shape[0]
        if first < 0 or final > self.last:
            slots = np.minimum(np.maximum(slots, 0), self.last)
            return float(self.values[slots].sum()) / count
        if final - first + 1 == count:
            return float(self.cumulative[final + 1] - self.cumulative[first]) / count
        return float(self.values[slots].sum()) / count


def _clock(grid: SlotGrid, moment: datetime) -> str:
    same_day = (moment - grid.start).total_seconds() < 86400
    return f"{moment:%H:%M}" if same_day else f"{moment:%a %H:%M}"


def _percent(saving: float) -> str:
    return f"-{saving:.0f} %" if saving >= 0 else f"+{-saving:.0f} %"


def _explain(
    grid: SlotGrid,
    job: SlotJob,
    plan: JobPlan,
    status: str,
    objective_saving: float,
    now_slot: int = 0,
) -> str:
    objective = job.objective if grid.price is not None else "carbon"
    metric = "cost" if objective == "cost" else "CO2e"
    if status == UNPLACED:
        return f"waits: no free GPUs before the forecast ends ({_clock(grid, grid.end)} UTC)"
    if status == LATE:
        if job.deadline - job.release < job.duration:
            return "infeasible before deadline: runs as soon as possible"
        return "infeasible before deadline (GPUs busy): runs as soon as possible"
    first_slot = min(plan.slots)
    start, end = plan.intervals[0]
    window = f"{_clock(grid, start)}-{end:%H:%M} UTC"
    words = _OBJECTIVE_WORDS[objective]
    if len(plan.intervals) > 1:
        return (
            f"split into {len(plan.intervals)} chunks in {words} windows, first {window} "
            f"({_percent(objective_saving)} {metric})"
        )
    if first_slot == job.release:
        when = "runs now" if job.release <= now_slot else f"runs from its earliest start {window}"
        if job.slack <= 0:
            return f"{when}: deadline too tight to defer"
        if objective_saving >= -1e-6:
            return f"{when}: no {words} window before the deadline"
        return f"{when} ({_percent(objective_saving)} {metric})"
    if objective_saving < -1e-6:
        return f"waits for free GPUs: runs {window} ({_percent(objective_saving)} {metric})"
    return f"deferred to {words} window {window} ({_percent(objective_saving)} {metric})"


def plan(
    grid: SlotGrid,
    jobs: Sequence[PlanJob],
    capacity: int | Sequence[int] | np.ndarray,
    running: Sequence[RunningJob] = (),
    *,
    now: datetime | None = None,
    improve_budget_s: float = 0.3,
    defer_penalty_per_hour: float = DEFER_PENALTY_PER_HOUR,
) -> Plan:
    """Plan a queue on a grid: when each job runs, its kWh, kg CO2e, cost and why.

    `defer_penalty_per_hour` (a fraction of the score's standard deviation) makes a job
    wait only for a gain that outweighs it; 0 plans on the forecast as given.
    """
    ids = [job.id for job in jobs]
    if len(set(ids)) != len(ids):
        raise ValueError("job ids must be unique")
    free = capacity_per_slot(grid, capacity, running)
    slot_jobs = to_slot_jobs(grid, jobs, now)
    result = plan_queue(
        slot_jobs,
        grid.intensity,
        grid.price,
        free,
        improve_budget_s,
        defer_penalty=defer_penalty_per_hour * grid.step_minutes / 60,
    )
    now_slot = 0 if now is None else max(grid.ceil_index(now), 0)
    plan_result = build_plan(
        grid, jobs, slot_jobs, result.slots, result.status, result.work_with_overhead, now_slot
    )
    plan_result.gpus_used = capacity_per_slot(grid, capacity, ()) - free + result.gpus_used
    return plan_result


def build_plan(
    grid: SlotGrid,
    jobs: Sequence[PlanJob],
    slot_jobs: Sequence[SlotJob],
    chosen: Sequence[np.ndarray | None],
    status: Sequence[str] | None = None,
    runtimes: Sequence[float] | None = None,
    now_slot: int = 0,
) -> Plan:
    """Turn chosen slots per job into a Plan with energy, emissions, cost and explanations."""
    plans: dict[str, JobPlan] = {}
    used = np.zeros(grid.n_slots, dtype=np.int64)
    intensity = _Signal(grid.intensity)
    price = None if grid.price is None else _Signal(grid.price)
    for index, (job, slot_job) in enumerate(zip(jobs, slot_jobs, strict=True)):
        found = chosen[index]
        slots = np.empty(0, dtype=np.int64) if found is None else np.asarray(found)
        if status is not None:
            job_status = status[index]
        elif not slots.size:
            job_status = UNPLACED
        else:
            job_status = ON_TIME if slots[-1] < slot_job.deadline else LATE
        resumes = 0
        if slots.size and runtimes is not None and slot_job.overhead > 0:
            resumes = max(0, round((runtimes[index] - slot_job.duration) / slot_job.overhead))
        job_plan = _job_plan(
            grid, intensity, price, job, slot_job, slots, job_status, resumes, now_slot
        )
        plans[job.id] = job_plan
        if slots.size:
            inside = slots[(slots >= 0) & (slots < grid.n_slots)]
            used[inside] += job.gpus
    return Plan(jobs=plans, gpus_used=used, grid=grid)


def _job_plan(
    grid: SlotGrid,
    intensity: _Signal,
    price: _Signal | None,
    job: PlanJob,
    slot_job: SlotJob,
    slots: np.ndarray,
    status: str,
    resumes: int,
    now_slot: int,
) -> JobPlan:
    runtime_h = (job.duration_minutes + resumes * job.resume_overhead_minutes) / 60.0
    kwh = job.power_kw * runtime_h if slots.size else 0.0
    now_slots = np.arange(slot_job.release, slot_job.release + slot_job.duration)
    now_kwh = job.power_kw * job.duration_minutes / 60.0
    now_kg = now_kwh * intensity.mean(now_slots) / 1000.0
    kg = kwh * intensity.mean(slots) / 1000.0 if slots.size else 0.0
    cost = None
    if price is not None and slots.size:
        cost = kwh * price.mean(slots)
    saving_kg = now_kg - kg if slots.size else 0.0
    saving_percent = 100.0 * saving_kg / now_kg if now_kg > 0 else 0.0
    objective_saving = saving_percent
    if job.objective == "cost" and cost is not None and price is not None:
        now_cost = now_kwh * price.mean(now_slots)
        objective_saving = 100.0 * (now_cost - cost) / now_cost if now_cost > 0 else 0.0
    job_plan = JobPlan(
        job_id=job.id,
        intervals=intervals_of(grid, slots),
        slots=slots.tolist(),
        kwh=kwh,
        kg_co2e=kg,
        cost=cost,
        saving_kg=saving_kg,
        saving_percent=saving_percent,
        feasible=status == ON_TIME,
        explanation="",
    )
    job_plan.explanation = _explain(grid, slot_job, job_plan, status, objective_saving, now_slot)
    return job_plan
