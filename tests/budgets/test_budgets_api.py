"""Carbon budgets: status figures, admission (deny / hold), release on cancel, usage, ledger."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from support.helpers import FakeClock, admin_headers, bearer, burn_in_job

from scheduler.budgets.periods import period_window


def _set_budget(client: TestClient, **body: object) -> dict:
    spec = {"period": "month", "limit_kg_co2e": 10.0, "mode": "hard", "thresholds": []} | body
    response = client.put("/v1/teams/alpha/budget", json=spec, headers=admin_headers())
    assert response.status_code == 200, response.text
    return response.json()


def _submit(client: TestClient, key: str, **overrides: object):
    return client.post("/v1/jobs", json=burn_in_job(**overrides), headers=bearer(key))


def test_budget_status_reflects_reservations(client: TestClient, team_key: str) -> None:
    fresh = _set_budget(client)
    assert fresh["state"] == "ok" and fresh["remaining_kg_co2e"] == 10.0
    assert fresh["period_start"].startswith("2026-03-01") and fresh["period_end"].startswith(
        "2026-04-01"
    )
    job = _submit(client, team_key).json()
    status = client.get("/v1/teams/alpha/budget", headers=bearer(team_key)).json()
    assert abs(status["committed_kg_co2e"] - job["estimated_kg_co2e"]) < 1e-9
    assert abs(status["remaining_kg_co2e"] - (10.0 - job["estimated_kg_co2e"])) < 1e-9
    assert status["actual_kg_co2e"] == 0.0

    client.post(f"/v1/jobs/{job['id']}/cancel", headers=bearer(team_key))
    after = client.get("/v1/teams/alpha/budget", headers=bearer(team_key)).json()
    assert after["committed_kg_co2e"] == 0.0 and after["remaining_kg_co2e"] == 10.0
    kinds = [
        e["kind"] for e in client.get("/v1/teams/alpha/ledger", headers=bearer(team_key)).json()
    ]
    assert kinds == ["release", "reserve"]


def test_hard_budget_denies_with_the_numbers(client: TestClient, team_key: str) -> None:
    probe = _submit(client, team_key).json()
    client.post(f"/v1/jobs/{probe['id']}/cancel", headers=bearer(team_key))
    _set_budget(client, limit_kg_co2e=probe["estimated_kg_co2e"] * 1.5)
    assert _submit(client, team_key).status_code == 201
    denied = _submit(client, team_key)
    assert denied.status_code == 409
    body = denied.json()
    assert body["field"] == "budget" and "budget exhausted until 2026-04-01" in body["detail"]
    assert body["estimate_kg_co2e"] > body["remaining_kg_co2e"]
    assert len(client.get("/v1/jobs", headers=bearer(team_key)).json()["items"]) == 2


def test_hold_new_threshold_holds_and_readmits_when_budget_grows(
    client: TestClient, team_key: str
) -> None:
    from scheduler.maintenance import run_tick

    probe = _submit(client, team_key).json()
    client.post(f"/v1/jobs/{probe['id']}/cancel", headers=bearer(team_key))
    _set_budget(
        client,
        limit_kg_co2e=probe["estimated_kg_co2e"] * 1.5,
        thresholds=[{"percent": 100, "action": "hold_new"}],
    )
    _submit(client, team_key)
    held = _submit(client, team_key)
    assert held.status_code == 201
    assert held.json()["state"] == "held"
    assert held.json()["state_reason"] == "budget exhausted until 2026-04-01T00:00:00Z"
    assert run_tick(client.app, "readmit_held") == 0

    _set_budget(client, limit_kg_co2e=probe["estimated_kg_co2e"] * 10)
    assert run_tick(client.app, "readmit_held") == 1
    job = client.get(f"/v1/jobs/{held.json()['id']}", headers=bearer(team_key)).json()
    assert job["state"] in {"scheduled", "ready"}
    events = client.get(f"/v1/jobs/{job['id']}/events", headers=bearer(team_key)).json()
    assert [e["to_state"] for e in events][0] == "held"


def test_soft_budget_never_blocks(client: TestClient, team_key: str) -> None:
    _set_budget(client, limit_kg_co2e=1e-9, mode="soft")
    assert _submit(client, team_key).status_code == 201
    status = client.get("/v1/teams/alpha/budget", headers=bearer(team_key)).json()
    assert status["state"] == "exhausted"


def test_budget_validation_and_access(client: TestClient, team_key: str) -> None:
    bad = client.put(
        "/v1/teams/alpha/budget",
        json={"period": "fortnight", "limit_kg_co2e": 1},
        headers=admin_headers(),
    )
    assert bad.status_code == 422 and bad.json()["field"] == "period"
    neg = client.put(
        "/v1/teams/alpha/budget",
        json={"period": "day", "limit_kg_co2e": 0},
        headers=admin_headers(),
    )
    assert neg.status_code == 422 and neg.json()["field"] == "limit_kg_co2e"
    not_admin = client.put(
        "/v1/teams/alpha/budget",
        json={"period": "day", "limit_kg_co2e": 1},
        headers=bearer(team_key),
    )
    assert not_admin.status_code == 403
    assert client.get("/v1/teams/alpha/budget", headers=bearer(team_key)).status_code == 404


def test_usage_series_counts_charges(client: TestClient, team_key: str, clock: FakeClock) -> None:
    from scheduler.budgets import service as budgets
    from scheduler.db.session import session_scope
    from scheduler.teams.service import get_team

    job = _submit(client, team_key).json()
    with session_scope(client.app.state.session_factory) as session:
        team = get_team(session, "alpha")
        budgets.charge(
            session,
            team_id=team.id,
            job_id=job["id"],
            uses=[
                budgets.EnergyUse(start=datetime(2026, 3, 1, 12, tzinfo=UTC), kwh=2.0, kg_co2e=0.5)
            ],
            now=datetime(2026, 3, 1, 12, tzinfo=UTC),
            note="test",
        )
        budgets.charge(
            session,
            team_id=team.id,
            job_id=job["id"],
            uses=[
                budgets.EnergyUse(start=datetime(2026, 3, 2, 8, tzinfo=UTC), kwh=1.0, kg_co2e=0.25)
            ],
            now=datetime(2026, 3, 2, 8, tzinfo=UTC),
            note="test",
        )
    series = client.get(
        "/v1/teams/alpha/usage",
        params={"from": "2026-03-01T00:00:00Z", "to": "2026-03-03T00:00:00Z", "step": "day"},
        headers=bearer(team_key),
    ).json()
    assert [(p["kwh"], p["kg_co2e"], p["jobs"]) for p in series] == [(2.0, 0.5, 1), (1.0, 0.25, 1)]
    bad = client.get("/v1/teams/alpha/usage", params={"step": "minute"}, headers=bearer(team_key))
    assert bad.status_code == 422 and bad.json()["field"] == "step"


def test_period_windows() -> None:
    t = datetime(2026, 11, 18, 15, 30, tzinfo=UTC)  # a Wednesday
    assert period_window("day", t)[0] == datetime(2026, 11, 18, tzinfo=UTC)
    assert period_window("week", t) == (
        datetime(2026, 11, 16, tzinfo=UTC),
        datetime(2026, 11, 23, tzinfo=UTC),
    )
    assert period_window("month", datetime(2026, 12, 5, tzinfo=UTC))[1] == datetime(
        2027, 1, 1, tzinfo=UTC
    )
    assert period_window("quarter", t) == (
        datetime(2026, 10, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    assert period_window("year", t)[1] == datetime(2027, 1, 1, tzinfo=UTC)


def test_burn_history_follows_the_ledger(
    client: TestClient, team_key: str, clock: FakeClock
) -> None:
    _set_budget(client)
    first = _submit(client, team_key).json()
    clock.advance(hours=1)
    second = _submit(client, team_key).json()
    clock.advance(hours=1)
    client.post(f"/v1/jobs/{first['id']}/cancel", headers=bearer(team_key))
    history = client.get("/v1/teams/alpha/budget/history", headers=bearer(team_key)).json()
    assert history["limit_kg_co2e"] == 10.0
    committed = [p["committed_kg_co2e"] for p in history["points"]]
    one, two = first["estimated_kg_co2e"], second["estimated_kg_co2e"]
    assert committed == pytest.approx([0.0, one, one + two, two])
    assert [p["actual_kg_co2e"] for p in history["points"]] == [0.0] * 4
    assert history["points"][0]["at"].startswith("2026-03-01T00:00:00")


def test_burn_history_is_bounded() -> None:
    from scheduler.budgets import service as budgets

    class FakeBudget:
        team_id, period = "t", "day"

    class FakeSession:
        def execute(self, _query: object) -> list[tuple[datetime, str, float]]:
            start = datetime(2026, 3, 2, tzinfo=UTC)
            return [(start + timedelta(seconds=10 * i), "charge", 0.001) for i in range(8000)]

    points = budgets.burn_history(
        FakeSession(), FakeBudget(), now=datetime(2026, 3, 2, 23, tzinfo=UTC), max_points=50
    )
    assert len(points) <= 50
    assert points[-1].actual_kg_co2e == pytest.approx(8.0)
    assert [p.at for p in points] == sorted(p.at for p in points)
