"""The concurrency model: one setting sizes admission, threads and the connection pool; an
exhausted pool answers 503; reads go on a path that never waits for the writer."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import anyio.to_thread
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from support.helpers import WORKER_TOKEN, FakeClock, admin_headers, bearer, burn_in_job

from scheduler.app import create_app
from scheduler.context import AppContext
from scheduler.db.session import read_scope, session_scope
from scheduler.maintenance import run_tick
from scheduler.settings import EXEMPT_REQUEST_THREADS, TICK_THREADS, Settings
from scheduler.teams.models import ApiKey


@pytest.fixture
def small(settings: Settings) -> Settings:
    """Two requests at once, one upload, and a pool that gives up waiting quickly."""
    return settings.model_copy(
        update={"concurrency": 2, "max_concurrent_uploads": 1, "db_pool_timeout_seconds": 0.3}
    )


@pytest.fixture
def small_client(small: Settings, clock: FakeClock) -> Iterator[TestClient]:
    with TestClient(create_app(small, clock=clock, run_ticks=False)) as client:
        yield client


def _context(client: TestClient) -> AppContext:
    return AppContext.of(client.app)


def test_one_setting_sizes_admission_threads_and_pool(
    small: Settings, small_client: TestClient
) -> None:
    assert small.request_slots == 2
    assert small.worker_threads == 2 + 1 + EXEMPT_REQUEST_THREADS
    assert small.db_connections == 2 + 1 + TICK_THREADS + EXEMPT_REQUEST_THREADS

    context = _context(small_client)
    assert context.admission.limit == 2
    assert context.engine.pool.size() == small.db_pool_size == 2  # type: ignore[attr-defined]

    async def thread_limit() -> float:
        return anyio.to_thread.current_default_thread_limiter().total_tokens

    assert small_client.portal.call(thread_limit) == small.worker_threads  # type: ignore[union-attr]


def test_concurrency_comes_from_the_environment_and_the_former_name_still_works(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GREENWINDOW_CONCURRENCY", "7")
    assert Settings(data_dir=tmp_path).request_slots == 7
    monkeypatch.delenv("GREENWINDOW_CONCURRENCY")
    monkeypatch.setenv("GREENWINDOW_MAX_CONCURRENT_REQUESTS", "5")
    assert Settings(data_dir=tmp_path).concurrency == 5
    # When both are set, the new name wins.
    monkeypatch.setenv("GREENWINDOW_CONCURRENCY", "9")
    assert Settings(data_dir=tmp_path).concurrency == 9


def test_an_exhausted_pool_answers_503_with_retry_after(
    small: Settings, small_client: TestClient
) -> None:
    engine = _context(small_client).engine
    # Every connection the pool may open is taken, and none comes back in time.
    held = [engine.connect() for _ in range(small.db_connections)]
    try:
        response = small_client.post("/v1/teams", json={"name": "blocked"}, headers=admin_headers())
    finally:
        for connection in held:
            connection.close()
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "1"
    detail = response.json()["detail"]
    assert "retry" in detail and "\n" not in detail
    assert response.json()["field"] == "database"
    # Nothing was half done: once connections are free the same request succeeds.
    again = small_client.post("/v1/teams", json={"name": "blocked"}, headers=admin_headers())
    assert again.status_code == 201, again.text


def test_pool_size_leaves_room_for_every_admitted_request(
    small: Settings, small_client: TestClient
) -> None:
    """One connection short of the limit still serves a request: the pool is not smaller
    than the model says."""
    engine = _context(small_client).engine
    held = [engine.connect() for _ in range(small.db_connections - 1)]
    try:
        response = small_client.post("/v1/teams", json={"name": "fits"}, headers=admin_headers())
    finally:
        for connection in held:
            connection.close()
    assert response.status_code == 201, response.text


@pytest.fixture
def sqlite_only(settings: Settings) -> None:
    if not settings.is_sqlite:
        pytest.skip("the write lock is SQLite's")


def test_a_read_completes_while_a_writer_holds_the_lock(
    sqlite_only: None, client: TestClient, team_key: str
) -> None:
    job = client.post("/v1/jobs", json=burn_in_job(), headers=bearer(team_key))
    assert job.status_code == 201, job.text
    job_id = job.json()["id"]
    answers: dict[str, int] = {}

    def read() -> None:
        answers["job"] = client.get(f"/v1/jobs/{job_id}", headers=bearer(team_key)).status_code
        answers["list"] = client.get("/v1/jobs", headers=bearer(team_key)).status_code
        answers["admin"] = client.get("/v1/teams", headers=admin_headers()).status_code

    context = _context(client)
    with session_scope(context.session_factory) as writer:
        # BEGIN IMMEDIATE: this connection now holds the database's write lock.
        writer.execute(text("UPDATE jobs SET priority = priority"))
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        # A read that waited for the lock would still be waiting (its timeout is 30 s).
        reader.join(timeout=10)
        finished_while_locked = not reader.is_alive()
    reader.join(timeout=40)
    assert finished_while_locked, "a GET waited for the write lock"
    assert answers == {"job": 200, "list": 200, "admin": 200}


def test_the_read_path_cannot_write(client: TestClient, team_key: str) -> None:
    context = _context(client)
    with pytest.raises(DBAPIError), read_scope(context.read_session_factory) as session:
        session.execute(text("UPDATE api_keys SET last_used_at = NULL"))
    # The connection went back to the pool writable for the write path (on PostgreSQL both
    # paths share one pool).
    with session_scope(context.session_factory) as session:
        session.execute(text("UPDATE api_keys SET last_used_at = NULL"))


def test_a_read_still_records_a_keys_last_use(
    client: TestClient, clock: FakeClock, team_key: str
) -> None:
    def last_used() -> object:
        with session_scope(_context(client).session_factory) as session:
            return session.scalar(select(ApiKey.last_used_at))

    assert client.post("/v1/jobs", json=burn_in_job(), headers=bearer(team_key)).status_code == 201
    first = last_used()
    assert first is not None
    clock.advance(minutes=5)
    assert client.get("/v1/jobs", headers=bearer(team_key)).status_code == 200
    stamped = last_used()
    assert stamped == clock.now
    # Within the minute nothing is written again.
    clock.advance(seconds=20)
    assert client.get("/v1/jobs", headers=bearer(team_key)).status_code == 200
    assert last_used() == stamped


def test_ticks_take_the_context(client: TestClient, team_key: str) -> None:
    context = _context(client)
    assert run_tick(context, "readmit_held") == 0
    assert "readmit_held" in context.tick_durations


def test_a_fenced_call_reports_a_bad_lease_field_once(client: TestClient) -> None:
    worker = client.post(
        "/v1/workers/register",
        json={"host": "h", "zone": "ES", "gpus": [], "cpu_only": True, "version": "t"},
        headers=bearer(WORKER_TOKEN),
    ).json()
    response = client.post(
        f"/v1/workers/{worker['worker_id']}/jobs/nope/complete",
        json={"attempt": 0, "lease_token": "x"},
        headers=bearer(worker["token"]),
    )
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == ["attempt"]


def test_a_fenced_call_on_an_unknown_job_is_404(client: TestClient) -> None:
    worker = client.post(
        "/v1/workers/register",
        json={"host": "h", "zone": "ES", "gpus": [], "cpu_only": True, "version": "t"},
        headers=bearer(WORKER_TOKEN),
    ).json()
    response = client.post(
        f"/v1/workers/{worker['worker_id']}/jobs/nope/heartbeat",
        json={"attempt": 1, "lease_token": "x", "progress": 0.1},
        headers=bearer(worker["token"]),
    )
    assert response.status_code == 404, response.text
    assert response.json()["field"] == "job_id"
