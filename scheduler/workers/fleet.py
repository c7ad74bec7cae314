"""The fleet as the planner and the dashboards see it: which workers are alive, and how many
GPUs they offer per zone and per base.

Read-only, and below the job life cycle and the scheduling context in the layering (see
tests/service/test_layers.py): planning asks here for capacity, and nothing here changes a
job or a worker.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler.jobs.models import Job
from scheduler.jobs.states import JobState
from scheduler.telemetry import memory
from scheduler.workers.models import Worker
from worker.training.config import BASE_NONE

# A worker is dead after this many heartbeat intervals without a word.
MISSED_BEATS = 3


def is_alive(worker: Worker, now: datetime) -> bool:
    """Heard from within the last three heartbeat intervals."""
    return now - worker.last_seen_at <= timedelta(seconds=MISSED_BEATS * worker.heartbeat_seconds)


def list_workers(session: Session) -> list[Worker]:
    """Every registered worker, newest first."""
    return list(session.scalars(select(Worker).order_by(Worker.registered_at.desc())))


def alive_workers(session: Session, now: datetime) -> list[Worker]:
    """Workers heard from recently enough to count."""
    return [worker for worker in list_workers(session) if is_alive(worker, now)]


def base_capacity(
    session: Session, zone: str, base: str, now: datetime, memory_floor: int = 0
) -> int | None:
    """GPUs of alive workers in `zone` holding `base` (and, with `memory_floor`, GPUs of at
    least that many MiB); None when no worker there is alive."""
    alive = [worker for worker in alive_workers(session, now) if worker.zone == zone]
    if not alive:
        return None
    return sum(
        worker.slots
        for worker in alive
        if base in (worker.bases or [BASE_NONE]) and memory.holds(worker, memory_floor)
    )


def capacity_by_zone(session: Session, now: datetime) -> dict[str, int]:
    """GPUs of alive workers per zone; a CPU-only worker counts as one."""
    capacity: dict[str, int] = {}
    for worker in alive_workers(session, now):
        capacity[worker.zone] = capacity.get(worker.zone, 0) + worker.slots
    return capacity


def most_common_gpu(session: Session, zone: str, now: datetime) -> str | None:
    """The GPU model jobs in `zone` will most likely get (the live fleet's most common one;
    "CPU" for CPU-only workers), or None with no live worker there."""
    names = [
        "CPU" if worker.cpu_only else gpu.get("name", "")
        for worker in alive_workers(session, now)
        if worker.zone == zone
        for gpu in (worker.gpus or [{}])
    ]
    return max(set(names), key=names.count) if names else None


def running_jobs_by_worker(session: Session) -> dict[str, list[str]]:
    """Ids of running jobs per worker id."""
    rows = session.execute(select(Job.worker_id, Job.id).where(Job.state == JobState.RUNNING))
    held: dict[str, list[str]] = {}
    for worker_id, job_id in rows:
        if worker_id:
            held.setdefault(worker_id, []).append(job_id)
    return held
