"""The service refreshing its signal from a local fake of each provider over real HTTP,
configured only through settings (GREENWINDOW_CARBON_PLAN, GREENWINDOW_CARBON_BASE_URL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support.fake_carbon_server import (
    FakeCarbonServer,
    electricitymaps_routes,
    serving,
    watttime_routes,
)
from support.helpers import FakeClock

from scheduler.app import create_app
from scheduler.carbon import service as carbon
from scheduler.carbon.models import ZoneSignalStatus
from scheduler.db.session import session_scope
from scheduler.maintenance import run_tick
from scheduler.settings import Settings

PAID_PATHS = {"/v3/carbon-intensity/forecast", "/v3/carbon-intensity/past-range"}


def app_with(database_url: str, tmp_path: Path, clock: FakeClock, **carbon: object):
    settings = Settings(database_url=database_url, data_dir=tmp_path / "data", **carbon)
    return create_app(settings, clock=clock, run_ticks=False)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def free_em(clock: FakeClock) -> Iterator[FakeCarbonServer]:
    with serving(electricitymaps_routes("free", clock=clock)) as server:
        yield server


def test_free_electricitymaps_refreshes_without_a_paid_call(
    database_url: str, tmp_path: Path, clock: FakeClock, free_em: FakeCarbonServer
) -> None:
    app = app_with(
        database_url,
        tmp_path,
        clock,
        zone="DE",
        carbon_provider="electricitymaps",
        carbon_token="em-token",
        carbon_plan="free",
        carbon_base_url=f"{free_em.url}/v3/",
    )
    with TestClient(app):
        assert run_tick(app, "refresh_forecasts") is not None
        with session_scope(app.state.session_factory) as session:
            status = session.get(ZoneSignalStatus, "DE")
            assert status is not None and status.last_error is None, status.last_error
            stored = carbon.stored_forecast(session, "DE")
            history = carbon.stored_history(session, "DE", clock.now.replace(hour=0), clock.now)
    assert free_em.paths() and not PAID_PATHS & set(free_em.paths())
    assert all(query["disableCallerLookup"] == "true" for _, query in free_em.requests)
    assert stored is not None
    forecast, _ = stored
    assert forecast.source == "forecaster:electricitymaps" and len(forecast) >= 72
    assert history is not None and len(history) >= 9


def test_free_token_configured_as_paid_reports_a_plan_limit(
    database_url: str, tmp_path: Path, clock: FakeClock, free_em: FakeCarbonServer
) -> None:
    app = app_with(
        database_url,
        tmp_path,
        clock,
        zone="DE",
        carbon_provider="electricitymaps",
        carbon_token="em-token",
        carbon_plan="paid",
        carbon_base_url=f"{free_em.url}/v3/",
    )
    with TestClient(app):
        run_tick(app, "refresh_forecasts")
        with session_scope(app.state.session_factory) as session:
            status = session.get(ZoneSignalStatus, "DE")
            assert status is not None and status.last_error is not None
            error = status.last_error
    assert "plan limit" in error and "/carbon-intensity/forecast" in error
    assert "token rejected" not in error


def test_free_watttime_outside_caiso_north_names_the_plan_limit(
    database_url: str, tmp_path: Path, clock: FakeClock
) -> None:
    with serving(watttime_routes("free", clock=clock)) as server:
        app = app_with(
            database_url,
            tmp_path,
            clock,
            zone="PJM_NJ",
            carbon_provider="watttime",
            carbon_username="ada",
            carbon_password="pw",
            carbon_plan="free",
            carbon_base_url=server.url,
        )
        with TestClient(app):
            run_tick(app, "refresh_forecasts")
            with session_scope(app.state.session_factory) as session:
                status = session.get(ZoneSignalStatus, "PJM_NJ")
                assert status is not None and status.last_error is not None
                error = status.last_error
        assert server.requests == []  # refused before any request
    assert "plan limit" in error and "CAISO_NORTH" in error
