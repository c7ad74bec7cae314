"""The service process under faults: kill -9 during a submission burst, and (on PostgreSQL) the
database restarted under it."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from support.helpers import admin_headers, bearer
from support.procs import Service, engine_for, wait_until

pytestmark = pytest.mark.slow

JOB = {"name": "load", "kind": "burn-in", "config": {"steps": 5}, "max_delay_minutes": 600}


def submit_until_refused(url: str, key: str, accepted: list[str], stop: threading.Event) -> None:
    """Submit jobs back to back; record the id of every 201 the client actually received."""
    with httpx.Client(base_url=url, headers=bearer(key), timeout=5) as client:
        while not stop.is_set():
            try:
                response = client.post("/v1/jobs", json=JOB)
            except httpx.HTTPError:
                time.sleep(0.05)
                continue
            if response.status_code == 201:
                accepted.append(response.json()["id"])


def test_kill_9_under_submission_load_loses_no_accepted_job(
    database_url: str, tmp_path: Path
) -> None:
    service = Service(database_url, tmp_path / "service")
    service.start()
    key = service.new_team()
    budget = {"period": "month", "limit_kg_co2e": 10_000.0}
    assert (
        httpx.put(
            f"{service.url}/v1/teams/alpha/budget", json=budget, headers=admin_headers()
        ).status_code
        == 200
    )
    accepted: list[str] = []
    stop = threading.Event()
    threads = [
        threading.Thread(target=submit_until_refused, args=(service.url, key, accepted, stop))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    wait_until(lambda: len(accepted) >= 30, 60, "30 accepted submissions")
    service.kill9()
    stop.set()
    for thread in threads:
        thread.join(timeout=10)
    before_restart = list(accepted)

    service.start()
    engine = engine_for(database_url)
    try:
        for job_id in before_restart:
            response = httpx.get(f"{service.url}/v1/jobs/{job_id}", headers=bearer(key))
            assert response.status_code == 200, (job_id, response.text)
        ledger = service.get("/v1/teams/alpha/ledger?limit=5000", key)
        reserved = {entry["job_id"] for entry in ledger if entry["kind"] == "reserve"}
        assert set(before_restart) <= reserved
        # No half-written job: every stored job, answered or not, has its event and reservation.
        with engine.connect() as connection:
            stored = set(connection.execute(text("SELECT id FROM jobs")).scalars())
            with_events = set(
                connection.execute(text("SELECT DISTINCT job_id FROM job_events")).scalars()
            )
        assert stored == with_events
        assert stored <= reserved
    finally:
        service.stop()
        engine.dispose()


def postgres_cluster() -> str:
    versions = sorted(p.name for p in Path("/etc/postgresql").iterdir())
    return versions[-1]


@pytest.mark.disruptive
def test_postgres_restart_is_503_then_recovers_without_a_service_restart(
    database_url: str, tmp_path: Path
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("restarts the PostgreSQL server; the SQLite case has no server")
    if not Path("/etc/postgresql").is_dir():
        pytest.skip("no local PostgreSQL cluster to restart")
    service = Service(database_url, tmp_path / "service")
    service.start()
    key = service.new_team()
    statuses: list[int] = []
    stop = threading.Event()

    def probe() -> None:
        while not stop.is_set():
            try:
                statuses.append(httpx.get(f"{service.url}/healthz", timeout=2).status_code)
            except httpx.HTTPError:
                statuses.append(0)
            time.sleep(0.02)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        # Stop and start with a gap, so the probe sees the database gone.
        cluster = postgres_cluster()
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", cluster, "main", "stop", "-m", "fast"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        time.sleep(1.5)
    finally:
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", cluster, "main", "start"],
            check=True,
            capture_output=True,
            timeout=120,
        )
    try:
        wait_until(service.healthy, 60, "healthz to recover")
        stop.set()
        prober.join()
        assert 503 in statuses, statuses
        assert 0 not in statuses, "the service itself stopped answering"
        assert statuses[-1] == 200
        # The service kept its process and serves writes again.
        response = httpx.post(f"{service.url}/v1/jobs", json=JOB, headers=bearer(key))
        assert response.status_code == 201, response.text
    finally:
        stop.set()
        service.stop()
