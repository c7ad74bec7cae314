"""`max_delay_minutes` is a start delay and `not_before` an earliest start, at fixed clocks.

Each case runs at clocks where calendar arithmetic tends to break: the last hour of a
month, the day Europe moves to summer time, and 29 February.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from support.helpers import FakeClock, bearer, burn_in_job

CLOCKS = {
    "month's last hour": datetime(2026, 3, 31, 23, 20, tzinfo=UTC),
    "DST change day": datetime(2026, 3, 29, 0, 40, tzinfo=UTC),  # 01:00 UTC clocks go forward
    "29 February": datetime(2028, 2, 29, 23, 50, tzinfo=UTC),
}


def _at(raw: str) -> datetime:
    return datetime.fromisoformat(raw.replace("Z", "+00:00"))


@pytest.mark.parametrize("moment", CLOCKS.values(), ids=CLOCKS.keys())
def test_zero_delay_starts_now_and_deadline_adds_the_run_time(
    client: TestClient, team_key: str, clock: FakeClock, moment: datetime
) -> None:
    clock.now = moment
    response = client.post(
        "/v1/jobs", json=burn_in_job(max_delay_minutes=0), headers=bearer(team_key)
    )
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["state"] == "ready", job["state_reason"]
    assert _at(job["planned_start"]) == moment
    expected = moment + timedelta(seconds=job["estimated_duration_s"])
    assert abs((_at(job["deadline"]) - expected).total_seconds()) < 1e-3
    assert "infeasible" not in job["state_reason"]


@pytest.mark.parametrize("moment", CLOCKS.values(), ids=CLOCKS.keys())
def test_delay_is_counted_from_not_before(
    client: TestClient, team_key: str, clock: FakeClock, moment: datetime
) -> None:
    clock.now = moment
    not_before = moment + timedelta(hours=2, minutes=7)
    body = burn_in_job(max_delay_minutes=90, not_before=not_before.isoformat())
    job = client.post("/v1/jobs", json=body, headers=bearer(team_key)).json()
    assert job["state"] == "scheduled", job
    assert _at(job["not_before"]) == not_before
    assert _at(job["planned_start"]) >= not_before
    expected = not_before + timedelta(minutes=90, seconds=job["estimated_duration_s"])
    assert abs((_at(job["deadline"]) - expected).total_seconds()) < 1e-3
    assert _at(job["planned_end"]) <= _at(job["deadline"]) + timedelta(minutes=15)


def test_default_is_a_day_of_delay(client: TestClient, team_key: str, clock: FakeClock) -> None:
    clock.now = CLOCKS["29 February"]
    body = {k: v for k, v in burn_in_job().items() if k != "max_delay_minutes"}
    job = client.post("/v1/jobs", json=body, headers=bearer(team_key)).json()
    expected = clock.now + timedelta(days=1, seconds=job["estimated_duration_s"])
    assert abs((_at(job["deadline"]) - expected).total_seconds()) < 1e-3


def test_not_before_in_the_past_means_now(
    client: TestClient, team_key: str, clock: FakeClock
) -> None:
    clock.now = CLOCKS["month's last hour"]
    body = burn_in_job(max_delay_minutes=0, not_before="2026-03-01T00:00:00Z")
    job = client.post("/v1/jobs", json=body, headers=bearer(team_key)).json()
    assert job["state"] == "ready" and job["not_before"] is None
    assert _at(job["planned_start"]) == clock.now


def test_not_before_is_validated(client: TestClient, team_key: str, clock: FakeClock) -> None:
    clock.now = CLOCKS["DST change day"]
    headers = bearer(team_key)
    cases = [
        burn_in_job(not_before="2026-05-10T00:00:00Z"),  # more than 31 days ahead
        burn_in_job(
            max_delay_minutes=None,
            deadline="2026-03-29T06:00:00Z",
            not_before="2026-03-29T07:00:00+02:00",
        ),  # 05:00 UTC: fine
        burn_in_job(
            max_delay_minutes=None,
            deadline="2026-03-29T06:00:00Z",
            not_before="2026-03-29T08:00:00+02:00",
        ),  # 06:00 UTC: not before deadline
        burn_in_job(not_before="2026-03-29T08:00:00"),  # no offset
        burn_in_job(not_before="tomorrow"),
    ]
    statuses = [client.post("/v1/jobs", json=body, headers=headers) for body in cases]
    assert [r.status_code for r in statuses] == [422, 201, 422, 422, 422]
    for response in (statuses[0], statuses[2]):
        assert response.json()["field"] == "not_before", response.text
    for response in statuses[3:]:
        assert "not_before" in response.text
    assert _at(statuses[1].json()["planned_start"]) >= datetime(2026, 3, 29, 5, tzinfo=UTC)


def test_a_zero_delay_preview_runs_now(client: TestClient, team_key: str, clock: FakeClock) -> None:
    clock.now = CLOCKS["DST change day"]
    preview = client.post(
        "/v1/plan/preview", json=burn_in_job(max_delay_minutes=0), headers=bearer(team_key)
    )
    assert preview.status_code == 200, preview.text
    assert "deadline is in the past" not in preview.text
