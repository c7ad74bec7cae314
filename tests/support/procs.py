"""Real processes for fault tests: `greenwindow serve` and `greenwindow worker` on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text, update
from sqlalchemy.engine import Engine

from support.helpers import ADMIN_TOKEN, WORKER_TOKEN, admin_headers, bearer

GREENWINDOW = str(Path(sys.executable).with_name("greenwindow"))
# Short leases and fast ticks, so a lost worker is noticed in seconds. The lease must still
# outlast an agent's start of metering (CodeCarbon takes a few seconds on a loaded machine)
# before its first job heartbeat, or a healthy first attempt is reaped as lost.
FAST_SETTINGS = {
    "GREENWINDOW_LEASE_SECONDS": "10",
    "GREENWINDOW_HEARTBEAT_SECONDS": "1",
    "GREENWINDOW_MAINTENANCE_SECONDS": "1",
    "GREENWINDOW_REPLAN_SECONDS": "1",
}


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], Any], seconds: float, what: str) -> Any:
    """Poll `predicate` until it returns something truthy; fail naming `what`."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            value = predicate()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.05)


class Process:
    """A child process in its own session, so kill -9 takes its whole process group."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args = args
        self.env = env
        self.log_path = log
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps writing to it
        self.popen = subprocess.Popen(
            self.args,
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill9(self) -> None:
        """SIGKILL the process and everything it started (a host losing power)."""
        if self.popen is None:
            return
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period."""
        if self.popen is None or self.popen.poll() is not None:
            return
        os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill9()

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


class Service(Process):
    """`greenwindow serve` on a free loopback port with settings from the environment."""

    def __init__(
        self,
        database_url: str,
        data_dir: Path,
        *,
        serve_args: tuple[str, ...] = (),
        **settings: str,
    ) -> None:
        """`serve_args` are more `greenwindow serve` options (e.g. `--workers 2`)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            "GREENWINDOW_DATABASE_URL": database_url,
            "GREENWINDOW_DATA_DIR": str(data_dir),
            "GREENWINDOW_ADMIN_TOKEN": ADMIN_TOKEN,
            "GREENWINDOW_WORKER_TOKEN": WORKER_TOKEN,
            **FAST_SETTINGS,
            **settings,
        }
        args = [GREENWINDOW, "serve", "--port", str(self.port), "--log-level", "warning"]
        args += serve_args
        data_dir.mkdir(parents=True, exist_ok=True)
        super().__init__(args, env, data_dir.parent / f"serve-{self.port}.log")

    def start(self) -> None:
        super().start()
        try:
            wait_until(self.healthy, 60, "the service to answer /healthz")
        except AssertionError:
            raise AssertionError(f"service did not start:\n{self.log_tail()}") from None

    def healthy(self) -> bool:
        if not self.alive:
            raise AssertionError(f"service exited:\n{self.log_tail()}")
        return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200

    def new_team(self, name: str = "alpha") -> str:
        """Create a team; returns its API key."""
        response = httpx.post(
            f"{self.url}/v1/teams", json={"name": name}, headers=admin_headers(), timeout=10
        )
        assert response.status_code == 201, response.text
        return response.json()["api_key"]

    def get(self, path: str, key: str) -> Any:
        response = httpx.get(f"{self.url}{path}", headers=bearer(key), timeout=10)
        assert response.status_code == 200, response.text
        return response.json()


class WorkerAgent(Process):
    """`greenwindow worker --cpu-only` talking to a service."""

    def __init__(self, url: str, work_dir: Path, *, max_jobs: int | None = None) -> None:
        args = [
            GREENWINDOW,
            "worker",
            "--server",
            url,
            "--cpu-only",
            "--zone",
            "ES",
            "--work-dir",
            str(work_dir),
            "--poll-seconds",
            "0.2",
        ]
        if max_jobs is not None:
            args += ["--max-jobs", str(max_jobs)]
        work_dir.mkdir(parents=True, exist_ok=True)
        # Checkpoints go up as soon as they are written, so every kill point has one.
        env = {
            "GREENWINDOW_WORKER_TOKEN": WORKER_TOKEN,
            "GREENWINDOW_CHECKPOINT_UPLOAD_SECONDS": "0.3",
        }
        super().__init__(args, env, work_dir / "worker.log")


def engine_for(database_url: str) -> Engine:
    """An engine on the service's database, for checks the API does not expose."""
    url = database_url
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    return create_engine(url)


def make_ready(engine: Engine, *job_ids: str) -> None:
    """Start jobs at once: fault tests are about losing processes, not about the planner."""
    from scheduler.jobs.models import Job

    with engine.begin() as connection:
        connection.execute(update(Job).where(Job.id.in_(job_ids)).values(state="ready"))


def events(engine: Engine, job_id: str) -> list[dict[str, Any]]:
    """The job's events in order, straight from the database."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT from_state, to_state, attempt, reason FROM job_events "
                "WHERE job_id = :job ORDER BY id"
            ),
            {"job": job_id},
        )
        return [dict(row._mapping) for row in rows]
