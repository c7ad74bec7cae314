"""Sustained load on a real `greenwindow serve`: mixed submissions and reads at concurrency 64
for N minutes on each database, then 16 worker clients claiming and completing no-op jobs
over the HTTP protocol (PostgreSQL). Figures are printed, never asserted.

    python bench/load.py                          # 3 minutes per database, both databases
    python bench/load.py --minutes 0.5 --database sqlite
    python bench/load.py --skip-mixed --claim-jobs 2000    # only the worker-claim phase

PostgreSQL runs use a fresh database on --postgres-admin-url (default: the
GREENWINDOW_TEST_POSTGRES_URL environment variable), dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psutil
from sqlalchemy import create_engine, text

ADMIN_TOKEN = "bench-admin-token"
WORKER_TOKEN = "bench-worker-token"
JOB = {"name": "load", "kind": "burn-in", "config": {"steps": 1}, "max_delay_minutes": 600}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def psycopg_url(url: str) -> str:
    """The SQLAlchemy form of a plain postgresql:// URL."""
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


@contextmanager
def fresh_database(kind: str, pg_admin_url: str | None, workdir: Path) -> Iterator[str]:
    """A temporary SQLite file, or a new PostgreSQL database dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{workdir / 'bench.db'}"
        return
    if not pg_admin_url:
        raise SystemExit("PostgreSQL needs --postgres-admin-url or GREENWINDOW_TEST_POSTGRES_URL")
    name = f"gw_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(psycopg_url(pg_admin_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    base, _, _ = pg_admin_url.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


@contextmanager
def served(database_url: str, workdir: Path, **settings: str) -> Iterator[tuple[str, int]]:
    """`greenwindow serve` on a free port; yields (url, pid)."""
    port = free_port()
    env = {
        **os.environ,
        "GREENWINDOW_DATABASE_URL": database_url,
        "GREENWINDOW_DATA_DIR": str(workdir / "data"),
        "GREENWINDOW_ADMIN_TOKEN": ADMIN_TOKEN,
        "GREENWINDOW_WORKER_TOKEN": WORKER_TOKEN,
        **settings,
    }
    command = [str(Path(sys.executable).with_name("greenwindow")), "serve", "--port", str(port)]
    log = open(workdir / f"serve-{port}.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        command + ["--log-level", "warning"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit(f"service did not start; see {log.name}")
            time.sleep(0.1)
        yield url, process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()  # a stalled service may not finish its graceful shutdown
            process.wait(timeout=15)
        log.close()


def new_team(url: str, name: str) -> str:
    response = httpx.post(
        f"{url}/v1/teams", json={"name": name}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    response.raise_for_status()
    return str(response.json()["api_key"])


@dataclass
class Tally:
    """Latencies (seconds) and outcomes of one phase."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)

    def record(self, what: str, seconds: float, ok: bool, status: object) -> None:
        self.latencies.setdefault(what, []).append(seconds)
        if not ok:
            key = f"{what} {status}"
            self.errors[key] = self.errors.get(key, 0) + 1


async def mixed_load(url: str, key: str, seconds: float, concurrency: int) -> Tally:
    """Each of `concurrency` clients alternates submissions and reads until time is up."""
    tally = Tally()
    known: list[str] = []
    stop_at = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30, limits=limits
    ) as client:

        async def one_client(seed: int) -> None:
            rng = random.Random(seed)
            while time.monotonic() < stop_at:
                if not known or rng.random() < 0.4:
                    what, call = "submit", client.post("/v1/jobs", json=JOB)
                elif rng.random() < 0.8:
                    what, call = "get", client.get(f"/v1/jobs/{rng.choice(known)}")
                else:
                    what, call = "list", client.get("/v1/jobs?limit=20")
                started = time.perf_counter()
                try:
                    response = await call
                    ok, status = response.status_code < 400, response.status_code
                    if what == "submit" and response.status_code == 201:
                        known.append(response.json()["id"])
                except httpx.HTTPError as exc:
                    ok, status = False, type(exc).__name__
                tally.record(what, time.perf_counter() - started, ok, status)

        await asyncio.gather(*(one_client(i) for i in range(concurrency)))
    return tally


def sample_rss(pid: int, stop: threading.Event, samples: list[float]) -> None:
    process = psutil.Process(pid)
    while not stop.is_set():
        samples.append(process.memory_info().rss / 2**20)
        stop.wait(1.0)


def print_tally(title: str, tally: Tally, seconds: float, rss: list[float]) -> None:
    total = sum(len(v) for v in tally.latencies.values())
    print(f"\n{title}: {total} requests in {seconds:.0f} s = {total / seconds:.1f} req/s")
    for what, values in sorted(tally.latencies.items()):
        ms = np.array(values) * 1000
        print(
            f"  {what:<7} n={len(values):<7} {len(values) / seconds:7.1f}/s  "
            f"p50={np.percentile(ms, 50):7.1f} ms  p99={np.percentile(ms, 99):7.1f} ms"
        )
    print(f"  errors: {tally.errors or 'none'}")
    if rss:
        print(
            f"  service RSS: {rss[0]:.0f} MiB at start, {rss[-1]:.0f} MiB at end, "
            f"max {max(rss):.0f} MiB (growth {rss[-1] - rss[0]:+.0f} MiB)"
        )


def run_mixed(kind: str, args: argparse.Namespace) -> None:
    with (
        tempfile.TemporaryDirectory() as tmp,
        fresh_database(kind, args.postgres_admin_url, Path(tmp)) as database_url,
        served(database_url, Path(tmp)) as (url, pid),
    ):
        key = new_team(url, "bench")
        samples: list[float] = []
        stop = threading.Event()
        sampler = threading.Thread(target=sample_rss, args=(pid, stop, samples), daemon=True)
        sampler.start()
        seconds = args.minutes * 60
        tally = asyncio.run(mixed_load(url, key, seconds, args.concurrency))
        stop.set()
        sampler.join()
        print_tally(f"{kind}: mixed load, concurrency {args.concurrency}", tally, seconds, samples)


def claim_and_complete_over_http(url: str, workers: int, expected: int) -> tuple[float, int]:
    """`workers` threads register, then claim and complete until the queue is empty."""
    done = []
    lock = threading.Lock()

    def work(index: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            registered = client.post(
                "/v1/workers/register",
                json={"host": f"bench-{index}", "zone": "ES", "gpus": [], "cpu_only": True},
                headers={"Authorization": f"Bearer {WORKER_TOKEN}"},
            ).json()
            client.headers["Authorization"] = f"Bearer {registered['token']}"
            worker_id = registered["worker_id"]
            idle = 0
            while idle < 3:
                claim = client.post(f"/v1/workers/{worker_id}/claim", json={})
                if claim.status_code == 204:
                    idle += 1
                    continue
                idle = 0
                body = claim.json()
                fence = {"attempt": body["attempt"], "lease_token": body["lease_token"]}
                finished = client.post(
                    f"/v1/workers/{worker_id}/jobs/{body['job']['id']}/complete",
                    json={**fence, "result": {}},
                )
                finished.raise_for_status()
                with lock:
                    done.append(body["job"]["id"])

    started = time.perf_counter()
    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if len(done) != expected:
        print(f"  warning: {len(done)} jobs completed, {expected} enqueued")
    return elapsed, len(done)


def enqueue_ready(url: str, database_url: str, count: int) -> None:
    """Submit `count` jobs through the API, then mark them ready (no planner wait)."""
    key = new_team(url, f"q{uuid.uuid4().hex[:6]}")
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as client:
        for _ in range(count):
            client.post("/v1/jobs", json=JOB).raise_for_status()
    engine = create_engine(psycopg_url(database_url))
    with engine.begin() as connection:
        connection.execute(text("UPDATE jobs SET state = 'ready' WHERE state = 'scheduled'"))
    engine.dispose()


def double_claims(database_url: str) -> tuple[int, int]:
    """(jobs run more than once, jobs never run), from the job events."""
    engine = create_engine(psycopg_url(database_url))
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT j.id, count(e.id) FROM jobs j LEFT JOIN job_events e "
                "ON e.job_id = j.id AND e.to_state = 'running' GROUP BY j.id"
            )
        ).all()
    engine.dispose()
    return sum(1 for _, n in rows if n > 1), sum(1 for _, n in rows if n == 0)


def run_claims(args: argparse.Namespace) -> None:
    # The replan tick would move the hand-readied jobs back to their planned windows.
    quiet = {"GREENWINDOW_REPLAN_SECONDS": "86400", "GREENWINDOW_FORECAST_REFRESH_SECONDS": "86400"}
    with (
        tempfile.TemporaryDirectory() as tmp,
        fresh_database("postgresql", args.postgres_admin_url, Path(tmp)) as database_url,
        served(database_url, Path(tmp), **quiet) as (url, _),
    ):
        time.sleep(2)  # let the first replan finish before jobs are readied
        enqueue_ready(url, database_url, args.claim_jobs)
        elapsed, done = claim_and_complete_over_http(url, args.workers, args.claim_jobs)
        twice, never = double_claims(database_url)
        print(
            f"\npostgresql: {args.workers} HTTP workers claimed and completed {done} no-op jobs "
            f"in {elapsed:.1f} s = {done / elapsed:.1f} jobs/s; double claims: {twice}, "
            f"never run: {never}"
        )


def main() -> None:
    """Parse options and run the phases."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument(
        "--postgres-admin-url", default=os.environ.get("GREENWINDOW_TEST_POSTGRES_URL")
    )
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--claim-jobs", type=int, default=1000)
    parser.add_argument("--skip-mixed", action="store_true")
    parser.add_argument("--skip-claims", action="store_true")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB")
    kinds = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    if not args.skip_mixed:
        for kind in kinds:
            run_mixed(kind, args)
    if not args.skip_claims:
        run_claims(args)


if __name__ == "__main__":
    main()
