"""Baseline policies in slot units: run-now (FIFO) and the GSF Carbon Aware SDK window rule.

Both handle jobs one at a time in submission order and never revise a decision, so they
are the same offline and online. Every job runs in one contiguous window.

- `run_now_slots`: each job starts at the first slot from its release where its GPUs are
  free for its whole duration (FIFO with backfilling into gaps nobody before it reserved).
- `sdk_window_slots`: each job independently takes the start with the lowest rolling
  average intensity over its duration within [release, deadline - duration] (as the SDK's
  `optimalDataPoints`: the minimum of the rolling window average, earliest on ties); if
  its GPUs are not free there it is pushed to the next start where they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np

from scheduler.planning import placement
from scheduler.planning.planner import build_plan, capacity_per_slot, to_slot_jobs
from scheduler.planning.types import Plan, PlanJob, RunningJob, SlotGrid, SlotJob


def _submission_order(jobs: Sequence[SlotJob]) -> list[int]:
    return sorted(range(len(jobs)), key=lambda i: (jobs[i].release, jobs[i].order))


def _first_fit_from(free: np.ndarray, job: SlotJob, start: int) -> int:
    """First start at or after `start` where the job's GPUs are free throughout, or -1."""
    start = max(start, 0)
    fits = placement.fitting_starts(free[start:], job.gpus, job.duration)
    found = np.flatnonzero(fits)
    return int(start + found[0]) if found.shape[0] else -1


def run_now_slots(jobs: Sequence[SlotJob], capacity: np.ndarray) -> list[np.ndarray | None]:
    """FIFO run-now: every job starts as soon as its GPUs are free (None if never in the grid)."""
    free = np.asarray(capacity, dtype=np.int64).copy()
    result: list[np.ndarray | None] = [None] * len(jobs)
    for index in _submission_order(jobs):
        job = jobs[index]
        start = _first_fit_from(free, job, job.release)
        if start < 0:
            continue
        slots = np.arange(start, start + job.duration)
        free[slots] -= job.gpus
        result[index] = slots
    return result


def sdk_best_start(view: np.ndarray, job: SlotJob) -> int:
    """The SDK rule: start with the minimum rolling-average intensity that meets the deadline."""
    last = min(job.deadline, view.shape[0]) - job.duration
    if last < job.release:
        return job.release
    sums = placement.window_sums(view[job.release : last + job.duration], job.duration)
    return job.release + int(np.argmin(sums))


def sdk_window_slots(
    jobs: Sequence[SlotJob],
    capacity: np.ndarray,
    views: np.ndarray | Sequence[np.ndarray],
) -> list[np.ndarray | None]:
    """SDK window rule per job; `views` is one intensity array, or one per job (its forecast)."""
    free = np.asarray(capacity, dtype=np.int64).copy()
    shared = isinstance(views, np.ndarray) and views.ndim == 1
    result: list[np.ndarray | None] = [None] * len(jobs)
    for index in _submission_order(jobs):
        job = jobs[index]
        view = views if shared else views[index]
        start = _first_fit_from(free, job, sdk_best_start(np.asarray(view), job))
        if start < 0:
            continue
        slots = np.arange(start, start + job.duration)
        free[slots] -= job.gpus
        result[index] = slots
    return result


def baseline_plan(
    policy: str,
    grid: SlotGrid,
    jobs: Sequence[PlanJob],
    capacity: int | Sequence[int] | np.ndarray,
    running: Sequence[RunningJob] = (),
    *,
    now: datetime | None = None,
) -> Plan:
    """A `Plan` from a baseline policy (`run-now` or `sdk-window`), for comparisons."""
    free = capacity_per_slot(grid, capacity, running)
    slot_jobs = to_slot_jobs(grid, jobs, now)
    if policy == "run-now":
        chosen = run_now_slots(slot_jobs, free)
    elif policy == "sdk-window":
        chosen = sdk_window_slots(slot_jobs, free, grid.intensity)
    else:
        raise ValueError(f"unknown baseline policy {policy!r}")
    now_slot = 0 if now is None else max(grid.ceil_index(now), 0)
    result = build_plan(grid, jobs, slot_jobs, chosen, now_slot=now_slot)
    result.gpus_used = result.gpus_used + (capacity_per_slot(grid, capacity, ()) - free)
    return result
