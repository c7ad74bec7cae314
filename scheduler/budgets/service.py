"""Carbon budgets: status, admission of new jobs, and the reserve / release / charge ledger.

Ledger semantics: admitting a job *reserves* its estimate; when the job ends its
reservation is *released* in full and the measured emissions are *charged*.

Every entry counts in the budget period of its `counts_at`, not of the moment it was written:
a reservation in the period where the job is planned to run (and it moves when a replan moves
the job to another day), a release in its reservation's period, and a charge in the period
where the energy was used, split at UTC midnights (where every period begins) when a run
crosses one. So for a period, `committed` = reserves - releases counted in it and `actual` =
charges counted in it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from scheduler.budgets.models import Budget, LedgerEntry
from scheduler.budgets.periods import period_window
from scheduler.budgets.schemas import BudgetSet, UsagePoint
from scheduler.errors import Conflict, InvalidInput, NotFound
from scheduler.teams.models import Team

# Without thresholds a budget warns at this share of its limit.
DEFAULT_WARNING_PERCENT = 80.0


@dataclass(frozen=True)
class BudgetStatus:
    """A budget's figures for the period containing `now`."""

    budget: Budget
    period_start: datetime
    period_end: datetime
    actual_kg_co2e: float
    committed_kg_co2e: float
    forecast_kg_co2e: float
    remaining_kg_co2e: float
    state: Literal["ok", "warning", "exhausted"]

    @property
    def used_percent(self) -> float:
        """Actual plus committed, as a share of the limit."""
        used = self.actual_kg_co2e + self.committed_kg_co2e
        return 100.0 * used / self.budget.limit_kg_co2e


@dataclass(frozen=True)
class Admission:
    """What budget admission decided for a new job."""

    decision: Literal["admit", "hold", "deny"]
    reason: str = ""
    numbers: dict[str, Any] = field(default_factory=dict)


def set_budget(session: Session, team: Team, spec: BudgetSet, *, now: datetime) -> Budget:
    """Create or replace the team's budget."""
    budget = session.get(Budget, team.id)
    if budget is None:
        budget = Budget(team_id=team.id, fired={})
        session.add(budget)
    budget.period = spec.period
    budget.limit_kg_co2e = spec.limit_kg_co2e
    budget.mode = spec.mode
    budget.thresholds = [t.model_dump() for t in spec.thresholds]
    budget.updated_at = now
    session.flush()
    return budget


def get_budget(session: Session, team: Team) -> Budget:
    """The team's budget, or NotFound."""
    budget = session.get(Budget, team.id)
    if budget is None:
        raise NotFound(f"team '{team.name}' has no budget; set one with PUT", field="team")
    return budget


def _totals(session: Session, team_id: str, start: datetime, end: datetime) -> tuple[float, float]:
    signed = case(
        (LedgerEntry.kind == "reserve", LedgerEntry.kg_co2e),
        (LedgerEntry.kind == "release", -LedgerEntry.kg_co2e),
        else_=0.0,
    )
    # Adjustments are signed corrections of earlier charges (restatements, late reports).
    charged = case((LedgerEntry.kind.in_(("charge", "adjust")), LedgerEntry.kg_co2e), else_=0.0)
    row = session.execute(
        select(func.coalesce(func.sum(signed), 0.0), func.coalesce(func.sum(charged), 0.0)).where(
            LedgerEntry.team_id == team_id,
            LedgerEntry.counts_at >= start,
            LedgerEntry.counts_at < end,
        )
    ).one()
    committed, actual = float(row[0]), float(row[1])
    # Float sums of equal reserve/release pairs can leave dust like -1e-17.
    return max(0.0, round(committed, 12)), actual


def budget_status(
    session: Session, budget: Budget, *, now: datetime, at: datetime | None = None
) -> BudgetStatus:
    """Actual, committed, forecast and remaining for the period containing `at` (default: now).

    The forecast extrapolates the period's run-rate only over the part of it still ahead.
    """
    start, end = period_window(budget.period, at or now)
    committed, actual = _totals(session, budget.team_id, start, end)
    elapsed = (min(now, end) - start).total_seconds()
    run_rate = actual / elapsed if elapsed > 0 else 0.0
    forecast = actual + committed + run_rate * max((end - max(now, start)).total_seconds(), 0.0)
    remaining = budget.limit_kg_co2e - actual - committed
    used_percent = 100.0 * (actual + committed) / budget.limit_kg_co2e
    warn_at = min((t["percent"] for t in budget.thresholds), default=DEFAULT_WARNING_PERCENT)
    if remaining <= 0:
        state: Literal["ok", "warning", "exhausted"] = "exhausted"
    elif used_percent >= warn_at or forecast > budget.limit_kg_co2e:
        state = "warning"
    else:
        state = "ok"
    return BudgetStatus(budget, start, end, actual, committed, forecast, remaining, state)


def _fmt(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def admit(
    session: Session, team: Team, estimate_kg: float, *, now: datetime, at: datetime | None = None
) -> Admission:
    """Decide whether a job estimated at `estimate_kg`, planned to start at `at` (default: now),
    may be admitted under the team's budget of the period it is planned in.

    A hard budget blocks when the job would push actual + committed past the limit, or past a
    `hold_new` / `deny_submit` threshold; the highest threshold crossed picks the action, and
    crossing the limit itself denies unless a threshold says hold. Soft budgets never block.
    """
    budget = session.get(Budget, team.id)
    if budget is None or budget.mode == "soft":
        return Admission("admit")
    status = budget_status(session, budget, now=now, at=at)
    projected = status.actual_kg_co2e + status.committed_kg_co2e + estimate_kg
    projected_percent = 100.0 * projected / budget.limit_kg_co2e
    blocking = [t for t in budget.thresholds if t["action"] in ("hold_new", "deny_submit")]
    crossed = [t for t in blocking if projected_percent >= t["percent"]]
    if projected > budget.limit_kg_co2e:
        limit_action = (
            max(blocking, key=lambda t: t["percent"])["action"] if blocking else ("deny_submit")
        )
        crossed.append({"percent": 100.0, "action": limit_action})
    if not crossed:
        return Admission("admit")
    threshold = max(crossed, key=lambda t: t["percent"])
    numbers = {
        "estimate_kg_co2e": round(estimate_kg, 6),
        "remaining_kg_co2e": round(status.remaining_kg_co2e, 6),
        "limit_kg_co2e": budget.limit_kg_co2e,
        "actual_kg_co2e": round(status.actual_kg_co2e, 6),
        "committed_kg_co2e": round(status.committed_kg_co2e, 6),
        "period_end": _fmt(status.period_end),
    }
    if threshold["percent"] >= 100.0:
        reason = f"budget exhausted until {_fmt(status.period_end)}"
    else:
        reason = (
            f"budget at {projected_percent:.0f} % of {budget.limit_kg_co2e:g} kg CO2e with this "
            f"job (threshold {threshold['percent']:g} %) until {_fmt(status.period_end)}"
        )
    decision: Literal["hold", "deny"] = "hold" if threshold["action"] == "hold_new" else "deny"
    return Admission(decision, reason, numbers)


def deny_error(admission: Admission) -> Conflict:
    """The 409 a denied submission gets, with the numbers that decided it."""
    n = admission.numbers
    message = (
        f"{admission.reason}: the job's estimate of {n['estimate_kg_co2e']:.4f} kg CO2e "
        f"exceeds the {n['remaining_kg_co2e']:.4f} kg CO2e remaining of "
        f"{n['limit_kg_co2e']:g} kg CO2e"
    )
    return Conflict(message, field="budget", **n)


def _entry(
    session: Session,
    kind: str,
    *,
    team_id: str,
    job_id: str | None,
    kg: float,
    kwh: float,
    now: datetime,
    counts_at: datetime,
    note: str,
) -> LedgerEntry:
    entry = LedgerEntry(
        team_id=team_id,
        job_id=job_id,
        at=now,
        counts_at=counts_at,
        kind=kind,
        kg_co2e=max(kg, 0.0),
        kwh=kwh,
        note=note,
    )
    session.add(entry)
    return entry


def reserve(
    session: Session,
    *,
    team_id: str,
    job_id: str,
    kg: float,
    kwh: float,
    now: datetime,
    counts_at: datetime,
    note: str = "estimate reserved at admission",
) -> None:
    """Reserve a job's estimated emissions in the period of `counts_at` (its planned start)."""
    _entry(
        session,
        "reserve",
        team_id=team_id,
        job_id=job_id,
        kg=kg,
        kwh=kwh,
        now=now,
        counts_at=counts_at,
        note=note,
    )


def release(
    session: Session,
    *,
    team_id: str,
    job_id: str,
    kg: float,
    now: datetime,
    counts_at: datetime,
    note: str,
) -> None:
    """Release (part of) a reservation, in the period the reservation counts in."""
    if kg > 0:
        _entry(
            session,
            "release",
            team_id=team_id,
            job_id=job_id,
            kg=kg,
            kwh=0.0,
            now=now,
            counts_at=counts_at,
            note=note,
        )


@dataclass(frozen=True)
class EnergyUse:
    """Energy used from `start` on, and its emissions: one piece of a measured attempt."""

    start: datetime
    kwh: float
    kg_co2e: float


def charge(
    session: Session,
    *,
    team_id: str,
    job_id: str | None,
    uses: list[EnergyUse],
    now: datetime,
    note: str,
) -> None:
    """Charge measured emissions, one entry per UTC day in which the energy was used.

    Every budget period starts at a UTC midnight, so a day's piece never straddles two
    periods: a run from 23:30 to 00:30 across a month's end is charged to both months.
    """
    _per_day(session, "charge", team_id=team_id, job_id=job_id, uses=uses, now=now, note=note)


def adjust(
    session: Session,
    *,
    team_id: str,
    job_id: str | None,
    uses: list[EnergyUse],
    now: datetime,
    note: str,
) -> None:
    """Book signed corrections of earlier charges (a restatement, a late report), per UTC day
    of the energy they correct; the original charges are never edited."""
    _per_day(session, "adjust", team_id=team_id, job_id=job_id, uses=uses, now=now, note=note)


def _per_day(
    session: Session,
    kind: str,
    *,
    team_id: str,
    job_id: str | None,
    uses: list[EnergyUse],
    now: datetime,
    note: str,
) -> None:
    by_day: dict[datetime, list[EnergyUse]] = {}
    for use in uses:
        day = use.start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        by_day.setdefault(day, []).append(use)
    for pieces in by_day.values():
        session.add(
            LedgerEntry(
                team_id=team_id,
                job_id=job_id,
                at=now,
                counts_at=min(p.start for p in pieces),
                kind=kind,
                kg_co2e=sum(p.kg_co2e for p in pieces),
                kwh=sum(p.kwh for p in pieces),
                note=note[:512],
            )
        )


def ledger(session: Session, team: Team, *, limit: int = 500) -> list[LedgerEntry]:
    """The team's most recent ledger entries, newest first."""
    query = (
        select(LedgerEntry)
        .where(LedgerEntry.team_id == team.id)
        .order_by(LedgerEntry.id.desc())
        .limit(limit)
    )
    return list(session.scalars(query))


@dataclass(frozen=True)
class BurnPoint:
    """A budget's cumulative actual and outstanding committed kg CO2e at one moment."""

    at: datetime
    actual_kg_co2e: float
    committed_kg_co2e: float


MAX_BURN_POINTS = 400


def burn_history(
    session: Session, budget: Budget, *, now: datetime, max_points: int = MAX_BURN_POINTS
) -> list[BurnPoint]:
    """How the current period's budget burned: after each ledger entry counted in the period,
    the cumulative actual and the outstanding committed, in the order the entries were written.

    Entries written before the period began (reservations made last month for a job planned
    in this one) show at the period's start. At most `max_points` points: past that, the last
    point of each equal slice of the period is kept, so the newest is always the last.
    """
    start, end = period_window(budget.period, now)
    rows = session.execute(
        select(LedgerEntry.at, LedgerEntry.kind, LedgerEntry.kg_co2e)
        .where(
            LedgerEntry.team_id == budget.team_id,
            LedgerEntry.counts_at >= start,
            LedgerEntry.counts_at < end,
        )
        .order_by(LedgerEntry.at, LedgerEntry.id)
    )
    actual = committed = 0.0
    points = [BurnPoint(start, 0.0, 0.0)]
    for at, kind, kg in rows:
        if kind in ("charge", "adjust"):
            actual += kg
        else:
            committed += kg if kind == "reserve" else -kg
        point = BurnPoint(max(at, start), actual, max(0.0, round(committed, 12)))
        if point.at == points[-1].at:
            points[-1] = point
        else:
            points.append(point)
    if len(points) > max_points:
        width = (end - start) / max_points
        kept: dict[int, BurnPoint] = {}
        for point in points:
            kept[min(int((point.at - start) / width), max_points - 1)] = point
        points = list(kept.values())
    return points


STEPS = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(days=7)}
MAX_USAGE_POINTS = 10_000


def usage(
    session: Session, team: Team, *, start: datetime, end: datetime, step: str
) -> list[UsagePoint]:
    """Charged energy and emissions per step between start and end."""
    if end <= start:
        raise InvalidInput("'to' must be after 'from'", field="to")
    if step not in STEPS:
        raise InvalidInput(f"step must be one of {', '.join(STEPS)}", field="step")
    width = STEPS[step]
    if (end - start) / width > MAX_USAGE_POINTS:
        raise InvalidInput(f"at most {MAX_USAGE_POINTS} points; use a larger step", field="step")
    entries = session.scalars(
        select(LedgerEntry).where(
            LedgerEntry.team_id == team.id,
            LedgerEntry.kind.in_(("charge", "adjust")),
            LedgerEntry.counts_at >= start,
            LedgerEntry.counts_at < end,
        )
    )
    count = int(-(-(end - start) // width))
    buckets: list[tuple[float, float, set[str]]] = [(0.0, 0.0, set()) for _ in range(count)]
    for entry in entries:
        index = int((entry.counts_at - start) // width)
        kwh, kg, jobs = buckets[index]
        if entry.job_id:
            jobs.add(entry.job_id)
        buckets[index] = (kwh + entry.kwh, kg + entry.kg_co2e, jobs)
    return [
        UsagePoint(start=start + i * width, kwh=kwh, kg_co2e=kg, jobs=len(jobs))
        for i, (kwh, kg, jobs) in enumerate(buckets)
    ]


def thresholds_to_notify(
    session: Session, budget: Budget, *, now: datetime
) -> list[dict[str, Any]]:
    """`notify` thresholds crossed this period and not yet fired; marks them fired."""
    status = budget_status(session, budget, now=now)
    period_key = _fmt(status.period_start)
    fired = dict(budget.fired or {})
    already = set(fired.get(period_key, []))
    due = [
        t
        for t in budget.thresholds
        if t["action"] == "notify"
        and status.used_percent >= t["percent"]
        and str(t["percent"]) not in already
    ]
    if due:
        # Only the current period's record is kept: older periods can never fire again.
        fired = {period_key: sorted(already | {str(t["percent"]) for t in due})}
        budget.fired = fired
    return [{**t, "used_percent": round(status.used_percent, 2)} for t in due]
