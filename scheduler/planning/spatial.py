"""Backtests across several zones: each job may run in any zone it lists.

`simulate_zones(traces, workload)` takes one intensity series per zone and a workload whose
jobs may carry `zones: [...]` (the first is the job's home zone; without it, the first
trace's zone). `capacity_gpus` is a number (per zone) or a map zone -> GPUs.

For the `greenwindow` policy a job's zone is chosen when it is submitted, jointly with its
window: the job is planned into each zone's known queue (the jobs already sent there whose
deadlines lie ahead, as the forecast of that mode sees it), and it goes where it is on time
without pushing others late and adds the least kg CO2e. Each zone then runs the online
planner on its own jobs. Other policies keep every job in its home zone. The result also
gives the same policy with every job kept home, so the extra saving of shifting across
zones is measured on the same workload.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from scheduler.carbon.series import IntensitySeries
from scheduler.planning.joint import ON_TIME, plan_queue
from scheduler.planning.simulate import (
    _intervals,
    _kg,
    _misses,
    _views,
    policy_slots,
    workload_slot_jobs,
)
from scheduler.planning.types import SlotJob

_LATE_MARGIN_SLOTS = 24


def _zones_of(workload: dict[str, Any], default: str) -> list[list[str]]:
    lists = []
    for raw in workload["jobs"]:
        zones = raw.get("zones") or [raw.get("zone") or default]
        lists.append([str(zone) for zone in zones])
    return lists


def _capacity(workload: dict[str, Any], zone: str) -> int:
    capacity = workload["capacity_gpus"]
    if isinstance(capacity, Mapping):
        return int(capacity.get(zone, 0))
    return int(capacity)


def _added_kg(
    queue: list[SlotJob], job: SlotJob, view: np.ndarray, capacity: int
) -> tuple[bool, float]:
    """Whether `job` fits on time into a queue without making others late, and the kg it
    adds to the queue's plan (on `view`, in slot units of energy)."""

    def planned(jobs: list[SlotJob]) -> tuple[list[str], float]:
        result = plan_queue(jobs, view, None, np.full(view.shape[0], capacity), 0.05, 0)
        kg = sum(
            j.power_kw * float(view[s].sum())
            for j, s in zip(jobs, result.slots, strict=True)
            if s is not None
        )
        return result.status, kg

    before_status, before = planned(queue)
    after_status, after = planned([*queue, job])
    late_before = sum(status != ON_TIME for status in before_status)
    late_after = sum(status != ON_TIME for status in after_status)
    return late_after <= late_before, after - before


def choose_zones(
    series_by_zone: Mapping[str, IntensitySeries],
    jobs_by_zone: Mapping[str, list[SlotJob]],
    zone_lists: list[list[str]],
    workload: dict[str, Any],
    forecast: str,
) -> list[str]:
    """The zone of every job: picked at its submission, in submission order."""
    views = {zone: _views(series, forecast) for zone, series in series_by_zone.items()}
    sent: dict[str, list[int]] = {zone: [] for zone in series_by_zone}
    home = next(iter(series_by_zone))
    order = sorted(range(len(zone_lists)), key=lambda i: jobs_by_zone[home][i].release)
    chosen = [zones[0] for zones in zone_lists]
    for index in order:
        zones = [zone for zone in zone_lists[index] if zone in series_by_zone]
        if len(zones) < 2:
            continue
        best: tuple[bool, float, int, str] | None = None
        for rank, zone in enumerate(zones):
            jobs = jobs_by_zone[zone]
            job = jobs[index]
            now = job.release
            queue = [
                SlotJob(
                    id=jobs[k].id,
                    duration=jobs[k].duration,
                    power_kw=jobs[k].power_kw,
                    gpus=jobs[k].gpus,
                    release=max(jobs[k].release - now, 0),
                    deadline=jobs[k].deadline - now,
                    interruptible=jobs[k].interruptible,
                    order=jobs[k].order,
                )
                for k in sent[zone]
                if jobs[k].deadline > now
            ]
            candidate = SlotJob(
                id=job.id,
                duration=job.duration,
                power_kw=job.power_kw,
                gpus=job.gpus,
                release=0,
                deadline=job.deadline - now,
                interruptible=job.interruptible,
                order=job.order,
            )
            end = max([candidate.deadline, *(q.deadline for q in queue)]) + _LATE_MARGIN_SLOTS
            end = min(end, len(series_by_zone[zone]) - now)
            if end <= candidate.duration or _capacity(workload, zone) < job.gpus:
                continue
            fits, kg = _added_kg(
                queue, candidate, views[zone](now, now + end), _capacity(workload, zone)
            )
            key = (not fits, kg, rank, zone)
            if best is None or key < best:
                best = key
        if best is not None:
            chosen[index] = best[3]
        sent[chosen[index]].append(index)
    return chosen


def simulate_zones(
    series_by_zone: Mapping[str, IntensitySeries],
    workload: dict[str, Any],
    *,
    forecast: str = "perfect",
    policy: str = "greenwindow",
) -> dict[str, Any]:
    """Backtest a policy across zones; the result is the multi-zone `simulate` JSON."""
    if not series_by_zone:
        raise ValueError("at least one zone trace is needed")
    home = next(iter(series_by_zone))
    zone_lists = _zones_of(workload, home)
    for zones in zone_lists:
        unknown = [zone for zone in zones if zone not in series_by_zone]
        if unknown:
            raise ValueError(f"no trace for zone {unknown[0]!r} (give --trace ZONE=FILE)")
    jobs_by_zone = {zone: workload_slot_jobs(s, workload) for zone, s in series_by_zone.items()}
    first = [zones[0] for zones in zone_lists]
    if policy == "greenwindow":
        chosen = choose_zones(series_by_zone, jobs_by_zone, zone_lists, workload, forecast)
    else:
        chosen = first

    def run(assignment: list[str], run_policy: str) -> tuple[list[list[int]], float]:
        slots: list[list[int]] = [[] for _ in assignment]
        total = 0.0
        for zone, series in series_by_zone.items():
            members = [i for i, z in enumerate(assignment) if z == zone]
            if not members:
                continue
            jobs = [jobs_by_zone[zone][i] for i in members]
            ran = policy_slots(
                series, jobs, _capacity(workload, zone), forecast=forecast, policy=run_policy
            )
            for i, job, job_slots in zip(members, jobs, ran, strict=True):
                slots[i] = job_slots
                total += _kg(series, job, job_slots)
        return slots, total

    def misses(assignment: list[str], slots: list[list[int]]) -> int:
        jobs = [jobs_by_zone[zone][i] for i, zone in enumerate(assignment)]
        return _misses(jobs, slots)

    chosen_slots, total = run(chosen, policy)
    home_slots, home_total = (chosen_slots, total) if chosen == first else run(first, policy)
    run_now_slots, run_now = run(first, "run-now")
    edf_slots, _ = run(first, "edf")
    return {
        "policy": policy,
        "forecast": forecast,
        "zones": list(series_by_zone),
        "jobs": [
            {
                "id": jobs_by_zone[zone][i].id,
                "zone": zone,
                "intervals": _intervals(series_by_zone[zone], chosen_slots[i]),
                "kg_co2e": _kg(series_by_zone[zone], jobs_by_zone[zone][i], chosen_slots[i]),
            }
            for i, zone in enumerate(chosen)
        ],
        "total_kg_co2e": total,
        "run_now_kg_co2e": run_now,
        "savings_percent": 100.0 * (run_now - total) / run_now if run_now > 0 else 0.0,
        "home_zone_kg_co2e": home_total,
        "extra_saving_percent": (
            100.0 * (home_total - total) / home_total if home_total > 0 else 0.0
        ),
        "moved_jobs": sum(1 for a, b in zip(chosen, first, strict=True) if a != b),
        "deadline_misses": misses(chosen, chosen_slots),
        "home_zone_deadline_misses": misses(first, home_slots),
        "edf_deadline_misses": misses(first, edf_slots),
    }
