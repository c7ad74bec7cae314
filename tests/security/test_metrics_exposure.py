"""`/metrics` does not hand every team's name and emissions to anyone who asks."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from support.helpers import FakeClock, admin_headers, bearer
from support.world import sqlite_settings_in

from scheduler.app import create_app

METRICS_TOKEN = "scrape-token-0123456789abcdef"


def _app_with_a_team(tmp_path: Path, sqlite_template: Path, **settings: str) -> TestClient:
    config = sqlite_settings_in(tmp_path, sqlite_template).model_copy(update=settings)
    client = TestClient(create_app(config, clock=FakeClock(), run_ticks=False))
    created = client.post("/v1/teams", json={"name": "secret-lab"}, headers=admin_headers())
    assert created.status_code == 201, created.text
    return client


def test_without_a_metrics_token_no_team_is_named(tmp_path: Path, sqlite_template: Path) -> None:
    client = _app_with_a_team(tmp_path, sqlite_template)
    response = client.get("/metrics")
    assert response.status_code == 200
    assert "secret-lab" not in response.text
    assert 'team="' not in response.text
    assert "greenwindow_emissions_kg_co2e" not in response.text
    assert "greenwindow_jobs" in response.text  # the rest is still there


def test_with_a_metrics_token_scrapes_must_carry_it(tmp_path: Path, sqlite_template: Path) -> None:
    client = _app_with_a_team(tmp_path, sqlite_template, metrics_token=METRICS_TOKEN)
    for headers in ({}, bearer("wrong"), admin_headers()):
        refused = client.get("/metrics", headers=headers)
        assert refused.status_code == 401
        assert "secret-lab" not in refused.text
    allowed = client.get("/metrics", headers=bearer(METRICS_TOKEN))
    assert allowed.status_code == 200
    assert 'greenwindow_emissions_kg_co2e_total{team="secret-lab"}' in allowed.text
