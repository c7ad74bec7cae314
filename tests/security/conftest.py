"""Fixtures for the security tests: a service on a fresh SQLite database and a team key.

The attacks this package covers, one module each:

- `test_authz_matrix`: every route against every kind of caller (none, wrong, revoked,
  another team, own team, fleet token, worker, admin); another team's data is a 404.
- `test_openapi_fuzz`: schema-driven fuzzing of every endpoint; no input makes a 500.
- `test_hostile_uploads`: zip bombs, path traversal, symlinks, NUL and encoded dots in
  dataset zips and artifact names; refused uploads leave nothing on disk.
- `test_body_before_auth`: unauthenticated memory exhaustion; bodies are neither read nor
  parsed before the credential is known, the upload limit applies only to the two upload
  routes, and an oversized chunked JSON body gets 413.
- `test_slow_clients`: slowloris on headers and bodies against a real uvicorn server;
  slow bodies hold no request slot, time out with 408, and /healthz reports stuck slots.
- `test_input_bounds`: values that used to end in a 500 or in stored non-JSON (dates
  without a UTC equivalent, unbounded deadlines, denormal budget limits, Infinity/NaN).
- `test_dashboard_sessions`: cross-site sign-in and sign-out (CSRF), keys in addresses,
  session cookies that must not hold the key and must die on sign-out, revocation, expiry.
- `test_metrics_exposure`: team names and emissions leaking through /metrics.
- `test_name_clashes`: two clips with one file name in a dataset zip, artifact names that
  differ only by case.

Terminal injection through job names is covered beside the CLI, in
`tests/client/test_terminal_injection.py`.

What is tested here (who may call what, what an upload may contain) does not depend on the
database engine, so these run on SQLite only; the protocol tests cover PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support.helpers import FakeClock, admin_headers
from support.world import sqlite_settings_in

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
