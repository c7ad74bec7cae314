"""Concurrent submissions against a real server: every 201 is committed, and no 5xx."""

from __future__ import annotations

import asyncio

import httpx
from support.helpers import admin_headers, bearer, burn_in_job, serve_in_thread

from scheduler.app import create_app
from scheduler.settings import Settings

TOTAL, CONCURRENCY = 200, 32


async def _submit_all(url: str, key: str) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        semaphore = asyncio.Semaphore(CONCURRENCY)

        async def one(i: int) -> httpx.Response:
            async with semaphore:
                return await client.post(
                    "/v1/jobs", json=burn_in_job(name=f"c{i}"), headers=bearer(key)
                )

        return await asyncio.gather(*(one(i) for i in range(TOTAL)))


def test_concurrent_submissions_are_all_committed(settings: Settings) -> None:
    app = create_app(settings, run_ticks=False)
    with serve_in_thread(app) as url:
        key = httpx.post(f"{url}/v1/teams", json={"name": "load"}, headers=admin_headers()).json()[
            "api_key"
        ]
        responses = asyncio.run(_submit_all(url, key))
        statuses = [r.status_code for r in responses]
        assert all(s < 500 for s in statuses), sorted(set(statuses))
        created = {r.json()["id"] for r in responses if r.status_code == 201}
        assert len(created) == TOTAL

        listed: set[str] = set()
        cursor = None
        with httpx.Client(base_url=url, headers=bearer(key)) as client:
            while True:
                params = {"limit": 200} | ({"cursor": cursor} if cursor else {})
                page = client.get("/v1/jobs", params=params).json()
                listed |= {j["id"] for j in page["items"]}
                cursor = page["next_cursor"]
                if cursor is None:
                    break
        assert listed == created
