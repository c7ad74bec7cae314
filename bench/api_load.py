"""The submit and claim paths against the stack's floor, side by side in one run.

    python bench/api_load.py                                  # PostgreSQL, defaults below
    python bench/api_load.py --requests 1000 --concurrency 32 --claim-jobs 1000 --workers 16
    python bench/api_load.py --rounds 3                       # alternate the apps 3 times
    python bench/api_load.py --processes 2 [--split]          # each app as 2 processes

It creates a scratch PostgreSQL database on GREENWINDOW_TEST_POSTGRES_URL (dropped after)
and starts two apps on it, each as --processes server processes on one port (`greenwindow
serve --workers N`, and as many floor processes on SO_REUSEPORT sockets), or with --split
as that many single-process servers on their own ports with the load split evenly:

- the real service (`greenwindow serve`, migrations applied, ticks slowed down so the
  replan tick does not move hand-readied jobs);
- a "floor" app: plain FastAPI through the same `make_engine` (sync endpoints, like the
  service's): POST /v1/jobs inserts one row, and a worker protocol of the service's shape
  claims (SKIP LOCKED), renews and finishes rows with one statement each. It is what the
  stack costs with no authentication, validation, planning, budget or energy accounting.

Then it measures, alternating the two apps round by round so load on the shared machine
hits both alike:

1. `POST /v1/jobs` at --concurrency (httpx async, in clients of --connections-per-client):
   throughput, p50, p99, and the CPU time per request of the app's server processes
   (steadier than throughput on a shared machine), of this load generator and of the
   PostgreSQL server, with the machine's idle share;
2. the claim -> heartbeat -> complete cycle with --workers HTTP workers (httpx async) on
   --claim-jobs ready jobs per round, on each app: jobs/s and the CPU per job as above; for
   the service also double claims (a job with more than one transition to running, from
   the job events) and jobs never run;
3. what the service's PostgreSQL connections do meanwhile (pg_stat_activity every 100 ms):
   running, waiting on a lock (and on which table's statement), idle inside a transaction;
4. SQL statements per call (submit, claim, heartbeat, complete), counted with a
   SQLAlchemy `before_cursor_execute` listener on an in-process copy of the service on
   the same database.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import psutil
from pydantic import BaseModel

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ADMIN_TOKEN = "bench-admin-token"
# Connections per httpx client of the submitting load (see submit_load).
CONNECTIONS_PER_CLIENT = 8
WORKER_TOKEN = "bench-worker-token"
JOB = {"name": "bench", "kind": "burn-in", "config": {"steps": 10}, "max_delay_minutes": 600}
QUIET = {
    # The replan tick would move hand-readied jobs back to their planned windows.
    "GREENWINDOW_REPLAN_SECONDS": "86400",
    "GREENWINDOW_FORECAST_REFRESH_SECONDS": "86400",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _sqlalchemy_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


@contextmanager
def scratch_database(admin_url: str) -> Iterator[str]:
    """A new PostgreSQL database, dropped afterwards; yields its URL."""
    from sqlalchemy import create_engine, text

    name = f"gw_apiload_{uuid.uuid4().hex[:10]}"
    engine = create_engine(_sqlalchemy_url(admin_url), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield _sqlalchemy_url(admin_url).rsplit("/", 1)[0] + f"/{name}"
    finally:
        with engine.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        engine.dispose()


@contextmanager
def started(command: list[str], env: dict[str, str]) -> Iterator[tuple[str, psutil.Process]]:
    """A server subprocess on a free port (appended as `--port N`); yields its URL and the
    process (whose CPU time the phases are charged)."""
    port = _free_port()
    process = subprocess.Popen([*command, "--port", str(port)], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{command} exited with {process.returncode}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise RuntimeError(f"{command} did not become healthy")
        yield url, psutil.Process(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)


def cpu_seconds(processes: list[psutil.Process]) -> float:
    """User + system CPU time of an app's servers so far, their worker processes included:
    what a phase cost it, whatever else the machine was doing (throughput is not; this
    figure is the steadier one)."""
    total = 0.0
    for process in processes:
        for member in (process, *process.children(recursive=True)):
            with contextlib.suppress(psutil.NoSuchProcess):
                times = member.cpu_times()
                total += times.user + times.system
    return total


class CpuShares:
    """Where a phase's CPU went: the app's server processes, this load generator, the
    PostgreSQL server's processes, and how idle the machine stayed."""

    def __init__(self, servers: list[psutil.Process]) -> None:
        self.servers = servers

    def __enter__(self) -> CpuShares:
        self._server = cpu_seconds(self.servers)
        self._client = time.process_time()
        self._postgres = self._postgres_seconds()
        self._machine = psutil.cpu_times()
        return self

    def __exit__(self, *_: object) -> None:
        self.server_s = cpu_seconds(self.servers) - self._server
        self.client_s = time.process_time() - self._client
        self.postgres_s = self._postgres_seconds() - self._postgres
        after = psutil.cpu_times()
        # guest time is counted in user time already (Linux)
        fields = [name for name in after._fields if not name.startswith("guest")]
        spent = {name: getattr(after, name) - getattr(self._machine, name) for name in fields}
        idle = spent["idle"] + spent.get("iowait", 0.0)
        self.idle_share = idle / max(sum(spent.values()), 1e-9)

    @staticmethod
    def _postgres_seconds() -> float:
        """CPU of the PostgreSQL server's processes: the live ones, plus what the ones that
        exited used (a backend of a closed connection), which the postmaster holds as its
        reaped children's time."""
        total = 0.0
        for process in psutil.process_iter(["name", "ppid"]):
            if (process.info["name"] or "") != "postgres":
                continue
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                total += times.user + times.system
                if psutil.Process(process.info["ppid"]).name() != "postgres":  # postmaster
                    total += times.children_user + times.children_system
        return total

    def per(self, count: int) -> dict[str, float]:
        return {
            "cpu_ms": 1000 * self.server_s / max(count, 1),
            "client_ms": 1000 * self.client_s / max(count, 1),
            "postgres_ms": 1000 * self.postgres_s / max(count, 1),
            "idle_pct": 100 * self.idle_share,
        }


# -- the floor app --------------------------------------------------------------------


class FloorJob(BaseModel):
    """The floor's body: parsed and validated, as any FastAPI endpoint's."""

    name: str
    kind: str
    config: dict
    max_delay_minutes: int | None = None


class FloorFence(BaseModel):
    """The floor's heartbeat and finish body: the lease fence, as the service's."""

    attempt: int
    lease_token: str
    progress: dict | None = None
    result: dict | None = None


def floor_app(database_url: str):  # noqa: ANN201 - FastAPI is imported lazily
    """Plain FastAPI through the service's `make_engine`: POST /v1/jobs inserts one row, and
    a worker protocol of the same shape as the service's claims, renews and finishes rows
    with one statement each (a queue's bare minimum: SKIP LOCKED claim, fenced UPDATEs)."""
    from fastapi import FastAPI, Response
    from fastapi.responses import JSONResponse
    from sqlalchemy import text

    from scheduler.db.session import make_engine

    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE IF NOT EXISTS floor_jobs (id text PRIMARY KEY, name text, "
                "kind text, config text, submitted_at timestamptz DEFAULT now(), "
                "state text DEFAULT 'scheduled', priority int DEFAULT 0, lease_token text, "
                "lease_expires_at timestamptz, progress text)"
            )
        )
        conn.execute(
            text(
                "CREATE INDEX IF NOT EXISTS floor_jobs_ready "
                "ON floor_jobs (priority DESC, submitted_at) WHERE state = 'ready'"
            )
        )

    app = FastAPI()

    @app.get("/healthz")
    def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.post("/v1/jobs", status_code=201)
    def submit(body: FloorJob) -> dict[str, str]:
        job_id = uuid.uuid4().hex
        with engine.begin() as conn:
            conn.execute(
                text("INSERT INTO floor_jobs (id, name, kind, config) VALUES (:i, :n, :k, :c)"),
                {"i": job_id, "n": body.name, "k": body.kind, "c": str(body.config)},
            )
        return {"id": job_id}

    @app.post("/v1/workers/register")
    def register(body: dict) -> dict[str, str]:
        return {"worker_id": uuid.uuid4().hex, "token": uuid.uuid4().hex}

    @app.post("/v1/workers/{worker_id}/claim")
    def claim(worker_id: str, body: dict) -> Response:
        token = uuid.uuid4().hex
        with engine.begin() as conn:
            job_id = conn.execute(
                text(
                    "UPDATE floor_jobs SET state = 'running', lease_token = :t, "
                    "lease_expires_at = now() + interval '5 minutes' WHERE id = ("
                    "SELECT id FROM floor_jobs WHERE state = 'ready' "
                    "ORDER BY priority DESC, submitted_at FOR UPDATE SKIP LOCKED LIMIT 1) "
                    "RETURNING id"
                ),
                {"t": token},
            ).scalar()
        if job_id is None:
            return Response(status_code=204)
        return JSONResponse({"job": {"id": job_id}, "attempt": 1, "lease_token": token})

    def fenced(job_id: str, body: FloorFence, assignments: str, **values: object) -> Response:
        with engine.begin() as conn:
            found = conn.execute(
                text(
                    f"UPDATE floor_jobs SET {assignments} WHERE id = :i AND lease_token = :t "
                    "AND state = 'running'"
                ),
                {"i": job_id, "t": body.lease_token, **values},
            ).rowcount
        return Response(status_code=200 if found else 409)

    @app.post("/v1/workers/{worker_id}/jobs/{job_id}/heartbeat")
    def heartbeat(worker_id: str, job_id: str, body: FloorFence) -> Response:
        return fenced(
            job_id,
            body,
            "lease_expires_at = now() + interval '5 minutes', progress = :p",
            p=str(body.progress),
        )

    @app.post("/v1/workers/{worker_id}/jobs/{job_id}/complete")
    def complete(worker_id: str, job_id: str, body: FloorFence) -> Response:
        return fenced(job_id, body, "state = 'succeeded', lease_token = NULL")

    return app


def serve_floor(database_url: str, port: int, processes: int, reuse_port: bool) -> None:
    """The floor app on `port`; with several processes, as `greenwindow serve --workers`
    runs them: each on its own SO_REUSEPORT socket of the port."""
    import uvicorn

    if processes > 1:
        from scheduler.serving import serve_processes

        floor_app(database_url)  # its table is created here, once, not by N processes at once
        one = [sys.executable, __file__, "--serve-floor", database_url, "--port", str(port)]
        raise SystemExit(serve_processes(processes, [*one, "--reuse-port"]))
    app = floor_app(database_url)
    if not reuse_port:
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
        return
    from scheduler.serving import reuse_port_socket

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    server.run(sockets=[reuse_port_socket("127.0.0.1", port)])


# -- load -----------------------------------------------------------------------------


async def submit_load(
    urls: list[str],
    key: str | None,
    requests: int,
    concurrency: int,
    per_client: int = CONNECTIONS_PER_CLIENT,
) -> dict:
    """`requests` POST /v1/jobs, `concurrency` in flight, spread evenly over `urls` (one
    server each, as a load balancer would); throughput and latency.

    The connections are spread over several httpx clients, `per_client` each: one
    client's pool costs more per request the more connections it holds (about 2.5 ms of this
    process's CPU per request with 32, against about 1 ms with four clients of 8), and with
    one client the floor app measured this script, not the stack."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    latencies: list[float] = []
    errors = 0
    pools = max(len(urls), math.ceil(concurrency / per_client))
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=urls[index % len(urls)], timeout=120, limits=limits, headers=headers
                )
            )
            for index in range(pools)
        ]
        queue = iter(range(requests))

        async def client(c: httpx.AsyncClient) -> None:
            nonlocal errors
            for _ in queue:
                begun = time.perf_counter()
                try:
                    response = await c.post("/v1/jobs", json=JOB)
                    errors += response.status_code != 201
                except httpx.HTTPError:
                    errors += 1
                latencies.append(time.perf_counter() - begun)

        begun = time.perf_counter()
        await asyncio.gather(*(client(clients[i % len(clients)]) for i in range(concurrency)))
        seconds = time.perf_counter() - begun
    ms = np.array(latencies) * 1000
    return {
        "per_s": requests / seconds,
        "p50": float(np.percentile(ms, 50)),
        "p99": float(np.percentile(ms, 99)),
        "errors": errors,
    }


def new_team(url: str) -> str:
    response = httpx.post(
        f"{url}/v1/teams",
        json={"name": f"bench-{uuid.uuid4().hex[:8]}"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    response.raise_for_status()
    return str(response.json()["api_key"])


def make_ready(database_url: str) -> int:
    """Every waiting job of the service becomes ready (no wait for its window)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    with engine.begin() as conn:
        count = conn.execute(
            text("UPDATE jobs SET state = 'ready' WHERE state = 'scheduled'")
        ).rowcount
    engine.dispose()
    return int(count)


def fill_floor_queue(database_url: str, count: int) -> None:
    """`count` ready rows in the floor app's queue."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO floor_jobs (id, name, kind, config, state) SELECT md5(random()::text "
                "|| g::text), 'bench', 'burn-in', '{}', 'ready' FROM generate_series(1, :n) g"
            ),
            {"n": count},
        )
    engine.dispose()


def measure_cycle(urls: list[str], processes: list[psutil.Process], workers: int) -> dict:
    """One claim cycle over the ready queue: jobs/s, errors, and the CPU per job of the app's
    servers, this load generator and PostgreSQL."""
    with CpuShares(processes) as shares:
        done, seconds, errors = asyncio.run(claim_cycle(urls, workers))
    return {"per_s": done / seconds, "errors": errors, **shares.per(done)}


async def claim_cycle(urls: list[str], workers: int) -> tuple[int, float, int]:
    """`workers` async HTTP workers, spread evenly over `urls`, claim, heartbeat and complete
    until the queue is empty; returns (jobs done, seconds, errors)."""
    done = 0
    errors = 0
    async with httpx.AsyncClient(base_url=urls[0], timeout=120) as fleet:
        tokens = []
        for index in range(workers):
            response = await fleet.post(
                "/v1/workers/register",
                json={"host": f"bench-{index}", "zone": "ES", "gpus": [], "cpu_only": True},
                headers={"Authorization": f"Bearer {WORKER_TOKEN}"},
            )
            response.raise_for_status()
            tokens.append((response.json()["worker_id"], response.json()["token"]))

    async def work(url: str, worker_id: str, token: str) -> None:
        nonlocal done, errors
        headers = {"Authorization": f"Bearer {token}"}
        base = f"/v1/workers/{worker_id}"
        async with httpx.AsyncClient(base_url=url, timeout=120, headers=headers) as c:
            idle = 0
            while idle < 2:
                claim = await c.post(f"{base}/claim", json={})
                if claim.status_code == 204:
                    idle += 1
                    continue
                if claim.status_code != 200:
                    errors += 1
                    continue
                idle = 0
                body = claim.json()
                fence = {"attempt": body["attempt"], "lease_token": body["lease_token"]}
                job = f"{base}/jobs/{body['job']['id']}"
                beat = await c.post(f"{job}/heartbeat", json={**fence, "progress": {"step": 1}})
                errors += beat.status_code != 200
                finished = await c.post(f"{job}/complete", json={**fence, "result": {}})
                if finished.status_code == 200:
                    done += 1
                else:
                    errors += 1

    begun = time.perf_counter()
    await asyncio.gather(*(work(urls[i % len(urls)], w, t) for i, (w, t) in enumerate(tokens)))
    return done, time.perf_counter() - begun, errors


def double_claims(database_url: str) -> tuple[int, int]:
    """(jobs run more than once, jobs never run), from the job events."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT j.id, count(e.id) FROM jobs j LEFT JOIN job_events e "
                "ON e.job_id = j.id AND e.to_state = 'running' GROUP BY j.id"
            )
        ).all()
    engine.dispose()
    return sum(1 for _, n in rows if n > 1), sum(1 for _, n in rows if n == 0)


# -- where connections wait -------------------------------------------------------------


class ConnectionStates:
    """Samples pg_stat_activity for the scratch database every 100 ms while in use: what the
    service's connections are doing (running, waiting on a lock, idle inside a transaction
    while the application works, idle). Locks held across the application's own work show
    up as `lock` waits of the others."""

    def __init__(self, admin_url: str, database_url: str) -> None:
        self.admin_url = _sqlalchemy_url(admin_url)
        self.database = database_url.rsplit("/", 1)[1]
        self.counts: dict[str, int] = {}
        self.waiting_on: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ConnectionStates:
        """Sample until the block ends (re-entered blocks add to the same counts)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()

    def _sample(self) -> None:
        from sqlalchemy import create_engine, text

        engine = create_engine(self.admin_url)
        query = text(
            "SELECT state, wait_event_type, left(query, 80) FROM pg_stat_activity "
            "WHERE datname = :name AND pid <> pg_backend_pid()"
        )
        with engine.connect() as conn:
            while not self._stop.wait(0.1):
                for state, wait_type, statement in conn.execute(query, {"name": self.database}):
                    if state == "active" and wait_type == "Lock":
                        kind = "lock"
                        # The bump may open with a CTE: `WITH bumped AS (INSERT INTO zone_versions`.
                        text_ = statement or ""
                        table = next((t for t in ("zone_versions", "jobs") if t in text_), "?")
                        self.waiting_on[table] = self.waiting_on.get(table, 0) + 1
                    elif state == "idle in transaction":
                        kind = "idle in transaction"
                    else:
                        kind = state or "?"
                    self.counts[kind] = self.counts.get(kind, 0) + 1
                conn.rollback()
        engine.dispose()

    def summary(self) -> str:
        """Shares of the samples of connections inside a transaction (idle pooled ones
        left out)."""
        busy = {kind: n for kind, n in self.counts.items() if kind != "idle"}
        total = sum(busy.values()) or 1
        shares = ", ".join(
            f"{kind} {100 * n / total:.0f} %"
            for kind, n in sorted(busy.items(), key=lambda item: -item[1])
        )
        locks = ", ".join(f"{table} {n}" for table, n in self.waiting_on.items())
        return f"{shares} (lock waits by statement: {locks or 'none'})"


# -- statements per call --------------------------------------------------------------


def statements_per_call(database_url: str, calls: int = 20) -> dict[str, float]:
    """SQL statements per submit, claim, heartbeat and complete, counted in-process."""
    from fastapi.testclient import TestClient
    from sqlalchemy import event, text

    from scheduler.app import create_app
    from scheduler.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            database_url=database_url,
            admin_token=ADMIN_TOKEN,
            worker_token=WORKER_TOKEN,
        )
        app = create_app(settings, run_ticks=False)
        counted = [0]

        def count(*_: object) -> None:
            counted[0] += 1

        event.listen(app.state.engine, "before_cursor_execute", count)
        figures: dict[str, float] = {}
        with TestClient(app) as client:

            def measure(name: str, call) -> object:  # noqa: ANN001
                before = counted[0]
                result = call()
                figures.setdefault(name, 0)
                figures[name] += counted[0] - before
                return result

            key = client.post(
                "/v1/teams",
                json={"name": f"stmt-{uuid.uuid4().hex[:6]}"},
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            ).json()["api_key"]
            auth = {"Authorization": f"Bearer {key}"}
            client.post("/v1/jobs", json=JOB, headers=auth).raise_for_status()  # warm caches
            figures.clear()
            for _ in range(calls):
                measure("submit", lambda: client.post("/v1/jobs", json=JOB, headers=auth))
            with app.state.engine.begin() as conn:
                conn.execute(text("UPDATE jobs SET state = 'ready' WHERE state = 'scheduled'"))
            registered = client.post(
                "/v1/workers/register",
                json={"host": "stmt", "zone": "ES", "gpus": [], "cpu_only": True},
                headers={"Authorization": f"Bearer {WORKER_TOKEN}"},
            ).json()
            worker = {"Authorization": f"Bearer {registered['token']}"}
            base = f"/v1/workers/{registered['worker_id']}"
            for _ in range(calls):
                body = measure(
                    "claim", lambda: client.post(f"{base}/claim", json={}, headers=worker)
                ).json()  # type: ignore[attr-defined]
                fence = {"attempt": body["attempt"], "lease_token": body["lease_token"]}
                job = f"{base}/jobs/{body['job']['id']}"
                for name, extra in (
                    ("heartbeat", {"progress": {"step": 1}}),
                    ("complete", {"result": {}}),
                ):
                    path, body_ = f"{job}/{name}", {**fence, **extra}
                    response = measure(
                        name, lambda p=path, b=body_: client.post(p, json=b, headers=worker)
                    )
                    response.raise_for_status()  # type: ignore[attr-defined]
    return {name: total / calls for name, total in figures.items()}


# -- main -----------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="submissions per round")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="service/floor alternations")
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--claim-jobs", type=int, default=1000)
    parser.add_argument(
        "--connections-per-client",
        type=int,
        default=CONNECTIONS_PER_CLIENT,
        help="connections per httpx client of the submitting load (one client of all "
        "--concurrency connections makes this script the limit)",
    )
    parser.add_argument(
        "--split",
        action="store_true",
        help="with --processes N: N single-process servers per app on N ports, the load "
        "split evenly over them (a load balancer's view), instead of N processes on one port",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="server processes of each app (`greenwindow serve --workers N`, and as many "
        "floor processes, each on its own SO_REUSEPORT socket)",
    )
    parser.add_argument(
        "--postgres-admin-url",
        default=os.environ.get(
            "GREENWINDOW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--serve-floor", help=argparse.SUPPRESS)  # internal: database URL
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_floor:
        serve_floor(args.serve_floor, args.port, args.processes, args.reuse_port)
        return

    print(f"machine: {os.cpu_count()} CPUs; command: {' '.join(sys.argv)}")
    n = args.processes
    with tempfile.TemporaryDirectory() as tmp, scratch_database(args.postgres_admin_url) as db:
        env = {
            **os.environ,
            "GREENWINDOW_DATA_DIR": tmp,
            "GREENWINDOW_DATABASE_URL": db,
            "GREENWINDOW_ADMIN_TOKEN": ADMIN_TOKEN,
            "GREENWINDOW_WORKER_TOKEN": WORKER_TOKEN,
            "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
            **QUIET,
        }
        service_cmd = [sys.executable, "-m", "scheduler.cli", "serve", "--log-level", "warning"]
        floor_cmd = [sys.executable, __file__, "--serve-floor", db]
        if args.split:
            # N single-process servers on N ports, the client's connections split evenly
            # over them: what a load balancer in front of N replicas does.
            service_cmds = [service_cmd + (["--no-migrate"] if i else []) for i in range(n)]
            floor_cmds = [floor_cmd] * n
        elif n > 1:
            service_cmds = [[*service_cmd, "--workers", str(n)]]
            floor_cmds = [[*floor_cmd, "--processes", str(n)]]
        else:
            service_cmds, floor_cmds = [service_cmd], [floor_cmd]
        rows: list[tuple[str, dict]] = []
        with contextlib.ExitStack() as servers:
            # One at a time: the first service applies the migrations the others skip.
            service = [servers.enter_context(started(cmd, env)) for cmd in service_cmds]
            floor = [servers.enter_context(started(cmd, env)) for cmd in floor_cmds]
            service_urls, service_processes = [url for url, _ in service], [p for _, p in service]
            key = new_team(service_urls[0])
            # Warm-up: first-request costs (imports, connections, history) are not measured.
            asyncio.run(submit_load(service_urls, key, 64, args.concurrency))
            asyncio.run(submit_load([url for url, _ in floor], None, 64, args.concurrency))
            submit_states = ConnectionStates(args.postgres_admin_url, db)
            for round_ in range(args.rounds):
                for label, app, auth in (("greenwindow", service, key), ("floor", floor, None)):
                    with (
                        submit_states if label == "greenwindow" else contextlib.nullcontext(),
                        CpuShares([process for _, process in app]) as shares,
                    ):
                        figures = asyncio.run(
                            submit_load(
                                [url for url, _ in app],
                                auth,
                                args.requests,
                                args.concurrency,
                                args.connections_per_client,
                            )
                        )
                    figures.update(shares.per(args.requests))
                    rows.append((f"{label} (round {round_ + 1})", figures))
                    print(f"  {rows[-1][0]}: {figures}", flush=True)
            # Claim cycle: the submitted jobs drained first, then per round a fresh batch of
            # ready jobs for each app, the two alternating as above.
            make_ready(db)
            asyncio.run(claim_cycle(service_urls, args.workers))
            claim_states = ConnectionStates(args.postgres_admin_url, db)
            floor_urls, floor_processes = [url for url, _ in floor], [p for _, p in floor]
            cycles: list[tuple[str, dict]] = []
            for round_ in range(args.rounds):
                asyncio.run(
                    submit_load(service_urls, new_team(service_urls[0]), args.claim_jobs, 16)
                )
                make_ready(db)
                with claim_states:
                    figures = measure_cycle(service_urls, service_processes, args.workers)
                cycles.append((f"greenwindow (round {round_ + 1})", figures))
                print(f"  {cycles[-1][0]} claim cycle: {figures}", flush=True)
                fill_floor_queue(db, args.claim_jobs)
                figures = measure_cycle(floor_urls, floor_processes, args.workers)
                cycles.append((f"floor (round {round_ + 1})", figures))
                print(f"  {cycles[-1][0]} claim cycle: {figures}", flush=True)
        twice, never = double_claims(db)
        statements = statements_per_call(db)

    layout = f"{n} single-process servers, load split evenly" if args.split else f"{n} process(es)"
    print(
        f"\nPOST /v1/jobs, {args.requests} requests per round, concurrency {args.concurrency}, "
        f"each app on {layout}; CPU ms per request: the app's servers, this load generator, "
        "PostgreSQL; and the machine's idle share"
    )
    print(
        f"{'app':<22} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
        f"{'server':>7} {'client':>7} {'pg':>6} {'idle':>6}"
    )
    for label, f in rows:
        print(
            f"{label:<22} {f['per_s']:7.1f} {f['p50']:8.1f} {f['p99']:8.1f} {f['errors']:7d} "
            f"{f['cpu_ms']:7.2f} {f['client_ms']:7.2f} {f['postgres_ms']:6.2f} "
            f"{f['idle_pct']:5.0f}%"
        )
    service = [f for label, f in rows if label.startswith("greenwindow")]
    floor = [f for label, f in rows if label.startswith("floor")]
    rate = np.mean([f["per_s"] for f in service]) / np.mean([f["per_s"] for f in floor])
    p99 = np.mean([f["p99"] for f in service]) / np.mean([f["p99"] for f in floor])
    print(
        f"greenwindow / floor: throughput {100 * rate:.0f} % (goal >= 70 %), "
        f"p99 {p99:.2f}x (goal <= 3x)"
    )
    print(
        f"\nclaim -> heartbeat -> complete, {args.workers} HTTP workers, {args.claim_jobs} ready "
        "jobs per round; CPU ms per job, as above"
    )
    print(
        f"{'app':<22} {'jobs/s':>7} {'errors':>7} {'server':>7} {'client':>7} {'pg':>6} {'idle':>6}"
    )
    for label, f in cycles:
        print(
            f"{label:<22} {f['per_s']:7.1f} {f['errors']:7d} {f['cpu_ms']:7.2f} "
            f"{f['client_ms']:7.2f} {f['postgres_ms']:6.2f} {f['idle_pct']:5.0f}%"
        )
    service_rate = np.mean([f["per_s"] for label, f in cycles if label.startswith("greenwindow")])
    floor_rate = np.mean([f["per_s"] for label, f in cycles if label.startswith("floor")])
    print(
        f"greenwindow {service_rate:.1f} jobs/s (goal >= 150), "
        f"{100 * service_rate / floor_rate:.0f} % of the floor's {floor_rate:.1f}; "
        f"double claims {twice} (must be 0); never run {never}"
    )
    print(
        "\nThe service's PostgreSQL connections inside a transaction, sampled every 100 ms:\n"
        f"  during submissions: {submit_states.summary()}\n"
        f"  during the claim cycle: {claim_states.summary()}"
    )
    print(
        "\nSQL statements per call: "
        + ", ".join(f"{name} {value:.1f}" for name, value in statements.items())
    )


if __name__ == "__main__":
    main()
