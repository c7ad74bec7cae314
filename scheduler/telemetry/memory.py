"""Memory-aware placement: each job's per-device memory need (declared, or estimated by
scheduler/planning/memory.py and learned from the peaks its kind of run reported), and
which workers' GPUs can hold it. Used by claims and by the planner's capacity."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from scheduler.jobs.models import Job
from scheduler.jobs.states import JobState
from scheduler.planning.memory import (
    MemoryModel,
    MemoryNeed,
    fits,
    memory_signature,
    worker_memory_mib,
)
from scheduler.telemetry.models import TelemetryState
from worker.training.config import FinetuneConfig

# The most recent measured attempts the model learns from (bounded work per claim).
LEARN_FROM_ATTEMPTS = 500
# Jobs a claim checks at most (a zone's queue; beyond it, the oldest planned first).
CLAIM_CHECK_LIMIT = 2_000


def memory_model(session: Session) -> MemoryModel:
    """The priors, moved by the peaks that recent fine-tune attempts measured."""
    model = MemoryModel()
    rows = session.execute(
        select(Job.config, TelemetryState.peak_mib)
        .join(Job, Job.id == TelemetryState.job_id)
        .where(TelemetryState.peak_mib.is_not(None), Job.kind == "gpt-sovits-finetune")
        .order_by(TelemetryState.id.desc())
        .limit(LEARN_FROM_ATTEMPTS)
    )
    for config, peak in rows:
        try:
            parsed = FinetuneConfig.model_validate(config)
        except ValidationError:
            continue
        if peak and peak > 0:
            model.observe(memory_signature(parsed), float(peak))
    return model


def job_need(session: Session, job: Job, model: MemoryModel | None = None) -> MemoryNeed | None:
    """The job's per-device memory need (None when it cannot be told). Only fine-tunes learn
    from measured peaks, so a burn-in's need is worked out without reading them."""
    if model is None:
        model = MemoryModel() if job.kind == "burn-in" else memory_model(session)
    return model.need(job.kind, job.config or {})


def worker_mib(worker: Any) -> int | None:
    """Memory of the worker's smallest GPU (None: CPU-only or not registered)."""
    return worker_memory_mib(worker.gpus, worker.cpu_only)


def unfit_job_ids(session: Session, worker: Any) -> list[str]:
    """Claimable jobs of the worker's zone whose memory need its GPUs cannot hold: a claim
    by this worker must never take them."""
    memory = worker_mib(worker)
    if memory is None:
        return []
    model = memory_model(session)
    rows = session.execute(
        select(Job.id, Job.kind, Job.config)
        .where(
            Job.zone == worker.zone,
            Job.state.in_((JobState.READY.value, JobState.SCHEDULED.value)),
        )
        .order_by(Job.planned_start.asc().nulls_last(), Job.id)
        .limit(CLAIM_CHECK_LIMIT)
    )
    return [
        job_id for job_id, kind, config in rows if not fits(model.need(kind, config or {}), memory)
    ]


def fitting_floor(sizes: Iterable[int | None], need: MemoryNeed | None) -> int:
    """The smallest GPU memory among the workers' `sizes` (None: not known) that holds
    `need` (0: every worker, when the need or no worker's memory is known); jobs with one
    floor can share the same GPUs. A need no known worker holds gives the need itself."""
    if need is None:
        return 0
    known = sorted({size for size in sizes if size is not None})
    if not known:
        return 0
    holding = [size for size in known if size >= need.mib]
    if len(holding) == len(known):
        return 0
    return holding[0] if holding else int(need.mib + 0.999)


def holds_memory(memory_mib: int | None, memory_floor: int) -> bool:
    """Whether a worker with GPUs of `memory_mib` counts for jobs of this floor (memory
    not known: it does)."""
    return memory_floor <= 0 or memory_mib is None or memory_mib >= memory_floor


def holds(worker: Any, memory_floor: int) -> bool:
    """holds_memory for a registered worker."""
    return holds_memory(worker_mib(worker), memory_floor)
