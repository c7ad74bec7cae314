"""Online backtests of the planner and the baselines on a historical carbon trace.

`simulate(trace, workload, forecast=..., policy=...)` replays a workload slot by slot.
Each job becomes known at its `submitted_at` (rounded up to the next slot). For the
`greenwindow` policy the queue is re-planned in every slot with the planner, from what is
known then: started non-interruptible jobs keep their window, interruptible ones may be
paused and resumed, and only the jobs planned for the current slot run in it. With
`forecast="perfect"` the planner sees the true trace ahead; with `"forecaster"` it sees a
`seasonal_forecast` built from the history before the current slot only. Emissions are
always counted on the true trace. `run-now` and `sdk-window` decide once per job at
submission (see `baselines.py`); in forecaster mode the SDK rule sees the forecast made
at the job's submission.

This is the only module of the package that reads or writes files.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from scheduler.carbon.forecaster import seasonal_forecast
from scheduler.carbon.series import IntensitySeries, parse_timestamp, read_trace_csv
from scheduler.planning.baselines import run_now_slots, sdk_window_slots
from scheduler.planning.joint import plan_queue
from scheduler.planning.planner import DEFER_PENALTY_PER_HOUR
from scheduler.planning.types import SlotJob

POLICIES = ("greenwindow", "run-now", "sdk-window")
FORECASTS = ("perfect", "forecaster")
# Extra hours planned past the latest deadline, so late jobs still find a place.
_LATE_MARGIN_HOURS = 24
# Per re-plan: a fixed number of search moves per queued job keeps backtests reproducible;
# the time budget is only a safety net.
_SEARCH_PER_JOB = 3
_STEP_BUDGET_S = 5.0

View = Callable[[int, int], np.ndarray]


def _rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def workload_slot_jobs(series: IntensitySeries, workload: dict[str, Any]) -> list[SlotJob]:
    """Workload jobs in slot units of the trace (submission rounded up, deadline down)."""
    step = series.step_minutes
    jobs = []
    for order, raw in enumerate(workload["jobs"]):
        submitted = (parse_timestamp(raw["submitted_at"]) - series.start).total_seconds() / 60
        deadline = (parse_timestamp(raw["deadline"]) - series.start).total_seconds() / 60
        jobs.append(
            SlotJob(
                id=str(raw["id"]),
                duration=max(1, round(float(raw["duration_minutes"]) / step)),
                power_kw=float(raw.get("power_kw", 0.3)),
                gpus=int(raw.get("gpus", 1)),
                release=math.ceil(submitted / step - 1e-9),
                deadline=math.floor(deadline / step + 1e-9),
                interruptible=bool(raw.get("interruptible", False)),
                order=order,
            )
        )
    return jobs


def _views(series: IntensitySeries, forecast: str) -> View:
    """What the planner sees at slot `now` for slots [now, end)."""
    truth = series.values
    if forecast == "perfect":
        return lambda now, end: truth[now:end]

    def forecasted(now: int, end: int) -> np.ndarray:
        moment = series.start + now * timedelta(minutes=series.step_minutes)
        history = series.window(series.start, moment)
        hours = (end - now) * series.step_minutes / 60
        return seasonal_forecast(history, moment, hours).values[: end - now]

    return forecasted


def online_greenwindow(
    jobs: list[SlotJob],
    n_slots: int,
    capacity: int,
    view: View,
    late_margin_slots: int = 24,
    defer_penalty: float = 0.0,
) -> list[list[int]]:
    """Run the planner online: re-plan every slot, run only what is planned for it."""
    done: list[list[int]] = [[] for _ in jobs]
    fixed = [False] * len(jobs)
    used = np.zeros(n_slots, dtype=np.int64)
    pending = set(range(len(jobs)))
    now = min((job.release for job in jobs), default=n_slots)
    while pending and now < n_slots:
        active = [i for i in sorted(pending) if jobs[i].release <= now]
        if not active:
            now = min(jobs[i].release for i in pending)
            continue
        remaining = [jobs[i].duration - len(done[i]) for i in active]
        end = max(max(jobs[i].deadline, now + r) for i, r in zip(active, remaining, strict=True))
        end = min(n_slots, end + late_margin_slots)
        queue = [
            SlotJob(
                id=jobs[i].id,
                duration=r,
                power_kw=jobs[i].power_kw,
                gpus=jobs[i].gpus,
                release=0,
                deadline=jobs[i].deadline - now,
                interruptible=jobs[i].interruptible,
                running=bool(done[i]) and done[i][-1] == now - 1,
                order=jobs[i].order,
            )
            for i, r in zip(active, remaining, strict=True)
        ]
        free = np.maximum(capacity - used[now:end], 0)
        result = plan_queue(
            queue,
            view(now, end),
            None,
            free,
            _STEP_BUDGET_S,
            _SEARCH_PER_JOB * len(queue),
            defer_penalty,
        )
        for i, slots in zip(active, result.slots, strict=True):
            if slots is None or int(slots.min()) != 0:
                continue
            if jobs[i].interruptible:
                done[i].append(now)
                used[now] += jobs[i].gpus
            else:
                # A started job that cannot be paused keeps the window it was given.
                window = [now + int(s) for s in slots]
                done[i].extend(window)
                used[window] += jobs[i].gpus
                fixed[i] = True
            if len(done[i]) >= jobs[i].duration:
                pending.discard(i)
        now += 1
    return done


def _intervals(series: IntensitySeries, slots: list[int]) -> list[list[str]]:
    step = timedelta(minutes=series.step_minutes)
    intervals: list[list[int]] = []
    for slot in sorted(slots):
        if intervals and intervals[-1][1] == slot:
            intervals[-1][1] = slot + 1
        else:
            intervals.append([slot, slot + 1])
    return [
        [_rfc3339(series.start + a * step), _rfc3339(series.start + b * step)] for a, b in intervals
    ]


def _kg(series: IntensitySeries, job: SlotJob, slots: list[int]) -> float:
    hours = series.step_minutes / 60
    return job.power_kw * float(series.values[slots].sum()) * hours / 1000.0 if slots else 0.0


def policy_slots(
    series: IntensitySeries,
    jobs: list[SlotJob],
    capacity: int,
    *,
    forecast: str = "perfect",
    policy: str = "greenwindow",
) -> list[list[int]]:
    """Slots each job ran in under a policy (absolute trace slots)."""
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, not {policy!r}")
    if forecast not in FORECASTS:
        raise ValueError(f"forecast must be one of {FORECASTS}, not {forecast!r}")
    n_slots = len(series)
    view = _views(series, forecast)
    if policy == "greenwindow":
        margin = _LATE_MARGIN_HOURS * 60 // series.step_minutes
        penalty = DEFER_PENALTY_PER_HOUR * series.step_minutes / 60
        return online_greenwindow(jobs, n_slots, capacity, view, margin, penalty)
    full = np.full(n_slots, capacity, dtype=np.int64)
    if policy == "run-now":
        chosen = run_now_slots(jobs, full)
    elif forecast == "perfect":
        chosen = sdk_window_slots(jobs, full, series.values)
    else:
        views = []
        for job in jobs:
            seen = series.values.copy()
            end = min(max(job.deadline, job.release + job.duration), n_slots)
            seen[job.release : end] = view(job.release, end)
            views.append(seen)
        chosen = sdk_window_slots(jobs, full, views)
    return [[] if s is None else [int(x) for x in s] for s in chosen]


def simulate_series(
    series: IntensitySeries,
    workload: dict[str, Any],
    *,
    forecast: str = "perfect",
    policy: str = "greenwindow",
) -> dict[str, Any]:
    """Backtest a policy on a series; the result is the `greenwindow simulate` JSON."""
    jobs = workload_slot_jobs(series, workload)
    capacity = int(workload["capacity_gpus"])
    chosen = policy_slots(series, jobs, capacity, forecast=forecast, policy=policy)
    if policy == "run-now":
        baseline = chosen
    else:
        baseline = policy_slots(series, jobs, capacity, forecast=forecast, policy="run-now")
    total = sum(_kg(series, job, slots) for job, slots in zip(jobs, chosen, strict=True))
    run_now = sum(_kg(series, job, slots) for job, slots in zip(jobs, baseline, strict=True))
    misses = sum(
        1
        for job, slots in zip(jobs, chosen, strict=True)
        if len(slots) < job.duration or max(slots) + 1 > job.deadline
    )
    return {
        "policy": policy,
        "forecast": forecast,
        "jobs": [
            {
                "id": job.id,
                "intervals": _intervals(series, slots),
                "kg_co2e": _kg(series, job, slots),
            }
            for job, slots in zip(jobs, chosen, strict=True)
        ],
        "total_kg_co2e": total,
        "run_now_kg_co2e": run_now,
        "savings_percent": 100.0 * (run_now - total) / run_now if run_now > 0 else 0.0,
        "deadline_misses": misses,
    }


def simulate(
    trace_path: str | Path,
    workload: dict[str, Any],
    *,
    forecast: str = "perfect",
    policy: str = "greenwindow",
) -> dict[str, Any]:
    """Backtest a policy on a trace CSV (life-cycle intensity) and a workload dict."""
    return simulate_series(read_trace_csv(trace_path), workload, forecast=forecast, policy=policy)


def main(
    trace: str | Path,
    workload_path: str | Path,
    out_path: str | Path,
    forecast: str = "perfect",
    policy: str = "greenwindow",
) -> dict[str, Any]:
    """Run a backtest, write its JSON to `out_path` and print a short summary table."""
    from rich.console import Console
    from rich.table import Table

    workload = json.loads(Path(workload_path).read_text(encoding="utf-8"))
    result = simulate(trace, workload, forecast=forecast, policy=policy)
    Path(out_path).write_text(json.dumps(result, indent=1), encoding="utf-8")
    table = Table(title=f"greenwindow simulate: {Path(trace).name}")
    for column in ("policy", "forecast", "jobs", "kg CO2e", "run-now kg", "saving", "misses"):
        table.add_column(column, justify="right" if column != "policy" else "left")
    table.add_row(
        policy,
        forecast,
        str(len(result["jobs"])),
        f"{result['total_kg_co2e']:.2f}",
        f"{result['run_now_kg_co2e']:.2f}",
        f"{result['savings_percent']:.1f} %",
        str(result["deadline_misses"]),
    )
    Console().print(table)
    return result
