"""Shared fixtures: a fresh migrated database per test on SQLite and PostgreSQL, a fake clock,
and an app client.

PostgreSQL tests use the server named by GREENWINDOW_TEST_POSTGRES_URL (an admin URL such as
postgresql://postgres@127.0.0.1:5432/postgres). Without it they are skipped locally, but under
CI=true a missing or unreachable server fails the run instead of skipping.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from support.helpers import ADMIN_TOKEN, WORKER_TOKEN, FakeClock, admin_headers

from scheduler.app import create_app
from scheduler.db.migrate import upgrade
from scheduler.settings import Settings

PG_ENV = "GREENWINDOW_TEST_POSTGRES_URL"
# One template per test process (each pytest-xdist worker is one), so parallel workers, or
# two test runs on one server, never drop each other's template.
PG_TEMPLATE = f"greenwindow_test_template_{os.getpid()}"


def _postgres_admin_url() -> str | None:
    url = os.environ.get(PG_ENV)
    if not url:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{PG_ENV} is not set: PostgreSQL tests must run in CI")
        return None
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str | None]:
    """Migrate a template database once; each test clones it (fast) into a fresh database."""
    admin_url = _postgres_admin_url()
    if admin_url is None:
        yield None
        return
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {PG_TEMPLATE} WITH (FORCE)"))
            conn.execute(text(f"CREATE DATABASE {PG_TEMPLATE}"))
    except Exception as exc:  # noqa: BLE001
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL at {PG_ENV} is unreachable: {exc}")
        pytest.skip(f"PostgreSQL unreachable: {type(exc).__name__}")
    finally:
        engine.dispose()
    template_url = make_url(admin_url).set(database=PG_TEMPLATE).render_as_string(False)
    upgrade(template_url)
    yield admin_url
    drop_postgres_database(admin_url, PG_TEMPLATE)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


def fresh_postgres_database(admin_url: str) -> tuple[str, str]:
    """Create a database cloned from the migrated template; returns (url, name)."""
    name = f"gw_test_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name} TEMPLATE {PG_TEMPLATE}"))
    engine.dispose()
    return make_url(admin_url).set(database=name).render_as_string(False), name


def drop_postgres_database(admin_url: str, name: str) -> None:
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path
) -> Iterator[str]:
    """A freshly migrated database, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        path = tmp_path / "greenwindow.db"
        shutil.copy(sqlite_template, path)
        yield f"sqlite:///{path}"
        return
    admin_url = request.getfixturevalue("postgres_template")
    if admin_url is None:
        pytest.skip(f"{PG_ENV} not set (set it, or run under CI=true to require it)")
    url, name = fresh_postgres_database(admin_url)
    try:
        yield url
    finally:
        drop_postgres_database(admin_url, name)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path / "data",
        admin_token=ADMIN_TOKEN,
        worker_token=WORKER_TOKEN,
    )


@pytest.fixture
def clock(request: pytest.FixtureRequest) -> FakeClock:
    """The app's clock; a test may start it elsewhere with an indirect parameter."""
    return FakeClock(getattr(request, "param", None))


@pytest.fixture
def client(settings: Settings, clock: FakeClock) -> Iterator[TestClient]:
    """An in-process client of an app whose ticks are run by the tests themselves."""
    app = create_app(settings, clock=clock, run_ticks=False)
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def team_key(client: TestClient) -> str:
    """The API key of a freshly created team 'alpha'."""
    response = client.post("/v1/teams", json={"name": "alpha"}, headers=admin_headers())
    assert response.status_code == 201, response.text
    return response.json()["api_key"]
