"""What the dashboard shows, computed by the same service functions the API calls.

Every figure here comes from the function behind the matching API endpoint (forecast, job
list, budget status, energy report), so the dashboard and the API cannot disagree.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from sqlalchemy.orm import Session

from scheduler.budgets import service as budgets
from scheduler.budgets.schemas import Threshold
from scheduler.carbon.router import get_forecast
from scheduler.deps import Principal
from scheduler.energy import service as energy
from scheduler.energy.report import energy_report
from scheduler.errors import NotFound
from scheduler.jobs import service as jobs
from scheduler.jobs.models import Job
from scheduler.jobs.router import to_read
from scheduler.jobs.schemas import JobEventRead, LiveFigures
from scheduler.jobs.states import QUEUED, TERMINAL, JobState
from scheduler.scheduling.service import Scheduling
from scheduler.teams.models import Team
from scheduler.teams.service import list_teams
from scheduler.telemetry import service as telemetry

# Jobs listed on the overview: the newest ones, one API page's worth.
OVERVIEW_JOBS = 100
# Jobs drawn on the timeline: those that hold or use a window, and those that ran.
TIMELINE_STATES = QUEUED | {JobState.RUNNING}
RAN_STATES = TERMINAL
TERMINAL_STATES = frozenset(state.value for state in TERMINAL)
# Warnings shown on a job page: the newest few, so a chatty worker cannot grow each poll.
LIVE_WARNINGS = 5
# Event reasons that are warnings: a worker's own, and those derived from its telemetry.
WARNING_REASONS = ("worker warning:", "health warning:")


def _points(points: list[Any]) -> list[list[Any]]:
    return [[p.t.isoformat(), p.g_per_kwh] for p in points]


def overview(
    request: Request,
    session: Session,
    principal: Principal,
    *,
    zone: str,
    now: datetime,
    hours: float,
    history_hours: float,
) -> dict[str, Any]:
    """The zone's intensity (history and forecast), the jobs on it and the job table."""
    forecast = get_forecast(
        zone, request, session, now, principal, hours=hours, history_hours=history_hours
    )
    listed, _ = jobs.list_jobs(
        session, team_id=principal.team_scope, state=None, cursor=None, limit=OVERVIEW_JOBS
    )
    rows = [jsonable_encoder(to_read(job)) for job in listed]
    timeline = [
        row
        for row in rows
        if row["zone"] == zone
        and (
            row["state"] in TIMELINE_STATES
            or (row["state"] in RAN_STATES and row["started_at"] and row["finished_at"])
        )
    ]
    return {
        "zone": zone,
        "now": now.isoformat(),
        "source": forecast.source,
        "signal_type": forecast.signal_type,
        "origin": forecast.origin,
        "reason": forecast.reason,
        "step_minutes": forecast.step_minutes,
        "history": _points(forecast.history),
        "forecast": _points(forecast.points),
        "jobs": rows,
        "timeline": timeline,
        "counts": _counts(rows),
    }


def _counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    return counts


def _budget_row(session: Session, team: Team, now: datetime) -> dict[str, Any]:
    try:
        budget = budgets.get_budget(session, team)
    except NotFound:
        return {"team": team.name, "budget": None}
    status = budgets.budget_status(session, budget, now=now)
    return {
        "team": team.name,
        "budget": {
            "period": budget.period,
            "period_start": status.period_start.isoformat(),
            "period_end": status.period_end.isoformat(),
            "limit_kg_co2e": budget.limit_kg_co2e,
            "mode": budget.mode,
            "thresholds": [Threshold.model_validate(t).model_dump() for t in budget.thresholds],
            "actual_kg_co2e": status.actual_kg_co2e,
            "committed_kg_co2e": status.committed_kg_co2e,
            "forecast_kg_co2e": status.forecast_kg_co2e,
            "remaining_kg_co2e": status.remaining_kg_co2e,
            "used_percent": status.used_percent,
            "state": status.state,
            # [time, actual, actual + committed] after each ledger entry of the period.
            "burn": [
                [p.at.isoformat(), p.actual_kg_co2e, p.actual_kg_co2e + p.committed_kg_co2e]
                for p in budgets.burn_history(session, budget, now=now)
            ],
        },
    }


def budget_overview(session: Session, principal: Principal, *, now: datetime) -> dict[str, Any]:
    """Each visible team's budget burn this period (the admin sees every team)."""
    teams = list_teams(session) if principal.is_admin else [principal.team]
    return {
        "now": now.isoformat(),
        "teams": [_budget_row(session, team, now) for team in teams if team is not None],
    }


def job_detail(
    session: Session,
    principal: Principal,
    job_id: str,
    *,
    scheduling: Scheduling,
    now: datetime,
) -> dict[str, Any]:
    """One job, its energy report and efficiency comparison, its events and its live
    figures; another team's job is NotFound."""
    job = jobs.get_job(session, job_id, team_id=principal.team_scope)
    report = energy_report(session, job, scheduling=scheduling)
    events = [
        JobEventRead.model_validate(e, from_attributes=True) for e in jobs.events(session, job)
    ]
    return jsonable_encoder(
        {
            "job": to_read(job),
            "energy": report,
            "events": events,
            "efficiency": efficiency_comparison(report),
            "live": _live(session, job, events, scheduling=scheduling, now=now),
        }
    )


def job_live(
    session: Session,
    principal: Principal,
    job_id: str,
    *,
    scheduling: Scheduling,
    now: datetime,
) -> dict[str, Any]:
    """What the job page refreshes while the job runs: state, progress, the heartbeat's
    figures, telemetry and the latest warnings. Another team's job is NotFound."""
    job = jobs.get_job(session, job_id, team_id=principal.team_scope)
    events = [
        JobEventRead.model_validate(e, from_attributes=True) for e in jobs.events(session, job)
    ]
    return jsonable_encoder(_live(session, job, events, scheduling=scheduling, now=now))


def _live(
    session: Session,
    job: Job,
    events: list[JobEventRead],
    *,
    scheduling: Scheduling,
    now: datetime,
) -> dict[str, Any]:
    read = to_read(job)
    figures = energy.live_figures(session, job, scheduling=scheduling, now=now)
    progress = read.progress.model_dump() if read.progress is not None else None
    return {
        "id": read.id,
        "state": read.state,
        "state_reason": read.state_reason,
        "terminal": read.state in TERMINAL_STATES,
        "started_at": read.started_at,
        "finished_at": read.finished_at,
        "progress": progress,
        "max_steps": _max_steps(progress, read.config),
        "live": LiveFigures.model_validate(figures).model_dump() if figures else None,
        # Per-GPU utilisation, memory, temperature, step time...: passed on as the job read
        # carries it, for the page to draw whatever is present.
        "telemetry": getattr(read, "telemetry", None) or getattr(job, "telemetry", None),
        "warnings": _warnings(events)[-LIVE_WARNINGS:],
        "actual_kwh": read.actual_kwh,
        "actual_kg_co2e": read.actual_kg_co2e,
    }


def _max_steps(progress: dict[str, Any] | None, config: dict[str, Any]) -> int | None:
    """The step count the progress bar fills to: the worker's total, else the config's."""
    candidates = ((progress or {}).get("total_steps"), config.get("max_steps"), config.get("steps"))
    for value in candidates:
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return int(value)
    return None


def _warnings(events: list[JobEventRead]) -> list[JobEventRead]:
    """Events that warn: of kind `warning`, a worker's `warning` event, or a health warning
    derived from the telemetry."""
    found = []
    for event in events:
        data = event.data or {}
        kind = getattr(event, "kind", None) or data.get("kind") or data.get("type")
        if kind == "warning" or event.reason.startswith(WARNING_REASONS):
            found.append(event)
    return found


# -- telemetry charts ------------------------------------------------------------------------

# What one chart answer may hold, whatever the stored history or the worker sent: points per
# series (the history is already downsampled; this caps a raised setting), GPUs drawn, and
# warnings listed.
CHART_POINTS = 600
CHART_GPUS = 4
CHART_WARNINGS = 20
# Charts of per-GPU figures: (chart, field, series label).
GPU_CHARTS = (
    ("utilisation", "util_pct", "util %"),
    ("memory", "torch_allocated_mib", "allocated MiB"),
    ("memory", "torch_reserved_mib", "reserved MiB"),
    ("temperature", "temp_c", "°C"),
    ("power", "power_w", "W"),
)
# Charts of the job's training figures: (chart, field, series label).
TRAINING_CHARTS = (
    ("step_time", "step_time_s", "step time (s)"),
    ("loss", "loss", "loss"),
    ("loss", "grad_norm", "grad norm"),
    ("loss", "kl", "KL"),
    ("loss", "mel", "mel"),
)
CHARTS = ("utilisation", "memory", "temperature", "power", "step_time", "loss")


def _thin(points: list[Any], limit: int) -> list[Any]:
    """At most `limit` points, evenly spread, keeping the first and the last."""
    if len(points) <= limit:
        return points
    last = len(points) - 1
    picks = sorted({round(i * last / (limit - 1)) for i in range(limit)})
    return [points[i] for i in picks]


def _figure(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _gpu_key(gpu: dict[str, Any]) -> tuple[int, int] | None:
    rank, index = gpu.get("rank"), gpu.get("index")
    if isinstance(rank, int) and isinstance(index, int):
        return rank, index
    return None


def telemetry_charts(
    session: Session, principal: Principal, job_id: str, *, attempt: int | None
) -> dict[str, Any]:
    """An attempt's stored telemetry as chart series (GPU utilisation, torch allocated
    against reserved memory, temperature and power, step time, loss and gradient norm) and
    the warnings to mark on them. Another team's job is NotFound."""
    job = jobs.get_job(session, job_id, team_id=principal.team_scope)
    stored = telemetry.history(session, job, attempt)
    points = _thin(stored["points"], CHART_POINTS)
    gpus: list[tuple[int, int]] = []
    for point in points:
        for gpu in point["gpus"] or []:
            key = _gpu_key(gpu)
            if key is not None and key not in gpus:
                gpus.append(key)
    gpus.sort()
    shown = gpus[:CHART_GPUS]
    charts: dict[str, list[dict[str, Any]]] = {name: [] for name in CHARTS}
    for chart, field, label in TRAINING_CHARTS:
        series = [
            [point["last_at"], value]
            for point in points
            if (value := _figure((point["values"] or {}).get(field))) is not None
        ]
        if series:
            charts[chart].append({"name": label, "field": field, "points": series})
    for chart, field, label in GPU_CHARTS:
        for rank, index in shown:
            series = []
            for point in points:
                for gpu in point["gpus"] or []:
                    if _gpu_key(gpu) == (rank, index):
                        value = _figure(gpu.get(field))
                        if value is not None:
                            series.append([point["last_at"], value])
                        break
            if series:
                name = f"GPU {index}" + (f" rank {rank}" if len({r for r, _ in gpus}) > 1 else "")
                charts[chart].append(
                    {"name": f"{name} {label}", "field": field, "gpu": index, "points": series}
                )
    events = [
        JobEventRead.model_validate(e, from_attributes=True) for e in jobs.events(session, job)
    ]
    warnings = [
        {"at": w.get("at"), "code": w.get("code"), "message": w.get("message")}
        for w in stored["warnings"]
    ]
    # A worker's own warnings of this attempt (health warnings are already in the list).
    warnings += [
        {"at": e.at.isoformat(), "code": "worker", "message": e.reason}
        for e in _warnings(events)
        if e.attempt == stored["attempt"] and not e.reason.startswith("health warning:")
    ]
    warnings.sort(key=lambda w: str(w["at"]))
    return jsonable_encoder(
        {
            "job_id": job.id,
            "attempt": stored["attempt"],
            "attempts": stored["attempts"][-CHART_POINTS:],
            "stride": stored["stride"],
            "points": len(points),
            "stored_points": len(stored["points"]),
            "gpus": len(gpus),
            "gpus_shown": len(shown),
            "steps": [[p["last_at"], p["step"]] for p in points if p["step"] is not None],
            "charts": charts,
            "warnings": warnings[-CHART_WARNINGS:],
        }
    )


# -- efficiency -----------------------------------------------------------------------------

# The energy report's efficiency figures, as the job page labels them.
EFFICIENCY_FIGURES = (
    ("kwh_per_optimizer_step", "kWh per optimizer step"),
    ("kwh_per_audio_hour", "kWh per training-audio hour"),
    ("wh_per_1k_samples", "Wh per 1,000 samples"),
)
EFFICIENCY_STAGES = ("s1", "s2", "training")


def _times(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None or reference <= 0:
        return None
    return value / reference


def efficiency_comparison(report: dict[str, Any]) -> dict[str, Any]:
    """Per stage and figure: this job's value beside the team's median of earlier jobs of
    the same configuration and the learned expectation, with the ratio to each."""
    figures = report.get("efficiency") or {}
    baseline = report.get("team_baseline") or {}
    expected = report.get("expected_efficiency") or {}
    stages = figures.get("stages") or {}
    rows = []
    for stage in EFFICIENCY_STAGES:
        mine = stages.get(stage)
        if not mine:
            continue
        team = (baseline.get("stages") or {}).get(stage) or {}
        learned = (expected.get("stages") or {}).get(stage) or {}
        for field, label in EFFICIENCY_FIGURES:
            value = _figure(mine.get(field))
            if value is None:
                continue
            median = _figure(team.get(field))
            expectation = _figure(learned.get(field))
            rows.append(
                {
                    "stage": stage,
                    "figure": field,
                    "label": label,
                    "value": value,
                    "team_median": median,
                    "team_ratio": _times(value, median),
                    "expected": expectation,
                    "expected_ratio": _times(value, expectation),
                }
            )
    return {
        "rows": rows,
        "signature": figures.get("signature"),
        "gpu_model": figures.get("gpu_model"),
        "team_jobs": baseline.get("jobs", 0),
        "expected_jobs": expected.get("jobs", 0),
    }
