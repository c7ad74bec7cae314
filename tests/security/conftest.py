"""Fixtures for the security tests: a service on a fresh SQLite database and a team key.

What is tested here (who may call what, what an upload may contain) does not depend on the
database engine, so these run on SQLite only; the protocol tests cover PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from helpers import FakeClock, admin_headers
from world import sqlite_settings_in

from scheduler.app import create_app
from scheduler.settings import Settings


@pytest.fixture
def sqlite_settings(tmp_path: Path, sqlite_template: Path) -> Settings:
    return sqlite_settings_in(tmp_path, sqlite_template)


@pytest.fixture
def sqlite_client(sqlite_settings: Settings) -> Iterator[TestClient]:
    app = create_app(sqlite_settings, clock=FakeClock(), run_ticks=False)
    with TestClient(app) as client:
        yield client


@pytest.fixture
def alpha_key(sqlite_client: TestClient) -> str:
    response = sqlite_client.post("/v1/teams", json={"name": "alpha"}, headers=admin_headers())
    assert response.status_code == 201, response.text
    return response.json()["api_key"]
