"""Concurrent claims through a real server: 8 workers race over 200 ready jobs, and every job
is claimed exactly once (SKIP LOCKED on PostgreSQL, serialised writers on SQLite)."""

from __future__ import annotations

import threading
from collections import Counter

import httpx
from support.fleet_helpers import insert_ready_jobs
from support.helpers import WORKER_TOKEN, admin_headers, bearer, serve_in_thread

from scheduler.app import create_app
from scheduler.settings import Settings

WORKERS, JOBS = 8, 200


def _claim_until_empty(url: str, claimed: list[str], errors: list[str], index: int) -> None:
    with httpx.Client(base_url=url, timeout=60) as client:
        registration = client.post(
            "/v1/workers/register",
            json={"host": f"w{index}", "zone": "ES", "gpus": [], "cpu_only": True},
            headers=bearer(WORKER_TOKEN),
        ).json()
        headers = bearer(registration["token"])
        path = f"/v1/workers/{registration['worker_id']}/claim"
        while True:
            response = client.post(path, json={}, headers=headers)
            if response.status_code == 204:
                return
            if response.status_code != 200:
                errors.append(f"{response.status_code}: {response.text[:200]}")
                return
            claimed.append(response.json()["job"]["id"])


def test_each_job_is_claimed_exactly_once(settings: Settings) -> None:
    app = create_app(settings, run_ticks=False)
    with serve_in_thread(app) as url:
        httpx.post(f"{url}/v1/teams", json={"name": "load"}, headers=admin_headers())
        job_ids = insert_ready_jobs(app, "load", JOBS, now=app.state.clock())
        claimed: list[str] = []
        errors: list[str] = []
        threads = [
            threading.Thread(target=_claim_until_empty, args=(url, claimed, errors, i))
            for i in range(WORKERS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    assert errors == []
    counts = Counter(claimed)
    assert [job for job, n in counts.items() if n > 1] == []
    assert set(claimed) == set(job_ids) and len(claimed) == JOBS
