"""Property-based fuzzing of every operation in the service's own OpenAPI description.

Each operation is called with generated parameters and bodies as a team, as the admin and
with an invalid key: the service must never answer 5xx, and every 4xx must carry a non-empty
`detail` naming the problem. The CI run is small; set GREENWINDOW_FUZZ_EXAMPLES (examples per
operation, default 4) for a longer soak, which also runs schemathesis' coverage phase.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from support.helpers import ADMIN_TOKEN, WORKER_TOKEN, FakeClock, bearer
from support.world import build_world

from scheduler.app import create_app
from scheduler.settings import Settings

SOAK = os.environ.get("GREENWINDOW_FUZZ_EXAMPLES")
EXAMPLES = int(SOAK or "4")
CALLERS = ("team", "admin", "invalid")
KEYS: dict[str, str] = {}

# The schema is read from the app at import (no database needed for that); the database the
# app will use is created and populated by the fixture below, before the first case runs.
FUZZ_DIR = Path(tempfile.gettempdir()) / f"greenwindow-fuzz-{uuid.uuid4().hex[:12]}"
FUZZ_SETTINGS = Settings(
    database_url=f"sqlite:///{FUZZ_DIR / 'greenwindow.db'}",
    data_dir=FUZZ_DIR / "data",
    admin_token=ADMIN_TOKEN,
    worker_token=WORKER_TOKEN,
)
APP = create_app(FUZZ_SETTINGS, clock=FakeClock(), run_ticks=False)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
if SOAK is None:
    # The coverage phase sends hundreds of boundary cases per operation: soak runs only.
    schema.config.phases.update(phases=["examples", "fuzzing"])


@pytest.fixture(scope="session", autouse=True)
def populated_service(sqlite_template: Path) -> Iterator[None]:
    """Teams, a worker, jobs, a dataset and a file for the fuzzer to meet."""
    FUZZ_DIR.mkdir(parents=True, exist_ok=True)
    shutil.copy(sqlite_template, FUZZ_DIR / "greenwindow.db")
    try:
        with TestClient(APP) as client:
            world = build_world(client)
            KEYS.update(team=world.own_key, admin=ADMIN_TOKEN, invalid="gw_nope_nope")
            yield
    finally:
        APP.state.engine.dispose()
        shutil.rmtree(FUZZ_DIR, ignore_errors=True)


def detail_problems(response: Any) -> str | None:
    """Why a 4xx body is not a named problem, or None when it is one."""
    try:
        body = response.json()
    except ValueError:
        return f"4xx body is not JSON: {response.text[:200]!r}"
    detail = body.get("detail") if isinstance(body, dict) else None
    if not isinstance(detail, str) or not detail.strip():
        return f"4xx body has no detail message: {response.text[:200]!r}"
    return None


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=SOAK is None,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors_and_named_client_errors(case: Any) -> None:
    # The same generated request is sent by each caller: authorization runs before validation.
    for caller in CALLERS:
        response = case.call(headers=bearer(KEYS[caller]))
        described = f"{case.method} {case.formatted_path} as {caller} -> {response.status_code}"
        assert response.status_code < 500, f"{described}: {response.text[:300]}"
        if 400 <= response.status_code < 500 and response.status_code != 405:
            problem = detail_problems(response)
            assert problem is None, f"{described}: {problem}"
