"""HTTP endpoints for zone forecasts, tariffs and plan previews."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request

from scheduler.carbon import service
from scheduler.carbon.models import Tariff
from scheduler.carbon.schemas import ForecastRead, IntensityPointRead, PlanPreview
from scheduler.carbon.series import IntensitySeries
from scheduler.context import AppContext
from scheduler.deps import AdminDep, NowDep, SchedulingDep, SessionDep, UserDep
from scheduler.errors import InvalidInput, NotFound
from scheduler.jobs.schemas import JobCreate
from scheduler.jobs.service import draft
from scheduler.planning.tariff import TariffSchedule

router = APIRouter(prefix="/v1", tags=["carbon"])


def _points(series: IntensitySeries) -> list[IntensityPointRead]:
    return [
        IntensityPointRead(t=t, g_per_kwh=float(v))
        for t, v in zip(series.times(), series.values, strict=True)
    ]


@router.get("/zones/{zone}/forecast", response_model=ForecastRead)
def get_forecast(
    zone: str,
    request: Request,
    session: SessionDep,
    now: NowDep,
    _: UserDep,
    hours: Annotated[float, Query(gt=0, le=168)] = 48,
    history_hours: Annotated[float, Query(ge=0, le=336)] = 0,
) -> ForecastRead:
    """The intensity forecast the planner uses for the zone, and which fallback served it."""
    # The dashboard calls this function directly (positionally), so the context comes from
    # the request rather than from a dependency of its own.
    provider = AppContext.of(request.app).scheduling.provider
    signal = service.planning_signal(session, provider, zone, now=now, hours=hours)
    series = signal.series.window(
        now - timedelta(minutes=signal.series.step_minutes - 1), now + timedelta(hours=hours)
    )
    history: list[IntensityPointRead] = []
    if history_hours:
        past = service.accounting_signal(
            session, provider, zone, start=now - timedelta(hours=history_hours), end=now, now=now
        )
        history = _points(past.series.window(now - timedelta(hours=history_hours), now))
    return ForecastRead(
        zone=zone,
        source=signal.series.source,
        signal_type=signal.series.signal_type,
        origin=signal.origin,
        reason=signal.reason,
        generated_at=signal.generated_at,
        step_minutes=signal.series.step_minutes,
        points=_points(series),
        history=history,
    )


@router.put("/zones/{zone}/tariff", response_model=TariffSchedule)
def set_tariff(
    zone: str, body: TariffSchedule, session: SessionDep, now: NowDep, _: AdminDep
) -> TariffSchedule:
    """Set the zone's time-of-use tariff (used by `cost` and `balanced` jobs)."""
    tariff = session.get(Tariff, zone) or Tariff(zone=zone)
    tariff.schedule = body.model_dump(mode="json")
    tariff.updated_at = now
    session.add(tariff)
    return body


@router.get("/zones/{zone}/tariff", response_model=TariffSchedule)
def get_tariff(
    zone: str, session: SessionDep, scheduling: SchedulingDep, _: UserDep
) -> TariffSchedule:
    """The zone's tariff: the operator's, or the built-in example for the zone."""
    tariff = scheduling.tariff(session, zone)
    if tariff is None:
        raise NotFound(f"no tariff for zone '{zone}'; set one with PUT", field="zone")
    return tariff


@router.post("/plan/preview", response_model=PlanPreview)
def preview_plan(
    body: JobCreate,
    session: SessionDep,
    now: NowDep,
    scheduling: SchedulingDep,
    principal: UserDep,
) -> PlanPreview:
    """Where a job would be planned now, its expected kg CO2e and the saving; nothing is saved."""
    if principal.team is None:
        raise InvalidInput("previews use a team's key (its datasets)", field="Authorization")
    job, _, _ = draft(session, team=principal.team, spec=body, now=now, scheduling=scheduling)
    saving = job.run_now_kg_co2e - job.estimated_kg_co2e
    # Validated from a dict: the planned intervals are stored as ISO strings.
    return PlanPreview.model_validate(
        {
            "zone": job.zone,
            "planned_start": job.planned_start,
            "planned_end": job.planned_end,
            "planned_intervals": job.planned_intervals,
            "estimated_duration_s": job.estimated_duration_s,
            "estimated_kwh": job.estimated_kwh,
            "estimated_kg_co2e": job.estimated_kg_co2e,
            "run_now_kg_co2e": job.run_now_kg_co2e,
            "saving_kg_co2e": saving,
            "saving_percent": (
                100.0 * saving / job.run_now_kg_co2e if job.run_now_kg_co2e else 0.0
            ),
            "state_reason": job.state_reason,
        }
    )
