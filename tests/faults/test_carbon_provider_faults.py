"""The Electricity Maps client against a misbehaving API (an httpx MockTransport playing it):
down, timing out, failing with 5xx, or answering garbage. Submissions and planning go on, on
the fallbacks, and the forecast endpoint says why."""

from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient
from support.helpers import FakeClock, bearer

from scheduler.carbon.providers.electricitymaps import ElectricityMapsProvider
from scheduler.maintenance import run_tick


def misbehaving(mode: str) -> httpx.MockTransport:
    """A fake Electricity Maps that fails in one way on every call."""

    def handle(request: httpx.Request) -> httpx.Response:
        if mode == "down":
            raise httpx.ConnectError("connection refused", request=request)
        if mode == "slow":
            raise httpx.ReadTimeout("timed out", request=request)
        if mode == "error":
            return httpx.Response(503, text="upstream overloaded", request=request)
        if mode == "not json":
            return httpx.Response(200, text="<html>maintenance</html>", request=request)
        if mode == "wrong shape":
            return httpx.Response(200, json={"forecast": "soon"}, request=request)
        if mode == "bad values":
            points = [{"datetime": "yesterday-ish", "carbonIntensity": "lots"}]
            return httpx.Response(
                200, json={"zone": "ES", "forecast": points, "history": points}, request=request
            )
        raise AssertionError(mode)

    return httpx.MockTransport(handle)


JOB = {
    "name": "hour",
    "kind": "burn-in",
    "config": {"steps": 50},
    "max_delay_minutes": 600,
}


@pytest.mark.parametrize("mode", ["down", "slow", "error", "not json", "wrong shape", "bad values"])
def test_submissions_and_planning_continue_on_fallbacks(
    client: TestClient, team_key: str, clock: FakeClock, mode: str
) -> None:
    scheduling = client.app.state.scheduling  # type: ignore[attr-defined]
    scheduling.provider = ElectricityMapsProvider(
        "fake-token", clock=clock, transport=misbehaving(mode), sleep=lambda _: None
    )
    run_tick(client.app, "refresh_forecasts")  # type: ignore[arg-type]
    forecast = client.get("/v1/zones/ES/forecast", headers=bearer(team_key))
    assert forecast.status_code == 200, forecast.text
    body = forecast.json()
    assert body["origin"] != "provider", body
    assert body["reason"] and "electricitymaps" in body["reason"].lower(), body["reason"]
    assert body["points"], "a fallback still gives the planner a curve"

    submitted = client.post("/v1/jobs", json=JOB, headers=bearer(team_key))
    assert submitted.status_code == 201, submitted.text
    assert submitted.json()["state"] in {"scheduled", "ready"}
    assert submitted.json()["planned_start"] is not None
    run_tick(client.app, "replan")  # type: ignore[arg-type]
    job = client.get(f"/v1/jobs/{submitted.json()['id']}", headers=bearer(team_key)).json()
    assert job["state"] in {"scheduled", "ready"} and job["planned_start"] is not None
