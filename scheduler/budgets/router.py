"""HTTP endpoints for team budgets, usage and the ledger."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from scheduler.budgets import service
from scheduler.budgets.schemas import (
    BudgetRead,
    BudgetSet,
    BurnHistory,
    BurnPointRead,
    LedgerRead,
    Threshold,
    UsagePoint,
)
from scheduler.deps import AdminDep, NowDep, SessionDep, UserDep, require_team_access
from scheduler.errors import InvalidInput
from scheduler.teams.service import get_team

router = APIRouter(prefix="/v1/teams/{team}", tags=["budgets"])


def _read(status: service.BudgetStatus) -> BudgetRead:
    budget = status.budget
    return BudgetRead(
        period=budget.period,
        period_start=status.period_start,
        period_end=status.period_end,
        limit_kg_co2e=budget.limit_kg_co2e,
        mode=budget.mode,
        thresholds=[Threshold.model_validate(t) for t in budget.thresholds],
        actual_kg_co2e=status.actual_kg_co2e,
        committed_kg_co2e=status.committed_kg_co2e,
        forecast_kg_co2e=status.forecast_kg_co2e,
        remaining_kg_co2e=status.remaining_kg_co2e,
        state=status.state,
    )


@router.put("/budget", response_model=BudgetRead)
def set_budget(
    team: str, body: BudgetSet, session: SessionDep, now: NowDep, _: AdminDep
) -> BudgetRead:
    """Set or replace the team's carbon budget."""
    budget = service.set_budget(session, get_team(session, team), body, now=now)
    return _read(service.budget_status(session, budget, now=now))


@router.get("/budget", response_model=BudgetRead)
def get_budget(team: str, session: SessionDep, now: NowDep, principal: UserDep) -> BudgetRead:
    """The budget's actual, committed, forecast and remaining kg CO2e this period."""
    found = get_team(session, team)
    require_team_access(principal, found)
    return _read(service.budget_status(session, service.get_budget(session, found), now=now))


@router.get("/budget/history", response_model=BurnHistory)
def get_burn_history(
    team: str, session: SessionDep, now: NowDep, principal: UserDep
) -> BurnHistory:
    """How this period's budget burned: cumulative actual and outstanding committed over time."""
    found = get_team(session, team)
    require_team_access(principal, found)
    budget = service.get_budget(session, found)
    status = service.budget_status(session, budget, now=now)
    return BurnHistory(
        period_start=status.period_start,
        period_end=status.period_end,
        limit_kg_co2e=budget.limit_kg_co2e,
        points=[
            BurnPointRead(
                at=p.at, actual_kg_co2e=p.actual_kg_co2e, committed_kg_co2e=p.committed_kg_co2e
            )
            for p in service.burn_history(session, budget, now=now)
        ],
    )


@router.get("/usage", response_model=list[UsagePoint])
def get_usage(
    team: str,
    session: SessionDep,
    now: NowDep,
    principal: UserDep,
    start: Annotated[AwareDatetime | None, Query(alias="from")] = None,
    end: Annotated[AwareDatetime | None, Query(alias="to")] = None,
    step: Annotated[str, Query(description="hour, day or week")] = "day",
) -> list[UsagePoint]:
    """Measured kWh, kg CO2e and job count per step (default: the last 30 days by day)."""
    found = get_team(session, team)
    require_team_access(principal, found)
    end = end or now
    start = start or _days_before(end, 30)
    return service.usage(session, found, start=start, end=end, step=step)


def _days_before(end: datetime, days: int) -> datetime:
    """`days` before `end`; an `end` too early for that is the caller's mistake, not a 500."""
    try:
        return end - timedelta(days=days)
    except OverflowError:
        raise InvalidInput(
            f"'to' is too early: there are no {days} days before it", field="to"
        ) from None


@router.get("/ledger", response_model=list[LedgerRead])
def get_ledger(
    team: str,
    session: SessionDep,
    principal: UserDep,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> list[LedgerRead]:
    """The team's reserve / release / charge entries, newest first."""
    found = get_team(session, team)
    require_team_access(principal, found)
    return [
        LedgerRead.model_validate(e, from_attributes=True)
        for e in service.ledger(session, found, limit=limit)
    ]
