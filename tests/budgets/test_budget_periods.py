"""Budget periods at their edges: a reservation counts in the period where the job is planned to
run, a charge in the period where the energy was used (split at the boundary), and a replan that
moves a job to another day moves its reservation. Clocks are fixed at a month's last hour, on a
DST change day (25 October 2026) and on 29 February."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from support.fleet_helpers import WorkerSession, energy_report, make_ready, register
from support.helpers import FakeClock, admin_headers, bearer, burn_in_job

from scheduler.budgets import service as budgets
from scheduler.budgets.models import Budget, LedgerEntry
from scheduler.db.session import session_scope
from scheduler.jobs.lifecycle import move_reservation
from scheduler.jobs.models import Job

# (clock, budget period): the last hour of a month; the last hour of 29 February, which is also
# a month's end; the evening of the EU's autumn DST change (UTC periods do not move with it).
EDGES = [
    (datetime(2026, 11, 30, 23, 7, tzinfo=UTC), "month"),
    (datetime(2028, 2, 29, 22, 40, tzinfo=UTC), "month"),
    (datetime(2026, 10, 25, 23, 10, tzinfo=UTC), "day"),
]


@pytest.fixture(params=EDGES, ids=["month-end", "29-february", "dst-day"])
def edge(request: pytest.FixtureRequest) -> tuple[datetime, str]:
    return request.param


@pytest.fixture
def clock(edge: tuple[datetime, str]) -> FakeClock:
    return FakeClock(edge[0])


def _set_budget(client: TestClient, period: str, limit: float) -> None:
    response = client.put(
        "/v1/teams/alpha/budget",
        json={"period": period, "limit_kg_co2e": limit, "mode": "hard"},
        headers=admin_headers(),
    )
    assert response.status_code == 200, response.text


def _status(client: TestClient, at: datetime) -> budgets.BudgetStatus:
    with session_scope(client.app.state.session_factory) as session:
        budget = session.query(Budget).one()
        return budgets.budget_status(session, budget, now=client.app.state.clock(), at=at)


def _next_period_job(client: TestClient, key: str, clock: FakeClock) -> dict:
    """A carbon-first job with a day of slack, which the planner puts after midnight."""
    deadline = (clock.now + timedelta(hours=20)).isoformat()
    response = client.post(
        "/v1/jobs",
        json=burn_in_job(objective="carbon", deadline=deadline, max_delay_minutes=None),
        headers=bearer(key),
    )
    assert response.status_code == 201, response.text
    job = response.json()
    start = datetime.fromisoformat(job["planned_start"].replace("Z", "+00:00"))
    # The precondition of these tests: the plan moved the job past the period's end.
    assert start >= clock.now.replace(hour=0, minute=0) + timedelta(days=1), job
    return job


def test_a_job_planned_into_the_next_period_leaves_this_one_untouched(
    client: TestClient, team_key: str, clock: FakeClock, edge: tuple[datetime, str]
) -> None:
    _set_budget(client, edge[1], 100.0)
    job = _next_period_job(client, team_key, clock)
    now_status = client.get("/v1/teams/alpha/budget", headers=bearer(team_key)).json()
    assert now_status["committed_kg_co2e"] == 0.0
    planned = datetime.fromisoformat(job["planned_start"].replace("Z", "+00:00"))
    assert _status(client, planned).committed_kg_co2e == pytest.approx(job["estimated_kg_co2e"])
    reserve = next(
        e
        for e in client.get("/v1/teams/alpha/ledger", headers=bearer(team_key)).json()
        if e["kind"] == "reserve"
    )
    assert reserve["counts_at"] == job["planned_start"]


def test_a_full_period_does_not_refuse_a_job_planned_into_the_next(
    client: TestClient, team_key: str, clock: FakeClock, edge: tuple[datetime, str]
) -> None:
    """The defect the demo hit: this period's use blocked a job that runs in the next one."""
    probe = _next_period_job(client, team_key, clock)
    client.post(f"/v1/jobs/{probe['id']}/cancel", headers=bearer(team_key))
    limit = probe["estimated_kg_co2e"] * 1.5
    _set_budget(client, edge[1], limit)
    with session_scope(client.app.state.session_factory) as session:
        team_id = session.get(Job, probe["id"]).team_id
        budgets.charge(
            session,
            team_id=team_id,
            job_id=None,
            uses=[budgets.EnergyUse(clock.now - timedelta(minutes=5), 1.0, limit * 0.95)],
            now=clock.now,
            note="earlier use this period",
        )
    assert client.get("/v1/teams/alpha/budget", headers=bearer(team_key)).json()["state"] == (
        "warning"
    )
    admitted = _next_period_job(client, team_key, clock)
    assert admitted["state"] == "scheduled"


def test_a_run_across_the_boundary_is_charged_to_both_periods(
    client: TestClient, team_key: str, clock: FakeClock, edge: tuple[datetime, str]
) -> None:
    _set_budget(client, edge[1], 100.0)
    boundary = clock.now.replace(hour=0, minute=0) + timedelta(days=1)
    start = boundary - timedelta(minutes=30)
    clock.now = start
    job_id = client.post("/v1/jobs", json=burn_in_job(), headers=bearer(team_key)).json()["id"]
    worker = WorkerSession(client, register(client))
    make_ready(client.app, job_id)
    assert worker.claim() is not None
    clock.now = start + timedelta(hours=1)
    done = worker.job_call(job_id, "complete", energy=energy_report(1, start, 3600.0, 400.0))
    assert done.status_code == 200, done.text

    report = client.get(f"/v1/jobs/{job_id}/energy", headers=bearer(team_key)).json()
    total_kwh = report["kwh"]["total"]
    before = _status(client, boundary - timedelta(seconds=1))
    after = _status(client, boundary)
    # Constant power for an hour: half of the energy on each side of midnight.
    with session_scope(client.app.state.session_factory) as session:
        charges = session.query(LedgerEntry).filter_by(kind="charge").all()
        kwh_by_side = {
            side: sum(c.kwh for c in charges if (c.counts_at >= boundary) == side)
            for side in (False, True)
        }
    assert kwh_by_side[False] == pytest.approx(total_kwh / 2, rel=1e-3)
    assert kwh_by_side[True] == pytest.approx(total_kwh / 2, rel=1e-3)
    assert before.actual_kg_co2e + after.actual_kg_co2e == pytest.approx(report["kg_co2e"])
    assert before.actual_kg_co2e > 0 and after.actual_kg_co2e > 0
    # The reservation was made and released in the period it counted in.
    assert before.committed_kg_co2e == pytest.approx(0.0)
    assert after.committed_kg_co2e == pytest.approx(0.0)


def test_a_replan_to_another_day_moves_the_reservation(
    client: TestClient, team_key: str, clock: FakeClock, edge: tuple[datetime, str]
) -> None:
    _set_budget(client, edge[1], 100.0)
    job = _next_period_job(client, team_key, clock)
    planned = datetime.fromisoformat(job["planned_start"].replace("Z", "+00:00"))
    with session_scope(client.app.state.session_factory) as session:
        row = session.get(Job, job["id"])
        row.planned_start = planned + timedelta(minutes=23)  # the same day: no entry
        move_reservation(session, row, now=clock.now)
        assert row.reserved_counts_at == planned
        row.planned_start = clock.now.replace(minute=30)  # back into this period
        move_reservation(session, row, now=clock.now)
    assert _status(client, planned).committed_kg_co2e == pytest.approx(0.0)
    assert _status(client, clock.now).committed_kg_co2e == pytest.approx(job["estimated_kg_co2e"])
    kinds = [
        e["kind"] for e in client.get("/v1/teams/alpha/ledger", headers=bearer(team_key)).json()
    ]
    assert kinds == ["reserve", "release", "reserve"]
    # Cancelling releases it from the period it moved to.
    client.post(f"/v1/jobs/{job['id']}/cancel", headers=bearer(team_key))
    assert _status(client, clock.now).committed_kg_co2e == pytest.approx(0.0)
