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
from scheduler.teams.models import Team
from scheduler.teams.service import list_teams

# Jobs listed on the overview: the newest ones, one API page's worth.
OVERVIEW_JOBS = 100
# Jobs drawn on the timeline: those that hold or use a window, and those that ran.
TIMELINE_STATES = QUEUED | {JobState.RUNNING}
RAN_STATES = TERMINAL
TERMINAL_STATES = frozenset(state.value for state in TERMINAL)
# Warnings shown on a job page: the newest few, so a chatty worker cannot grow each poll.
LIVE_WARNINGS = 5


def team_scope(principal: Principal) -> str | None:
    """None for the admin (every team); the team's id for a team key."""
    return None if principal.is_admin else principal.team.id  # type: ignore[union-attr]


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
        session, team_id=team_scope(principal), state=None, cursor=None, limit=OVERVIEW_JOBS
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
    request: Request, session: Session, principal: Principal, job_id: str, *, now: datetime
) -> dict[str, Any]:
    """One job, its energy report, its events and its live figures; another team's job is
    NotFound."""
    job = jobs.get_job(session, job_id, team_id=team_scope(principal))
    report = energy_report(session, job, scheduling=request.app.state.scheduling)
    events = [
        JobEventRead.model_validate(e, from_attributes=True) for e in jobs.events(session, job)
    ]
    return jsonable_encoder(
        {
            "job": to_read(job),
            "energy": report,
            "events": events,
            "live": _live(request, session, job, events, now=now),
        }
    )


def job_live(
    request: Request, session: Session, principal: Principal, job_id: str, *, now: datetime
) -> dict[str, Any]:
    """What the job page refreshes while the job runs: state, progress, the heartbeat's
    figures, telemetry and the latest warnings. Another team's job is NotFound."""
    job = jobs.get_job(session, job_id, team_id=team_scope(principal))
    events = [
        JobEventRead.model_validate(e, from_attributes=True) for e in jobs.events(session, job)
    ]
    return jsonable_encoder(_live(request, session, job, events, now=now))


def _live(
    request: Request, session: Session, job: Job, events: list[JobEventRead], *, now: datetime
) -> dict[str, Any]:
    read = to_read(job)
    figures = energy.live_figures(session, job, scheduling=request.app.state.scheduling, now=now)
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
    """Events that warn: of kind `warning`, or a worker's `warning` event."""
    found = []
    for event in events:
        data = event.data or {}
        kind = getattr(event, "kind", None) or data.get("kind") or data.get("type")
        if kind == "warning" or event.reason.startswith("worker warning:"):
            found.append(event)
    return found
