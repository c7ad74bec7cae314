"""Liveness under a burst: 64 clients submitting at once to a real `greenwindow serve` must
all get an answer. (No timing is asserted; the client timeout only bounds a hang.)"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import httpx
import pytest
from support.helpers import bearer
from support.procs import Service

pytestmark = pytest.mark.slow

CLIENTS = 64
JOB = {"name": "burst", "kind": "burn-in", "config": {"steps": 5}, "max_delay_minutes": 600}


async def burst(url: str, key: str) -> list[int | str]:
    async with httpx.AsyncClient(
        base_url=url,
        headers=bearer(key),
        timeout=90,
        limits=httpx.Limits(max_connections=CLIENTS),
    ) as client:

        async def submit() -> int | str:
            try:
                return (await client.post("/v1/jobs", json=JOB)).status_code
            except httpx.HTTPError as exc:
                return type(exc).__name__

        return list(await asyncio.gather(*(submit() for _ in range(CLIENTS))))


def test_a_burst_of_64_submissions_is_answered(database_url: str, tmp_path: Path) -> None:
    service = Service(database_url, tmp_path / "service")
    service.start()
    try:
        key = service.new_team()
        outcomes = asyncio.run(burst(service.url, key))
        assert outcomes.count(201) == CLIENTS, (Counter(outcomes), service.log_tail(1500))
        assert service.healthy()
    finally:
        service.stop()
