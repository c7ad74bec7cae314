"""Load on the REST API: job submissions/s and p50/p99 latency of POST /v1/jobs and
GET /v1/jobs/{id}, over loopback, on SQLite and on PostgreSQL.

    python bench/api_load.py                       # starts its own servers, both databases
    python bench/api_load.py --database sqlite --requests 2000 --concurrency 32
    python bench/api_load.py --url http://127.0.0.1:8000 --admin-token T   # a running server

Each started server is a real `greenwindow serve` process on a fresh database (a temporary
SQLite file, or a new PostgreSQL database on --postgres-admin-url that is dropped after).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np

ADMIN_TOKEN = "bench-admin-token"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def _server(database: str, pg_admin_url: str) -> Iterator[str]:
    """A `greenwindow serve` subprocess on a fresh database; yields its base URL."""
    tmp = tempfile.TemporaryDirectory()
    pg_name = None
    env = {**os.environ, "GREENWINDOW_DATA_DIR": tmp.name, "GREENWINDOW_ADMIN_TOKEN": ADMIN_TOKEN}
    if database == "postgresql":
        from sqlalchemy import create_engine, text

        pg_name = f"gw_bench_{uuid.uuid4().hex[:10]}"
        engine = create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {pg_name}"))
        engine.dispose()
        env["GREENWINDOW_DATABASE_URL"] = pg_admin_url.rsplit("/", 1)[0] + f"/{pg_name}"
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "scheduler.cli",
            "serve",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise RuntimeError("server did not become healthy")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        if pg_name:
            from sqlalchemy import create_engine, text

            engine = create_engine(pg_admin_url, isolation_level="AUTOCOMMIT")
            with engine.connect() as conn:
                conn.execute(text(f"DROP DATABASE IF EXISTS {pg_name} WITH (FORCE)"))
            engine.dispose()
        tmp.cleanup()


async def _run(url: str, admin_token: str, requests: int, concurrency: int) -> dict[str, float]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        team = f"bench-{uuid.uuid4().hex[:8]}"
        created = await client.post(
            "/v1/teams", json={"name": team}, headers={"Authorization": f"Bearer {admin_token}"}
        )
        created.raise_for_status()
        headers = {"Authorization": f"Bearer {created.json()['api_key']}"}
        body = {
            "name": "bench",
            "kind": "burn-in",
            "config": {"steps": 10},
            "max_delay_minutes": 600,
        }
        semaphore = asyncio.Semaphore(concurrency)
        post_latency: list[float] = []
        get_latency: list[float] = []
        errors = 0
        ids: list[str] = []

        async def submit() -> None:
            nonlocal errors
            async with semaphore:
                started = time.perf_counter()
                response = await client.post("/v1/jobs", json=body, headers=headers)
                post_latency.append(time.perf_counter() - started)
                if response.status_code == 201:
                    ids.append(response.json()["id"])
                else:
                    errors += 1

        async def read(job_id: str) -> None:
            nonlocal errors
            async with semaphore:
                started = time.perf_counter()
                response = await client.get(f"/v1/jobs/{job_id}", headers=headers)
                get_latency.append(time.perf_counter() - started)
                errors += response.status_code != 200

        started = time.perf_counter()
        await asyncio.gather(*(submit() for _ in range(requests)))
        submit_seconds = time.perf_counter() - started
        started = time.perf_counter()
        await asyncio.gather(*(read(ids[i % len(ids)]) for i in range(requests)))
        read_seconds = time.perf_counter() - started
    post_ms, get_ms = np.array(post_latency) * 1000, np.array(get_latency) * 1000
    return {
        "submits_per_s": requests / submit_seconds,
        "post_p50_ms": float(np.percentile(post_ms, 50)),
        "post_p99_ms": float(np.percentile(post_ms, 99)),
        "reads_per_s": requests / read_seconds,
        "get_p50_ms": float(np.percentile(get_ms, 50)),
        "get_p99_ms": float(np.percentile(get_ms, 99)),
        "errors": errors,
    }


def _print(label: str, figures: dict[str, float], requests: int, concurrency: int) -> None:
    print(
        f"{label:<11} {requests} requests, concurrency {concurrency}: "
        f"POST /v1/jobs {figures['submits_per_s']:.0f}/s p50 {figures['post_p50_ms']:.1f} ms "
        f"p99 {figures['post_p99_ms']:.1f} ms | GET /v1/jobs/{{id}} {figures['reads_per_s']:.0f}/s "
        f"p50 {figures['get_p50_ms']:.1f} ms p99 {figures['get_p99_ms']:.1f} ms | "
        f"errors {figures['errors']:.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--url", help="drive this running server instead of starting one")
    parser.add_argument("--admin-token", default=os.environ.get("GREENWINDOW_ADMIN_TOKEN"))
    parser.add_argument(
        "--postgres-admin-url",
        default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
    )
    args = parser.parse_args()
    if args.url:
        figures = asyncio.run(_run(args.url, args.admin_token, args.requests, args.concurrency))
        _print(args.url, figures, args.requests, args.concurrency)
        return
    databases = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    for database in databases:
        with _server(database, args.postgres_admin_url) as url:
            figures = asyncio.run(_run(url, ADMIN_TOKEN, args.requests, args.concurrency))
        _print(database, figures, args.requests, args.concurrency)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
