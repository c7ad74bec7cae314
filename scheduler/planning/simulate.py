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
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from scheduler.carbon.forecaster import seasonal_forecast
from scheduler.carbon.series import IntensitySeries, parse_timestamp
from scheduler.carbon.trace_reader import read_trace
from scheduler.planning.baselines import run_now_slots, sdk_window_slots
from scheduler.planning.edf import EdfState, edf_misses, edf_slots
from scheduler.planning.joint import plan_queue
from scheduler.planning.planner import DEFER_PENALTY_PER_HOUR
from scheduler.planning.types import SlotJob

POLICIES = ("greenwindow", "run-now", "sdk-window", "edf")
FORECASTS = ("perfect", "forecaster")
# Extra hours planned past the latest deadline, so late jobs still find a place.
_LATE_MARGIN_HOURS = 24
# Per re-plan: a fixed number of search moves per queued job keeps backtests reproducible;
# the time budget is only a safety net.
_SEARCH_PER_JOB = 3
_STEP_BUDGET_S = 5.0
# Deadline safety (see `safe_first_slot`): every deadline is checked this many hours early,
# and GPUs are held back for unseen urgent arrivals: `_HEADROOM` x the observed GPU load of
# jobs with less than `_URGENT_LAXITY_HOURS` of laxity, measured over `_RATE_WINDOW_HOURS`.
_LAXITY_MARGIN_HOURS = 1.0
_HEADROOM = 1.0
_URGENT_LAXITY_HOURS = 12.0
_RATE_WINDOW_HOURS = 48.0

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


def urgent_load(jobs: Sequence[SlotJob], now: int, window: int, urgent_laxity: int) -> float:
    """GPUs per slot that jobs with little laxity have asked for lately (released in the last
    `window` slots, or since the first release): what unseen arrivals will need soon."""
    seen = [job for job in jobs if job.release <= now]
    if not seen:
        return 0.0
    first = max(now - window + 1, min(job.release for job in seen))
    recent = [job for job in seen if job.release >= first and job.slack <= urgent_laxity]
    # Averaged over at least a quarter of the window, so the first few arrivals do not
    # read as a flood.
    return sum(job.gpus * job.duration for job in recent) / max(now - first + 1, window // 4, 1)


def safe_first_slot(
    queue: Sequence[SlotJob],
    planned: list[int],
    committed: np.ndarray,
    capacity: int,
    headroom: float = 0.0,
    margin: int = 0,
) -> list[int]:
    """Jobs to run in the first slot so that the known queue stays as feasible as under EDF.

    EDF is run from the next slot on the queue left after `planned` runs now. If a job would
    then miss its deadline where EDF from now would meet it, jobs are added in EDF order
    while GPUs are free until none does. This is tried first with hedges (`margin` slots off
    every deadline, `headroom` GPUs held back in later slots for arrivals not seen yet),
    then without; failing both, EDF's own choice runs now.
    """
    n_slots = int(committed.shape[0])
    if n_slots == 0 or not queue:
        return planned
    state = EdfState([job.duration for job in queue], committed)
    widest = max(job.gpus for job in queue)
    # Held-back GPUs never make a job wider than what is left unplaceable in the check.
    headroom = max(0.0, min(headroom, capacity - widest))
    checks = [(headroom, margin), (0.0, 0)] if headroom > 0 or margin > 0 else [(0.0, 0)]
    edf_first: list[int] = planned
    for held, slack in checks:
        cap = np.full(n_slots, float(capacity))
        cap[1:] -= held
        baseline, edf_first = edf_misses(queue, state, cap, None, slack)
        chosen = _complete(queue, planned, committed, capacity, state, cap, slack, baseline)
        if chosen is not None:
            return chosen
    return edf_first


def _complete(
    queue: Sequence[SlotJob],
    planned: list[int],
    committed: np.ndarray,
    capacity: int,
    state: EdfState,
    cap: np.ndarray,
    margin: int,
    baseline: set[int],
) -> list[int] | None:
    """`planned` plus as few jobs as EDF order gives so that no job misses outside
    `baseline`; None if GPUs run out first."""
    chosen = list(planned)
    misses, _ = edf_misses(queue, state, cap, chosen, margin)
    if misses <= baseline:
        return chosen
    free = capacity - int(committed[0]) - sum(queue[i].gpus for i in chosen)
    for index in sorted(range(len(queue)), key=lambda i: (queue[i].deadline, queue[i].order)):
        job = queue[index]
        if index in chosen or job.gpus > free:
            continue
        if not job.interruptible and np.any(capacity - committed[: job.duration] < job.gpus):
            continue
        chosen.append(index)
        free -= job.gpus
        misses, _ = edf_misses(queue, state, cap, chosen, margin)
        if misses <= baseline:
            return chosen
    return None


def online_greenwindow(
    jobs: list[SlotJob],
    n_slots: int,
    capacity: int,
    view: View,
    late_margin_slots: int = 24,
    defer_penalty: float = 0.0,
    *,
    slot_hours: float = 1.0,
    deadline_safety: bool = True,
) -> list[list[int]]:
    """Run the planner online: re-plan every slot, run only what is planned for it.

    With `deadline_safety`, what runs in each slot is checked by `safe_first_slot`, so the
    plan never leaves the known queue less feasible than EDF would, with margins for what
    may still arrive.
    """
    margin = round(_LAXITY_MARGIN_HOURS / slot_hours)
    window = max(1, round(_RATE_WINDOW_HOURS / slot_hours))
    urgent = round(_URGENT_LAXITY_HOURS / slot_hours)
    done: list[list[int]] = [[] for _ in jobs]
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
        first = [
            k for k, slots in enumerate(result.slots) if slots is not None and int(slots.min()) == 0
        ]
        if deadline_safety:
            headroom = _HEADROOM * urgent_load(jobs, now, window, urgent)
            first = safe_first_slot(queue, first, used[now:end], capacity, headroom, margin)
        for k in first:
            i = active[k]
            if jobs[i].interruptible:
                done[i].append(now)
                used[now] += jobs[i].gpus
            else:
                # A started job that cannot be paused runs to its end from now on.
                run = list(range(now, min(now + queue[k].duration, n_slots)))
                done[i].extend(run)
                used[run] += jobs[i].gpus
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
    deadline_safety: bool = True,
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
        return online_greenwindow(
            jobs,
            n_slots,
            capacity,
            view,
            margin,
            penalty,
            slot_hours=series.step_minutes / 60,
            deadline_safety=deadline_safety,
        )
    if policy == "edf":
        return edf_slots(jobs, capacity, n_slots)
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


def _misses(jobs: Sequence[SlotJob], chosen: Sequence[list[int]]) -> int:
    return sum(
        1
        for job, slots in zip(jobs, chosen, strict=True)
        if len(slots) < job.duration or max(slots) + 1 > job.deadline
    )


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
    misses = _misses(jobs, chosen)
    edf = chosen if policy == "edf" else policy_slots(series, jobs, capacity, policy="edf")
    return {
        "policy": policy,
        "forecast": forecast,
        "edf_deadline_misses": _misses(jobs, edf),
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
    """Backtest a policy on a trace file (life-cycle intensity) and a workload dict.

    The trace is read as it comes (see `scheduler.carbon.trace_reader`); what the reader
    had to repair is listed under `trace_warnings`.
    """
    read = read_trace(trace_path)
    result = simulate_series(read.series, workload, forecast=forecast, policy=policy)
    result["trace_warnings"] = read.report.warnings()
    result["step_minutes"] = read.series.step_minutes
    return result


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
    console = Console()
    for note in result.get("trace_warnings", []):
        console.print(f"warning: {Path(trace).name}: {note}", style="yellow")
    table = Table(title=f"greenwindow simulate: {Path(trace).name}")
    columns = (
        "policy",
        "forecast",
        "jobs",
        "kg CO2e",
        "run-now kg",
        "saving",
        "misses",
        "EDF misses",
    )
    for column in columns:
        table.add_column(column, justify="right" if column != "policy" else "left")
    table.add_row(
        policy,
        forecast,
        str(len(result["jobs"])),
        f"{result['total_kg_co2e']:.2f}",
        f"{result['run_now_kg_co2e']:.2f}",
        f"{result['savings_percent']:.1f} %",
        str(result["deadline_misses"]),
        str(result["edf_deadline_misses"]),
    )
    console.print(table)
    return result
