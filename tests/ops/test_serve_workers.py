"""`greenwindow serve --workers N`: N service processes answering on one port (PostgreSQL
only), a failure when they cannot start, and a plain refusal on the embedded SQLite
database."""

from __future__ import annotations

import contextlib
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest
from support.helpers import bearer, burn_in_job
from support.procs import Process, Service, wait_until
from typer.testing import CliRunner

from scheduler.cli import app

WORKERS = 2
# Submissions sent at once per round, each on its own connection, so that one process is
# busy while the next connection arrives and the other one accepts it.
CONNECTIONS_PER_ROUND = 8
# How long the second process may take to start serving (it imports and builds the app on
# its own, on a machine that may be busy with other tests).
START_SECONDS = 60.0


def worker_processes(supervisor: psutil.Process) -> list[psutil.Process]:
    """The service processes `serve --workers` started (each `serve --reuse-port`)."""
    workers = []
    for child in supervisor.children():
        with contextlib.suppress(psutil.NoSuchProcess):
            if "--reuse-port" in child.cmdline():
                workers.append(child)
    return workers


def serving_pids(workers: list[psutil.Process], port: int) -> set[int]:
    """Which of `workers` hold an open client connection on `port` right now."""
    pids = set()
    for worker in workers:
        connections = worker.net_connections(kind="tcp")
        if any(
            c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port
            for c in connections
        ):
            pids.add(worker.pid)
    return pids


def submit_round(url: str, key: str, round_number: int) -> tuple[list[str], list[httpx.Client]]:
    """Submit a job on each of several new connections at once; returns the jobs' ids and
    the clients, which stay open (and their connections alive) until the caller closes them."""
    clients = [
        httpx.Client(base_url=url, headers=bearer(key), timeout=30)
        for _ in range(CONNECTIONS_PER_ROUND)
    ]

    def submit(index: int) -> str:
        response = clients[index].post("/v1/jobs", json=burn_in_job(name=f"r{round_number}"))
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    with ThreadPoolExecutor(CONNECTIONS_PER_ROUND) as pool:
        job_ids = list(pool.map(submit, range(CONNECTIONS_PER_ROUND)))
    return job_ids, clients


def listed_job_ids(service: Service, key: str) -> set[str]:
    """Every job the team's key lists, page by page."""
    ids: set[str] = set()
    cursor = ""
    while True:
        page = service.get(f"/v1/jobs?limit=200{cursor}", key)
        ids |= {job["id"] for job in page["items"]}
        if not page["next_cursor"]:
            return ids
        cursor = f"&cursor={page['next_cursor']}"


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_worker_processes_answer_on_one_port(database_url: str, tmp_path: Path) -> None:
    service = Service(database_url, tmp_path / "service", serve_args=("--workers", str(WORKERS)))
    service.start()
    assert service.popen is not None
    supervisor = psutil.Process(service.popen.pid)
    workers: list[psutil.Process] = []
    clients: list[httpx.Client] = []
    try:

        def all_workers_started() -> list[psutil.Process] | None:
            found = worker_processes(supervisor)
            return found if len(found) == WORKERS else None

        workers = wait_until(all_workers_started, 60, f"{WORKERS} worker processes")
        key = service.new_team()
        # /healthz answered once one process was up: keep submitting, a round of connections
        # at a time, until each process has been seen holding one (the kernel spreads new
        # connections over the processes' sockets by a hash, so no single round is sure to).
        answered_by: set[int] = set()
        submitted: set[str] = set()
        deadline = time.monotonic() + START_SECONDS
        round_number = 0
        while len(answered_by) < WORKERS and time.monotonic() < deadline:
            job_ids, opened = submit_round(service.url, key, round_number)
            clients += opened
            submitted.update(job_ids)
            answered_by |= serving_pids(workers, service.port)
            round_number += 1
        assert answered_by == {w.pid for w in workers}, service.log_tail()
        # Both processes wrote to the one database: every submission is listed, whichever
        # process answers the listing.
        assert listed_job_ids(service, key) == submitted
        assert all(worker.is_running() for worker in workers)
    finally:
        for client in clients:
            client.close()
        service.stop()
        _, survivors = psutil.wait_procs(workers, timeout=10)
        if survivors:
            service.kill9()
    assert survivors == [], "a worker process outlived the supervisor's SIGTERM"


@pytest.fixture
def no_database_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Settings from a clean environment in an empty directory (no stray .env); returns the
    data directory, which nothing has created."""
    monkeypatch.chdir(tmp_path)
    for name in ("GREENWINDOW_DATABASE_URL", "GREENWINDOW_ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    data_dir = tmp_path / "data"
    monkeypatch.setenv("GREENWINDOW_DATA_DIR", str(data_dir))
    return data_dir


# None: no GREENWINDOW_DATABASE_URL, so the embedded default under the data directory.
@pytest.mark.parametrize("sqlite_url", [None, "sqlite:///{data_dir}/explicit.db"])
def test_several_workers_on_sqlite_are_refused_before_anything_runs(
    no_database_settings: Path, monkeypatch: pytest.MonkeyPatch, sqlite_url: str | None
) -> None:
    if sqlite_url is not None:
        monkeypatch.setenv(
            "GREENWINDOW_DATABASE_URL", sqlite_url.format(data_dir=no_database_settings)
        )
    outcome = CliRunner().invoke(app, ["serve", "--workers", "2"])
    message = " ".join(outcome.output.replace("│", " ").split())
    assert outcome.exit_code == 2, outcome.output
    assert "'--workers'" in message and "PostgreSQL" in message, outcome.output
    assert "SQLite database serves one process" in message, outcome.output
    # Refused before migrating: no database file, not even the data directory.
    assert not no_database_settings.exists()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_process_that_cannot_start_stops_the_command_with_an_error(
    database_url: str, tmp_path: Path
) -> None:
    """The port is held by a socket that does not share it: neither process can bind, and
    the command ends with a failure instead of serving with fewer processes (or none)."""
    service = Service(database_url, tmp_path / "service", serve_args=("--workers", str(WORKERS)))
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", service.port))
        holder.listen()
        Process.start(service)
        assert service.popen is not None
        try:
            code = service.popen.wait(timeout=START_SECONDS)
        finally:
            service.stop()
    assert code != 0, service.log_tail()
    assert "address already in use" in service.log_tail().lower()
