"""Telemetry benchmark: the cost of a job heartbeat with and without `progress.telemetry`,
and the history rows an attempt keeps as heartbeats accumulate.

    .venv/bin/python bench/telemetry.py [--heartbeats 2000] [--gpus 8] [--database URL]

In-process (FastAPI TestClient, no network) on a fresh SQLite file unless `--database` names
an empty, migrated PostgreSQL database. One burn-in job is claimed by one worker; then
`--heartbeats` heartbeats without telemetry, then as many with a telemetry snapshot of
`--gpus` GPUs. Printed: mean and p99 ms per heartbeat for each kind, the points kept for the
attempt (bounded by GREENWINDOW_TELEMETRY_MAX_POINTS_PER_ATTEMPT) and the heartbeats each
point holds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import func, select, update  # noqa: E402

from scheduler.app import create_app  # noqa: E402
from scheduler.db.migrate import upgrade  # noqa: E402
from scheduler.db.session import session_scope  # noqa: E402
from scheduler.jobs.models import Job  # noqa: E402
from scheduler.settings import Settings  # noqa: E402
from scheduler.telemetry.models import TelemetryPoint  # noqa: E402

ADMIN, FLEET = "bench-admin-token-0123456789", "bench-worker-token-0123456789"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def snapshot(step: int, gpus: int) -> dict[str, object]:
    return {
        "step_time_s": 0.4,
        "samples_per_s": 20.0,
        "loss": 3.0 - step * 1e-4,
        "grad_norm": 1.0,
        "kl": 0.1,
        "mel": 0.8,
        "gpus": [
            {
                "rank": i,
                "index": i,
                "util_pct": 95.0,
                "mem_used_mib": 20_000.0,
                "mem_total_mib": 81_559.0,
                "torch_allocated_mib": 12_000.0 + (step % 7),
                "torch_reserved_mib": 14_000.0,
                "torch_peak_mib": 15_000.0,
                "temp_c": 61.0,
                "power_w": 400.0,
            }
            for i in range(gpus)
        ],
        "nonfinite": [],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--heartbeats", type=int, default=2000)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--database", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database or f"sqlite:///{Path(tmp) / 'bench.db'}"
        upgrade(url)
        settings = Settings(
            database_url=url,
            data_dir=Path(tmp) / "data",
            admin_token=ADMIN,
            worker_token=FLEET,
            lease_seconds=86_400,
        )
        clock = Clock()
        app = create_app(settings, clock=clock, run_ticks=False)
        with TestClient(app) as client:
            admin = {"Authorization": f"Bearer {ADMIN}"}
            key = client.post("/v1/teams", json={"name": "bench"}, headers=admin).json()["api_key"]
            job = client.post(
                "/v1/jobs",
                json={"name": "b", "kind": "burn-in", "config": {}, "max_delay_minutes": 60},
                headers={"Authorization": f"Bearer {key}"},
            ).json()
            gpus = [
                {"index": i, "uuid": f"GPU-{i}", "name": "NVIDIA H100", "memory_mib": 81559}
                for i in range(args.gpus)
            ]
            worker = client.post(
                "/v1/workers/register",
                json={"host": "bench", "zone": "ES", "gpus": gpus},
                headers={"Authorization": f"Bearer {FLEET}"},
            ).json()
            with session_scope(app.state.session_factory) as session:
                session.execute(update(Job).where(Job.id == job["id"]).values(state="ready"))
            headers = {"Authorization": f"Bearer {worker['token']}"}
            claimed = client.post(
                f"/v1/workers/{worker['worker_id']}/claim", json={}, headers=headers
            ).json()
            fence = {"attempt": claimed["attempt"], "lease_token": claimed["lease_token"]}
            path = f"/v1/workers/{worker['worker_id']}/jobs/{job['id']}/heartbeat"

            def run(with_telemetry: bool) -> list[float]:
                times = []
                for step in range(args.heartbeats):
                    clock.now += timedelta(seconds=15)
                    progress: dict[str, object] = {"stage": "burn-in", "step": step}
                    if with_telemetry:
                        progress["telemetry"] = snapshot(step, args.gpus)
                    started = time.perf_counter()
                    response = client.post(
                        path, json={**fence, "progress": progress}, headers=headers
                    )
                    times.append((time.perf_counter() - started) * 1000.0)
                    assert response.status_code == 200, response.text
                return times

            for label, with_telemetry in (("without telemetry", False), ("with telemetry", True)):
                times = sorted(run(with_telemetry))
                p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
                print(
                    f"{label:18s} {len(times)} heartbeats: mean {statistics.fmean(times):.2f} ms, "
                    f"p99 {p99:.2f} ms"
                )
            with session_scope(app.state.session_factory) as session:
                points = session.scalar(select(func.count()).select_from(TelemetryPoint))
                weights = list(session.scalars(select(TelemetryPoint.weight)))
            print(
                f"history: {points} points kept for {args.heartbeats} heartbeats "
                f"(heartbeats per point: {min(weights)}..{max(weights)})"
            )


if __name__ == "__main__":
    main()
