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
from scheduler.planning.edf import EdfState, edf_lateness, edf_misses, edf_slots
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
# and capacity is kept for unseen urgent arrivals: `_HEADROOM` x the observed GPU load of
# jobs with less than `_URGENT_LAXITY_HOURS` of laxity, measured over `_RATE_WINDOW_HOURS`,
# arrives as expected work due `_URGENT_LAXITY_HOURS` after it appears.
_LAXITY_MARGIN_HOURS = 1.0
_HEADROOM = 1.0
_MARGIN_LOAD_SCALE = 2.0
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


def urgent_load(
    jobs: Sequence[SlotJob], now: int, window: int, urgent_laxity: int
) -> tuple[float, int]:
    """What unseen urgent jobs will ask for, from those seen lately (released in the last
    `window` slots, or since the first release, with at most `urgent_laxity` of laxity):
    GPUs per slot, and the slots from release to deadline they typically have."""
    seen = [job for job in jobs if job.release <= now]
    if not seen:
        return 0.0, 0
    first = max(now - window + 1, min(job.release for job in seen))
    recent = [job for job in seen if job.release >= first and job.slack <= urgent_laxity]
    if not recent:
        return 0.0, 0
    # Averaged over at least a quarter of the window, so the first few arrivals do not
    # read as a flood.
    load = sum(job.gpus * job.duration for job in recent) / max(now - first + 1, window // 4, 1)
    due = int(np.median([job.deadline - job.release for job in recent]))
    return load, max(due, 1)


def busy_share(jobs: Sequence[SlotJob], now: int, window: int, capacity: int) -> float:
    """Share of the GPUs that jobs released in the last `window` slots asked for."""
    seen = [job for job in jobs if now - window < job.release <= now]
    if not seen or capacity <= 0:
        return 0.0
    first = min(job.release for job in jobs)
    span = max(min(window, now - first + 1), window // 4, 1)
    return sum(job.gpus * job.duration for job in seen) / (span * capacity)


def expected_arrivals(load: float, horizon: int, due: int, first_order: int) -> list[SlotJob]:
    """Stand-ins for urgent jobs not seen yet: from the next slot on, `load` GPU-slots of
    one-GPU interruptible work per slot, due `due` slots after it arrives (grouped in
    blocks of half that, to keep the check small)."""
    if load <= 0 or due <= 0:
        return []
    block = max(1, due // 2)
    expected: list[SlotJob] = []
    carry = 0.0
    for release in range(1, horizon, block):
        carry += load * min(block, horizon - release)
        work = int(carry)
        carry -= work
        while work > 0:
            expected.append(
                SlotJob(
                    id=f"expected-{len(expected)}",
                    duration=min(work, due),
                    power_kw=0.0,
                    gpus=1,
                    release=release,
                    deadline=release + due,
                    interruptible=True,
                    order=first_order + len(expected),
                )
            )
            work -= due
    return expected


def safe_first_slot(
    queue: Sequence[SlotJob],
    planned: list[int],
    committed: np.ndarray,
    capacity: int,
    urgent_load: float = 0.0,
    margin: int = 0,
    urgent_due: int = 0,
) -> list[int]:
    """Jobs to run in the first slot so that the known queue stays as feasible as under EDF.

    EDF is run from the next slot on the queue left after `planned` runs now. If a job would
    then miss its deadline where EDF from now would meet it, jobs are added in EDF order
    while GPUs are free until none does (failing that, EDF's own choice runs now). Then the
    same check with hedges (`margin` slots off every deadline, and the urgent work expected
    to arrive, see `expected_arrivals`) may add more jobs, as long as the unhedged check
    still holds.
    """
    n_slots = int(committed.shape[0])
    if n_slots == 0 or not queue:
        return planned
    full = np.full(n_slots, float(capacity))
    state = EdfState([job.duration for job in queue], committed)
    baseline, edf_first = edf_misses(queue, state, full, None, 0)

    def keeps_edf_deadlines(chosen: list[int]) -> bool:
        return edf_misses(queue, state, full, chosen, 0)[0] <= baseline

    chosen = _complete(queue, planned, committed, capacity, keeps_edf_deadlines)
    if chosen is None:
        chosen = edf_first
    load = min(urgent_load, float(capacity))
    expected = expected_arrivals(load, n_slots, urgent_due, max(job.order for job in queue) + 1)
    if not expected and margin <= 0:
        return chosen
    hedged_queue = [*queue, *expected]
    hedged_state = EdfState([job.duration for job in hedged_queue], committed)
    real = len(queue)

    def lateness(first: list[int] | None) -> int:
        late, _ = edf_lateness(hedged_queue, hedged_state, full, first, margin)
        return sum(late[:real])

    # Under the hedges, known jobs may end no later in total than under EDF from now.
    hedged_baseline = lateness(None)
    safer = _complete(
        queue,
        chosen,
        committed,
        capacity,
        lambda first: lateness(first) <= hedged_baseline and keeps_edf_deadlines(first),
    )
    return chosen if safer is None else safer


def _complete(
    queue: Sequence[SlotJob],
    planned: list[int],
    committed: np.ndarray,
    capacity: int,
    acceptable: Callable[[list[int]], bool],
) -> list[int] | None:
    """`planned` plus as few jobs as EDF order gives for the first slot to be `acceptable`;
    None if GPUs run out first."""
    chosen = list(planned)
    if acceptable(chosen):
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
        if acceptable(chosen):
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
    full_margin = _LAXITY_MARGIN_HOURS / slot_hours
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
            load, due = urgent_load(jobs, now, window, urgent)
            # The margin grows with how busy the GPUs are: a quiet queue needs none.
            margin = round(
                full_margin * min(1.0, _MARGIN_LOAD_SCALE * busy_share(jobs, now, window, capacity))
            )
            first = safe_first_slot(
                queue, first, used[now:end], capacity, _HEADROOM * load, margin, due
            )
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
    console = Console(width=max(Console().width, 100))
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


def main_zones(
    traces: list[str],
    workload_path: str | Path,
    out_path: str | Path,
    forecast: str = "perfect",
    policy: str = "greenwindow",
) -> dict[str, Any]:
    """Multi-zone backtest from `ZONE=FILE` traces (see `spatial.py`); writes the JSON and
    prints a summary with the extra saving over keeping every job in its first zone."""
    from rich.console import Console
    from rich.table import Table

    from scheduler.planning.spatial import simulate_zones

    series_by_zone: dict[str, IntensitySeries] = {}
    console = Console(width=max(Console().width, 100))
    for entry in traces:
        zone, sep, file = entry.partition("=")
        if not sep or not zone or not file:
            raise ValueError(f"--trace {entry!r}: with several traces, give each as ZONE=FILE")
        if zone in series_by_zone:
            raise ValueError(f"--trace: zone {zone!r} given twice")
        read = read_trace(file)
        for note in read.report.warnings():
            console.print(f"warning: {Path(file).name}: {note}", style="yellow")
        series_by_zone[zone] = read.series
    workload = json.loads(Path(workload_path).read_text(encoding="utf-8"))
    result = simulate_zones(series_by_zone, workload, forecast=forecast, policy=policy)
    Path(out_path).write_text(json.dumps(result, indent=1), encoding="utf-8")
    table = Table(title=f"greenwindow simulate: {', '.join(series_by_zone)}")
    columns = ("policy", "jobs", "moved", "kg CO2e", "home-zone kg", "extra", "misses", "EDF")
    for column in columns:
        table.add_column(column, justify="right" if column != "policy" else "left")
    table.add_row(
        policy,
        str(len(result["jobs"])),
        str(result["moved_jobs"]),
        f"{result['total_kg_co2e']:.2f}",
        f"{result['home_zone_kg_co2e']:.2f}",
        f"{result['extra_saving_percent']:.1f} %",
        str(result["deadline_misses"]),
        str(result["edf_deadline_misses"]),
    )
    console.print(table)
    return result
